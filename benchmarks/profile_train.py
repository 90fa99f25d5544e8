"""Per-stage time of one training step and one inference call, for mr / rmr / ermr.

Usage:
  OMP_NUM_THREADS=2 python benchmarks/profile_train.py --variants mr rmr ermr --size 480x384 \
      --compact --steps 6 --out benchmarks/results/train_profile.md

Stages are timed by wrapping the model's own methods (wall time, each stage's children excluded
from its parent only where noted). Data: the first M-FISH training images
(``datasets/mfish/train.json``) through the training transforms (augmentation on), batch 2. The
median over ``--steps`` steps (after one warm-up step) is reported, all variants stepped in turn.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class StageTimer:
    def __init__(self):
        self.t = defaultdict(float)

    def wrap(self, obj, name, stage):
        fn = getattr(obj, name)

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[stage] += time.perf_counter() - t0

        setattr(obj, name, timed)

    def time(self, stage):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.t[stage] += time.perf_counter() - self.t0

        return _Ctx()


def instrument(model, timer: StageTimer):
    import chromoseg.models.roi_heads as rh

    bb = model.backbone
    timer.wrap(bb.fpn, "forward", "backbone (ResNet+FPN)")
    if bb.endpoint_branch is not None:
        timer.wrap(bb.endpoint_branch, "forward", "ED branch")
    rpn = model.rpn
    timer.wrap(rpn, "forward", "RPN total")
    timer.wrap(rpn.head, "forward", "RPN: head convs")
    timer.wrap(rpn.anchor_generator, "forward", "RPN: anchors")
    timer.wrap(rpn, "filter_proposals", "RPN: top-k + proposal NMS")
    if hasattr(rpn, "assign_targets_to_anchors"):
        timer.wrap(rpn, "assign_targets_to_anchors", "RPN: anchor matching")
    timer.wrap(rpn.fg_bg_sampler, "__call__", "RPN: sampling")
    heads = model.roi_heads
    timer.wrap(heads, "forward", "RoI heads total")
    inner = getattr(heads, "tv", heads)
    timer.wrap(inner, "select_training_samples", "RoI: matching + sampling")
    timer.wrap(inner.box_roi_pool, "forward", "RoI: box RoIAlign")
    timer.wrap(inner.mask_roi_pool, "forward", "RoI: mask RoIAlign")
    if hasattr(heads, "postprocess_boxes"):
        timer.wrap(heads, "postprocess_boxes", "RoI: box postprocess (NMS, H&R)")
        timer.wrap(heads, "postprocess_masks", "RoI: mask postprocess")
    if hasattr(rh, "crop_masks_rotated"):
        pass
    import chromoseg.ops as ops

    orig = ops.crop_masks_rotated

    @functools.wraps(orig)
    def crop(*a, **k):
        with timer.time("RoI: mask targets"):
            return orig(*a, **k)

    ops.crop_masks_rotated = crop
    timer.wrap(model.transform, "forward", "transform (resize, pad)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["mr", "rmr", "ermr"])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", default="480x384", help="WxH")
    ap.add_argument("--compact", action="store_true")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--amp", default="off", choices=["off", "bf16"])
    ap.add_argument("--data", default=str(REPO / "datasets" / "mfish" / "train.json"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    from chromoseg.data.dataset import ChromosomeDataset, collate_fn
    from chromoseg.data.transforms import default_transforms
    from chromoseg.models import COMPACT, build_model

    ds = ChromosomeDataset(a.data, transforms=default_transforms(True, size=(h, w)))
    models, timers = {}, {}
    for v in a.variants:
        torch.manual_seed(0)
        kw = dict(COMPACT) if a.compact else {}
        m = build_model(v, backbone=a.backbone, image_size=(h, w), **kw)
        timers[v] = StageTimer()
        instrument(m, timers[v])
        models[v] = m
    per = {v: defaultdict(list) for v in a.variants}
    dtype = torch.bfloat16 if a.amp == "bf16" else None
    for step in range(a.steps + 1):
        idx = [(step * a.batch_size + i) % len(ds) for i in range(a.batch_size)]
        for v, m in models.items():
            tm = timers[v]
            tm.t.clear()
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=1e-5, momentum=0.9)
            t0 = time.perf_counter()
            with tm.time("data (load + augment)"):
                ims, ts = collate_fn([ds[i] for i in idx])
            with tm.time("forward total"):
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    losses = m(list(ims), list(ts))
            with tm.time("backward"):
                sum(losses.values()).backward()
            with tm.time("optimizer step"):
                opt.step()
                opt.zero_grad(set_to_none=True)
            tm.t["train step total"] = time.perf_counter() - t0
            m.eval()
            with torch.no_grad(), tm.time("inference total (1 image)"):
                m([ims[0]])
            if step > 0:
                for k, val in tm.t.items():
                    per[v][k].append(val)
    stages = []
    for v in a.variants:
        for k in per[v]:
            if k not in stages:
                stages.append(k)
    lines = [f"## {datetime.date.today()} -- {a.size}, batch {a.batch_size}, {a.backbone}"
             f"{' compact' if a.compact else ''}, amp {a.amp}", "",
             "```", "OMP_NUM_THREADS=2 python benchmarks/profile_train.py " + " ".join(argv or sys.argv[1:]), "```", "",
             f"Hardware: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
             f"Data: first images of `datasets/mfish/train.json` (training transforms). Median of {a.steps} steps "
             "after one warm-up, variants stepped in turn. Training-step stages cover 2 images; inference "
             "stages (postprocess) 1 image.", "",
             "| stage (s) | " + " | ".join(a.variants) + " |", "|---" * (len(a.variants) + 1) + "|"]
    for k in stages:
        row = [f"{statistics.median(per[v][k]):.3f}" if per[v].get(k) else "" for v in a.variants]
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    ips = [f"{a.batch_size / statistics.median(per[v]['train step total']):.2f}" for v in a.variants]
    lines.append("| **training images/s** | " + " | ".join(ips) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        append_markdown(a.out, text + "\n")


if __name__ == "__main__":
    main()
