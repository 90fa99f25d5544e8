"""Fixed data splits shipped with chromoseg (JSON files beside this module)."""
from __future__ import annotations

import json
from pathlib import Path

SPLIT_NAMES = ("train", "val", "test")


def load_split(name: str) -> dict:
    """The split called ``name`` (e.g. ``"adir-mfish"``): ``{"train": [...], "val": [...], "test": [...], ...}``."""
    path = Path(__file__).with_name(f"{name}.json")
    if not path.is_file():
        raise FileNotFoundError(f"no shipped split {name!r} ({path})")
    return json.loads(path.read_text())


def split_of(split: dict, unit: str) -> str | None:
    """Which split a unit (e.g. a slide id) belongs to, or None."""
    for s in SPLIT_NAMES:
        if unit in split.get(s, []):
            return s
    return None
