"""Straightened chromosomes: each chromosome resampled along its medial axis, as karyograms show them.

:func:`medial_axis` finds the axis of one chromosome's mask:

1. the mask's largest component, holes of a few pixels filled (a real hole - a ring - stays), lightly
   smoothed (Gaussian, sigma 1 px) and skeletonised (``skimage.morphology.skeletonize``);
2. the skeleton as a graph (8-neighbours, ``scipy.sparse.csgraph``); of its ends (pixels with one
   neighbour) the two joined by the longest path are taken - when the prediction's ``endpoints`` are
   given, the pair that maximises *path length minus the ends' distances to the two endpoints*, so a
   side spur near a tip does not win; the path runs from the end nearer the first endpoint;
3. the path resampled every pixel, smoothed (Gaussian along the path, sigma half the chromosome's
   half width), its last stretch at each end (where a skeleton forks towards the corners of a blunt
   tip) cut off and replaced by a straight run along the end's tangent out to the mask's edge, so the
   axis reaches from tip to tip.

:func:`straighten` samples the image along that axis (``cv2.remap``): output row ``v`` is the point
``v / scale`` pixels along the axis, column ``u`` the point ``u / scale`` pixels along the normal
``(t_y, -t_x)`` of the unit tangent ``t``. The frame (tangent down, normal right) is a rotation of
the image's (never a mirror), turned along the axis, so a straightened chromosome keeps its
handedness and its bands their order. Of the sampled mask only the parts that touch the axis are kept
(a neighbouring arm of a tightly bent chromosome, seen from across the bend, is dropped).

Orientation: the path starts at the tip nearer the prediction's *first* endpoint. That order carries
no short-arm / long-arm meaning - the model's endpoints are ordered by their place in the image (the
one nearer the top first, as in the dataset contract; ``chromoseg.models.rcnn.detection_endpoints``)
and there is no p/q signal in the model - so this module keeps that order, and the karyogram decides
"short arm up" afterwards from the straightened crop and the model's class
(:func:`chromoseg.karyotype.layout.orient_upright`: the centromeric constriction expected for that
class).

Degenerate masks raise :class:`NotStraightenable` (the caller keeps the plain, rotated crop): fewer
than :data:`MIN_AREA` pixels, no skeleton, a skeleton without two ends (a ring), an axis not longer
than :data:`MIN_ELONGATION` times the chromosome's width (a blob: nothing to straighten), or a
straightened mask whose area differs from the mask's by more than :data:`AREA_RATIO` allows
(:func:`straighten_instance`).
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

#: masks smaller than this (pixels) are not straightened
MIN_AREA = 30
#: the axis must be at least this many times the chromosome's width
MIN_ELONGATION = 1.6
#: the straightened mask's area over the mask's must lie in this range, else the plain crop is used
AREA_RATIO = (0.75, 1.33)


#: medial axes remembered (by mask and endpoints): the review app renders a metaphase's karyogram again
#: after every edit, and most of its chromosomes are unchanged
CACHE_SIZE = 4096
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


class NotStraightenable(ValueError):
    """This mask has no usable medial axis (the message says why); show the plain crop."""


@dataclass
class MedialAxis:
    """A chromosome's medial axis, tip to tip, in chromoseg's continuous image coordinates (pixel
    ``(i, j)`` covers ``x`` in ``[j, j+1)``, ``y`` in ``[i, i+1)``)."""

    points: np.ndarray  # [N, 2] (x, y), about 1 px apart along the axis
    tangents: np.ndarray  # [N, 2] unit tangents
    arc: np.ndarray  # [N] arc length of each point from the first
    half_width: float  # the largest distance from the axis to the mask's edge (px)

    @property
    def length(self) -> float:
        return float(self.arc[-1])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points and unit tangents at arc lengths ``s``; beyond the ends, straight on along the end tangents."""
        s = np.asarray(s, np.float64)
        L = self.length
        sc = np.clip(s, 0.0, L)
        p = np.stack([np.interp(sc, self.arc, self.points[:, k]) for k in (0, 1)], 1)
        t = np.stack([np.interp(sc, self.arc, self.tangents[:, k]) for k in (0, 1)], 1)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
        before, after = s < 0, s > L
        p[before] += (s[before] - 0.0)[:, None] * self.tangents[0]
        p[after] += (s[after] - L)[:, None] * self.tangents[-1]
        return p, t


def _resample(pts: np.ndarray, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A polyline resampled every ``step`` px of arc length: (points, arc lengths)."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    pts = pts[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    if s[-1] <= 0:
        return pts[:1], s[:1]
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    si = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(si, s, pts[:, 0]), np.interp(si, s, pts[:, 1])], 1), si


def _tangents(pts: np.ndarray) -> np.ndarray:
    t = np.gradient(pts, axis=0)
    n = np.linalg.norm(t, axis=1, keepdims=True)
    return t / np.maximum(n, 1e-9)


def _skeleton_path(sk: np.ndarray, ends_px: np.ndarray | None) -> np.ndarray:
    """Pixel indices ``[N, 2]`` (row, col) of the chosen path through a skeleton (see the module docstring)."""
    from scipy import sparse
    from scipy.sparse import csgraph

    r, c = (v.astype(np.int32) for v in np.nonzero(sk))
    n = len(r)
    idx = np.full(sk.shape, -1, np.int32)
    idx[r, c] = np.arange(n)
    src, dst, wts = [], [], []
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
        rr, cc = r + dr, c + dc
        ok = (rr < sk.shape[0]) & (cc >= 0) & (cc < sk.shape[1])
        j = np.full(n, -1, np.int32)
        j[ok] = idx[rr[ok], cc[ok]]
        k = np.nonzero(j >= 0)[0].astype(np.int32)
        src.append(k)
        dst.append(j[k])
        wts.append(np.full(len(k), math.hypot(dr, dc)))
    src, dst, wts = np.concatenate(src), np.concatenate(dst), np.concatenate(wts)
    graph = sparse.csr_matrix((wts, (src, dst)), shape=(n, n))
    deg = np.bincount(src, minlength=n) + np.bincount(dst, minlength=n)
    tips = np.nonzero(deg == 1)[0]
    if len(tips) < 2:
        raise NotStraightenable("the skeleton has no two ends (a ring or a closed loop)")
    dist, pred = csgraph.dijkstra(graph, directed=False, indices=tips, return_predecessors=True)
    geo = dist[:, tips]  # [T, T]
    score = np.where(np.isfinite(geo), geo, -np.inf)
    if ends_px is not None:
        tp = np.stack([r[tips], c[tips]], 1).astype(np.float64)
        d0 = np.linalg.norm(tp - ends_px[0], axis=1)
        d1 = np.linalg.norm(tp - ends_px[1], axis=1)
        score = score - d0[:, None] - d1[None, :]  # a: near the first endpoint, b: near the second
    np.fill_diagonal(score, -np.inf)
    a, b = np.unravel_index(int(np.argmax(score)), score.shape)
    if not np.isfinite(score[a, b]):
        raise NotStraightenable("the skeleton's ends are not connected")
    if ends_px is None:  # no endpoints: start at the end nearer the top of the image (then the left)
        ra, rb = (r[tips[a]], c[tips[a]]), (r[tips[b]], c[tips[b]])
        if rb < ra:
            a, b = b, a
    path = [tips[b]]
    row = pred[a]
    while path[-1] != tips[a]:
        path.append(row[path[-1]])
    path = np.array(path[::-1])
    return np.stack([r[path], c[path]], 1)


def medial_axis(mask: np.ndarray, endpoints=None) -> MedialAxis:
    """The medial axis of one chromosome's boolean mask ``[H, W]``, tip to tip (see the module
    docstring); ``endpoints``: the prediction's ``[[x1, y1], [x2, y2]]`` (or None): the axis starts
    at the tip nearer the first. Raises :class:`NotStraightenable` for a degenerate mask. The last
    :data:`CACHE_SIZE` answers are remembered (keyed by the mask's pixels and the endpoints)."""
    m = np.asarray(mask, bool)
    rows = np.flatnonzero(m.any(1))  # the mask's bounds first: a full-image nonzero is slow
    if len(rows) == 0:
        raise NotStraightenable("an empty mask")
    cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(0))
    r0, c0 = int(rows[0]), int(cols[0])
    box = m[r0:rows[-1] + 1, c0:cols[-1] + 1]
    ends = None if endpoints is None else np.asarray(endpoints, np.float64).round(3).tobytes()
    key = (r0, c0, box.shape, hashlib.blake2b(np.packbits(box).tobytes(), digest_size=16).digest(), ends)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            hit = _medial_axis(box, r0, c0, endpoints)
        except NotStraightenable as err:
            hit = err
        with _cache_lock:
            _cache[key] = hit
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(hit, NotStraightenable):
        raise NotStraightenable(str(hit))
    return hit


def _medial_axis(box: np.ndarray, r0: int, c0: int, endpoints) -> MedialAxis:
    """:func:`medial_axis` of the mask's bounding box ``box`` (its top-left pixel at row ``r0``, column ``c0``)."""
    import cv2
    from scipy import ndimage
    from skimage.morphology import skeletonize

    area = int(np.count_nonzero(box))
    if area < MIN_AREA:
        raise NotStraightenable(f"a tiny mask ({area} px)")
    pad = 3
    crop = np.pad(box, pad)
    off = np.array([c0 - pad, r0 - pad], np.float64)  # crop (col, row) + off = image pixel index
    n, lab, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
    if n > 2:  # the largest component only
        crop = lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    # holes (background not connected to the border) of a few pixels filled, a real one (a ring) kept
    nb, bl, stats, _ = cv2.connectedComponentsWithStats((~crop).astype(np.uint8), connectivity=4)
    if nb > 2:  # the crop's padding makes label 1 the outside
        small = np.nonzero(stats[:, cv2.CC_STAT_AREA] <= max(4, area // 50))[0]
        small = small[(small > 0) & (small != bl[0, 0])]
        if len(small):
            crop = crop | np.isin(bl, small)
    smooth = ndimage.gaussian_filter(crop.astype(np.float32), 1.0) > 0.5
    if smooth.sum() < MIN_AREA // 2:
        smooth = crop
    sk = skeletonize(smooth)
    if sk.sum() < 2:
        raise NotStraightenable("no skeleton")
    edt = ndimage.distance_transform_edt(crop)
    ends_px = None
    if endpoints is not None:
        e = np.asarray(endpoints, np.float64)
        if e.shape == (2, 2) and np.isfinite(e).all() and np.linalg.norm(e[0] - e[1]) > 1:
            ends_px = (e - 0.5 - off)[:, ::-1]  # (row, col) pixel indices in the crop
    path = _skeleton_path(sk, ends_px)
    half_width = float(edt[path[:, 0], path[:, 1]].max())
    pts = path[:, ::-1].astype(np.float64) + 0.5 + off  # continuous (x, y)
    pts, _ = _resample(pts)
    if len(pts) >= 3:
        from scipy.ndimage import gaussian_filter1d

        sigma = float(np.clip(0.5 * half_width, 1.0, 8.0))
        pts = gaussian_filter1d(pts, sigma, axis=0, mode="nearest")
        # the last stretch at each end follows the skeleton's fork into a blunt tip: cut it off
        cut = int(min(round(0.6 * half_width), (len(pts) - 2) // 3))
        if cut > 0:
            pts = pts[cut:len(pts) - cut]
    if len(pts) < 2:
        raise NotStraightenable("a skeleton of one point (a blob)")
    # out to the mask's edge along the end tangents
    steps = np.arange(0.5, 4 * half_width + 6, 0.5)

    def reach(p, d):
        q = p[None] + steps[:, None] * d[None]
        cc = np.floor(q[:, 0] - off[0]).astype(int)
        rr = np.floor(q[:, 1] - off[1]).astype(int)
        inside = (rr >= 0) & (rr < crop.shape[0]) & (cc >= 0) & (cc < crop.shape[1])
        inside[inside] = crop[rr[inside], cc[inside]]
        k = int(np.argmin(inside)) if not inside.all() else len(steps)
        return float(steps[k - 1]) if k > 0 else 0.0

    k = max(1, min(len(pts) - 1, int(round(half_width))))
    d0 = pts[0] - pts[k]
    d1 = pts[-1] - pts[-1 - k]
    d0 /= max(np.linalg.norm(d0), 1e-9)
    d1 /= max(np.linalg.norm(d1), 1e-9)
    e0, e1 = reach(pts[0], d0), reach(pts[-1], d1)
    full = np.concatenate([(pts[0] + e0 * d0)[None], pts, (pts[-1] + e1 * d1)[None]])
    pts, arc = _resample(full)
    if arc[-1] < MIN_ELONGATION * 2 * half_width:
        raise NotStraightenable(f"not elongated (axis {arc[-1]:.0f} px, width {2 * half_width:.0f} px)")
    tang = _tangents(pts)
    return MedialAxis(points=pts, tangents=tang, arc=arc, half_width=half_width)


def straighten(image: np.ndarray, mask: np.ndarray, axis: MedialAxis, *, scale: float = 1.0, pad: float = 3.0,
               half_extent: float | None = None, border: float = 255, interpolation: int | None = None):
    """Sample ``image`` (2-D, uint8 or float32) and ``mask`` along ``axis``: returns (image crop, bool
    mask crop), the axis vertical and running down the crop's centre column, ``scale`` output pixels
    per image pixel, ``pad`` image pixels beyond each tip and each side. ``half_extent``: image pixels
    sampled on each side of the axis (default: the axis's half width + ``pad``). Only the mask parts
    that touch the axis are kept; the image is returned as sampled (mask it as you like)."""
    import cv2

    step = 1.0 / float(scale)
    L = axis.length
    half = float(axis.half_width + pad if half_extent is None else half_extent)
    n_rows = max(3, int(math.ceil((L + 2 * pad) * scale)))
    n_cols = max(3, int(math.ceil(2 * half * scale)))
    n_cols += (n_cols + 1) % 2  # odd: the axis runs through the centre column
    s = -pad + (np.arange(n_rows) + 0.5) * step
    u = (np.arange(n_cols) - (n_cols - 1) / 2.0) * step
    p, t = axis.at(s)
    nrm = np.stack([t[:, 1], -t[:, 0]], 1)  # (tangent, normal) = a rotation of (y, x): no mirror
    X = p[:, 0:1] + nrm[:, 0:1] * u[None]
    Y = p[:, 1:2] + nrm[:, 1:2] * u[None]
    # sample from a window of the image only (a full-size float mask per chromosome is wasteful)
    H, W = mask.shape
    x0 = int(max(0, math.floor(X.min()) - 2))
    y0 = int(max(0, math.floor(Y.min()) - 2))
    x1 = int(min(W, math.ceil(X.max()) + 3))
    y1 = int(min(H, math.ceil(Y.max()) + 3))
    if x1 <= x0 or y1 <= y0:
        raise NotStraightenable("the axis lies outside the image")
    mx = (X - 0.5 - x0).astype(np.float32)
    my = (Y - 0.5 - y0).astype(np.float32)
    interp = cv2.INTER_LINEAR if interpolation is None else interpolation
    img = np.ascontiguousarray(image[y0:y1, x0:x1])
    g = cv2.remap(img, mx, my, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=float(border))
    mw = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32)
    m = cv2.remap(mw, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0.5
    if m.any():
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        c = n_cols // 2
        on_axis = np.unique(lab[:, max(0, c - 1):c + 2])
        m = np.isin(lab, on_axis[on_axis > 0])
    return g, m


def straighten_instance(image: np.ndarray, mask: np.ndarray, endpoints=None, *, scale: float = 1.0,
                        pad: float = 3.0, half_extent: float | None = None, border: float = 255):
    """:func:`medial_axis` then :func:`straighten`, checked: returns (image crop, mask crop, axis);
    raises :class:`NotStraightenable` when there is no axis or the straightened mask's area is off
    (outside :data:`AREA_RATIO` of the mask's)."""
    axis = medial_axis(mask, endpoints)
    g, m = straighten(image, mask, axis, scale=scale, pad=pad, half_extent=half_extent, border=border)
    ratio = float(m.sum()) / (scale * scale) / max(float(np.count_nonzero(mask)), 1.0)
    if not AREA_RATIO[0] <= ratio <= AREA_RATIO[1]:
        raise NotStraightenable(f"the straightened mask has {ratio:.0%} of the mask's area")
    return g, m, axis
