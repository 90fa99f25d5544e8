"""What every benchmark's results file shares: data named relative to the repository
(``datasets/mfish``, ``../shared/data/...``, never a path of the machine it ran on), the commit it
measured, and appending a Markdown section."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path) -> str:
    """``path`` relative to the repository root (``..`` where it lies beside it)."""
    return os.path.relpath(Path(path).resolve(), REPO)


def commit(tree=REPO) -> str:
    """Short hash of the checkout at ``tree`` ("?" outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def append_markdown(path, text: str) -> None:
    """Append ``text`` (a section) to the Markdown file ``path``, creating folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(text)
