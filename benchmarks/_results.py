"""What every benchmark's results file shares: data named relative to the repository
(``datasets/mfish``, ``../shared/data/...``, never a path of the machine it ran on), the commit it
measured, and appending a Markdown section."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path) -> str:
    """``path`` relative to the repository root (``..`` where it lies beside it); one under the home
    folder but outside the repository as ``~/...``; a name that is no file (a shipped model's) as it is."""
    p = Path(path).expanduser()
    if not p.exists():
        return str(path)
    p, home = p.resolve(), Path.home().resolve()
    beside = p.is_relative_to(REPO) or p.is_relative_to(REPO.parent / "shared")
    if not beside and p.is_relative_to(home):
        return "~/" + str(p.relative_to(home))
    return os.path.relpath(p, REPO)


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


def write_markdown(path, text: str, title: str, append: bool = False) -> None:
    """``text`` (a section) into the Markdown file ``path``: appended when ``append`` and the file
    exists, else a new file that starts with the heading ``# title``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not (append and path.exists())
    with open(path, "w" if new else "a") as f:
        f.write((f"# {title}\n\n" if new else "") + text + "\n")
