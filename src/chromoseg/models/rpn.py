"""Rotated anchors and the rotated region proposal network.

Anchors: at every FPN location, one rotated box per (size, long/short ratio, angle); the size is the
sqrt of the area (one size per FPN level, as torchvision's FPN default), long/short ratios fit the
slender chromosomes (default 1.5 and 3), angles default -60, -30, 0, 30, 60, 90 (90 is stored as the
canonical -90). Anchor centres are the pixel-grid centres ``((x + 0.5) * stride, (y + 0.5) * stride)``.

RPN: torchvision's structure (3x3 conv + ReLU, 1x1 objectness, 1x1 deltas -- here 5 per anchor, eq. 1
via ``chromoseg.ops.RBoxCoder``), top-k per level, rotated NMS per level (``batched_nms_rotated``),
anchors matched to the ground-truth rotated boxes by rotated IoU with torchvision's ``Matcher``
(0.7 / 0.3, low-quality matches allowed) and ``BalancedPositiveNegativeSampler``; losses
``loss_objectness`` (BCE) and ``loss_rpn_box_reg`` (smooth-L1 of eq. 3 with beta = 1/9).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .losses import box_regression_loss

DEFAULT_ANGLES = (-60.0, -30.0, 0.0, 30.0, 60.0, 90.0)
DEFAULT_RATIOS = (1.5, 3.0)
DEFAULT_SIZES = (16.0, 32.0, 64.0, 128.0, 256.0)


class RotatedAnchorGenerator(nn.Module):
    def __init__(self, sizes=DEFAULT_SIZES, ratios=DEFAULT_RATIOS, angles=DEFAULT_ANGLES):
        super().__init__()
        # per level: a tuple of sizes (one size per level by default)
        self.sizes = [tuple(s) if isinstance(s, (tuple, list)) else (float(s),) for s in sizes]
        self.ratios = tuple(float(r) for r in ratios)
        self.angles = tuple(float(a) for a in angles)
        self._cache: dict[tuple, torch.Tensor] = {}  # anchors per (padded size, map sizes, device)

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(self.ratios) * len(self.angles) for s in self.sizes]

    def base_anchors(self, level: int, dtype, device) -> torch.Tensor:
        rows = []
        for s in self.sizes[level]:
            for r in self.ratios:
                w, h = s * math.sqrt(r), s / math.sqrt(r)
                for a in self.angles:
                    a = ((a + 90.0) % 180.0) - 90.0
                    rows.append([0.0, 0.0, w, h, a])
        return torch.tensor(rows, dtype=dtype, device=device)

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """One ``[A, 5]`` anchor tensor per image (the same tensor; computed once per input and
        feature-map size and then cached)."""
        anchors, _ = self._cached(image_list, feature_maps)
        return [anchors for _ in range(len(image_list.image_sizes))]

    def overlap_candidates(self, boxes: torch.Tensor, image_list, feature_maps: list[torch.Tensor]):
        """Index pairs ``(i, j)`` of ``boxes[i]`` (rotated, ``[G, 5]``) and anchor ``j`` (of this input's
        anchors) whose circumscribed circles overlap: a superset of the pairs whose interiors intersect,
        for ``rbox_match_quality(candidates=...)``. Read off the anchor grid (for each box, the grid cells
        within reach on each level), so no box is tested against the anchors far from it."""
        _, layout = self._cached(image_list, feature_maps)
        dev = boxes.device
        b = boxes.detach().to(torch.float64)
        cx, cy, rb = b[:, 0], b[:, 1], 0.5 * torch.hypot(b[:, 2], b[:, 3])
        ii, jj = [], []
        for offset, fh, fw, sy, sx, radii in layout:
            radii = radii.to(dev)
            reach = (rb + radii.max()) * (1 + 1e-6) + 1e-3  # slack for the anchors' float32 centres
            x0 = torch.ceil((cx - reach) / sx - 0.5).clamp(0, fw).long()
            x1 = torch.floor((cx + reach) / sx - 0.5).clamp(-1, fw - 1).long()
            y0 = torch.ceil((cy - reach) / sy - 0.5).clamp(0, fh).long()
            y1 = torch.floor((cy + reach) / sy - 0.5).clamp(-1, fh - 1).long()
            nx, ny = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
            cells = nx * ny
            g = torch.repeat_interleave(torch.arange(b.shape[0], device=dev), cells)
            if g.numel() == 0:
                continue
            local = torch.arange(g.numel(), device=dev) - (torch.cumsum(cells, 0) - cells)[g]
            iy, ix = y0[g] + local // nx[g], x0[g] + local % nx[g]
            d2 = ((ix + 0.5) * sx - cx[g]) ** 2 + ((iy + 0.5) * sy - cy[g]) ** 2
            reach_k = (rb[g, None] + radii[None]) * (1 + 1e-6) + 1e-3  # [P, shapes]
            hit = d2[:, None] < reach_k * reach_k
            k = torch.arange(radii.numel(), device=dev)
            j = offset + (iy * fw + ix)[:, None] * radii.numel() + k[None]
            ii.append(g[:, None].expand_as(hit)[hit])
            jj.append(j[hit])
        if not ii:
            e = torch.zeros(0, dtype=torch.int64, device=dev)
            return e, e
        return torch.cat(ii), torch.cat(jj)

    def _cached(self, image_list, feature_maps):
        """(anchors ``[A, 5]``, grid layout) for this padded input and feature-map size, cached. Layout:
        per level ``(first anchor index, fh, fw, stride y, stride x, circumradii of its shapes)``; anchor
        ``first + (y * fw + x) * shapes + k`` is shape ``k`` at cell ``(y, x)``."""
        ph, pw = image_list.tensors.shape[-2:]
        device = feature_maps[0].device
        key = (int(ph), int(pw), tuple(tuple(f.shape[-2:]) for f in feature_maps), str(device))
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 16:
                self._cache.clear()
            hit = self._cache[key] = self._grid_anchors(ph, pw, feature_maps)
        return hit

    def _grid_anchors(self, ph: int, pw: int, feature_maps: list[torch.Tensor]):
        dtype, device = torch.float32, feature_maps[0].device
        per_level, layout, offset = [], [], 0
        for lvl, f in enumerate(feature_maps):
            fh, fw = f.shape[-2:]
            sy, sx = ph / fh, pw / fw
            base = self.base_anchors(lvl, dtype, device)
            ys = (torch.arange(fh, dtype=dtype, device=device) + 0.5) * sy
            xs = (torch.arange(fw, dtype=dtype, device=device) + 0.5) * sx
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            centers = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # H*W in row-major order
            a = base[None].repeat(centers.shape[0], 1, 1)  # [HW, A, 5]
            a[:, :, 0] += centers[:, None, 0]
            a[:, :, 1] += centers[:, None, 1]
            per_level.append(a.reshape(-1, 5))
            radii = 0.5 * torch.hypot(base[:, 2].double(), base[:, 3].double())
            layout.append((offset, int(fh), int(fw), float(sy), float(sx), radii))
            offset += a.shape[0] * a.shape[1]
        return torch.cat(per_level), layout


class RotatedRPNHead(nn.Module):
    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 5, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, x: list[torch.Tensor]):
        logits, deltas = [], []
        for f in x:
            t = F.relu(self.conv(f))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten(layer: torch.Tensor, c: int) -> torch.Tensor:
    n, ac, h, w = layer.shape
    a = ac // c
    return layer.view(n, a, c, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, c)  # order H, W, A


class RotatedRPN(nn.Module):
    def __init__(self, anchor_generator: RotatedAnchorGenerator, head: RotatedRPNHead, fg_iou_thresh=0.7,
                 bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
                 pre_nms_top_n=dict(training=1000, testing=600), post_nms_top_n=dict(training=1000, testing=300),
                 nms_thresh=0.7, score_thresh=0.0, min_size=1.0, box_weights=(1.0, 1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        from torchvision.models.detection import _utils as det_utils
        from chromoseg.ops import RBoxCoder

        self.anchor_generator, self.head = anchor_generator, head
        self.box_coder = RBoxCoder(weights=box_weights)
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre, self._post = dict(pre_nms_top_n), dict(post_nms_top_n)
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size

    def pre_nms_top_n(self):
        return self._pre["training" if self.training else "testing"]

    def post_nms_top_n(self):
        return self._post["training" if self.training else "testing"]

    def assign_targets_to_anchors(self, anchors, targets, candidates=None):
        """Anchor labels (1 fg, 0 bg, -1 ignored) and matched ground-truth boxes. The IoU matrix is
        ``rbox_match_quality`` (exact wherever the Matcher's decision depends on it, pruned by a
        cheap upper bound elsewhere), so the labels are those of the full exact matrix.
        ``candidates``: optional ``gt -> (i, j)``, a superset of the overlapping (ground truth, anchor)
        pairs (the anchor grid's ``overlap_candidates``); without it they are searched for."""
        from chromoseg.ops import rbox_match_quality

        labels, matched_gt = [], []
        for a, t in zip(anchors, targets):
            gt = t["rboxes"].to(a.dtype)
            if gt.shape[0] == 0:
                labels.append(a.new_zeros(a.shape[0]))
                matched_gt.append(a.new_zeros(a.shape))
                continue
            pairs = candidates(gt) if candidates is not None else None
            m = self.proposal_matcher(rbox_match_quality(gt, a, self.proposal_matcher.low_threshold,
                                                         candidates=pairs))
            matched_gt.append(gt[m.clamp(min=0)])
            lab = (m >= 0).to(a.dtype)
            lab[m == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0.0
            lab[m == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(lab)
        return labels, matched_gt

    def filter_proposals(self, deltas, anchors, objectness, image_sizes, num_per_level):
        """Proposals per image: the top ``pre_nms_top_n`` anchors of each level by objectness, decoded
        (only those: decoding is per anchor), size / score / centre filters, then rotated NMS per level.
        ``deltas`` ``[N, A, 5]``, ``anchors`` one ``[A, 5]`` per image, ``objectness`` ``[N * A, 1]``."""
        from chromoseg.ops import batched_nms_rotated

        n = deltas.shape[0]
        objectness = objectness.detach().reshape(n, -1)
        final_boxes, final_scores = [], []
        for i in range(n):
            top_l, lvl_l = [], []
            off = 0
            for lvl, k in enumerate(num_per_level):
                ob = objectness[i, off:off + k]
                top = ob.topk(min(self.pre_nms_top_n(), k)).indices + off
                top_l.append(top)
                lvl_l.append(torch.full((top.numel(),), lvl, dtype=torch.int64, device=ob.device))
                off += k
            top, lvls = torch.cat(top_l), torch.cat(lvl_l)
            boxes = self.box_coder.decode(deltas[i, top], anchors[i][top])
            scores = objectness[i, top].sigmoid()
            h, w = image_sizes[i]
            keep = torch.where((boxes[:, 2] >= self.min_size) & (boxes[:, 3] >= self.min_size)
                               & (scores >= self.score_thresh)
                               & (boxes[:, 0] >= 0) & (boxes[:, 0] <= w) & (boxes[:, 1] >= 0) & (boxes[:, 1] <= h)
                               & torch.isfinite(boxes).all(dim=1))[0]
            boxes, scores, lvls = boxes[keep], scores[keep], lvls[keep]
            keep = batched_nms_rotated(boxes, scores, lvls, self.nms_thresh, max_keep=self.post_nms_top_n())
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    def forward(self, images, features, targets=None):
        feats = list(features.values())
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_per_level = [l.shape[1] * l.shape[2] * l.shape[3] for l in logits]
        objectness = torch.cat([_flatten(l, 1) for l in logits], dim=1).reshape(-1, 1)
        pred = torch.cat([_flatten(d, 5) for d in deltas], dim=1).reshape(-1, 5)
        n = len(anchors)
        all_anchors = torch.cat(anchors)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self._proposals_and_losses(images, anchors, all_anchors, objectness.float(), pred.float(),
                                              num_per_level, n, targets, feats)

    def _proposals_and_losses(self, images, anchors, all_anchors, objectness, pred, num_per_level, n, targets,
                              feats=None):
        boxes, scores = self.filter_proposals(pred.detach().view(n, -1, 5), anchors, objectness, images.image_sizes,
                                              num_per_level)
        losses = {}
        if self.training:
            grid = None
            if feats is not None:
                def grid(gt):
                    return self.anchor_generator.overlap_candidates(gt, images, feats)
            labels, matched_gt = self.assign_targets_to_anchors(anchors, targets, candidates=grid)
            pos, neg = self.fg_bg_sampler(labels)
            pos = torch.where(torch.cat(pos))[0]
            neg = torch.where(torch.cat(neg))[0]
            reg_t = self.box_coder.encode(all_anchors[pos], torch.cat(matched_gt)[pos])
            sampled = torch.cat([pos, neg])
            lab = torch.cat(labels)
            losses["loss_objectness"] = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], lab[sampled])
            losses["loss_rpn_box_reg"] = box_regression_loss(pred[pos], reg_t, sampled.numel(), beta=1 / 9)
        return boxes, losses
