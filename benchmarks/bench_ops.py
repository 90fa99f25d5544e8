"""Benchmarks for chromoseg.ops (CPU): rotated IoU, rotated NMS, rotated RoIAlign vs torchvision.

    python benchmarks/bench_ops.py [--threads 2] [--repeats 7] [--out benchmarks/results/ops.md]

Times are wall-clock milliseconds per call (median and minimum over ``--repeats`` runs after one
warm-up run); the two sides of every ratio are measured interleaved in the same run, so load from
other processes affects both alike. Writes a Markdown report with the command, CPU model, threads,
torch version, load average and date.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

from chromoseg.ops import nms_rotated, rbox_iou, rroi_align
from chromoseg.ops.iou import rbox_overlap_candidates


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def timeit(fns: dict, repeats: int) -> dict:
    """Interleaved timing: {name: (median wall ms, min wall ms, median process-CPU ms)}."""
    for f in fns.values():
        f()  # warm-up
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            c = time.process_time()
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1000)
            cpu[k].append((time.process_time() - c) * 1000)
    return {k: (statistics.median(v), min(v), statistics.median(cpu[k])) for k, v in times.items()}


def chromosome_proposals(n: int, gen: torch.Generator, n_chrom: int = 46, size=(640, 512)) -> torch.Tensor:
    """Proposal-like rotated boxes: n boxes jittered around n_chrom chromosome boxes in a W x H image."""
    W, H = size
    cen = torch.rand(n_chrom, 2, generator=gen) * torch.tensor([W - 40.0, H - 40.0]) + 20
    length = torch.rand(n_chrom, generator=gen) * 60 + 20
    width = torch.rand(n_chrom, generator=gen) * 6 + 8
    ang = torch.rand(n_chrom, generator=gen) * 180 - 90
    k = torch.randint(0, n_chrom, (n,), generator=gen)
    j = torch.randn(n, 5, generator=gen)
    return torch.stack((cen[k, 0] + 6 * j[:, 0], cen[k, 1] + 6 * j[:, 1],
                        length[k] * (1 + 0.2 * j[:, 2]).clamp(min=0.5),
                        width[k] * (1 + 0.2 * j[:, 3]).clamp(min=0.5), ang[k] + 10 * j[:, 4]), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ops.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    load_start = loadavg()
    rows = []

    # --- rotated IoU and NMS, 2,000 boxes ---------------------------------------------------------
    boxes = chromosome_proposals(2000, gen)
    scores = torch.rand(2000, generator=gen)
    uni = torch.cat((torch.rand(2000, 2, generator=gen) * torch.tensor([640.0, 512.0]),
                     torch.rand(2000, 1, generator=gen) * 80 + 10, torch.rand(2000, 1, generator=gen) * 20 + 5,
                     torch.rand(2000, 1, generator=gen) * 180 - 90), 1)
    tb = torchvision.ops.box_convert(boxes[:, :4], "cxcywh", "xyxy")
    res = timeit({
        "rbox_iou 2000x2000 (proposals)": lambda: rbox_iou(boxes, boxes),
        "rbox_iou 2000x2000 (uniform)": lambda: rbox_iou(uni, uni),
        "nms_rotated 2000, thr 0.7": lambda: nms_rotated(boxes, scores, 0.7),
        "nms_rotated 2000, thr 0.5": lambda: nms_rotated(boxes, scores, 0.5),
        "torchvision nms 2000 (axis-aligned, ref.)": lambda: torchvision.ops.nms(tb, scores, 0.7),
    }, args.repeats)
    ci, _ = rbox_overlap_candidates(boxes, boxes)
    cu, _ = rbox_overlap_candidates(uni, uni)
    kept7 = nms_rotated(boxes, scores, 0.7).numel()
    kept5 = nms_rotated(boxes, scores, 0.5).numel()
    notes = {
        "rbox_iou 2000x2000 (proposals)": f"{ci.numel()} overlapping pairs computed exactly",
        "rbox_iou 2000x2000 (uniform)": f"{cu.numel()} overlapping pairs",
        "nms_rotated 2000, thr 0.7": f"{kept7} kept",
        "nms_rotated 2000, thr 0.5": f"{kept5} kept",
        "torchvision nms 2000 (axis-aligned, ref.)": "compiled C++ kernel, for scale",
    }
    for k, (med, mn, cpu) in res.items():
        rows.append((k, med, mn, cpu, notes[k]))

    # --- rotated RoIAlign vs torchvision roi_align ------------------------------------------------
    x = torch.randn(1, 256, 128, 160, generator=gen)  # stride-4 map of a 512 x 640 image
    k = 1000
    cxy = torch.rand(k, 2, generator=gen) * torch.tensor([640.0, 512.0])
    wh = torch.stack((torch.rand(k, generator=gen) * 80 + 20, torch.rand(k, generator=gen) * 17 + 8), 1)
    ang = torch.rand(k, 1, generator=gen) * 180 - 90
    z = torch.zeros(k, 1)
    rrois = torch.cat((z, cxy, wh, ang), 1)
    hrois = torch.cat((z, cxy - wh / 2, cxy + wh / 2), 1)  # same sizes, axis-aligned
    align_rows = []
    for out in (7, 14):
        xg = x.clone().requires_grad_(True)

        def tv_fb():
            xg.grad = None
            torchvision.ops.roi_align(xg, hrois, out, 0.25, 2, aligned=True).sum().backward()

        def our_fb():
            xg.grad = None
            rroi_align(xg, rrois, out, 0.25, 2).sum().backward()

        res = timeit({
            "tv_f": lambda: torchvision.ops.roi_align(x, hrois, out, 0.25, 2, aligned=True),
            "our_f": lambda: rroi_align(x, rrois, out, 0.25, 2),
            "tv_fb": tv_fb,
            "our_fb": our_fb,
        }, max(3, args.repeats // 2))
        for what, a, b in (("forward", "tv_f", "our_f"), ("forward+backward", "tv_fb", "our_fb")):
            align_rows.append((f"{out}x{out} {what}", res[a], res[b], res[b][0] / res[a][0]))

    load_end = loadavg()
    cmd = "OMP_NUM_THREADS={} python benchmarks/bench_ops.py {}".format(
        os.environ.get("OMP_NUM_THREADS", "(unset)"), " ".join(sys.argv[1:] if argv is None else argv)).strip()
    lines = [
        "# chromoseg.ops benchmarks (CPU)",
        "",
        f"- command: `{cmd}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- hardware: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads = {torch.get_num_threads()}",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"- load average (1/5/15 min) at start: {load_start}; at end: {load_end} "
        "(the machine is shared; other processes inflate wall times)",
        f"- times: wall-clock ms per call, median (min) over {args.repeats} runs after a warm-up; "
        "compared sides measured interleaved",
        "",
        "## Rotated IoU and NMS (2,000 boxes, chromosome-like proposals in a 640 x 512 image, random scores)",
        "",
        "| op | median ms | min ms | CPU ms (median) | note |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {k} | {med:.1f} | {mn:.1f} | {cpu:.1f} | {note} |" for k, med, mn, cpu, note in rows]
    lines += [
        "",
        "Goal: rotated NMS of 2,000 boxes < 50 ms. CPU ms = process CPU time per call (the IoU / NMS "
        "step sequences run on one intra-op thread, see `src/chromoseg/ops/_threads.py`), i.e. the time "
        "on an otherwise idle core; wall times include waiting for the shared cores.",
        "",
        "## rroi_align vs torchvision.ops.roi_align (aligned=True)",
        "",
        "1,000 RoIs on a [1, 256, 128, 160] map (spatial_scale 0.25, sampling_ratio 2); ours: rotated RoIs "
        "(random angles), torchvision: axis-aligned RoIs of the same centres and sizes.",
        "",
        "| output, pass | torchvision median (min) ms | rroi_align median (min) ms | ratio (median) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {k} | {a[0]:.1f} ({a[1]:.1f}) | {b[0]:.1f} ({b[1]:.1f}) | {r:.2f} |" for k, a, b, r in align_rows]
    lines += ["", "Goal: rroi_align within 2x of torchvision's roi_align (ratio <= 2).", ""]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
