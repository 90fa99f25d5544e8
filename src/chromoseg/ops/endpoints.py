"""Chromosome endpoints: skeleton ends of a mask, and the Gaussian endpoint heatmap (eq. (4) target).

Endpoints are ``(x, y)`` in continuous pixel coordinates (pixel (i, j) covers x in [j, j+1),
y in [i, i+1); its centre is (j + .5, i + .5)), ordered: the first has the smaller y (ties: x).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import sparse
from scipy.sparse import csgraph
from skimage.measure import label
from skimage.morphology import skeletonize
from torch import Tensor

from .masks import _to_numpy_bool, mask_to_rbox

__all__ = ["mask_endpoints", "endpoint_heatmap", "window_endpoints", "snap_endpoints"]

_NBRS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _order(p: np.ndarray) -> np.ndarray:
    if (p[1, 1], p[1, 0]) < (p[0, 1], p[0, 0]):
        p = p[::-1]
    return np.ascontiguousarray(p, dtype=np.float32)


def _rect_axis_ends(m: np.ndarray) -> np.ndarray:
    cx, cy, w, _, a = mask_to_rbox(m).tolist()
    r = math.radians(a)
    ux, uy = math.cos(r) * w / 2, -math.sin(r) * w / 2
    return np.array([[cx - ux, cy - uy], [cx + ux, cy + uy]])


def mask_endpoints(mask) -> Tensor:
    """The two ends ``[2, 2]`` float32 ``(x, y)`` of a chromosome mask's skeleton.

    Skeletonises the mask (``skimage.morphology.skeletonize``), keeps the largest 8-connected
    skeleton component and returns the ends of its longest geodesic path (two breadth-first searches
    over the 8-connected skeleton graph, path length in steps), as pixel centres. Degenerate masks
    (one-pixel skeleton, e.g. a dot or a round blob) get the ends of the minimum-area rectangle's long
    axis instead. An empty mask gives zeros. ``mask``: ``[H, W]`` torch or numpy, nonzero = fg.
    """
    device = mask.device if isinstance(mask, Tensor) else torch.device("cpu")
    m = _to_numpy_bool(mask)
    if m.ndim != 2:
        raise ValueError(f"mask_endpoints expects a [H, W] mask, got shape {m.shape}")
    if not m.any():
        return torch.zeros((2, 2), dtype=torch.float32, device=device)
    # work on the mask's bounding box (plus a 1-pixel border) only
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    y0, x0 = max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)
    crop = m[y0:int(rows[-1]) + 2, x0:int(cols[-1]) + 2]
    pts = _skeleton_ends(crop)
    pts[:, 0] += x0
    pts[:, 1] += y0
    return torch.from_numpy(_order(pts)).to(device)


def _skeleton_ends(m: np.ndarray) -> np.ndarray:
    """Ends ``[2, 2]`` (x, y) of the longest skeleton path of a non-empty mask, unordered."""
    sk = skeletonize(m)
    lab = label(sk, connectivity=2)
    if lab.max() == 0:
        return _rect_axis_ends(m)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    comp = lab == counts.argmax()
    ys, xs = np.nonzero(comp)
    n = len(ys)
    if n < 2:
        return _rect_axis_ends(m)
    # graph over the component's pixels, 8-connected
    index = -np.ones(comp.shape, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    H, W = comp.shape
    rows, cols = [], []
    for dy, dx in _NBRS:
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[yy[ok], xx[ok]]
        sel = j >= 0
        rows.append(np.flatnonzero(sel))
        cols.append(j[sel])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    g = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    d0 = csgraph.shortest_path(g, unweighted=True, indices=0)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da = csgraph.shortest_path(g, unweighted=True, indices=a)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    return np.array([[xs[a] + 0.5, ys[a] + 0.5], [xs[b] + 0.5, ys[b] + 0.5]])


def window_endpoints(window) -> np.ndarray:
    """:func:`mask_endpoints` of a mask given as a :class:`~chromoseg.ops.MaskWindow` (or a full
    ``[H, W]`` mask), in the image's pixels, float64 ``[2, 2]``: the skeleton is taken in the window
    with a 1-pixel margin (where the image has one), so it is that of the full-size mask."""
    from .mask_windows import window_of

    m = window_of(window)
    if not m.area:
        return np.zeros((2, 2))
    H, W = m.image_size
    x0, y0, x1, y1 = m.bounds
    px0, py0 = min(x0, 1), min(y0, 1)
    pad = np.pad(m.data, ((py0, min(H - y1, 1)), (px0, min(W - x1, 1))))
    return mask_endpoints(pad).numpy().astype(np.float64) + [x0 - px0, y0 - py0]


def snap_endpoints(ends, window, heatmap=None, *, min_peak: float = 0.5, off_mask: bool = True,
                   skeleton_ends=None) -> tuple[np.ndarray, list[bool]]:
    """One detection's endpoints ``ends`` ``[2, 2]`` (x, y; the ED heatmap's, image pixels) with each
    end the heatmap is unsure of moved to the mask's skeleton end (:func:`window_endpoints`).

    An end is unsure when the heatmap ``[H, W]`` (or ``[1, H, W]``; image pixels) is under
    ``min_peak`` at its pixel (no heatmap: never), or, with ``off_mask``, when its pixel is not on the
    mask ``window`` (a :class:`~chromoseg.ops.MaskWindow` or a full mask). The two ends are paired
    with the skeleton's two in the pairing (straight or crossed) of the smaller summed distance, so
    an unsure end goes to the skeleton end on its own side. Returns the ends, ordered as the dataset
    orders them (the first with the smaller y, ties: x), and which of them (in that order) moved.
    An empty mask leaves the ends as they are. ``skeleton_ends``: the mask's, when already known."""
    from .mask_windows import window_of

    e = np.asarray(ends, dtype=np.float64).reshape(2, 2).copy()
    m = window_of(window)
    if not m.area:
        return _order(e).astype(np.float64), [False, False]
    unsure = [False, False]
    H, W = m.image_size
    hm = None if heatmap is None else np.asarray(
        heatmap.detach().float().cpu() if isinstance(heatmap, Tensor) else heatmap).reshape(H, W)
    for k in range(2):
        x, y = int(math.floor(e[k, 0])), int(math.floor(e[k, 1]))
        inside = 0 <= x < W and 0 <= y < H
        if hm is not None and (not inside or float(hm[y, x]) < min_peak):
            unsure[k] = True
        if off_mask:
            lx, ly = x - m.x0, y - m.y0
            on = inside and 0 <= ly < m.data.shape[0] and 0 <= lx < m.data.shape[1] and bool(m.data[ly, lx])
            unsure[k] = unsure[k] or not on
    if not any(unsure):
        return _order(e).astype(np.float64), [False, False]
    sk = np.asarray(skeleton_ends, dtype=np.float64).reshape(2, 2) if skeleton_ends is not None \
        else window_endpoints(m)
    straight = np.linalg.norm(e - sk, axis=1).sum()
    crossed = np.linalg.norm(e - sk[::-1], axis=1).sum()
    target = sk if straight <= crossed else sk[::-1]
    for k in range(2):
        if unsure[k]:
            e[k] = target[k]
    if (e[1, 1], e[1, 0]) < (e[0, 1], e[0, 0]):
        e, unsure = e[::-1], unsure[::-1]
    return np.ascontiguousarray(e), list(unsure)


def endpoint_heatmap(endpoints, size: Sequence[int], sigma: float = 3.0) -> Tensor:
    """Endpoint heatmap ``[H, W]`` float32: max over Gaussians ``exp(-d^2 / (2 sigma^2))``.

    ``endpoints``: ``[N, 2, 2]`` (or ``[P, 2]``) ``(x, y)`` in pixels; ``d`` is the distance from each
    pixel centre to the centre of the pixel containing the endpoint (CenterNet-style), so every
    endpoint inside the image has value exactly 1 at its pixel. Endpoints outside the image still
    contribute their tails (unsnapped). N = 0 gives all zeros. ``sigma`` in pixels.
    """
    H, W = int(size[0]), int(size[1])
    e = torch.as_tensor(endpoints)
    device = e.device
    e = e.detach().reshape(-1, 2).to(torch.float32)
    out = torch.zeros((H, W), dtype=torch.float32, device=device)
    if e.shape[0] == 0:
        return out
    inside = (e[:, 0] >= 0) & (e[:, 0] < W) & (e[:, 1] >= 0) & (e[:, 1] < H)
    e = torch.where(inside[:, None], e.floor() + 0.5, e)
    ys = torch.arange(H, dtype=torch.float32, device=device) + 0.5
    xs = torch.arange(W, dtype=torch.float32, device=device) + 0.5
    inv = 1.0 / (2.0 * float(sigma) ** 2)
    for chunk in e.split(16):
        gy = torch.exp(-((ys[None, :] - chunk[:, 1:2]) ** 2) * inv)  # [P, H]
        gx = torch.exp(-((xs[None, :] - chunk[:, 0:1]) ** 2) * inv)  # [P, W]
        out = torch.maximum(out, (gy[:, :, None] * gx[:, None, :]).amax(0))
    return out
