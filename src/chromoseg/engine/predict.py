"""Prediction: images in, chromosome instances out (API behind ``chromoseg predict``).

The paper's inference rule is the default (section III): masks of the top 100 detections, mask-level
NMS to remove redundant results, then the confidence threshold 0.5. Each step is configurable in
:class:`InferenceConfig` (:mod:`chromoseg.engine.settings`: the settings, the paper's rule and how a
model file's recommendations and the caller's choices are resolved into the settings a call uses).
"""
from __future__ import annotations


import json
import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from chromoseg.data.io import ImageReadError, image_record, read_image_with_info, report_fields, to_float01
from chromoseg.data.report import ProblemLog
from chromoseg.engine.amp import autocast_context, float32_outputs
# the per-image steps (checks, selection, classes) live in the pipeline; their names stay importable here
from chromoseg.engine.pipeline import (LABEL_MAP_MAX_VALUES, OUTPUT_SUFFIXES,  # noqa: F401
                                       assign_classes, check_image, check_image_list, image_problem,
                                       not_a_metaphase, polarity_problem, predict_images, reclassify,
                                       select_instances)
from chromoseg.engine.settings import (LOAD_TIME_SETTINGS, PAPER_SCORE_THRESHOLD, InferenceConfig,  # noqa: F401
                                       resolve_settings)

log = logging.getLogger(__name__)



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
        from chromoseg.data.stain import stain_of
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
        pred.stain = meta.get("stain") or (stain_of(True) if model.config.get("invert") else None)
        pred.model_name, pred.model_file = name or DEFAULT, str(path)
        return pred

    def call_options(self, cfg: InferenceConfig, pixel_sizes=None) -> dict:
        """The model call's options for settings ``cfg`` (keyword arguments of this call only: the
        model's transform and heads are not changed). ``pixel_sizes`` (each image's micrometres per
        pixel, None: unknown) with a model that records the pixel size it was trained at
        (``cfg.train_pixel_size_um``): the transform's scale rule. With object scores the rule's last
        step drops detections under the score threshold; a detection more than 2e-3 under it can
        neither pass it nor, ranked below every one that does (rank = score + 1e-3 x candidate score),
        suppress one in mask NMS: ``mask_score_thresh`` has the RoI heads drop it before the mask head,
        which gives the same instances for fewer masks (a direct call of the model, as
        ``chromoseg.engine.diagnose`` makes, still gets every mask)."""
        from chromoseg.models.transform import ChromoTransform

        opts = {}
        if (isinstance(getattr(self.model, "transform", None), ChromoTransform) and cfg.train_pixel_size_um
                and pixel_sizes is not None and any(v is not None for v in pixel_sizes)):
            opts.update(pixel_sizes=list(pixel_sizes), train_pixel_size_um=float(cfg.train_pixel_size_um))
        heads = getattr(self.model, "roi_heads", None)
        if (hasattr(heads, "mask_score_thresh") and cfg.score == "object"
                and getattr(heads, "score_mode", None) == "object" and cfg.score_threshold is not None):
            thresh = max(float(cfg.score_threshold) - 2e-3, 0.0)
            if thresh > 0:
                opts["mask_score_thresh"] = thresh
        return opts

    @torch.no_grad()
    def run_model(self, images: list[np.ndarray], pixel_sizes=None, cfg: InferenceConfig | None = None
                  ) -> tuple[list[dict], list[torch.Tensor], list[dict]]:
        """The pipeline's scale-and-model step (:mod:`chromoseg.engine.pipeline`): one call of the model
        on ``images`` (2-D grey arrays) with settings ``cfg`` (else :attr:`cfg`). Returns the model's
        raw outputs (float32), the input tensors (``[1, H, W]`` in [0, 1]) and how each image reached
        the network (:func:`framing_of`)."""
        cfg = cfg or self.cfg
        tensors = [torch.from_numpy(to_float01(a))[None].to(self.device) for a in images]
        with autocast_context(cfg.amp, self.device):
            outputs = [float32_outputs(o) for o in self.model(tensors, **self.call_options(cfg, pixel_sizes))]
        size = getattr(getattr(self.model, "transform", None), "image_size", None)
        framing = [framing_of(o.get("frame"), a.shape[-2:], size, o.get("scale_rule"), o.get("scale_note"))
                   for o, a in zip(outputs, images)]
        return outputs, tensors, framing

    def __call__(self, images: list[np.ndarray], pixel_sizes=None, **overrides) -> list[list[dict]]:
        """Instances of each image (:func:`chromoseg.engine.pipeline.predict_images`, no analysis).
        ``overrides``: settings for this call only (see :meth:`settings`). ``pixel_sizes``: each image's
        micrometres per pixel (None: unknown), for a model that records the pixel size it was trained at
        (``cfg.train_pixel_size_um``)."""
        preds = predict_images(self, images, pixel_sizes, **overrides)
        self.last_framing = [p.framing for p in preds]
        self.last_settings = [p.settings for p in preds]
        return [p.instances for p in preds]

    def classes_of(self, image: torch.Tensor, instances: list[dict], cfg: InferenceConfig | None = None) -> list[dict]:
        """The final instances' classes by the settings (``cfg``, else the predictor's):
        :func:`chromoseg.engine.pipeline.assign_classes` with this predictor's model."""
        return assign_classes(self.model, image, instances, cfg or self.cfg, self.device)


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
    predictor per stain, chosen per image by its polarity (:func:`chromoseg.data.stain.image_stain`:
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

    @property
    def last_framing(self) -> list[dict]:
        return self._last_framing

    @property
    def last_predictors(self) -> list[Predictor]:
        """The predictor each image of the last call went to."""
        return self._last_predictors

    def __call__(self, images: list[np.ndarray], pixel_sizes=None, **overrides) -> list[list[dict]]:
        """Each image by the predictor of its stain (:func:`chromoseg.engine.pipeline.predict_images`);
        ``overrides``: settings for this call only, over each model's own (:meth:`Predictor.settings`);
        ``pixel_sizes`` as :meth:`Predictor.__call__`'s."""
        preds = predict_images(self, images, pixel_sizes, **overrides)
        self._last_framing = [p.framing for p in preds]
        self._last_predictors = [p.predictor for p in preds]
        self.last_settings = [p.settings for p in preds]
        return [p.instances for p in preds]


#: seconds between rewrites of a predict run's collected files (results.json, images.json, report)
SAVE_EVERY_S = 10.0


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
    from chromoseg.karyotype.pipeline import analyse_metaphase, truth_for
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
            rows[-1].update(report_fields(im))
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

    def finish(path: Path, arr: np.ndarray, record: dict, pred) -> None:
        """Write one image's prediction (a :class:`~chromoseg.engine.pipeline.ImagePrediction`)."""
        insts, by = pred.instances, pred.predictor
        stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
        stems[path.stem] = stems.get(path.stem, 0) + 1
        if label_images:
            with atomic_path(out_dir / f"{stem}.labels.tif") as tmp:
                tifffile.imwrite(tmp, label_image(insts, arr.shape), compression="zlib")
        row = None
        with swap_in_full_masks(insts):  # the karyotype code takes full-size masks: for this block only
            if karyotype:  # the pipeline's analysis, drawn and written
                row = analyse_metaphase(arr, insts, path.name, out_dir, stem, overlay=overlays,
                                        overlay_title=_overlay_caption(by), analysis=pred.analysis)
            elif overlays:  # no counts: what results.json says is not a chromosome is drawn grey
                excluded = pred.analysis["not_chromosomes"]
                title = overlay_title(path.name, chromosomes=len(insts) - len(excluded),
                                      not_chromosomes=len(excluded), **_overlay_caption(by))
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
        images_meta[-1].update(pred.framing)
        if row is not None:  # the report says how the image was read: channel, pixel size, scale rule
            row.update(report_fields(images_meta[-1]))
        if isinstance(by, Predictor):  # provenance: which model, with which settings
            images_meta[-1].update(model=by.model_record(), inference=asdict(by.cfg))

    def flush():
        if not batch:
            return
        try:  # the per-image pipeline; here only written
            sizes = [r.get("pixel_size_um") for _, _, r in batch]  # the scale rule's
            preds = predict_images(predictor, [a for _, a, _ in batch], sizes if any(sizes) else None,
                                   analysis="karyotype" if karyotype else "not-chromosomes",
                                   truths=[truth_for(None, path) for path, _, _ in batch])
        except (RuntimeError, MemoryError) as err:  # e.g. out of memory: the batch's images are skipped
            for path, _, _ in batch:
                problems.add(path, f"the model failed on this image ({type(err).__name__}: {str(err)[:200]})",
                             kind="model-error")
            preds = []
        for (path, arr, record), pred in zip(batch, preds):
            finish(path, arr, record, pred)
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
                problem = check_image(predictor, arr, path)
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
