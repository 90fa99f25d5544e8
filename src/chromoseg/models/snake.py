"""Deep Snake (Peng et al., "Deep Snake for Real-Time Instance Segmentation", CVPR 2020): variant ``snake``.

Written from the paper's description (no code of the original implementation is used). Pipeline:

1. **Detector** (CenterNet, Zhou et al. 2019) on a stride-4 map: a per-class centre heatmap trained
   with CenterNet's focal loss against Gaussian targets (CenterNet's radius rule), box size ``(w, h)``
   and sub-cell centre offset regressed with an L1 loss at the centres; inference picks heatmap peaks
   (3x3 max-pool), keeps the top K above a score threshold.
2. **Extreme points** (paper Sec. 4.1): the box's diamond (its four edge midpoints, upsampled to 40
   vertices) is deformed by a snake; the offsets of its four corners give the four extreme points
   (top, right, bottom, left), trained against the mask's extreme points (``loss_extreme``).
3. **Octagon**: each extreme point is extended along its box edge by 1/4 of that edge's length both
   ways (truncated at the box corners) and the segment ends are connected; the octagon is resampled
   uniformly by arc length to N = 128 vertices, vertex 0 at the top extreme point.
4. **Contour deformation**: three snakes (separate weights) deform the contour in turn; each
   iteration's output is compared with the ground-truth contour (``loss_contour_1`` .. ``_3``).
5. **Output**: the mask is the filled final polygon, the class the centre's heatmap class, the score
   the heatmap peak.

Snake (paper Sec. 3.2, Fig. 3): per vertex, the feature map bilinearly sampled at the vertex
(``grid_sample``) concatenated with the vertex coordinates relative to the contour's minimum x and y
(translation invariance); 8 circular-convolution layers (``Conv1d``, kernel 9, ``padding_mode=
"circular"``, Conv-BN-ReLU, the last 7 residual with dilations 1,1,1,2,2,4,4); fusion: a 1x1
convolution of all 8 layers' features, max-pooled over the vertices into a global feature that is
concatenated to every vertex's features; prediction head: three 1x1 convolutions giving per-vertex
offsets ``(dx, dy)``.

Conventions
-----------
* Image coordinates: continuous pixels of the (transformed) image, pixel ``(i, j)`` covers
  ``x in [j, j+1)``, ``y in [i, i+1)`` (the project's convention, see ``chromoseg.ops``).
* Feature coordinates (all contours, offsets and contour losses): pixels of the stride-4 map with
  integer values at cell centres, ``u = x / 4 - 0.5`` (:func:`image_to_feature`); features at a
  vertex are sampled with ``align_corners=True`` so that an integer vertex reads its cell's value.
* Contours are ``[K, N, 2]`` ``(x, y)``, closed (vertex N-1 connects to vertex 0), clockwise as seen
  on screen (positive shoelace area with y downwards), vertex 0 at (or nearest to) the top extreme
  point; extreme points are ordered top, right, bottom, left.

Choices and deviations from the paper (written down here, see also the builder's docstring)
------------------------------------------------------------------------------------------
* Backbone: the project's ResNet-FPN (``backbone.resnet_fpn``) instead of DLA-34; the FPN maps
  ``"0" .. "3"`` are upsampled to stride 4 and summed (in place of DLA's deep aggregation), so every
  FPN parameter is used (DDP runs with ``find_unused_parameters=False``). Input normalisation and
  resizing are ``ChromoTransform``'s, as for the R-CNN variants.
* Vertex features: a 3x3 convolution (64 channels, ReLU) of that map, shared by all snakes.
* Training uses the ground-truth boxes (each side jittered by up to ``box_jitter`` x the box size,
  5 %) for the extreme-point stage; the octagon is built from the *predicted* extreme points
  (detached), so the contour snakes see the same kind of input as at inference. Each snake's input
  contour is detached (every iteration learns its own correction).
* Losses: smooth-L1 (beta = 1 feature pixel) averaged over instances, vertices and coordinates; the
  three contour iterations are weighted 1/3 each; CenterNet's weights for the detector (heatmap 1,
  size 0.1, offset 1). The ground-truth contour is the mask's largest external ``cv2.findContours``
  contour through the boundary pixels' centres, started at its point nearest to the initial
  contour's vertex 0 and resampled uniformly by arc length.
* Instances of unknown class (``class_known`` False): their Gaussian is ignored in every class
  channel (where it exceeds that channel's own target) and instead supervises the class-agnostic
  "any chromosome" heatmap, the maximum over the class channels, by the same focal loss; their boxes
  and contours are trained as usual. With ``num_classes == 1`` every instance is of class 1.
* Images without masks (``has_masks`` False) train the detector only.
* Output ``boxes`` are the filled mask's pixel bounding box (the detector's box when the mask is
  empty); ``rboxes`` the mask's minimum-area rectangle (``chromoseg.ops.mask_to_rbox``); ``endpoints``
  the contour's two ends along the rbox's long axis (mean of the contour vertices within a quarter of
  the short side of each extreme); ``class_scores`` the heatmap of every class at the centre (sigmoid
  values, independent per class: they do not sum to 1 as the R-CNN's softmax does); ``contours``
  ``[N, 128, 2]`` the final polygons in original-image pixels.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .losses import smooth_l1

STRIDE = 4
#: vertices of the diamond contour of the extreme-point stage (the paper's 40)
EXTREME_VERTICES = 40
#: CenterNet's weights of the size and offset terms
WH_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0


# ---- coordinates ------------------------------------------------------------------------------------

def image_to_feature(p: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Image pixels (continuous, pixel centres at ``j + 0.5``) -> stride-``stride`` feature pixels
    (cell centres at integers)."""
    return p / stride - 0.5


def feature_to_image(u: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Inverse of :func:`image_to_feature`."""
    return (u + 0.5) * stride


# ---- CenterNet detector -----------------------------------------------------------------------------

def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius rule (from CornerNet): the smallest of the three quadratic roots for a box
    of ``height x width`` (feature pixels) such that a corner shift by the radius keeps IoU >=
    ``min_overlap`` (computed as CenterNet does)."""
    h, w, o = float(height), float(width), float(min_overlap)
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4 * c1, 0.0))) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + math.sqrt(max(b2 * b2 - 16 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + math.sqrt(max(b3 * b3 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def draw_gaussian(heat: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """In place: ``heat[H, W] = max(heat, exp(-d^2 / (2 sigma^2)))`` in the ``(2r+1)^2`` window around
    cell ``(cx, cy)``, ``sigma = (2r + 1) / 6`` (CenterNet); the centre cell gets exactly 1."""
    h, w = heat.shape
    r = max(int(radius), 0)
    sigma = (2 * r + 1) / 6.0
    x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
    y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    ys = torch.arange(y0, y1, device=heat.device, dtype=heat.dtype) - cy
    xs = torch.arange(x0, x1, device=heat.device, dtype=heat.dtype) - cx
    g = torch.exp(-(ys[:, None] ** 2 + xs[None] ** 2) / (2 * sigma * sigma))
    heat[y0:y1, x0:x1] = torch.maximum(heat[y0:y1, x0:x1], g)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               alpha: float = 2.0, beta: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CenterNet's penalty-reduced focal loss, **summed** (not normalised): at ``target == 1``
    ``-(1-p)^alpha log p``, elsewhere ``-(1-target)^beta p^alpha log(1-p)``, ``p = sigmoid(logits)``;
    ``weight`` (broadcastable, 0 = ignore) multiplies each pixel. Returns ``(sum, number of
    positives)``; the caller divides by the positives (CenterNet: by max(positives, 1))."""
    logits, target = logits.float(), target.float()
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logp.exp()
    pos = target >= 1.0
    loss = torch.where(pos, -((1 - p) ** alpha) * logp, -((1 - target) ** beta) * p ** alpha * log1mp)
    if weight is not None:
        loss = loss * weight
        pos = pos & (weight > 0)
    return loss.sum(), pos.sum()


class CenterHead(nn.Module):
    """CenterNet's three heads (3x3 conv, ReLU, 1x1 conv): per-class centre heatmap logits
    ``[B, C, H, W]`` (last layer: small weights, bias -2.19 = prior 0.1), box size ``(w, h)`` and centre offset ``(dx, dy)``,
    both ``[B, 2, H, W]`` in feature pixels."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64):
        super().__init__()

        def head(out):
            return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, out, 1))

        self.heatmap, self.wh, self.offset = head(num_classes), head(2), head(2)
        for h in (self.heatmap, self.wh, self.offset):
            nn.init.normal_(h[-1].weight, std=0.001)
            nn.init.zeros_(h[-1].bias)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, x):
        return self.heatmap(x), self.wh(x), self.offset(x)


def center_targets(targets: list[dict], num_classes: int, feat_hw, device) -> dict:
    """CenterNet targets on the stride-4 map from ``boxes`` (xyxy, transformed-image pixels),
    ``labels`` (1..C) and optional ``class_known``: ``heat [B, C, H, W]`` (known classes),
    ``any_heat [B, 1, H, W]`` (instances of unknown class), and per instance ``batch``, ``cell``
    (x, y integer centre cell), ``wh`` and ``offset`` (feature pixels; centre = cell + offset, offset
    in [-0.5, 0.5))."""
    fh, fw = feat_hw
    b = len(targets)
    heat = torch.zeros((b, num_classes, fh, fw), device=device)
    any_heat = torch.zeros((b, 1, fh, fw), device=device)
    bidx, cells, whs, offs = [], [], [], []
    for i, t in enumerate(targets):
        boxes = t["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        labels = t["labels"].cpu()
        known = t.get("class_known")
        known = known.cpu().bool() if known is not None else torch.ones(len(labels), dtype=torch.bool)
        if num_classes == 1:
            labels, known = torch.ones_like(labels), torch.ones_like(known)
        known = known & (labels >= 1) & (labels <= num_classes)
        c = image_to_feature((boxes[:, :2] + boxes[:, 2:]) / 2)
        wh = (boxes[:, 2:] - boxes[:, :2]) / STRIDE
        for k in range(boxes.shape[0]):
            if wh[k, 0] <= 0 or wh[k, 1] <= 0:
                continue
            cell = torch.floor(c[k] + 0.5)
            cell[0].clamp_(0, fw - 1)
            cell[1].clamp_(0, fh - 1)
            r = max(0, int(gaussian_radius(math.ceil(wh[k, 1]), math.ceil(wh[k, 0]))))
            cx, cy = int(cell[0]), int(cell[1])
            if bool(known[k]):
                draw_gaussian(heat[i, int(labels[k]) - 1], cx, cy, r)
            else:
                draw_gaussian(any_heat[i, 0], cx, cy, r)
            bidx.append(i), cells.append(cell), whs.append(wh[k]), offs.append(c[k] - cell)
    n = len(bidx)
    return dict(heat=heat, any_heat=any_heat, batch=torch.tensor(bidx, dtype=torch.long, device=device),
                cell=(torch.stack(cells) if n else torch.zeros((0, 2))).long().to(device),
                wh=(torch.stack(whs) if n else torch.zeros((0, 2))).to(device),
                offset=(torch.stack(offs) if n else torch.zeros((0, 2))).to(device))


def detection_losses(hm: torch.Tensor, wh: torch.Tensor, off: torch.Tensor, tg: dict) -> dict:
    """``loss_heatmap`` (focal loss over the known-class channels plus the "any class" term on the
    channel maximum for instances of unknown class, divided by the number of centres),
    ``loss_wh`` (0.1 x L1) and ``loss_offset`` (L1), both averaged over centres and the 2 values."""
    heat, any_heat = tg["heat"], tg["any_heat"]
    ignore = any_heat > heat  # an unknown-class instance's footprint: no class is told "not here"
    s1, n1 = focal_loss(hm, heat, (~ignore).float())
    region = (any_heat > 0).float()
    s2, n2 = focal_loss(hm.float().amax(1, keepdim=True), any_heat, region)
    npos = max(int(n1) + int(n2), 1)
    out = {"loss_heatmap": (s1 + s2) / npos}
    b, cell = tg["batch"], tg["cell"]
    if b.numel():
        p_wh = wh.float()[b, :, cell[:, 1], cell[:, 0]]
        p_off = off.float()[b, :, cell[:, 1], cell[:, 0]]
        out["loss_wh"] = WH_WEIGHT * (p_wh - tg["wh"]).abs().mean()
        out["loss_offset"] = OFFSET_WEIGHT * (p_off - tg["offset"]).abs().mean()
    else:
        out["loss_wh"] = wh.sum() * 0.0
        out["loss_offset"] = off.sum() * 0.0
    return out


def decode_centers(hm: torch.Tensor, wh: torch.Tensor, off: torch.Tensor, valid_hw, k: int = 100,
                   score_thresh: float = 0.05) -> list[dict]:
    """Detections per image from the heads: peaks of ``sigmoid(hm)`` (equal to their 3x3 max-pool),
    the top ``k`` over classes and cells, those above ``score_thresh``. ``valid_hw``: per image the
    unpadded map size (cells outside are ignored). Returns ``boxes`` (xyxy, feature pixels),
    ``scores``, ``labels`` (1..C), ``class_scores [K, C]`` (every class's heatmap at the centre)."""
    heat = hm.float().sigmoid()
    b, c, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    out = []
    for i in range(b):
        vh, vw = valid_hw[i]
        p = peaks[i].clone()
        p[:, vh:, :] = 0
        p[:, :, vw:] = 0
        scores, idx = p.flatten().topk(min(int(k), p.numel()))
        keep = scores > score_thresh
        scores, idx = scores[keep], idx[keep]
        cls = idx // (h * w)
        ys, xs = (idx % (h * w)) // w, idx % w
        cx = xs.float() + off[i, 0, ys, xs].float()
        cy = ys.float() + off[i, 1, ys, xs].float()
        bw = wh[i, 0, ys, xs].float().clamp(min=0.5)
        bh = wh[i, 1, ys, xs].float().clamp(min=0.5)
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        out.append(dict(boxes=boxes, scores=scores, labels=cls + 1, class_scores=heat[i, :, ys, xs].t()))
    return out


# ---- contours ---------------------------------------------------------------------------------------

def resample_closed(poly: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` points uniformly spaced by arc length along each closed polygon ``poly [K, M, 2]``
    (or ``[M, 2]``), the first at ``poly[:, 0]``, in the polygon's direction. Zero-length polygons
    give ``n`` copies of their point."""
    single = poly.dim() == 2
    if single:
        poly = poly[None]
    k, m, _ = poly.shape
    nxt = torch.roll(poly, -1, dims=1)
    seg = (nxt - poly).norm(dim=-1)  # [K, M], segment i from vertex i to i+1
    cum = torch.cat([seg.new_zeros(k, 1), seg.cumsum(1)], 1)  # [K, M+1]
    t = torch.arange(n, device=poly.device, dtype=poly.dtype)[None] / n * cum[:, -1:]
    idx = torch.searchsorted(cum[:, 1:].contiguous(), t.contiguous(), right=True).clamp(max=m - 1)
    start = cum.gather(1, idx)
    frac = ((t - start) / seg.gather(1, idx).clamp(min=1e-12)).clamp(0, 1)[..., None]
    gi = idx[..., None].expand(k, n, 2)
    out = poly.gather(1, gi) + frac * (nxt.gather(1, gi) - poly.gather(1, gi))
    return out[0] if single else out


def diamond_contour(boxes: torch.Tensor, n: int = EXTREME_VERTICES) -> torch.Tensor:
    """The diamond through the four edge midpoints of ``boxes [K, 4]`` (xyxy), clockwise on screen
    from the top midpoint, resampled to ``n`` vertices (``n`` divisible by 4: the midpoints are
    vertices 0, n/4, n/2, 3n/4, the four sides being of equal length)."""
    x0, y0, x1, y1 = boxes.unbind(1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    d = torch.stack([torch.stack([cx, y0], 1), torch.stack([x1, cy], 1), torch.stack([cx, y1], 1),
                     torch.stack([x0, cy], 1)], 1)
    return resample_closed(d, n)


def octagon_from_extreme(ex: torch.Tensor) -> torch.Tensor:
    """The paper's octagon ``[K, 12, 2]`` from extreme points ``ex [K, 4, 2]`` (top, right, bottom,
    left). The box is the extreme points' bounding box; each point (moved onto its edge) is extended
    along the edge by 1/4 of the edge's length both ways, truncated at the box corners, and the eight
    segment ends are connected. Returned clockwise on screen from the top extreme point, the four
    extreme points included as (collinear) vertices: 8 corners, passing through the 4 points."""
    x0, x1 = ex[..., 0].amin(1), ex[..., 0].amax(1)
    y0, y1 = ex[..., 1].amin(1), ex[..., 1].amax(1)
    w4, h4 = (x1 - x0) / 4, (y1 - y0) / 4
    tx, bx = ex[:, 0, 0], ex[:, 2, 0]
    ry, ly = ex[:, 1, 1], ex[:, 3, 1]

    def p(x, y):
        return torch.stack([x, y], 1)

    pts = [p(tx, y0), p(torch.minimum(tx + w4, x1), y0),
           p(x1, torch.maximum(ry - h4, y0)), p(x1, ry), p(x1, torch.minimum(ry + h4, y1)),
           p(torch.minimum(bx + w4, x1), y1), p(bx, y1), p(torch.maximum(bx - w4, x0), y1),
           p(x0, torch.minimum(ly + h4, y1)), p(x0, ly), p(x0, torch.maximum(ly - h4, y0)),
           p(torch.maximum(tx - w4, x0), y0)]
    return torch.stack(pts, 1)


def initial_contour(ex: torch.Tensor, n: int = 128) -> torch.Tensor:
    """The octagon of ``ex [K, 4, 2]`` resampled to ``n`` vertices, vertex 0 at the top extreme point."""
    return resample_closed(octagon_from_extreme(ex), n)


def signed_area(poly: np.ndarray) -> float:
    """Shoelace area of a closed polygon ``[M, 2]``; positive when clockwise on screen (y down)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def mask_geometry(mask: np.ndarray):
    """Ground truth of one instance mask ``[H, W]``: ``(extreme [4, 2], contour [M, 2], box [4])`` in
    image pixels, or None for an empty mask. Extreme points (top, right, bottom, left) are the
    centres of the middle pixel of the mask's extreme pixels on each side; the contour is the largest
    external ``cv2.findContours`` contour (boundary pixel centres, every boundary pixel), clockwise
    on screen; the box the pixel bounding box (xyxy, edges)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1] != 0).astype(np.uint8)
    ys, xs = np.nonzero(crop)

    def mid(v):
        v = np.sort(v)
        return float(v[len(v) // 2])

    top = (mid(xs[ys == ys.min()]), float(ys.min()))
    right = (float(xs.max()), mid(ys[xs == xs.max()]))
    bottom = (mid(xs[ys == ys.max()]), float(ys.max()))
    left = (float(xs.min()), mid(ys[xs == xs.min()]))
    ex = np.array([top, right, bottom, left], np.float64) + [x0 + 0.5, y0 + 0.5]
    cs, _ = cv2.findContours(np.pad(crop, 1), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    c = max(cs, key=lambda q: (cv2.contourArea(q), len(q)))[:, 0, :].astype(np.float64)
    c += [x0 - 1 + 0.5, y0 - 1 + 0.5]
    if signed_area(c) < 0:
        c = c[::-1].copy()
    return ex, c, np.array([x0, y0, x1, y1], np.float64)


def aligned_contour(dense: np.ndarray, start, n: int = 128) -> torch.Tensor:
    """Ground-truth contour ``[n, 2]``: ``dense [M, 2]`` (clockwise) rolled to start at its point
    nearest ``start`` (the initial contour's vertex 0), resampled uniformly by arc length."""
    s = np.asarray(start, np.float64).reshape(1, 2)
    i = int(np.argmin(((dense - s) ** 2).sum(1)))
    return resample_closed(torch.from_numpy(np.roll(dense, -i, axis=0)).float(), n)


def sample_vertex_features(feat: torch.Tensor, contours: torch.Tensor, batch_idx: torch.Tensor) -> torch.Tensor:
    """Features ``[K, C, N]`` of ``feat [B, C, H, W]`` at the vertices ``contours [K, N, 2]`` (feature
    pixels, integer = cell centre; bilinear ``grid_sample`` with ``align_corners=True``, zeros
    outside the map) of image ``batch_idx [K]``."""
    b, c, h, w = feat.shape
    k, n, _ = contours.shape
    g = torch.stack([contours[..., 0] / max(w - 1, 1) * 2 - 1, contours[..., 1] / max(h - 1, 1) * 2 - 1], -1)
    parts, order = [], []
    for i in torch.unique(batch_idx).tolist():
        sel = torch.where(batch_idx == i)[0]
        s = F.grid_sample(feat[i:i + 1], g[sel][None].to(feat.dtype), mode="bilinear", padding_mode="zeros",
                          align_corners=True)  # [1, C, k_i, N]
        parts.append(s[0].permute(1, 0, 2))
        order.append(sel)
    if not parts:
        return feat.new_zeros((0, c, n))
    out = torch.cat(parts)
    inv = torch.empty_like(torch.cat(order))
    inv[torch.cat(order)] = torch.arange(k, device=inv.device)
    return out[inv]


class CircConv(nn.Conv1d):
    """Circular convolution over the vertices of closed contours (``[K, C, N]``): a ``Conv1d`` with
    ``padding_mode="circular"`` and ``padding = dilation * (kernel_size // 2)``, so vertex 0 sees
    vertices N-1, N-2, ... and the output has N vertices."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, dilation: int = 1):
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        super().__init__(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                         dilation=dilation, padding_mode="circular")


class SnakeBlock(nn.Module):
    """CircConv -> BatchNorm1d -> ReLU (paper: "CirConv-Bn-ReLU")."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 9, dilation: int = 1):
        super().__init__()
        self.conv = CircConv(in_channels, out_channels, kernel_size, dilation)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Snake(nn.Module):
    """Deep snake: ``x [K, C_in, N]`` (vertex features + relative coordinates) -> per-vertex offsets
    ``[K, N, 2]`` (feature pixels). 1 + ``len(dilations)`` CirConv blocks (the latter residual), a
    fusion 1x1 conv + max-pool over vertices (global feature) and a 3-layer 1x1 prediction head."""

    def __init__(self, in_channels: int, channels: int = 128, kernel_size: int = 9,
                 dilations=(1, 1, 1, 2, 2, 4, 4), fusion_channels: int = 256):
        super().__init__()
        self.head = SnakeBlock(in_channels, channels, kernel_size, 1)
        self.res = nn.ModuleList(SnakeBlock(channels, channels, kernel_size, d) for d in dilations)
        cat = channels * (1 + len(dilations))
        self.fusion = nn.Conv1d(cat, fusion_channels, 1)
        self.predictor = nn.Sequential(nn.Conv1d(cat + fusion_channels, 256, 1), nn.ReLU(inplace=True),
                                       nn.Conv1d(256, 64, 1), nn.ReLU(inplace=True), nn.Conv1d(64, 2, 1))
        nn.init.normal_(self.predictor[-1].weight, std=0.001)
        nn.init.zeros_(self.predictor[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [self.head(x)]
        for blk in self.res:
            states.append(blk(states[-1]) + states[-1])
        s = torch.cat(states, 1)
        g = self.fusion(s).amax(dim=2, keepdim=True).expand(-1, -1, s.shape[2])
        return self.predictor(torch.cat([s, g], 1)).permute(0, 2, 1)


def deform(snake: Snake, feat: torch.Tensor, contours: torch.Tensor, batch_idx: torch.Tensor) -> torch.Tensor:
    """One snake step's offsets ``[K, N, 2]``: the snake's input is the vertex features of ``feat``
    and the vertex coordinates minus the contour's minimum x and y (feature pixels)."""
    f = sample_vertex_features(feat, contours, batch_idx)
    rel = (contours - contours.amin(dim=1, keepdim=True)).permute(0, 2, 1)
    return snake(torch.cat([f, rel.to(f.dtype)], 1))


def contour_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1, feature pixels) between corresponding vertices, mean over instances,
    vertices and coordinates (the paper's L_ex and L_iter)."""
    if pred.numel() == 0:
        return pred.sum() * 0.0
    return smooth_l1(pred - target, 1.0).mean()


# ---- output -----------------------------------------------------------------------------------------

def fill_contour(poly: np.ndarray, size) -> np.ndarray:
    """uint8 mask ``[H, W]`` of the pixels whose centre lies inside (or on) the closed polygon
    ``poly [P, 2]`` (image pixels); ``cv2.fillPoly`` with 4 fractional bits."""
    h, w = size
    m = np.zeros((h, w), np.uint8)
    if len(poly) == 0 or not np.isfinite(poly).all():
        return m
    pts = np.round((poly - 0.5) * 16).astype(np.int32)[None]
    cv2.fillPoly(m, pts, 1, lineType=cv2.LINE_8, shift=4)
    return m


def contour_endpoints(contour: torch.Tensor, rbox: torch.Tensor) -> torch.Tensor:
    """Ends ``[2, 2]`` of a contour ``[P, 2]`` along its rotated box's long axis: the mean of the
    vertices within a quarter of the short side of each extreme projection; the first is the one
    nearer the top of the image (ties by x), as in the dataset contract."""
    a = math.radians(float(rbox[4]))
    u = contour.new_tensor([math.cos(a), -math.sin(a)])
    proj = (contour - rbox[:2]) @ u
    band = max(0.25 * float(rbox[3]), 0.5)
    hi = contour[proj >= proj.max() - band].mean(0)
    lo = contour[proj <= proj.min() + band].mean(0)
    e = torch.stack([lo, hi])
    if (e[1, 1], e[1, 0]) < (e[0, 1], e[0, 0]):
        e = e.flip(0)
    return e


# ---- the model --------------------------------------------------------------------------------------

class DeepSnake(nn.Module):
    """transform -> ResNet-FPN (stride-4 aggregate) -> CenterNet heads -> extreme-point snake ->
    octagon -> ``iters`` contour snakes -> filled polygons (see the module docstring).

    ``forward(images, targets)``: in training mode the loss dict (``loss_heatmap``, ``loss_wh``,
    ``loss_offset``, ``loss_extreme``, ``loss_contour_1`` .. ``loss_contour_<iters>``); in eval mode
    per image ``boxes [N,4]`` (xyxy), ``labels`` (1..C), ``scores``, ``masks [N,1,H,W]`` (0/1 float)
    at the original image size, ``rboxes [N,5]`` (canonical), ``endpoints [N,2,2]``,
    ``class_scores [N,C]`` and ``contours [N,P,2]`` (original-image pixels).
    """

    def __init__(self, backbone, transform, num_classes: int = 24, points: int = 128, iters: int = 3,
                 snake_channels: int = 128, feature_channels: int = 64, head_channels: int = 64,
                 detections_per_img: int = 100, score_thresh: float = 0.05, box_jitter: float = 0.05,
                 variant: str = "snake", config: dict | None = None):
        super().__init__()
        self.backbone, self.transform = backbone, transform
        self.num_classes, self.points, self.iters = int(num_classes), int(points), int(iters)
        self.detections_per_img, self.score_thresh = int(detections_per_img), float(score_thresh)
        self.box_jitter = float(box_jitter)
        self.variant = variant
        self.config = dict(config or {})
        c = backbone.out_channels
        self.center_head = CenterHead(c, num_classes, head_channels)
        self.snake_features = nn.Sequential(nn.Conv2d(c, feature_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.extreme_snake = Snake(feature_channels + 2, snake_channels)
        self.contour_snakes = nn.ModuleList(Snake(feature_channels + 2, snake_channels) for _ in range(iters))
        self.crop_classifier = None  # optional second stage (chromoseg.models.crop_classifier)

    @property
    def has_endpoints(self) -> bool:  # ChromoRCNN's flag: True with an endpoint heatmap (ED); none here
        return False

    # -- pieces
    def stride4_features(self, x: torch.Tensor) -> torch.Tensor:
        """The FPN maps "0" .. "3" upsampled to stride 4 (bilinear) and summed."""
        feats, _ = self.backbone(x)
        out = feats["0"]
        for name in ("1", "2", "3"):
            if name in feats:
                out = out + F.interpolate(feats[name], size=out.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def extreme_points(self, feat, boxes, batch_idx) -> torch.Tensor:
        """Extreme points ``[K, 4, 2]`` (top, right, bottom, left) from boxes ``[K, 4]`` (feature px)."""
        dia = diamond_contour(boxes, EXTREME_VERTICES)
        out = dia + deform(self.extreme_snake, feat, dia, batch_idx)
        return out[:, :: EXTREME_VERTICES // 4]

    def evolve(self, feat, init, batch_idx) -> list[torch.Tensor]:
        """The contours after each snake iteration (each snake's input detached)."""
        outs, py = [], init
        for snake in self.contour_snakes:
            py = py.detach() + deform(snake, feat, py.detach(), batch_idx)
            outs.append(py)
        return outs

    @staticmethod
    def _clip(points, batch_idx, valid_hw):
        lim = points.new_tensor([[w - 0.5, h - 0.5] for h, w in valid_hw])[batch_idx]  # [K, 2]
        return torch.maximum(torch.minimum(points, lim[:, None]), points.new_tensor(-0.5))

    def _zero_snake_loss(self):
        return sum(p.sum() for p in list(self.extreme_snake.parameters()) + list(self.contour_snakes.parameters())
                   + list(self.snake_features.parameters())) * 0.0

    # -- training
    def _contour_losses(self, feat, targets, valid_hw) -> dict:
        boxes, ex_gt, dense, bidx = [], [], [], []
        for i, t in enumerate(targets):
            if ("has_masks" in t and not bool(t["has_masks"])) or "masks" not in t or t["masks"].numel() == 0:
                continue
            masks = t["masks"].detach().to("cpu").numpy()
            for m in masks:
                g = mask_geometry(m)
                if g is None:
                    continue
                ex_gt.append(g[0]), dense.append(g[1]), boxes.append(g[2]), bidx.append(i)
        names = ["loss_extreme"] + [f"loss_contour_{k + 1}" for k in range(self.iters)]
        if not boxes:
            z = self._zero_snake_loss()
            return {k: z for k in names}
        dev = feat.device
        bidx = torch.tensor(bidx, dtype=torch.long, device=dev)
        box = torch.from_numpy(np.stack(boxes)).float().to(dev)
        if self.box_jitter > 0:  # the paper trains the contour stage on (slightly jittered) ground-truth boxes
            wh = (box[:, 2:] - box[:, :2]).repeat(1, 2)
            box = box + (torch.rand_like(box) * 2 - 1) * self.box_jitter * wh
        box_f = image_to_feature(box)
        ex = torch.from_numpy(np.stack(ex_gt)).float().to(dev)
        ex_pred = self.extreme_points(feat, box_f, bidx)
        losses = {"loss_extreme": contour_loss(ex_pred, image_to_feature(ex))}
        init = initial_contour(self._clip(ex_pred.detach(), bidx, valid_hw), self.points)
        starts = feature_to_image(init[:, 0]).cpu().numpy()
        gt = torch.stack([aligned_contour(d, s, self.points) for d, s in zip(dense, starts)]).to(dev)
        gt = image_to_feature(gt)
        for k, py in enumerate(self.evolve(feat, init, bidx)):
            losses[f"loss_contour_{k + 1}"] = contour_loss(py, gt) / self.iters
        return losses

    # -- inference
    def _postprocess(self, dets, contours, image_sizes, original_sizes):
        from chromoseg.ops import mask_to_rbox
        from .transform import canonical_rboxes

        results = []
        for d, cont, (h, w), (oh, ow) in zip(dets, contours, image_sizes, original_sizes):
            n, c = d["scores"].shape[0], self.num_classes
            dev = d["scores"].device
            scale = cont.new_tensor([ow / w, oh / h])
            poly = feature_to_image(cont) * scale  # [N, P, 2] original-image pixels
            det_box = feature_to_image(d["boxes"].reshape(-1, 2, 2)).reshape(-1, 4) * scale.repeat(2)
            masks = torch.zeros((n, 1, oh, ow), dtype=torch.float32)
            boxes = torch.zeros((n, 4))
            rboxes = torch.zeros((n, 5))
            ends = torch.zeros((n, 2, 2))
            poly_c = poly.detach().float().cpu()
            for k in range(n):
                pk = poly_c[k].numpy().astype(np.float64)
                m = fill_contour(pk, (oh, ow))
                rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                if rows.size == 0:
                    b = det_box[k].detach().float().cpu()
                    b[0::2] = b[0::2].clamp(0, ow)
                    b[1::2] = b[1::2].clamp(0, oh)
                    boxes[k] = b
                    rboxes[k] = canonical_rboxes(torch.stack([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0],
                                                              b[3] - b[1], b.new_zeros(())])[None])[0]
                else:
                    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                    masks[k, 0] = torch.from_numpy(m).float()
                    boxes[k] = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
                    rb = mask_to_rbox(m[y0:y1, x0:x1])
                    rb[0] += x0
                    rb[1] += y0
                    rboxes[k] = rb
                ends[k] = contour_endpoints(poly_c[k], rboxes[k]) if rboxes[k, 2] > 0 else poly_c[k, :2]
            results.append(dict(boxes=boxes.to(dev), labels=d["labels"].long(), scores=d["scores"].float(),
                                masks=masks.to(dev), rboxes=rboxes.to(dev), endpoints=ends.to(dev),
                                class_scores=d["class_scores"].reshape(n, c).float(),
                                contours=poly.detach().float().reshape(n, -1, 2)))
        return results

    def forward(self, images, targets=None, *, pixel_sizes=None, train_pixel_size_um=None):
        """``pixel_sizes``, ``train_pixel_size_um``: this call's scale rule (see ``ChromoTransform.forward``)."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        scale = {"pixel_sizes": pixel_sizes, "train_pixel_size_um": train_pixel_size_um} if pixel_sizes else {}
        images, targets = self.transform(images, targets, **scale)
        x = images.tensors
        fmap = self.stride4_features(x)
        hm, wh, off = self.center_head(fmap)
        sfeat = self.snake_features(fmap)
        valid_hw = [(math.ceil(h / STRIDE), math.ceil(w / STRIDE)) for h, w in images.image_sizes]
        with torch.autocast(device_type=x.device.type, enabled=False):
            hm, wh, off, sfeat = hm.float(), wh.float(), off.float(), sfeat.float()
            if self.training:
                tg = center_targets(targets, self.num_classes, hm.shape[-2:], hm.device)
                losses = detection_losses(hm, wh, off, tg)
                losses.update(self._contour_losses(sfeat, targets, valid_hw))
                return losses
            dets = decode_centers(hm, wh, off, valid_hw, self.detections_per_img, self.score_thresh)
            counts = [d["scores"].shape[0] for d in dets]
            boxes = torch.cat([d["boxes"] for d in dets])
            contours = [boxes.new_zeros((0, self.points, 2)) for _ in dets]
            if boxes.shape[0]:
                bidx = torch.cat([torch.full((n,), i, dtype=torch.long, device=boxes.device)
                                  for i, n in enumerate(counts)])
                ex = self._clip(self.extreme_points(sfeat, boxes, bidx), bidx, valid_hw)
                final = self.evolve(sfeat, initial_contour(ex, self.points), bidx)[-1]
                contours = list(final.split(counts))
            return self._postprocess(dets, contours, images.image_sizes, original_sizes)


def build_deep_snake(num_classes: int = 24, backbone: str = "resnet50", backbone_weights=None,
                     image_size=(512, 640), in_channels: int = 1, trainable_layers: int = 5, norm: str = "bn",
                     fpn_channels: int = 256, image_mean: float = 0.5, image_std: float = 0.25,
                     detections_per_img: int = 100, score_thresh: float = 0.05, points: int = 128,
                     iters: int = 3, snake_channels: int = 128, head_channels: int = 64,
                     box_jitter: float = 0.05, invert: bool = False, config: dict | None = None) -> DeepSnake:
    """A :class:`DeepSnake` over the project's ResNet-FPN and ``ChromoTransform`` (deviation from the
    paper: ResNet-FPN instead of DLA-34). Arguments as in :func:`chromoseg.models.build_model`."""
    from .backbone import BackboneWithEndpoints, resnet_fpn
    from .transform import ChromoTransform

    fpn = resnet_fpn(backbone, in_channels=in_channels, trainable_layers=trainable_layers, norm=norm,
                     backbone_weights=backbone_weights, out_channels=fpn_channels)
    body = BackboneWithEndpoints(fpn, None)  # same parameter names as the R-CNN variants' backbone
    extra = {"invert": True} if invert else {}  # brightfield: the transform inverts every image
    transform = ChromoTransform(image_size, image_mean, image_std, in_channels=in_channels, **extra)
    return DeepSnake(body, transform, num_classes, points=points, iters=iters, snake_channels=snake_channels,
                     head_channels=head_channels, detections_per_img=detections_per_img,
                     score_thresh=score_thresh, box_jitter=box_jitter, config=config)
