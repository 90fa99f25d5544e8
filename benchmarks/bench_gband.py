"""Measure a G-band (brightfield) model on real G-band images.

1. CIL test metaphases (``chromoseg data import voc ../shared/data/cil-gband --out datasets/gband``:
   ``test.json``, 500 images, boxes only): 24-class and binary **box** AP / AP@0.5 under the paper's 0.5
   score threshold, the model file's recommended one and without one (at a threshold: what predict writes
   at it, karyotype-aware classes chosen over the kept detections only, :func:`as_predicted`);
   chromosome counts per metaphase (detections with score >= 0.5 and >= the recommended threshold)
   against the set's ``normal.csv`` / ``number_abnormalities.csv`` / ``structural_abnormalities.csv``
   totals, and per-class counts against the annotated boxes;
2. the karyogram-pair metaphases (``chromoseg data build-from-karyograms ... --out datasets/kp``: masks
   and classes placed from the karyograms), when given: binary and 24-class **mask** AP.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_gband.py --model gband \\
        [--gt datasets/gband/test.json] [--kp datasets/kp/annotations.json] [--limit N] [--md FILE]

Predictions are kept in ``--work`` (default ``out/bench_gband``).

A set whose annotations keep the annotator's box beside a pseudo-mask (``source_bbox``: the validation
split ``datasets/gband/val.json``) is scored against those boxes, as the test split is.

``--framing twice`` pastes every image, at its own size, into the middle of a field twice as wide and
high filled with its background grey (the median); ``--framing shrunk`` resizes every image to 60 %;
the boxes follow. Together with ``--framing as-is`` (the default) they show how much a model depends on
how the camera framed the cell.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402

from chromoseg.engine.evaluate import annotator_boxes  # noqa: E402  (also bench_nucleus_rule's)

REPO = Path(__file__).resolve().parents[1]


def cil_totals(cil: Path) -> dict[str, int]:
    """Image stem -> the chromosome number the CIL set's CSV files give."""
    out = {}
    for name in ("normal.csv", "number_abnormalities.csv", "structural_abnormalities.csv"):
        p = cil / name
        if p.is_file():
            for row in csv.DictReader(open(p)):
                out[Path(row["filename"]).stem] = int(row["chromosome numbers"])
    return out


FRAMINGS = ("as-is", "twice", "shrunk")
SHRUNK = 0.6


def reframe(gt: dict, root: Path, framing: str, out: Path) -> dict:
    """The set with every image re-framed (``twice``: in the middle of a field twice as wide and high,
    filled with the image's median grey; ``shrunk``: resized to 60 %), written as PNG under ``out``."""
    import cv2
    import numpy as np

    from chromoseg.data.coco import resolve_image_path
    from chromoseg.data.io import read_image

    out.mkdir(parents=True, exist_ok=True)
    images, shift = [], {}
    for im in gt["images"]:
        arr = read_image(resolve_image_path(im["file_name"], root))
        h, w = arr.shape
        if framing == "twice":
            big = np.full((2 * h, 2 * w), np.median(arr), dtype=arr.dtype)
            dx, dy = w // 2, h // 2
            big[dy:dy + h, dx:dx + w] = arr
            arr2, f = big, 1.0
        else:
            nw, nh = round(w * SHRUNK), round(h * SHRUNK)
            arr2, f, dx, dy = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA), SHRUNK, 0, 0
        dest = out / (Path(im["file_name"]).stem + ".png")
        if not dest.is_file():
            cv2.imwrite(str(dest), arr2)
        images.append({**im, "file_name": str(dest.resolve()), "height": arr2.shape[0], "width": arr2.shape[1]})
        shift[im["id"]] = (f, dx, dy)
    anns = []
    for a in gt["annotations"]:
        f, dx, dy = shift[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        anns.append({**a, "bbox": [x * f + dx, y * f + dy, bw * f, bh * f], "area": a.get("area", bw * bh) * f * f})
    return {**gt, "images": images, "annotations": anns}


def run_model(predictor, gt_path: Path, work: Path, limit, reuse: bool = False, framing: str = "as-is"):
    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.engine.predict import predict_paths

    gt = annotator_boxes(load_coco(gt_path))
    if limit:
        gt["images"] = gt["images"][:limit]
        keep = {im["id"] for im in gt["images"]}
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in keep]
    if framing != "as-is":
        gt = reframe(gt, gt_path.parent, framing, work / "images")
    paths = [resolve_image_path(im["file_name"], gt_path.parent) for im in gt["images"]]
    t = time.perf_counter()
    summary = predict_paths(predictor, paths, work, overlays=False, label_images=False, karyotype=False,
                            progress=True, skip_existing=reuse)
    seconds = time.perf_counter() - t
    wanted = {str(p) for p in paths}
    results = [r for r in json.loads((work / "results.json").read_text()) if r["file_name"] in wanted]
    return gt, results, summary, seconds


def as_predicted(results: list[dict], threshold: float, karyotype: bool) -> list[dict]:
    """The detections ``chromoseg predict`` writes at score threshold ``threshold``, from the candidates
    predicted without one: those scored >= ``threshold``, and with karyotype-aware classes
    (``karyotype``) their classes chosen again jointly over those alone, as predict chooses them (the
    slots of a metaphase are shared among the kept chromosomes, not among every candidate; the
    not-a-chromosome rule judges them against the kept ones' median). Exact because predict's instance
    rule thresholds after its mask NMS."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from chromoseg.karyotype.assign import assign_instances

    kept = [r for r in results if r["score"] >= threshold]
    if not karyotype:
        return kept
    by_image: dict[object, list[dict]] = {}
    for r in kept:
        by_image.setdefault(r["image_id"], []).append(r)
    out = []
    for rs in by_image.values():
        insts = [{**r, "mask": mask_utils.decode(r["segmentation"]).astype(bool)} if "class_scores" in r
                 else dict(r) for r in rs]
        for r, inst in zip(rs, assign_instances(insts)):
            out.append({**r, "category_id": int(inst["category_id"])})
    return out


def recall_by_size_and_class(gt: dict, results: list[dict], min_score: float = 0.5, iou: float = 0.5):
    """Share of annotated boxes with a detection (score >= ``min_score``) at box IoU >= ``iou``, by the
    box's longer side (px, at the image's size) and by class: where the chromosomes are lost."""
    import numpy as np
    import torch
    from torchvision.ops import box_convert, box_iou

    def xyxy(boxes):
        return box_convert(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy")

    dets: dict[str, list] = {}
    for r in results:
        if r["score"] >= min_score:
            dets.setdefault(Path(r["file_name"]).stem, []).append(r["bbox"])
    per_image: dict[int, list] = {}
    for a in gt["annotations"]:
        per_image.setdefault(a["image_id"], []).append(a)
    hit, side, cls, crossing = [], [], [], []
    for im in gt["images"]:
        anns = per_image.get(im["id"], [])
        d = dets.get(Path(im["file_name"]).stem)
        found = (box_iou(xyxy([a["bbox"] for a in anns]), xyxy(d)) >= iou).any(1).tolist() if d and anns \
            else [False] * len(anns)
        hit += found
        side += [max(a["bbox"][2], a["bbox"][3]) for a in anns]
        cls += [a["category_id"] for a in anns]
        crossing += crossing_members(xyxy([a["bbox"] for a in anns])).tolist() if anns else []
    hit, side, cls, crossing = np.array(hit, bool), np.array(side), np.array(cls), np.array(crossing, bool)
    edges = [0, 40, 60, 80, 100, 130, 10 ** 6]
    by_size = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (side >= lo) & (side < hi)
        by_size.append((f"{lo}-{hi}" if hi < 10 ** 6 else f">= {lo}", int(sel.sum()),
                        float(hit[sel].mean()) if sel.any() else None))
    by_class = {int(c): float(hit[cls == c].mean()) for c in np.unique(cls)}
    by_overlap = [(name, int(sel.sum()), float(hit[sel].mean()) if sel.any() else None)
                  for name, sel in (("in a crossing or overlapping cluster", crossing), ("apart", ~crossing))]
    return float(hit.mean()) if len(hit) else None, by_size, by_class, by_overlap


#: an annotated box belongs to a crossing / overlapping cluster when another box covers at least this
#: share of the smaller of the two
CROSSING_SHARE = 0.5


def crossing_members(boxes):
    """Per xyxy box: does another box cover >= CROSSING_SHARE of the smaller one's area?"""
    import torch

    n = boxes.shape[0]
    if n < 2:
        return torch.zeros(n, dtype=torch.bool)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    share = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    share.fill_diagonal_(0)
    return (share >= CROSSING_SHARE).any(1)


def nucleus_mask(arr):
    """Interphase nuclei (and other large compact blobs) of a dark-on-light image: the dark pixels
    (Otsu) that survive an opening by a disk of radius R = max(12, 2.5 % of the long side) px -- wider
    than any chromosome -- in pieces of at least pi (2R)^2 px. A heuristic, for counting detections on
    nuclei; not used by predict."""
    import cv2
    import numpy as np

    g = arr.astype(np.float32)
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-9)
    g8 = (g * 255).astype(np.uint8)
    _, dark = cv2.threshold(g8, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    r = max(12, int(0.025 * max(arr.shape)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    opened = cv2.morphologyEx(dark, cv2.MORPH_OPEN, disk)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(opened)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= np.pi * (2 * r) ** 2]
    return np.isin(lab, keep)


def nucleus_detections(gt: dict, results: list[dict], root: Path, min_score: float):
    """Detections (score >= ``min_score``) whose mask lies at least half on a nucleus
    (:func:`nucleus_mask`): (metaphases with a nucleus, detections on nuclei, metaphases with any)."""
    from pycocotools import mask as mask_utils

    from chromoseg.data.coco import resolve_image_path
    from chromoseg.data.io import read_image

    by_image: dict[str, list] = {}
    for r in results:
        if r["score"] >= min_score:
            by_image.setdefault(Path(r["file_name"]).stem, []).append(r)
    with_nucleus = on_nucleus = images_hit = 0
    for im in gt["images"]:
        nm = nucleus_mask(read_image(resolve_image_path(im["file_name"], root)))
        if not nm.any():
            continue
        with_nucleus += 1
        hits = 0
        for r in by_image.get(Path(im["file_name"]).stem, []):
            m = mask_utils.decode(r["segmentation"]).astype(bool)
            if m.sum() and (m & nm).sum() >= 0.5 * m.sum():
                hits += 1
        on_nucleus += hits
        images_hit += hits > 0
    return with_nucleus, on_nucleus, images_hit


def main(argv=None) -> int:
    import torch

    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import InferenceConfig, Predictor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gband", help="shipped model name or checkpoint / export path")
    ap.add_argument("--gt", type=Path, default=REPO / "datasets" / "gband" / "test.json")
    ap.add_argument("--cil", type=Path, default=REPO.parent / "shared" / "data" / "cil-gband")
    ap.add_argument("--kp", type=Path, default=None, help="karyogram-pair set with masks (optional)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N CIL test images")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_gband")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="keep the predictions already in --work (same model!) and predict only the missing images; "
                         "the speed is then that of the new images")
    ap.add_argument("--md", type=Path, default=None, help="append the results as Markdown here")
    ap.add_argument("--framing", choices=FRAMINGS, default="as-is",
                    help="score the images as they are, pasted into a field twice as large (twice) or at 60 %% (shrunk)")
    ap.add_argument("--frame", choices=["auto", "on", "off"], default="auto",
                    help="predict's --frame: crop to the metaphase first (auto: as the model was trained)")
    ap.add_argument("--bbox", choices=["model", "mask"], default="model",
                    help="score the results' bbox as predict writes it (model: the H&R head's box) or each mask's "
                         "tight bounds (mask: what bbox was before 2026-12-07)")
    ap.add_argument("--count-thresholds", type=float, nargs="+", default=[],
                    help="also count at these score thresholds (besides 0.5 and the model file's recommended one); "
                         "run on a validation split (--gt datasets/gband/val.json) to choose the recommendation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    # the model file's own recommendations (score, classes), as predict uses it
    frame = {"auto": None, "on": True, "off": False}[args.frame]
    predictor = Predictor.from_checkpoint(args.model, InferenceConfig(score_threshold=0.0, score=None, classes=None,
                                                                      frame=frame))
    mcfg = predictor.model.config
    gt, results, summary, seconds = run_model(predictor, args.gt, args.work / f"cil-{args.framing}", args.limit,
                                              args.reuse, args.framing)
    if args.bbox == "mask":
        from pycocotools import mask as mask_utils

        for r in results:
            r["bbox"] = [float(v) for v in mask_utils.toBbox(r["segmentation"])]
    gt_json = args.work / f"cil-{args.framing}_gt.json"
    gt_json.write_text(json.dumps(gt))
    # the candidates were predicted without a threshold (for COCO AP); at a threshold, score what predict
    # writes at it: the candidates above it, with karyotype-aware classes chosen over those alone
    recommended = predictor.recommended_score_threshold
    karyotype = predictor.cfg.classes == "karyotype"
    reports = {thr: evaluate(gt_json, as_predicted(results, thr, karyotype), score_threshold=thr)
               for thr in sorted({0.5, recommended, 0.0}, reverse=True)}

    # counts per metaphase from the detections predict keeps: at the paper's 0.5, at the model file's
    # recommended threshold (export --default-score-threshold) and at any asked for
    totals = cil_totals(args.cil)
    names = {im["id"]: Path(im["file_name"]).stem for im in gt["images"]}
    truth_class = Counter((names[a["image_id"]], a["category_id"]) for a in gt["annotations"])
    stems = [Path(im["file_name"]).stem for im in gt["images"]]
    with_total = [s for s in stems if s in totals]
    pairs = [(s, c) for s in stems for c in range(1, 25)]
    counts = {}
    for thr in sorted({0.5, recommended, *args.count_thresholds}):
        kept = as_predicted(results, thr, karyotype)
        found = Counter(Path(r["file_name"]).stem for r in kept)
        by_class = Counter((Path(r["file_name"]).stem, r["category_id"]) for r in kept)
        counts[thr] = (sum(found[s] == totals[s] for s in with_total),
                       sum(abs(found[s] - totals[s]) for s in with_total) / max(len(with_total), 1),
                       sum(by_class[p] == truth_class[p] for p in pairs))
    exact, mae, class_right = counts[recommended]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}"

    lines = [
        f"\n## Model `{args.model}` on G-band images · {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · commit {commit()}",
        "",
        f"- command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/bench_gband.py --model {args.model}"
        + (f" --gt {shown(args.gt)}" if args.gt.resolve() != (REPO / "datasets" / "gband" / "test.json").resolve() else "")
        + (f" --kp {shown(args.kp)}" if args.kp else "") + (f" --limit {args.limit}" if args.limit else "") + (" --reuse" if args.reuse else "")
        + (f" --framing {args.framing}" if args.framing != "as-is" else "") + (" --bbox mask" if args.bbox == "mask" else "") + (f" --frame {args.frame}" if args.frame != "auto" else "")
        + (" --count-thresholds " + " ".join(f"{t:g}" for t in args.count_thresholds) if args.count_thresholds else "")
        + (f" --md {shown(args.md)}" if args.md else "") + "`",
        f"- hardware: {platform.processor() or platform.machine()}, torch threads {args.threads}",
        f"- model: variant {mcfg.get('variant')}, backbone {mcfg.get('backbone')}, input {mcfg.get('image_size')} (H, W), "
        f"stain {predictor.stain}; scores `{predictor.cfg.score}`, classes `{predictor.cfg.classes}`, "
        f"framed to the metaphase: {'yes' if predictor.cfg.frame else 'no'}",
        f"- CIL {'test' if args.gt.stem == 'test' else args.gt.stem}: `{shown(args.gt)}`, {len(gt['images'])} images, {len(gt['annotations'])} "
        f"annotated boxes (24 classes), framing `{args.framing}`; "
        + (f"{summary['images']} predicted in {seconds:.0f} s ({summary['images'] / max(seconds, 1e-9):.2f} images/s, whole "
           f"`predict` without overlays)" if summary["images"] else "none predicted in this run (speed: the run that made them)")
        + f"; {summary['skipped']} skipped"
        + (f"; {summary['already_done']} kept from an earlier run of this model (--reuse)" if summary.get("already_done") else ""),
        "",
        "At a score threshold the table scores what `predict` writes at it (the candidates above it, "
        + ("with their karyotype-aware classes chosen over those alone" if karyotype else "their classes as predicted")
        + "); at 0, every candidate (classes chosen over all of them).",
        "",
        "| score threshold | mode | box AP | box AP@0.5 | box AP@0.75 |",
        "|---|---|---|---|---|",
    ]
    for thr, rep in reports.items():
        for mode in ("multi", "binary"):
            b = rep["metrics"][mode].get("bbox", {})
            lines.append(f"| {thr:g} | {mode} | {pct(b.get('AP'))} | {pct(b.get('AP50'))} | {pct(b.get('AP75'))} |")
    lines += ["", f"Counts per metaphase (truth: the set's CSV totals, {len(with_total)} metaphases; per class: the "
                  f"annotated boxes, {len(pairs)} (metaphase, class) pairs); the model file recommends score >= {recommended:g}:",
              "", "| score threshold | total exact | mean abs. error | per-class count right |", "|---|---|---|---|"]
    for thr, (ex, ma, cr) in counts.items():
        mark = " (recommended)" if thr == recommended else ""
        lines.append(f"| {thr:g}{mark} | {ex} ({100 * ex / max(len(with_total), 1):.1f}%) | {ma:.2f} | "
                     f"{100 * cr / max(len(pairs), 1):.1f}% |")
    overall, by_size, by_class, by_overlap = recall_by_size_and_class(gt, results)
    from chromoseg.data.classes import class_name

    lines += ["", f"Where chromosomes are lost: {100 * overall:.1f}% of the annotated boxes have a detection "
                  "(score >= 0.5) at box IoU >= 0.5; by the box's longer side (px):", "",
              "| longer side | boxes | found |", "|---|---|---|"]
    lines += [f"| {name} | {n} | {pct(r)} |" for name, n, r in by_size]
    lines += ["", "By class (found, %): " + ", ".join(f"{class_name(c)} {100 * r:.0f}" for c, r in by_class.items())]
    lines += ["", f"Crossing and overlapping chromosomes (another annotated box covers >= {CROSSING_SHARE:.0%} of "
                  "the smaller box), found at box IoU >= 0.5 and score >= 0.5: "
              + "; ".join(f"{name}: {pct(r)} % of {n}" for name, n, r in by_overlap)]
    nuc = nucleus_detections(gt, results, args.gt.parent, recommended)
    lines += ["", f"Nuclei (large compact dark blobs, `nucleus_mask`): {nuc[0]} metaphases have one; "
                  f"{nuc[1]} detections (score >= {recommended:g}) lie at least half on a nucleus, in {nuc[2]} "
                  "metaphases."]
    out = {"cil": {str(k): v["metrics"] for k, v in reports.items()}, "counts_exact": exact,
           "counts_images": len(with_total), "count_mae": mae, "class_count_right": class_right / max(len(pairs), 1),
           "count_threshold": recommended,
           "counts_by_threshold": {str(t): {"exact": ex, "mae": ma, "class_count_right": cr / max(len(pairs), 1)}
                                   for t, (ex, ma, cr) in counts.items()}}
    out["found"] = {"overall": overall, "by_longer_side": by_size, "by_class": by_class}
    out["crossing"] = by_overlap
    out["nuclei"] = {"metaphases_with_nucleus": nuc[0], "detections_on_nuclei": nuc[1], "metaphases_hit": nuc[2]}
    if args.kp:
        gt_kp, res_kp, s_kp, sec_kp = run_model(predictor, args.kp, args.work / "kp", None)
        rep = {thr: evaluate(args.kp, as_predicted(res_kp, thr, karyotype), score_threshold=thr) for thr in (0.5, 0.0)}
        lines += ["", f"Karyogram-pair metaphases: `{shown(args.kp)}`, {len(gt_kp['images'])} images, "
                      f"{len(gt_kp['annotations'])} placed chromosomes (masks from the karyogram cut-outs)", "",
                  "| score threshold | mode | mask AP | mask AP@0.5 | box AP | box AP@0.5 |", "|---|---|---|---|---|---|"]
        for thr, r in rep.items():
            for mode in ("multi", "binary"):
                m, b = r["metrics"][mode].get("segm", {}), r["metrics"][mode].get("bbox", {})
                lines.append(f"| {thr:g} | {mode} | {pct(m.get('AP'))} | {pct(m.get('AP50'))} | {pct(b.get('AP'))} | "
                             f"{pct(b.get('AP50'))} |")
        out["kp"] = {str(k): v["metrics"] for k, v in rep.items()}
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        append_markdown(args.md, text)
    (args.work / "summary.json").write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
