"""Exact IoU of rotated rectangles, pure torch, batched and chunked.

Boxes are ``(cx, cy, w, h, angle_deg)`` (any form; canonical not required). The intersection of two
convex quadrilaterals is computed exactly with Green's theorem over the parts of each box's edges
inside the other box (Liang-Barsky segment clipping; see ``_intersection_area``). The geometry
runs in each box's local frame (relative centres), in float64 for float64 input and float32
otherwise, so large coordinates (1e4 px) and thin boxes (h ~ 0.01 px) stay accurate.

Only pairs that can overlap are computed: a circumscribed-circle test (on x-sorted blocks), then the
separating-axis test on the four edge normals (exact for rectangles); everything runs in chunks, so
N x M of many thousands fits in memory.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._threads import serial_cpu
from .rbox import _as_boxes

__all__ = ["rbox_iou", "rbox_iou_aligned", "rbox_match_quality", "rbox_overlap_candidates"]

# Chunk sizes: CPU pieces stay cache-resident (the sequences run single-threaded, see _threads.py);
# CUDA gets large chunks (few kernel launches).
_PAIR_CHUNK = 8192  # pairs per clipping chunk on CPU
_PAIR_CHUNK_CUDA = 1 << 18
_DENSE_CHUNK = 1 << 17  # elements per dense pre-filter block on CPU
_DENSE_CHUNK_CUDA = 1 << 22
_ROW_BLOCK = 128  # rows (sorted by x) per pre-filter block on CPU


def _chunks(dev: torch.device) -> tuple[int, int, int]:
    if dev.type == "cpu":
        return _PAIR_CHUNK, _DENSE_CHUNK, _ROW_BLOCK
    return _PAIR_CHUNK_CUDA, _DENSE_CHUNK_CUDA, 1024


def _compute_dtype(t: Tensor) -> torch.dtype:
    """float64 for float64 input, float32 otherwise (geometry is done in local frames)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _tol_scale(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 2e-5


def _sat_overlap(a: Tensor, b: Tensor) -> Tensor:
    """Separating-axis test for pairs of rectangles ``a[P,5]``, ``b[P,5]``: True where the
    interiors may intersect (False = a separating axis exists; touching counts as separated)."""
    ra = torch.deg2rad(a[:, 4])
    rb = torch.deg2rad(b[:, 4])
    ca, sa, cb, sb = torch.cos(ra), torch.sin(ra), torch.cos(rb), torch.sin(rb)
    dd = rb - ra
    cd, sd = torch.cos(dd).abs(), torch.sin(dd).abs()
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    wa, ha, wb, hb = a[:, 2].abs() / 2, a[:, 3].abs() / 2, b[:, 2].abs() / 2, b[:, 3].abs() / 2
    # u = (cos, -sin), v = (sin, cos)
    sep = (dx * ca - dy * sa).abs() >= wa + wb * cd + hb * sd
    sep |= (dx * sa + dy * ca).abs() >= ha + wb * sd + hb * cd
    sep |= (dx * cb - dy * sb).abs() >= wb + wa * cd + ha * sd
    sep |= (dx * sb + dy * cb).abs() >= hb + wa * sd + ha * cd
    return ~sep


def _frame_edges(cx, cy, w, h, c, s):
    """Corners ``qx, qy [P,4]`` (order of ``rbox_to_corners``) and edge vectors ``dx, dy [P,4]``
    (edge k: corner k -> k+1) of boxes given by centre, size and (cos, sin) of the angle."""
    wc, ws, hc, hs = (w * c)[:, None], (w * s)[:, None], (h * c)[:, None], (h * s)[:, None]
    cx, cy = cx[:, None], cy[:, None]
    # corner k = centre + su_k * (c, -s) + sv_k * (s, c), su = (-w, w, w, -w)/2, sv = (-h, -h, h, h)/2
    qx = cx + 0.5 * torch.cat((-wc - hs, wc - hs, wc + hs, -wc + hs), 1)
    qy = cy + 0.5 * torch.cat((ws - hc, -ws - hc, -ws + hc, ws + hc), 1)
    dx = torch.cat((wc, hs, -wc, -hs), 1)
    dy = torch.cat((-ws, hc, ws, -hc), 1)
    return qx, qy, dx, dy


def _spans_generic(qx, qy, dx, dy, hx, hy) -> Tensor:
    """Liang-Barsky: inside parameter length ``t1 - t0`` ``[P,4]`` of edges ``q_k + t d_k`` in the
    axis-aligned box ``|x| <= hx, |y| <= hy``; no edge may be parallel to an axis."""
    hx, hy = hx[:, None], hy[:, None]
    ix, iy = 1.0 / dx, 1.0 / dy
    t1, t2 = (-hx - qx) * ix, (hx - qx) * ix
    t3, t4 = (-hy - qy) * iy, (hy - qy) * iy
    lo = torch.maximum(torch.minimum(t1, t2), torch.minimum(t3, t4)).clamp_(min=0.0)
    hi = torch.minimum(torch.maximum(t1, t2), torch.maximum(t3, t4)).clamp_(max=1.0)
    return (hi - lo).clamp_(min=0.0)


def _spans_full(qx, qy, dx, dy, hx, hy, tol, second: bool) -> Tensor:
    """As ``_spans_generic`` but edges may be parallel to an axis (|d| <= tol). An edge lying on
    the box's boundary line (within ``tol``) counts as inside for the first polygon; for the second
    only if it runs opposite to the box's own edge there (the box's edges run +x along y=-hy, +y
    along x=+hx, -x along y=+hy, -y along x=-hx), so a shared piece of boundary is counted once and
    touching rectangles cancel out."""
    tol = tol[:, None]
    inf = float("inf")

    def axis(p, dp, half, dq, x_axis):
        par = dp.abs() <= tol
        dps = torch.where(par, torch.ones_like(dp), dp)
        t1 = (-half - p) / dps
        t2 = (half - p) / dps
        if second:
            on_hi = (p - half).abs() <= tol
            on_lo = (p + half).abs() <= tol
            if x_axis:  # line x=+hx: box edge runs +y; x=-hx: -y
                keep = (on_hi & (dq < 0)) | (on_lo & (dq > 0))
            else:  # line y=+hy: box edge runs -x; y=-hy: +x
                keep = (on_hi & (dq > 0)) | (on_lo & (dq < 0))
            inside = (p.abs() < half - tol) | keep
        else:
            inside = p.abs() <= half + tol
        lo = torch.where(par, torch.where(inside, -inf, inf), torch.minimum(t1, t2))
        hi = torch.where(par, torch.where(inside, inf, -inf), torch.maximum(t1, t2))
        return lo, hi

    lox, hix = axis(qx, dx, hx[:, None], dy, True)
    loy, hiy = axis(qy, dy, hy[:, None], dx, False)
    lo = torch.maximum(lox, loy).clamp(min=0.0)
    hi = torch.minimum(hix, hiy).clamp(max=1.0)
    return (hi - lo).clamp(min=0.0)


def _box_table(b: Tensor) -> Tensor:
    """Per-box quantities ``[7, N]``: cx, cy, |w|, |h|, cos a, sin a, area (one row each)."""
    r = torch.deg2rad(b[:, 4])
    w, h = b[:, 2].abs(), b[:, 3].abs()
    return torch.stack((b[:, 0], b[:, 1], w, h, torch.cos(r), torch.sin(r), w * h))


def _intersection_area(wa, ha, wb, hb, cd, sd, bu, bv, au, av) -> Tensor:
    """Exact intersection areas ``[P]`` of rectangle pairs, given their sizes, the relative angle
    (cos, sin of ``angle_b - angle_a``), b's centre ``(bu, bv)`` in a's frame and a's centre
    ``(au, av)`` in b's frame (frames: u = (cos, -sin), v = (sin, cos) of the box angle).

    Green's theorem: the boundary of the intersection is made of the parts of each rectangle's
    edges that lie inside the other one, so its area is half the sum of ``cross(P0, P1)`` over those
    parts. Each part is a Liang-Barsky clip of an edge in the other rectangle's frame (where that
    rectangle is axis-aligned, centred at 0); the contributions are summed in a's frame, where a's
    own edges give ``cross(p_k, d_k) = w_a h_a / 2`` and b's edges ``w_b h_b / 2 + cross(c_b, d_k)``.
    No vertex lists, no sorting.
    """
    if wa.shape[0] == 0:
        return wa.new_zeros(0)
    ma = torch.minimum(wa, ha)
    mb = torch.minimum(wb, hb)
    scale = torch.maximum(torch.maximum(wa, ha), torch.maximum(wb, hb)) + bu.abs() + bv.abs()
    tol = _tol_scale(wa.dtype) * scale.clamp(min=1e-12)  # "on the line" tolerance, pixels
    qbx, qby, dbx, dby = _frame_edges(bu, bv, wb, hb, cd, sd)  # b in a's frame (angle dd)
    qax, qay, dax, day = _frame_edges(au, av, wa, ha, cd, -sd)  # a in b's frame (angle -dd)
    msd = torch.minimum(cd.abs(), sd.abs())
    special = (torch.minimum(ma, mb) * msd <= tol).nonzero(as_tuple=True)[0]
    # generic pairs (no edge parallel to the other box's edges): plain Liang-Barsky for all, then
    # the few special pairs (parallel / collinear edges, degenerate boxes) redone carefully
    span_b = _spans_generic(qbx, qby, dbx, dby, wa / 2, ha / 2)
    span_a = _spans_generic(qax, qay, dax, day, wb / 2, hb / 2)
    if special.numel():
        g = special
        span_b[g] = _spans_full(qbx[g], qby[g], dbx[g], dby[g], wa[g] / 2, ha[g] / 2, tol[g], True)
        span_a[g] = _spans_full(qax[g], qay[g], dax[g], day[g], wb[g] / 2, hb[g] / 2, tol[g], False)
    cr_b = (wb * hb / 2)[:, None] + bu[:, None] * dby - bv[:, None] * dbx
    area = 0.5 * ((wa * ha / 2) * span_a.sum(1) + (span_b * cr_b).sum(1))
    amax = torch.minimum(wa * ha, wb * hb)
    return torch.minimum(area.clamp(min=0.0), amax)


def _overlap(c: Tensor, e: Tensor, half: Tensor) -> Tensor:
    """Length of [-half, half] intersected with [c - e, c + e]."""
    return (torch.minimum(half, c + e) - torch.maximum(-half, c - e)).clamp(min=0.0)


def _pair_iou(a: Tensor, b: Tensor, i: Tensor, j: Tensor, min_iou: float | None = None,
              tables: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """IoU ``[P]`` of the pairs ``(a[i[k]], b[j[k]])``, in chunks: separating-axis test, then the
    exact intersection for the pairs that may overlap. With ``min_iou``, pairs whose IoU is bounded
    by ``<= min_iou`` (cheap upper bound from areas and projected extents) are skipped (reported 0). ``tables``: ``_box_table`` of
    a and b, if already computed."""
    p = i.shape[0]
    out = a.new_zeros(p)
    if p == 0:
        return out
    ta, tb = tables if tables is not None else (_box_table(a), _box_table(b))
    chunk = _chunks(a.device)[0]
    chunk = max(1, -(-p // max(1, -(-p // chunk))))  # equal pieces of at most ``chunk``
    for s in range(0, p, chunk):
        xa, ya, wa, ha, ca, sa, area_a = ta.index_select(1, i[s:s + chunk]).unbind(0)
        xb, yb, wb, hb, cb, sb, area_b = tb.index_select(1, j[s:s + chunk]).unbind(0)
        cd = ca * cb + sa * sb  # cos(angle_b - angle_a)
        sd = ca * sb - sa * cb  # sin(angle_b - angle_a)
        dx, dy = xb - xa, yb - ya
        bu, bv = dx * ca - dy * sa, dx * sa + dy * ca  # b's centre in a's frame
        au, av = dy * sb - dx * cb, -(dx * sb + dy * cb)  # a's centre in b's frame
        acd, asd = cd.abs(), sd.abs()
        # half extents of b along a's axes and of a along b's axes
        ebu, ebv = (wb * acd + hb * asd) / 2, (wb * asd + hb * acd) / 2
        eau, eav = (wa * acd + ha * asd) / 2, (wa * asd + ha * acd) / 2
        # separating-axis test on the 4 edge normals (touching = separated)
        keep = bu.abs() < wa / 2 + ebu
        keep &= bv.abs() < ha / 2 + ebv
        keep &= au.abs() < wb / 2 + eau
        keep &= av.abs() < hb / 2 + eav
        if min_iou is not None:
            # IoU <= ub / (area_a + area_b - ub) with ub >= intersection: the smaller area, and in
            # each box's frame the box clipped to the other's axis-aligned extent there
            ub = torch.minimum(area_a, area_b)
            ub = torch.minimum(ub, _overlap(bu, ebu, wa / 2) * _overlap(bv, ebv, ha / 2))
            ub = torch.minimum(ub, _overlap(au, eau, wb / 2) * _overlap(av, eav, hb / 2))
            keep &= ub * (1 + 1e-4) > min_iou * (area_a + area_b - ub)  # slack for rounding
        k = keep.nonzero(as_tuple=True)[0]
        if k.numel() == 0:
            continue
        sel = torch.stack((wa, ha, wb, hb, cd, sd, bu, bv, au, av, area_a, area_b)).index_select(1, k)
        inter = _intersection_area(*sel[:10].unbind(0))
        union = sel[10] + sel[11] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(inter))
        out[s + k] = iou.clamp_(0.0, 1.0)
    return out


def _circle_pair_batches(a: Tensor, b: Tensor, upper_only: bool = False):
    """Yield batches ``(i, j)`` of index pairs whose circumscribed circles overlap (a superset of
    the overlapping pairs), a few thousand pairs per batch on CPU.

    The test runs on blocks of rows of ``a`` sorted by x, each against the x-window of ``b`` (also
    sorted by x) it can reach, so the work is far below N x M for spread-out boxes. With
    ``upper_only`` (``b`` must be ``a``) each unordered pair is tested once and given as i < j.
    """
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return
    target, dense, rows = _chunks(a.device)
    rad_a = 0.5 * torch.hypot(a[:, 2], a[:, 3])
    xa, oa = a[:, 0].sort()
    ya, ra = a[oa, 1], rad_a[oa]
    if upper_only:  # a is b: sorted positions p < q only
        xb, ob, yb, rb = xa, oa, ya, ra
    else:
        rad_b = 0.5 * torch.hypot(b[:, 2], b[:, 3])
        xb, ob = b[:, 0].sort()
        yb, rb = b[ob, 1], rad_b[ob]
    rbmax = rb.max()
    # x-window of b for every row block: [min(x - r) - max rb, max(x + r) + max rb]
    nb = (n + rows - 1) // rows
    pad = nb * rows - n
    xlo = torch.cat((xa - ra, (xa - ra)[-1:].expand(pad))).view(nb, rows).amin(1) - rbmax
    xhi = torch.cat((xa + ra, (xa + ra)[-1:].expand(pad))).view(nb, rows).amax(1) + rbmax
    c0 = torch.searchsorted(xb, xlo).tolist()
    c1 = torch.searchsorted(xb, xhi, right=True).tolist()
    step = max(1, dense // rows)
    buf_i, buf_j, count = [], [], 0
    for blk in range(nb):
        s = blk * rows
        j0, j1 = c0[blk], c1[blk]
        if upper_only:
            j0 = max(j0, s + 1)
        for q0 in range(j0, j1, step):
            q1 = min(j1, q0 + step)
            dx = xa[s:s + rows, None] - xb[None, q0:q1]
            dy = ya[s:s + rows, None] - yb[None, q0:q1]
            rr = ra[s:s + rows, None] + rb[None, q0:q1]
            cand = dx * dx + dy * dy < rr * rr
            if upper_only and q0 <= s + rows:
                cand = cand.triu_(diagonal=s + 1 - q0)  # keep sorted positions q > p
            i, j = cand.nonzero(as_tuple=True)
            if i.numel() == 0:
                continue
            i, j = oa[i + s], ob[j + q0]
            if upper_only:
                i, j = torch.minimum(i, j), torch.maximum(i, j)
            buf_i.append(i)
            buf_j.append(j)
            count += i.numel()
            if count >= target:
                yield torch.cat(buf_i), torch.cat(buf_j)
                buf_i, buf_j, count = [], [], 0
    if count:
        yield torch.cat(buf_i), torch.cat(buf_j)


def rbox_overlap_candidates(a: Tensor, b: Tensor, upper_only: bool = False) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, j)`` (int64, row-major order) of boxes ``a[i]``, ``b[j]`` whose interiors
    may intersect: circumscribed-circle test, then the separating-axis test (exact for rectangles).
    With ``upper_only`` (``b`` must be ``a``) only pairs with ``i < j``."""
    ii, jj = [], []
    with serial_cpu(a.device):
        for i, j in _circle_pair_batches(a, b, upper_only):
            keep = _sat_overlap(a[i], b[j])
            ii.append(i[keep])
            jj.append(j[keep])
    if not ii:
        e = torch.zeros(0, dtype=torch.int64, device=a.device)
        return e, e
    i, j = torch.cat(ii), torch.cat(jj)
    key = (i * b.shape[0] + j).argsort()
    return i[key], j[key]


def rbox_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Exact IoU matrix ``[N, M]`` of rotated boxes ``boxes1[N, 5]`` and ``boxes2[M, 5]``.

    Result dtype: that of ``boxes1`` (float32 for integer input); symmetric, in [0, 1]; pairs that
    only touch, or involve a zero-area box, give 0.
    """
    a0, b0 = _as_boxes(boxes1), _as_boxes(boxes2)
    out_dtype = a0.dtype
    dt = _compute_dtype(a0)
    a, b = a0.detach().to(dt), b0.detach().to(device=a0.device, dtype=dt)
    out = torch.zeros((a.shape[0], b.shape[0]), dtype=dt, device=a.device)
    with serial_cpu(a.device):
        tables = (_box_table(a), _box_table(b))
        for i, j in _circle_pair_batches(a, b):
            out[i, j] = _pair_iou(a, b, i, j, tables=tables)
    return out.to(out_dtype)


def rbox_iou_aligned(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU ``[N]`` of matched pairs ``boxes1[k]``, ``boxes2[k]`` (rotated boxes ``[N, 5]``)."""
    a0, b0 = _as_boxes(boxes1), _as_boxes(boxes2)
    if a0.shape != b0.shape:
        raise ValueError(f"rbox_iou_aligned needs equal shapes, got {tuple(a0.shape)} and {tuple(b0.shape)}")
    dt = _compute_dtype(a0)
    a, b = a0.detach().to(dt), b0.detach().to(device=a0.device, dtype=dt)
    k = torch.arange(a.shape[0], device=a.device)
    with serial_cpu(a.device):
        return _pair_iou(a, b, k, k).to(a0.dtype)


def rbox_match_quality(gt: Tensor, boxes: Tensor, min_iou: float, low_quality: bool = True,
                       candidates: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """IoU matrix ``[G, N]`` for anchor / proposal matching, exact wherever it can change a
    ``Matcher`` decision with low threshold ``min_iou``.

    Entries whose exact IoU is ``<= min_iou`` may be reported as 0, except in rows (ground-truth
    boxes) whose best IoU is itself ``<= min_iou``: those rows are computed exactly, so the
    low-quality matches (each ground truth's best anchors, ties included) are the same as with the
    full matrix. Every entry ``> min_iou`` is exact. The pruning uses the cheap upper bound of
    ``_pair_iou``; the result equals ``rbox_iou`` after ``Matcher`` in labels and matched indices of
    the positives. Float32 (float64 for float64 input).

    ``candidates``: index pairs ``(i, j)`` (into ``gt`` and ``boxes``) that contain every pair whose
    interiors intersect, e.g. from a regular anchor grid (``RotatedAnchorGenerator.overlap_candidates``);
    by default they are found by the circumscribed-circle test over x-sorted blocks.
    """
    g0, b0 = _as_boxes(gt), _as_boxes(boxes)
    dt = _compute_dtype(g0)
    g, b = g0.detach().to(dt), b0.detach().to(device=g0.device, dtype=dt)
    out = torch.zeros((g.shape[0], b.shape[0]), dtype=dt, device=g.device)
    if g.shape[0] == 0 or b.shape[0] == 0:
        return out
    with serial_cpu(g.device):
        tables = (_box_table(g), _box_table(b))
        if candidates is None:
            pairs = list(_circle_pair_batches(g, b))
        else:
            pairs = [(candidates[0].to(g.device), candidates[1].to(g.device))]
        for i, j in pairs:
            out[i, j] = _pair_iou(g, b, i, j, min_iou=float(min_iou), tables=tables)
        weak = out.amax(dim=1) <= min_iou
        if low_quality and bool(weak.any()):  # exact rows for the ground truth with no match above min_iou
            for i, j in pairs:
                sel = weak[i]
                if bool(sel.any()):
                    out[i[sel], j[sel]] = _pair_iou(g, b, i[sel], j[sel], tables=tables)
            # and exact columns for those rows' best boxes, so that their arg-max over the ground
            # truth (the Matcher's low-quality assignment) is the full matrix's
            best = out[weak].amax(dim=1, keepdim=True)
            cols = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
            cols[((out[weak] == best) & (best > 0)).any(dim=0)] = True
            for i, j in pairs:
                sel = cols[j] & ~weak[i]
                if bool(sel.any()):
                    out[i[sel], j[sel]] = _pair_iou(g, b, i[sel], j[sel], tables=tables)
    return out
