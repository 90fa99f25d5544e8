"""Detection models: Mask R-CNN (``mr``), Rotated Mask R-CNN (``rmr``) and the Enhanced Rotated
Mask R-CNN (``ermr`` with its H&R and ED switches, ``erm1`` .. ``erm4``); see :func:`build_model`.
The variants are listed once, in :mod:`chromoseg.models.variants`.

Importing this package imports no torch (the command line reads the variants when it builds its
parser); ``load_backbone_weights`` loads its module on first use."""
from .builder import COMPACT, SMALL, VARIANTS, build_model

__all__ = ["build_model", "VARIANTS", "SMALL", "COMPACT", "load_backbone_weights"]


def __getattr__(name):
    if name == "load_backbone_weights":
        from .backbone import load_backbone_weights

        return load_backbone_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
