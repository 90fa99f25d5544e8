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


def take_spread(items: list, group_of, limit: int | None, groups=SPLIT_NAMES) -> list:
    """At most ``limit`` of ``items`` (all of them when ``limit`` is None), spread over their groups
    (``group_of(item)``: a split name, or anything else for items in no split): the rule of every
    importer's ``--limit``. Each group that has items first gets one (in the order ``groups``, then
    the others in order of appearance) while the limit allows; the rest of the limit is shared in
    proportion to the groups' sizes (largest remainders first); each group gives its first items, and
    the items keep their order. So ``--limit 12`` of the M-FISH set gives train, val and test images
    (7 / 2 / 3), never 12 training images and empty val / test files."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    keys = [group_of(it) for it in items]
    sizes: dict = {}
    for k in keys:
        sizes[k] = sizes.get(k, 0) + 1
    order = [g for g in groups if g in sizes] + [g for g in sizes if g not in groups]
    share = {g: 0 for g in order}
    for g in order[:limit]:
        share[g] = 1
    left = limit - sum(share.values())
    if left > 0:
        room = {g: sizes[g] - share[g] for g in order}
        total = sum(room.values())
        exact = {g: left * room[g] / total for g in order}
        for g in order:
            share[g] += min(int(exact[g]), room[g])
        rest = limit - sum(share.values())
        for g in sorted(order, key=lambda g: (-(exact[g] - int(exact[g])), order.index(g))):
            if rest <= 0:
                break
            if share[g] < sizes[g]:
                share[g] += 1
                rest -= 1
    taken: dict = {}
    out = []
    for it, k in zip(items, keys):
        if taken.get(k, 0) < share[k]:
            taken[k] = taken.get(k, 0) + 1
            out.append(it)
    return out


def empty_split_warnings(counts: dict, limit: int | None = None) -> list[str]:
    """One line for each split with no images (``counts``: split name -> images written)."""
    out = []
    for s in SPLIT_NAMES:
        if s in counts and not counts[s]:
            why = f" (--limit {limit} is smaller than the number of splits)" if limit else ""
            use = {"train": "`chromoseg train` has nothing to learn from",
                   "val": "`chromoseg train --data` trains without validation (early stopping on the training loss)",
                   "test": "there is nothing to evaluate on"}[s]
            out.append(f"{s}.json has no images{why}: {use}")
    return out
