"""``chromoseg train``, ``chromoseg train-classifier`` and ``chromoseg pretrain``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chromoseg.cli import COMMANDS, nonneg_float, nonneg_int, positive_float, positive_int, unit_float
from chromoseg.data.stain import STAINS, inverts
from chromoseg.engine.train_config import train_defaults
from chromoseg.models.builder import model_defaults
from chromoseg.models.variants import NAMES as VARIANT_NAMES, variants_help

TRAIN_DESCRIPTION = """\
Train one of the paper's networks on a chromoseg dataset (COCO JSON as written by
`chromoseg data import`).

Variants (Tables I and II; erm1 and erm4 name rmr and ermr):
{variants}

Recipe (paper, Sec. III; the defaults):
  SGD, momentum {momentum}, learning rate {lr} (+ weight decay {weight_decay} and a short linear warm-up),
  inputs resized to {width} x {height} (W x H), up to {epochs} epochs, early stop when the validation mask loss
  has not improved for {patience} epochs; best.pt keeps the best validation mask loss, last.pt the last
  epoch. Loss = sum of the eq. (2) terms (+ eq. (4) endpoint term with ED), each logged.
  There are no downloadable ImageNet weights here: start from scratch or from
  --backbone-weights (e.g. the file `chromoseg pretrain` writes).

Validation by AP: every --val-every epochs (default 1) the validation images are also predicted
as `chromoseg predict` predicts them with a checkpoint of the run (eval mode, the paper's rule) and
scored as `chromoseg evaluate` scores them: metrics.jsonl gets val/mask_ap, val/mask_ap50,
val/mask_ap75, val/box_ap, val/box_ap50, val/box_ap75 (24 classes) and the same with _binary
(class-agnostic), under the paper's score threshold 0.5 and, with _coco, without one. Box AP is
scored against the annotators' boxes where the set keeps them beside pseudo-masks (source_bbox, the
G-band validation split). --early-stop-metric mask_ap (or any of those names; higher is better)
chooses best.pt and counts patience on it instead of the mask loss. --val-score object scores as
`predict --score object` does, how the shipped models are measured (with class scores, the paper's,
few of their detections reach 0.5, and the APs under that threshold stay near 0).

Run folder (--out): config.yaml, metrics.jsonl (one JSON line per epoch), last.pt, best.pt,
tb/ (TensorBoard, if installed). Checkpoints are written atomically every epoch; after a kill,
`--resume` (or `--resume PATH`) continues from last.pt with the same data order and RNG state
(an error in validation still saves the epoch's training there first).
Mixed precision (bf16, else fp16) is used on a GPU; gradients are clipped; a NaN/inf loss stops
the run with a message. Under `torchrun --nproc-per-node N -m chromoseg.cli train ...` the same command
trains with DDP (only rank 0 writes).
"""

TRAIN_EPILOG = """\
examples:
  chromoseg train --data datasets/mfish --variant ermr --out runs/ermr
  chromoseg train --train a.json --val b.json --variant mr --backbone resnet18 --out runs/mr
  chromoseg train --data datasets/mfish --out runs/ermr --resume
  # quick CPU check: small model settings, 8 images, 2 epochs
  chromoseg train --data datasets/mfish --variant rmr --backbone resnet18 --small \\
      --max-images 8 --epochs 2 --image-size 320x256 --out runs/quick
  torchrun --nproc-per-node 4 -m chromoseg.cli train --data datasets/mfish --out runs/ermr
"""

PRETRAIN_DESCRIPTION = """\
Pretrain the ResNet backbone as a 24-class classifier of single G-banded chromosomes
(../shared/data/single-chromosomes-gband: one .npz per cell, entries `CLASS/claseCLASS_K_CELL`,
8-bit grey, CLASS 1-24), split by cell with a fixed seeded split (80/10/10 train/val/test).
Writes OUT/backbone.pt ({"backbone": ResNet state dict, "arch", "in_channels", "accuracy", ...}),
which `chromoseg train --backbone-weights OUT/backbone.pt` starts from, plus OUT/metrics.jsonl and
OUT/report.json with the held-out (test cells) accuracy.
"""


def _size(text: str):
    t = text.lower().replace("×", "x")
    if t in ("keep", "none", "0"):
        return None
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x"))
        elif "," in t:
            h, w = (int(v) for v in t.split(","))
        else:
            w = h = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: use WxH, e.g. 640x512, or 'keep'") from None
    if not (32 <= w <= 8192 and 32 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"image size {text!r}: width and height must be 32-8192 px")
    return (h, w)


def _metric(text: str) -> str:
    from chromoseg.engine.train import AP_METRIC_EXAMPLES, is_ap_metric

    t = text.strip().lower()
    t = t[4:] if t.startswith("val/") else t
    if not (t.startswith("loss") or is_ap_metric(t)):
        raise argparse.ArgumentTypeError(f"{text!r}: a validation loss (loss_mask, loss, ...) or AP "
                                         f"({', '.join(AP_METRIC_EXAMPLES)}, ...)")
    return t


def register(subparsers) -> None:
    # every option's default is TrainConfig's (or build_model's): an option not typed is absent from the
    # parsed arguments (argument_default=SUPPRESS), so a --config file or the resumed run's config fills it
    D, M = train_defaults(), model_defaults()
    h, w = D["image_size"]
    description = TRAIN_DESCRIPTION.replace("{variants}", variants_help())
    for key, value in dict(D, width=w, height=h).items():
        description = description.replace("{%s}" % key, f"{value:g}" if isinstance(value, float) else str(value))
    p = subparsers.add_parser("train", help=COMMANDS["train"][1], description=description,
                              epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                              argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="DIR", help="folder with train.json and val.json (from `chromoseg data import`)")
    g.add_argument("--train", metavar="JSON", help="training set (instead of --data)")
    g.add_argument("--extra-train", action="append", metavar="JSON",
                   help="another training set, repeatable (e.g. datasets/bioimlab/train.json: chromosomes without "
                        "classes train detection and masks, no class)")
    g.add_argument("--val", metavar="JSON", help="validation set (early stopping); without it the training loss is monitored")
    g.add_argument("--max-images", type=positive_int, metavar="N", help="use only the first N training (and validation) images")
    g.add_argument("--image-size", type=_size, metavar="WxH",
                   help=f"input size, WxH (default {w}x{h}, the paper's); 'keep' keeps each image's size")
    g.add_argument("--no-augment", action="store_true", help="no flips / rotations / intensity jitter")
    g.add_argument("--zoom", type=float, nargs=2, metavar=("LO", "HI"),
                   help="also zoom each training image by a random factor in [LO, HI] (half the images) and "
                        "move it, filling with the background: chromosomes at other sizes and places (e.g. 0.7 1.4)")
    g.add_argument("--frame", action="store_true",
                   help="crop every image to its metaphase (plus a margin) before resizing, in training and -- "
                        "recorded in the model -- at inference, so chromosome size no longer depends on the "
                        "camera's framing")
    g.add_argument("--stain", choices=STAINS,
                   help="the images' polarity: fluorescence (bright chromosomes on dark: DAPI, Q-band; default) or "
                        "brightfield (dark on light: G-band; the model inverts each image first, so --init-weights "
                        "from a fluorescence model carries over)")
    g.add_argument("--workers", type=nonneg_int, help=f"data loader processes (default {D['workers']})")
    g = p.add_argument_group("model")
    g.add_argument("--variant", choices=list(VARIANT_NAMES),
                   help=f"network (default {D['variant']}; snake = Deep Snake, a contour-based baseline)")
    g.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50", "resnet101"],
                   help=f"ResNet depth (default {D['backbone']}, the paper's)")
    g.add_argument("--backbone-weights", metavar="PATH", help="ResNet state dict to start from (torchvision's or `chromoseg pretrain`'s)")
    g.add_argument("--init-weights", metavar="MODEL",
                   help="start from another chromoseg model (a train checkpoint, an exported .safetensors, or a "
                        "shipped model's name such as mfish): every tensor whose name and shape fit is copied")
    g.add_argument("--trainable-layers", type=int, choices=range(6), metavar="K",
                   help=f"ResNet stages trained (5 = all; default {M['trainable_layers']}; 3 freezes conv1 and layer1, "
                        "as torchvision)")
    g.add_argument("--num-classes", type=positive_int,
                   help=f"chromosome classes (default {D['num_classes']}, the human ones), 1 = class-agnostic")
    g.add_argument("--endpoint-loss-weight", type=nonneg_float, metavar="W",
                   help=f"weight of the eq. (4) endpoint term (default {M['endpoint_loss_weight']:g}, the paper's; it is a mean over all pixels, "
                        "so the branch learns slowly at 1; e.g. 100 makes it learn faster)")
    g.add_argument("--roi-fg-iou", type=float, metavar="T",
                   help="training: a sampled RoI overlapping its chromosome by IoU >= T is that chromosome, "
                        f"below T background (default {M['box_fg_iou_thresh']:g}, the paper's; e.g. 0.4 teaches the box head to score "
                        "the looser rotated proposals of long chromosomes)")
    g.add_argument("--small", action="store_true", help="few proposals / RoIs and a thin endpoint branch (CPU runs)")
    g.add_argument("--compact", action="store_true",
                   help="the shipped model's widths: 128-channel FPN and mask head, 512-d box head, 32-channel "
                        "endpoint branch, 128 RoIs / image (with resnet18: ~32 MB in fp16)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help=f"maximum epochs (default {D['epochs']})")
    g.add_argument("--batch-size", type=positive_int, help=f"images per step and process (default {D['batch_size']})")
    g.add_argument("--lr", type=positive_float, help=f"SGD learning rate (default {D['lr']:g})")
    g.add_argument("--momentum", type=unit_float, help=f"SGD momentum (default {D['momentum']:g})")
    g.add_argument("--weight-decay", type=nonneg_float, help=f"SGD weight decay (default {D['weight_decay']:g})")
    g.add_argument("--warmup-iters", type=nonneg_int, help=f"linear warm-up steps (default {D['warmup_iters']})")
    g.add_argument("--lr-schedule", choices=["constant", "cosine"],
                   help=f"after warm-up: constant (the paper) or cosine decay to 0 at --epochs (default {D['lr_schedule']})")
    g.add_argument("--time-limit", type=positive_float, metavar="MIN",
                   help="stop after MIN minutes of training in this call: the epoch running then ends early, is "
                        "validated and saved (for runs under a common time budget, e.g. the tables)")
    g.add_argument("--patience", type=nonneg_int, help="early stop after N epochs without a better validation mask loss, or "
                   f"whatever --early-stop-metric names (default {D['patience']}; 0 = never)")
    g.add_argument("--early-stop-metric", type=_metric, metavar="NAME",
                   help=f"what early stopping and best.pt follow: a validation loss ({D['early_stop_metric']}, the default and the "
                        "paper's; loss; lower is better) or a validation AP (mask_ap, mask_ap50, box_ap50, "
                        "mask_ap_binary, ..., _coco for no score threshold; higher is better: see above). With "
                        "--resume it switches a run's metric (its stopper starts afresh)")
    g.add_argument("--val-every", type=nonneg_int, metavar="N",
                   help=f"the AP pass on the validation set every N epochs and at the last (default {D['val_every']}; 0 = losses "
                        "only); patience still counts epochs")
    g.add_argument("--val-rescore", action="store_true",
                   help="the AP pass rescores each detection on its own final box (predict --rescore on; how the "
                        "shipped G-band model is measured)")
    g.add_argument("--val-score", choices=["class", "object"],
                   help=f"the AP pass's scores (default {D['val_score']}): class (the paper's rule, what predict applies to the run's "
                        "checkpoints) or object (1 - P(background), predict --score object: how the shipped models "
                        "are measured; rotated variants). Class scores can stay under 0.5 long after the "
                        "chromosomes are found: then the APs under the 0.5 threshold stay near 0 (the _coco ones do "
                        "not). With --resume it changes a run's (an AP-monitoring stopper starts afresh)")
    g.add_argument("--grad-clip", type=nonneg_float, help=f"max gradient norm (default {D['grad_clip']:g}; 0 = off)")
    g.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], help=f"mixed precision (default {D['amp']}): auto = bf16/fp16 on a GPU, bf16 on a CPU with bf16 instructions "
                        "(AVX512-BF16 / AMX: about 1.7x faster; within the noise of two fp32 seeds), else fp32; "
                        "bf16 also on other CPUs (emulated: slower); off = fp32")
    g.add_argument("--seed", type=nonneg_int, help=f"random seed (default {D['seed']})")
    g = p.add_argument_group("run")
    g.add_argument("--device", help=f"auto, cpu, cuda, cuda:1 ... (default {D['device']})")
    g.add_argument("--out", metavar="DIR", help=f"run folder (default {D['out']})")
    g.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT", help="continue from CKPT (default OUT/last.pt)")
    g.add_argument("--start-epoch", type=nonneg_int, metavar="N",
                   help="with --init-weights: continue a run whose folder is gone (another machine) from a model "
                        "of its epoch N -- the same --epochs, --lr and schedule; trains epochs N+1..--epochs")
    g.add_argument("--stop-after", type=positive_int, metavar="N",
                   help="train at most N epochs in this call, then stop with every epoch whole (--resume goes on; "
                        "--epochs stays the run's cap; e.g. a campaign fitting whole epochs into a session)")
    g.add_argument("--config", default=None, metavar="FILE", help="YAML/JSON file with any of the options above (command-line options override it)")
    g.add_argument("--no-progress", action="store_true", default=False, help="no progress bars")
    p.set_defaults(func=cmd_train)

    c = subparsers.add_parser(
        "train-classifier", help=COMMANDS["train-classifier"][1],
        description="Train a small CNN that names each chromosome from its upright crop (image and mask in its "
                    "rotated box) and its length relative to the cell (chromoseg.models.crop_classifier), on the "
                    "ground-truth instances of --data (train; the best epoch on val), and write MODEL with it "
                    "attached to --out (a checkpoint: `chromoseg export` makes the shipped file). predict then "
                    "takes the classes from it. Prints train/val/test accuracy, alone and with the per-cell "
                    "karyotype-aware assignment. With --pretrain-singles it first learns the 24 classes on the "
                    "28k single G-banded chromosomes (inverted for a fluorescence model) and starts from that.",
        epilog="examples:\n  chromoseg train-classifier --data datasets/mfish --model runs/ermr/best.pt --out runs/ermr/with_classifier.pt\n"
               "  chromoseg train-classifier --data datasets/mfish --model mfish --pretrain-singles --out runs/clf/with_classifier.pt\n"
               "  chromoseg train-classifier --data datasets/mfish --model runs/ermr/best.pt --reuse runs/clf/with_classifier.pt "
               "runs/ermr/with_classifier.pt --out runs/ermr/with_ensemble.pt\n"
               "  chromoseg train-classifier --data datasets/mfish --model runs/ermr/best.pt --init mfish --detected-crops "
               "--epochs 8 --lr 1e-3 --out runs/ermr/with_tuned.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--data", required=True, metavar="DIR", help="folder with train.json, val.json (and test.json)")
    c.add_argument("--model", required=True, metavar="MODEL", help="the detector: checkpoint, export or shipped name")
    c.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write (model + classifier)")
    c.add_argument("--epochs", type=positive_int, default=15)
    c.add_argument("--lr", type=positive_float, default=3e-3)
    c.add_argument("--width", type=positive_int, default=16, help="channels of the first block (default 16)")
    c.add_argument("--seed", type=nonneg_int, default=0)
    c.add_argument("--reuse", metavar="FILE", nargs="+",
                   help="take the classifier from FILE (a model that has one) instead of training it: attach and "
                        "measure; several files: their ensemble (class probabilities averaged)")
    c.add_argument("--pretrain-singles", nargs="?", const="default", metavar="DIR",
                   help="pretrain on the single G-banded chromosomes first (DIR: their folder; default "
                        "../shared/data/single-chromosomes-gband): their train cells, the best epoch on their val cells")
    c.add_argument("--pretrain-epochs", type=positive_int, default=8, help="epochs of --pretrain-singles (default 8)")
    c.add_argument("--detected-crops", action="store_true",
                   help="also train on MODEL's own instances on the train images (matched to the ground truth at mask "
                        "IoU >= 0.5, labelled by their match): the masks and boxes the classifier is given at prediction")
    c.add_argument("--init", metavar="FILE",
                   help="start from the classifier of FILE (a model that has one) instead of from scratch; an ensemble's "
                        "members are each trained on from their own weights")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_train_classifier)

    q = subparsers.add_parser("pretrain", help=COMMANDS["pretrain"][1],
                              description=PRETRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--data", default=None, metavar="DIR",
                   help="folder of .npz cells (default ../shared/data/single-chromosomes-gband beside the repo)")
    q.add_argument("--backbone", default="resnet50", choices=["resnet18", "resnet34", "resnet50", "resnet101"])
    q.add_argument("--epochs", type=positive_int, default=30)
    q.add_argument("--batch-size", type=positive_int, default=64)
    q.add_argument("--lr", type=positive_float, default=0.05, help="SGD learning rate, cosine schedule (default 0.05)")
    q.add_argument("--image-size", type=positive_int, default=96, metavar="S", help="crops are padded/resized to SxS (default 96)")
    q.add_argument("--max-cells", type=positive_int, metavar="N", help="use only N cells (quick runs)")
    q.add_argument("--workers", type=nonneg_int, default=2)
    q.add_argument("--device", default="auto")
    q.add_argument("--seed", type=nonneg_int, default=0)
    q.add_argument("--out", default="runs/pretrain", metavar="DIR")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_pretrain)


def _load_config_file(path: str) -> dict:
    from pathlib import Path

    from chromoseg.cli import CliError

    p = Path(path)
    if not p.is_file():
        raise CliError(f"config file not found: {p}")
    try:
        if p.suffix.lower() == ".json":
            import json

            d = json.loads(p.read_text())
        else:
            import yaml

            d = yaml.safe_load(p.read_text())
    except Exception as err:
        raise CliError(f"{p}: cannot parse ({err})") from None
    if not isinstance(d, dict):
        raise CliError(f"{p}: expected a mapping of options")
    return d


def _image_count(path) -> int | None:
    """Images in a dataset JSON (None when it cannot be read: the training code reports that)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    images = data.get("images") if isinstance(data, dict) else None
    return len(images) if isinstance(images, list) else None


#: ``chromoseg train`` options that set a ``build_model`` argument (kept in ``TrainConfig.model_kwargs``):
#: option -> (argument, the argument's value for the option's value)
MODEL_OPTIONS = {"endpoint_loss_weight": ("endpoint_loss_weight", float),
                 "trainable_layers": ("trainable_layers", int),
                 "stain": ("invert", inverts),
                 "frame": ("frame", bool),
                 "roi_fg_iou": ("box_fg_iou_thresh", float)}


def train_options(args, base: dict) -> tuple[dict, set]:
    """The training configuration from the parsed arguments and ``base`` (a ``--config`` file's or the
    resumed run's options): what was typed wins, then ``base``, then ``TrainConfig``'s defaults (left
    out here). Options not typed are absent from ``args`` (the parser's defaults are SUPPRESS).
    ``base``'s ``model_kwargs``, where it has them, stand whole. Returns (options, the TrainConfig
    keys typed)."""
    keys = set(train_defaults()) | set(MODEL_OPTIONS) | {"no_augment"}  # not --data, --config, --resume ...
    typed = {k: v for k, v in vars(args).items() if k in keys}
    model_kwargs, model_args = {}, model_defaults()
    for option, (name, convert) in MODEL_OPTIONS.items():
        if option in typed:
            value = convert(typed.pop(option))
            if value != model_args[name]:
                model_kwargs[name] = value
    if "no_augment" in typed:
        typed["augment"] = not typed.pop("no_augment")
    if typed.get("zoom"):
        typed["zoom"] = tuple(typed["zoom"])
    opts = {**base, **typed}
    if model_kwargs and "model_kwargs" not in base:
        opts["model_kwargs"] = model_kwargs
    return opts, set(typed)


def cmd_train(args) -> int:
    from pathlib import Path

    from chromoseg.cli import CliError
    from chromoseg.engine.train import TrainConfig, TrainingError, fit

    base = {}
    if args.config:
        base = _load_config_file(args.config)
    elif args.resume:  # resume: the run's own saved config is the base, so `--out RUN --resume` is enough
        run_dir = Path(getattr(args, "out", train_defaults()["out"])) if args.resume == "auto" else Path(args.resume).parent
        if (run_dir / "config.yaml").is_file():
            base = _load_config_file(str(run_dir / "config.yaml"))
    opts, explicit = train_options(args, base)
    if args.data:
        d = Path(args.data)
        if not d.is_dir():
            raise CliError(f"--data {d}: not a folder")
        opts["train"] = opts.get("train") or str(d / "train.json")
        if not opts.get("val") and (d / "val.json").is_file():
            opts["val"] = str(d / "val.json")
    if not opts.get("train"):
        raise CliError("give --data DIR or --train JSON")
    for key in ("train", "val"):
        if opts.get(key) and not Path(opts[key]).is_file():
            raise CliError(f"{key} set not found: {opts[key]}")
    for key in ("train", "val"):  # an empty set (e.g. an import with a small --limit) is said here, not mid-run
        if opts.get(key) and _image_count(opts[key]) == 0:
            if key == "train":
                raise CliError(f"the training set {opts[key]} has no images")
            print(f"warning: the validation set {opts[key]} has no images: training without validation (early "
                  f"stopping on the training loss)", file=sys.stderr)
            opts["val"] = None
    if opts.get("init_weights"):
        from chromoseg.weights import resolve_model

        try:
            opts["init_weights"] = str(resolve_model(opts["init_weights"]))
        except (ValueError, FileNotFoundError) as err:
            raise CliError(f"--init-weights: {err}") from None
    if opts.get("backbone_weights") and not Path(opts["backbone_weights"]).is_file():
        raise CliError(f"--backbone-weights: file not found: {opts['backbone_weights']}")
    try:
        cfg = TrainConfig.from_dict(opts)
    except (TypeError, ValueError) as err:
        raise CliError(str(err)) from None
    resume = None
    if args.resume:
        resume = Path(cfg.out) / "last.pt" if args.resume == "auto" else Path(args.resume)
        if not resume.is_file():
            raise CliError(f"--resume: checkpoint not found: {resume}")
    try:
        summary = fit(cfg, resume=str(resume) if resume else None, show_progress=not args.no_progress,
                      switch_metric=bool({"early_stop_metric", "val_score"} & explicit),
                      stop_after=getattr(args, "stop_after", None))
    except TrainingError as err:
        raise CliError(str(err)) from None
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    import os

    if os.environ.get("RANK", "0") != "0":
        return 0
    print(f"done: {summary['epochs_run']} epochs run ({summary['stopped']}), best {summary.get('monitored', cfg.early_stop_metric)} "
          f"{summary['best']} at epoch {summary['best_epoch']}; checkpoints in {summary['out']}")
    return 0


def cmd_train_classifier(args) -> int:
    import json

    import torch

    from chromoseg.cli import CliError
    from chromoseg.engine.checkpoint import load_model
    from chromoseg.engine.crop_classifier import attach, collect_crops, fit_crop_classifier, joint_accuracy, predict_probs
    from chromoseg.weights import resolve_model

    if args.reuse and args.pretrain_singles:
        raise CliError("--reuse takes a trained classifier; --pretrain-singles trains one: give one of them")
    if args.init and (args.reuse or args.pretrain_singles):
        raise CliError("--init starts training from a classifier: it goes with neither --reuse nor --pretrain-singles")
    if args.pretrain_singles:  # before minutes of cropping
        from chromoseg.data.single_chromosomes import default_data_dir

        singles_dir = default_data_dir() if args.pretrain_singles == "default" else Path(args.pretrain_singles)
        if not singles_dir.is_dir():
            raise CliError(f"--pretrain-singles {singles_dir}: no such folder")
    d = Path(args.data)
    for name in ("train", "val"):
        if not (d / f"{name}.json").is_file():
            raise CliError(f"--data {d}: no {name}.json")
    try:
        model_path = resolve_model(args.model)
    except (ValueError, FileNotFoundError) as err:
        raise CliError(f"--model: {err}") from None
    starts = []
    if args.init:
        from chromoseg.models.crop_classifier import CropClassifierEnsemble

        try:
            start = load_model(resolve_model(args.init)).crop_classifier
        except (ValueError, FileNotFoundError) as err:
            raise CliError(f"--init: {err}") from None
        if start is None:
            raise CliError(f"--init {args.init}: that model has no crop classifier")
        starts = list(start.members) if isinstance(start, CropClassifierEnsemble) else [start]
    sets = {n: collect_crops(d / f"{n}.json", progress=not args.no_progress)
            for n in ("train", "val", "test") if (d / f"{n}.json").is_file()}
    fit_on, detected = sets["train"], None
    if args.detected_crops and not args.reuse:
        from chromoseg.engine.crop_classifier import collect_detected_crops

        try:
            detected = collect_detected_crops(model_path, d / "train.json", progress=not args.no_progress)
        except ValueError as err:
            raise CliError(f"--detected-crops: {err}") from None
        fit_on = {k: torch.cat([sets["train"][k], detected[k]]) for k in fit_on}
        print(f"detected crops: {detected['labels'].numel()} of the model's instances on the train images match a "
              f"chromosome; training on them and the {sets['train']['labels'].numel()} ground-truth crops")
    if args.reuse:
        from chromoseg.models.crop_classifier import CropClassifierEnsemble

        members = []
        for f in args.reuse:
            try:
                clf = load_model(resolve_model(f)).crop_classifier
            except (ValueError, FileNotFoundError) as err:
                raise CliError(f"--reuse: {err}") from None
            if clf is None:
                raise CliError(f"--reuse {f}: that model has no crop classifier")
            members += list(clf.members) if isinstance(clf, CropClassifierEnsemble) else [clf]
        clf, hist = (members[0] if len(members) == 1 else CropClassifierEnsemble(members)).float().eval(), []
    pretrain, init = None, None
    if args.pretrain_singles:
        from chromoseg.engine.crop_classifier import collect_single_crops

        dark_on_light = bool(getattr(load_model(model_path).transform, "invert", False))  # a brightfield model
        src = None if args.pretrain_singles == "default" else args.pretrain_singles
        try:
            singles = {n: collect_single_crops(src, cells=n, dark_on_light=dark_on_light, progress=not args.no_progress)
                       for n in ("train", "val", "test")}
        except (ValueError, FileNotFoundError) as err:
            raise CliError(f"--pretrain-singles: {err}") from None
        init, phist = fit_crop_classifier(singles["train"], singles["val"], epochs=args.pretrain_epochs, lr=args.lr,
                                          seed=args.seed, width=args.width, progress=not args.no_progress)
        pretrain = {"data": str(src or "single-chromosomes-gband"), "epochs": args.pretrain_epochs, "history": phist,
                    "dark_on_light": dark_on_light, "accuracy": {}}
        for n, data in singles.items():
            probs = predict_probs(init, data)
            pretrain["accuracy"][n] = {"instances": int(data["labels"].numel()),
                                       "independent": float((probs.argmax(1) == data["labels"]).float().mean()),
                                       "karyotype_assignment": joint_accuracy(probs, data)}
            print(f"pretraining, single chromosomes {n}: {data['labels'].numel()} chromosomes, class accuracy "
                  f"{100 * pretrain['accuracy'][n]['independent']:.1f}%")
    if not args.reuse:
        from chromoseg.models.crop_classifier import CropClassifierEnsemble

        members, hist = [], []
        for k, start in enumerate(starts or [init]):
            m, h = fit_crop_classifier(fit_on, sets["val"], epochs=args.epochs, lr=args.lr, seed=args.seed + k,
                                       width=args.width, progress=not args.no_progress, init=start)
            members.append(m)
            hist += [dict(e, member=k) for e in h] if len(starts) > 1 else h
        clf = members[0] if len(members) == 1 else CropClassifierEnsemble(members).eval()
    report = {"data": str(d), "model": str(model_path), "epochs": args.epochs, "history": hist, "accuracy": {},
              "pretrain": pretrain, "reuse": [str(f) for f in args.reuse or []], "init": args.init,
              "detected_crops": None if detected is None else int(detected["labels"].numel())}
    for n, data in sets.items():
        probs = predict_probs(clf, data)
        report["accuracy"][n] = {"instances": int(data["labels"].numel()),
                                 "independent": float((probs.argmax(1) == data["labels"]).float().mean()),
                                 "karyotype_assignment": joint_accuracy(probs, data)}
    out = attach(model_path, clf, args.out)
    Path(out).with_suffix(".classifier.json").write_text(json.dumps(report, indent=1))
    for n, a in report["accuracy"].items():
        print(f"{n}: {a['instances']} ground-truth chromosomes, class accuracy {100 * a['independent']:.1f}% "
              f"(with the karyotype-aware assignment {100 * a['karyotype_assignment']:.1f}%)")
    print(f"written {out} (report {Path(out).with_suffix('.classifier.json')})")
    return 0


def cmd_pretrain(args) -> int:
    from chromoseg.cli import CliError
    from chromoseg.engine.pretrain import PretrainError, pretrain

    try:
        rep = pretrain(data=args.data, backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, image_size=args.image_size, max_cells=args.max_cells, workers=args.workers,
                       device=args.device, seed=args.seed, out=args.out, show_progress=not args.no_progress)
    except (PretrainError, FileNotFoundError) as err:
        raise CliError(str(err)) from None
    print(f"held-out accuracy {rep['test_accuracy']:.4f} on {rep['test_images']} chromosomes of "
          f"{rep['test_cells']} cells; backbone written to {rep['weights']}")
    return 0
