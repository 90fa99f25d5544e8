"""The models that ship inside the package, by name.

``chromoseg predict IMAGE`` uses :data:`DEFAULT`; ``--model NAME`` picks another shipped one and
``--model PATH`` any ``chromoseg train`` checkpoint (``.pt``) or ``chromoseg export`` file
(``.safetensors``). Each shipped file has a model card (``NAME.md``) beside it: data, split,
recipe, hardware, test AP and speed.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (weights file, model card, one line for --help)
SHIPPED = {
    "mfish": ("mfish_ermr_r18.safetensors", "mfish_ermr_r18.md",
              "ERMR, ResNet-18 compact, trained on the M-FISH DAPI training split (CPU recipe)"),
    "gband": ("gband_ermr_r18.safetensors", "gband_ermr_r18.md",
              "ERMR, ResNet-18 compact, inverted input, trained on CIL G-band boxes with pseudo-masks (CPU recipe)"),
}
DEFAULT = "mfish"

#: the shipped model for each stain: what ``--model auto`` picks by an image's polarity
BY_STAIN = {"fluorescence": "mfish", "brightfield": "gband"}

#: names users may try that have no shipped model, with the reason
NOT_SHIPPED: dict[str, str] = {}


def shipped_path(name: str) -> Path:
    """Path of a shipped model's weights; ``ValueError`` for an unknown name, ``FileNotFoundError``
    when the file is missing from this installation."""
    if name in NOT_SHIPPED:
        raise ValueError(NOT_SHIPPED[name])
    if name not in SHIPPED:
        raise ValueError(f"no shipped model named {name!r}; shipped: {', '.join(SHIPPED)}")
    path = HERE / SHIPPED[name][0]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing from this installation ({path})")
    return path


def card_path(name: str) -> Path:
    return HERE / SHIPPED[name][1]


def resolve_model(spec: str | Path | None) -> Path:
    """A ``--model`` value: ``None`` (the default model), a shipped model's name, or a file path."""
    if spec is None or str(spec) == "auto":  # auto: predict / load_model route each image by its polarity
        return shipped_path(DEFAULT)
    s = str(spec)
    if s in SHIPPED or s in NOT_SHIPPED:
        return shipped_path(s)
    path = Path(s)
    if not path.is_file():
        raise FileNotFoundError(f"--model {s}: no such file and no shipped model of that name "
                                f"(shipped: {', '.join(SHIPPED)})")
    return path
