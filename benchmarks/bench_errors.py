"""Where a model loses chromosomes (``chromoseg.engine.diagnose``), beside the Otsu baseline.

For every ground-truth chromosome of the split: lost by the RPN, missed by the RoI heads, found with
mask IoU < 0.5, lost to the score threshold, removed by NMS, found with the wrong / right class.
The same run gives the model's mask AP (its final instances, as ``predict`` keeps them) and the
classical baseline's (Otsu threshold + 8-connected components, pieces under 30 px dropped, every
piece one chromosome: binary AP only).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_errors.py --model mfish \\
        --gt datasets/mfish/test.json --md benchmarks/results/errors.md --append
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import commit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import torch
    from tqdm import tqdm

    from chromoseg.data.coco import encode_mask, load_coco, resolve_image_path
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.io import read_image
    from chromoseg.engine.diagnose import STAGES, diagnose_image, ground_truth_instances
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import InferenceConfig, Predictor, instances_to_results
    from chromoseg.models.classical import otsu_instances

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mfish", help="shipped model name or checkpoint / export path")
    ap.add_argument("--gt", type=Path, default=REPO / "datasets" / "mfish" / "test.json")
    ap.add_argument("--score", default=None, choices=["class", "object"], help="default: the model file's")
    ap.add_argument("--classes", default=None, choices=["independent", "karyotype"],
                    help="default: the model file's recommendation, else independent")
    ap.add_argument("--score-threshold", type=float, default=None,
                    help="default: the model file's recommendation, else the paper's 0.5")
    ap.add_argument("--no-crop-classifier", action="store_true", help="classes from the RoI head")
    ap.add_argument("--dark-on-light", action="store_true", help="Otsu baseline: objects darker than background")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--label", default=None, help="name of the model in the table")
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    predictor = Predictor.from_checkpoint(a.model, InferenceConfig(score=a.score, classes=a.classes,
                                                                   score_threshold=a.score_threshold,
                                                                   crop_classifier=not a.no_crop_classifier))
    clf = getattr(predictor.model, "crop_classifier", None) is not None and not a.no_crop_classifier
    ds = ChromosomeDataset(a.gt, max_images=a.max_images)
    coco = load_coco(a.gt)
    counts = {s: 0 for s in STAGES}
    results, otsu = [], []
    for i in tqdm(range(len(ds)), desc="diagnose"):
        info = ds.images[i]
        gt = ground_truth_instances(ds.load(i)[1])
        image = read_image(ds.image_path(i))
        stages, extra = diagnose_image(predictor, image, gt)
        for s in stages:
            counts[s] += 1
        results += instances_to_results(extra["final"], info["id"], info["file_name"])
        for inst in otsu_instances(image, bright=not a.dark_on_light):
            otsu.append({"image_id": info["id"], "category_id": 1, "score": 1.0,
                         "segmentation": encode_mask(inst["mask"])})
    total = sum(counts.values())
    ids = {im["id"] for im in ds.images}  # the images measured (all, unless --max-images)
    gt_sub = dict(coco, images=[im for im in coco["images"] if im["id"] in ids],
                  annotations=[x for x in coco["annotations"] if x["image_id"] in ids])
    rep = evaluate(gt_sub, results, score_threshold=0.0)
    rep_otsu = evaluate(gt_sub, otsu, score_threshold=0.0, modes=("binary",), iou_types=("segm",))

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    name = a.label or str(a.model)
    m, bm = rep["metrics"].get("multi", {}).get("segm"), rep["metrics"]["binary"]["segm"]
    ob = rep_otsu["metrics"]["binary"]["segm"]
    e = rep["confusion"]["endpoints"]
    lines = [
        f"## {name} on `{a.gt.name}` ({dt.date.today()}, commit {commit()})", "",
        "```", "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_errors.py " + shlex.join(argv or sys.argv[1:]), "```",
        "", f"{len(ds)} images, {total} ground-truth chromosomes (crowd regions left out); predict's settings: "
            f"score `{predictor.cfg.score}`, threshold {predictor.cfg.score_threshold}, classes "
            f"`{predictor.cfg.classes}` from {'the crop classifier' if clf else 'the RoI head'}. Hardware: {platform.machine()} CPU, {a.threads} threads.", "",
        "| where the chromosome ends up | chromosomes | share |", "|---|---|---|",
    ]
    labels = {"rpn": "missed by the RPN (no proposal at IoU >= 0.5)",
              "heads_miss": "missed by the RoI heads (no detection at mask IoU >= 0.1)",
              "mask_iou_low": "found, mask IoU < 0.5",
              "score": "lost to the score threshold", "nms": "removed by mask NMS / top-k",
              "taken": "its detection matched to another chromosome",
              "wrong_class": "found, wrong class", "right_class": "found, right class"}
    no_classes = coco.get("chromoseg", {}).get("classes_known") is False
    if no_classes:  # the set names no classes: found is found
        counts["right_class"] += counts.pop("wrong_class")
        labels["right_class"] = "found (the set has no classes)"
    for s in STAGES:
        if s in counts:
            lines.append(f"| {labels[s]} | {counts[s]} | {100 * counts[s] / max(total, 1):.1f}% |")
    found = counts.get("wrong_class", 0) + counts["right_class"]
    right = "" if no_classes else f"right class among found: {100 * counts['right_class'] / max(found, 1):.1f}%. "
    lines += ["", f"Found (mask IoU >= 0.5): {found} of {total} ({100 * found / max(total, 1):.1f}%); " + right +
                  f"Endpoints: {pct(e['share_of_matched'])}% of the found chromosomes' endpoints within "
                  f"{e['radius_px']:g} px (mean {e['mean_distance_px'] or 0:.1f} px).", "",
              "| mask AP (final instances, x100) | binary AP | binary AP50 | 24-class AP | 24-class AP50 |",
              "|---|---|---|---|---|",
              f"| {name} | {pct(bm['AP'])} | {pct(bm['AP50'])} | {'-' if m is None else pct(m['AP'])} | "
              f"{'-' if m is None else pct(m['AP50'])} |",
              f"| Otsu + 8-connected components (baseline) | {pct(ob['AP'])} | {pct(ob['AP50'])} | - | - |", ""]
    text = "\n".join(lines)
    print(text)
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if a.append and a.md.exists() else "w"
        with open(a.md, mode) as f:
            if mode == "w":
                f.write("# Where chromosomes are lost (`benchmarks/bench_errors.py`)\n\n")
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
