"""Non-maximum suppression for rotated boxes, same semantics as ``torchvision.ops.nms`` /
``batched_nms``: returns int64 indices of the kept boxes sorted by decreasing score; a box is
dropped when its IoU with an already kept (higher-scoring) box is greater than ``iou_threshold``.
Ties in score keep the original order (stable sort).

The exact IoU is computed only for pairs of a kept box and a later box that can overlap (circle and
separating-axis tests, see ``chromoseg.ops.iou``) and whose cheap IoU upper bound exceeds the
threshold; the greedy pass runs block by block over the sparse lists of suppressing pairs (numpy,
on the CPU).
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


def _suppressed_pairs(bs: Tensor, t: Tensor, ia: Tensor, ib: Tensor | None, thr: float):
    """Pairs (positions into ``ia``, ``ib``) of boxes ``bs[ia]`` x ``bs[ib]`` with IoU > ``thr``
    (``ib=None``: pairs within ``ia``, first < second)."""
    a = bs.index_select(0, ia)
    b = a if ib is None else bs.index_select(0, ib)
    ii, jj = [], []
    for i, j in _circle_pair_batches(a, b, upper_only=ib is None):
        gi, gj = ia[i], (ia if ib is None else ib)[j]
        sup = _pair_iou(bs, bs, gi, gj, min_iou=thr, tables=(t, t)) > thr
        ii.append(i[sup])
        jj.append(j[sup])
    if not ii:
        e = ia[:0]
        return e, e
    return torch.cat(ii), torch.cat(jj)


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None = None,
                block: int = 256) -> Tensor:
    """Rotated NMS. ``boxes[N, 5]`` (cx, cy, w, h, angle_deg), ``scores[N]`` -> int64 kept indices
    by decreasing score (on the device of ``boxes``). ``max_keep``: stop once that many boxes are
    kept (the same first ``max_keep`` indices as the full result).

    Greedy in blocks of ``block`` boxes in score order: inside a block the suppressing pairs are
    found at once and resolved in order, then the block's kept boxes remove what they suppress among
    the later boxes; so the IoU is only computed for pairs with a kept box, and the pass ends early
    with ``max_keep``. The result is exactly the one-box-at-a-time greedy's."""
    b = _as_boxes(boxes).detach()
    scores = torch.as_tensor(scores, device=b.device).detach()
    n = b.shape[0]
    if n == 0 or (max_keep is not None and max_keep <= 0):
        return torch.zeros(0, dtype=torch.int64, device=b.device)
    order = torch.argsort(scores, descending=True, stable=True)
    bs = b[order]
    if bs.dtype != torch.float64:
        bs = bs.float()
    thr = float(iou_threshold)
    removed = np.zeros(n, dtype=bool)
    kept: list[np.ndarray] = []
    n_kept = 0
    with serial_cpu(bs.device):
        t = _box_table(bs)
        for start in range(0, n, block):
            end = min(n, start + block)
            blk = start + np.flatnonzero(~removed[start:end])
            if blk.size == 0:
                continue
            ia = torch.from_numpy(blk).to(bs.device)
            i, j = _suppressed_pairs(bs, t, ia, None, thr)
            kb = blk[_greedy(blk.size, i.cpu().numpy(), j.cpu().numpy())]
            kept.append(kb)
            n_kept += kb.size
            if max_keep is not None and n_kept >= max_keep:
                break
            rest = end + np.flatnonzero(~removed[end:])
            if rest.size == 0:
                break
            ik = torch.from_numpy(kb).to(bs.device)
            _, j = _suppressed_pairs(bs, t, ik, torch.from_numpy(rest).to(bs.device), thr)
            removed[rest[j.cpu().numpy()]] = True
    keep = np.concatenate(kept)[:max_keep]
    return order[torch.from_numpy(keep).to(order.device)]


def batched_nms_rotated(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float,
                        max_keep: int | None = None) -> Tensor:
    """Per-category rotated NMS (boxes with different ``idxs`` never suppress each other);
    ``max_keep`` as in :func:`nms_rotated`.

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
    return nms_rotated(shifted, scores, iou_threshold, max_keep=max_keep)
