"""Endpoints of the found chromosomes: the ED heatmap's ends, the predicted mask's skeleton ends, and
the snapping refinement (``chromoseg.ops.snap_endpoints``: an end the heatmap is unsure of -- its
peak under ``min_peak``, or off the mask -- moved to the mask's skeleton end).

The score is the project's (``chromoseg.engine.evaluate``'s confusion): detections matched to the
ground truth at mask IoU >= 0.5 (greedy by score, ``greedy_match``), each ground-truth endpoint
paired with the nearer of the detection's two (``endpoint_errors``), the share within 4 px
(``ENDPOINT_RADIUS``). Predictions are made once, with predict's defaults and the refinement off
(``benchmarks/_mfish_predictions.py``), and every rule is applied to the same ones. Validation
chooses the rule; test is reported for the record.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_endpoints.py --split val \\
        [--preds out/issue26] [--md benchmarks/results/endpoints.md --append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mfish_predictions import cached_predictions  # noqa: E402
from _results import commit, shown, write_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: chromosome length bins (px, the ground truth's skeleton length: its endpoints' path along the mask)
LENGTH_BINS = [(0, 30), (30, 50), (50, 70), (70, 10_000)]


def _bin_name(lo, hi):
    return f"< {hi} px" if lo == 0 else (f">= {lo} px" if hi >= 10_000 else f"{lo}-{hi} px")


def skeleton_length(mask: np.ndarray) -> float:
    """Pixels of the largest skeleton component of a mask (a chromosome's length along its axis)."""
    from skimage.measure import label
    from skimage.morphology import skeletonize

    sk = skeletonize(mask)
    lab = label(sk, connectivity=2)
    if lab.max() == 0:
        return 1.0
    return float(np.bincount(lab.ravel())[1:].max())


def _rle(seg, h, w):
    """A ground-truth segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    return seg


def main(argv=None) -> int:
    from pycocotools import mask as mask_utils

    from chromoseg.engine.evaluate import ENDPOINT_RADIUS, endpoint_errors, evaluate, greedy_match
    from chromoseg.ops import snap_endpoints, window_endpoints, window_of

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--model", default="mfish")
    ap.add_argument("--preds", type=Path, default=REPO / "out" / "issue26", help="prediction cache (one folder per split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-rule figures as JSON")
    a = ap.parse_args(argv)

    gt_path = REPO / "datasets" / "mfish" / f"{a.split}.json"
    gt = json.loads(gt_path.read_text())
    results, heat_dir, run = cached_predictions(gt_path, a.preds / a.split, a.model, a.threads)
    by_img = defaultdict(list)
    for r in results:
        by_img[r["image_id"]].append(r)
    gts = defaultdict(list)
    for g in gt["annotations"]:
        if not g.get("iscrowd"):
            gts[g["image_id"]].append(g)

    # per detection: its window, ED ends, heatmap values at them, skeleton ends; matched ground truth
    pairs = []  # (gt ann, det, window, skeleton ends, heat values, gt length)
    heat_at = {}
    for img in gt["images"]:
        iid, H, W = img["id"], img["height"], img["width"]
        d = sorted(by_img.get(iid, []), key=lambda r: -r["score"])
        g = gts.get(iid, [])
        if not d or not g:
            continue
        grle = [_rle(x["segmentation"], H, W) for x in g]
        ious = np.asarray(mask_utils.iou([x["segmentation"] for x in d], grle, [0] * len(g))).reshape(len(d), len(g))
        match = greedy_match(ious, [x["score"] for x in d], 0.5)
        hp = heat_dir / f"{iid}.npy"
        hm = np.load(hp).astype(np.float32) if hp.is_file() else None
        for j, i in match.items():
            det = d[i]
            win = window_of(mask_utils.decode(det["segmentation"]).astype(bool))
            ends = np.asarray(det["endpoints"], float)
            vals = [float(hm[min(max(int(y), 0), H - 1), min(max(int(x), 0), W - 1)]) if hm is not None else 1.0
                    for x, y in ends]
            gl = skeleton_length(mask_utils.decode(grle[j]).astype(bool))
            pairs.append((g[j], det, win, window_endpoints(win), hm, vals, gl))

    def score(rule) -> dict:
        dists, bins = [], defaultdict(list)
        moved = 0
        for ann, det, win, sk, hm, vals, gl in pairs:
            e, n = rule(det, win, sk, hm)
            moved += n
            dd = endpoint_errors(ann["endpoints"], e)
            dists += dd
            for lo, hi in LENGTH_BINS:
                if lo <= gl < hi:
                    bins[(lo, hi)] += dd
        hit = lambda v: sum(x <= ENDPOINT_RADIUS for x in v)  # noqa: E731
        return {"within": hit(dists), "n": len(dists), "share": hit(dists) / max(len(dists), 1),
                "mean": float(np.mean(dists)), "median": float(np.median(dists)), "moved": moved,
                "bins": {_bin_name(*b): (hit(bins[b]), len(bins[b])) for b in LENGTH_BINS}}

    def ed(det, win, sk, hm):
        return det["endpoints"], 0

    def skeleton(det, win, sk, hm):
        return sk.tolist(), 2

    def snap(min_peak, off_mask):
        def rule(det, win, sk, hm):
            e, m = snap_endpoints(det["endpoints"], win, hm if min_peak > 0 else None, min_peak=min_peak,
                                  off_mask=off_mask, skeleton_ends=sk)
            return e.tolist(), sum(m)
        return rule

    rules = {"ED heatmap (predict's, no refinement)": ed, "skeleton ends of the predicted mask": skeleton,
             "snap when off the mask": snap(0.0, True)}
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        rules[f"snap when peak < {t:g}"] = snap(t, False)
        rules[f"snap when peak < {t:g} or off the mask"] = snap(t, True)
    scores = {name: score(rule) for name, rule in rules.items()}
    # the project's own scoring of the unrefined predictions, as a check of this loop's
    rep = evaluate(gt_path, results, score_threshold=0.0, modes=("binary",), iou_types=("segm",))
    e = rep["confusion"]["endpoints"]
    ed_s = scores["ED heatmap (predict's, no refinement)"]
    # ED ends against the skeleton ends
    d_es = [x for ann, det, win, sk, hm, vals, gl in pairs for x in endpoint_errors(sk, det["endpoints"])]
    peaks = np.asarray([v for p in pairs for v in p[5]])

    lines = [f"## Endpoints on the M-FISH {a.split} split ({dt.date.today()}, commit {commit()})", "",
             "```", f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} nice -n 19 .venv/bin/python "
             "benchmarks/bench_endpoints.py " + shlex.join(argv if argv is not None else sys.argv[1:]), "```", "",
             f"Model `{a.model}`, predict's defaults (score `{run['settings'].get('score')}`, threshold "
             f"{run['settings'].get('score_threshold')}, classes `{run['settings'].get('classes')}`), "
             f"`{shown(gt_path)}` ({len(gt['images'])} images); predictions made once ({run['seconds']} s, "
             f"{run['threads']} thread(s), 2-core AMD EPYC beside a training run) and every rule applied to "
             f"them. {len(pairs)} chromosomes found (mask IoU >= 0.5), {ed_s['n']} endpoints. The project's "
             f"own `evaluate` on the unrefined predictions: {e['within_radius']}/{e['of_matched_instances']} "
             f"within {e['radius_px']:g} px (this loop: {ed_s['within']}/{ed_s['n']}).", "",
             f"ED ends against the predicted mask's skeleton ends (paired as the score pairs them): median "
             f"{np.median(d_es):.1f} px, {100 * np.mean(np.asarray(d_es) <= 4):.1f} % within 4 px. Heatmap value "
             f"at the ED ends: median {np.median(peaks):.2f}, {100 * np.mean(peaks < 0.3):.1f} % under 0.3, "
             f"{100 * np.mean(peaks < 0.5):.1f} % under 0.5.", "",
             "| endpoints | within 4 px | mean px | median px | ends moved | "
             + " | ".join(f"within 4 px, length {_bin_name(*b)}" for b in LENGTH_BINS) + " |",
             "|---|---|---|---|---|" + "---|" * len(LENGTH_BINS)]
    for name, s in scores.items():
        lines.append(f"| {name} | **{100 * s['share']:.1f} %** ({s['within']}/{s['n']}) | {s['mean']:.2f} | "
                     f"{s['median']:.2f} | {s['moved']} | "
                     + " | ".join(f"{100 * h / max(n, 1):.1f} % ({h}/{n})" for h, n in s["bins"].values()) + " |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.md:
        write_markdown(a.md, text, "Endpoints: the ED heatmap, the mask's skeleton, and snapping (`benchmarks/bench_endpoints.py`)", append=a.append)
    if a.json:
        a.json.write_text(json.dumps(scores, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
