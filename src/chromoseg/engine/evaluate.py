"""Evaluate a predictions file against an annotated set (COCO AP, per-class AP, class confusion).

One entry point, :func:`evaluate`, takes a ground-truth set in chromoseg's COCO format and a COCO
*results* list (what ``chromoseg predict`` writes) and returns a JSON-ready report:

* **AP** with pycocotools' ``COCOeval``: ``AP`` is COCO's AP averaged over IoU 0.50:0.05:0.95,
  ``AP50`` and ``AP75`` at one IoU; for masks (``segm``) and boxes (``bbox``, axis-aligned ``xywh``).
  These are the numbers of the paper's Tables I and II (which print them x100).
* **Modes**: ``multi`` keeps the 24 classes (a detection counts only for its own class); ``binary``
  maps every category to one "chromosome" class before evaluating (the paper's binary-class rows:
  segmentation quality without the classification).
* **Score threshold**: the paper's tables are "under the confidence score threshold of 0.5"; by
  default detections with ``score < PAPER_SCORE_THRESHOLD`` (0.5, :mod:`chromoseg.engine.settings`,
  shared with predict and the tables) are removed *before* COCOeval sees them
  (``score >= threshold`` is kept). ``score_threshold=0`` is the standard COCO protocol. The report
  always states which was used.
* **maxDets = 100** (the paper keeps the top 100 detections). As in COCOeval, the cap applies per
  image *and category*; in binary mode that is per image.
* **Per-class AP** from ``COCOeval.eval['precision']`` (classes without ground truth: ``None``).
* **Confusion matrix** of classes for matched instances: detections (after the threshold, top
  ``max_dets`` per image by score) are matched to ground truth class-agnostically, greedily by
  decreasing score, each to the unmatched ground truth of highest IoU >= 0.5 (mask IoU; box IoU on
  box-only images); each match counts (gt class, predicted class). Unmatched ground truth goes to
  the ``missed`` column, unmatched detections to the ``background`` row.

Ground truth
    ``images``/``annotations``/``categories``; masks as RLE (compressed or not) or polygons;
    ``bbox`` xywh. A set is *box-only* when it has top-level ``"chromoseg": {"box_only": true}``, when
    no annotation carries a segmentation, or image by image with ``"has_masks": false``. Box-only
    images take part in box AP only (mask AP is computed over the images that have masks, and is
    left out, with the reason in ``skipped_iou_types``, when there are none).

Results
    A list of ``{image_id, category_id, score, segmentation, bbox, rbox?, endpoints?}`` (a dict with an
    ``annotations`` list is accepted too). The image may be named by its ``file_name`` instead of its
    id: either a ``file_name`` key (which then decides alone, whatever ``image_id`` says: ``chromoseg
    predict`` numbers images in its own order), or a string ``image_id`` that is not an id; names are
    matched exactly first, then by base name (``a/b/img1.png`` matches ``img1.png`` if that is unique).
    A missing ``bbox`` is taken from the mask. Entries that refer to unknown images, have a category
    outside 1-24, no score, or neither mask nor box are counted in ``counts.skipped`` (with examples
    in ``warnings``) and left out; nothing is dropped silently.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD  # the paper's threshold, shared with predict and the tables

#: The paper evaluates the top 100 detections.
MAX_DETS = 100
MODES = ("multi", "binary")
IOU_TYPES = ("segm", "bbox")
#: IoU at which a detection matches a ground-truth instance in the confusion matrix.
CONFUSION_IOU = 0.5
#: endpoint metric: a ground-truth endpoint is found when a matched detection has one within this many
#: pixels (full image resolution)
ENDPOINT_RADIUS = 4.0
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: Label of the extra row (detections with no ground truth) and column (ground truth with no detection).
BACKGROUND = "background"
MISSED = "missed"
_MAX_EXAMPLES = 5


class EvaluationError(ValueError):
    """Bad input to the evaluation; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------------
def annotator_boxes(gt: dict) -> dict:
    """``gt`` as its box AP is scored: where annotations keep the annotator's box beside a pseudo-mask
    (``source_bbox``, from ``chromoseg data pseudo-masks``: the G-band validation split) that box is the
    ``bbox`` and the set box-only, as the test split is; a set without ``source_bbox`` is returned as it
    is. ``chromoseg train``'s validation by AP and ``benchmarks/bench_gband.py`` score by it."""
    if not any("source_bbox" in a for a in gt["annotations"]):
        return gt
    anns = []
    for a in gt["annotations"]:
        a = {k: v for k, v in a.items() if k not in ("segmentation", "rbox", "endpoints")}
        if "source_bbox" in a:
            a["bbox"] = a.pop("source_bbox")
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
        anns.append(a)
    images = [{**im, "has_masks": False} for im in gt["images"]]
    return {**gt, "images": images, "annotations": anns, "chromoseg": {**gt.get("chromoseg", {}), "box_only": True}}


def _load_json(obj: Any, what: str) -> tuple[Any, str]:
    """Return (data, source description); ``obj`` is a path or already loaded data."""
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.exists():
            raise EvaluationError(f"{what} file not found: {path}")
        if path.is_dir():
            raise EvaluationError(f"{what} path is a folder, expected a JSON file: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as err:
            raise EvaluationError(f"{what} file {path} is not valid JSON: {err}") from None
        except (UnicodeDecodeError, OSError) as err:
            raise EvaluationError(f"cannot read {what} file {path}: {err}") from None
        return data, str(path)
    return obj, f"<{what} given as {type(obj).__name__}>"


class _Log:
    """Counts of skipped items per reason, with a few examples each."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.warnings: list[str] = []

    def skip(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < _MAX_EXAMPLES:
            self.examples[reason].append(example)

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def finish(self, source: str, prefix: str) -> None:
        for reason, n in sorted(self.counts.items()):
            ex = "; ".join(self.examples[reason])
            self.warnings.append(f"{source}: skipped {n} {prefix} ({reason.replace('_', ' ')}), e.g. {ex}")


def _class_names() -> tuple[str, ...]:
    from chromoseg.data.classes import CLASS_NAMES

    return CLASS_NAMES


def _valid_category(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        cat = int(value)
    except (TypeError, ValueError):
        return None
    if cat != value and not (isinstance(value, str) and value.strip().isdigit()):
        return None  # 3.7 is not a category
    return cat if 1 <= cat <= 24 else None


def _to_rle(segm: Any, height: int | None, width: int | None) -> dict | None:
    """Compressed RLE with ``counts`` as str, or None if ``segm`` is empty. Raises ValueError."""
    from pycocotools import mask as mask_utils

    if segm is None or segm == [] or segm == {}:
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError("RLE needs 'counts' and 'size'")
        h, w = (int(v) for v in segm["size"])
        counts = segm["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(segm, h, w)
        elif isinstance(counts, (bytes, str)):
            rle = {"size": [h, w], "counts": counts}
        else:
            raise ValueError(f"RLE 'counts' of type {type(counts).__name__}")
    elif isinstance(segm, list):
        if height is None or width is None:
            raise ValueError("polygon segmentation needs the image's height and width")
        polys = [p for p in segm if isinstance(p, (list, tuple)) and len(p) >= 6]
        if not polys:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width))
    else:
        raise ValueError(f"segmentation of type {type(segm).__name__}")
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _valid_bbox(b: Any) -> list[float] | None:
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        return None
    try:
        out = [float(v) for v in b]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in out) or out[2] < 0 or out[3] < 0:
        return None
    return out


class _GroundTruth:
    """Validated ground truth: images, annotations with RLE masks, box-only flags."""

    def __init__(self, data: Any, source: str) -> None:
        from pycocotools import mask as mask_utils

        self.source = source
        if not isinstance(data, dict):
            raise EvaluationError(
                f"ground-truth file {source} must hold a COCO instances object "
                f"(images, annotations, categories), not a {type(data).__name__}"
                + (" (is it a results file? give the ground truth first)" if isinstance(data, list) else "")
            )
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise EvaluationError(f"ground-truth file {source} has no '{key}' list")
        log = _Log()
        names = _class_names()
        cats = data.get("categories")
        if isinstance(cats, list) and cats:
            by_id = {c.get("id"): str(c.get("name")) for c in cats if isinstance(c, dict)}
            odd = [f"{i}:{n!r}" for i, n in by_id.items() if _valid_category(i) is None or n != names[int(i) - 1]]
            if odd:
                log.warn(
                    f"{source}: categories differ from chromoseg's 24 classes (ids 1-24 named 1..22, X, Y): "
                    f"{', '.join(odd[:8])}; ids are evaluated with chromoseg's names"
                )
        meta = data.get("chromoseg") if isinstance(data.get("chromoseg"), dict) else {}
        set_box_only = bool(meta.get("box_only", False))

        self.images: dict[int, dict] = {}
        self.has_masks: dict[int, bool] = {}
        for k, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img:
                log.skip("images_without_id", f"images[{k}]")
                continue
            try:
                iid = int(img["id"])
            except (TypeError, ValueError):
                log.skip("images_with_bad_id", f"images[{k}] id={img.get('id')!r}")
                continue
            if iid in self.images:
                log.skip("duplicate_image_ids", f"id {iid}")
                continue
            entry = {"id": iid, "file_name": str(img.get("file_name", ""))}
            for key in ("height", "width"):
                if isinstance(img.get(key), (int, float)) and img[key] > 0:
                    entry[key] = int(img[key])
            self.images[iid] = entry
            self.has_masks[iid] = not set_box_only and img.get("has_masks", True) is not False
        log.finish(source, "images")
        log.counts.clear()
        log.examples.clear()

        self.annotations: list[dict] = []
        any_segm = False
        seen_ids: set[int] = set()
        next_id = 1 + max([a.get("id", 0) for a in data["annotations"]
                           if isinstance(a, dict) and isinstance(a.get("id"), int)] or [0])
        lacking_mask_images: set[int] = set()
        for k, ann in enumerate(data["annotations"]):
            where = f"annotations[{k}]"
            if not isinstance(ann, dict):
                log.skip("not_an_object", where)
                continue
            iid = ann.get("image_id")
            if not isinstance(iid, int) or iid not in self.images:
                log.skip("unknown_image_id", f"{where} image_id={iid!r}")
                continue
            cat = _valid_category(ann.get("category_id"))
            if cat is None:
                log.skip("category_outside_1-24", f"{where} category_id={ann.get('category_id')!r}")
                continue
            img = self.images[iid]
            try:
                rle = _to_rle(ann.get("segmentation"), img.get("height"), img.get("width"))
            except (ValueError, TypeError) as err:
                log.skip("bad_segmentation", f"{where}: {err}")
                continue
            if rle is not None:
                any_segm = True
                h, w = rle["size"]
                if "height" not in img:
                    img["height"], img["width"] = h, w
                elif (img["height"], img["width"]) != (h, w):
                    log.skip("mask_size_differs_from_image", f"{where} mask {h}x{w}, image {img['height']}x{img['width']}")
                    continue
            bbox = _valid_bbox(ann.get("bbox"))
            if bbox is None and rle is not None:
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
            if bbox is None:
                log.skip("no_bbox_and_no_mask", where)
                continue
            if rle is None:
                lacking_mask_images.add(iid)
            aid = ann.get("id")
            if not isinstance(aid, int) or aid in seen_ids:
                aid, next_id = next_id, next_id + 1
            seen_ids.add(aid)
            mask_area = float(mask_utils.area(rle)) if rle is not None else None
            self.annotations.append({
                "id": aid, "image_id": iid, "category_id": cat, "bbox": bbox, "segmentation": rle,
                "mask_area": mask_area, "box_area": bbox[2] * bbox[3],
                "iscrowd": 1 if ann.get("iscrowd") else 0,
                **{key: ann[key] for key in ("rbox", "endpoints") if key in ann},
            })
        log.finish(source, "annotations")
        if not any_segm and self.annotations and not set_box_only:
            log.warn(f"{source}: no annotation carries a segmentation; the set is treated as box-only")
            set_box_only = True
            for iid in self.has_masks:
                self.has_masks[iid] = False
        partial = sorted(i for i in lacking_mask_images if self.has_masks.get(i))
        if partial:
            log.warn(
                f"{source}: {len(partial)} image(s) have annotations without a mask (e.g. image ids "
                f"{partial[:5]}); they are evaluated for box AP only"
            )
            for iid in partial:
                self.has_masks[iid] = False
        self.box_only = set_box_only or not any(self.has_masks.values())
        self.skipped = dict(log.counts)
        self.warnings = log.warnings
        self._index = None

    def restrict(self, ids: set[int]) -> None:
        """Keep only the images ``ids`` (and their annotations)."""
        self.images = {i: im for i, im in self.images.items() if i in ids}
        self.has_masks = {i: v for i, v in self.has_masks.items() if i in ids}
        self.annotations = [a for a in self.annotations if a["image_id"] in ids]
        self.box_only = self.box_only or not any(self.has_masks.values())

    def image_of(self, det: dict) -> int | None:
        """The ground-truth image a detection refers to (see :class:`chromoseg.data.coco.ImageIndex`)."""
        if self._index is None:
            from chromoseg.data.coco import ImageIndex

            self._index = ImageIndex(self.images.values())
        return self._index.image_of(det)


def predict_run_of(results: Any) -> dict | None:
    """What ``chromoseg predict`` recorded about a results file: the ``images.json`` beside a results
    path, as ``{"path", "files": [file names it finished], "thresholds": {score thresholds its images
    were made at}}``; None for results given as data or without that file."""
    if not isinstance(results, (str, os.PathLike)):
        return None
    path = Path(results).with_name("images.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        return None
    images = [im for im in meta["images"] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    thresholds = set()
    for im in images:
        inf = im.get("inference") if isinstance(im.get("inference"), dict) else meta.get("inference")
        if isinstance(inf, dict) and isinstance(inf.get("score_threshold"), (int, float)):
            thresholds.add(float(inf["score_threshold"]))
    return {"path": str(path), "files": [im["file_name"] for im in images], "thresholds": thresholds}


def _prepare_results(data: Any, source: str, gt: _GroundTruth, threshold: float, log: _Log) -> tuple[list[dict], dict]:
    from pycocotools import mask as mask_utils

    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        hint = " (is it the ground truth? give the ground truth first)" if isinstance(data, dict) and "images" in data else ""
        raise EvaluationError(
            f"results file {source} must hold a list of detections "
            f"({{image_id, category_id, score, segmentation, bbox}}), not a {type(data).__name__}{hint}"
        )
    dets: list[dict] = []
    below = 0
    by_name = 0
    for k, det in enumerate(data):
        where = f"[{k}]"
        if not isinstance(det, dict):
            log.skip("not_an_object", where)
            continue
        iid = gt.image_of(det)
        if iid is None:  # named by its file where the entry has one (predict's image_id is its own count)
            name = det.get("file_name")
            log.skip("unknown_image", f"{where} file {name}" if isinstance(name, str) and name
                     else f"{where} image_id={det.get('image_id')!r}")
            continue
        if not (isinstance(det.get("image_id"), int) and det["image_id"] == iid):
            by_name += 1
        cat = _valid_category(det.get("category_id"))
        if cat is None:
            log.skip("category_outside_1-24", f"{where} category_id={det.get('category_id')!r}")
            continue
        score = det.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            log.skip("missing_or_bad_score", f"{where} score={score!r}")
            continue
        img = gt.images[iid]
        try:
            rle = _to_rle(det.get("segmentation"), img.get("height"), img.get("width"))
        except (ValueError, TypeError) as err:
            log.skip("bad_segmentation", f"{where}: {err}")
            continue
        if rle is not None and "height" in img and (img["height"], img["width"]) != tuple(rle["size"]):
            log.skip("mask_size_differs_from_image",
                     f"{where} mask {rle['size'][0]}x{rle['size'][1]}, image {img['height']}x{img['width']}")
            continue
        bbox = _valid_bbox(det.get("bbox"))
        if bbox is None and rle is not None:
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
        if bbox is None:
            log.skip("no_bbox_and_no_mask", where)
            continue
        if float(score) < threshold:
            below += 1
            continue
        dets.append({
            "image_id": iid, "category_id": cat, "score": float(score), "bbox": bbox, "segmentation": rle,
            "mask_area": float(mask_utils.area(rle)) if rle is not None else None,
            "box_area": bbox[2] * bbox[3], "order": k,
            **({"endpoints": det["endpoints"]} if _valid_endpoints(det.get("endpoints")) else {}),
        })
    counts = {"detections_in_file": len(data), "detections_below_threshold": below,
              "detections_used": len(dets), "detections_matched_by_file_name": by_name}
    return dets, counts


# --------------------------------------------------------------------------------------------------
# COCO AP
# --------------------------------------------------------------------------------------------------
def _coco(dataset: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _nan_to_none(x: float) -> float | None:
    x = float(x)
    return None if (x < 0 or not math.isfinite(x)) else x


def _run_cocoeval(gt: _GroundTruth, dets: list[dict], mode: str, iou_type: str, max_dets: int) -> dict:
    """One COCOeval run; returns stats, per-class AP and the COCO summary text."""
    import numpy as np
    from pycocotools.cocoeval import COCOeval

    names = _class_names()
    segm = iou_type == "segm"
    img_ids = sorted(i for i in gt.images if gt.has_masks[i] or not segm)
    img_set = set(img_ids)
    binary = mode == "binary"
    if binary:
        categories = [{"id": 1, "name": "chromosome", "supercategory": "chromosome"}]
    else:
        categories = [{"id": i + 1, "name": n, "supercategory": "chromosome"} for i, n in enumerate(names)]
    images = [{k: gt.images[i][k] for k in ("id", "file_name", "height", "width") if k in gt.images[i]}
              for i in img_ids]

    def convert(a: dict, ann_id: int, is_gt: bool) -> dict:
        out = {"id": ann_id, "image_id": a["image_id"], "category_id": 1 if binary else a["category_id"],
               "bbox": list(a["bbox"]), "iscrowd": a.get("iscrowd", 0) if is_gt else 0}
        if segm:
            out["segmentation"] = dict(a["segmentation"])
            out["area"] = a["mask_area"]
        else:
            # GT area from the mask when there is one (as COCO does for box AP); only the "all" range
            # enters AP, so this matters for APs/APm/APl only.
            out["area"] = a["mask_area"] if (is_gt and a["mask_area"] is not None) else a["box_area"]
        if not is_gt:
            out["score"] = a["score"]
        return out

    gt_anns = [convert(a, a["id"], True) for a in gt.annotations if a["image_id"] in img_set]
    dt_used = [d for d in dets if d["image_id"] in img_set and (d["segmentation"] is not None or not segm)]
    dt_anns = [convert(d, n + 1, False) for n, d in enumerate(dt_used)]
    coco_gt = _coco({"images": images, "annotations": gt_anns, "categories": categories})
    coco_dt = _coco({"images": images, "annotations": dt_anns, "categories": categories})
    ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    ev.params.imgIds = img_ids
    ev.params.maxDets = [1, 10, int(max_dets)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        ev.summarize()
    stats = {name: _nan_to_none(v) for name, v in zip(STAT_NAMES, ev.stats)}

    precision = ev.eval["precision"]  # [T, R, K, A, M]; A=0 is "all", M=-1 is max_dets
    iou_thrs = ev.params.iouThrs
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    n_gt = Counter(a["category_id"] for a in gt_anns if not a["iscrowd"])
    n_dt = Counter(a["category_id"] for a in dt_anns)

    def mean_valid(p) -> float | None:
        p = p[p > -1]
        return float(np.mean(p)) if p.size else None

    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = "chromosome" if binary else names[cat_id - 1]
        per_class[name] = {
            "AP": mean_valid(precision[:, :, k, 0, -1]),
            "AP50": mean_valid(precision[t50, :, k, 0, -1]),
            "AP75": mean_valid(precision[t75, :, k, 0, -1]),
            "gt": int(n_gt.get(cat_id, 0)),
            "detections": int(n_dt.get(cat_id, 0)),
        }
    return {
        **stats,
        "images": len(img_ids),
        "gt_instances": sum(n_gt.values()),
        "detections": len(dt_anns),
        "per_class": per_class,
        "coco_summary": text.getvalue().rstrip().splitlines(),
    }


# --------------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------------
def greedy_match(ious, scores, threshold: float = CONFUSION_IOU) -> dict[int, int]:
    """Ground-truth index -> detection index for ``ious [D, G]``: detections by decreasing score
    (ties in their order), each to the still unmatched ground truth of highest IoU, when that IoU is
    >= ``threshold`` (the confusion matrix's rule; also the error breakdown's)."""
    import numpy as np

    ious = np.asarray(ious, dtype=np.float64)
    out: dict[int, int] = {}
    if ious.size == 0:
        return out
    taken = np.zeros(ious.shape[1], bool)
    for i in np.argsort(-np.asarray(scores, float), kind="stable"):
        row = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(row))
        if row[j] >= threshold:
            taken[j] = True
            out[j] = int(i)
    return out


def _valid_endpoints(e: Any) -> bool:
    try:
        a = [[float(v) for v in p] for p in e]
    except (TypeError, ValueError):
        return False
    return len(a) == 2 and all(len(p) == 2 and all(math.isfinite(v) for v in p) for p in a)


def endpoint_errors(gt_ends, det_ends) -> tuple[float, float]:
    """Distances (px) of a ground truth's two endpoints to a detection's two, in the pairing
    (straight or crossed) with the smaller sum."""
    import numpy as np

    g, d = np.asarray(gt_ends, float).reshape(2, 2), np.asarray(det_ends, float).reshape(2, 2)
    straight = np.linalg.norm(g - d, axis=1)
    crossed = np.linalg.norm(g - d[::-1], axis=1)
    best = straight if straight.sum() <= crossed.sum() else crossed
    return float(best[0]), float(best[1])


def _endpoint_summary(dists: list[float], n_gt_ends: int, radius: float) -> dict:
    import numpy as np

    hits = int(sum(d <= radius for d in dists))
    return {
        "radius_px": radius,
        "ground_truth_endpoints": n_gt_ends,
        "of_matched_instances": len(dists),
        "within_radius": hits,
        "share_of_matched": hits / len(dists) if dists else None,
        "share_of_all": hits / n_gt_ends if n_gt_ends else None,
        "mean_distance_px": float(np.mean(dists)) if dists else None,
        "median_distance_px": float(np.median(dists)) if dists else None,
        "note": "ground-truth endpoints of instances matched at mask IoU >= 0.5 (as in the confusion), "
                "each paired with the nearer of the detection's two; share_of_all counts unmatched "
                "instances' endpoints as misses",
    }


def confusion_matrix(gt: _GroundTruth, dets: list[dict], iou_threshold: float = CONFUSION_IOU,
                     max_dets: int = MAX_DETS, endpoint_radius: float = ENDPOINT_RADIUS) -> dict:
    """Class confusion of matched instances (see the module docstring); 25x25 counts.

    Rows: ground-truth classes "1".."22", "X", "Y", then ``background`` (detections that match no
    ground truth). Columns: predicted classes, then ``missed`` (ground truth that no detection matched).
    Matching is class-agnostic, greedy by score, mask IoU on images with masks, box IoU otherwise.
    Crowd ground truth is left out.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    names = list(_class_names())
    n = len(names)
    mat = np.zeros((n + 1, n + 1), dtype=np.int64)
    gts_by_img: dict[int, list[dict]] = defaultdict(list)
    for a in gt.annotations:
        if not a["iscrowd"]:
            gts_by_img[a["image_id"]].append(a)
    dts_by_img: dict[int, list[dict]] = defaultdict(list)
    for d in dets:
        dts_by_img[d["image_id"]].append(d)
    kinds = Counter()
    end_dists: list[float] = []
    n_gt_ends = 0
    for iid in gt.images:
        g = gts_by_img.get(iid, [])
        d = sorted(dts_by_img.get(iid, []), key=lambda x: (-x["score"], x["order"]))[: int(max_dets)]
        use_mask = gt.has_masks[iid] and all(x["segmentation"] is not None for x in g + d)
        if g and d:
            kinds["mask" if use_mask else "box"] += 1
            if use_mask:
                ious = mask_utils.iou([x["segmentation"] for x in d], [x["segmentation"] for x in g], [0] * len(g))
            else:
                ious = mask_utils.iou([x["bbox"] for x in d], [x["bbox"] for x in g], [0] * len(g))
            ious = np.asarray(ious, dtype=np.float64).reshape(len(d), len(g))
        else:
            ious = np.zeros((len(d), len(g)))
        match = greedy_match(ious, [x["score"] for x in d], iou_threshold)  # d is in score order already
        for j, i in match.items():
            det = d[i]
            mat[g[j]["category_id"] - 1, det["category_id"] - 1] += 1
            if _valid_endpoints(g[j].get("endpoints")) and "endpoints" in det:
                end_dists.extend(endpoint_errors(g[j]["endpoints"], det["endpoints"]))
        matched_dets = set(match.values())
        for i, det in enumerate(d):
            if i not in matched_dets:
                mat[n, det["category_id"] - 1] += 1
        for j, ann in enumerate(g):
            if j not in match:
                mat[ann["category_id"] - 1, n] += 1
            if _valid_endpoints(ann.get("endpoints")):
                n_gt_ends += 2
    matched = int(mat[:n, :n].sum())
    correct = int(np.trace(mat[:n, :n]))
    return {
        "iou_threshold": iou_threshold,
        "iou": "mask" if not kinds["box"] else ("box" if not kinds["mask"] else "mask where available, else box"),
        "rows": names + [BACKGROUND],
        "cols": names + [MISSED],
        "row_meaning": "ground-truth class (last row: detections matching no ground truth)",
        "col_meaning": "predicted class (last column: ground truth matched by no detection)",
        "matrix": mat.tolist(),
        "matched": matched,
        "correct_class": correct,
        "class_accuracy_of_matched": (correct / matched) if matched else None,
        "missed": int(mat[:n, n].sum()),
        "false_detections": int(mat[n, :n].sum()),
        "endpoints": _endpoint_summary(end_dists, n_gt_ends, endpoint_radius),
    }


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def _threshold_note(t: float, source: str | None = None) -> str:
    paper = f"{PAPER_SCORE_THRESHOLD:g}"
    if source:
        return (f"detections with score < {t:g} removed before AP: the threshold the predictions were made at "
                f"({source}); the paper's tables use {paper} (--score-threshold {paper}), COCO none (0)")
    if t == PAPER_SCORE_THRESHOLD:
        return (f"detections with score < {paper} removed before AP (the paper's protocol: its tables are "
                f"'under the confidence score threshold of {paper}')")
    if t <= 0:
        return "no score threshold (standard COCO protocol: all detections ranked by score)"
    return f"detections with score < {t:g} removed before AP (the paper uses {paper}, COCO uses none)"


def evaluate(gt: Any, results: Any, score_threshold: float | None = PAPER_SCORE_THRESHOLD,
             modes: Iterable[str] = MODES, iou_types: Iterable[str] = IOU_TYPES,
             max_dets: int = MAX_DETS, images: str = "all") -> dict:
    """Evaluate ``results`` against ``gt``; both are paths or already loaded JSON data.

    ``score_threshold`` None: the threshold the results were made at, where ``chromoseg predict``'s
    ``images.json`` beside a results path records it (the highest, if its images differ), else the
    paper's 0.5. ``images``: ``"all"`` scores every ground-truth image (one without any detection
    counts all its chromosomes as misses; a warning names such images); ``"predicted"`` scores only
    the images that were predicted -- those the ``images.json`` beside a results path lists (with or
    without detections), else those with at least one entry in the results -- and reports the others
    (``counts.unpredicted_images``).

    Returns a JSON-ready report: ``metrics[mode][iou_type]`` with ``AP``, ``AP50``, ``AP75`` (and
    COCO's other stats, all in [0, 1]; ``None`` where there is no ground truth) and ``per_class``;
    ``confusion``; ``counts``; ``score_threshold`` and ``threshold_note``; ``skipped_iou_types``
    (e.g. mask AP on a box-only set); ``warnings``. Raises :class:`EvaluationError` for unusable
    input (missing file, broken JSON, wrong structure); bad single entries are skipped and counted.
    """
    modes = tuple(modes)
    iou_types = tuple(iou_types)
    for m in modes:
        if m not in MODES:
            raise EvaluationError(f"unknown mode {m!r}; expected one of {', '.join(MODES)}")
    for t in iou_types:
        if t not in IOU_TYPES:
            raise EvaluationError(f"unknown IoU type {t!r}; expected one of {', '.join(IOU_TYPES)}")
    if not modes or not iou_types:
        raise EvaluationError("nothing to evaluate: give at least one mode and one IoU type")
    if images not in ("all", "predicted"):
        raise EvaluationError(f"images {images!r}: use 'all' or 'predicted'")
    run = predict_run_of(results)
    threshold_source = None
    if score_threshold is None:
        score_threshold = PAPER_SCORE_THRESHOLD
        if run and run["thresholds"]:
            score_threshold = max(run["thresholds"])
            threshold_source = f"recorded in {run['path']}" + (
                f"; its images were made at {', '.join(f'{t:g}' for t in sorted(run['thresholds']))}: the highest "
                "is used for all" if len(run["thresholds"]) > 1 else "")
    try:
        score_threshold = float(score_threshold)
    except (TypeError, ValueError):
        raise EvaluationError(f"score threshold must be a number, got {score_threshold!r}") from None
    if not math.isfinite(score_threshold):
        raise EvaluationError(f"score threshold must be finite, got {score_threshold}")
    if int(max_dets) < 1:
        raise EvaluationError(f"max_dets must be at least 1, got {max_dets}")

    gt_data, gt_source = _load_json(gt, "ground-truth")
    res_data, res_source = _load_json(results, "results")
    truth = _GroundTruth(gt_data, gt_source)
    log = _Log()
    skipped_modes = {}
    if isinstance(gt_data, dict) and gt_data.get("chromoseg", {}).get("classes_known") is False and "multi" in modes:
        modes = tuple(m for m in modes if m != "multi") or ("binary",)
        skipped_modes["multi"] = "the ground truth has no classes (e.g. LabelMe polygons): binary only"
    dets, det_counts = _prepare_results(res_data, res_source, truth, score_threshold, log)
    log.finish(res_source, "detections")
    warnings = truth.warnings + log.warnings
    # which ground-truth images were predicted: the run's own list, else those the results name
    if run is not None:
        predicted = {truth.image_of({"file_name": f}) for f in run["files"]} - {None}
        predicted_how = f"listed in {run['path']}"
    else:
        entries = res_data.get("annotations") if isinstance(res_data, dict) else res_data
        predicted = {truth.image_of(d) for d in (entries if isinstance(entries, list) else [])
                     if isinstance(d, dict)} - {None}
        predicted_how = "with at least one entry in the results"
    unpredicted = sorted(set(truth.images) - predicted)
    n_gt_images = len(truth.images)
    unpredicted_names = [os.path.basename(truth.images[i]["file_name"]) or f"id {i}" for i in unpredicted]
    example = ", ".join(unpredicted_names[:5]) + (", ..." if len(unpredicted) > 5 else "")
    if images == "predicted":
        if not predicted:
            raise EvaluationError(f"none of the {n_gt_images} images of {gt_source} was predicted in {res_source} "
                                  "(the results name other images, or none); --all-images scores them all as misses")
        truth.restrict(predicted)
        images_note = (f"scored the {len(predicted)} of {n_gt_images} ground-truth images that were predicted "
                       f"({predicted_how})" + (f"; {len(unpredicted)} not predicted ({example}) left out: "
                                               "--all-images counts them as misses" if unpredicted else ""))
    else:
        images_note = f"scored all {n_gt_images} ground-truth images"
        if unpredicted:
            images_note += (f"; {len(unpredicted)} of them were not predicted ({example}; none {predicted_how}): "
                            "all their chromosomes count as misses")
            warnings.append(images_note)
    n_skipped = sum(log.counts.values())
    if n_skipped and n_skipped * 2 >= det_counts["detections_in_file"]:
        warnings.insert(0, (
            f"most detections were skipped ({n_skipped} of {det_counts['detections_in_file']}): check that "
            f"{res_source} belongs to {gt_source} (same image ids or file names, masks of the original "
            f"image size, categories 1-24)"
        ))

    n_masked = sum(truth.has_masks.values())
    skipped_types: dict[str, str] = {}
    run_types = []
    for t in iou_types:
        if t == "segm" and n_masked == 0:
            skipped_types[t] = "box-only set (no masks in the ground truth): box AP only"
        elif t == "segm" and not any(d["segmentation"] is not None for d in dets) and det_counts["detections_used"]:
            skipped_types[t] = "the results carry no masks: box AP only"
        else:
            run_types.append(t)
    if "segm" in run_types and n_masked < len(truth.images):
        warnings.append(
            f"mask AP is computed over the {n_masked} of {len(truth.images)} images that have masks; "
            f"box AP over all images"
        )
    n_det_nomask = sum(d["segmentation"] is None for d in dets)
    if "segm" in run_types and n_det_nomask:
        warnings.append(f"{n_det_nomask} detections without a mask are left out of mask AP")

    metrics: dict[str, dict] = {}
    for mode in modes:
        metrics[mode] = {t: _run_cocoeval(truth, dets, mode, t, max_dets) for t in run_types}

    names = _class_names()
    return {
        "ground_truth": gt_source,
        "results": res_source,
        "score_threshold": score_threshold,
        "threshold_note": _threshold_note(score_threshold, threshold_source),
        "images": images,
        "images_note": images_note,
        "threshold_rule": "a detection is kept when score >= score_threshold",
        "max_dets": int(max_dets),
        "max_dets_note": "COCOeval's maxDets: at most this many detections per image and category "
                         "(per image in binary mode)",
        "modes": list(modes),
        "mode_notes": {"multi": "24 classes: a detection counts only for its own class",
                       "binary": "class-agnostic: all 24 categories mapped to one 'chromosome' class"},
        "iou_types": run_types,
        "skipped_iou_types": skipped_types,
        "skipped_modes": skipped_modes,
        "box_only": truth.box_only,
        "counts": {
            "images": len(truth.images),
            "ground_truth_images": n_gt_images,
            "unpredicted_images": unpredicted_names if images == "predicted" else [],
            "images_with_masks": n_masked,
            "annotations": len(truth.annotations),
            "annotations_per_class": {names[c - 1]: n for c, n in
                                      sorted(Counter(a["category_id"] for a in truth.annotations).items())},
            **det_counts,
            "skipped": {"ground_truth": truth.skipped, "results": dict(log.counts)},
        },
        "metrics": metrics,
        "confusion": confusion_matrix(truth, dets, CONFUSION_IOU, max_dets),
        "warnings": warnings,
    }


def perfect_results(gt: Any) -> list[dict]:
    """The ground truth of ``gt`` (path or dict) as a results list with score 1.0 (crowd left out).

    Masks come out as compressed RLE (``counts`` a str), box-only annotations without a mask.
    Evaluating these against ``gt`` gives AP 1.0: a check of the evaluation and of a dataset file.
    """
    data, source = _load_json(gt, "ground-truth")
    truth = _GroundTruth(data, source)
    out = []
    for a in truth.annotations:
        if a["iscrowd"]:
            continue
        det = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
               "bbox": list(a["bbox"])}
        if a["segmentation"] is not None:
            det["segmentation"] = dict(a["segmentation"])
        for key in ("rbox", "endpoints"):
            if key in a:
                det[key] = a[key]
        out.append(det)
    return out


# --------------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.2f}"


def format_table(report: dict) -> str:
    """The headline numbers as a text table (AP x100, as in the paper's tables)."""
    lines = [
        f"ground truth: {report['ground_truth']}",
        f"results:      {report['results']}",
        f"score threshold {report['score_threshold']:g}: {report['threshold_note']}",
        f"images: {report.get('images_note', '')}",
        f"images {report['counts']['images']} (with masks {report['counts']['images_with_masks']}), "
        f"annotations {report['counts']['annotations']}, detections {report['counts']['detections_in_file']} "
        f"in file, {report['counts']['detections_used']} used, "
        f"{report['counts']['detections_below_threshold']} below threshold; maxDets {report['max_dets']}",
    ]
    for t, why in report["skipped_iou_types"].items():
        lines.append(f"{t}: not evaluated - {why}")
    for m, why in report.get("skipped_modes", {}).items():
        lines.append(f"{m}: not evaluated - {why}")
    lines.append("")
    lines.append(f"{'mode':<8} {'type':<5} {'AP':>6} {'AP@0.5':>7} {'AP@0.75':>8}   (x100)")
    for mode, by_type in report["metrics"].items():
        for t, m in by_type.items():
            lines.append(f"{mode:<8} {t:<5} {_pct(m['AP']):>6} {_pct(m['AP50']):>7} {_pct(m['AP75']):>8}")
    c = report["confusion"]
    acc = c["class_accuracy_of_matched"]
    lines.append("")
    lines.append(
        f"confusion ({c['iou']} IoU >= {c['iou_threshold']}): {c['matched']} matched, "
        f"{c['correct_class']} with the right class"
        + (f" ({100 * acc:.1f}%)" if acc is not None else "")
        + f", {c['missed']} missed, {c['false_detections']} unmatched detections"
    )
    e = c.get("endpoints") or {}
    if e.get("of_matched_instances"):
        lines.append(f"endpoints: {100 * e['share_of_matched']:.1f}% of the matched instances' endpoints within "
                     f"{e['radius_px']:g} px ({100 * e['share_of_all']:.1f}% of all), mean distance "
                     f"{e['mean_distance_px']:.1f} px")
    skipped = report["counts"]["skipped"]
    if any(skipped.values()):
        lines.append(f"skipped: {json.dumps(skipped)}")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """A Markdown summary: headline table, per-class AP, counts, warnings."""
    out = ["# chromoseg evaluation", ""]
    out.append(f"- ground truth: `{report['ground_truth']}`")
    out.append(f"- results: `{report['results']}`")
    out.append(f"- **score threshold: {report['score_threshold']:g}** - {report['threshold_note']} "
               f"({report['threshold_rule']})")
    out.append(f"- maxDets: {report['max_dets']} ({report['max_dets_note']})")
    if report.get("images_note"):
        out.append(f"- images: {report['images_note']}")
    cnt = report["counts"]
    out.append(f"- images: {cnt['images']} ({cnt['images_with_masks']} with masks); annotations: "
               f"{cnt['annotations']}; detections: {cnt['detections_in_file']} in file, "
               f"{cnt['detections_below_threshold']} below the threshold, {cnt['detections_used']} used")
    if report["box_only"]:
        out.append("- **box-only set**: only box AP is meaningful")
    for t, why in report["skipped_iou_types"].items():
        out.append(f"- `{t}` not evaluated: {why}")
    out += ["", "AP is COCO's AP over IoU 0.50:0.95 (x100, as in the paper's tables); AP@0.5 and AP@0.75 "
            "at one IoU. multi = 24 classes; binary = all classes merged into one.", ""]
    out.append("| mode | type | AP | AP@0.5 | AP@0.75 |")
    out.append("|---|---|---:|---:|---:|")
    for mode, by_type in report["metrics"].items():
        for t, m in by_type.items():
            out.append(f"| {mode} | {t} | {_pct(m['AP'])} | {_pct(m['AP50'])} | {_pct(m['AP75'])} |")
    multi = report["metrics"].get("multi", {})
    if multi:
        types = list(multi)
        out += ["", "## Per-class AP (multi-class, x100)", ""]
        out.append("| class | GT | " + " | ".join(f"{t} AP | {t} AP@0.5" for t in types) + " |")
        out.append("|---|---:|" + "---:|---:|" * len(types))
        for name in _class_names():
            first = multi[types[0]]["per_class"][name]
            cells = " | ".join(f"{_pct(multi[t]['per_class'][name]['AP'])} | {_pct(multi[t]['per_class'][name]['AP50'])}"
                               for t in types)
            out.append(f"| {name} | {first['gt']} | {cells} |")
    c = report["confusion"]
    acc = c["class_accuracy_of_matched"]
    out += ["", "## Confusion of matched instances", "",
            f"Class-agnostic greedy matching by score at {c['iou']} IoU >= {c['iou_threshold']}: "
            f"{c['matched']} matched, {c['correct_class']} with the right class"
            + (f" ({100 * acc:.1f}%)" if acc is not None else "")
            + f"; {c['missed']} ground-truth instances missed; {c['false_detections']} detections matched nothing. "
            "Full matrix: `confusion_matrix.csv` (rows ground truth, columns prediction)."]
    off = []
    n = len(c["rows"]) - 1
    for i in range(n):
        for j in range(n):
            if i != j and c["matrix"][i][j]:
                off.append((c["matrix"][i][j], c["rows"][i], c["cols"][j]))
    if off:
        off.sort(key=lambda x: -x[0])
        out += ["", "Most frequent confusions (ground truth -> predicted): "
                + ", ".join(f"{g}->{p} ({k})" for k, g, p in off[:10])]
    skipped = cnt["skipped"]
    if any(skipped.values()) or report["warnings"]:
        out += ["", "## Skipped input and warnings", ""]
        for side, d in skipped.items():
            for reason, k in d.items():
                out.append(f"- {side}: {k} skipped ({reason.replace('_', ' ')})")
        for w in report["warnings"]:
            out.append(f"- {w}")
    return "\n".join(out) + "\n"


def confusion_csv(report: dict) -> str:
    c = report["confusion"]
    rows = ["gt\\pred," + ",".join(c["cols"])]
    for name, counts in zip(c["rows"], c["matrix"]):
        rows.append(name + "," + ",".join(str(v) for v in counts))
    return "\n".join(rows) + "\n"


def write_report(report: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``summary.md`` and ``confusion_matrix.csv`` into ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "summary.md", "csv": out / "confusion_matrix.csv"}
        paths["json"].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        paths["markdown"].write_text(format_markdown(report), encoding="utf-8")
        paths["csv"].write_text(confusion_csv(report), encoding="utf-8")
    except OSError as err:
        raise EvaluationError(f"cannot write the report into {out}: {err}") from None
    return paths
