"""``TrainConfig``: every training option with its default, declared once. ``chromoseg train`` reads
its defaults from here (:func:`train_defaults`), so the command line, a ``--config`` file and the
Python API share them. Imports no torch: the command line reads it while it builds its parser.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from chromoseg.models.variants import find_variant


@dataclass
class TrainConfig:
    train: Optional[str] = None
    extra_train: list = field(default_factory=list)  # more training sets, e.g. LabelMe polygons without classes
    val: Optional[str] = None
    out: str = "runs/train"
    variant: str = "ermr"
    backbone: str = "resnet50"
    backbone_weights: Optional[str] = None
    init_weights: Optional[str] = None  # a chromoseg model (checkpoint / export): tensors that fit are copied
    num_classes: int = 24
    image_size: tuple = (512, 640)
    epochs: int = 100
    batch_size: int = 2
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    warmup_factor: float = 0.001
    patience: int = 10
    early_stop_metric: str = "loss_mask"  # a loss (lower is better) or a validation AP name (higher): AP_METRIC
    val_every: int = 1  # the AP pass every N epochs (and at the run's last epoch); 0: losses only
    val_score: str = "class"  # the AP pass's scores: class (the paper's rule) or object (1 - P(background); rotated variants)
    val_rescore: bool = False  # the AP pass rescores each detection on its own box (predict --rescore on)
    grad_clip: float = 10.0
    amp: str = "auto"  # auto (bf16/fp16 on a GPU, bf16 on a CPU with bf16 instructions, else off), off, bf16, fp16
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    max_images: Optional[int] = None
    max_val_images: Optional[int] = None
    augment: bool = True
    cache_data: bool = True  # decoded + resized images and targets kept in memory (see ChromosomeDataset)
    small: bool = False
    compact: bool = False
    lr_schedule: str = "constant"  # constant (the paper) or cosine (to 0 at the last epoch)
    time_limit: Optional[float] = None  # minutes of training in this call; the epoch running then ends early
    zoom: Optional[tuple] = None  # (lo, hi): RandomZoom's scale range in training (None: no zoom)
    start_epoch: int = 0  # with init_weights: continue the schedule of a run whose folder is gone at this epoch
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.early_stop_metric, str) and self.early_stop_metric.startswith("val/"):
            self.early_stop_metric = self.early_stop_metric[4:]  # the name as metrics.jsonl spells it
        m = self.early_stop_metric
        if not isinstance(m, str) or not (m.startswith("loss") or is_ap_metric(m)):
            raise ValueError(f"early_stop_metric {m!r}: a loss (loss_mask, loss, ...) or a validation AP "
                             f"({', '.join(AP_METRIC_EXAMPLES)}, ...)")
        if isinstance(self.val_every, bool) or not isinstance(self.val_every, int) or self.val_every < 0:
            raise ValueError(f"val_every {self.val_every!r}: a whole number of epochs, 0 = no AP pass")
        if is_ap_metric(m) and self.val and not self.val_every:
            raise ValueError(f"early_stop_metric {m} is measured by the AP pass: val_every must be at least 1")
        if self.val_score not in ("class", "object"):
            raise ValueError(f"val_score {self.val_score!r}: 'class' (the paper's rule) or 'object'")
        spec = find_variant(self.variant)
        if self.val_score == "object" and spec is not None and not spec.rotated:
            raise ValueError(f"val_score 'object' needs a rotated variant (its detections carry class scores), "
                             f"not {self.variant}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        d["zoom"] = list(self.zoom) if self.zoom else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        if d.get("image_size"):
            d["image_size"] = tuple(int(x) for x in d["image_size"])
        if d.get("zoom"):
            d["zoom"] = tuple(float(x) for x in d["zoom"])
        return cls(**d)

    def model_config(self) -> dict:
        from chromoseg.models import COMPACT, SMALL

        cfg = dict(variant=self.variant, num_classes=self.num_classes, backbone=self.backbone,
                   image_size=tuple(self.image_size) if self.image_size else None, ed_layers=6)
        if self.small:
            cfg.update(SMALL)
        if self.compact:
            cfg.update(COMPACT)
        cfg.update(self.model_kwargs)
        return cfg


#: the validation APs :func:`validate_ap` logs and ``early_stop_metric`` may name: mask or box AP
#: (over IoU 0.50:0.95, at 0.5, at 0.75), multi-class or ``_binary``, under the paper's score threshold
#: or, ``_coco``, without one. Higher is better.
AP_METRIC = re.compile(r"^(mask|box)_ap(50|75)?(_binary)?(_coco)?$")
AP_METRIC_EXAMPLES = ("mask_ap", "mask_ap50", "box_ap50", "mask_ap_binary", "box_ap50_coco")


def is_ap_metric(name: str) -> bool:
    """True for a validation AP name (``mask_ap``, ``val/box_ap50_binary``, ...): higher is better."""
    return bool(AP_METRIC.match(str(name).split("/")[-1]))


def train_defaults() -> dict:
    """Each ``TrainConfig`` field's default (fields with a factory: a fresh value)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
