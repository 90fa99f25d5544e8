"""The network variants, one entry each: what ``build_model``, ``chromoseg train --variant``, its
help and the tables read. Adding a variant means adding one :class:`Variant` to ``REGISTRY`` (and,
for a new family, its builder to ``chromoseg.models.builder.FAMILY_BUILDERS``).

This module imports nothing heavy (no torch), so the command line can read it when it builds its
parser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Variant:
    """One network. ``family``: which builder makes it (``"rcnn"``: the Mask R-CNN family,
    ``chromoseg.models.builder``; ``"snake"``: Deep Snake, ``chromoseg.models.snake``).
    ``rotated`` / ``hr`` / ``ed``: the R-CNN switches (rotated boxes, horizontal & rotated box
    detection, endpoint-detection branch). ``label``: its row name in the tables. ``help``: one line
    for ``chromoseg train --help``. ``aliases``: other names of the same network (the paper's
    ERM-1 .. ERM-4)."""

    name: str
    family: str
    rotated: bool = False
    hr: bool = False
    ed: bool = False
    label: str = ""
    help: str = ""
    aliases: tuple = ()

    @property
    def switches(self) -> dict:
        return dict(rotated=self.rotated, hr=self.hr, ed=self.ed)


REGISTRY: dict[str, Variant] = {v.name: v for v in (
    Variant("mr", "rcnn", label="MR", help="Mask R-CNN, axis-aligned boxes (baseline, torchvision's heads)"),
    Variant("rmr", "rcnn", rotated=True, label="RMR (ERM-1)", aliases=("erm1",),
            help="Rotated Mask R-CNN (= ERM-1): rotated anchors, rotated RPN, rotated RoIAlign"),
    Variant("erm2", "rcnn", rotated=True, ed=True, label="ERM-2 (ED)",
            help="rotated + endpoint-detection branch (ED)"),
    Variant("erm3", "rcnn", rotated=True, hr=True, label="ERM-3 (H&R)",
            help="rotated + horizontal&rotated box detection (H&R)"),
    Variant("ermr", "rcnn", rotated=True, hr=True, ed=True, label="ERMR (ERM-4)", aliases=("erm4",),
            help="Enhanced Rotated Mask R-CNN (= ERM-4): H&R + ED"),
    Variant("snake", "snake", label="Deep Snake",
            help="Deep Snake, a contour-based baseline (CenterNet + circular-convolution contours)"),
)}

#: every accepted name (aliases beside the network they name) -> its entry
NAMES: dict[str, Variant] = {n: v for v in REGISTRY.values() for n in (v.name,) + v.aliases}


def find_variant(name) -> Optional[Variant]:
    """The entry of a variant name or alias (any case); None for an unknown name."""
    return NAMES.get(str(name).lower())


def get_variant(name) -> Variant:
    """The entry of a variant name or alias (any case); ValueError for an unknown name."""
    v = find_variant(name)
    if v is None:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(NAMES)}")
    return v


def canonical_name(name: str) -> str:
    """A variant's own name for an alias (``erm1`` -> ``rmr``); an unknown name as given, lower-cased."""
    v = find_variant(name)
    return v.name if v is not None else str(name).lower()


def variants_help(indent: str = "  ") -> str:
    """One line per network for a command's help: its name and what it is."""
    width = max(len(n) for n in REGISTRY) + 2
    return "\n".join(f"{indent}{v.name:<{width}}{v.help}" for v in REGISTRY.values())
