"""Inference with and without the masks of detections under the score threshold (issue 11, item 4).

With object scores ``Predictor`` lets the RoI heads drop detections more than 2e-3 under the score
threshold before the mask head (``RotatedRoIHeads.mask_score_thresh``): they could neither pass the
rule's last step nor suppress a detection that does. This script checks that the instances are the
same with and without (masks, classes, scores, on the first ``--images`` images of a split) and times
a whole ``Predictor`` call (model, rule, crop classifier, assignment) on the shipped example, the two
settings alternating, fastest of ``--reps``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_mask_skip.py --model mfish \\
        --gt datasets/mfish/test.json --images 10 --md benchmarks/results/predict_speed.md
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        (p["mask"] == q["mask"]).all() and p["category_id"] == q["category_id"] and abs(p["score"] - q["score"]) < 1e-6
        for p, q in zip(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mfish")
    ap.add_argument("--gt", default="datasets/mfish/test.json")
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--md", default=None, help="Markdown file to append the section to")
    a = ap.parse_args(argv)

    import json

    import torch

    from chromoseg.data.coco import resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.engine.predict import InferenceConfig, Predictor

    torch.set_num_threads(a.threads)
    pred = Predictor.from_checkpoint(a.model, InferenceConfig(score=None, score_threshold=None, classes=None))
    skip = pred._masks_only_above_threshold

    def mode(on: bool):
        pred._masks_only_above_threshold = skip if on else contextlib.nullcontext

    gt = json.loads(Path(a.gt).read_text())
    images = [read_image(resolve_image_path(i["file_name"], Path(a.gt).parent)) for i in gt["images"][: a.images]]
    same, counts = True, [0, 0]
    for img in images:
        mode(True)
        fast = pred([img])[0]
        mode(False)
        slow = pred([img])[0]
        same &= _same(fast, slow)
        counts[0] += len(fast)
        counts[1] += len(slow)
    example = read_image(EXAMPLE)
    times = {True: [], False: []}
    masks_made = {}
    for on in (True, False):  # warm-up, and how many masks each makes
        mode(on)
        n = []
        h = pred.model.roi_heads.mask_head.register_forward_hook(lambda m, i, o: n.append(o.shape[0]))
        pred([example])
        h.remove()
        masks_made[on] = n[0]
    for _ in range(a.reps):
        for on in (True, False):
            mode(on)
            t0 = time.perf_counter()
            pred([example])
            times[on].append(time.perf_counter() - t0)
    mode(True)
    best = {k: min(v) for k, v in times.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    cmd = "OMP_NUM_THREADS=%d .venv/bin/python benchmarks/bench_mask_skip.py %s" % (a.threads, shlex.join(argv or sys.argv[1:]))
    text = "\n".join([
        f"\n### Masks only for detections that can pass the score threshold (`{a.model}`)", "",
        f"- command: `{cmd}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}; {cpu}, {a.threads} threads, no GPU",
        f"- model: `{a.model}` at its defaults (score `{pred.cfg.score}`, threshold {pred.cfg.score_threshold}, "
        f"classes `{pred.cfg.classes}`); timing: one `Predictor` call on the shipped example "
        f"({shown(EXAMPLE)}), fastest of {a.reps}, the two settings alternating", "",
        "| | masks made | s / image | images / s |", "|---|---|---|---|",
        f"| every detection's mask (before) | {masks_made[False]} | {best[False]:.3f} | {1 / best[False]:.2f} |",
        f"| only detections that can pass the threshold | {masks_made[True]} | {best[True]:.3f} | {1 / best[True]:.2f} |",
        "",
        f"Same instances (masks, classes, scores) with and without on the first {len(images)} images of "
        f"`{shown(a.gt)}`: **{'yes' if same else 'NO'}** ({counts[0]} / {counts[1]} instances). "
        f"Speed-up {best[False] / best[True]:.2f}x.", ""])
    print(text)
    if a.md:
        append_markdown(a.md, text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
