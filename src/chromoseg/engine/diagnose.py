"""Where chromosomes are lost: an error breakdown of a model on an annotated set.

Every (non-crowd) ground-truth chromosome is put in the first stage that loses it:

``rpn``          no RPN proposal overlaps it at IoU >= 0.5 (rotated IoU for rotated variants, box IoU
                 for ``mr``; in the model's input frame);
``heads_miss``   the RoI heads return no detection (any score, after their box NMS and top-100) with
                 mask IoU >= 0.1;
``mask_iou_low`` their best detection has mask IoU in [0.1, 0.5): found, badly outlined;
``score``        a detection with mask IoU >= 0.5 exists but none reaches the score threshold;
``nms``          one reaching the threshold exists but is not among the final instances (mask NMS,
                 top-k);
``taken``        a final instance covers it at IoU >= 0.5 but was matched to another chromosome;
``wrong_class``  matched (final instances, ``evaluate.greedy_match``, mask IoU >= 0.5) with another class;
``right_class``  matched with its own class.

The final instances are ``chromoseg predict``'s (:func:`chromoseg.engine.pipeline.select_instances`
and ``Predictor.classes_of`` with the predictor's settings: crop classifier, karyotype assignment).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from .evaluate import greedy_match

STAGES = ("rpn", "heads_miss", "mask_iou_low", "score", "nms", "taken", "wrong_class", "right_class")
MATCH_IOU = 0.5
LOW_IOU = 0.1


def _rles(masks) -> list:
    from pycocotools import mask as mask_utils

    return [mask_utils.encode(np.asfortranarray(np.asarray(m, np.uint8))) for m in masks]


def _mask_ious(dets: list, gts: list) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(dets, gts, [0] * len(gts)), np.float64).reshape(len(dets), len(gts))


def _proposal_cover(model, proposals: torch.Tensor, gt_rboxes: torch.Tensor, gt_boxes: torch.Tensor,
                    sx: float, sy: float) -> np.ndarray:
    """Best proposal IoU ``[G]`` of each ground truth, in the model's input frame."""
    from chromoseg.models.transform import scale_boxes, scale_rboxes

    if proposals.numel() == 0 or gt_boxes.numel() == 0:
        return np.zeros(len(gt_boxes))
    if proposals.shape[1] == 5:
        from chromoseg.ops import rbox_iou

        iou = rbox_iou(scale_rboxes(gt_rboxes, sx, sy).float(), proposals.float())
    else:
        from torchvision.ops import box_iou

        iou = box_iou(scale_boxes(gt_boxes, sx, sy).float(), proposals.float())
    return iou.amax(1).numpy()


def ground_truth_instances(target: dict) -> list[dict]:
    """A dataset target (``ChromosomeDataset.load``) as the instance dicts :func:`diagnose_image` takes."""
    masks = target["masks"].numpy().astype(bool)
    b = target["boxes"].numpy()
    return [{"mask": masks[k], "rbox": target["rboxes"][k].tolist(),
             "bbox": [float(b[k, 0]), float(b[k, 1]), float(b[k, 2] - b[k, 0]), float(b[k, 3] - b[k, 1])],
             "category_id": int(target["labels"][k])} for k in range(len(masks))]


@torch.no_grad()
def diagnose_image(predictor, image: np.ndarray, gt: list[dict]) -> tuple[list[str], dict]:
    """Stage of every ground-truth instance of one image (see the module docstring), and the
    image's final instances. ``gt``: dicts with ``mask`` (bool ``[H, W]``), ``rbox``, ``bbox`` (xywh)
    and ``category_id``. An R-CNN variant only (ValueError for Deep Snake: it has no such stages)."""
    from dataclasses import replace

    from chromoseg.data.io import to_float01
    from chromoseg.engine.amp import autocast_context, float32_outputs
    from chromoseg.engine.pipeline import select_instances

    model, cfg = predictor.model, predictor.cfg
    if not hasattr(model, "rpn"):
        raise ValueError(f"the error breakdown follows an R-CNN's stages (RPN, heads, NMS); the "
                         f"{model.config.get('variant', 'given')} model has none")
    seen = {}
    hook = model.rpn.register_forward_hook(lambda mod, inp, out: seen.__setitem__("proposals", out[0]))
    try:
        t = torch.from_numpy(to_float01(image))[None].to(predictor.device)
        with autocast_context(cfg.amp, predictor.device):  # as the predictor's own call
            out = model([t])[0]
    finally:
        hook.remove()
    out = float32_outputs(out)
    h, w = image.shape[:2]
    mh, mw = model.transform.image_size or (h, w)
    sx, sy = mw / w, mh / h
    gt_r = torch.tensor([g["rbox"] for g in gt], dtype=torch.float32).reshape(-1, 5)
    gt_b = torch.tensor([[g["bbox"][0], g["bbox"][1], g["bbox"][0] + g["bbox"][2], g["bbox"][1] + g["bbox"][3]]
                         for g in gt], dtype=torch.float32).reshape(-1, 4)
    cover = _proposal_cover(model, seen["proposals"][0].cpu(), gt_r, gt_b, sx, sy)
    raw = select_instances(out, replace(cfg, score_threshold=0.0, mask_nms_iou=0.0, top_k=10 ** 6))
    final = predictor.classes_of(t[0].cpu(), select_instances(out, cfg))  # as predict has them
    gt_rle = _rles([g["mask"] for g in gt])
    raw_iou = _mask_ious(_rles([r["mask"] for r in raw]), gt_rle)
    fin_iou = _mask_ious(_rles([f["mask"] for f in final]), gt_rle)
    match = greedy_match(fin_iou, [f["score"] for f in final], MATCH_IOU)
    stages = []
    for j, g in enumerate(gt):
        best_raw = raw_iou[:, j].max() if raw else 0.0
        good_raw = raw_iou[:, j] >= MATCH_IOU if raw else np.zeros(0, bool)
        if j in match:
            stages.append("right_class" if final[match[j]]["category_id"] == g["category_id"] else "wrong_class")
        elif final and fin_iou[:, j].max() >= MATCH_IOU:
            stages.append("taken")
        elif cover[j] < MATCH_IOU:
            stages.append("rpn")
        elif best_raw < LOW_IOU:
            stages.append("heads_miss")
        elif best_raw < MATCH_IOU:
            stages.append("mask_iou_low")
        elif not any(raw[i]["score"] >= cfg.score_threshold for i in np.flatnonzero(good_raw)):
            stages.append("score")
        else:
            stages.append("nms")
    return stages, {"final": final, "proposal_cover": cover}


def error_breakdown(predictor, dataset_json, max_images: int | None = None, progress: bool = True) -> dict:
    """Counts per stage (see the module docstring) over the images of a chromoseg COCO set."""
    from tqdm import tqdm

    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.io import read_image

    ds = ChromosomeDataset(dataset_json, max_images=max_images)
    counts: Counter = Counter()
    per_class: dict[int, Counter] = {}
    for i in tqdm(range(len(ds)), desc="diagnose", disable=not progress, leave=False):
        gt = ground_truth_instances(ds.load(i)[1])
        stages, _ = diagnose_image(predictor, read_image(ds.image_path(i)), gt)
        counts.update(stages)
        for g, s in zip(gt, stages):
            per_class.setdefault(g["category_id"], Counter())[s] += 1
    total = sum(counts.values())
    return {"images": len(ds), "chromosomes": total, "stages": {s: counts.get(s, 0) for s in STAGES},
            "per_class": {c: {s: v.get(s, 0) for s in STAGES} for c, v in sorted(per_class.items())}}
