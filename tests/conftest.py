"""Shared test helpers: where the real data lives, and small synthetic sets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``../shared/data`` beside the repository, or ``$CHROMOSEG_DATA``."""
    env = os.environ.get("CHROMOSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_data(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test with a clear message."""
    p = shared_data().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (set CHROMOSEG_DATA or put ../shared/data beside the repo)")
    return p
