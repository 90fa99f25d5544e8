"""Training speed of each variant (images/s of full training steps: forward, backward, SGD step).

Usage:
  OMP_NUM_THREADS=2 python benchmarks/bench_train.py --backbone resnet18 --size 512x640 \
      --variants mr rmr erm2 erm3 ermr --steps 3 --out benchmarks/results/training_speed.md

Images: the first M-FISH training images (datasets/mfish/train.json) when present, else synthetic
ones. All variants are stepped round-robin: one warm-up step each, then ``--steps`` timed steps;
the median is reported, relative to ``mr``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_batch(n, size, data):
    if data and Path(data).is_file():
        from chromoseg.data.dataset import ChromosomeDataset, collate_fn
        from chromoseg.data.transforms import default_transforms

        ds = ChromosomeDataset(data, transforms=default_transforms(False, size=size), max_images=n)
        ims, ts = collate_fn([ds[i] for i in range(min(n, len(ds)))])
        return list(ims), list(ts), f"{data} (first {len(ims)} images)"
    sys.path.insert(0, str(REPO / "tests"))
    from test_models import synth_sample

    ims, ts = zip(*[synth_sample(h=size[0], w=size[1], n=6, seed=i) for i in range(n)])
    return list(ims), list(ts), "synthetic"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["mr", "rmr", "erm2", "erm3", "ermr"])
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", default="640x512", help="WxH")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="SMALL proposal/RoI settings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(REPO / "datasets" / "mfish" / "train.json"))
    ap.add_argument("--out", default=None, help="Markdown file to append the table to")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    size = (h, w)
    from chromoseg.models import SMALL, build_model

    dev = torch.device(a.device)
    ims, ts, src = load_batch(a.batch_size, size, a.data)
    ims = [i.to(dev) for i in ims]
    ts = [{k: v.to(dev) for k, v in t.items()} for t in ts]
    # all models are built first and stepped round-robin, so that load from other processes on a
    # shared machine affects every variant alike; the median step time is reported
    models, opts, times = {}, {}, {v: [] for v in a.variants}
    for v in a.variants:
        torch.manual_seed(0)
        kw = dict(SMALL) if a.small else {}
        models[v] = build_model(v, backbone=a.backbone, image_size=size, **kw).to(dev).train()
        opts[v] = torch.optim.SGD(models[v].parameters(), lr=0.001, momentum=0.9)
    for s in range(a.steps + 1):
        for v in a.variants:
            model, opt = models[v], opts[v]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            losses = model(ims, ts)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if s:  # step 0 is the warm-up
                times[v].append(time.perf_counter() - t0)
                print(f"{v}: step {s}: {times[v][-1]:.2f} s", flush=True)
    rows = []
    for v in a.variants:
        sec = sorted(times[v])[len(times[v]) // 2]
        rows.append((v, sec, len(ims) / sec))
    base = dict((r[0], r[2]) for r in rows).get("mr")
    lines = [f"\n### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {a.backbone}, {w}x{h}, batch {a.batch_size}, "
             f"{'SMALL' if a.small else 'default'} proposal settings, device {a.device} "
             f"({platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads), images: {src}\n",
             "| variant | s / step (median of %d, round-robin) | images/s | vs mr |" % a.steps, "|---|---|---|---|"]
    for v, sec, ips in rows:
        lines.append(f"| {v} | {sec:.2f} | {ips:.3f} | {ips / base:.2f}x |" if base else f"| {v} | {sec:.2f} | {ips:.3f} | |")
    lines.append("\ncommand: `OMP_NUM_THREADS=%s python benchmarks/bench_train.py %s`\n"
                 % (os.environ.get("OMP_NUM_THREADS", "?"), " ".join(argv if argv is not None else sys.argv[1:])))
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
