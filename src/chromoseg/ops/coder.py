"""Rotated box regression coder: the paper's eq. (1) and its inverse.

Eq. (1) (Wang et al., "Enhanced Rotated Mask R-CNN"), with ``p`` the reference (anchor/proposal)
and ``g`` the target box, both canonical:

    dx = wx * (g_x - p_x) / p_w          dy = wy * (g_y - p_y) / p_h
    dw = ww * ln(g_w / p_w)              dh = wh * ln(g_h / p_h)
    da = wa * (pi / 180) * wrap(g_a - p_a)        wrap(.) into [-90, 90) degrees

The centre offsets are in image axes (x, y), normalised by the reference's ``w`` and ``h`` as in the
paper. ``weights`` scale the deltas like torchvision's ``BoxCoder`` (e.g. (1,1,1,1,1) for the RPN,
(10, 10, 5, 5, 1) for the RoI heads). Wrapping the angle delta means identical boxes never give a
large delta. ``decode`` clamps dw, dh at ln(1000/16) (torchvision's ``bbox_xform_clip``) and
returns canonical boxes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .rbox import normalize_rboxes, wrap_angle

__all__ = ["RBoxCoder", "BBOX_XFORM_CLIP"]

BBOX_XFORM_CLIP = math.log(1000.0 / 16)
_EPS = 1e-6


class RBoxCoder:
    """Encode / decode rotated boxes ``(cx, cy, w, h, angle_deg)`` with the paper's eq. (1)."""

    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
                 bbox_xform_clip: float = BBOX_XFORM_CLIP):
        if len(weights) != 5:
            raise ValueError(f"RBoxCoder needs 5 weights (x, y, w, h, angle), got {weights}")
        self.weights = tuple(float(x) for x in weights)
        self.bbox_xform_clip = float(bbox_xform_clip)

    def encode(self, reference: Tensor, target: Tensor) -> Tensor:
        """Deltas ``[N, 5]`` that take ``reference[N, 5]`` to ``target[N, 5]`` (eq. (1))."""
        p = normalize_rboxes(reference)
        g = normalize_rboxes(target).to(p.dtype)
        wx, wy, ww, wh, wa = self.weights
        pw = p[:, 2].clamp(min=_EPS)
        ph = p[:, 3].clamp(min=_EPS)
        dx = wx * (g[:, 0] - p[:, 0]) / pw
        dy = wy * (g[:, 1] - p[:, 1]) / ph
        dw = ww * torch.log(g[:, 2].clamp(min=_EPS) / pw)
        dh = wh * torch.log(g[:, 3].clamp(min=_EPS) / ph)
        da = wa * torch.deg2rad(wrap_angle(g[:, 4] - p[:, 4]))
        return torch.stack((dx, dy, dw, dh, da), dim=1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Canonical boxes ``[N, 5]`` from ``deltas[N, 5]`` applied to ``reference[N, 5]``.

        ``deltas`` may also be ``[N, 5*C]`` (one set per class, as in torchvision's box predictor);
        the result is then ``[N, 5*C]``.
        """
        p = normalize_rboxes(reference)
        d = torch.as_tensor(deltas).to(p.dtype)
        if d.shape[-1] % 5 != 0:
            raise ValueError(f"deltas must have 5*C columns, got shape {tuple(d.shape)}")
        n = d.shape[0]
        d = d.reshape(n, -1, 5)
        wx, wy, ww, wh, wa = self.weights
        px, py, pw, ph, pa = (t[:, None] for t in p.unbind(1))
        dx = d[..., 0] / wx
        dy = d[..., 1] / wy
        dw = (d[..., 2] / ww).clamp(max=self.bbox_xform_clip)
        dh = (d[..., 3] / wh).clamp(max=self.bbox_xform_clip)
        da = d[..., 4] / wa
        out = torch.stack((px + dx * pw, py + dy * ph, pw * torch.exp(dw), ph * torch.exp(dh),
                           pa + torch.rad2deg(da)), dim=-1)
        return normalize_rboxes(out).reshape(n, -1)
