"""Measure the not-a-chromosome rule (``chromoseg.karyotype.counts.not_chromosomes``) on saved G-band
predictions: which detections it leaves out, whether they are chromosomes, and what it does to the
counts.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nucleus_rule.py \\
        --gt datasets/gband/val.json --results out/bench-gband-e3-val/cil-as-is/results.json \\
        [--results ...] [--score-threshold 0.3] [--md benchmarks/results/nucleus_rule.md]

No model runs: ``--results`` are the ``results.json`` of ``benchmarks/bench_gband.py`` (or of
``chromoseg predict``) on the images of ``--gt``, kept at score >= ``--score-threshold`` (the shipped
G-band model's recommendation, 0.3). Each detection is judged against the annotators' boxes (``source_bbox``
where the set has them): one whose box matches an annotated chromosome (IoU >= 0.5) is a chromosome
-- leaving it out is a mistake --, one that matches none (IoU < 0.5 with every annotated box) is not a
chromosome; bench_gband's ``nucleus_mask`` (large compact dark blobs that survive a wide opening)
says which lie at least half on a nucleus. Counts as bench_gband reports them: the total per metaphase
against the CIL set's CSV totals (exact, mean abs. error), per class against the annotated boxes
(share of (metaphase, class) pairs right), with the classes chosen again from the saved class scores
jointly over the detections kept (``chromoseg.karyotype.assign``), as predict at that threshold does
-- without the rule, with it in the counts only, and with it also in the assignment (a left-out
detection takes no class slot), which is what predict does now. Sweeps over the compact tier's two
thresholds (area ratio to the metaphase's median, solidity) and over the size-only tier's area ratio
show the room around the chosen ones.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import commit, shown  # noqa: E402
from bench_gband import annotator_boxes, cil_totals, nucleus_mask  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATIOS = (1.5, 2.0, 2.5, 3.0, 4.0)
SOLIDITIES = (0.8, 0.85, 0.9, 0.95)
SIZE_RATIOS = (3.5, 4.0, 4.5, 5.0, 6.0)


def box_iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / max(a[2] * a[3] + b[2] * b[3] - inter, 1e-9)


def measure(gt: dict, results: list[dict], root: Path, thr: float, use_nucleus_mask: bool = True) -> dict:
    """Per detection (score >= thr): its features and truth; per metaphase: the counts without and with
    the rule."""
    from chromoseg.data.coco import resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.karyotype.assign import assign_instances
    from chromoseg.karyotype.counts import count_karyotype, mask_area, solidity
    from chromoseg.karyotype.layout import instances_from_coco

    by_stem = defaultdict(list)
    for r in results:
        if r["score"] >= thr:
            by_stem[Path(r["file_name"]).stem].append(r)
    boxes = defaultdict(list)
    for a in gt["annotations"]:
        boxes[a["image_id"]].append(a)
    dets, images = [], []
    for im in gt["images"]:
        stem = Path(im["file_name"]).stem
        rs = by_stem.get(stem, [])
        insts = instances_from_coco([{**r, "image_id": 0} for r in rs], 0, int(im["height"]), int(im["width"]))
        # the classes as predict at this threshold chooses them (jointly over the detections it keeps),
        # without and with the rule (a nucleus takes no class slot)
        plain = assign_instances(insts, exclude_non_chromosomes=False)
        ruled = assign_instances(insts)
        variants = {"before": count_karyotype(plain, exclude_non_chromosomes=False),
                    "counts": count_karyotype(plain), "after": count_karyotype(ruled)}
        after = variants["after"]
        areas = [mask_area(i["mask"]) or 0 for i in insts]
        nm = None
        for k, (inst, r) in enumerate(zip(insts, rs)):
            others = [a for j, a in enumerate(areas) if j != k and a]
            ratio = areas[k] / max(float(np.median(others)), 1.0) if len(others) else 0.0
            ious = [box_iou(r["bbox"], a["bbox"]) for a in boxes[im["id"]]]
            best = int(np.argmax(ious)) if ious else -1
            d = {"image": stem, "score": r["score"], "category_id": r["category_id"], "area": areas[k],
                 "ratio": ratio, "solidity": solidity(inst["mask"]) if ratio >= min(RATIOS) else None,
                 "iou": ious[best] if ious else 0.0,
                 "gt_class": boxes[im["id"]][best]["category_id"] if ious else None,
                 "excluded": k in after.excluded, "on_nucleus": None}
            if use_nucleus_mask and d["iou"] < 0.5:
                if nm is None:
                    nm = nucleus_mask(read_image(resolve_image_path(im["file_name"], root)))
                m = inst["mask"]
                d["on_nucleus"] = bool(m.sum() and (m & nm).sum() >= 0.5 * m.sum())
            dets.append(d)
        images.append({"image": stem, "id": im["id"], **variants,
                       "classes_before": Counter(i["category_id"] for i in plain),
                       "classes_counts": Counter(i["category_id"] for k, i in enumerate(plain)
                                                 if k not in variants["counts"].excluded),
                       "classes_after": Counter(i["category_id"] for k, i in enumerate(ruled) if k not in after.excluded),
                       "relabelled": sum(a["category_id"] != b["category_id"] for k, (a, b) in enumerate(zip(plain, ruled))
                                         if k not in after.excluded)})
    return {"detections": dets, "images": images}


def count_scores(images: list[dict], gt: dict, totals: dict, key: str) -> tuple[int, int, float, int, int]:
    """(total exact, metaphases with a CSV total, mean abs. error, per-class pairs right, pairs)."""
    truth_class = Counter((a["image_id"], a["category_id"]) for a in gt["annotations"])
    exact = n = right = pairs = 0
    err = 0.0
    for im in images:
        c = im[key]
        if im["image"] in totals:
            n += 1
            exact += c.total == totals[im["image"]]
            err += abs(c.total - totals[im["image"]])
        classes = im["classes_" + key]
        for cls in range(1, 25):
            pairs += 1
            right += classes.get(cls, 0) == truth_class.get((im["id"], cls), 0)
    return exact, n, err / max(n, 1), right, pairs


def size_sweep(dets: list[dict]) -> list[tuple]:
    """The size-only tier: (area ratio, left out, matching a chromosome, matching none, on nucleus_mask)."""
    rows = []
    for k in SIZE_RATIOS:
        sel = [d for d in dets if d["ratio"] >= k]
        rows.append((k, len(sel), sum(d["iou"] >= 0.5 for d in sel), sum(d["iou"] < 0.5 for d in sel),
                     sum(bool(d["on_nucleus"]) for d in sel)))
    return rows


def sweep(dets: list[dict]) -> list[tuple]:
    rows = []
    for ratio in RATIOS:
        for sol in SOLIDITIES:
            out = [d for d in dets if d["ratio"] >= ratio and d["solidity"] is not None and d["solidity"] >= sol]
            rows.append((ratio, sol, len(out), sum(d["iou"] >= 0.5 for d in out), sum(d["iou"] < 0.5 for d in out),
                         sum(bool(d["on_nucleus"]) for d in out)))
    return rows


def main(argv=None) -> int:
    from chromoseg.karyotype.counts import NOT_CHROMOSOME_AREA_RATIO, NUCLEUS_AREA_RATIO, NUCLEUS_SOLIDITY

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", type=Path, default=REPO / "datasets" / "gband" / "val.json")
    ap.add_argument("--results", type=Path, nargs="+", required=True, help="results.json of one or more models")
    ap.add_argument("--cil", type=Path, default=REPO.parent / "shared" / "data" / "cil-gband")
    ap.add_argument("--score-threshold", type=float, default=0.3)
    ap.add_argument("--no-nucleus-mask", action="store_true", help="skip bench_gband's nucleus_mask (2 s per image)")
    ap.add_argument("--hardware", default=None, help="as the results file should name it (default: platform)")
    ap.add_argument("--date", default=None, help="date to write (default: today)")
    ap.add_argument("--md", type=Path, default=None, help="append the results as Markdown here")
    args = ap.parse_args(argv)

    import datetime as dt

    from chromoseg.data.coco import load_coco

    gt = annotator_boxes(load_coco(args.gt))
    totals = cil_totals(args.cil)
    date = args.date or f"{dt.date.today():%Y-%m-%d}"
    lines = [f"\n## The not-a-chromosome rule on `{shown(args.gt)}` · {date} · commit {commit()}", "",
             "- command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nucleus_rule.py --gt "
             f"{shown(args.gt)} --results {' '.join(shown(p) for p in args.results)}"
             + (f" --score-threshold {args.score_threshold:g}" if args.score_threshold != 0.3 else "")
             + (" --no-nucleus-mask" if args.no_nucleus_mask else "")
             + (f" --md {shown(args.md)}" if args.md else "") + "` (no model runs: saved predictions)",
             f"- hardware: {args.hardware or platform.processor() or platform.machine()}",
             f"- split: `{shown(args.gt)}`, {len(gt['images'])} metaphases, {len(gt['annotations'])} annotated "
             f"chromosome boxes; detections kept at score >= {args.score_threshold:g}",
             f"- rule: area >= {NUCLEUS_AREA_RATIO:g} x the median area of the metaphase's other instances and "
             f"solidity >= {NUCLEUS_SOLIDITY:g}, or area >= {NOT_CHROMOSOME_AREA_RATIO:g} x that median whatever the "
             "shape (and >= 10 other instances, a score, a mask)", ""]
    for path in args.results:
        t = time.perf_counter()
        results = json.loads(path.read_text())
        meta = path.with_name("images.json")
        model = json.loads(meta.read_text()).get("model", {}) if meta.is_file() else {}
        m = measure(gt, results, args.gt.parent, args.score_threshold, not args.no_nucleus_mask)
        dets, images = m["detections"], m["images"]
        out = [d for d in dets if d["excluded"]]
        wrong = [d for d in out if d["iou"] >= 0.5]
        on_nuc = [d for d in dets if d["on_nucleus"]]
        b = count_scores(images, gt, totals, "before")
        c = count_scores(images, gt, totals, "counts")
        a = count_scores(images, gt, totals, "after")
        changed = [im for im in images if im["before"].summary != im["after"].summary]
        name = str(model.get("name", "?"))
        name = Path(name).name if "/" in name else name  # a run's file: its name, never a machine's path
        lines += [f"### `{shown(path)}` (model {name}, sha256 {model.get('sha256', '?')})", "",
                  f"- detections: {len(dets)} in {len(images)} metaphases; {sum(d['iou'] >= 0.5 for d in dets)} match an "
                  f"annotated chromosome (box IoU >= 0.5), {sum(d['iou'] < 0.5 for d in dets)} match none",
                  f"- **left out by the rule: {len(out)}** in {len({d['image'] for d in out})} metaphases; "
                  f"**{len(wrong)} of them match an annotated chromosome** (wrongly removed); {len(out) - len(wrong)} "
                  f"match none (best IoU {max([d['iou'] for d in out], default=0):.2f})"
                  + ("" if args.no_nucleus_mask else f", {sum(bool(d['on_nucleus']) for d in out)} of them on a "
                     f"`nucleus_mask` nucleus (the rest: nuclei cut by the image's edge, which that mask misses, "
                     f"or other blobs; see the list)"),
                  ]
        if not args.no_nucleus_mask:
            kept = [d for d in on_nuc if not d["excluded"]]
            lines.append(f"- detections on a `nucleus_mask` nucleus matching no chromosome: {len(on_nuc)}; left out "
                         f"{len(on_nuc) - len(kept)}, kept {len(kept)}" + ("" if not kept else " (area ratio x, solidity: "
                         + "; ".join(f"{d['ratio']:.2f}, " + (f"{d['solidity']:.2f}" if d["solidity"] is not None else "-")
                                     for d in kept) + ")"))
        lines += [f"- chromosomes whose class changed because a left-out detection no longer takes a class slot: "
                  f"{sum(im['relabelled'] for im in images)}",
                  f"- karyotype lines changed: {len(changed)} metaphases"
                  + (" (" + "; ".join(f"{im['image']}: {im['before'].summary} -> {im['after'].summary}, CSV total "
                                      f"{totals.get(im['image'], '?')}" for im in changed) + ")" if changed else ""), "",
                  "| counts | total exact | mean abs. error | per-class count right |", "|---|---|---|---|"]
        for name, (ex, n, mae, right, pairs) in (("without the rule", b), ("the rule in the counts only", c),
                                                 ("with the rule (counts and class assignment: predict now)", a)):
            lines.append(f"| {name} | {ex} of {n} ({100 * ex / max(n, 1):.1f} %) | {mae:.2f} | "
                         f"{right} of {pairs} ({100 * right / max(pairs, 1):.2f} %) |")
        lines += ["", "Left out (metaphase, class called, score, area px, x median, solidity, best box IoU"
                      + ("" if args.no_nucleus_mask else ", on nucleus_mask") + "):", ""]
        lines += [f"- {d['image']}: class {d['category_id']}, score {d['score']:.2f}, {d['area']} px, {d['ratio']:.2f} x, "
                  f"solidity {d['solidity']:.3f}, IoU {d['iou']:.2f}" + ("" if args.no_nucleus_mask else
                                                                         f", {'yes' if d['on_nucleus'] else 'no'}")
                  for d in out]
        chrom = [d for d in dets if d["iou"] >= 0.5]
        big = [d for d in chrom if d["ratio"] >= NUCLEUS_AREA_RATIO]
        solid = [d for d in chrom if d["solidity"] is not None and d["solidity"] >= NUCLEUS_SOLIDITY]
        lines += ["", f"Margins on the detections that match an annotated chromosome: the largest area ratio is "
                      f"{max(d['ratio'] for d in chrom):.2f} x; of those at >= {NUCLEUS_AREA_RATIO:g} x ({len(big)}) the most "
                      f"solid is {max([d['solidity'] for d in big], default=float('nan')):.3f}; of those at >= "
                      f"{min(RATIOS):g} x with solidity >= {NUCLEUS_SOLIDITY:g} ({len(solid)}) the largest is "
                      f"{max([d['ratio'] for d in solid], default=float('nan')):.2f} x.", "",
                  "Sweep (left out / of them matching a chromosome / matching none"
                  + ("" if args.no_nucleus_mask else " / on nucleus_mask") + "):", "",
                  "| area ratio >= | " + " | ".join(f"solidity >= {s:g}" for s in SOLIDITIES) + " |",
                  "|---|" + "---|" * len(SOLIDITIES)]
        sw = sweep(dets)
        for ratio in RATIOS:
            cells = [r for r in sw if r[0] == ratio]
            lines.append(f"| {ratio:g} | " + " | ".join(
                f"{n} / {c} / {o}" + ("" if args.no_nucleus_mask else f" / {nu}") for _, _, n, c, o, nu in cells) + " |")
        lines += ["", "The size-only tier (area ratio >= k whatever the shape; left out / matching a chromosome / "
                      "matching none" + ("" if args.no_nucleus_mask else " / on nucleus_mask") + "): "
                  + "; ".join(f"{k:g} x: {n} / {c} / {o}" + ("" if args.no_nucleus_mask else f" / {nu}")
                              for k, n, c, o, nu in size_sweep(dets)) + "."]
        lines += ["", f"({time.perf_counter() - t:.0f} s)", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        with open(args.md, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
