"""Rotated-box operations (pure torch, CPU and CUDA, no compiled extension; inputs never modified).

Conventions (see ``docs/architecture.md``): continuous pixel coordinates (pixel (i, j) covers
x in [j, j+1), y in [i, i+1)); rotated boxes ``(cx, cy, w, h, angle_deg)``, canonical ``w >= h``,
angle in [-90, 90), w side along ``(cos a, -sin a)``. The paper's eq. (1) is in ``coder.py``.
"""
from .coder import RBoxCoder
from .endpoints import endpoint_heatmap, mask_endpoints, snap_endpoints, window_endpoints
from .framing import background_level, content_box, crop_padded, frame_box, paste_shifted, pixel_size_box
from .iou import rbox_iou, rbox_iou_aligned, rbox_match_quality
from .mask_windows import (MaskWindow, full_mask, paste_masks_in_image_windows, swap_in_full_masks, window_areas,
                           window_iou, window_nms, window_of, window_rle)
from .masks import (crop_masks_rotated, greedy_keep, mask_areas, mask_iou, mask_nms, mask_to_rbox, masks_to_rboxes,
                    paste_masks_rotated, paste_masks_rotated_windows)
from .nms import batched_nms_rotated, nms_rotated
from .rbox import (hbox_to_rbox, normalize_rboxes, rbox_area, rbox_from_paper, rbox_to_corners,
                   rbox_to_hbox, rbox_to_paper, wrap_angle)
from .roi_align import rroi_align

__all__ = [
    "normalize_rboxes", "wrap_angle", "rbox_to_corners", "rbox_to_hbox", "hbox_to_rbox",
    "rbox_to_paper", "rbox_from_paper", "rbox_area",
    "RBoxCoder",
    "rbox_iou", "rbox_iou_aligned", "rbox_match_quality",
    "nms_rotated", "batched_nms_rotated",
    "rroi_align",
    "mask_to_rbox", "masks_to_rboxes", "crop_masks_rotated", "paste_masks_rotated",
    "mask_iou", "mask_nms", "mask_areas", "greedy_keep",
    "MaskWindow", "full_mask", "window_of", "window_areas", "window_iou", "window_nms", "window_rle",
    "paste_masks_rotated_windows", "paste_masks_in_image_windows", "swap_in_full_masks",
    "mask_endpoints", "endpoint_heatmap", "snap_endpoints", "window_endpoints",
    "content_box", "frame_box", "pixel_size_box", "crop_padded", "paste_shifted", "background_level",
]
