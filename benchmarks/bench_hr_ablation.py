"""Ablation of the H&R synthesis rule: one trained H&R checkpoint evaluated with the rule on and off.

Usage:
  python benchmarks/bench_hr_ablation.py --model runs/ermr/best.pt --data datasets/mfish/test.json \
      --out benchmarks/results/hr_ablation.md

With the rule off, only the rotated branch's detections (after rotated NMS) are kept; with it on,
isolated axis-aligned detections that the rotated branch missed are added (see
``chromoseg.models.roi_heads.fuse_hr_detections``). Everything else is the same: same weights, same
inference rule (top 100, mask NMS), mask AP x100 under the paper's 0.5 threshold and without it.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="datasets/mfish/test.json")
    ap.add_argument("--work", default="out/hr_ablation")
    ap.add_argument("--out", default=None, help="Markdown file to write")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    import torch

    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.engine.checkpoint import load_model
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import InferenceConfig, Predictor, predict_paths
    from chromoseg.engine.tables import _training_summary, hardware

    gt = Path(a.data)
    data = load_coco(gt)
    paths = [resolve_image_path(im["file_name"], gt.parent) for im in data["images"]]
    rows = []
    for fusion in (False, True):
        model = load_model(a.model, device=a.device, hr_fusion=fusion, box_detections_per_img=100, box_score_thresh=0.05)
        if not model.config.get("hr"):
            print(f"{a.model}: not an H&R model (variant {model.config.get('variant')})", file=sys.stderr)
            return 2
        pdir = Path(a.work) / ("fusion_on" if fusion else "fusion_off")
        predict_paths(Predictor(model, InferenceConfig(score_threshold=0.0), a.device), paths, pdir, overlays=False,
                      label_images=False, karyotype=False, progress=False)
        for thr in (0.5, 0.0):
            rep = evaluate(gt, pdir / "results.json", score_threshold=thr, iou_types=("segm",))
            m = rep["metrics"]
            rows.append((fusion, thr, m["multi"]["segm"], m["binary"]["segm"], rep["counts"]["detections_used"]))

    def pct(v):
        return "–" if v is None else f"{100 * v:.2f}"

    lines = ["# H&R synthesis rule: ablation", "",
             f"- command: `python benchmarks/bench_hr_ablation.py --model {a.model} --data {a.data}`",
             f"- data: `{gt}` ({len(paths)} images); hardware: {hardware(a.device)}; "
             f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- checkpoint: `{a.model}` {_training_summary(Path(a.model))}", "",
             "| H&R rule | score threshold | multi AP | multi AP@0.5 | binary AP | binary AP@0.5 | binary AP@0.75 | detections |",
             "|---|---|---|---|---|---|---|---|"]
    for fusion, thr, mu, bi, n in rows:
        lines.append(f"| {'on' if fusion else 'off'} | {thr} | {pct(mu['AP'])} | {pct(mu['AP50'])} | {pct(bi['AP'])} | "
                     f"{pct(bi['AP50'])} | {pct(bi['AP75'])} | {n} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
