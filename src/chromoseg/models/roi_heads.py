"""RoI heads: axis-aligned (``mr``, torchvision's), rotated (``rmr``) and H&R (``ermr``).

* :class:`HBoxRoIHeads` -- torchvision's ``RoIHeads`` (matcher, sampler, box coder, MultiScaleRoIAlign,
  TwoMLPHead, Mask R-CNN mask head, detection post-processing) with one change: the mask loss is
  computed only for images whose target has ``has_masks`` True (box-only sets train detection only).
* :class:`RotatedRoIHeads` -- the same structure over rotated RoIs ``(cx, cy, w, h, angle)``:
  proposals matched to the ground truth by ``rbox_iou`` (torchvision's ``Matcher`` and
  ``BalancedPositiveNegativeSampler``), features by ``rroi_align`` on the FPN level chosen from
  sqrt(w*h) (:func:`map_levels`, torchvision's ``LevelMapper`` rule), box regression by eq. (1)
  (``chromoseg.ops.RBoxCoder``) with the smooth-L1 of eq. (3), mask targets cut in the RoI's
  rotated frame (``crop_masks_rotated``), rotated NMS per class at inference.
  With ``hr=True`` (H&R) the box predictor has a second, axis-aligned regression output (torchvision
  deltas against the RoI's enclosing hbox, loss ``loss_box_reg_h`` vs. the ground-truth axis-aligned
  boxes: ``target["hboxes"]`` (the annotator's boxes) where the data has them, else ``target["boxes"]``)
  next to the rotated one (``loss_box_reg_r``); at inference the two detection sets are synthesised by
  :func:`fuse_hr_detections`, and each detection also carries its own H-branch box (``hboxes``: the
  box in the training data's convention).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from .losses import box_regression_loss, classification_loss, mask_loss


def no_autocast(t: torch.Tensor):
    """The rotated-box ops (IoU, NMS, rroi_align's sparse matmul) run in float32, outside autocast."""
    return torch.autocast(device_type=t.device.type, enabled=False)

# --------------------------------------------------------------------------------------------------
# axis-aligned heads (mr)


def _hbox_heads():
    from torchvision.models.detection.roi_heads import RoIHeads

    return RoIHeads


class HBoxRoIHeads(nn.Module):
    """Thin wrapper around torchvision's ``RoIHeads`` (kept as ``self.tv``) whose ``forward``
    skips the mask loss for images without mask annotations."""

    def __init__(self, tv_roi_heads):
        super().__init__()
        self.tv = tv_roi_heads

    def forward(self, features, proposals, image_shapes, targets=None):
        from torchvision.models.detection.roi_heads import maskrcnn_inference, project_masks_on_boxes

        tv = self.tv
        if self.training:
            proposals, matched_idxs, labels, regression_targets = tv.select_training_samples(proposals, targets)
        x = tv.box_roi_pool(features, proposals, image_shapes)
        x = tv.box_head(x)
        class_logits, box_regression = tv.box_predictor(x)
        class_logits, box_regression = class_logits.float(), box_regression.float()  # float32 under autocast
        result, losses = [], {}
        if self.training:
            lab = torch.cat(labels)
            reg_t = torch.cat(regression_targets)
            pos = torch.where(lab > 0)[0]
            n = class_logits.shape[0]
            box_regression = box_regression.reshape(n, -1, 4)
            losses["loss_classifier"] = classification_loss(class_logits, lab)
            # torchvision's fastrcnn_loss uses beta=1/9 on (10,10,5,5)-weighted deltas: kept for the baseline
            losses["loss_box_reg"] = box_regression_loss(box_regression[pos, lab[pos]], reg_t[pos], n, beta=1 / 9)
            # masks: positives of images that have masks
            mask_props, pos_idx, gts, glabels = [], [], [], []
            for i, (p, l, m, t) in enumerate(zip(proposals, labels, matched_idxs, targets)):
                keep = torch.where(l > 0)[0]
                if "has_masks" in t and not bool(t["has_masks"]):
                    keep = keep[:0]
                mask_props.append(p[keep])
                pos_idx.append(m[keep])
            mf = tv.mask_roi_pool(features, mask_props, image_shapes)
            mf = tv.mask_head(mf)
            mask_logits = tv.mask_predictor(mf)
            m_size = mask_logits.shape[-1]
            tg, lb = [], []
            for p, idx, t in zip(mask_props, pos_idx, targets):
                if p.shape[0] == 0:
                    continue
                tg.append(project_masks_on_boxes(t["masks"], p, idx, m_size))
                lb.append(t["labels"][idx])
            if tg:
                losses["loss_mask"] = mask_loss(mask_logits, torch.cat(lb), torch.cat(tg))
            else:
                losses["loss_mask"] = mask_logits.sum() * 0.0
        else:
            boxes, scores, labels = tv.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            mf = tv.mask_roi_pool(features, boxes, image_shapes)
            mf = tv.mask_head(mf)
            mask_logits = tv.mask_predictor(mf).float()
            probs = maskrcnn_inference(mask_logits, labels)
            for b, s, l, p in zip(boxes, scores, labels, probs):
                result.append({"boxes": b, "scores": s, "labels": l, "masks": p})
        return result, losses


# --------------------------------------------------------------------------------------------------
# rotated pieces


def map_levels(rois: torch.Tensor, k_min: int = 2, k_max: int = 5, canonical_scale: float = 224.0,
               canonical_level: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """FPN level index (0 = finest) of each rotated RoI ``[K, 5]`` from sqrt(w*h): torchvision's
    ``LevelMapper`` (Feature Pyramid Network paper, eq. 1) applied to the rotated area."""
    s = torch.sqrt((rois[:, 2] * rois[:, 3]).clamp(min=1e-6))
    lvl = torch.floor(canonical_level + torch.log2(s / canonical_scale) + eps)
    return (lvl.clamp(k_min, k_max) - k_min).to(torch.int64)


class MultiScaleRotatedRoIAlign(nn.Module):
    """``rroi_align`` over several FPN maps; each RoI reads the level given by :func:`map_levels`.
    The scale of each map is inferred from its size, as torchvision's ``MultiScaleRoIAlign`` does."""

    def __init__(self, featmap_names=("0", "1", "2", "3"), output_size=7, sampling_ratio=2):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio

    def forward(self, features, rois: list[torch.Tensor], image_shapes):
        from chromoseg.ops import rroi_align

        feats = [features[k] for k in self.featmap_names]
        max_h = max(s[0] for s in image_shapes)
        max_w = max(s[1] for s in image_shapes)
        scales = []
        for f in feats:
            s = 2.0 ** round(math.log2(f.shape[-2] / max_h)), 2.0 ** round(math.log2(f.shape[-1] / max_w))
            scales.append(s[0])
        all_rois = torch.cat(
            [torch.cat([torch.full((r.shape[0], 1), i, dtype=r.dtype, device=r.device), r], dim=1)
             for i, r in enumerate(rois)], dim=0)
        k = all_rois.shape[0]
        c = feats[0].shape[1]
        out = feats[0].new_zeros((k, c) + self.output_size)
        if k == 0:
            return out
        k_min = int(-math.log2(scales[0]))
        levels = map_levels(all_rois[:, 1:], k_min=k_min, k_max=k_min + len(feats) - 1)
        for lvl, (f, sc) in enumerate(zip(feats, scales)):
            idx = torch.where(levels == lvl)[0]
            if idx.numel() == 0:
                continue
            # float32 sampling (also under autocast), back to the features' dtype
            with no_autocast(f):
                out[idx] = rroi_align(f.float(), all_rois[idx].float(), self.output_size, spatial_scale=sc,
                                      sampling_ratio=self.sampling_ratio).to(out.dtype)
        return out


class RotatedBoxPredictor(nn.Module):
    """Class scores + rotated deltas (eq. 1), and with ``hr`` also axis-aligned deltas."""

    def __init__(self, in_channels: int, num_classes: int, hr: bool = False, class_agnostic: bool = False):
        super().__init__()
        nb = 1 if class_agnostic else num_classes
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.rbox_pred = nn.Linear(in_channels, nb * 5)
        self.hbox_pred = nn.Linear(in_channels, nb * 4) if hr else None
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.rbox_pred.weight, std=0.001)
        for lin in (self.cls_score, self.rbox_pred):
            nn.init.zeros_(lin.bias)
        if hr:
            nn.init.normal_(self.hbox_pred.weight, std=0.001)
            nn.init.zeros_(self.hbox_pred.bias)

    def forward(self, x):
        x = x.flatten(1)
        h = self.hbox_pred(x) if self.hbox_pred is not None else None
        return self.cls_score(x), self.rbox_pred(x), h


def fuse_hr_detections(rboxes: torch.Tensor, hboxes: torch.Tensor, scores: torch.Tensor,
                       keep_r: torch.Tensor, keep_h: torch.Tensor, isolated_iou: float = 0.05,
                       covered_iou: float = 0.5, agree_iou: float = 0.5):
    """The H&R synthesis rule (the paper leaves it open; this is ours).

    Every candidate detection ``i`` (one RoI and class) has both a rotated box ``rboxes[i]`` and an
    axis-aligned box ``hboxes[i]``. ``keep_r`` are the candidates kept by rotated NMS, ``keep_h``
    those kept by axis-aligned NMS. The result is

    * every rotated detection (``keep_r``) -- rotated boxes separate touching / overlapping
      chromosomes -- plus
    * each axis-aligned detection ``j`` in ``keep_h`` that is **isolated** (its hbox overlaps no other
      kept hbox by more than ``isolated_iou``) and **not covered** by a rotated detection (IoU of its
      hbox with the hbox enclosing every kept rotated box < ``covered_iou``): this recovers isolated
      chromosomes that the rotated branch missed, which is what the paper credits H&R with.

    For a recovered detection the rotated box of the same candidate is used for the mask when it
    agrees with the hbox (IoU of ``hboxes[j]`` and the hbox enclosing ``rboxes[j]`` >= ``agree_iou``);
    otherwise its hbox is used (``use_hbox`` True: the caller turns it into an angle-0 rotated box).
    Scores are kept as they are (no fusion). Returns ``(indices, use_hbox)``, indices sorted by
    decreasing score.
    """
    from torchvision.ops import box_iou
    from chromoseg.ops import rbox_to_hbox

    keep_r = keep_r.to(torch.int64)
    keep_h = keep_h.to(torch.int64)
    extra = keep_h[:0]
    if keep_h.numel():
        hb = hboxes[keep_h]
        iou_hh = box_iou(hb, hb)
        iou_hh.fill_diagonal_(0.0)
        isolated = iou_hh.max(dim=1).values <= isolated_iou if keep_h.numel() > 1 else \
            torch.ones(1, dtype=torch.bool, device=hb.device)
        if keep_r.numel():
            covered = box_iou(hb, rbox_to_hbox(rboxes[keep_r])).max(dim=1).values >= covered_iou
        else:
            covered = torch.zeros_like(isolated)
        in_r = torch.isin(keep_h, keep_r)
        extra = keep_h[isolated & ~covered & ~in_r]
    idx = torch.cat([keep_r, extra])
    use_hbox = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    if extra.numel():
        agree = torch.diagonal(box_iou(hboxes[extra], rbox_to_hbox(rboxes[extra])))
        use_hbox[keep_r.numel():] = agree < agree_iou
    order = torch.argsort(scores[idx], descending=True, stable=True)
    return idx[order], use_hbox[order]


class RotatedRoIHeads(nn.Module):
    def __init__(self, box_roi_pool, box_head, box_predictor: RotatedBoxPredictor, mask_roi_pool, mask_head,
                 mask_predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=256,
                 positive_fraction=0.25, rbox_weights=(10.0, 10.0, 5.0, 5.0, 5.0),
                 hbox_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.05, nms_thresh=0.5,
                 detections_per_img=100, hr: bool = False, hr_fusion: bool = True, box_beta: float = 1.0,
                 score_mode: str = "class", rescore: bool = False):
        super().__init__()
        if score_mode not in ("class", "object"):
            raise ValueError(f"score_mode {score_mode!r}: use 'class' or 'object'")
        from torchvision.models.detection import _utils as det_utils
        from chromoseg.ops import RBoxCoder

        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.rbox_coder = RBoxCoder(weights=rbox_weights)
        self.hbox_coder = det_utils.BoxCoder(hbox_weights)
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.hr, self.hr_fusion, self.box_beta = hr, hr_fusion, box_beta
        #: inference candidates: "class" = one per RoI and class with that class's probability above
        #: ``score_thresh``, NMS per class (the paper, torchvision); "object" = one per RoI, its likeliest
        #: class's boxes, scored 1 - P(background), NMS across classes. "object" keeps a chromosome whose
        #: class is unsure (no class above the threshold) and spends ``detections_per_img`` on
        #: chromosomes, not on one chromosome's runner-up classes. Training is the same in both.
        self.score_mode = score_mode
        #: inference only: score each final detection on its own regressed rotated box
        #: (:meth:`rescore_detections`) instead of on the proposal it was regressed from.
        self.rescore = rescore
        #: inference only: detections scored below it are dropped after NMS and H&R fusion, before the
        #: mask head (0 = none). ``Predictor`` gives its own calls theirs (``forward(..., mask_score_thresh=)``),
        #: just under the score threshold its rule applies after mask NMS anyway (object scores): fewer
        #: masks, same result; this attribute is left as it is.
        self.mask_score_thresh = 0.0

    # ---- training samples
    def select_training_samples(self, proposals, targets):
        """Sampled RoIs per image: (proposals, matched ground-truth index, labels, rotated and
        axis-aligned regression targets, ``class_known`` of each sampled RoI)."""
        from chromoseg.ops import rbox_match_quality, rbox_to_hbox

        out_p, out_m, out_l, out_rt, out_ht, out_k = [], [], [], [], [], []
        for props, t in zip(proposals, targets):
            gt_r = t["rboxes"].to(props.dtype)
            gt_l = t["labels"]
            props = torch.cat([props, gt_r])
            if gt_r.shape[0] == 0:
                matched = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                labels = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                gt_r = props.new_zeros((1, 5))
                gt_h = props.new_zeros((1, 4))
            else:
                q = rbox_match_quality(gt_r, props, self.proposal_matcher.low_threshold,
                                       self.proposal_matcher.allow_low_quality_matches)
                m = self.proposal_matcher(q)
                matched = m.clamp(min=0)
                labels = gt_l[matched].to(torch.int64)
                labels[m == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0
                labels[m == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1
                gt_h = t.get("hboxes", t.get("boxes"))  # the annotator's box where the data has one
                gt_h = gt_h.to(props.dtype) if gt_h is not None else rbox_to_hbox(gt_r)
            known_gt = t.get("class_known")
            known = (known_gt.to(torch.bool)[matched] if known_gt is not None and gt_l.numel()
                     else torch.ones_like(labels, dtype=torch.bool))
            out_p.append(props), out_m.append(matched), out_l.append(labels), out_k.append(known)
            out_rt.append(gt_r), out_ht.append(gt_h)
        pos, neg = self.fg_bg_sampler(out_l)
        res_p, res_m, res_l, res_rt, res_ht, res_k = [], [], [], [], [], []
        for i in range(len(out_p)):
            s = torch.where(pos[i] | neg[i])[0]
            p, m, l = out_p[i][s], out_m[i][s], out_l[i][s]
            res_p.append(p), res_m.append(m), res_l.append(l)
            res_k.append(out_k[i][s] | (l <= 0))  # only positives can be of unknown class
            res_rt.append(self.rbox_coder.encode(p, out_rt[i][m]))
            if self.hr:
                res_ht.append(self.hbox_coder.encode_single(out_ht[i][m], rbox_to_hbox(p)))
        return res_p, res_m, res_l, res_rt, res_ht, res_k

    def _pick(self, reg, labels, dim):
        reg = reg.reshape(reg.shape[0], -1, dim)
        if reg.shape[1] == 1:
            return reg[:, 0]
        return reg[torch.arange(reg.shape[0], device=reg.device), labels]

    def forward(self, features, proposals, image_shapes, targets=None, mask_score_thresh: float | None = None):
        """``mask_score_thresh``: this call's (None: :attr:`mask_score_thresh`)."""
        if mask_score_thresh is None:
            mask_score_thresh = self.mask_score_thresh
        if self.training:
            with no_autocast(proposals[0]):
                proposals, matched, labels, rt, ht, known = self.select_training_samples(proposals, targets)
        x = self.box_roi_pool(features, proposals, image_shapes)
        x = self.box_head(x)
        class_logits, rreg, hreg = self.box_predictor(x)
        # box decoding and losses in float32 (bf16 would move a box centre by pixels)
        class_logits, rreg = class_logits.float(), rreg.float()
        hreg = hreg.float() if hreg is not None else None
        if not self.training:
            with no_autocast(class_logits):
                dets = self.postprocess_boxes(class_logits, rreg, hreg, proposals, image_shapes)
            if self.rescore:
                dets = self.rescore_detections(features, dets, image_shapes)
            if mask_score_thresh > 0:
                dets = [{k: v[r["scores"] >= mask_score_thresh] for k, v in r.items()} for r in dets]
            return self.postprocess_masks(features, dets, image_shapes), {}
        losses = {}
        lab = torch.cat(labels)
        known = torch.cat(known)
        n = lab.shape[0]
        if not bool(known.all()):
            # a positive of unknown class: its class-specific box and mask use the most probable class
            lab = torch.where(known, lab, class_logits[:, 1:].detach().argmax(1) + 1)
            labels = list(lab.split([len(l) for l in labels]))
        pos = torch.where(lab > 0)[0]
        losses["loss_classifier"] = classification_loss(class_logits, lab, known)
        lr = box_regression_loss(self._pick(rreg[pos], lab[pos], 5), torch.cat(rt)[pos], n, self.box_beta)
        if self.hr:
            losses["loss_box_reg_r"] = lr
            losses["loss_box_reg_h"] = box_regression_loss(self._pick(hreg[pos], lab[pos], 4),
                                                           torch.cat(ht)[pos], n, self.box_beta)
        else:
            losses["loss_box_reg"] = lr
        # mask branch on the positive RoIs of images with masks, targets in each RoI's rotated frame
        from chromoseg.ops import crop_masks_rotated

        mprops, tg, lb = [], [], []
        for p, l, m, t in zip(proposals, labels, matched, targets):
            keep = torch.where(l > 0)[0]
            if "has_masks" in t and not bool(t["has_masks"]):
                keep = keep[:0]
            mprops.append(p[keep])
            if keep.numel():
                lb.append(l[keep])
                tg.append((p[keep], m[keep], t["masks"]))
        mf = self.mask_head(self.mask_roi_pool(features, mprops, image_shapes))
        mask_logits = self.mask_predictor(mf)
        if tg:
            msz = mask_logits.shape[-1]
            with no_autocast(mask_logits):
                targets_m = torch.cat([crop_masks_rotated(masks, p.float(), idx, msz) for p, idx, masks in tg])
            losses["loss_mask"] = mask_loss(mask_logits, torch.cat(lb), targets_m)
        else:
            losses["loss_mask"] = mask_logits.sum() * 0.0
        return [], losses

    # ---- inference
    def postprocess_boxes(self, class_logits, rreg, hreg, proposals, image_shapes):
        from torchvision.ops import batched_nms
        from chromoseg.ops import batched_nms_rotated, rbox_to_hbox, hbox_to_rbox

        num_classes = class_logits.shape[-1]
        per_image = [p.shape[0] for p in proposals]
        props = torch.cat(proposals)
        k = props.shape[0]
        nb = rreg.shape[1] // 5
        rdec = self.rbox_coder.decode(rreg.reshape(-1, 5), props.repeat_interleave(nb, dim=0)).reshape(k, nb, 5)
        if nb == 1:
            rdec = rdec.expand(k, num_classes, 5)
        hdec = None
        if self.hr:
            hp = rbox_to_hbox(props)
            hdec = self.hbox_coder.decode_single(hreg.reshape(-1, 4), hp.repeat_interleave(nb, dim=0)).reshape(k, nb, 4)
            if nb == 1:
                hdec = hdec.expand(k, num_classes, 4)
        scores_all = F.softmax(class_logits, -1)
        results = []
        for i, (rd, sc) in enumerate(zip(rdec.split(per_image), scores_all.split(per_image))):
            h, w = image_shapes[i]
            hd = hdec.split(per_image)[i] if self.hr else None
            if self.score_mode == "object":  # one candidate per RoI: its likeliest class
                best = sc[:, 1:].argmax(1) + 1
                rows = torch.arange(sc.shape[0], device=sc.device)
                rb, s, lab = rd[rows, best], 1.0 - sc[:, 0], best
                hb = hd[rows, best] if self.hr else None
                per_roi = 1
            else:  # one candidate per RoI and class
                labels = torch.arange(num_classes, device=sc.device).view(1, -1).expand_as(sc)
                rb, s, lab = rd[:, 1:].reshape(-1, 5), sc[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
                hb = hd[:, 1:].reshape(-1, 4) if self.hr else None
                per_roi = num_classes - 1
            keep = torch.where((s > self.score_thresh) & (rb[:, 2] > 1e-2) & (rb[:, 3] > 1e-2))[0]
            roi = keep // per_roi  # the RoI each candidate comes from
            rb, s, lab = rb[keep], s[keep], lab[keep]
            nms_lab = torch.zeros_like(lab) if self.score_mode == "object" else lab
            keep_r = batched_nms_rotated(rb, s, nms_lab, self.nms_thresh)[: self.detections_per_img]
            if self.hr:
                hb = hb[keep]
                hb[:, 0::2] = hb[:, 0::2].clamp(0, w)
                hb[:, 1::2] = hb[:, 1::2].clamp(0, h)
            if self.hr and self.hr_fusion:
                keep_h = batched_nms(hb, s, nms_lab, self.nms_thresh)[: self.detections_per_img]
                idx, use_h = fuse_hr_detections(rb, hb, s, keep_r, keep_h)
                idx, use_h = idx[: self.detections_per_img], use_h[: self.detections_per_img]
                rbox = rb[idx].clone()
                if use_h.any():
                    rbox[use_h] = hbox_to_rbox(hb[idx[use_h]]).to(rbox.dtype)
                box = rbox_to_hbox(rbox)
                if use_h.any():
                    box[use_h] = hb[idx[use_h]]
            else:
                idx = keep_r
                rbox = rb[idx]
                box = rbox_to_hbox(rbox)
            box[:, 0::2] = box[:, 0::2].clamp(0, w)
            box[:, 1::2] = box[:, 1::2].clamp(0, h)
            res = {"boxes": box, "rboxes": rbox, "scores": s[idx], "labels": lab[idx],
                   "class_scores": sc[roi[idx], 1:]}  # the RoI's 24 class probabilities
            if self.hr:
                res["hboxes"] = hb[idx]
            results.append(res)
        return results

    def rescore_detections(self, features, results, image_shapes):
        """Each detection's class probabilities from the box head run once more, on the detection's
        own final rotated box (``rboxes``), replacing those of the proposal it came from (ours, not the
        paper's; like a one-stage cascade without a second regressor). A long, thin chromosome's
        proposals overlap its rotated truth poorly (rotated IoU falls fast with a small turn), so the
        head, trained to call RoIs under IoU 0.5 background, gives them low scores although their
        regressed boxes fit. ``scores`` become the new probability of the detection's label (class
        mode) or 1 - P(background) (object mode), ``class_scores`` the new 24 probabilities; boxes,
        labels and order are kept. Measured: ``benchmarks/results/gband.md`` (2026-12-07, rescoring)."""
        rboxes = [r["rboxes"] for r in results]
        counts = [b.shape[0] for b in rboxes]
        if not sum(counts):
            return results
        x = self.box_head(self.box_roi_pool(features, rboxes, image_shapes))
        probs = F.softmax(self.box_predictor(x)[0].float(), -1)
        out = []
        for r, p in zip(results, probs.split(counts)):
            r = dict(r)
            if self.score_mode == "object":
                r["scores"] = 1.0 - p[:, 0]
            else:
                r["scores"] = p.gather(1, r["labels"].view(-1, 1).to(torch.int64)).view(-1)
            r["class_scores"] = p[:, 1:]
            out.append(r)
        return out

    def postprocess_masks(self, features, results, image_shapes):
        final_rboxes = [r["rboxes"] for r in results]
        mf = self.mask_head(self.mask_roi_pool(features, final_rboxes, image_shapes))
        mask_logits = self.mask_predictor(mf)
        probs = mask_logits.float().sigmoid()
        start = 0
        for r in results:
            n = r["labels"].shape[0]
            p = probs[start:start + n]
            start += n
            if p.shape[1] > 1:
                p = p[torch.arange(n, device=p.device), r["labels"]][:, None]
            r["masks"] = p
        return results
