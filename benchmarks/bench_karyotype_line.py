"""The karyotype line (ISCN summary, e.g. ``46,XY``) of each metaphase: the model's against the
expert's, and what makes them differ.

The predicted line is ``chromoseg.karyotype.counts.count_karyotype`` of the final instances, as
``chromoseg predict`` makes it (predict's defaults, the not-a-chromosome rule, ``?`` marks dropped
for the comparison). The expert's line is the same count of the ground truth's instances and classes
(every annotation of the image, as ``bench_counts.py`` counts them); the case karyotype
(``case_info.txt``) is compared too.

Every difference is traced to instances: detections are matched to the ground truth at mask IoU >= 0.5
(``chromoseg.engine.evaluate.greedy_match``, by score); then

* **split**: a ground-truth chromosome with two or more detections mostly inside it (>= 60 % of a
  detection's pixels), none matched elsewhere: its pieces;
* **joined**: a detection covering two or more ground-truth chromosomes (>= 50 % of each one's
  pixels) that are not matched to another detection: touching chromosomes (homologues or not) taken
  as one;
* **missed**: a ground-truth chromosome with no match that is neither split nor joined (those left
  out by the not-a-chromosome rule said apart);
* **extra**: a detection with no match that is neither a piece nor a join (on a chromosome or on the
  background);
* **wrong class**: a match whose class differs; a **swapped pair** is two of them that exchange two
  classes in one metaphase (the line does not see it).

Each event is a change of the class counts that would correct it; the table gives, per cause, how
many events, in how many metaphases with a wrong line it occurs, and in how many of those correcting
that cause alone makes the line exact. Predictions are made once (``benchmarks/_mfish_predictions.py``)
and kept.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_karyotype_line.py --split val \\
        [--md benchmarks/results/karyotype_line.md --append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _mfish_predictions import cached_predictions  # noqa: E402
from _results import commit, shown, write_markdown  # noqa: E402
from bench_endpoints import _rle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIECE = 0.6  # share of a detection inside one ground-truth chromosome: a piece of it
COVER = 0.5  # share of a ground-truth chromosome inside one detection: covered by it
CAUSES = ("missed", "missed: left out as not a chromosome", "extra", "split", "joined", "wrong class")


def line_of(classes) -> str:
    from chromoseg.karyotype.counts import count_karyotype

    return count_karyotype([{"category_id": int(c)} for c in classes], exclude_non_chromosomes=False).summary


def within_one(pred: Counter, truth: Counter) -> bool:
    """One chromosome added, removed or given another class makes the counts the truth's."""
    l1 = sum(abs(pred[c] - truth[c]) for c in range(1, 25))
    return l1 <= 1 or (l1 == 2 and sum(pred.values()) == sum(truth.values()))


def analyse_image(img: dict, dets: list[dict], anns: list[dict], case_truth: str | None,
                  reassign: bool = False) -> dict:
    from pycocotools import mask as mask_utils

    from chromoseg.engine.evaluate import greedy_match
    from chromoseg.karyotype.counts import count_karyotype
    from chromoseg.karyotype.iscn import karyotype_summary, parse_karyotype

    H, W = img["height"], img["width"]
    dets = sorted(dets, key=lambda r: -r["score"])
    masks = [mask_utils.decode(d["segmentation"]).astype(bool) for d in dets]
    insts = [{"category_id": d["category_id"], "score": d["score"], "class_scores": d.get("class_scores"),
              "mask": m} for d, m in zip(dets, masks)]
    if reassign:  # the classes chosen again from the kept class scores, by the assignment of this checkout
        from chromoseg.karyotype.assign import assign_instances

        insts = assign_instances(insts)
        dets = [dict(d, category_id=inst["category_id"]) for d, inst in zip(dets, insts)]
    counts = count_karyotype(insts)  # predict's line, with its not-a-chromosome rule
    left_out = set(counts.excluded)
    keep = [i for i in range(len(dets)) if i not in left_out]
    truth_counts = count_karyotype([{"category_id": a["category_id"]} for a in anns])
    pred_line, truth_line = counts.summary.replace("?", ""), truth_counts.summary.replace("?", "")
    gmask = [mask_utils.decode(_rle(a["segmentation"], H, W)).astype(bool) for a in anns]
    pc = Counter(int(dets[i]["category_id"]) for i in keep)
    tc = Counter(int(a["category_id"]) for a in anns)
    # overlaps of the kept detections with the ground truth
    D, G = len(keep), len(anns)
    inter = np.zeros((D, G))
    for a, i in enumerate(keep):
        for j in range(G):
            inter[a, j] = np.count_nonzero(masks[i] & gmask[j])
    area_d = np.array([masks[i].sum() for i in keep], float).reshape(D)
    area_g = np.array([m.sum() for m in gmask], float).reshape(G)
    union = area_d[:, None] + area_g[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    match = greedy_match(ious, [dets[i]["score"] for i in keep], 0.5)  # gt -> kept det index
    det_of = {a: j for j, a in match.items()}
    events = []  # (cause, delta Counter: what correcting it adds to the predicted counts)
    used_d, used_g = set(), set()
    cls_d = [int(dets[i]["category_id"]) for i in keep]
    cls_g = [int(a["category_id"]) for a in anns]
    # joined: one detection over two or more chromosomes not matched elsewhere
    for a in range(D):
        cov = [j for j in range(G) if area_g[j] and inter[a, j] / area_g[j] >= COVER
               and (j not in match or match[j] == a)]
        if len(cov) >= 2:
            events.append(("joined", _delta(remove=[cls_d[a]], add=[cls_g[j] for j in cov])))
            used_d.add(a)
            used_g.update(cov)
    # split: a chromosome with two or more detections mostly inside it
    for j in range(G):
        if j in used_g:
            continue
        pieces = [a for a in range(D) if a not in used_d and area_d[a] and inter[a, j] / area_d[a] >= PIECE
                  and (a not in det_of or det_of[a] == j)]
        if len(pieces) >= 2:
            events.append(("split", _delta(remove=[cls_d[a] for a in pieces], add=[cls_g[j]])))
            used_d.update(pieces)
            used_g.add(j)
    for j, a in match.items():
        if j in used_g or a in used_d:
            continue
        used_d.add(a)
        used_g.add(j)
        if cls_d[a] != cls_g[j]:
            events.append(("wrong class", _delta(remove=[cls_d[a]], add=[cls_g[j]]), (cls_g[j], cls_d[a])))
    for j in range(G):
        if j not in used_g:
            lost = any(np.count_nonzero(masks[i] & gmask[j]) >= COVER * area_g[j] for i in left_out)
            events.append(("missed: left out as not a chromosome" if lost else "missed", _delta(add=[cls_g[j]])))
    for a in range(D):
        if a not in used_d:
            events.append(("extra", _delta(remove=[cls_d[a]])))
    events = [e if len(e) == 3 else (*e, None) for e in events]
    # swapped pairs among the wrong classes (they cancel in the counts)
    wrong = [e[2] for e in events if e[0] == "wrong class"]
    pairs, seen = 0, Counter(wrong)
    for (t, p), n in list(seen.items()):
        if t < p:
            pairs += min(n, seen.get((p, t), 0))
    # what correcting each cause alone does to the line
    residual = Counter(tc)
    residual.subtract(pc)
    for e in events:
        residual.subtract(e[1])
    fixes, only = {}, {}
    for cause in CAUSES:
        c, o = Counter(pc), Counter(pc)
        for e in events:
            (c if e[0] == cause else o).update(e[1])
        o.update(residual)
        fixes[cause] = line_of(list(c.elements())) == truth_line
        only[cause] = line_of(list(o.elements())) == truth_line  # this cause left alone
    case_summary = None
    if case_truth:
        try:
            case_summary = karyotype_summary(parse_karyotype(case_truth)).replace("?", "")
        except ValueError:
            case_summary = None
    return {"image": Path(img["file_name"]).name, "pred_line": pred_line, "truth_line": truth_line,
            "case_line": case_summary, "exact": pred_line == truth_line,
            "within_one": within_one(pc, tc), "exact_case": case_summary is not None and pred_line == case_summary,
            "truth_is_case": case_summary is not None and truth_line == case_summary,
            "events": Counter(e[0] for e in events), "swapped_pairs": pairs,
            "fix": fixes, "only": only, "residual": {k: v for k, v in residual.items() if v}, "left_out": len(left_out),
            "found": len(keep), "truth_n": G}


def _delta(remove=(), add=()) -> Counter:
    c = Counter()
    for k in add:
        c[k] += 1
    for k in remove:
        c[k] -= 1
    return c


def main(argv=None) -> int:
    from bench_counts import _truth_text, default_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--model", default="mfish")
    ap.add_argument("--preds", type=Path, default=REPO / "out" / "issue26")
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reassign", action="store_true",
                    help="choose the classes again from the predictions' class scores with this checkout's "
                         "karyotype assignment (chromoseg.karyotype.assign), instead of the classes predicted")
    ap.add_argument("--label", default=None, help="what was measured (default: predict's defaults)")
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)

    gt_path = REPO / "datasets" / "mfish" / f"{a.split}.json"
    gt = json.loads(gt_path.read_text())
    results, _, run = cached_predictions(gt_path, a.preds / a.split, a.model, a.threads)
    by_img, anns = defaultdict(list), defaultdict(list)
    for r in results:
        by_img[r["image_id"]].append(r)
    for g in gt["annotations"]:
        anns[g["image_id"]].append(g)
    rows = [analyse_image(img, by_img.get(img["id"], []), anns[img["id"]], _truth_text(img, a.data), a.reassign)
            for img in sorted(gt["images"], key=lambda im: im["id"])]

    n = len(rows)
    wrong = [r for r in rows if not r["exact"]]
    pct = lambda k, m: f"{100 * k / m:.0f} % ({k}/{m})" if m else "-"  # noqa: E731
    s = run["settings"]
    lines = [f"## {a.label or 'predict defaults'}: M-FISH {a.split} split ({dt.date.today()}, commit {commit()})", "",
             "```", f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} nice -n 19 .venv/bin/python "
             "benchmarks/bench_karyotype_line.py " + shlex.join(argv if argv is not None else sys.argv[1:]), "```", "",
             f"Model `{a.model}` (score `{s.get('score')}`, threshold {s.get('score_threshold')}, classes "
             f"`{s.get('classes')}`), `{shown(gt_path)}`, {n} metaphases; hardware: 2-core AMD EPYC, "
             f"{run['threads']} thread(s) (predictions {run['seconds']} s, beside a training run).", "",
             f"- line exact (against the ground truth's classes): **{pct(n - len(wrong), n)}**; within one "
             f"chromosome (one added, removed or given another class): **{pct(sum(r['within_one'] for r in rows), n)}**",
             f"- line exact against the case karyotype: {pct(sum(r['exact_case'] for r in rows), n)} (the ground "
             f"truth's own line equals the case's in {pct(sum(r['truth_is_case'] for r in rows), n)})",
             "", "| cause | events | metaphases with a wrong line that have it | of those, correcting it alone makes the line exact "
             "| of those, the line is still wrong with every other cause corrected |",
             "|---|---|---|---|---|"]
    for cause in CAUSES:
        ev = sum(r["events"][cause] for r in rows)
        has = [r for r in wrong if r["events"][cause]]
        lines.append(f"| {cause} | {ev} | {len(has)} of {len(wrong)} | {sum(r['fix'][cause] for r in has)} | "
                     f"{sum(not r['only'][cause] for r in has)} |")
    sw = sum(r["swapped_pairs"] for r in rows)
    res = sum(bool(r["residual"]) for r in rows)
    lines += ["", f"Swapped pairs (two chromosomes exchanging two classes; no change to the line) among the wrong "
              f"classes: {sw}. Metaphases whose difference these events do not fully explain: {res}.", "",
              "| metaphase | predicted | expert (ground truth) | case | found / truth | left out | missed | extra | split | joined | wrong class |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["events"]
        lines.append(f"| {r['image']} | `{r['pred_line']}` | `{r['truth_line']}` | `{r['case_line']}` | "
                     f"{r['found']} / {r['truth_n']} | {r['left_out']} | {e['missed'] + e['missed: left out as not a chromosome']} | "
                     f"{e['extra']} | {e['split']} | {e['joined']} | {e['wrong class']} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.md:
        write_markdown(a.md, text, "The karyotype line per metaphase (`benchmarks/bench_karyotype_line.py`)", append=a.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
