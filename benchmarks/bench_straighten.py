"""Does the crop classifier name straightened chromosomes better than plain (rotated) crops?

Takes an existing ``chromoseg predict`` output (``results.json``: the detections' masks, rotated boxes
and endpoints; no model is run for them), matches its detections one-to-one to a split's ground
truth (``linear_sum_assignment`` on mask IoU, kept at >= 0.5; the class is the annotators'), and
classifies each matched detection's crop with a model's crop classifier (its own test-time views:
both ends, both mirror images) three ways:

* **plain**: :func:`chromoseg.models.crop_classifier.instance_crops` on the image, the crop sampled in
  the rotated box - exactly what ``chromoseg predict`` gives the classifier;
* **plain, box from the mask**: the same, the rotated box taken from the detection's mask
  (``chromoseg.ops.mask_to_rbox``) instead of the model's box head - a control: the straightened crops
  take their geometry from the mask too;
* **straightened**: each detection resampled along its medial axis
  (:mod:`chromoseg.karyotype.straighten`, 1 image pixel per pixel, enough context on each side for
  the classifier's padding), the straightened crops laid side by side on one canvas per metaphase
  (background: the image's median outside the masks) and cut by ``instance_crops`` with rotated boxes
  from their masks, so the per-cell standardisation is the same; relative lengths as predict's (the
  rotated box's long side over the cell's mean);
* **straightened + arc length**: the same crops, relative lengths from the axis length (the
  straightened chromosome's length) instead of the box's.

A detection with no usable axis (:class:`chromoseg.karyotype.straighten.NotStraightenable`) keeps its
plain crop in the straightened rows. "Bent" = axis length at least 10 % longer than the rotated box's
long side. Accuracy alone and after the per-cell karyotype-aware assignment over the matched
detections (as ``bench_classifier_detected.py``). Single-threaded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_straighten.py \\
        --pred out/bench-gband-e3-val/cil-as-is --gt datasets/gband/val.json --model gband \\
        --md benchmarks/results/straighten.md
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import append_markdown, commit, shown  # noqa: E402


def classify_views(clf, crops, rl):
    """``CropClassifier.classify``'s test-time views and averaging, on given crops."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        views = torch.cat((crops, crops.flip(-1), crops.flip(-2), crops.flip(-1).flip(-2)))
        logits = clf(views.contiguous(memory_format=torch.channels_last), rl.repeat(4))
        return F.softmax(logits.view(4, crops.shape[0], -1).mean(0), dim=1)


def straight_canvas(img: np.ndarray, masks: np.ndarray, ends: list, rboxes: np.ndarray):
    """Straightened crops of one metaphase's detections on one canvas: (canvas [Hc, Wc] float32,
    canvas masks [N, Hc, Wc] bool, canvas rboxes [N, 5], ok [N] bool, axis lengths [N])."""
    import torch

    from chromoseg.karyotype.straighten import AREA_RATIO, NotStraightenable, medial_axis, straighten
    from chromoseg.ops import mask_to_rbox

    n = len(masks)
    union = masks.any(0)
    bg = float(np.median(img[~union])) if (~union).any() else float(img.mean())
    crops, ok, lengths = [], np.zeros(n, bool), np.zeros(n)
    for k in range(n):
        try:
            axis = medial_axis(masks[k], ends[k])
            L, hw = axis.length, axis.half_width
            # the classifier's padding: 15 % along, 40 % across, not thinner than half the grid's ratio
            half = 0.5 * max(2 * hw * 1.4, L * 1.15 * 24 / 64 * 0.5) + 4
            g, m = straighten(img, masks[k], axis, pad=0.075 * L + 4, half_extent=half, border=bg)
            ratio = m.sum() / max(masks[k].sum(), 1)
            if not AREA_RATIO[0] <= ratio <= AREA_RATIO[1]:
                raise NotStraightenable("area")
        except NotStraightenable:
            crops.append(None)
            lengths[k] = rboxes[k][2]
            continue
        crops.append((g.astype(np.float32), m))
        ok[k] = True
        lengths[k] = L
    made = [c for c in crops if c is not None]
    if not made:
        return None, None, None, ok, lengths
    gap = 8
    Hc = max(g.shape[0] for g, _ in made) + 2 * gap
    Wc = sum(g.shape[1] for g, _ in made) + gap * (len(made) + 1)
    canvas = np.full((Hc, Wc), bg, np.float32)
    cmasks = np.zeros((n, Hc, Wc), bool)
    crb = np.zeros((n, 5), np.float32)
    x = gap
    for k, c in enumerate(crops):
        if c is None:
            continue
        g, m = c
        h, w = g.shape
        canvas[gap:gap + h, x:x + w] = g
        cmasks[k, gap:gap + h, x:x + w] = m
        crb[k] = mask_to_rbox(torch.from_numpy(np.ascontiguousarray(m))).numpy()
        crb[k, 0] += x
        crb[k, 1] += gap
        x += w + gap
    return canvas, cmasks, crb, ok, lengths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pred", required=True, type=Path, help="a chromoseg predict output folder (results.json)")
    ap.add_argument("--gt", required=True, type=Path, help="the split's dataset JSON (ground-truth classes)")
    ap.add_argument("--model", default="gband", help="model whose crop classifier is used (file or shipped name)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--min-iou", type=float, default=0.5)
    ap.add_argument("--md", type=Path, help="append the results to this Markdown file")
    ap.add_argument("--date", default=None, help="date written in the results (default: today)")
    ap.add_argument("--hardware", default=None, help="hardware written in the results")
    a = ap.parse_args(argv)

    import torch
    from scipy.optimize import linear_sum_assignment

    from chromoseg.data.coco import decode_mask
    from chromoseg.data.io import read_image_with_info, to_float01
    from chromoseg.engine.checkpoint import load_model
    from chromoseg.engine.crop_classifier import joint_accuracy
    from chromoseg.models.crop_classifier import instance_crops, relative_lengths
    from chromoseg.ops import mask_iou, mask_to_rbox
    from chromoseg.weights import resolve_model

    torch.set_num_threads(1)
    clf = load_model(resolve_model(a.model)).crop_classifier
    if clf is None:
        raise SystemExit(f"{a.model}: that model has no crop classifier")
    clf = clf.float().eval()
    gt = json.loads(a.gt.read_text())
    results = json.loads((a.pred / "results.json").read_text())
    by_file: dict[str, list] = {}
    for r in results:
        by_file.setdefault(str(r["file_name"]), []).append(r)
    anns: dict[int, list] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd"):
            anns.setdefault(ann["image_id"], []).append(ann)
    images = gt["images"][: a.limit] if a.limit else gt["images"]
    P = {"plain": [], "plain_mask": [], "straight": [], "straight_arc": []}
    labels, image_of, bent, straight_ok, agree = [], [], [], [], []
    n_det = n_gt = 0
    t_straight = 0.0
    c_straight = 0.0
    t0 = time.perf_counter()
    for idx, img in enumerate(images):
        dets = by_file.get(str(img["file_name"]), [])
        gts = anns.get(img["id"], [])
        H, W = int(img["height"]), int(img["width"])
        n_det += len(dets)
        n_gt += len(gts)
        if not dets or not gts:
            continue
        arr, _ = read_image_with_info(img["file_name"])
        image = torch.from_numpy(to_float01(arr))
        dm = np.stack([decode_mask(d["segmentation"], H, W) for d in dets])
        gm = np.stack([decode_mask(g["segmentation"], H, W) for g in gts])
        iou = mask_iou(torch.from_numpy(dm), torch.from_numpy(gm)).numpy()
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] >= a.min_iou
        rows, cols = rows[keep], cols[keep]
        if not len(rows):
            continue
        rb = torch.tensor([d["rbox"] for d in dets], dtype=torch.float32)
        masks_t = torch.from_numpy(dm)
        plain = instance_crops(image, masks_t, rb)  # as predict: every detection of the cell
        rl = relative_lengths(rb)
        p_plain = classify_views(clf, plain, rl)
        rbm = torch.stack([mask_to_rbox(m) for m in masks_t])
        p_plain_mask = classify_views(clf, instance_crops(image, masks_t, rbm), relative_lengths(rbm))
        ts, cs = time.perf_counter(), time.process_time()
        canvas, cm, crb, ok, lengths = straight_canvas(image.numpy(), dm, [d.get("endpoints") for d in dets],
                                                       rb.numpy())
        t_straight += time.perf_counter() - ts
        c_straight += time.process_time() - cs
        straight = plain.clone()
        if canvas is not None and ok.any():
            sel = np.nonzero(ok)[0]
            # the canvas holds every straightened detection, so its standardisation is the cell's
            sc = instance_crops(torch.from_numpy(canvas), torch.from_numpy(cm[sel]), torch.from_numpy(crb[sel]))
            straight[torch.from_numpy(sel)] = sc
        lt = torch.tensor(lengths, dtype=torch.float32)
        rl_arc = lt / lt.mean()
        p_straight = classify_views(clf, straight, rl)
        p_arc = classify_views(clf, straight, rl_arc)
        sel = torch.as_tensor(rows, dtype=torch.long)
        P["plain"].append(p_plain[sel])
        P["plain_mask"].append(p_plain_mask[sel])
        P["straight"].append(p_straight[sel])
        P["straight_arc"].append(p_arc[sel])
        labels.append(torch.tensor([gts[c]["category_id"] - 1 for c in cols]))
        image_of.append(torch.full((len(rows),), idx))
        straight_ok.append(torch.from_numpy(ok[rows]))
        bent.append(torch.from_numpy((lengths[rows] >= 1.1 * rb.numpy()[rows, 2]) & ok[rows]))
        stored = [int(np.argmax(dets[r]["class_scores"])) if dets[r].get("class_scores") else -1 for r in rows]
        agree.append(torch.tensor(stored) == p_plain[sel].argmax(1))
        print(f"{idx + 1}/{len(images)} {Path(img['file_name']).name}: {len(rows)} matched, "
              f"{int(ok[rows].sum())} straightened", flush=True)
    wall = time.perf_counter() - t0
    y = torch.cat(labels)
    data = {"labels": y, "image": torch.cat(image_of)}
    okm, bentm = torch.cat(straight_ok), torch.cat(bent)
    agree_all = torch.cat(agree)
    probs = {k: torch.cat(v) for k, v in P.items()}
    right = {k: (v.argmax(1) == y) for k, v in probs.items()}

    def acc(k, m=None):
        r = right[k] if m is None else right[k][m]
        return 100.0 * float(r.float().mean()) if r.numel() else float("nan")

    n = int(y.numel())
    rows_md = []
    for k, name in (("plain", "plain (rotated box, as predict)"), ("plain_mask", "plain, box from the mask"),
                    ("straight", "straightened"),
                    ("straight_arc", "straightened + arc-length relative length")):
        rows_md.append(f"| {name} | {acc(k):.1f} % | {100 * joint_accuracy(probs[k], data):.1f} % | "
                       f"{acc(k, okm):.1f} % | {acc(k, bentm):.1f} % |")
        print(rows_md[-1])
    flips = {k: (int((right['plain'] & ~right[k]).sum()), int((~right['plain'] & right[k]).sum()))
             for k in ("plain_mask", "straight", "straight_arc")}
    argv_shown = [shown(x) if Path(x).exists() else x for x in (argv or sys.argv[1:])]
    hw = a.hardware or f"{platform.machine()}, {torch.get_num_threads()} torch thread"
    date = a.date or time.strftime("%Y-%m-%d")
    lines = [
        "", f"## Crop classifier on plain vs straightened crops, `{shown(a.gt)}` ({date}, commit {commit()})", "",
        f"- command: `OMP_NUM_THREADS=1 {shlex.join(['python', 'benchmarks/bench_straighten.py'] + argv_shown)}`",
        f"- hardware: {hw}; {wall:.0f} s in all, straightening {1000 * c_straight / max(n_det, 1):.1f} ms CPU "
        f"({1000 * t_straight / max(n_det, 1):.1f} ms wall, beside a training run) per detection",
        f"- detections: `{shown(a.pred)}/results.json` ({n_det} detections on {len(images)} metaphases, "
        f"{n_gt} ground-truth chromosomes); {n} matched at mask IoU >= {a.min_iou}, their class the annotators'",
        f"- classifier: the crop classifier of `{shown(a.model)}`; its plain-crop class equals the class stored "
        f"in results.json for {100 * float(agree_all.float().mean()):.1f} % of the matched detections "
        "(the same classifier and crops as predict)",
        f"- straightened: {int(okm.sum())} of {n} ({100 * float(okm.float().mean()):.1f} %); bent "
        f"(axis >= 1.1 x box long side): {int(bentm.sum())}", "",
        f"| crops | right class ({n}) | with the karyotype-aware assignment | on the {int(okm.sum())} straightened "
        f"| on the {int(bentm.sum())} bent |",
        "|---|---|---|---|---|", *rows_md, "",
        f"Changed answers against plain: box from the mask {flips['plain_mask'][0]} right -> wrong, "
        f"{flips['plain_mask'][1]} wrong -> right; straightened {flips['straight'][0]} right -> wrong, "
        f"{flips['straight'][1]} wrong -> right; + arc length {flips['straight_arc'][0]} right -> wrong, "
        f"{flips['straight_arc'][1]} wrong -> right.",
    ]
    if a.md:
        append_markdown(a.md, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
