"""Inference settings in one place: what each one means, the paper's rule, and how a model file's
recommendations and a user's choices become the settings a prediction uses.

Every setting left ``None`` in an :class:`InferenceConfig` means "what the model file recommends,
else the paper's rule" (or the model's own, for ``proposals`` and ``frame``), so
``InferenceConfig()`` -- or no settings at all -- is "use the file's recommendations";
:func:`resolve_settings` turns (recommendations, overrides) into a new, complete settings object. No
torch here: ``chromoseg evaluate`` and the command-line help read this module without loading a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

#: The paper's confidence score threshold (section III; its tables are "under the confidence score
#: threshold of 0.5"): predict's threshold where the model file recommends none, ``chromoseg
#: evaluate``'s default without a record of the predictions' own, and the tables' protocol.
PAPER_SCORE_THRESHOLD = 0.5

#: the paper's rule for the settings a model file may recommend (what an unset one becomes without a
#: recommendation): class probabilities as scores, each chromosome's own most probable class, each
#: detection scored on the proposal it was regressed from
PAPER_RULE = {"score": "class", "score_threshold": PAPER_SCORE_THRESHOLD, "classes": "independent",
              "rescore": False}

#: setting -> the metadata key that carries a model file's recommendation for it (``chromoseg export
#: --default-score``, ...); ``frame``: the model's own framing (trained with ``--frame``)
RECOMMENDATION_KEYS = {"score": "default_score", "score_threshold": "default_score_threshold",
                       "classes": "default_classes", "proposals": "default_proposals", "frame": "frame",
                       "rescore": "default_rescore", "train_pixel_size_um": "train_pixel_size_um"}

SCORES = ("class", "object")
CLASS_RULES = ("independent", "karyotype")
AMP_MODES = ("auto", "off", "bf16")


@dataclass
class InferenceConfig:
    """How a model's raw detections become chromosomes. ``None`` = the model file's recommendation,
    else the paper's rule (see :func:`resolve_settings`)."""

    top_k: int = 100  #: detections whose masks are computed (the paper: top 100)
    mask_threshold: float = 0.5  #: mask probability -> binary mask
    mask_nms_iou: float = 0.5  #: mask-level NMS threshold, class-agnostic (None/<=0: off)
    #: the confidence threshold, applied last: the model file's ``default_score_threshold``, else the
    #: paper's :data:`PAPER_SCORE_THRESHOLD`
    score_threshold: float | None = None
    min_area: int = 4  #: masks with fewer pixels are dropped
    #: what ``score`` is: "class" = the detection's class probability (the paper, torchvision);
    #: "object" = 1 - P(background) of its RoI (is it a chromosome at all), the class's own
    #: probability then shows only in ``class_scores`` (rotated variants only); None = the model file's
    #: ``default_score``, else "class"
    score: str | None = None
    #: how classes are chosen: "independent" = each chromosome's most probable class; "karyotype" =
    #: jointly per metaphase (``chromoseg.karyotype.assign``: two slots per autosome, penalised gains);
    #: None = the model file's ``default_classes``, else independent
    classes: str | None = None
    #: use the model's second-stage crop classifier for the classes, when it has one
    crop_classifier: bool = True
    #: region proposals kept after the RPN's NMS (the RoI heads' candidates; each FPN level's top
    #: ``max(600, proposals)`` anchors go into that NMS); None = the model file's ``default_proposals``,
    #: else the model's own (300, torchvision: 1000). Rotated variants.
    proposals: int | None = None
    #: autocast of the model and crop classifier: "off" (fp32), "bf16", or "auto" = bf16 on a CPU with
    #: bf16 instructions (AVX512-BF16 / AMX), else fp32. On the M-FISH validation split bf16 gives mask AP
    #: within half a point of fp32's, about 1.5x faster on such a CPU (``benchmarks/results/predict_speed.md``)
    amp: str = "auto"
    #: crop each image to its metaphase (plus a margin) before the network's resize, so chromosome size
    #: does not depend on how the camera framed the cell (``chromoseg.ops.frame_box``); None = the
    #: model's own setting (on for models trained with ``--frame``)
    frame: bool | None = None
    #: score each detection by the box head run again on its own final rotated box, not on the
    #: proposal it was regressed from (``RotatedRoIHeads.rescore_detections``; ours, not the paper's:
    #: long chromosomes' proposals score low). None = the model file's ``default_rescore``, else off
    rescore: bool | None = None
    #: micrometres per pixel of the network input (after its resize) that the model was trained at: an
    #: image whose pixel size is known (the file's, or ``--pixel-size``) is resized to it instead of
    #: being framed (:func:`chromoseg.ops.pixel_size_box`; ``scale_rule`` "pixel size" in the results);
    #: images without one are framed as before. None = the model file's ``train_pixel_size_um``
    #: (``chromoseg export --train-pixel-size``), else none; 0 = none even where the file records one
    train_pixel_size_um: float | None = None
    #: endpoints of a model with an ED heatmap: an end where the heatmap is under this value, or that
    #: lies off its own mask, is moved to the mask's skeleton end on its side
    #: (:func:`chromoseg.ops.snap_endpoints`); 0 = the heatmap's ends as they are. 0.4 was the best of
    #: 0.1-0.7 on the M-FISH validation split: 74.1 % of the found chromosomes' endpoints within 4 px
    #: against 71.1 % unrefined (``benchmarks/results/endpoints.md``)
    endpoint_snap: float = 0.4


#: the settings fixed when a model is loaded (its heads' candidates, its RPN, its input framing and scale): a
#: per-call change of these would change the model, so ``Predictor.__call__`` refuses one
LOAD_TIME_SETTINGS = ("top_k", "score", "proposals", "frame", "rescore", "train_pixel_size_um")


def _overrides(overrides: InferenceConfig | Mapping[str, Any] | None) -> dict:
    """The settings a caller chose: an :class:`InferenceConfig`'s fields or a mapping of them (an
    unknown name is a ``TypeError``); ``None`` values are not chosen."""
    if overrides is None:
        return {}
    if isinstance(overrides, InferenceConfig):
        return {f.name: getattr(overrides, f.name) for f in fields(InferenceConfig)}
    names = {f.name for f in fields(InferenceConfig)}
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(sorted(names))} "
                        "(see chromoseg.engine.settings.InferenceConfig)")
    return dict(overrides)


def resolve_settings(recommended: Mapping[str, Any] | None = None,
                     overrides: InferenceConfig | Mapping[str, Any] | None = None) -> InferenceConfig:
    """The settings a prediction uses, as a new :class:`InferenceConfig` (neither argument is changed).

    ``recommended``: what the model recommends, keyed as its file's metadata keys them
    (:data:`RECOMMENDATION_KEYS`: ``default_score``, ``default_score_threshold``, ``default_classes``,
    ``default_proposals``, strings as ``chromoseg export`` writes them or values) plus ``frame``, the
    model's own framing; other keys are ignored (a file's whole metadata may be passed).
    ``overrides``: the caller's choices, an :class:`InferenceConfig` or a mapping of its fields; a
    ``None`` value is no choice. Each setting is the caller's choice, else the recommendation, else
    the paper's rule (:data:`PAPER_RULE`), else the dataclass default (``proposals`` None = the
    model's own; ``frame`` without a recommendation: off; ``train_pixel_size_um`` without one: None,
    no pixel-size rule). Raises ``ValueError`` for a value out of
    range and ``TypeError`` for an unknown setting."""
    rec = dict(recommended or {})
    chosen = {k: v for k, v in _overrides(overrides).items() if v is not None}
    values = {}
    for name, key in RECOMMENDATION_KEYS.items():
        if name in chosen:
            continue
        if rec.get(key) is not None and rec.get(key) != "":
            values[name] = rec[key]
        elif name in PAPER_RULE:
            values[name] = PAPER_RULE[name]
    values.update(chosen)
    cfg = replace(InferenceConfig(), **values)
    # the recommendations are strings in a file's metadata
    cfg.score_threshold = float(cfg.score_threshold)
    if cfg.proposals is not None:
        cfg.proposals = int(cfg.proposals)
    cfg.frame = _as_bool(cfg.frame) if cfg.frame is not None else False
    cfg.rescore = _as_bool(cfg.rescore)
    if cfg.train_pixel_size_um is not None:
        cfg.train_pixel_size_um = float(cfg.train_pixel_size_um)
    _check(cfg)
    return cfg


def _as_bool(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


def _check(cfg: InferenceConfig) -> None:
    if cfg.score not in SCORES:
        raise ValueError(f"score {cfg.score!r}: use 'class' or 'object'")
    if cfg.classes not in CLASS_RULES:
        raise ValueError(f"classes {cfg.classes!r}: use 'independent' or 'karyotype'")
    if not 0.0 <= cfg.score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {cfg.score_threshold}")
    if cfg.proposals is not None and cfg.proposals < 1:
        raise ValueError(f"proposals must be at least 1, got {cfg.proposals}")
    if int(cfg.top_k) < 1:
        raise ValueError(f"top_k must be at least 1, got {cfg.top_k}")
    if cfg.train_pixel_size_um is not None and not (math.isfinite(cfg.train_pixel_size_um)
                                                    and cfg.train_pixel_size_um >= 0):
        raise ValueError(f"train_pixel_size_um must be micrometres per pixel (> 0; 0 = none), got "
                         f"{cfg.train_pixel_size_um}")
    if not (math.isfinite(cfg.endpoint_snap) and 0.0 <= cfg.endpoint_snap <= 1.0):
        raise ValueError(f"endpoint_snap must be a heatmap value in [0, 1] (0 = off), got {cfg.endpoint_snap}")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"amp {cfg.amp!r}: use {', '.join(repr(m) for m in AMP_MODES)}")
