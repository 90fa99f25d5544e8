"""Detection models: Mask R-CNN (``mr``), Rotated Mask R-CNN (``rmr``) and the Enhanced Rotated
Mask R-CNN (``ermr`` with its H&R and ED switches, ``erm1`` .. ``erm4``); see :func:`build_model`."""
from .builder import COMPACT, SMALL, VARIANTS, build_model
from .backbone import load_backbone_weights

__all__ = ["build_model", "VARIANTS", "SMALL", "COMPACT", "load_backbone_weights"]
