"""Inference speed of every variant against torchvision's own Mask R-CNN with the same backbone.

Usage:
  python benchmarks/bench_predict.py --backbone resnet50 --threads 2 --reps 5 \
      --out benchmarks/results/predict_speed.md

Each model runs in its own subprocess (so peak memory is its own), on the shipped example metaphase
resized to 640x512 (the paper's input). Weights are random, so to give every model the same work the
box score threshold is 0 and exactly 100 detections per image go through the mask head (the paper's
top-100 rule). Reported: median seconds per image over ``--reps`` runs after one warm-up, images/s,
ratio to torchvision's ``maskrcnn_resnet50_fpn``-style model with the same backbone, and the process's
peak resident memory (CPU) or peak allocated memory (CUDA).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


def build(name: str, backbone: str):
    import torch

    if name == "torchvision":
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

        bb = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
        return MaskRCNN(bb, num_classes=25, min_size=512, max_size=640, box_score_thresh=0.0,
                        box_detections_per_img=100, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    from chromoseg.models import build_model

    return build_model(name, backbone=backbone, image_size=(512, 640), box_score_thresh=0.0, box_detections_per_img=100)


def run_one(name: str, backbone: str, threads: int, reps: int, device: str) -> dict:
    import numpy as np
    import torch

    from chromoseg.data.io import read_image, to_float01

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, backbone).to(device).eval()
    img = torch.from_numpy(to_float01(read_image(EXAMPLE)))[None]
    img = torch.nn.functional.interpolate(img[None], size=(512, 640), mode="bilinear", align_corners=False)[0].to(device)
    x = img.expand(3, -1, -1) if name == "torchvision" else img
    times = []
    with torch.no_grad():
        for i in range(reps + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model([x])
            if device == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    n_det = int(out[0]["scores"].numel())
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"model": name, "seconds": statistics.median(times), "detections": n_det, "peak_mib": round(peak, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["mr", "rmr", "erm2", "erm3", "ermr"])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="Markdown file to append the table to")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one model, print JSON
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one, a.backbone, a.threads, a.reps, a.device)))
        return 0
    rows = []
    for name in ["torchvision", *a.variants]:
        cmd = [sys.executable, __file__, "--one", name, "--backbone", a.backbone, "--threads", str(a.threads),
               "--reps", str(a.reps), "--device", a.device]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    ref = rows[0]["seconds"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import torch

    hw = (torch.cuda.get_device_name(0) if a.device == "cuda" else f"{cpu}, {a.threads} threads")
    lines = [f"### Inference speed, {a.backbone}, 640x512, {a.device} ({hw})", "",
             f"- command: `python benchmarks/bench_predict.py --backbone {a.backbone} --threads {a.threads} "
             f"--reps {a.reps} --device {a.device}`",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}",
             "- input: the shipped example metaphase resized to 640x512; random weights, 100 detections per image "
             "through the mask head for every model; median of the timed runs after one warm-up", "",
             "| model | s / image | images / s | ratio to torchvision | detections | peak memory (MiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seconds']:.3f} | {1 / r['seconds']:.2f} | {r['seconds'] / ref:.2f} | "
                     f"{r['detections']} | {r['peak_mib']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        append_markdown(a.out, "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
