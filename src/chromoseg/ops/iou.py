"""Exact IoU of rotated rectangles, pure torch, batched and chunked.

Boxes are ``(cx, cy, w, h, angle_deg)`` (any form; canonical not required). The intersection of two
convex quadrilaterals is computed exactly: the candidate vertices are the corners of each box that
lie inside the other plus all edge/edge crossings; they are sorted by angle around their centroid
and the shoelace formula gives the area. All geometry runs in float64 about a local origin (the
first box's centre), so large coordinates (1e4 px) and thin boxes (h ~ 0.01 px) stay accurate.

Only pairs that can overlap are computed: a circumscribed-circle test, then the separating-axis test
on the four edge normals (exact for rectangles), and the survivors are processed in chunks, so
N x M of several thousand fits in memory.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rbox import _as_boxes, rbox_to_corners

__all__ = ["rbox_iou", "rbox_iou_aligned", "rbox_overlap_candidates"]

_PAIR_CHUNK = 65536  # pairs per polygon-clipping chunk
_DENSE_CHUNK = 1 << 22  # elements per dense pre-filter chunk


def _sat_overlap(a: Tensor, b: Tensor) -> Tensor:
    """Separating-axis test for pairs of rectangles ``a[P,5]``, ``b[P,5]`` (float64): True where the
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


def _cross(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor) -> Tensor:
    return ax * by - ay * bx


def _intersection_area(a: Tensor, b: Tensor) -> Tensor:
    """Exact intersection areas ``[P]`` of rectangle pairs ``a[P,5]``, ``b[P,5]`` (float64)."""
    p = a.shape[0]
    if p == 0:
        return a.new_zeros(0)
    origin = a[:, :2]
    a = torch.cat((a[:, :2] - origin, a[:, 2:]), 1)
    b = torch.cat((b[:, :2] - origin, b[:, 2:]), 1)
    pa = rbox_to_corners(a)  # [P,4,2], positively oriented (shoelace > 0)
    pb = rbox_to_corners(b)
    scale = torch.maximum(a[:, 2:4].abs().amax(1), b[:, 2:4].abs().amax(1)).clamp(min=1e-12)
    tol = (1e-9 * scale)[:, None, None]  # distance tolerance for "on the boundary"
    ea = pa.roll(-1, 1) - pa
    eb = pb.roll(-1, 1) - pb
    la = ea.norm(dim=-1).clamp(min=1e-300)  # [P,4]
    lb = eb.norm(dim=-1).clamp(min=1e-300)

    def inside(pts: Tensor, poly: Tensor, e: Tensor, le: Tensor) -> Tensor:
        d = pts[:, :, None, :] - poly[:, None, :, :]  # [P,4(pt),4(edge),2]
        cr = _cross(e[:, None, :, 0], e[:, None, :, 1], d[..., 0], d[..., 1]) / le[:, None, :]
        return (cr >= -tol).all(-1)  # [P,4]

    in_a_b = inside(pa, pb, eb, lb)
    in_b_a = inside(pb, pa, ea, la)
    # edge i of a against edge j of b: a_i + t ea_i = b_j + u eb_j
    eax, eay = ea[:, :, None, 0], ea[:, :, None, 1]  # [P,4,1]
    ebx, eby = eb[:, None, :, 0], eb[:, None, :, 1]  # [P,1,4]
    qx = pb[:, None, :, 0] - pa[:, :, None, 0]  # [P,4,4]
    qy = pb[:, None, :, 1] - pa[:, :, None, 1]
    den = _cross(eax, eay, ebx, eby)
    ok_den = den.abs() > 1e-12 * (la[:, :, None] * lb[:, None, :])
    den_safe = torch.where(ok_den, den, torch.ones_like(den))
    t = _cross(qx, qy, ebx, eby) / den_safe
    u = _cross(qx, qy, eax, eay) / den_safe
    ok_x = ok_den & (t >= 0) & (t <= 1) & (u >= 0) & (u <= 1)
    ix = pa[:, :, None, 0] + t * eax
    iy = pa[:, :, None, 1] + t * eay
    xs = torch.cat((pa[..., 0], pb[..., 0], ix.reshape(p, 16)), 1)  # [P,24]
    ys = torch.cat((pa[..., 1], pb[..., 1], iy.reshape(p, 16)), 1)
    valid = torch.cat((in_a_b, in_b_a, ok_x.reshape(p, 16)), 1)
    n = valid.sum(1)
    vf = valid.to(xs.dtype)
    cnt = n.clamp(min=1).to(xs.dtype)
    mx = (xs * vf).sum(1, keepdim=True) / cnt[:, None]
    my = (ys * vf).sum(1, keepdim=True) / cnt[:, None]
    xs = xs - mx
    ys = ys - my
    ang = torch.atan2(ys, xs)
    ang = torch.where(valid, ang, torch.full_like(ang, 10.0))  # invalid points sort last
    order = ang.argsort(1)
    xs = xs.gather(1, order)
    ys = ys.gather(1, order)
    vs = valid.gather(1, order)
    # invalid slots repeat the first (valid) point: their edges add nothing to the shoelace sum
    xs = torch.where(vs, xs, xs[:, :1])
    ys = torch.where(vs, ys, ys[:, :1])
    area = 0.5 * _cross(xs, ys, xs.roll(-1, 1), ys.roll(-1, 1)).sum(1)
    area = torch.where(n >= 3, area.abs(), torch.zeros_like(area))
    # never more than the smaller box (guards rounding on near-degenerate input)
    amax = torch.minimum(a[:, 2].abs() * a[:, 3].abs(), b[:, 2].abs() * b[:, 3].abs())
    return torch.minimum(area, amax)


def _pair_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[P]`` (float64) of pairs that passed the pre-filter, in chunks."""
    out = a.new_zeros(a.shape[0])
    for s in range(0, a.shape[0], _PAIR_CHUNK):
        aa, bb = a[s:s + _PAIR_CHUNK], b[s:s + _PAIR_CHUNK]
        inter = _intersection_area(aa, bb)
        union = aa[:, 2].abs() * aa[:, 3].abs() + bb[:, 2].abs() * bb[:, 3].abs() - inter
        out[s:s + _PAIR_CHUNK] = torch.where(union > 0, inter / union.clamp(min=1e-300),
                                             torch.zeros_like(inter))
    return out.clamp_(0.0, 1.0)


def rbox_overlap_candidates(a: Tensor, b: Tensor, upper_only: bool = False) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, j)`` (int64) of boxes ``a[i]``, ``b[j]`` whose interiors may intersect.

    Circumscribed-circle test on dense row chunks, then the separating-axis test. With
    ``upper_only`` (for ``a is b``) only pairs with ``i < j`` are returned. Inputs must be float64.
    """
    n, m = a.shape[0], b.shape[0]
    dev = a.device
    if n == 0 or m == 0:
        e = torch.zeros(0, dtype=torch.int64, device=dev)
        return e, e
    rad_a = 0.5 * torch.hypot(a[:, 2], a[:, 3])
    rad_b = 0.5 * torch.hypot(b[:, 2], b[:, 3])
    rows = max(1, _DENSE_CHUNK // m)
    ii, jj = [], []
    for s in range(0, n, rows):
        ca = a[s:s + rows]
        dx = ca[:, None, 0] - b[None, :, 0]
        dy = ca[:, None, 1] - b[None, :, 1]
        rr = rad_a[s:s + rows, None] + rad_b[None, :]
        cand = dx * dx + dy * dy < rr * rr
        if upper_only:
            cand = torch.triu(cand, diagonal=s + 1)
        i, j = cand.nonzero(as_tuple=True)
        ii.append(i + s)
        jj.append(j)
    i, j = torch.cat(ii), torch.cat(jj)
    keep = _sat_overlap(a[i], b[j])
    return i[keep], j[keep]


def rbox_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Exact IoU matrix ``[N, M]`` of rotated boxes ``boxes1[N, 5]`` and ``boxes2[M, 5]``.

    Result dtype: that of ``boxes1`` (float32 for integer input); symmetric, in [0, 1]; pairs that
    only touch, or involve a zero-area box, give 0.
    """
    a0, b0 = _as_boxes(boxes1), _as_boxes(boxes2)
    out_dtype = a0.dtype
    a, b = a0.detach().to(torch.float64), b0.detach().to(device=a0.device, dtype=torch.float64)
    out = torch.zeros((a.shape[0], b.shape[0]), dtype=torch.float64, device=a.device)
    i, j = rbox_overlap_candidates(a, b)
    if i.numel():
        out[i, j] = _pair_iou(a[i], b[j])
    return out.to(out_dtype)


def rbox_iou_aligned(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU ``[N]`` of matched pairs ``boxes1[k]``, ``boxes2[k]`` (rotated boxes ``[N, 5]``)."""
    a0, b0 = _as_boxes(boxes1), _as_boxes(boxes2)
    if a0.shape != b0.shape:
        raise ValueError(f"rbox_iou_aligned needs equal shapes, got {tuple(a0.shape)} and {tuple(b0.shape)}")
    a, b = a0.detach().to(torch.float64), b0.detach().to(device=a0.device, dtype=torch.float64)
    out = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    if a.shape[0]:
        k = _sat_overlap(a, b).nonzero(as_tuple=True)[0]
        if k.numel():
            out[k] = _pair_iou(a[k], b[k])
    return out.to(a0.dtype)
