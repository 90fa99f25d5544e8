"""Non-maximum suppression for rotated boxes, same semantics as ``torchvision.ops.nms`` /
``batched_nms``: returns int64 indices of the kept boxes sorted by decreasing score; a box is
dropped when its IoU with an already kept (higher-scoring) box is greater than ``iou_threshold``.
Ties in score keep the original order (stable sort).

The exact IoU is computed once, only for pairs that can overlap (circle and separating-axis tests,
see ``chromoseg.ops.iou``) and whose cheap IoU upper bound exceeds the threshold; the greedy pass
runs over the sparse list of suppressing pairs (numpy, on the CPU).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._threads import serial_cpu
from .iou import _box_table, _circle_pair_batches, _pair_iou
from .rbox import _as_boxes

__all__ = ["nms_rotated", "batched_nms_rotated"]


def _greedy(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Greedy pass: boxes 0..n-1 in score order; pair (i, j), i < j, means i suppresses j."""
    removed = np.zeros(n, dtype=bool)
    if i.size == 0:
        return np.arange(n)
    order = np.argsort(i, kind="stable")
    i, j = i[order], j[order]
    starts = np.searchsorted(i, np.arange(n + 1))
    has = np.flatnonzero(starts[1:] > starts[:-1])  # boxes that suppress something
    for k in has.tolist():
        if not removed[k]:
            removed[j[starts[k]:starts[k + 1]]] = True
    return np.flatnonzero(~removed)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Rotated NMS. ``boxes[N, 5]`` (cx, cy, w, h, angle_deg), ``scores[N]`` -> int64 kept indices
    by decreasing score (on the device of ``boxes``)."""
    b = _as_boxes(boxes).detach()
    scores = torch.as_tensor(scores, device=b.device).detach()
    n = b.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=b.device)
    order = torch.argsort(scores, descending=True, stable=True)
    bs = b[order]
    if bs.dtype != torch.float64:
        bs = bs.float()
    ii, jj = [], []
    with serial_cpu(bs.device):
        t = _box_table(bs)
        for i, j in _circle_pair_batches(bs, bs, upper_only=True):
            sup = _pair_iou(bs, bs, i, j, min_iou=float(iou_threshold), tables=(t, t)) > iou_threshold
            ii.append(i[sup])
            jj.append(j[sup])
        i = torch.cat(ii) if ii else order[:0]
        j = torch.cat(jj) if jj else order[:0]
    keep = _greedy(n, i.cpu().numpy(), j.cpu().numpy())
    return order[torch.from_numpy(keep).to(order.device)]


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-category rotated NMS (boxes with different ``idxs`` never suppress each other).

    Uses the coordinate-offset trick of ``torchvision.ops.batched_nms`` (each category is moved
    far enough along x that its boxes cannot touch another category's), in float64.
    """
    b = _as_boxes(boxes).detach()
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=b.device)
    b = b.to(torch.float64)
    idxs = torch.as_tensor(idxs, device=b.device)
    rad = 0.5 * torch.hypot(b[:, 2], b[:, 3])
    lo = (b[:, 0] - rad).min()
    hi = (b[:, 0] + rad).max()
    offsets = idxs.to(torch.float64) * (hi - lo + 1.0)
    shifted = b.clone()
    shifted[:, 0] += offsets
    return nms_rotated(shifted, scores, iou_threshold)
