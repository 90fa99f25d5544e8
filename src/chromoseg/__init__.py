"""chromoseg: chromosome instance segmentation (Enhanced Rotated Mask R-CNN) and karyotyping."""

__version__ = "0.1.0"
