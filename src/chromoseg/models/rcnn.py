"""The model class shared by every variant (the role of torchvision's ``GeneralizedRCNN``)."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .losses import endpoint_loss


def detection_endpoints(heatmap: torch.Tensor, rboxes: torch.Tensor, samples: int = 33) -> torch.Tensor:
    """Endpoints ``[N, 2, 2]`` of each detection from the ED heatmap ``[1, H, W]``: the heatmap is
    sampled along the long axis of the rotated box; each half's maximum is one endpoint, the outermost
    one on ties, so a flat heatmap gives the box's ends (the first endpoint is the one nearer the top
    of the image, ties by x, as in the dataset contract)."""
    n = rboxes.shape[0]
    if n == 0:
        return rboxes.new_zeros((0, 2, 2))
    h, w = heatmap.shape[-2:]
    rad = torch.deg2rad(rboxes[:, 4])
    ux, uy = torch.cos(rad), -torch.sin(rad)
    t = torch.linspace(-0.5, 0.5, samples, device=rboxes.device, dtype=rboxes.dtype)
    px = rboxes[:, 0:1] + t[None] * rboxes[:, 2:3] * ux[:, None]
    py = rboxes[:, 1:2] + t[None] * rboxes[:, 2:3] * uy[:, None]
    grid = torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1)[None]  # [1, N, S, 2]
    vals = F.grid_sample(heatmap[None].to(grid.dtype), grid, align_corners=False)[0, 0]  # [N, S]
    half = samples // 2
    # ties (a flat heatmap) go to the outermost sample: with no evidence the box's own ends are used
    i0 = vals[:, :half].argmax(dim=1)
    i1 = samples - 1 - vals[:, half + 1:].flip(1).argmax(dim=1)
    ar = torch.arange(n, device=rboxes.device)
    e = torch.stack([torch.stack([px[ar, i0], py[ar, i0]], -1), torch.stack([px[ar, i1], py[ar, i1]], -1)], 1)
    swap = (e[:, 1, 1] < e[:, 0, 1]) | ((e[:, 1, 1] == e[:, 0, 1]) & (e[:, 1, 0] < e[:, 0, 0]))
    e[swap] = e[swap].flip(1)
    return e


class ChromoRCNN(nn.Module):
    """transform -> backbone (+ endpoint branch) -> RPN -> RoI heads -> postprocess.

    ``forward(images, targets)``: in training mode returns the loss dict (eq. 2 terms and, with ED,
    ``loss_endpoint`` = eq. 4); in eval mode a list of dicts per image with ``boxes [N,4]`` (xyxy),
    ``labels``, ``scores``, ``masks [N,1,H,W]`` float probabilities at the original image size, and
    for the rotated variants ``rboxes [N,5]``; with ED also ``endpoints [N,2,2]`` and
    ``endpoint_heatmap [1,H,W]``.
    """

    def __init__(self, backbone, rpn, roi_heads, transform, variant: str = "", config: dict | None = None):
        super().__init__()
        self.backbone, self.rpn, self.roi_heads, self.transform = backbone, rpn, roi_heads, transform
        self.variant = variant
        self.config = dict(config or {})
        self.crop_classifier = None  # optional second stage (chromoseg.models.crop_classifier)

    @property
    def has_endpoints(self) -> bool:
        return self.backbone.endpoint_branch is not None

    def forward(self, images, targets=None, *, pixel_sizes=None, train_pixel_size_um=None, mask_score_thresh=0.0):
        """Inference options of this call only (the modules are not changed): ``pixel_sizes`` and
        ``train_pixel_size_um`` for the transform's scale rule (:class:`ChromoTransform`), and
        ``mask_score_thresh`` for rotated RoI heads (:class:`RotatedRoIHeads`: no mask for a detection
        scored under it; 0: every detection's)."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        scale = {"pixel_sizes": pixel_sizes, "train_pixel_size_um": train_pixel_size_um} if pixel_sizes else {}
        images, targets = self.transform(images, targets, **scale)
        features, heat = self.backbone(images.tensors)
        if heat is not None:
            heat = heat.float()
        proposals, rpn_losses = self.rpn(images, features, targets)
        masks = {"mask_score_thresh": float(mask_score_thresh)} if mask_score_thresh else {}
        detections, det_losses = self.roi_heads(features, proposals, images.image_sizes, targets, **masks)
        if self.training:
            losses = {}
            losses.update(rpn_losses)
            losses.update(det_losses)
            if heat is not None:
                w = float(self.config.get("endpoint_loss_weight", 1.0))
                losses["loss_endpoint"] = w * endpoint_loss(heat, targets, images.image_sizes)
            return losses
        if heat is not None:
            heat = heat.clamp(0.0, 1.0)
            for i, d in enumerate(detections):
                rb = d.get("rboxes")
                if rb is None:
                    from .transform import canonical_rboxes

                    b = d["boxes"]
                    rb = canonical_rboxes(torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                                                       b[:, 2] - b[:, 0], b[:, 3] - b[:, 1],
                                                       torch.zeros_like(b[:, 0])], dim=1))
                d["endpoints"] = detection_endpoints(heat[i], rb)
                d["endpoint_heatmap"] = heat[i]
        with torch.autocast(device_type=images.tensors.device.type, enabled=False):
            return self.transform.postprocess(detections, images.image_sizes, original_sizes,
                                              getattr(images, "frames", None))
