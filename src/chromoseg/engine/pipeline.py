"""One metaphase image through a model: the per-image steps of every prediction, in one place.

``chromoseg predict`` (its batch writer, :func:`chromoseg.engine.predict.predict_paths`, which only
writes), the Python API (``chromoseg.load_model().predict``), ``chromoseg demo``, the tables'
predictions and ``Predictor.__call__`` all run :func:`predict_images`. Its steps, in order:

1. checks -- :func:`check_image` (the callers, before, as they report a refusal differently): too
   large, a label map, a polarity that does not fit the model's stain (:func:`image_problem`);
2. stain -> model: a router (``--model auto``) gives each image the predictor of its stain
   (:func:`chromoseg.data.stain.image_stain`);
3. settings: the predictor's, with the call's overrides (``Predictor.settings``: a new object, the
   predictor's own unchanged);
4. scale and model call: ``Predictor.run_model`` (the pixel-size or framing rule, autocast; the
   model's heads are given the call's options, never changed);
5. instance selection: :func:`select_instances` (the paper's rule: top k, mask NMS, score threshold);
6. classes: :func:`assign_classes` (the crop classifier, then jointly per metaphase);
7. karyotype analysis (``analysis="karyotype"``): counts, ISCN-style summary, flags and the
   not-a-chromosome marks (:func:`chromoseg.karyotype.pipeline.karyotype_analysis`).

Each image gives an :class:`ImagePrediction`. Coordinates are image pixels; masks are
:class:`chromoseg.ops.MaskWindow` (each in its own window of the image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chromoseg.engine.amp import autocast_context
from chromoseg.engine.settings import PAPER_RULE, InferenceConfig

#: what :func:`predict_images` analyses after the classes: nothing, only the not-a-chromosome marks
#: (``predict --no-karyogram``: results.json still says what is not a chromosome), or the karyotype
ANALYSES = (None, "not-chromosomes", "karyotype")


@dataclass
class ImagePrediction:
    """One image's prediction.

    ``instances``: dicts by decreasing score (:func:`select_instances`' keys; ``mask`` a
    :class:`~chromoseg.ops.MaskWindow`; ``not_chromosome`` = why, on those the not-a-chromosome rule
    leaves out, when analysed); ``framing``: how the image reached the network (``frame``, ``scale``,
    ``scale_rule``: ``chromoseg.engine.predict.framing_of``); ``settings``: what the instances were
    made with; ``predictor``: the predictor that made them (with a router, the one of the image's
    stain); ``analysis``: the karyotype analysis (``counts``, ``flags``, ``truth``,
    ``truth_summary``, ``not_chromosomes``; only ``not_chromosomes`` with
    ``analysis="not-chromosomes"``), None when not asked for."""

    instances: list[dict]
    framing: dict
    settings: InferenceConfig
    predictor: Any = field(repr=False)
    analysis: dict | None = None

    @property
    def model(self) -> dict:
        """Which model made it, as ``images.json`` records it (name, file, SHA-256 prefix, stain)."""
        record = getattr(self.predictor, "model_record", None)
        return record() if record is not None else {}


@torch.no_grad()
def predict_images(predictor, images: list[np.ndarray], pixel_sizes: list | None = None, *,
                   analysis: str | None = None, truths: list | None = None, **overrides) -> list[ImagePrediction]:
    """Each image through steps 2-7 of the module docstring (the caller has checked it: step 1).

    ``predictor``: a :class:`~chromoseg.engine.predict.Predictor` (all images in one model call) or a
    router with ``predictor_for(stain)`` (:class:`~chromoseg.engine.predict.StainRouter`: each image
    alone, by the predictor of its stain). ``images``: 2-D grey arrays (uint8 / uint16);
    ``pixel_sizes``: each image's micrometres per pixel or None (the scale rule of a model that records
    the pixel size it was trained at); ``analysis``: one of :data:`ANALYSES`; ``truths``: each image's
    known karyotype (the analysis flags a summary that differs) or None; ``overrides``: settings for this
    call only (``Predictor.settings``: a load-time setting is a ``ValueError``, an unknown one a
    ``TypeError``, before any image)."""
    from chromoseg.data.stain import image_stain

    check_image_list(images)
    if analysis not in ANALYSES:
        raise ValueError(f"analysis {analysis!r}: use one of {ANALYSES}")
    pixel_sizes = list(pixel_sizes) if pixel_sizes is not None else [None] * len(images)
    truths = list(truths) if truths is not None else [None] * len(images)
    route = getattr(predictor, "predictor_for", None)
    if route is None:  # one model: one call for all the images
        groups = [(predictor, list(range(len(images))))]
        predictor.settings(**overrides)
    else:  # each image by the model of its stain (loaded when its first image comes)
        for p in getattr(predictor, "predictors", {}).values():  # a setting a loaded model refuses: now
            p.settings(**overrides)
        groups = [(None, [k]) for k in range(len(images))]
    out: list[ImagePrediction | None] = [None] * len(images)
    for p, idx in groups:
        p = p if p is not None else route(image_stain(images[idx[0]]))
        cfg = p.settings(**overrides)
        px = [pixel_sizes[k] for k in idx]
        raw, tensors, framing = p.run_model([images[k] for k in idx], px if any(v is not None for v in px) else None, cfg)
        for k, det, t, how in zip(idx, raw, tensors, framing):
            insts = assign_classes(p.model, t[0].cpu(), select_instances(det, cfg), cfg, p.device)
            out[k] = ImagePrediction(insts, how, cfg, p, analyse(insts, analysis, truths[k]))
    return out


def analyse(instances: list[dict], analysis: str | None, truth: str | None = None) -> dict | None:
    """Step 7 on one image's final instances (marked in place): see :data:`ANALYSES`. The karyotype
    code takes full-size masks: they exist for this call only."""
    if analysis is None:
        return None
    from chromoseg.karyotype.pipeline import karyotype_analysis, mark_not_chromosomes
    from chromoseg.ops import swap_in_full_masks

    with swap_in_full_masks(instances):
        if analysis == "karyotype":
            return karyotype_analysis(instances, truth=truth)
        return {"not_chromosomes": mark_not_chromosomes(instances)}


def check_image(predictor, arr: np.ndarray, path=None, python: bool = False) -> tuple[str, str] | None:
    """Step 1: why ``predictor`` does not predict the image, as ``(kind, message)``, else None
    (:func:`image_problem` with the predictor's stain; a router's is None: every image finds its model)."""
    return image_problem(arr, getattr(predictor, "stain", None), path, python=python)


def assign_classes(model, image: torch.Tensor, instances: list[dict], cfg: InferenceConfig,
                   device: str | torch.device = "cpu") -> list[dict]:
    """Step 6: the final instances' classes by ``cfg``: the crop classifier's where ``model`` has one
    (``cfg.crop_classifier``; ``image``: the ``[H, W]`` float image in [0, 1]), then jointly per
    metaphase with ``cfg.classes == "karyotype"`` (:func:`chromoseg.karyotype.assign.assign_instances`)."""
    clf = getattr(model, "crop_classifier", None)
    if clf is not None and cfg.crop_classifier:
        with autocast_context(cfg.amp, torch.device(device)):
            instances = reclassify(clf, image, instances)
    if cfg.classes == "karyotype":
        from chromoseg.karyotype.assign import assign_instances

        instances = assign_instances(instances)
    elif cfg.classes != "independent":
        raise ValueError(f"classes {cfg.classes!r}: use 'independent' or 'karyotype'")
    return instances


def select_instances(det: dict, cfg: InferenceConfig) -> list[dict]:
    """Turn one image's raw model output into instances by the paper's rule.

    ``det``: ``boxes`` [N,4], ``labels``, ``scores``, the mask probabilities -- ``mask_windows`` (one
    :class:`~chromoseg.ops.MaskWindow` per detection: its box's window of the image, what a
    :class:`Predictor`'s model gives) or ``masks`` [N,1,H,W] at the image's size --, optional ``rboxes``
    and ``endpoints``, ``class_scores`` [N,24], ``hboxes`` [N,4] (the H branch's boxes). Returns dicts with
    ``mask`` (a bool :class:`~chromoseg.ops.MaskWindow`, cut to the mask's pixels: ``full_mask(inst["mask"])``
    or ``np.asarray`` gives the full-size bool array), ``bbox`` (xywh: the H branch's box where the
    model has one -- the convention of the boxes it was trained on, e.g. an annotator's margin -- else
    the mask's bounds), ``rbox``, ``endpoints``, ``category_id``, ``score`` (and ``class_scores``), by
    decreasing score. Areas, mask NMS and the masks' geometry are computed in the windows.

    ``cfg``: settings already resolved (a predictor's, or
    :func:`chromoseg.engine.settings.resolve_settings`'s); one with a rule setting left None is a
    ``ValueError`` (they are resolved once, before the call, not completed here).
    """
    from chromoseg.data.coco import mask_bbox
    from chromoseg.ops import (MaskWindow, mask_to_rbox, snap_endpoints, window_areas, window_endpoints, window_nms,
                               window_of)

    unset = [k for k in PAPER_RULE if getattr(cfg, k) is None]
    if unset:
        raise ValueError(f"select_instances takes resolved settings ({', '.join(unset)} unset): pass a predictor's "
                         "cfg or chromoseg.engine.settings.resolve_settings(recommended, overrides)")
    cand = det["scores"].detach().float().cpu()  # each candidate's probability of its own class
    labels = det["labels"].detach().cpu()
    scores = rank = cand
    if "class_scores" in det:
        # a detection's class is the most probable of the 24 it reports (one RoI gives a candidate per
        # class above the heads' threshold; its likeliest class's candidate ranks first, mask NMS
        # removes the others)
        cs = det["class_scores"].detach().float().cpu()
        labels = cs.argmax(1) + 1
        scores = cs.sum(1).clamp(max=1.0) if cfg.score == "object" else cs.amax(1)
        rank = scores + 1e-3 * cand
    elif cfg.score == "object":
        raise ValueError("score='object' needs a model whose detections carry class_scores (rotated variants)")
    order = torch.argsort(rank, descending=True)[: cfg.top_k]
    if order.numel() == 0:
        return []
    # each candidate's mask thresholded in its own window (a model called without windows: its
    # full-size masks thresholded once, then cut to their windows)
    if "mask_windows" in det:
        wins = {i: det["mask_windows"][i].threshold(cfg.mask_threshold) for i in order.tolist()}
    else:
        binary = det["masks"][:, 0].detach().cpu() > cfg.mask_threshold
        wins = {i: window_of(binary[i].numpy()) for i in order.tolist()}
        del binary
    order = order[window_areas([wins[i] for i in order.tolist()]) >= cfg.min_area]
    if cfg.mask_nms_iou and cfg.mask_nms_iou > 0 and order.numel():
        sub = order.sort().values  # window_nms ranks by the scores itself
        order = sub[window_nms([wins[i] for i in sub.tolist()], rank[sub], cfg.mask_nms_iou)]
    order = order[scores[order] >= cfg.score_threshold]
    out = []
    for i in order.tolist():
        m: MaskWindow = wins[i]
        if "rboxes" in det:
            rbox = det["rboxes"][i].tolist()
        else:  # the window's rectangle, moved to the image
            rbox = mask_to_rbox(m.data).tolist()
            if any(rbox):
                rbox[0], rbox[1] = rbox[0] + m.x0, rbox[1] + m.y0
        if "endpoints" in det:  # the ED heatmap's; an end it is unsure of goes to the mask's skeleton end
            ends = det["endpoints"][i].tolist()
            if cfg.endpoint_snap > 0 and m.area and det.get("endpoint_heatmap") is not None:
                ends = snap_endpoints(ends, m, det.get("endpoint_heatmap"), min_peak=cfg.endpoint_snap)[0].tolist()
        else:  # the mask's skeleton ends (zeros for an empty mask)
            ends = window_endpoints(m).tolist()
        if "hboxes" in det:  # the box branch's own box, in the convention of the training data's boxes
            x0, y0, x1, y1 = (float(v) for v in det["hboxes"][i])
            bbox = [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]
        else:
            bbox = mask_bbox(m.data)
            if m.area:
                bbox[0], bbox[1] = bbox[0] + m.x0, bbox[1] + m.y0
        inst = {"mask": m, "bbox": bbox, "rbox": [float(v) for v in rbox],
                "endpoints": [[float(x), float(y)] for x, y in ends],
                "category_id": int(labels[i]), "score": float(scores[i])}
        if "class_scores" in det:  # the detection's RoI's 24 class probabilities (flags unsure classes)
            inst["class_scores"] = [float(v) for v in det["class_scores"][i]]
        out.append(inst)
    return out


def reclassify(classifier, image: torch.Tensor, instances: list[dict]) -> list[dict]:
    """The instances with classes from the crop classifier: ``class_scores`` become its
    probabilities times the detection's chromosome probability (their sum stays 1 - P(background)
    where the RoI head gave one), ``category_id`` their argmax; the RoI head's are kept as
    ``class_scores_roi_head``."""
    if not instances:
        return instances
    masks = [inst["mask"] for inst in instances]  # bool windows (or full masks): each crop cut from its own
    rboxes = torch.tensor([inst["rbox"] for inst in instances], dtype=torch.float32)
    probs = classifier.classify(image, masks, rboxes).float()
    out = []
    for inst, p in zip(instances, probs):
        inst = dict(inst)
        obj = sum(inst["class_scores"]) if inst.get("class_scores") else 1.0
        if inst.get("class_scores"):
            inst["class_scores_roi_head"] = inst["class_scores"]
        inst["class_scores"] = [float(v) * min(obj, 1.0) for v in p]
        inst["category_id"] = int(p.argmax()) + 1
        out.append(inst)
    return out


def check_image_list(images) -> None:
    """Raise a one-line ``TypeError`` unless ``images`` is a list (or tuple) of 2-D arrays: one bare
    array would be iterated row by row, each row taken for an image."""
    if not isinstance(images, (list, tuple)):
        shape = getattr(images, "shape", None)
        what = f"one array of shape {tuple(shape)}" if shape is not None else type(images).__name__
        raise TypeError(f"a predictor takes a list of 2-D grey images, got {what}: pass [image]")
    for k, a in enumerate(images):
        if getattr(a, "ndim", None) != 2:
            raise TypeError(f"image {k}: a predictor takes 2-D grey images, got "
                            f"{getattr(a, 'shape', type(a).__name__)}")


#: images with more pixels are refused (one line in problems.json). Each detection's mask is kept in
#: its own window (never pasted at the image's size), so peak memory grows by about 60 bytes per pixel
#: (the image, the karyotype analysis's full-size masks of the final chromosomes): measured 1.07 GB at
#: 0.33 MP, 1.47 GB at 2500 x 2500, 1.82 GB at 4000 x 3206 (47 chromosomes;
#: benchmarks/results/predict_memory.md), so about 3.5 GB at this limit, 40 MP (e.g. 7300 x 5475)
MAX_IMAGE_PIXELS = 40_000_000


def image_problem(arr: np.ndarray, stain: str | None, path=None, python: bool = False) -> tuple[str, str] | None:
    """Why an image is not predicted, as ``(kind, message)``, else None: the one rule of ``chromoseg
    predict`` and ``chromoseg.load_model().predict``. In order: ``"too-large"`` (over
    :data:`MAX_IMAGE_PIXELS`), ``"not-a-metaphase"`` (a label map or mask, or by ``path``'s name one of
    predict's outputs: :func:`not_a_metaphase`), ``"wrong-stain"`` (its polarity does not fit the
    model's ``stain``: :func:`polarity_problem`; ``python``: the message names the Python call)."""
    if arr.size > MAX_IMAGE_PIXELS:
        return "too-large", (f"image too large ({arr.shape[1]}x{arr.shape[0]} px, {arr.size / 1e6:.1f} MP; the limit "
                             f"is {MAX_IMAGE_PIXELS / 1e6:.1f} MP): crop or downscale it")
    why = not_a_metaphase(path if path is not None else "", arr)
    if why:
        return "not-a-metaphase", why
    why = polarity_problem(stain, arr, python=python)
    if why:
        return "wrong-stain", why
    return None


def polarity_problem(stain: str | None, arr: np.ndarray, python: bool = False) -> str | None:
    """A message when the image's polarity does not fit the model's stain, else None (a stain of no
    polarity rule, or None: None). It names the model of the image's stain as a command-line user gives
    it (``--model gband``), or with ``python`` as a Python user does (``chromoseg.load_model("gband")``)."""
    from chromoseg.data.stain import DARK_ON_LIGHT, image_stain
    from chromoseg.weights import BY_STAIN

    if stain not in DARK_ON_LIGHT:
        return None
    seen = image_stain(arr)
    if seen == stain:
        return None
    name = BY_STAIN[seen]
    use = (f'use chromoseg.load_model("{name}") (or chromoseg.load_model("auto"))' if python
           else f"use --model {name} (or --model auto)")
    if DARK_ON_LIGHT[seen]:
        return ("the image is dark on a light background (G-band or brightfield), but this model was trained on "
                f"fluorescence (bright chromosomes on dark: DAPI, Q-band): {use}")
    return ("the image is bright on a dark background (fluorescence), but this model was trained on "
            f"dark-on-light (G-band) images: {use}")


#: file names chromoseg predict gives its own outputs: never taken for inputs in a folder or glob
OUTPUT_SUFFIXES = (".labels.tif", ".overlay.png", ".karyogram.png")
#: an image whose pixels take at most this many values, mostly 0, is a label map or a mask
LABEL_MAP_MAX_VALUES = 64


def not_a_metaphase(path, arr: np.ndarray | None = None) -> str | None:
    """Why an image file is not a metaphase image, else None. The rule (README, *Inputs*):

    - a file named as chromoseg predict names its outputs (``*.labels.tif``, ``*.overlay.png``,
      ``*.karyogram.png``) is one of its outputs;
    - an image whose pixels take at most ``LABEL_MAP_MAX_VALUES`` (64) distinct values, the most
      common of them 0, is a label map, class map or mask (e.g. the M-FISH expert's ``*K.tif``: values
      0-24 and 255, 0 on over 90 % of the pixels). A metaphase photograph has far more grey levels
      (every M-FISH DAPI, CIL G-band and BioImLab image has over 100)."""
    name = Path(path).name.lower()
    for suffix in OUTPUT_SUFFIXES:
        if name.endswith(suffix):
            return f"an output of chromoseg predict ({suffix}), not a metaphase image"
    if arr is None or arr.dtype.kind not in "ui" or arr.size == 0:
        return None
    flat = np.asarray(arr).ravel()
    if flat.min() < 0 or flat.max() > 65535:
        return None
    counts = np.bincount(flat.astype(np.int64, copy=False))
    values = np.flatnonzero(counts)
    if values.size > LABEL_MAP_MAX_VALUES or int(np.argmax(counts)) != 0:
        return None
    shown = ", ".join(str(v) for v in values[:8]) + (", ..." if values.size > 8 else "")
    return (f"a label map or mask, not a metaphase image: its pixels take only {values.size} value(s) ({shown}), "
            f"0 on {100 * counts[0] / flat.size:.0f} % of them")
