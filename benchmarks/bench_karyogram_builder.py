"""Measure the karyogram-pair builder (``chromoseg data build-from-karyograms``, paper II.A).

1. Real pairs (``karyogram-pairs``: 10 G-banded metaphases + karyograms from another lab): the share of
   karyogram chromosomes matched, per pair, with review sheets written for looking at.
2. Synthetic pairs with ground truth: karyograms made from the M-FISH DAPI images and their expert
   instances (the lead's importer output, ``datasets/mfish/test.json``; crowd regions - touching
   homologues the importer could not separate - are left out of the karyogram and of the scoring), then
   the builder is run on (metaphase, synthetic karyogram) and its instances are compared with the ground
   truth by one-to-one mask IoU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_karyogram_builder.py \\
        --data ../shared/data --gt datasets/mfish/test.json --limit 12 --out out/bench_kp \\
        --md benchmarks/results/karyogram_builder.md
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import shown  # noqa: E402


def _placed_class_accuracy(layout, placed) -> tuple[int, int]:
    ok = 0
    for p in placed:
        for c in layout.chromosomes:
            b = c.box
            if abs((b[0] + b[2]) / 2 - (p.box[0] + p.box[2]) / 2) < 5 and abs(b[3] - p.box[3]) < 5:
                ok += int(c.class_id == p.class_id)
                break
    return ok, len(placed)


def run_real(data: Path, out: Path) -> tuple[list[dict], float, str]:
    from chromoseg.data.karyogram_pairs import build_dataset, pair_by_name

    pairs, problems = pair_by_name(data / "karyogram-pairs" / "a", data / "karyogram-pairs" / "k")
    t = time.time()
    s = build_dataset(pairs, out, skipped=problems, progress=True)
    el = time.time() - t
    rows = [r.summary_row() for r in s.results]
    return rows, el, s.text()


def run_synthetic(gt_path: Path, out: Path, limit: int, scale: float, only: tuple[str, ...] = ()) -> dict:
    import cv2

    from chromoseg.data.coco import load_coco
    from chromoseg.data.io import read_image, to_uint8
    from chromoseg.data.karyogram_pairs import build_dataset, parse_karyogram
    from chromoseg.data.karyogram_pairs.synthetic import evaluate_matches, instances_from_coco, make_karyogram

    d = load_coco(gt_path)
    images = sorted(d["images"], key=lambda i: i["id"])
    if limit and len(images) > limit:
        step = len(images) / limit
        images = [images[int(k * step)] for k in range(limit)]
    if only:  # a few of those, by file name (for iterating on the worst images)
        images = [i for i in images if Path(i["file_name"]).stem in only or Path(i["file_name"]).name in only]
    (out / "k").mkdir(parents=True, exist_ok=True)
    pairs, gts, layouts_ok = [], {}, [0, 0]
    crowds_total = 0
    for img in images:
        path = Path(img["file_name"])
        if not path.is_absolute():
            path = gt_path.parent / path
        im = to_uint8(read_image(path))
        inst, crowds = instances_from_coco(d, img)
        crowds_total += crowds
        kar, placed = make_karyogram(im, inst, scale=scale)
        kp = out / "k" / f"{path.stem}.K.png"
        cv2.imwrite(str(kp), kar)
        ok, n = _placed_class_accuracy(parse_karyogram(kar), placed)
        layouts_ok[0] += ok
        layouts_ok[1] += n
        pairs.append((path, kp))
        gts[str(path)] = inst
    t = time.time()
    s = build_dataset(pairs, out / "built", progress=True)
    el = time.time() - t
    per = []
    tot = {"gt": 0, "pred": 0, "recovered": 0, "recovered_right_class": 0, "matched_right_class": 0}
    ious: list[float] = []
    for r in s.results:
        gt = gts[str(r.metaphase)]
        ev = evaluate_matches(gt, [(m.class_id, m.mask) for m in r.kept])
        for k in tot:
            tot[k] += ev[k]
        ious += ev["ious"]
        per.append((r.metaphase.name, r.n_found, len(r.kept), ev))
    for msg in s.skipped:  # a skipped pair counts as nothing recovered
        for key, gt in gts.items():
            if key in msg:
                tot["gt"] += len(gt)
                ious += [0.0] * len(gt)
    return {
        "images": len(images), "seconds": el, "per": per, "tot": tot, "ious": ious, "skipped": s.skipped,
        "layout_ok": layouts_ok, "crowds": crowds_total, "scale": scale,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--gt", default="datasets/mfish/test.json", help="COCO ground truth of M-FISH images")
    ap.add_argument("--limit", type=int, default=12, help="synthetic pairs (evenly spread over the GT images)")
    ap.add_argument("--scale", type=float, default=1.5, help="magnification of the synthetic karyograms")
    ap.add_argument("--out", default="out/bench_kp")
    ap.add_argument("--md", default=None, help="write the results as Markdown here")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--images", default="", help="comma-separated names: only these of the synthetic pairs")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    lines = []
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:]))
    lines += [
        "# Karyogram-pair builder: measured quality",
        "",
        f"- command: `{cmd}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, Python {platform.python_version()}",
        "",
    ]
    if not args.skip_real:
        rows, el, text = run_real(data, out / "real")
        n_f = sum(int(r["found"]) for r in rows)
        n_m = sum(int(r["matched"]) for r in rows)
        lines += [
            "## Real pairs (karyogram-pairs, 10 G-banded metaphases + karyograms)",
            "",
            f"Data: `{shown(data / 'karyogram-pairs')}`. Review sheets: `{shown(out / 'real' / 'review')}`.",
            f"Matched: **{n_m}/{n_f} karyogram chromosomes ({n_m / max(1, n_f):.1%})**, {el:.0f} s "
            f"({el / max(1, len(rows)):.1f} s per pair).",
            "",
            "| pair | found in karyogram | matched | share | mean score | unmatched classes |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(f"| {r['pair']} | {r['found']} | {r['matched']} | {float(r['matched_share']):.1%} | "
                         f"{r['mean_score']} | {r['unmatched_classes']} |")
        lines += ["", "```", text, "```", ""]
    gt = Path(args.gt)
    if gt.is_file():
        only = tuple(x for x in args.images.split(",") if x)
        res = run_synthetic(gt, out / "synthetic", args.limit, args.scale, only)
        t = res["tot"]
        ious = np.array(res["ious"]) if res["ious"] else np.zeros(1)
        lines += [
            "## Synthetic karyograms from M-FISH ground truth",
            "",
            f"Data: {res['images']} DAPI images of `{shown(gt)}` (evenly spread over its images), ground-truth instances "
            f"from the importer; {res['crowds']} crowd regions (unseparated touching homologues) left out. "
            f"Karyograms: cut-outs turned upright, magnified {res['scale']}x, standard rows with printed labels, "
            f"black background. Builder run on (metaphase, karyogram); {res['seconds']:.0f} s "
            f"({res['seconds'] / max(1, res['images']):.1f} s per pair).",
            "",
            f"- layout parsing: {res['layout_ok'][0]}/{res['layout_ok'][1]} cut-outs given the class they were placed with",
            f"- **recovered with IoU >= 0.8: {t['recovered']}/{t['gt']} = {t['recovered'] / max(1, t['gt']):.1%}**",
            f"- **recovered with IoU >= 0.8 and the right class: {t['recovered_right_class']}/{t['gt']} = "
            f"{t['recovered_right_class'] / max(1, t['gt']):.1%}**",
            f"- IoU >= 0.5 and the right class: {t['matched_right_class']}/{t['gt']} = {t['matched_right_class'] / max(1, t['gt']):.1%}",
            f"- mean IoU of the ground-truth instances (0 where none matched): {ious.mean():.3f}; "
            f"over those with IoU >= 0.5: {ious[ious >= 0.5].mean() if (ious >= 0.5).any() else 0:.3f}",
            f"- skipped pairs: {len(res['skipped'])}",
            "",
            "| image | cut-outs | kept | recovered (IoU>=0.8) | + right class | mean IoU |",
            "|---|---|---|---|---|---|",
        ]
        for name, nf, nk, ev in res["per"]:
            lines.append(f"| {name} | {nf} | {nk} | {ev['recovered']}/{ev['gt']} | {ev['recovered_right_class']} | "
                         f"{np.mean(ev['ious']) if ev['ious'] else 0:.3f} |")
        lines.append("")
    else:
        lines += [f"(synthetic part skipped: no ground truth at {gt})", ""]
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
