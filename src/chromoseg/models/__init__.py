"""Detection models: Mask R-CNN (``mr``), Rotated Mask R-CNN (``rmr``) and the Enhanced Rotated
Mask R-CNN (``ermr`` with its H&R and ED switches, ``erm1`` .. ``erm4``); see :func:`build_model`."""
from .builder import SMALL, VARIANTS, build_model
from .backbone import load_backbone_weights

__all__ = ["build_model", "VARIANTS", "SMALL", "load_backbone_weights"]
