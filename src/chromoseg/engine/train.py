"""Training loop: the paper's recipe, checkpoints, resume, early stopping, AMP, DDP.

Recipe (paper, Sec. III): SGD with momentum 0.9, learning rate 0.005 (weight decay 1e-4 and a short
linear warm-up added, as in torchvision's detection references), inputs resized to 640 x 512
(W x H), up to 100 epochs, early stop when the validation mask loss has not improved for 10 epochs;
the checkpoint with the best validation mask loss is kept as ``best.pt``.

Validation by AP (:func:`validate_ap`, every ``val_every`` epochs, the loss pass every epoch): the
validation images are predicted as ``chromoseg predict`` predicts them with a checkpoint of the run
(:class:`~chromoseg.engine.predict.Predictor`, eval mode, the paper's rule) and scored by
:func:`~chromoseg.engine.evaluate.evaluate` (pycocotools): ``val/mask_ap``, ``val/mask_ap50``,
``val/mask_ap75``, ``val/box_ap`` ... multi-class, ``..._binary`` class-agnostic, under the paper's
score threshold (``PAPER_SCORE_THRESHOLD``, 0.5: the tables' protocol) and, with ``_coco``, without one.
``early_stop_metric`` may name any of them (higher is better) instead of a loss (lower is better).

Run folder (``--out``): ``config.yaml`` (the full configuration), ``metrics.jsonl`` (one JSON
record per epoch, plus ``"event"`` records), ``last.pt`` (every epoch, written atomically),
``best.pt`` (best monitored value: by default the validation mask loss), ``tb/`` (TensorBoard, when
installed).

Determinism and resume: every epoch re-seeds Python, NumPy and torch with ``seed + epoch`` and the
data order comes from a generator seeded the same way, so a run resumed from ``last.pt`` after a kill
continues exactly like an uninterrupted one (on the same machine and thread count). The checkpoint
also stores model, optimizer, scheduler, grad scaler, early-stopping state and RNG states.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same command trains with DistributedDataParallel and a
DistributedSampler; validation losses are averaged over all ranks; only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .amp import cpu_has_native_bf16
from .checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from .evaluate import annotator_boxes  # the box-AP rule of sets with annotators' boxes
from .train_config import AP_METRIC, AP_METRIC_EXAMPLES, TrainConfig, is_ap_metric  # noqa: F401  (also imported from here)

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Raised for a clear stop (NaN/inf loss, unusable data)."""


class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` epochs: lower is better
    (``mode="min"``: a loss) or higher (``"max"``: an AP).

    Patience counts epochs since the best one, so a value measured only every few epochs
    (``val_every``) still stops after ``patience`` epochs. In ``"max"`` mode an AP of 0 while no epoch
    has scored above 0 is taken as the new best (the later weights, their loss lower): patience starts
    once the model finds anything above the score threshold (a detector whose class scores are still
    under 0.5 scores 0 under the paper's protocol for many epochs)."""

    def __init__(self, patience: int = 10, min_delta: float = 0.0, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r}: 'min' (a loss) or 'max' (an AP)")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.bad_epochs = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta or (value <= 0 and self.best <= 0)
        return value < self.best - self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's value; True when it is a new best."""
        if self._better(value):
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            return True
        self.bad_epochs = max(epoch - self.best_epoch, self.bad_epochs + 1)
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return dict(patience=self.patience, min_delta=self.min_delta, mode=self.mode, best=self.best,
                    best_epoch=self.best_epoch, bad_epochs=self.bad_epochs)

    def load_state_dict(self, d: dict) -> None:
        """A run's stopper; files from before AP monitoring have no ``mode``: they monitored a loss."""
        if d.get("mode", "min") != self.mode:
            raise ValueError(f"early-stopping state of a {d.get('mode', 'min')!r} metric, this stopper is {self.mode!r}")
        self.best, self.best_epoch, self.bad_epochs = d["best"], d["best_epoch"], d["bad_epochs"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def warmup_lambda(warmup_iters: int, warmup_factor: float, total_iters: Optional[int] = None):
    """Learning-rate factor per step: linear warm-up from ``warmup_factor`` over ``warmup_iters``
    steps, then 1 (constant) or, with ``total_iters``, a cosine decay reaching 0 at ``total_iters``."""
    def f(it: int) -> float:
        if it < warmup_iters:
            alpha = it / max(warmup_iters, 1)
            return warmup_factor * (1 - alpha) + alpha
        if total_iters is None:
            return 1.0
        t = min(1.0, (it - warmup_iters) / max(total_iters - warmup_iters, 1))
        return 0.5 * (1.0 + math.cos(math.pi * t))

    return f


# ---- distributed helpers --------------------------------------------------------------------------

def dist_info():
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return ws, rank, local


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    return dev




def amp_dtype(cfg_amp: str, device: torch.device):
    """Autocast dtype: ``off`` -> None; ``bf16`` / ``fp16`` as asked (fp16 on a GPU only); ``auto``:
    bf16 (else fp16) on a GPU; on a CPU bf16 where it has bf16 instructions (AVX512-BF16 / AMX: about
    1.7x faster there), else None. bf16's validation mask loss after 220 steps was 3.8 % off fp32's with
    the same seed, while two fp32 seeds differed by 12 % (``benchmarks/results/training_speed.md``)."""
    if cfg_amp == "off":
        return None
    if device.type == "cpu":
        if cfg_amp == "bf16":
            return torch.bfloat16
        if cfg_amp == "fp16":
            raise TrainingError("--amp fp16 needs a GPU; on a CPU use --amp bf16 or off")
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    if cfg_amp == "fp16":
        return torch.float16
    if cfg_amp == "bf16" or (cfg_amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def to_device(images, targets, device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


def _bn_eval(model):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


# ---- data ------------------------------------------------------------------------------------------

def build_datasets(cfg: TrainConfig):
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.transforms import default_transforms

    size = tuple(cfg.image_size) if cfg.image_size else None
    frame = bool(cfg.model_kwargs.get("frame", False))  # the model frames at inference: so must its data
    for p in (cfg.train, cfg.val, *cfg.extra_train):
        if p and not Path(p).is_file():
            raise TrainingError(f"dataset file not found: {p}")
    train_tf = default_transforms(cfg.augment, size=size, frame=frame, zoom=cfg.zoom)
    train = ChromosomeDataset(cfg.train, transforms=train_tf, max_images=cfg.max_images, cache=cfg.cache_data)
    if cfg.extra_train:
        train = torch.utils.data.ConcatDataset(
            [train] + [ChromosomeDataset(p, transforms=train_tf, max_images=cfg.max_images, cache=cfg.cache_data)
                       for p in cfg.extra_train])
    val = None
    if cfg.val:
        val = ChromosomeDataset(cfg.val, transforms=default_transforms(False, size=size, frame=frame),
                                max_images=cfg.max_val_images or cfg.max_images, cache=cfg.cache_data)
        if len(val) == 0:  # e.g. an import with a small --limit: train without validation
            log.warning("validation set %s has no images: training without validation", cfg.val)
            val = None
    if len(train) == 0:
        raise TrainingError(f"{cfg.train}: no images")
    return train, val


# ---- one epoch -------------------------------------------------------------------------------------

def _past(deadline: Optional[float], device, distributed: bool) -> bool:
    """True once ``time.monotonic()`` passed ``deadline``; under DDP when any rank's has (all agree)."""
    if deadline is None:
        return False
    late = time.monotonic() > deadline
    if distributed:
        import torch.distributed as dist

        flag = torch.tensor([float(late)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        late = bool(flag.item())
    return late


def train_one_epoch(model, loader, optimizer, scheduler, device, epoch, cfg, scaler=None, dtype=None,
                    show_progress=True, deadline: Optional[float] = None, distributed: bool = False):
    """One pass over ``loader``; with ``deadline`` (a ``time.monotonic()`` value) it ends after the
    step that passes it (``train/partial`` in the returned record)."""
    from tqdm import tqdm

    model.train()
    sums, count, n_images = {}, 0, 0
    t0 = time.perf_counter()
    it = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show_progress, leave=False,
              dynamic_ncols=True)
    for step, (images, targets) in enumerate(it):
        images, targets = to_device(images, targets, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            losses = model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            bad = {k: float(v.detach()) for k, v in losses.items()}
            raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {bad}; "
                                f"try a lower --lr or check the data (image ids "
                                f"{[int(t['image_id']) for t in targets if 'image_id' in t]})")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
        count += 1
        n_images += len(images)
        if show_progress:
            it.set_postfix(loss=f"{sums['loss'] / count:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
        if _past(deadline, device, distributed):
            partial = True
            break
    else:
        partial = False
    dt = time.perf_counter() - t0
    rec = {f"train/{k}": v / max(count, 1) for k, v in sums.items()}
    rec.update({"train/images": n_images, "train/seconds": dt, "train/images_per_s": n_images / max(dt, 1e-9)})
    if partial:
        rec["train/partial"] = True
    return rec


@torch.no_grad()
def validate(model, loader, device, dtype=None, distributed=False, show_progress=True):
    """Mean validation losses (the model runs its training branch under no_grad with BatchNorm in
    eval mode, so the losses -- among them ``loss_mask``, the early-stopping metric -- are those of
    eq. 2/4 on the validation images)."""
    from tqdm import tqdm

    was_training = model.training
    model.train()
    _bn_eval(model)
    sums, count = {}, 0
    for images, targets in tqdm(loader, desc="val", disable=not show_progress, leave=False, dynamic_ncols=True):
        images, targets = to_device(images, targets, device)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            losses = model(images, targets)
        n = len(images)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        sums["loss"] = sums.get("loss", 0.0) + float(sum(losses.values())) * n
        count += n
    keys = sorted(sums)
    if distributed:
        import torch.distributed as dist

        t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        sums = dict(zip(keys, t[:-1].tolist()))
        count = int(t[-1].item())
    model.train(was_training)
    return {f"val/{k}": sums[k] / max(count, 1) for k in keys}


#: (suffix of the metric's name, score threshold): the paper's protocol and COCO's
AP_PROTOCOLS = (("", None), ("_coco", 0.0))


def ap_metrics(gt: dict, results: list[dict]) -> dict:
    """``val/...`` APs of COCO ``results`` against the set ``gt`` (both as data) by
    :func:`chromoseg.engine.evaluate.evaluate`: mask AP against the set's masks, box AP against its
    boxes -- the annotators' where the set keeps them beside pseudo-masks (:func:`annotator_boxes`);
    multi-class and ``_binary``; under the paper's score threshold and, ``_coco``, without one. A
    kind the set cannot score (mask AP of a box-only set, multi-class AP without classes) is left out;
    an AP with ground truth but no detection is 0."""
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD

    boxes = annotator_boxes(gt)
    jobs = [(gt, ("segm", "bbox"))] if boxes is gt else [(gt, ("segm",)), (boxes, ("bbox",))]
    out = {}
    for suffix, thr in AP_PROTOCOLS:
        thr = PAPER_SCORE_THRESHOLD if thr is None else thr
        for truth, iou_types in jobs:
            rep = evaluate(truth, results, score_threshold=thr, iou_types=iou_types)
            for mode, by_type in rep["metrics"].items():
                for iou, m in by_type.items():
                    for stat, tag in (("AP", ""), ("AP50", "50"), ("AP75", "75")):
                        v = m.get(stat)
                        if v is None and m.get("gt_instances"):
                            v = 0.0  # COCOeval's -1: nothing detected
                        name = f"{'mask' if iou == 'segm' else 'box'}_ap{tag}{'_binary' if mode == 'binary' else ''}"
                        out[f"val/{name}{suffix}"] = v
    return out


def validation_truth(val_ds) -> dict:
    """The validation set's ground truth as :func:`ap_metrics` scores it: the images the dataset uses
    (``max_val_images``) and all their annotations, crowd regions included (COCOeval ignores them)."""
    ids = {im["id"] for im in val_ds.images}
    return {**val_ds.coco, "images": list(val_ds.images),
            "annotations": [a for a in val_ds.coco["annotations"] if a["image_id"] in ids]}


@torch.no_grad()
def validate_ap(model, model_config: dict, val_ds, device, distributed: bool = False,
                show_progress: bool = True, score: str = "class", rescore: bool = False) -> dict:
    """Validation APs of the weights being trained, as ``chromoseg predict`` and ``chromoseg evaluate``
    would measure a checkpoint of this run: the weights and build arguments go through a temporary
    checkpoint into :meth:`Predictor.from_checkpoint <chromoseg.engine.predict.Predictor.from_checkpoint>`
    (a separate model in eval mode: the one in training is not touched; a checkpoint recommends nothing,
    so it is the paper's rule -- top 100, mask NMS, class scores -- with its score threshold applied
    by the evaluation; ``score="object"`` is ``predict --score object``, how the shipped models are
    measured; ``rescore=True`` is ``predict --rescore on``), each image read as predict reads it (``read_image``) and predicted alone; the
    results are scored by :func:`ap_metrics`. Under DDP each rank predicts its share, rank 0 scores and
    every rank gets the figures. Also ``val/ap_images`` and ``val/ap_seconds``."""
    import tempfile

    from tqdm import tqdm

    from chromoseg.data.io import read_image
    from chromoseg.engine.predict import Predictor, instances_to_results

    t0 = time.perf_counter()
    world, rank, _ = dist_info() if distributed else (1, 0, 0)
    with tempfile.TemporaryDirectory(prefix="chromoseg-val-") as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"model": model.state_dict(), "model_config": model_config}, path)
        predictor = Predictor.from_checkpoint(path, {"score_threshold": 0.0, "score": score, "rescore": rescore},
                                              device=device)
    results = []
    for i in tqdm(range(rank, len(val_ds), world), desc="val AP", disable=not show_progress, leave=False,
                  dynamic_ncols=True):
        im = val_ds.images[i]
        insts = predictor([read_image(val_ds.image_path(i))])[0]
        for r in instances_to_results(insts, im["id"], im["file_name"]):
            r.pop("file_name")  # the image by its id: two images may share a name
            results.append(r)
    del predictor
    if distributed:
        import torch.distributed as dist

        shares = [None] * world
        dist.all_gather_object(shares, results)
        results = [r for share in shares for r in share]
    out = [None]
    if rank == 0:
        out[0] = {**ap_metrics(validation_truth(val_ds), results), "val/ap_images": len(val_ds),
                  "val/ap_seconds": time.perf_counter() - t0}
    if distributed:
        dist.broadcast_object_list(out, src=0)
    return out[0]


def ap_monitor(rec: dict, metric: str) -> tuple[Optional[str], Optional[float]]:
    """(name, value) of the AP ``metric`` in an epoch's record; (None, None) on an epoch without the AP
    pass. Where the set cannot score it, the nearest it can: box AP on a box-only set (for mask AP),
    binary AP without classes."""
    m = AP_METRIC.match(metric)
    iou, at, binary, coco = m.group(1), m.group(2) or "", m.group(3) or "", m.group(4) or ""
    for i in dict.fromkeys((iou, "box")):
        for b in dict.fromkeys((binary, "_binary")):
            name = f"val/{i}_ap{at}{b}{coco}"
            if rec.get(name) is not None:
                return name, rec[name]
    return None, None


# ---- the command --------------------------------------------------------------------------------

class MetricsLog:
    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard not installed
                self.tb = None

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None and "epoch" in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and "/" in k:
                    self.tb.add_scalar(k, v, rec["epoch"])
            self.tb.flush()


def checkpoint_state(model, model_config: dict, optimizer, scheduler, scaler, stopper: EarlyStopping,
                     cfg: TrainConfig, epochs_done: int, metrics: dict) -> dict:
    """What ``last.pt`` / ``best.pt`` hold after ``epochs_done`` whole epochs (``--resume`` starts the
    next): the model, its config, the optimizer's, scheduler's, AMP scaler's (None without one) and
    early stopping's states, the RNG state, the run's config and the epoch's ``metrics``."""
    return {"model": model.state_dict(), "model_config": model_config, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "epoch": epochs_done, "early_stopping": stopper.state_dict(), "rng": rng_state(),
            "config": cfg.to_dict(), "metrics": metrics}


def fit(cfg: TrainConfig, resume: Optional[str] = None, show_progress: bool = True, stop_after: Optional[int] = None,
        switch_metric: bool = False):
    """Train; returns a summary dict. ``resume``: a checkpoint path (``last.pt``). ``stop_after``:
    stop after this many epochs in this call (used to simulate a kill in tests).

    A resumed run keeps its own configuration but for ``epochs``, ``device``, ``workers``, ``out`` and
    ``val_every`` (taken from ``cfg``), and its early-stopping state; with ``switch_metric`` it monitors
    ``cfg.early_stop_metric`` scored with ``cfg.val_score`` from here on instead of its own: where that
    changes what is monitored the stopper starts afresh (the next monitored epoch becomes ``best.pt``;
    an ``"event": "monitor"`` record says so).

    When the run folder is gone (another machine), ``cfg.init_weights`` (a checkpoint, export or
    shipped model) with ``cfg.start_epoch = N`` continues the run's schedule: epochs N+1 .. ``epochs``
    at the learning rate, seeds and data order the lost run would have used (the optimizer's momentum
    starts afresh)."""
    import yaml
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    from chromoseg.data.dataset import collate_fn
    from chromoseg.models import build_model

    world, rank, local_rank = dist_info()
    distributed = world > 1
    device = resolve_device(cfg.device, local_rank)
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    main = rank == 0
    out = Path(cfg.out)
    ck, switched = None, None
    if resume:
        ck = load_checkpoint(resume)
        saved = TrainConfig.from_dict(ck["config"])
        # keep the run's configuration; only the epoch budget / device / workers / AP-pass interval may change
        saved.epochs, saved.device, saved.workers, saved.out = cfg.epochs, cfg.device, cfg.workers, cfg.out
        saved.val_every = cfg.val_every  # how often to pay for the AP pass: not part of the recipe
        saved.time_limit = cfg.time_limit  # minutes of this call (was: the first call's limit, whatever was typed)
        was = (saved.early_stop_metric, saved.val_score)
        if switch_metric:
            saved.early_stop_metric, saved.val_score = cfg.early_stop_metric, cfg.val_score
            if saved.early_stop_metric != was[0] or (is_ap_metric(was[0]) and saved.val_score != was[1]):
                switched = (was[0], saved.early_stop_metric)
        elif (cfg.early_stop_metric, cfg.val_score) != was:
            log.warning("resuming: the run monitors %s with %s scores (its own); %s with %s scores are not used",
                        *was, cfg.early_stop_metric, cfg.val_score)
        try:
            saved.__post_init__()
        except ValueError as err:
            raise TrainingError(str(err)) from None
        cfg = saved
    if main:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "config.yaml", "w") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    seed_everything(cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    mcfg = cfg.model_config()
    model = build_model(backbone_weights=cfg.backbone_weights if ck is None else None, **mcfg)
    if cfg.init_weights and ck is None:
        from .checkpoint import load_matching_weights

        n_init, left = load_matching_weights(model, cfg.init_weights)
        log.info("initialised %d tensors from %s; %d left as built%s", n_init, cfg.init_weights, len(left),
                 f" (e.g. {', '.join(left[:4])})" if left else "")
    model = model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise TrainingError(f"lr_schedule {cfg.lr_schedule!r}: use constant or cosine")
    steps_per_epoch = math.ceil(len(train_ds) / (cfg.batch_size * world))
    total = cfg.epochs * steps_per_epoch if cfg.lr_schedule == "cosine" else None
    if cfg.start_epoch:
        if not cfg.init_weights:
            raise TrainingError("start_epoch continues a schedule from a model's weights: give init_weights too")
        if not 0 < cfg.start_epoch < cfg.epochs:
            raise TrainingError(f"start_epoch {cfg.start_epoch} must lie between 0 and epochs ({cfg.epochs})")
    schedule = warmup_lambda(cfg.warmup_iters, cfg.warmup_factor, total)
    offset = cfg.start_epoch * steps_per_epoch  # steps the lost run had taken: the schedule goes on from there
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, (lambda it: schedule(it + offset)) if offset else schedule)
    dtype = amp_dtype(cfg.amp, device)
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("--amp bf16 on a CPU without bf16 instructions: emulated, likely slower than fp32")
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    ap_monitored = val_ds is not None and is_ap_metric(cfg.early_stop_metric)
    if ap_monitored and not validation_truth(val_ds)["annotations"]:
        raise TrainingError(f"early_stop_metric {cfg.early_stop_metric}: the validation set {cfg.val} has no "
                            "annotated chromosomes to score")
    stopper = EarlyStopping(cfg.patience, mode="max" if ap_monitored else "min")
    start_epoch = cfg.start_epoch
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        if switched is None:
            try:
                stopper.load_state_dict(ck["early_stopping"])
            except ValueError as err:  # e.g. an AP-monitored run whose validation set is now empty
                raise TrainingError(f"{resume}: {err} (monitoring {cfg.early_stop_metric}"
                                    f"{', no validation set' if val_ds is None else ''})") from None
        start_epoch = int(ck["epoch"])
        set_rng_state(ck["rng"])
    ddp_model = model
    if distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False)  # every head runs on every step

    gen = torch.Generator()
    if distributed:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        val_sampler = DistributedSampler(val_ds, world, rank, shuffle=False) if val_ds is not None else None
    else:
        sampler = RandomSampler(train_ds, generator=gen)
        val_sampler = SequentialSampler(val_ds) if val_ds is not None else None
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate_fn, generator=gen, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.workers > 0)  # workers keep their data caches
    val_loader = None
    if val_ds is not None:
        val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, sampler=val_sampler, num_workers=cfg.workers,
                                collate_fn=collate_fn, pin_memory=device.type == "cuda",
                                persistent_workers=cfg.workers > 0)
    mlog = MetricsLog(out, main)
    if main:
        mlog.write({"event": "resume" if ck is not None else "start", "epoch": start_epoch, "time": time.time(),
                    "device": str(device), "world_size": world, "amp": str(dtype), "variant": cfg.variant,
                    "train_images": len(train_ds), "val_images": len(val_ds) if val_ds is not None else 0,
                    "early_stop_metric": cfg.early_stop_metric, "val_every": cfg.val_every if val_ds is not None else 0,
                    "val_score": cfg.val_score})
        if switched is not None:
            mlog.write({"event": "monitor", "epoch": start_epoch, "was": switched[0], "now": switched[1],
                        "val_score": cfg.val_score,
                        "note": "the stopper starts afresh: the next monitored epoch becomes best.pt"})
    summary = {"stopped": "epochs", "epochs_run": 0}
    monitored = None
    deadline = time.monotonic() + 60.0 * cfg.time_limit if cfg.time_limit else None
    for epoch in range(start_epoch, cfg.epochs):
        if stopper.should_stop:  # resumed from a run that had already stopped early
            summary["stopped"] = "early_stopping"
            break
        if stop_after is not None and summary["epochs_run"] >= stop_after:
            summary["stopped"] = "stop_after"
            break
        seed_everything(cfg.seed + epoch)
        gen.manual_seed(cfg.seed + epoch)
        if distributed:
            sampler.set_epoch(epoch)
        rec = {"epoch": epoch + 1}
        rec.update(train_one_epoch(ddp_model, loader, optimizer, scheduler, device, epoch, cfg, scaler, dtype,
                                   show_progress and main, deadline, distributed))
        rec["lr"] = optimizer.param_groups[0]["lr"]
        if distributed:  # every rank sees its own share; report the whole job's throughput
            rec["world_size"] = world
            rec["train/images"] *= world
            rec["train/images_per_s"] *= world

        try:
            if val_loader is not None:
                rec.update(validate(ddp_model, val_loader, device, dtype, distributed, show_progress and main))
                ending = (epoch + 1 == cfg.epochs or bool(rec.get("train/partial"))
                          or (deadline is not None and time.monotonic() > deadline))
                if cfg.val_every and ((epoch + 1) % cfg.val_every == 0 or ending):
                    rec.update(validate_ap(model, mcfg, val_ds, device, distributed, show_progress and main,
                                           score=cfg.val_score, rescore=cfg.val_rescore))
                if ap_monitored:  # None on an epoch without the AP pass: the stopper waits for the next
                    name, metric = ap_monitor(rec, cfg.early_stop_metric)
                else:
                    name = f"val/{cfg.early_stop_metric}" if f"val/{cfg.early_stop_metric}" in rec else "val/loss"
                    if name.endswith("loss_mask") and rec[name] == 0.0 and "val/loss" in rec:
                        name = "val/loss"  # box-only validation set: no mask loss, use the total
                    metric = rec.get(name)
            else:  # no validation set; or a model without the metric (Deep Snake has no mask loss): the total
                name = f"train/{cfg.early_stop_metric}" if f"train/{cfg.early_stop_metric}" in rec else "train/loss"
                metric = rec[name]
        except (Exception, KeyboardInterrupt) as err:  # the epoch's training is kept: --resume goes on from the next
            if main:
                atomic_save(checkpoint_state(model, mcfg, optimizer, scheduler, scaler, stopper, cfg, epoch + 1,
                                             {**rec, "validation_error": repr(err)}), out / "last.pt")
                mlog.write({"event": "validation_failed", "epoch": epoch + 1, "error": repr(err)})
                log.error("validation after epoch %d failed (%s): the epoch's training is saved in %s; mend the "
                          "cause and continue with --resume (epoch %d keeps no validation figures)",
                          epoch + 1, err, out / "last.pt", epoch + 1)
            raise
        improved = stopper.update(metric, epoch + 1) if metric is not None else False
        monitored = name or monitored
        rec.update({"monitor": metric, "monitored": name or f"val/{cfg.early_stop_metric}", "best": stopper.best,
                    "best_epoch": stopper.best_epoch, "bad_epochs": stopper.bad_epochs})
        if main:
            state = checkpoint_state(model, mcfg, optimizer, scheduler, scaler, stopper, cfg, epoch + 1, rec)
            atomic_save(state, out / "last.pt")
            if improved:
                atomic_save(state, out / "best.pt")
            mlog.write(rec)
            aps = ", ".join(f"{k[4:]} {rec[k]:.4f}" for k in ("val/mask_ap", "val/box_ap50") if rec.get(k) is not None)
            log.info("epoch %d: train loss %.4f, %s %s (best %s @ %s)%s, %.2f img/s", epoch + 1, rec["train/loss"],
                     rec["monitored"], "-" if metric is None else f"{metric:.4f}",
                     "-" if stopper.best is None else f"{stopper.best:.4f}", stopper.best_epoch,
                     f", {aps}" if aps else "", rec["train/images_per_s"])
        summary["epochs_run"] += 1
        summary["last"] = rec
        if stopper.should_stop:
            summary["stopped"] = "early_stopping"
            if main:
                mlog.write({"event": "early_stop", "epoch": epoch + 1, "best_epoch": stopper.best_epoch,
                            "best": stopper.best})
            break
        if rec.get("train/partial") or (deadline is not None and time.monotonic() > deadline):
            summary["stopped"] = "time_limit"
            if main:
                mlog.write({"event": "time_limit", "epoch": epoch + 1, "minutes": cfg.time_limit})
            break
    if main and summary["stopped"] == "epochs" and summary["epochs_run"]:  # the cap: why the run ended, recorded
        mlog.write({"event": "epochs", "epoch": cfg.epochs})
    summary.update(best=stopper.best, best_epoch=stopper.best_epoch, out=str(out),
                   monitored=monitored or summary.get("last", {}).get("monitored", cfg.early_stop_metric))
    if distributed:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary
