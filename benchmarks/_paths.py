"""How results files name data: relative to the repository (``datasets/mfish``,
``../shared/data/...``), never a path of the machine a benchmark ran on."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path) -> str:
    """``path`` relative to the repository root (``..`` where it lies beside it)."""
    return os.path.relpath(Path(path).resolve(), REPO)
