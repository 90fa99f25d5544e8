"""RoIAlign over rotated RoIs, pure torch (no compiled extension), differentiable w.r.t. the input.

``rroi_align(input[B,C,H,W], rois[K,6], output_size, spatial_scale=1.0, sampling_ratio=2)``
-> ``[K, C, oh, ow]``. A row of ``rois`` is ``(batch_index, cx, cy, w, h, angle_deg)`` in
input-image pixels (continuous coordinates: pixel (i, j) covers x in [j, j+1), y in [i, i+1)); the
feature map is ``spatial_scale`` times the image size. Output column c runs along the box's w side
``(cos a, -sin a)``, output row r along ``(sin a, cos a)``: bin (r, c) covers
``u in [-w/2 + c w/ow, -w/2 + (c+1) w/ow)``, ``v in [-h/2 + r h/oh, ...)`` in the box frame.

Each bin averages ``gh x gw`` bilinear samples at the sub-bin centres, exactly like
``torchvision.ops.roi_align(..., aligned=True)`` (which this equals at angle 0): feature value j
sits at continuous position j + 0.5; samples with y < -1, y > H, x < -1 or x > W (feature-map
index coordinates) contribute 0, coordinates are clamped at 0 and at the last row/column.
``sampling_ratio > 0``: gh = gw = sampling_ratio. ``sampling_ratio <= 0``: adaptive like torchvision,
per RoI ``gh = ceil(h * spatial_scale / oh)``, ``gw = ceil(w * spatial_scale / ow)`` (RoIs with the same
(gh, gw) are processed together).

Implementation: the sampling is a sparse linear map. For a chunk of RoIs a CSR matrix S
``[K*oh*ow, B*H*W]`` (4 * gh * gw entries per row) is built and multiplied with the channels-last
view of the map ``[B*H*W, C]`` (one copy of the map per call, never one per RoI); the backward
pass is S^T times the output gradient (autograd of the sparse-dense product ``S @ F``). Memory: the
matrix holds 4 * gh * gw (index, weight) pairs per output bin, in chunks of at most ``_MAX_NNZ``.
No gradient flows to ``rois`` (as in torchvision).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor

from ._threads import serial_cpu

__all__ = ["rroi_align"]

_MAX_NNZ = 1 << 22  # sparse entries per chunk of RoIs (bounds the build temporaries to ~150 MB)


def _pair(s) -> tuple[int, int]:
    if isinstance(s, int):
        return s, s
    s = tuple(int(v) for v in s)
    if len(s) != 2:
        raise ValueError(f"output_size must be an int or (oh, ow), got {s}")
    return s


def _sampling_weights(rois: Tensor, shape: tuple[int, int, int], oh: int, ow: int, gh: int, gw: int,
                      scale: float, dtype: torch.dtype, bounds: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Flat indices into ``[B*H*W]`` and weights, both ``[K*oh*ow, 4*gh*gw]``: output bin r equals
    ``sum(weights[r] * map_flat[indices[r]])`` (bilinear samples averaged, torchvision's rules).
    ``bounds`` ``[K, 2]`` (int): each RoI's map is only its image's top-left ``h x w`` (see ``rroi_align``)."""
    B, H, W = shape
    Hb, Wb = H, W  # the bounds the sampling rules see (the flat indices keep the map's row stride W)
    dev = rois.device
    k = rois.shape[0]
    f = dtype  # geometry in the feature dtype (float32 or float64), like torchvision
    r = rois.to(f)
    bi = r[:, 0].round().long()
    cx, cy = r[:, 1] * scale, r[:, 2] * scale
    w, h = r[:, 3] * scale, r[:, 4] * scale
    ang = torch.deg2rad(r[:, 5])
    c, s = torch.cos(ang), torch.sin(ang)
    fu = ((torch.arange(ow, device=dev, dtype=f)[:, None]
           + (torch.arange(gw, device=dev, dtype=f)[None, :] + 0.5) / gw) / ow)  # [ow, gw]
    fv = ((torch.arange(oh, device=dev, dtype=f)[:, None]
           + (torch.arange(gh, device=dev, dtype=f)[None, :] + 0.5) / gh) / oh)  # [oh, gh]
    su = (fu[None] - 0.5) * w[:, None, None]  # [K, ow, gw], along (cos a, -sin a)
    sv = (fv[None] - 0.5) * h[:, None, None]  # [K, oh, gh], along (sin a, cos a)
    su = su[:, None, :, None, :]  # [K, 1, ow, 1, gw]
    sv = sv[:, :, None, :, None]  # [K, oh, 1, gh, 1]
    e = (slice(None),) + (None,) * 4
    if bounds is not None:
        Hb, Wb = bounds[:, 0].to(dev)[e], bounds[:, 1].to(dev)[e]
    # feature-map index coordinates: continuous position p sits at index p - 0.5
    x = cx[e] + su * c[e] + sv * s[e] - 0.5  # [K, oh, ow, gh, gw]
    y = cy[e] - su * s[e] + sv * c[e] - 0.5
    valid = (y >= -1.0) & (y <= Hb) & (x >= -1.0) & (x <= Wb)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y0 = y.floor().long()
    x0 = x.floor().long()
    ytop = y0 >= Hb - 1
    xtop = x0 >= Wb - 1
    y0 = torch.where(ytop, Hb - 1, y0)
    x0 = torch.where(xtop, Wb - 1, x0)
    y1 = torch.where(ytop, y0, y0 + 1)
    x1 = torch.where(xtop, x0, x0 + 1)
    ly = torch.where(ytop, torch.zeros_like(y), y - y0)
    lx = torch.where(xtop, torch.zeros_like(x), x - x0)
    hy, hx = 1.0 - ly, 1.0 - lx
    norm = valid.to(f) / max(gh * gw, 1)
    base = (bi * (H * W))[e]
    cols = torch.stack((base + y0 * W + x0, base + y0 * W + x1,
                        base + y1 * W + x0, base + y1 * W + x1), dim=-1)  # [K,oh,ow,gh,gw,4]
    vals = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1) * norm[..., None]
    per_row = gh * gw * 4
    return cols.reshape(k * oh * ow, per_row), vals.reshape(k * oh * ow, per_row)


def _sampling_matrix(rois: Tensor, shape: tuple[int, int, int], oh: int, ow: int, gh: int, gw: int,
                     scale: float, dtype: torch.dtype, bounds: Tensor | None = None) -> Tensor:
    """CSR matrix ``[K*oh*ow, B*H*W]`` with the bilinear sampling weights for ``rois[K, 6]``."""
    cols, vals = _sampling_weights(rois, shape, oh, ow, gh, gw, scale, dtype, bounds)
    nrows, per_row = cols.shape
    B, H, W = shape
    dev = rois.device
    crow = torch.arange(0, nrows * per_row + 1, per_row, device=dev, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR is beta" / invariant-check notices
        return torch.sparse_csr_tensor(crow, cols.reshape(-1), vals.reshape(-1),
                                       size=(nrows, B * H * W), check_invariants=False)


def rroi_align(input: Tensor, rois: Tensor, output_size: int | Sequence[int],
               spatial_scale: float = 1.0, sampling_ratio: int = 2, bounds: Tensor | None = None) -> Tensor:
    """Rotated RoIAlign: ``input[B, C, H, W]``, ``rois[K, 6]`` -> ``[K, C, oh, ow]`` (see module doc).

    ``bounds`` (optional, ``[K, 2]`` int ``(h, w)``, at most ``(H, W)``): RoI k sees only the top-left
    ``h x w`` of its batch image as the map (the rules above with H = h, W = w), so images of different
    sizes zero-padded into one batch are sampled exactly as each on its own."""
    if input.dim() != 4:
        raise ValueError(f"rroi_align expects input [B, C, H, W], got shape {tuple(input.shape)}")
    rois = torch.as_tensor(rois, device=input.device)
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(f"rroi_align expects rois [K, 6] (batch_idx, cx, cy, w, h, angle), got {tuple(rois.shape)}")
    oh, ow = _pair(output_size)
    B, C, H, W = input.shape
    K = rois.shape[0]
    if K == 0 or B * H * W == 0 or C == 0:
        return input.new_zeros((K, C, oh, ow))
    cdtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    feat = input.to(cdtype).permute(0, 2, 3, 1).reshape(B * H * W, C)  # one channels-last copy
    rois = rois.detach()
    bidx = rois[:, 0].round()
    if bool(((bidx < 0) | (bidx > B - 1)).any()):
        raise ValueError(f"rroi_align: roi batch indices must be in [0, {B - 1}], got "
                         f"{sorted(set(bidx.long().tolist()))[:10]}")
    if bounds is not None:
        bounds = torch.as_tensor(bounds, device=input.device).long()
        if bounds.shape != (K, 2) or bool((bounds < 1).any() | (bounds[:, 0] > H).any() | (bounds[:, 1] > W).any()):
            raise ValueError(f"rroi_align: bounds must be [K, 2] with 1 <= h <= {H}, 1 <= w <= {W}, "
                             f"got shape {tuple(bounds.shape)}")
    scale = float(spatial_scale)
    if sampling_ratio > 0:
        groups = [((int(sampling_ratio), int(sampling_ratio)), None)]
    else:
        gh_all = torch.ceil(rois[:, 4].to(cdtype) * scale / oh).clamp(min=1).long()
        gw_all = torch.ceil(rois[:, 3].to(cdtype) * scale / ow).clamp(min=1).long()
        key = gh_all * (int(gw_all.max()) + 1) + gw_all
        groups = []
        for kv in torch.unique(key).tolist():
            sel = (key == kv).nonzero(as_tuple=True)[0]
            groups.append(((int(gh_all[sel[0]]), int(gw_all[sel[0]])), sel))
    out = None
    for (gh, gw), sel in groups:
        rs = rois if sel is None else rois[sel]
        bs = bounds if bounds is None or sel is None else bounds[sel]
        per_roi = oh * ow * gh * gw * 4
        step = max(1, _MAX_NNZ // per_roi)
        parts = []
        for s0 in range(0, rs.shape[0], step):
            with serial_cpu(feat.device):  # many small element-wise steps
                S = _sampling_matrix(rs[s0:s0 + step], (B, H, W), oh, ow, gh, gw, scale, cdtype,
                                     None if bs is None else bs[s0:s0 + step])
            with torch.autocast(feat.device.type, enabled=False):  # sparse product in fp32/fp64
                parts.append(S @ feat)  # [k*oh*ow, C], all threads
        res = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        res = res.reshape(-1, oh, ow, C).permute(0, 3, 1, 2)
        if sel is None:
            out = res
        else:
            if out is None:
                out = feat.new_zeros((K, C, oh, ow))
            out = out.index_copy(0, sel, res)
    return out.contiguous().to(input.dtype)
