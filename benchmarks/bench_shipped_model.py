"""Measure a model (by default the shipped one) on the M-FISH test split: mask/box AP, speed, counts.

1. ``chromoseg predict`` over the test images with no score threshold (results kept in ``--work``);
2. ``chromoseg evaluate`` of those results under the paper's 0.5 score threshold and without one
   (multi-class and binary, masks and boxes), plus the confusion summary of matched instances;
3. counts and ISCN summary from the predictions that clear 0.5 (what ``predict`` reports), against
   the case karyotypes, with the same table as ``bench_counts.py`` (which measures the ground truth);
4. speed: images/s of the model alone (forward + the inference rule, on the shipped example) and of
   the whole ``predict`` run (reading, writing, karyograms), on this machine, ``--threads`` threads.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_shipped_model.py \\
        [--model mfish] [--score class|object] [--proposals N] [--gt datasets/mfish/test.json] [--md FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import commit, shown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def model_speed(predictor, image, reps: int) -> float:
    predictor([image])  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        predictor([image])
    return reps / (time.perf_counter() - t)


def main(argv=None) -> int:
    import torch

    from bench_counts import _hardware, default_data, mfish_rows, mfish_table
    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.cli.demo import EXAMPLE
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import InferenceConfig, Predictor, predict_paths

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mfish", help="shipped model name or checkpoint path (default mfish)")
    ap.add_argument("--gt", type=Path, default=REPO / "datasets" / "mfish" / "test.json")
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_shipped")
    ap.add_argument("--score", default="class", choices=["class", "object"], help="predict --score (default class)")
    ap.add_argument("--classes", default=None, choices=["independent", "karyotype"],
                    help="predict --classes (default: the model file's recommendation)")
    ap.add_argument("--proposals", type=int, default=None, metavar="N",
                    help="predict --proposals: RPN proposals kept per image (default: the model file's "
                         "recommendation, else the model's own 300)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--md", type=Path, default=None, help="write the results as Markdown here")
    ap.add_argument("--append", action="store_true", help="append to --md instead of replacing it")
    ap.add_argument("--count-thresholds", type=float, nargs="+", default=[],
                    help="also count at these score thresholds (besides 0.5 and the model file's recommended one); "
                         "run on the validation split (--gt datasets/mfish/val.json) to choose the recommendation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    gt = load_coco(args.gt)
    paths = [resolve_image_path(img["file_name"], args.gt.parent) for img in gt["images"]]
    predictor = Predictor.from_checkpoint(args.model, InferenceConfig(score_threshold=0.0, score=args.score,
                                                                      classes=args.classes,
                                                                      proposals=args.proposals))
    mcfg = predictor.model.config
    t = time.perf_counter()
    summary = predict_paths(predictor, paths, args.work, overlays=True, label_images=False, karyotype=True,
                            progress=True)
    run_ips = summary["images"] / (time.perf_counter() - t)
    results = json.loads((args.work / "results.json").read_text())
    recommended = predictor.recommended_score_threshold
    reports = {thr: evaluate(args.gt, results, score_threshold=thr) for thr in sorted({0.5, recommended, 0.0}, reverse=True)}

    # counts from the detections predict keeps: at the paper's 0.5, at the model file's recommended
    # threshold (export --default-score-threshold) and at any asked for; per ground-truth image
    split = args.gt.stem
    count_rows = {}
    for thr in sorted({0.5, recommended, *args.count_thresholds}):
        by_name = {Path(r["file_name"]).name: [] for r in results}
        for r in results:
            if r["score"] >= thr:
                by_name[Path(r["file_name"]).name].append(r)
        anns = []
        for img in gt["images"]:
            for r in by_name.get(Path(img["file_name"]).name, []):
                anns.append({"image_id": img["id"], "category_id": r["category_id"], "score": r["score"]})
        tmp = args.work / "counts_input.json"
        tmp.write_text(json.dumps({"images": gt["images"], "annotations": anns}))
        mark = ", recommended" if thr == recommended else ""
        count_rows[f"{split} (model, score >= {thr:g}{mark})"] = mfish_rows(tmp, args.data)
    count_table = mfish_table(count_rows)

    example = read_image(next(EXAMPLE.glob("*/*D.tif")))
    predictor.cfg.score_threshold = recommended  # speed as predict runs by default
    ips = model_speed(predictor, example, args.reps)

    lines = [
        f"# Model `{args.model}` on the M-FISH {split} split, `{args.score}` scores",
        "",
        f"- command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/bench_shipped_model.py "
        f"--model {args.model} --score {args.score}" + (f" --classes {args.classes}" if args.classes else "")
        + (f" --proposals {args.proposals}" if args.proposals else "")
        + (f" --gt {shown(args.gt)}" if args.gt.resolve() != (REPO / "datasets" / "mfish" / "test.json").resolve() else "")
        + (" --count-thresholds " + " ".join(f"{t:g}" for t in args.count_thresholds) if args.count_thresholds else "")
        + (f" --md {shown(args.md)}" if args.md else "") + "`",
        f"- scores: `{args.score}` ("
        + ("the class probability, the paper's" if args.score == "class" else "1 - P(background) of the RoI") + ")"
        + f"; classes: `{predictor.cfg.classes}`, from "
        + ("the crop classifier" if getattr(predictor.model, "crop_classifier", None) is not None
           and predictor.cfg.crop_classifier else "the RoI head"),
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}",
        f"- hardware: {_hardware()}, torch threads {args.threads}",
        f"- data: `{shown(args.gt)}` ({len(gt['images'])} images, {len(gt['annotations'])} annotations; the fixed split "
        "by slide, `chromoseg/data/splits/adir-mfish.json`)",
        f"- model: variant {mcfg.get('variant')}, backbone {mcfg.get('backbone')}, input {mcfg.get('image_size')} "
        f"(H, W), {sum(p.numel() for p in predictor.model.parameters()) / 1e6:.1f} M parameters",
        "",
        "## Mask and box AP (x100; pycocotools, maxDets 100)",
        "",
        "| score threshold | mode | mask AP | mask AP@0.5 | mask AP@0.75 | box AP | box AP@0.5 |",
        "|---|---|---|---|---|---|---|",
    ]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}"

    for thr, rep in reports.items():
        for mode in ("multi", "binary"):
            m, b = rep["metrics"][mode].get("segm", {}), rep["metrics"][mode].get("bbox", {})
            lines.append(f"| {thr:g} | {mode} | {pct(m.get('AP'))} | {pct(m.get('AP50'))} | {pct(m.get('AP75'))} "
                         f"| {pct(b.get('AP'))} | {pct(b.get('AP50'))} |")
    c = reports[recommended]["confusion"]
    lines += [
        "",
        f"At score >= {recommended:g} (recommended): {reports[recommended]['counts']['detections_used']} detections in {len(gt['images'])} images "
        f"({c['matched'] + c['missed']} chromosomes: crowd regions are not matched); {c['matched']} match a chromosome at mask IoU >= "
        f"{c['iou_threshold']}, {c['correct_class']} of them with the right class; {c['missed']} chromosomes "
        f"missed, {c['false_detections']} detections unmatched.",
        "",
        f"## Counts and karyotype summary from the predictions (the model file recommends score >= {recommended:g})",
        "",
        *count_table,
        "",
        "Columns as in `counts.md` (which gives the same table from the ground truth: the ceiling).",
        "",
        "## Speed (this CPU)",
        "",
        f"- model + inference rule (score >= {recommended:g}) on the shipped example ({example.shape[1]} x {example.shape[0]} px, "
        f"{args.reps} runs after a warm-up): **{ips:.2f} images/s**",
        f"- whole `predict` run over the {summary['images']} {split} images (reading, overlays, karyograms, "
        f"report): {run_ips:.2f} images/s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        with open(args.md, "a" if args.append else "w") as f:
            f.write(("\n" if args.append else "") + text)
    (args.work / "summary.json").write_text(json.dumps({
        "model": args.model, "score": args.score, "ap": {str(k): v["metrics"] for k, v in reports.items()},
        "confusion@0.5": c, "images_per_s": ips, "predict_images_per_s": run_ips}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
