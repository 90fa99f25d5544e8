"""The 24 human chromosome classes: ids, names and Denver groups.

Ids follow the dataset contract: 1-22 autosomes, 23 = X, 24 = Y. Id 0 is background in the models.
"""
from __future__ import annotations

NUM_CLASSES = 24
CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(1, 23)) + ("X", "Y")
NAME_TO_ID: dict[str, int] = {name: i + 1 for i, name in enumerate(CLASS_NAMES)}

#: Denver group letter of each class (used by the G-band VOC names, e.g. "A1", "C6", "G22", "X").
DENVER_GROUP: dict[int, str] = {
    **{c: "A" for c in (1, 2, 3)},
    **{c: "B" for c in (4, 5)},
    **{c: "C" for c in range(6, 13)},
    **{c: "D" for c in (13, 14, 15)},
    **{c: "E" for c in (16, 17, 18)},
    **{c: "F" for c in (19, 20)},
    **{c: "G" for c in (21, 22)},
    23: "C",
    24: "G",
}


def class_name(class_id: int) -> str:
    """Name of a class id 1-24 ("1".."22", "X", "Y")."""
    if not 1 <= int(class_id) <= NUM_CLASSES:
        raise ValueError(f"class id {class_id} is outside 1-{NUM_CLASSES}")
    return CLASS_NAMES[int(class_id) - 1]


def class_id(name: str) -> int:
    """Id of a class name; accepts "1".."22", "X", "Y", "chr7", and Denver names such as "C7" or "G21"."""
    key = str(name).strip()
    if key.lower().startswith("chr"):
        key = key[3:]
    if key.upper() in ("X", "Y"):
        return NAME_TO_ID[key.upper()]
    if len(key) > 1 and key[0].upper() in "ABCDEFG" and key[1:].isdigit():
        key = key[1:]
    if key.isdigit() and 1 <= int(key) <= 22:
        return int(key)
    raise ValueError(f"unknown chromosome class name {name!r} (expected 1-22, X, Y or a Denver name like 'C7')")


def coco_categories() -> list[dict]:
    """The COCO ``categories`` list of the dataset contract."""
    return [
        {"id": i + 1, "name": name, "supercategory": "chromosome"}
        for i, name in enumerate(CLASS_NAMES)
    ]
