"""Prediction: images in, chromosome instances out (API behind ``chromoseg predict``).

The paper's inference rule is the default (section III): masks of the top 100 detections, mask-level
NMS to remove redundant results, then the confidence threshold 0.5. Each step is configurable in
:class:`InferenceConfig` (:mod:`chromoseg.engine.settings`: the settings, the paper's rule and how a
model file's recommendations and the caller's choices are resolved into the settings a call uses).
"""
from __future__ import annotations


import contextlib
import json
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from chromoseg.data.io import ImageReadError, image_record, read_image_with_info, to_float01
from chromoseg.data.report import ProblemLog
from chromoseg.engine.amp import autocast_context, float32_outputs
from chromoseg.engine.settings import (LOAD_TIME_SETTINGS, PAPER_SCORE_THRESHOLD, InferenceConfig,  # noqa: F401
                                       resolve_settings)

log = logging.getLogger(__name__)


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
    """
    from chromoseg.data.coco import mask_bbox
    from chromoseg.ops import MaskWindow, mask_endpoints, mask_to_rbox, window_areas, window_nms, window_of

    cfg = resolve_settings(None, cfg)  # settings left unset: the paper's rule (a predictor's are complete)
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
        if "endpoints" in det:
            ends = det["endpoints"][i].tolist()
        elif not m.area:
            ends = [[0.0, 0.0], [0.0, 0.0]]
        else:  # the skeleton's ends in the window with the 1-pixel margin the image gives, moved to it
            H, W = m.image_size
            x0, y0, x1, y1 = m.bounds
            px0, py0 = min(x0, 1), min(y0, 1)
            pad = np.pad(m.data, ((py0, min(H - y1, 1)), (px0, min(W - x1, 1))))
            ends = (np.asarray(mask_endpoints(pad)) + np.float32([x0 - px0, y0 - py0])).tolist()
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


def instances_to_results(instances: list[dict], image_id: int | str, file_name: str) -> list[dict]:
    """COCO results entries (RLE masks) for one image's instances. An instance the not-a-chromosome
    rule left out (marked ``inst["not_chromosome"] = why`` by
    :func:`chromoseg.karyotype.pipeline.analyse_metaphase` or ``mark_not_chromosomes``) carries
    ``"not_chromosome": why``; a chromosome carries no such key (pycocotools ignores it)."""
    from chromoseg.ops import window_of, window_rle

    wins = [window_of(inst["mask"]) for inst in instances]  # a full mask too: RLE and area from its window
    return [{"image_id": image_id, "file_name": file_name, "category_id": inst["category_id"],
             "score": round(inst["score"], 5), "segmentation": window_rle(win),
             "bbox": [round(v, 2) for v in inst["bbox"]], "rbox": [round(v, 3) for v in inst["rbox"]],
             "endpoints": [[round(x, 2), round(y, 2)] for x, y in inst["endpoints"]], "area": win.area,
             **({"class_scores": [round(v, 4) for v in inst["class_scores"]]} if "class_scores" in inst else {}),
             **({"not_chromosome": str(inst["not_chromosome"])} if inst.get("not_chromosome") else {})}
            for inst, win in zip(instances, wins)]


def label_image(instances: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """uint16 instance label image: 0 background, k = the k-th instance (by decreasing score); where
    instances overlap, the higher-scoring one keeps the pixel. ``mask``: a full bool mask or a
    :class:`~chromoseg.ops.MaskWindow`."""
    from chromoseg.ops import MaskWindow

    lab = np.zeros(shape, np.uint16)
    for k in range(len(instances), 0, -1):  # lowest score first, so higher scores overwrite
        m = instances[k - 1]["mask"]
        if isinstance(m, MaskWindow):  # written in its window
            x0, y0, x1, y1 = m.bounds
            lab[y0:y1, x0:x1][np.asarray(m.data, bool)] = k
        else:
            lab[m] = k
    return lab


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


class Predictor:
    """A model plus the inference rule; ``predictor(image_arrays)`` returns instances per image.

    ``cfg``: the caller's settings (an :class:`InferenceConfig` or a mapping of its fields; None
    values and no ``cfg`` at all: the model's recommendations); ``recommended``: the model file's
    recommendations (its metadata). They are resolved once, here, into :attr:`cfg`
    (:func:`chromoseg.engine.settings.resolve_settings`); the caller's object is not changed."""

    def __init__(self, model, cfg: InferenceConfig | dict | None = None, device: str | torch.device = "cpu",
                 recommended: dict | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        transform = getattr(model, "transform", None)
        #: what the model recommends: its file's recommendations (``default_score``, ...: the metadata
        #: of a ``chromoseg export`` file) and ``frame``, how it was trained
        self.recommended: dict = {**dict(recommended or {}), "frame": bool(getattr(transform, "frame", False))}
        #: the settings of every call that does not override them, complete (no None but ``proposals``)
        self.cfg: InferenceConfig = resolve_settings(self.recommended, cfg)
        if hasattr(transform, "mask_windows"):  # each detection's mask in its box's window, never full-size
            transform.mask_windows = True
        if self.cfg.frame != self.recommended["frame"]:
            if transform is None or not hasattr(transform, "frame"):
                raise ValueError("this model cannot frame its images (frame=True is for the R-CNN variants)")
            transform.frame = self.cfg.frame
        #: what the model was trained on ("fluorescence", "brightfield") or None; images of the other
        #: polarity are refused (:func:`image_problem`)
        self.stain: str | None = None
        #: per image of the last call: how it reached the network (:func:`framing_of`)
        self.last_framing: list[dict] = []
        #: per image of the last call: the settings it was predicted with
        self.last_settings: list[InferenceConfig] = []
        #: the model as asked for (a shipped name or a path) and the file it was read from; None when
        #: the predictor was built around a model object
        self.model_name: str | None = None
        self.model_file: str | None = None
        self._model_record: dict | None = None

    @property
    def recommended_score_threshold(self) -> float:
        """The score threshold the model file recommends (export --default-score-threshold), else the
        paper's; benchmarks predict at threshold 0 and count at this one."""
        return resolve_settings(self.recommended).score_threshold

    def settings(self, **overrides) -> InferenceConfig:
        """The settings of a call with ``overrides`` (fields of :class:`InferenceConfig`; None: the model
        file's recommendation), a new object: the predictor's own :attr:`cfg` is not changed. The
        settings the model was loaded with (:data:`~chromoseg.engine.settings.LOAD_TIME_SETTINGS`:
        ``top_k``, ``score``, ``proposals``, ``frame``) cannot change per call (``ValueError``)."""
        if not overrides:
            return self.cfg
        new = resolve_settings(self.recommended, {**asdict(self.cfg), **overrides})
        fixed = [k for k in LOAD_TIME_SETTINGS if getattr(new, k) != getattr(self.cfg, k)]
        if fixed:
            raise ValueError(f"{fixed[0]} is fixed when the model is loaded ({fixed[0]}={getattr(self.cfg, fixed[0])!r}); "
                             f"load it with {fixed[0]}={getattr(new, fixed[0])!r} instead (chromoseg.load_model(..., "
                             f"{fixed[0]}=...)). Per call: "
                             + ", ".join(f.name for f in fields(InferenceConfig) if f.name not in LOAD_TIME_SETTINGS))
        return new

    @property
    def last_predictors(self) -> list["Predictor"]:
        """The predictor of each image of the last call (here always this one; see :class:`StainRouter`)."""
        return [self] * len(self.last_framing)

    def model_record(self) -> dict:
        """Which model this is, as ``images.json`` records it per image: ``name`` (as asked for),
        ``file``, ``sha256`` (the file's first 16 hex digits: tells two versions of one file apart) and
        ``stain``."""
        if self._model_record is None:
            import hashlib

            digest = None
            if self.model_file and Path(self.model_file).is_file():
                h = hashlib.sha256()
                with open(self.model_file, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                digest = h.hexdigest()[:16]
            self._model_record = {"name": self.model_name, "file": self.model_file, "sha256": digest}
        return {**self._model_record, "stain": self.stain}

    @classmethod
    def from_checkpoint(cls, path=None, cfg: InferenceConfig | dict | None = None, device="cpu") -> "Predictor":
        """``path``: a ``chromoseg train`` checkpoint, a ``chromoseg export`` file, a shipped model's
        name (``mfish``) or None for the default shipped model (see :mod:`chromoseg.weights`). ``cfg``:
        the caller's settings; what it leaves None (all, without ``cfg``) is the file's recommendation,
        else the paper's rule."""
        from chromoseg.engine.checkpoint import load_model, read_metadata
        from chromoseg.weights import DEFAULT, resolve_model

        name = str(path) if path is not None else None
        path = resolve_model(path)
        meta = read_metadata(path)  # an export's recommendations and stain ({} for a checkpoint)
        # what the model is built with (the same rule the predictor's settings come from): enough
        # candidates for the top-k rule (the score threshold is applied after mask NMS); object scores:
        # the heads give one candidate per RoI (its likeliest class, 1 - P(background)), so a
        # chromosome of unsure class is kept and top_k counts chromosomes, not runner-up classes
        build = resolve_settings(meta, cfg)
        rpn = {}
        if build.proposals is not None:
            rpn = dict(rpn_post_nms_top_n_test=build.proposals, rpn_pre_nms_top_n_test=max(600, build.proposals))
        model = load_model(path, device=device, box_detections_per_img=build.top_k, box_score_thresh=0.05,
                           box_score_mode=build.score, box_rescore=build.rescore, **rpn)
        try:
            pred = cls(model, cfg, device, recommended=meta)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        # an export records its stain; a checkpoint's config tells it by its input inversion
        pred.stain = meta.get("stain") or ("brightfield" if model.config.get("invert") else None)
        pred.model_name, pred.model_file = name or DEFAULT, str(path)
        return pred

    @contextlib.contextmanager
    def _masks_only_above_threshold(self, cfg: InferenceConfig):
        """With object scores the rule's last step drops detections under the score threshold; a
        detection more than 2e-3 under it can neither pass it nor, ranked below every one that does
        (rank = score + 1e-3 x candidate score), suppress one in mask NMS: for the duration of this
        predictor's own model call the RoI heads drop it before the mask head (``mask_score_thresh``),
        which gives the same instances for fewer masks. Afterwards the heads make every mask again
        (``chromoseg.engine.diagnose`` calls the model itself and needs those under the threshold)."""
        heads = getattr(self.model, "roi_heads", None)
        thr = cfg.score_threshold
        use = (hasattr(heads, "mask_score_thresh") and cfg.score == "object"
               and getattr(heads, "score_mode", None) == "object" and thr is not None)
        if not use:
            yield
            return
        heads.mask_score_thresh = max(float(thr) - 2e-3, 0.0)
        try:
            yield
        finally:
            heads.mask_score_thresh = 0.0

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray], pixel_sizes=None, **overrides) -> list[list[dict]]:
        """Instances of each image. ``overrides``: settings for this call only (see :meth:`settings`).
        ``pixel_sizes``: each image's micrometres per pixel (None: unknown), for a model that records the
        pixel size it was trained at (``cfg.train_pixel_size_um``)."""
        from chromoseg.models.transform import input_scale

        check_image_list(images)
        cfg = self.settings(**overrides)
        tensors = [torch.from_numpy(to_float01(a))[None].to(self.device) for a in images]
        with self._masks_only_above_threshold(cfg), autocast_context(cfg.amp, self.device), \
                input_scale(self.model, pixel_sizes, cfg.train_pixel_size_um):
            outputs = [float32_outputs(o) for o in self.model(tensors)]
        size = getattr(getattr(self.model, "transform", None), "image_size", None)
        self.last_framing = [framing_of(o.get("frame"), a.shape[-2:], size, o.get("scale_rule"), o.get("scale_note"))
                             for o, a in zip(outputs, images)]
        self.last_settings = [cfg] * len(images)
        return [self.classes_of(t[0].cpu(), select_instances(o, cfg), cfg) for t, o in zip(tensors, outputs)]

    def classes_of(self, image: torch.Tensor, instances: list[dict], cfg: InferenceConfig | None = None) -> list[dict]:
        """The final instances' classes by the settings (``cfg``, else the predictor's): the crop
        classifier's when the model has one (``cfg.crop_classifier``), then jointly per metaphase with
        ``cfg.classes == "karyotype"``."""
        cfg = cfg or self.cfg
        clf = getattr(self.model, "crop_classifier", None)
        if clf is not None and cfg.crop_classifier:
            with autocast_context(cfg.amp, self.device):
                instances = reclassify(clf, image, instances)
        if cfg.classes == "karyotype":
            from chromoseg.karyotype.assign import assign_instances

            instances = assign_instances(instances)
        elif cfg.classes != "independent":
            raise ValueError(f"classes {cfg.classes!r}: use 'independent' or 'karyotype'")
        return instances


def framing_of(frame, image_hw, input_hw, rule: str | None = None, note: str | None = None) -> dict:
    """How an image reached the network: ``frame`` (x0, y0, x1, y1: the crop around the metaphase, image
    pixels; the whole image when not framed), ``scale`` (network input pixels per image pixel, along x)
    and ``scale_rule`` (what chose them: "pixel size", "framing" or "whole image"; ``scale_note``: why
    the pixel size was not used where the model records its own)."""
    H, W = (int(v) for v in image_hw)
    box = [int(v) for v in frame.tolist()] if frame is not None else [0, 0, W, H]
    scale = (float(input_hw[1]) / max(box[2] - box[0], 1)) if input_hw else 1.0
    rule = rule or ("framing" if frame is not None else "whole image")
    return {"frame": box, "scale": round(scale, 5), "scale_rule": rule, **({"scale_note": note} if note else {})}


class StainRouter:
    """``--model auto`` (the default of ``chromoseg predict`` and ``chromoseg.load_model()``): one
    predictor per stain, chosen per image by its polarity (:func:`chromoseg.data.io.light_background`:
    dark on light -> ``"brightfield"``, else ``"fluorescence"``). Used like a :class:`Predictor` by
    :func:`predict_paths`; each model keeps its own recommendations (score, classes). ``predictors``:
    stain -> predictor; ``loaders``: stain -> a function that makes it, called the first time an image of
    that stain comes (a folder of DAPI images never loads the G-band model)."""

    stain = None  # every image finds its model: none is refused for its polarity

    def __init__(self, predictors: dict | None = None, loaders: dict | None = None):
        self.predictors = dict(predictors or {})
        self.loaders = {k: v for k, v in (loaders or {}).items() if k not in self.predictors}
        if not self.predictors and not self.loaders:
            raise ValueError("a stain router needs a predictor for at least one stain")
        self._last_framing: list[dict] = []
        self._last_predictors: list[Predictor] = []
        self.last_settings: list[InferenceConfig] = []

    @classmethod
    def shipped(cls, cfg: InferenceConfig | dict | None = None, device="cpu") -> "StainRouter":
        """The shipped model of each stain (:data:`chromoseg.weights.BY_STAIN`), each with the
        caller's settings over its own recommendations, loaded when its first image comes (settings
        that no model takes are refused here, before any image)."""
        from functools import partial

        from chromoseg.weights import BY_STAIN, shipped_path

        resolve_settings(None, cfg)  # an unknown or impossible setting: TypeError / ValueError now
        for name in BY_STAIN.values():
            shipped_path(name)  # a shipped file missing from this installation: said now
        return cls(loaders={stain: partial(Predictor.from_checkpoint, name, cfg, device)
                            for stain, name in BY_STAIN.items()})

    def predictor_for(self, stain: str) -> Predictor:
        """The predictor of ``stain``, loaded now if it was not yet."""
        if stain not in self.predictors:
            if stain not in self.loaders:
                raise ValueError(f"no model for {stain} images here (models for: "
                                 f"{', '.join(sorted({*self.predictors, *self.loaders}))})")
            self.predictors[stain] = self.loaders.pop(stain)()
        return self.predictors[stain]

    @property
    def cfg(self) -> InferenceConfig:  # what images.json records: the fluorescence model's rule
        stains = [*self.predictors, *self.loaders]
        return self.predictor_for("fluorescence" if "fluorescence" in stains else stains[0]).cfg

    def stain_of(self, arr: np.ndarray) -> str:
        from chromoseg.data.io import light_background

        return "brightfield" if light_background(arr) else "fluorescence"

    @property
    def last_framing(self) -> list[dict]:
        return self._last_framing

    @property
    def last_predictors(self) -> list[Predictor]:
        """The predictor each image of the last call went to."""
        return self._last_predictors

    def __call__(self, images: list[np.ndarray], pixel_sizes=None, **overrides) -> list[list[dict]]:
        """Each image by the predictor of its stain; ``overrides``: settings for this call only, over
        each model's own (:meth:`Predictor.settings`); ``pixel_sizes`` as :meth:`Predictor.__call__`'s."""
        check_image_list(images)
        for p in self.predictors.values():  # a setting a loaded model refuses fails before any image
            p.settings(**overrides)
        out, self._last_framing, self._last_predictors, self.last_settings = [], [], [], []
        for k, a in enumerate(images):
            p = self.predictor_for(self.stain_of(a))
            out.append(p([a], pixel_sizes=[pixel_sizes[k]] if pixel_sizes is not None else None, **overrides)[0])
            self._last_framing += p.last_framing
            self._last_predictors.append(p)
            self.last_settings += p.last_settings
        return out


#: seconds between rewrites of a predict run's collected files (results.json, images.json, report)
SAVE_EVERY_S = 10.0

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
    """A message when the image's polarity does not fit the model's stain, else None. It names the
    right model as a command-line user gives it (``--model gband``), or with ``python`` as a Python
    user does (``chromoseg.load_model("gband")``)."""
    from chromoseg.data.io import light_background

    if stain is None:
        return None

    def use(name: str) -> str:
        if python:
            return f'use chromoseg.load_model("{name}") (or chromoseg.load_model("auto"))'
        return f"use --model {name} (or --model auto)"

    light = light_background(arr)
    if stain == "fluorescence" and light:
        return ("the image is dark on a light background (G-band or brightfield), but this model was trained on "
                f"fluorescence (bright chromosomes on dark: DAPI, Q-band): {use('gband')}")
    if stain == "brightfield" and not light:
        return ("the image is bright on a dark background (fluorescence), but this model was trained on "
                f"dark-on-light (G-band) images: {use('mfish')}")
    return None


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


def _read_done(out_dir: Path) -> tuple[list[dict], list[dict], set[str]]:
    """(results, images) of an earlier run into ``out_dir`` and the file names it finished. An image
    entry of a file written before images recorded their own model and settings gets the file's."""
    try:
        meta = json.loads((out_dir / "images.json").read_text())
        results = json.loads((out_dir / "results.json").read_text())
    except (OSError, ValueError):
        return [], [], set()
    images = [im for im in meta.get("images", []) if isinstance(im, dict) and "file_name" in im]
    for im in images:
        for key in ("model", "inference"):
            if key not in im and isinstance(meta.get(key), dict):
                im[key] = meta[key]
    return results, images, {im["file_name"] for im in images}


def describe_inference(inference: dict | None, model: dict | None = None) -> str:
    """One readable line of the settings an image was predicted with (``images.json``'s per-image
    ``inference`` and ``model``), for the report's header and predict's notes."""
    if not isinstance(inference, dict):
        return "settings not recorded"
    i = inference
    parts = []
    if isinstance(model, dict) and model.get("name"):
        parts.append(f"model {model['name']}" + (f" ({model['stain']})" if model.get("stain") else ""))
    thr = i.get("score_threshold")
    parts.append(f"{i.get('score', 'class')} score >= {thr:g}" if isinstance(thr, (int, float))
                 else f"{i.get('score', 'class')} score")
    nms = i.get("mask_nms_iou")
    parts.append(f"masks of the top {i.get('top_k')} at probability {i.get('mask_threshold')}, "
                 + (f"mask NMS at IoU {nms}" if nms else "no mask NMS"))
    parts.append(f"classes {i.get('classes')}" + (" (crop classifier where the model has one)"
                                                    if i.get("crop_classifier") else " (RoI head)"))
    if i.get("proposals"):
        parts.append(f"{i['proposals']} proposals")
    if i.get("frame"):
        parts.append("framed to the metaphase")
    return "; ".join(parts)


def run_settings(images_meta: list[dict]) -> list[tuple[dict | None, dict | None, int]]:
    """The distinct (model, inference) pairs of a run's images, with how many images each made."""
    seen: dict[str, list] = {}
    for im in images_meta:
        key = json.dumps([im.get("model"), im.get("inference")], sort_keys=True, default=str)
        seen.setdefault(key, [im.get("model"), im.get("inference"), 0])[2] += 1
    return [tuple(v) for v in seen.values()]


def _overlay_caption(predictor) -> dict:
    """The overlay title's ``model`` (the name ``images.json`` records, a path's file name) and
    ``score_threshold`` of the predictor that made an image (None where it does not say)."""
    name = None
    if isinstance(predictor, Predictor):
        name = predictor.model_record().get("name")
    name = name or getattr(predictor, "model_name", None)
    threshold = getattr(getattr(predictor, "cfg", None), "score_threshold", None)
    return {"model": Path(str(name)).name if name else None, "score_threshold": threshold}


def predict_paths(predictor: Predictor, paths: list[Path], out_dir, batch_size: int = 1, overlays: bool = True,
                  label_images: bool = True, karyotype: bool = True, progress: bool = True,
                  skip_existing: bool = False, named=None, channel=None, pixel_size_um: float | None = None) -> dict:
    """Predict every image in ``paths`` and write into ``out_dir``:

    - ``results.json``: COCO results for all images (``file_name`` names each image; ``image_id`` is its
      index in ``images.json``), with RLE masks, ``bbox``, ``rbox``, ``endpoints``, class and score, and
      ``not_chromosome`` (why) on a detection the not-a-chromosome rule leaves out of the counts;
    - ``images.json``: the images (id, file name, size, and how each reached the network: ``frame``, the
      crop around its metaphase in image pixels, ``scale``, network input pixels per image pixel, and
      ``scale_rule``, what chose them: "pixel size", "framing" or "whole image";
      how it was read: ``channel``, ``channel_index`` and ``channels``, ``pixel_size_um`` and
      ``pixel_size_source``, see :func:`chromoseg.data.io.image_record`);
    - per image ``<stem>.labels.tif`` (16-bit instance labels) and ``<stem>.overlay.png``;
    - with ``karyotype``: per image ``<stem>.karyogram.png``, and for the run ``report.html`` (one
      self-contained page, flagged metaphases first) and ``report.csv`` with counts, ISCN-style summary
      and flags (see :mod:`chromoseg.karyotype`);
    - ``problems.json``: files that could not be used (``"action": "skipped"``, the batch goes on) and
      what the readers warned about in the files that were used (``"action": "kept"``, ``"kind":
      "read-warning"``: a listed strip that is not there, the first of several channels read, ...).

    Each image is read with :func:`chromoseg.data.io.read_image_with_info` and its channel rule:
    ``channel`` None (the default) reads a grey image as it is, colour converted to grey, and the first
    channel of a file of several (with a warning); a name (an OME channel's ``Name`` or ``Fluor``, e.g.
    ``"DAPI"`` in any case; ``"R"``, ``"G"``, ``"B"``) or a 0-based index picks one, and a file without
    it is skipped as unreadable. ``pixel_size_um`` (micrometres per pixel) is recorded instead of the
    file's own (which ``images.json`` then keeps as ``pixel_size_um_in_file`` where it differs); an
    image's pixel size sets its scale where the model records the pixel size it was trained at
    (``train_pixel_size_um``; ``scale_rule`` "pixel size" in ``images.json``), else it is recorded only.

    Every file is written atomically; ``results.json``, ``images.json``, the report and ``problems.json``
    are rewritten at most every ``SAVE_EVERY_S`` seconds and when the run ends or fails (Ctrl-C
    included): a killed run leaves valid files that cover all but its last few seconds (a long batch
    no longer rewrites them after every image). ``skip_existing``: images already in ``out_dir``'s ``images.json`` are not
    predicted again (their results are kept; for the report their images are read again, the channel
    each entry records).

    Only metaphase images are predicted (:func:`not_a_metaphase`): a label map or one of predict's own
    outputs found in a folder or by a glob is left out with a note (``not_metaphases`` in the summary
    and in ``images.json``); one that the caller named (``named``: the paths given as files, e.g. on
    the command line; None = every path was found in a folder) is a problem, skipped like an
    unreadable file. Returns counts: ``images`` finished in this call, ``skipped`` (the files skipped as
    problems; ``skipped_files`` names them), ``warnings`` (the readers' warnings kept, which do not make
    an image skipped; ``warned_files`` names their files), ``already_done``, ``not_metaphases`` ([{file,
    why}]).
    """
    import tifffile
    from tqdm import tqdm

    from chromoseg.atomic import atomic_path, write_text
    from chromoseg.data.classes import coco_categories
    from chromoseg.karyotype.layout import save_png
    from chromoseg.karyotype.overlay import overlay_title, render_overlay
    from chromoseg.karyotype.pipeline import analyse_metaphase, mark_not_chromosomes, truth_for
    from chromoseg.karyotype.report import write_report
    from chromoseg.ops import swap_in_full_masks

    if channel is not None and (isinstance(channel, (bool, np.bool_)) or not isinstance(channel, (int, np.integer, str))):
        raise TypeError(f"channel must be None, a 0-based index or a name, not {channel!r}")
    if pixel_size_um is not None and not (np.isfinite(float(pixel_size_um)) and float(pixel_size_um) > 0):
        raise ValueError(f"pixel_size_um must be a positive number of micrometres per pixel, not {pixel_size_um!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = ProblemLog()
    named = {str(p) for p in named} if named else set()
    not_metaphases: list[dict] = []
    results, images_meta, done = _read_done(out_dir) if skip_existing else ([], [], set())
    rows: list[dict] = []
    n_before, n_results_before = len(images_meta), len(results)
    stems: dict[str, int] = {}
    for im in images_meta:
        stem = Path(im["file_name"]).stem
        stems[stem] = stems.get(stem, 0) + 1
    if karyotype and images_meta:  # the report covers the earlier images too: their rows again
        from chromoseg.karyotype.layout import instances_from_coco

        for im in images_meta:
            try:  # the channel it was predicted from (None: the default rule, as before)
                arr, _ = read_image_with_info(im["file_name"], channel=im.get("channel_index"))
            except (ImageReadError, TypeError):
                continue
            insts = instances_from_coco(results, im["id"], arr.shape[0], arr.shape[1])
            rows.append(analyse_metaphase(arr, insts, Path(im["file_name"]).name, out_dir,
                                          im.get("stem", Path(im["file_name"]).stem),
                                          truth=truth_for(None, Path(im["file_name"])), overlay=overlays))
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
    batch: list[tuple[Path, np.ndarray, dict]] = []
    already = 0

    def save_run() -> None:
        write_text(out_dir / "results.json", json.dumps(results))
        # each image records the model and settings that made it; the file's own "model" and "inference"
        # only where every image shares them (a run continued with --skip-existing and other settings,
        # or --model auto over both stains, has several)
        settings = run_settings(images_meta)
        if not images_meta and isinstance(predictor, Predictor):
            settings = [(predictor.model_record(), asdict(predictor.cfg), 0)]
        top = {"model": settings[0][0], "inference": settings[0][1]} if len(settings) == 1 else {
            "settings_differ": "the images were predicted with different models or settings: see each image's "
                               "'model' and 'inference'"} if settings else {}
        write_text(out_dir / "images.json", json.dumps({"images": images_meta, "categories": coco_categories(), **top,
                                                        **({"not_metaphases": not_metaphases} if not_metaphases else {})},
                                                       indent=1))
        problems.write(out_dir / "problems.json")
        if karyotype and rows:
            how = ("; ".join(f"{n} image(s): {describe_inference(inf, mod)}" for mod, inf, n in settings)
                   if len(settings) > 1 else describe_inference(settings[0][1], settings[0][0]))
            write_report(rows, out_dir / "report.html", out_dir / "report.csv", title="chromoseg predictions",
                         note=f"model predictions; {how}")

    def finish(path: Path, arr: np.ndarray, insts: list[dict], record: dict, by=None) -> None:
        stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
        stems[path.stem] = stems.get(path.stem, 0) + 1
        if label_images:
            with atomic_path(out_dir / f"{stem}.labels.tif") as tmp:
                tifffile.imwrite(tmp, label_image(insts, arr.shape), compression="zlib")
        row = None
        with swap_in_full_masks(insts):  # the karyotype code takes full-size masks: for this block only
            if karyotype:
                row = analyse_metaphase(arr, insts, path.name, out_dir, stem, truth=truth_for(None, path),
                                        overlay=overlays, overlay_title=_overlay_caption(by or predictor))
            else:  # no counts: the rule still marks what results.json says is not a chromosome
                excluded = mark_not_chromosomes(insts)
                if overlays:
                    title = overlay_title(path.name, chromosomes=len(insts) - len(excluded),
                                          not_chromosomes=len(excluded), **_overlay_caption(by or predictor))
                    shown = [{**inst, "category_id": 0} if i in excluded else inst for i, inst in enumerate(insts)]
                    save_png(out_dir / f"{stem}.overlay.png", render_overlay(arr, shown, title=title))
        iid = len(images_meta) + 1  # the image's outputs exist: now it enters the run's files
        images_meta.append({"id": iid, "file_name": str(path), "height": arr.shape[0], "width": arr.shape[1],
                            "instances": len(insts), "stem": stem, **record})
        results.extend(instances_to_results(insts, iid, str(path)))
        if row is not None:
            rows.append(row)
            images_meta[-1]["summary"] = row["counts"].summary
            images_meta[-1]["flags"] = row["flags"]

    def flush():
        if not batch:
            return
        try:
            sizes = [r.get("pixel_size_um") for _, _, r in batch]  # the scale rule's (predictors without it: none)
            preds = predictor([a for _, a, _ in batch], **({"pixel_sizes": sizes} if any(sizes) else {}))
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory: the batch's images are skipped
            for path, _, _ in batch:
                problems.add(path, f"the model failed on this image ({type(err).__name__}: {str(err)[:200]})",
                             kind="model-error")
            preds = None
        framing = getattr(predictor, "last_framing", None) or [None] * len(batch)
        used = getattr(predictor, "last_predictors", None) or [predictor] * len(batch)
        for (path, arr, record), insts, how, by in zip(batch, preds or [], framing, used):
            finish(path, arr, insts, record, by)
            if how is not None:
                images_meta[-1].update(how)
            if isinstance(by, Predictor):  # provenance: which model, with which settings
                images_meta[-1].update(model=by.model_record(), inference=asdict(by.cfg))
        if time.monotonic() - last_save[0] >= SAVE_EVERY_S:  # the run's files, at most every few seconds
            save_run()
            last_save[0] = time.monotonic()
        bar.update(len(batch))
        batch.clear()

    last_save = [time.monotonic()]
    try:
        for path in paths:
            if skip_existing and str(path) in done:
                already += 1
                bar.update(1)
                continue
            why = not_a_metaphase(path)  # by its name: not read at all
            problem = ("not-a-metaphase", why) if why else None
            if not problem:
                try:
                    arr, info = read_image_with_info(path, channel=channel)
                except ImageReadError as err:
                    problems.add(err.path, err.problem, kind="unreadable")
                    bar.update(1)
                    continue
                problem = image_problem(arr, getattr(predictor, "stain", None), path)
                noted = problem and problem[0] == "not-a-metaphase" and str(path) not in named
                if not noted:  # a file left out with a note has no warnings to keep
                    for w in info["warnings"]:  # the readers worked around it: kept, the exit status unchanged
                        problems.add(path, w, action="kept", kind="read-warning")
            if problem:  # not a metaphase and found in a folder: a note; else a problem (the user asked for it)
                kind, why = problem
                if kind == "not-a-metaphase" and str(path) not in named:
                    not_metaphases.append({"file": str(path), "why": why})
                else:
                    problems.add(path, why, kind=kind)
                bar.update(1)
                continue
            batch.append((Path(path), arr, image_record(info, pixel_size_um)))
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:  # also after an error or Ctrl-C: every image finished so far enters the run's files
        bar.close()
        save_run()
    skipped = [p for p in problems.problems if p.action != "kept"]
    kept = [p for p in problems.problems if p.action == "kept"]
    return {"images": len(images_meta) - n_before, "skipped": len(skipped), "warnings": len(kept),
            "already_done": already, "instances": len(results) - n_results_before, "total_images": len(images_meta),
            "total_instances": len(results), "settings": run_settings(images_meta),
            "problems": problems.summary(), "out": str(out_dir), "skipped_files": [p.file for p in skipped],
            "warned_files": list(dict.fromkeys(p.file for p in kept)), "not_metaphases": not_metaphases}
