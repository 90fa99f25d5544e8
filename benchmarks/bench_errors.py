"""Where a model loses chromosomes (``chromoseg.engine.diagnose``), beside the Otsu baseline.

For every ground-truth chromosome of the split: lost by the RPN, missed by the RoI heads, found with
mask IoU < 0.5, lost to the score threshold, removed by NMS, found with the wrong / right class.
The same run gives the model's mask AP (its final instances, as ``predict`` keeps them) and the
classical baseline's (Otsu threshold + 8-connected components, pieces under 30 px dropped, every
piece one chromosome: binary AP only).

``--by-shape`` adds, for every ground-truth chromosome, its length (medial axis, px), bend
(``1 - chord / length``) and whether it overlaps or touches another ground-truth chromosome
(:func:`chromosome_shape`, :func:`overlap_kinds`), its best RPN proposal IoU and its best anchor IoU,
and two tables: per bucket (length tertiles, bend, overlap) the share found and in each failure
stage, and per stage the shapes it holds. Inference-only knobs for measuring recall, set on the
loaded model for this run only (none changes a default of ``predict``): ``--proposals`` (predict's
setting), ``--pre-nms`` (each FPN level's top-n before the RPN's NMS), ``--rpn-nms`` (that NMS's IoU),
``--input-size`` (the network input, H x W). ``--json`` writes every chromosome's record and the
run's summary.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_errors.py --model mfish \\
        --gt datasets/mfish/test.json --md benchmarks/results/errors.md --append
    # by shape, with 1,200 RPN proposals, on validation (benchmarks/results/recall.md)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_errors.py --model mfish \\
        --gt datasets/mfish/val.json --threads 1 --by-shape --proposals 1200
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import commit, write_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: bend = 1 - (distance between the medial axis's two tips) / (its length along the axis): 0 for a
#: straight chromosome; a circular arc of 60 degrees gives 0.045, 90 degrees 0.10, 180 degrees (a U) 0.36
BEND_BINS = (0.05, 0.15)  # straight < 0.05 <= curved < 0.15 <= bent
#: the breakdown's failure columns (the stages of ``chromoseg.engine.diagnose``); "found" = matched,
#: either class
SHAPE_COLUMNS = (("rpn", "RPN-missed"), ("heads_miss", "heads-missed"), ("mask_iou_low", "poor mask"),
                 ("score", "score threshold"), ("nms", "NMS / top-k"), ("taken", "taken"))


def chromosome_shape(mask, rbox=None) -> dict:
    """Length, bend and elongation of one ground-truth chromosome's boolean mask ``[H, W]``.

    ``length``: its medial axis's length tip to tip in px (:func:`chromoseg.karyotype.straighten.medial_axis`,
    the axis the karyogram straightens along); ``bend``: ``1 - chord / length``, ``chord`` the
    distance between the axis's two tips (see :data:`BEND_BINS`); ``aspect``: the long over the short
    side of its minimum-area rotated box (``rbox``, else :func:`chromoseg.ops.mask_to_rbox`), the
    shape the RPN's anchors have to fit. A mask without such an axis (a blob, a tiny or a ring-shaped
    mask: ``NotStraightenable``) gets its rotated box's long side as length and bend 0; ``axis``
    says which."""
    from chromoseg.karyotype.straighten import NotStraightenable, medial_axis
    from chromoseg.ops import mask_to_rbox

    rb = [float(v) for v in (mask_to_rbox(mask) if rbox is None else rbox)[:4]]
    long_side, short_side = max(rb[2], rb[3]), min(rb[2], rb[3])
    aspect = long_side / max(short_side, 1e-6)
    try:
        ax = medial_axis(np.asarray(mask, bool))
    except NotStraightenable:
        return {"length": long_side, "bend": 0.0, "aspect": aspect, "axis": False}
    chord = float(np.linalg.norm(ax.points[-1] - ax.points[0]))
    return {"length": ax.length, "bend": float(max(0.0, 1.0 - chord / max(ax.length, 1e-6))),
            "aspect": aspect, "axis": True}


def overlap_kinds(masks) -> list[str]:
    """For each of the boolean masks ``[N, H, W]`` of one image: "overlapping" where it shares a
    pixel with another mask, else "touching" where another lies within 1 px (8-neighbours), else "apart"."""
    import cv2

    m = np.asarray(masks, bool)
    if len(m) == 0:
        return []
    cover = m.sum(0, dtype=np.int32)
    kernel = np.ones((3, 3), np.uint8)
    kinds = []
    for k in range(len(m)):
        others = (cover - m[k]) > 0
        if (m[k] & others).any():
            kinds.append("overlapping")
        elif (cv2.dilate(m[k].astype(np.uint8), kernel).astype(bool) & others).any():
            kinds.append("touching")
        else:
            kinds.append("apart")
    return kinds


def bend_bin(bend: float) -> str:
    return "straight" if bend < BEND_BINS[0] else "curved" if bend < BEND_BINS[1] else "bent"


def shape_buckets(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """(name, records) per bucket: length tertiles of these chromosomes (and their longest tenth),
    bend bins, overlap kinds, and the long tertile crossed with bend and overlap."""
    if not records:
        return []
    lengths = np.array([r["length"] for r in records])
    t1, t2, d9 = (float(v) for v in np.percentile(lengths, [100 / 3, 200 / 3, 90]))

    def lbin(r):
        return "short" if r["length"] < t1 else "middle" if r["length"] < t2 else "long"

    out = [("all", records),
           (f"short (length < {t1:.0f} px)", [r for r in records if lbin(r) == "short"]),
           (f"middle ({t1:.0f}-{t2:.0f} px)", [r for r in records if lbin(r) == "middle"]),
           (f"long (>= {t2:.0f} px)", [r for r in records if lbin(r) == "long"]),
           (f"longest tenth (>= {d9:.0f} px)", [r for r in records if r["length"] >= d9])]
    lo, hi = BEND_BINS
    out += [(f"straight (bend < {lo:g})", [r for r in records if bend_bin(r["bend"]) == "straight"]),
            (f"curved ({lo:g}-{hi:g})", [r for r in records if bend_bin(r["bend"]) == "curved"]),
            (f"bent (>= {hi:g})", [r for r in records if bend_bin(r["bend"]) == "bent"])]
    out += [(k, [r for r in records if r["overlap"] == k]) for k in ("apart", "touching", "overlapping")]
    long_ = [r for r in records if lbin(r) == "long"]
    out += [("long and straight", [r for r in long_ if bend_bin(r["bend"]) == "straight"]),
            ("long and curved or bent", [r for r in long_ if bend_bin(r["bend"]) != "straight"]),
            ("long and apart", [r for r in long_ if r["overlap"] == "apart"]),
            ("long and touching or overlapping", [r for r in long_ if r["overlap"] != "apart"])]
    return out


def shape_table(records: list[dict]) -> list[str]:
    """Markdown lines: per bucket (:func:`shape_buckets`) the chromosomes, the share found (matched
    at mask IoU >= 0.5, either class) and the share in each failure stage, plus the median best
    proposal and best anchor IoU (rotated, in the model's input frame)."""
    head = ("| bucket | chromosomes | found | " + " | ".join(h for _, h in SHAPE_COLUMNS)
            + " | median best proposal IoU | median best anchor IoU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, rs in shape_buckets(records):
        n = len(rs)

        def share(stages):
            return "-" if not n else f"{100 * sum(r['stage'] in stages for r in rs) / n:.1f}%"

        med = [("-" if not n or any(r.get(k) is None for r in rs) else f"{np.median([r[k] for r in rs]):.2f}")
               for k in ("proposal_iou", "anchor_iou")]
        lines.append(f"| {name} | {n} | {share(('wrong_class', 'right_class'))} | "
                     + " | ".join(share((s,)) for s, _ in SHAPE_COLUMNS) + f" | {med[0]} | {med[1]} |")
    return lines


def shape_of_stages(records: list[dict]) -> list[str]:
    """Markdown lines: per stage, the median length, bend and rotated-box aspect and the share
    overlapping or touching another chromosome."""
    lines = ["| where the chromosome ends up | chromosomes | median length (px) | median bend | bent (>= "
             f"{BEND_BINS[1]:g}) | median box aspect | touching or overlapping |", "|---|---|---|---|---|---|---|"]
    groups = [("found", ("wrong_class", "right_class"))] + [(h, (s,)) for s, h in SHAPE_COLUMNS]
    for name, stages in groups:
        rs = [r for r in records if r["stage"] in stages]
        if not rs:
            continue
        lines.append(f"| {name} | {len(rs)} | {np.median([r['length'] for r in rs]):.0f} | "
                     f"{np.median([r['bend'] for r in rs]):.3f} | "
                     f"{100 * np.mean([r['bend'] >= BEND_BINS[1] for r in rs]):.0f}% | "
                     f"{np.median([r['aspect'] for r in rs]):.1f} | "
                     f"{100 * np.mean([r['overlap'] != 'apart' for r in rs]):.0f}% |")
    return lines


def best_anchor_iou(ag, gt_rboxes, image_list, feature_maps) -> np.ndarray | None:
    """Best rotated IoU ``[G]`` of each ground-truth box (input frame) with any anchor of the rotated
    anchor generator ``ag`` for this input (``image_list``, ``feature_maps`` as the RPN's anchor
    generator got them: only their shapes are read); None for an axis-aligned generator."""
    from chromoseg.ops import rbox_match_quality

    if not hasattr(ag, "overlap_candidates") or len(gt_rboxes) == 0:
        return None
    anchors = ag(image_list, feature_maps)[0]
    g = gt_rboxes.to(anchors.dtype)
    q = rbox_match_quality(g, anchors, 0.3, candidates=ag.overlap_candidates(g, image_list, feature_maps))
    return q.amax(1).numpy()


def anchor_generator_of(spec: str, base):
    """A rotated anchor generator from ``spec`` -- ``;``-separated ``sizes=...``, ``ratios=...``,
    ``angles=...`` (comma-separated numbers; one size per FPN level) -- taking what it leaves out from
    the generator ``base`` (the model's)."""
    from chromoseg.models.rpn import RotatedAnchorGenerator

    kw = {"sizes": [s[0] for s in base.sizes], "ratios": base.ratios, "angles": base.angles}
    for part in filter(None, (x.strip() for x in spec.split(";"))):
        key, _, val = part.partition("=")
        if key.strip() not in kw:
            raise ValueError(f"anchor set {spec!r}: {key!r} is none of sizes, ratios, angles")
        kw[key.strip()] = [float(v) for v in val.split(",") if v.strip()]
    if len(kw["sizes"]) != len(base.sizes):
        raise ValueError(f"anchor set {spec!r}: one size per FPN level ({len(base.sizes)})")
    return RotatedAnchorGenerator(kw["sizes"], kw["ratios"], kw["angles"])


def anchor_table(records: list[dict], names: list[str]) -> list[str]:
    """Markdown lines: per bucket (:func:`shape_buckets`, then the found and the RPN-missed
    chromosomes), the share whose best anchor IoU reaches 0.5 and 0.7 (the RPN's foreground
    threshold in training) for each anchor set (``anchor_iou`` = the model's, ``anchor_iou_<k>`` =
    ``names[k]``)."""
    keys = ["anchor_iou"] + [f"anchor_iou_{k}" for k in range(len(names))]
    head = ("| bucket | chromosomes | "
            + " | ".join(f"{n}: >= 0.5 / >= 0.7 / median" for n in ["model's anchors"] + names) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    groups = shape_buckets(records) + [
        ("found", [r for r in records if r["stage"] in ("wrong_class", "right_class")]),
        ("RPN-missed", [r for r in records if r["stage"] == "rpn"])]
    for name, rs in groups:
        if not rs:
            continue
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rs], float)
            cells.append(f"{100 * (v >= 0.5).mean():.0f}% / {100 * (v >= 0.7).mean():.0f}% / {np.median(v):.2f}")
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines


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
    ap.add_argument("--by-shape", action="store_true",
                    help="also break the chromosomes down by length, bend and overlap (see the module docstring)")
    ap.add_argument("--json", type=Path, default=None, help="write every chromosome's record and the summary here")
    ap.add_argument("--proposals", type=int, default=None,
                    help="RPN proposals kept after its NMS (predict's setting; default: the model file's, else 300)")
    ap.add_argument("--pre-nms", type=int, default=None,
                    help="each FPN level's top-n anchors before the RPN's NMS (default: max(600, proposals))")
    ap.add_argument("--rpn-nms", type=float, default=None, help="IoU of the RPN's NMS (default: the model's, 0.7)")
    ap.add_argument("--input-size", default=None, metavar="HxW",
                    help="network input size, e.g. 640x800 (default: the model's, 512x640)")
    ap.add_argument("--anchor-sets", nargs="+", default=[], metavar="SPEC",
                    help="with --by-shape: also each chromosome's best IoU with these anchor sets (no "
                         "detection changes), e.g. 'ratios=1.5,3,6' 'angles=-75,-60,-45,-30,-15,0,15,30,45,60,75,90' "
                         "(';'-separated sizes=, ratios=, angles=; the rest as the model's)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    predictor = Predictor.from_checkpoint(a.model, InferenceConfig(score=a.score, classes=a.classes,
                                                                   score_threshold=a.score_threshold,
                                                                   crop_classifier=not a.no_crop_classifier,
                                                                   proposals=a.proposals))
    knobs = []  # this run's inference knobs (set on the loaded model only)
    rpn = getattr(predictor.model, "rpn", None)
    pre = getattr(rpn, "_pre", None) or getattr(rpn, "_pre_nms_top_n", None)
    post = getattr(rpn, "_post", None) or getattr(rpn, "_post_nms_top_n", None)
    if a.pre_nms is not None:
        pre["testing"] = int(a.pre_nms)
    if a.rpn_nms is not None:
        rpn.nms_thresh = float(a.rpn_nms)
    if a.input_size:
        hh, ww = (int(v) for v in a.input_size.lower().split("x"))
        predictor.model.transform.image_size = (hh, ww)
    if any(v is not None for v in (a.proposals, a.pre_nms, a.rpn_nms, a.input_size)):
        knobs = [f"RPN {post['testing']} proposals after NMS at IoU {rpn.nms_thresh:g}, top {pre['testing']} per "
                 f"level before it", "input %dx%d (H x W)" % tuple(predictor.model.transform.image_size)]
    clf = getattr(predictor.model, "crop_classifier", None) is not None and not a.no_crop_classifier
    ds = ChromosomeDataset(a.gt, max_images=a.max_images)
    coco = load_coco(a.gt)
    counts = {s: 0 for s in STAGES}
    results, otsu, records = [], [], []
    seen = {}
    alt = []
    if a.by_shape and hasattr(getattr(rpn, "anchor_generator", None), "overlap_candidates"):
        rpn.anchor_generator.register_forward_hook(lambda mod, inp, out: seen.__setitem__("anchor_input", inp))
        alt = [anchor_generator_of(spec, rpn.anchor_generator) for spec in a.anchor_sets]
    for i in tqdm(range(len(ds)), desc="diagnose"):
        info = ds.images[i]
        target = ds.load(i)[1]
        gt = ground_truth_instances(target)
        image = read_image(ds.image_path(i))
        seen.clear()
        stages, extra = diagnose_image(predictor, image, gt)
        for s in stages:
            counts[s] += 1
        if a.by_shape:
            from chromoseg.models.transform import scale_rboxes

            h, w = image.shape[:2]
            mh, mw = predictor.model.transform.image_size or (h, w)
            gt_in = scale_rboxes(target["rboxes"], mw / w, mh / h)
            ags = [rpn.anchor_generator] + alt if "anchor_input" in seen else []
            ious = [best_anchor_iou(ag, gt_in, *seen["anchor_input"]) for ag in ags]
            anchor_iou = ious[0] if ious else None
            kinds = overlap_kinds([g["mask"] for g in gt])
            for j, g in enumerate(gt):
                records.append({"image_id": info["id"], "category_id": g["category_id"], "stage": stages[j],
                                **chromosome_shape(g["mask"], g["rbox"]), "overlap": kinds[j],
                                "proposal_iou": float(extra["proposal_cover"][j]),
                                "anchor_iou": None if anchor_iou is None else float(anchor_iou[j]),
                                **{f"anchor_iou_{k}": float(v[j]) for k, v in enumerate(ious[1:])}})
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
    if knobs:
        lines += ["This run's inference knobs (bench_errors only, predict unchanged): " + "; ".join(knobs) + ".", ""]
    if a.by_shape:
        lines += [f"By shape (length: the medial axis tip to tip, px of the image; bend: 1 - tip distance / length; "
                  f"overlap: shares a pixel with / lies within 1 px of another ground-truth chromosome; best "
                  f"proposal / anchor IoU: rotated, in the input frame):", ""] + shape_table(records) + [""]
        lines += shape_of_stages(records) + [""]
        if alt:
            lines += ["Best anchor IoU by anchor set (the ground-truth rotated boxes against each set's anchors "
                      "on this input; the detections above are the model's own anchors'):", ""]
            lines += anchor_table(records, list(a.anchor_sets)) + [""]
    text = "\n".join(lines)
    print(text)
    if a.md:
        write_markdown(a.md, text, "Where chromosomes are lost (`benchmarks/bench_errors.py`)", append=a.append)
    if a.json:
        import json

        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "model": name, "gt": a.gt.name, "commit": commit(), "argv": list(argv or sys.argv[1:]),
            "knobs": knobs, "anchor_sets": list(a.anchor_sets), "images": len(ds), "chromosomes": total,
            "stages": counts, "found": found,
            "binary_AP": bm["AP"], "binary_AP50": bm["AP50"], "multi_AP": None if m is None else m["AP"],
            "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
