"""Rotated-box conventions and elementary geometry.

A rotated box is ``(cx, cy, w, h, angle)`` in continuous pixel coordinates (pixel (i, j) covers
x in [j, j+1), y in [i, i+1); x right, y down), ``angle`` in **degrees**.

Canonical form (what every function here returns): ``w >= h``, ``angle`` in [-90, 90), the side of
length ``w`` runs along ``(cos a, -sin a)`` (positive angle = counter-clockwise on screen), the side of
length ``h`` along ``(sin a, cos a)``. Functions accept any ``(w, h, angle)`` and normalise.

The paper's form (export only, OpenCV's legacy ``minAreaRect``): ``theta`` in [-90, 0), the side of
length ``w`` along ``(cos theta, sin theta)``; ``w`` need not be the longer side.

All functions are pure torch, batched over the leading dimension, work on any device and never
modify their inputs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "wrap_angle",
    "normalize_rboxes",
    "rbox_to_corners",
    "rbox_to_hbox",
    "hbox_to_rbox",
    "rbox_to_paper",
    "rbox_from_paper",
    "rbox_area",
]


def _as_boxes(b: Tensor, n: int = 5) -> Tensor:
    b = torch.as_tensor(b)
    if not b.is_floating_point():
        b = b.float()
    if b.shape[-1] != n:
        raise ValueError(f"expected boxes with last dimension {n}, got shape {tuple(b.shape)}")
    return b


def wrap_angle(a: Tensor, period: float = 180.0) -> Tensor:
    """Wrap angles (degrees) into ``[-period/2, period/2)``; returns a new tensor."""
    half = period / 2.0
    out = torch.remainder(a + half, period) - half
    # remainder can round up to exactly ``period`` for tiny negative inputs
    return torch.where(out >= half, out - period, out)


def normalize_rboxes(boxes: Tensor) -> Tensor:
    """Canonical form of rotated boxes ``[..., 5]``: ``w >= h`` and angle in [-90, 90) degrees.

    Negative sizes are taken by absolute value. A box with ``w < h`` gets its sides swapped and
    its angle turned by -90 degrees (the same rectangle). Returns a new tensor.
    """
    b = _as_boxes(boxes)
    cx, cy, w, h, a = b.unbind(-1)
    w, h = w.abs(), h.abs()
    swap = w < h
    nw = torch.where(swap, h, w)
    nh = torch.where(swap, w, h)
    na = wrap_angle(torch.where(swap, a - 90.0, a))
    return torch.stack((cx, cy, nw, nh, na), dim=-1)


def _axes(a_deg: Tensor) -> tuple[Tensor, Tensor]:
    """(cos a, sin a) for angles in degrees."""
    r = a_deg * (math.pi / 180.0)
    return torch.cos(r), torch.sin(r)


def rbox_to_corners(boxes: Tensor) -> Tensor:
    """Corners ``[..., 4, 2]`` (x, y) of rotated boxes ``[..., 5]``.

    Order: (-w/2,-h/2), (+w/2,-h/2), (+w/2,+h/2), (-w/2,+h/2) in the box frame (u along the w side
    ``(cos a, -sin a)``, v along ``(sin a, cos a)``), i.e. consecutive corners go round the box and
    the shoelace formula on the raw (x, y) values gives a positive area (clockwise on screen).
    Works for canonical and non-canonical input alike (the corner set is the same rectangle).
    """
    b = _as_boxes(boxes)
    cx, cy, w, h, a = b.unbind(-1)
    c, s = _axes(a)
    hw, hh = w / 2, h / 2
    su = torch.stack((-hw, hw, hw, -hw), dim=-1)  # [..., 4]
    sv = torch.stack((-hh, -hh, hh, hh), dim=-1)
    x = cx[..., None] + su * c[..., None] + sv * s[..., None]
    y = cy[..., None] - su * s[..., None] + sv * c[..., None]
    return torch.stack((x, y), dim=-1)


def rbox_to_hbox(boxes: Tensor) -> Tensor:
    """Enclosing axis-aligned boxes ``[..., 4]`` (x1, y1, x2, y2) of rotated boxes ``[..., 5]``."""
    b = _as_boxes(boxes)
    cx, cy, w, h, a = b.unbind(-1)
    c, s = _axes(a)
    ex = (w * c).abs() / 2 + (h * s).abs() / 2
    ey = (w * s).abs() / 2 + (h * c).abs() / 2
    return torch.stack((cx - ex, cy - ey, cx + ex, cy + ey), dim=-1)


def hbox_to_rbox(boxes: Tensor) -> Tensor:
    """Axis-aligned boxes ``[..., 4]`` xyxy as canonical rotated boxes ``[..., 5]``.

    A wide box gets angle 0; a tall box gets ``w`` = its height and angle -90.
    """
    b = _as_boxes(boxes, 4)
    x1, y1, x2, y2 = b.unbind(-1)
    out = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, torch.zeros_like(x1)), -1)
    return normalize_rboxes(out)


def rbox_to_paper(boxes: Tensor) -> Tensor:
    """Canonical boxes -> the paper's form ``(cx, cy, w_p, h_p, theta)``, theta in [-90, 0) degrees.

    The side of length ``w_p`` runs along ``(cos theta, sin theta)`` (OpenCV < 4.5.1 ``minAreaRect``).
    """
    b = normalize_rboxes(boxes)
    cx, cy, w, h, a = b.unbind(-1)
    phi = wrap_angle(-a)  # direction of the long side, in the paper's sense, in [-90, 90)
    neg = phi < 0
    theta = torch.where(neg, phi, phi - 90.0)
    wp = torch.where(neg, w, h)
    hp = torch.where(neg, h, w)
    return torch.stack((cx, cy, wp, hp, theta), dim=-1)


def rbox_from_paper(boxes: Tensor) -> Tensor:
    """The paper's form (any theta, degrees, side ``w_p`` along (cos theta, sin theta)) -> canonical."""
    b = _as_boxes(boxes)
    cx, cy, wp, hp, theta = b.unbind(-1)
    return normalize_rboxes(torch.stack((cx, cy, wp, hp, -theta), dim=-1))


def rbox_area(boxes: Tensor) -> Tensor:
    """Areas ``[...]`` (pixels²) of rotated boxes ``[..., 5]``."""
    b = _as_boxes(boxes)
    return b[..., 2].abs() * b[..., 3].abs()
