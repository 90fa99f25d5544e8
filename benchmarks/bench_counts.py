"""Counting and ISCN-summary logic measured from GROUND-TRUTH annotations (no model).

What it measures - the ceiling of the rule `chromoseg.karyotype.counts.count_karyotype` and a test
of the ISCN parser `chromoseg.karyotype.iscn` on the real data:

* M-FISH (ADIR set #1, imported by ``chromoseg data import mfish``): per image, the instances of the
  dataset JSON (derived from the expert label maps) are counted and summarised, and compared with the
  karyotype of the case (the image's ``karyotype`` field, else the folder's ``case_info.txt``):
  exact match of the total count, of the ISCN summary (numerical part; ``?`` ignored), of the sex
  call, and per-class count accuracy (all 24 classes, and only the classes that no structural
  rearrangement makes uncertain). Per split and for all splits.
* G-band (CIL set): the number of boxes in ``annotations/NAME.xml`` against the "chromosome
  numbers" of ``normal.csv`` / ``number_abnormalities.csv`` / ``structural_abnormalities.csv``
  (exact-match rate), per split file (train.txt / test.txt); for the numerical abnormalities whose
  class is given, whether the summary shows that class's gain/loss; for the normal 46-count images,
  whether the summary is 46,XX or 46,XY.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_counts.py [--mfish datasets/mfish] [--data ../shared/data] \
        [--out benchmarks/results/counts.md]

Caveat written into the result: the M-FISH importer uses the case karyotype to decide when two
pieces of a class are one chromosome cut by an overlap, so agreement on M-FISH is partly by
construction; it tests the parser and the counting/summary logic, not the instance derivation.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import shown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chromoseg.data.classes import class_id  # noqa: E402
from chromoseg.karyotype.counts import count_karyotype  # noqa: E402
from chromoseg.karyotype.iscn import (  # noqa: E402
    expected_counts,
    id_to_chrom,
    karyotype_summary,
    parse_karyotype,
    read_case_info,
)


def default_data() -> Path:
    env = os.environ.get("CHROMOSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------- M-FISH
def _truth_text(img: dict, data_root: Path) -> str | None:
    if img.get("karyotype"):
        return str(img["karyotype"])
    fn = Path(img["file_name"])
    for cand in (fn.parent / "case_info.txt", data_root / "adir-mfish" / fn.parent / "case_info.txt"):
        if cand.is_file():
            return read_case_info(cand).text
    return None


def mfish_rows(json_path: Path, data_root: Path) -> list[dict]:
    data = json.loads(json_path.read_text())
    anns = defaultdict(list)
    for a in data["annotations"]:
        anns[a["image_id"]].append({"category_id": a.get("category_id", 0), "score": a.get("score"),
                                    "class_scores": a.get("class_scores")})
    rows = []
    for img in data["images"]:
        truth = _truth_text(img, data_root)
        counts = count_karyotype(anns[img["id"]])
        row = {"image": Path(img["file_name"]).name, "case": img.get("case") or Path(img["file_name"]).parent.name,
               "found": counts.total, "summary": counts.summary, "sex": counts.sex, "truth": truth}
        if truth is None:
            rows.append(row)
            continue
        kt = parse_karyotype(truth)
        exp, unc = expected_counts(kt)
        truth_summary = karyotype_summary(kt).replace("?", "")
        row.update(
            truth_total=kt.total, truth_summary=truth_summary, truth_sex=kt.sex,
            structural=bool(kt.structural_classes),
            total_ok=counts.total == kt.total,
            summary_ok=counts.summary.replace("?", "") == truth_summary,
            sex_ok=counts.sex == kt.sex,
            class_ok=sum(counts.counts[c] == exp[c] for c in range(1, 25)),
            class_n=24,
            certain_ok=sum(counts.counts[c] == exp[c] for c in range(1, 25) if c not in unc),
            certain_n=sum(1 for c in range(1, 25) if c not in unc),
            wrong_classes=[f"{id_to_chrom(c)}:{counts.counts[c]}/{exp[c]}{'*' if c in unc else ''}"
                           for c in range(1, 25) if counts.counts[c] != exp[c]],
            flags=counts.flags,
            certain_summary_ok=counts.sex == kt.sex and all(counts.counts[c] == exp[c] for c in range(1, 25) if c not in unc),
            explained=all(c in unc or id_to_chrom(c) in (img.get("unresolved_classes") or {})
                          for c in range(1, 25) if counts.counts[c] != exp[c]),
        )
        rows.append(row)
    return rows


def _pct(a, b) -> str:
    return f"{100.0 * a / b:.1f} % ({a}/{b})" if b else "n/a"


def mfish_table(rows_by_split: dict[str, list[dict]]) -> list[str]:
    out = ["| split | images | total exact | ISCN summary exact | summary exact, no structural "
           "| summary exact outside uncertain classes | sex call exact "
           "| per-class count acc. (24 cl.) | per-class acc., certain classes | mismatches on importer-unresolved/uncertain classes only |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for split, rows in rows_by_split.items():
        r = [x for x in rows if x.get("truth_total") is not None]
        ns = [x for x in r if not x["structural"]]
        out.append(
            f"| {split} | {len(r)} | {_pct(sum(x['total_ok'] for x in r), len(r))} "
            f"| {_pct(sum(x['summary_ok'] for x in r), len(r))} "
            f"| {_pct(sum(x['summary_ok'] for x in ns), len(ns))} "
            f"| {_pct(sum(x['certain_summary_ok'] for x in r), len(r))} "
            f"| {_pct(sum(x['sex_ok'] for x in r), len(r))} "
            f"| {_pct(sum(x['class_ok'] for x in r), sum(x['class_n'] for x in r))} "
            f"| {_pct(sum(x['certain_ok'] for x in r), sum(x['certain_n'] for x in r))} "
            f"| {_pct(sum(x['explained'] for x in r if not x['summary_ok']), sum(1 for x in r if not x['summary_ok']))} |")
    return out


# ---------------------------------------------------------------------------------------- G-band
def read_voc_labels(xml_path: Path) -> list[int]:
    """Class ids of the objects of a VOC file (names A1..G22, X, Y); unknown names give 0."""
    labels = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            labels.append(class_id(name))
        except ValueError:
            labels.append(0)
    return labels


def _read_numbers(path: Path) -> dict[str, tuple[int, str]]:
    import csv

    out = {}
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.reader(fh):
            if not row or row[0] == "filename" or len(row) < 2 or not row[1].strip().isdigit():
                continue
            out[Path(row[0].strip()).stem] = (int(row[1]), row[2].strip() if len(row) > 2 else "")
    return out


def _abnormality_shown(counts, number: int, desc: str) -> bool | None:
    """Does the summary show the numerical abnormality named in number_abnormalities.csv? None = not checkable."""
    d = desc.strip().upper()
    if number not in (45, 47) or not d or d in ("UNKNOW", "XX/XY"):
        return None
    nx, ny = counts.counts[23], counts.counts[24]
    if d == "X":
        return (nx + ny == 3 and nx >= 2) if number == 47 else (nx + ny == 1)
    if d == "Y":
        return (ny == 2) if number == 47 else (nx + ny == 1)
    if d.isdigit():
        c = int(d)
        return counts.counts[c] == (3 if number == 47 else 1)
    return None


def gband_rows(root: Path) -> list[dict]:
    numbers = {}
    for csv_name, kind in (("normal.csv", "normal"), ("number_abnormalities.csv", "numerical"),
                           ("structural_abnormalities.csv", "structural")):
        p = root / csv_name
        if p.is_file():
            for k, (n, desc) in _read_numbers(p).items():
                numbers[k] = (n, desc, kind)
    split_of = {}
    for s in ("train", "test"):
        p = root / f"{s}.txt"
        if p.is_file():
            for line in p.read_text().split():
                split_of[Path(line.strip()).stem] = s
    rows = []
    for xml_path in sorted((root / "annotations").glob("*.xml")):
        stem = xml_path.stem
        labels = read_voc_labels(xml_path)
        counts = count_karyotype([{"category_id": c} for c in labels])
        n, desc, kind = numbers.get(stem, (None, "", ""))
        rows.append({"image": stem, "split": split_of.get(stem, "-"), "boxes": len(labels), "number": n,
                     "desc": desc, "kind": kind, "summary": counts.summary, "sex": counts.sex,
                     "count_ok": n is not None and len(labels) == n,
                     "abn_shown": _abnormality_shown(counts, n, desc) if kind == "numerical" and n else None,
                     "unknown_names": labels.count(0)})
    return rows


def gband_table(rows: list[dict]) -> list[str]:
    out = ["| subset | images | box count = CSV number | summary 46,XX/46,XY (CSV says 46, normal.csv) |",
           "|---|---|---|---|"]
    groups = {"all": rows}
    for s in ("train", "test"):
        groups[f"{s}.txt"] = [r for r in rows if r["split"] == s]
    for kind in ("normal", "numerical", "structural"):
        groups[f"{kind} CSV"] = [r for r in rows if r["kind"] == kind]
    for name, rs in groups.items():
        rs = [r for r in rs if r["number"] is not None]
        n46 = [r for r in rs if r["kind"] == "normal" and r["number"] == 46]
        ok46 = sum(1 for r in n46 if r["summary"] in ("46,XX", "46,XY"))
        out.append(f"| {name} | {len(rs)} | {_pct(sum(r['count_ok'] for r in rs), len(rs))} | {_pct(ok46, len(n46))} |")
    return out


# ---------------------------------------------------------------------------------------- orientation
def orientation_rows(root: Path, every: int) -> dict:
    """Short-arm-up heuristic on straightened single G-band chromosomes (upright, short arm up).

    Each crop (dark on light) gets a mask (Otsu, largest dark component) and is judged by
    :func:`chromoseg.karyotype.layout.orient_upright` as it is and turned by 180 degrees; right = not
    turned for the upright crop, turned for the other. Both the class-aware rule (class given) and the
    generic one (no class) are measured.
    """
    import cv2
    import numpy as np

    from chromoseg.karyotype.layout import orient_upright

    files = sorted(root.glob("*.npz"))[::every]
    res = {"class": defaultdict(list), "generic": defaultdict(list), "cells": len(files)}
    for f in files:
        z = np.load(f)
        for key in z.files:
            c = int(key.split("/")[0])
            g = z[key]
            if g.ndim != 2 or g.dtype != np.uint8:
                continue
            _, th = cv2.threshold(g, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
            n, lab, st, _ = cv2.connectedComponentsWithStats(th.astype(np.uint8), connectivity=8)
            if n <= 1:
                continue
            m = lab == 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
            if m.any(1).sum() < 8:
                continue
            g2 = np.where(m, g, 255).astype(np.uint8)
            for gg, mm, want in ((g2, m, False), (np.rot90(g2, 2).copy(), np.rot90(m, 2).copy(), True)):
                for name, cls in (("class", c), ("generic", None)):
                    _, _, info = orient_upright(gg, mm, class_id=cls)
                    res[name][c].append((info["flipped"] == want, info["sure"]))
    return res


def orientation_table(res: dict) -> list[str]:
    out = ["| rule | judgements | right | sure | right among sure |", "|---|---|---|---|---|"]
    for name, label in (("class", "class-aware (class given)"), ("generic", "generic (no class)")):
        allr = [r for v in res[name].values() for r in v]
        sure = [r for r in allr if r[1]]
        out.append(f"| {label} | {len(allr)} | {_pct(sum(r[0] for r in allr), len(allr))} "
                   f"| {_pct(len(sure), len(allr))} | {_pct(sum(r[0] for r in sure), len(sure))} |")
    out += ["", "Right per class, class-aware rule: " + ", ".join(
        f"{id_to_chrom(c)} {100.0 * sum(r[0] for r in v) / len(v):.0f} %" for c, v in sorted(res["class"].items()) if v)]
    return out


# ---------------------------------------------------------------------------------------- main
def _hardware() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU(s) visible, Python {platform.python_version()}, no GPU used"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src/chromoseg/karyotype",
                                "benchmarks/bench_counts.py"], capture_output=True, text=True, check=True).stdout.strip()
        return head + (" + uncommitted changes to the karyotype code" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mfish", type=Path, default=REPO / "datasets" / "mfish",
                    help="folder with the imported M-FISH train/val/test.json (chromoseg data import mfish)")
    ap.add_argument("--data", type=Path, default=default_data(), help="the shared data folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "counts.md")
    ap.add_argument("--orientation-every", type=int, default=3, metavar="K",
                    help="orientation check on every K-th cell of single-chromosomes-gband (0: skip; default 3)")
    ap.add_argument("--detail", type=Path, default=None,
                    help="also write the per-image rows as JSON here (e.g. out/counts_detail.json)")
    args = ap.parse_args(argv)
    t0 = time.time()
    lines = [
        "# Counting and ISCN summary from ground-truth annotations",
        "",
        "**These numbers come from ground-truth annotations, not from a model**: they measure the counting,",
        "sex-call and ISCN-summary logic (`chromoseg.karyotype.counts`, `chromoseg.karyotype.iscn`) and the",
        "ISCN parser on the real truth - the ceiling a perfect segmenter/classifier would reach with this rule.",
        "Model-based numbers come later (same script logic on a results file).",
        "",
        f"- command: `{' '.join(['.venv/bin/python', 'benchmarks/bench_counts.py'] + (argv if argv is not None else sys.argv[1:]))}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit {_commit()}",
        f"- hardware: {_hardware()}",
        "",
    ]
    detail = {}
    # ---- M-FISH
    lines += ["## M-FISH (ADIR set #1): instances of the imported dataset vs the case karyotype", ""]
    splits = [s for s in ("test", "val", "train") if (args.mfish / f"{s}.json").is_file()]
    if not splits:
        lines += [f"Not measured: no imported dataset at `{args.mfish}` (run `chromoseg data import mfish "
                  "../shared/data/adir-mfish --out datasets/mfish`).", ""]
        print(f"M-FISH: no {args.mfish}/{{train,val,test}}.json, skipped", file=sys.stderr)
    else:
        by_split = {s: mfish_rows(args.mfish / f"{s}.json", args.data) for s in splits}
        by_split["all splits"] = [r for s in splits for r in by_split[s]]
        detail["mfish"] = by_split
        lines += [f"Dataset: `{shown(args.mfish)}` ({', '.join(f'{s}: {len(by_split[s])} images' for s in splits)}); "
                  "truth: the image's `karyotype` field (= the folder's `case_info.txt`, parsed by "
                  "`chromoseg.karyotype.iscn`).", ""]
        lines += mfish_table(by_split)
        lines += ["",
                  "Definitions: *total exact*: number of instances = the karyotype's count. *ISCN summary exact*: our",
                  "summary of the instance counts (e.g. `45,XY,-8`) = the numerical summary of the truth (structural",
                  "changes dropped; an extra derivative such as `+der(5)` counted for its first class; `?` ignored).",
                  "*Per-class count acc.*: (image, class) pairs whose count equals the karyotype's expected count;",
                  "*certain classes*: leaving out the classes named in a structural rearrangement (t, der, ins, r),",
                  "whose pieces in the M-FISH label map need not be whole chromosomes. *Summary exact outside uncertain",
                  "classes*: same sex call and every certain class's count right. *Mismatches on importer-unresolved/",
                  "uncertain classes only*: of the images whose summary differs, those where every wrong class is one the",
                  "importer reported as unresolved for that image (`unresolved_classes`) or one made uncertain by a",
                  "structural change - i.e. the truth instances themselves are in doubt there, not the counting rule.",
                  "",
                  "Caveat: the importer merges two pieces of a class into one chromosome only while the class has more",
                  "pieces than the karyotype expects, so on M-FISH the agreement is partly by construction; a mismatch",
                  "is a case the importer could not resolve (touching homologues, translocations painted in two colours).",
                  ""]
        # mismatches per case
        allr = [r for r in by_split["all splits"] if r.get("truth_total") is not None]
        bad = Counter()
        tot = Counter()
        for r in allr:
            tot[(r["case"], r["truth"])] += 1
            bad[(r["case"], r["truth"])] += not r["summary_ok"]
        lines += ["Summary mismatches per case (all splits): case, karyotype, images with a different summary / images,",
                  "the most frequent wrong classes (class:found/expected, `*` = uncertain by a structural change).", "",
                  "| case | karyotype | mismatched | frequent wrong classes |", "|---|---|---|---|"]
        for key in sorted(tot, key=lambda k: (-bad[k] / tot[k], k)):
            if not bad[key]:
                continue
            wc = Counter(w for r in allr if (r["case"], r["truth"]) == key for w in r["wrong_classes"])
            lines.append(f"| {key[0]} | `{key[1]}` | {bad[key]}/{tot[key]} | "
                         f"{', '.join(f'{w} ({n})' for w, n in wc.most_common(4))} |")
        n_ok_cases = sum(1 for k in tot if not bad[k])
        lines += ["", f"{n_ok_cases} of {len(tot)} cases have every image's summary right.", ""]
        parsed = sorted({(r["case"], r["truth"]) for r in allr})
        lines += [f"Parser: {len(parsed)} distinct case karyotypes parsed, "
                  f"{sum(1 for _, t in parsed if not parse_karyotype(t).consistent)} with a declared count that "
                  "disagrees with its changes.", ""]
    # ---- G-band
    groot = args.data / "cil-gband"
    lines += ["## G-band (CIL set): boxes per image vs the CSV chromosome numbers", ""]
    if not (groot / "annotations").is_dir():
        lines += [f"Not measured: `{groot}` absent.", ""]
    else:
        grows = gband_rows(groot)
        detail["gband"] = grows
        lines += [f"Annotations: `{shown(groot)}/annotations/*.xml` ({len(grows)} images, VOC boxes named A1..G22, X, Y); truth: "
                  "`normal.csv`, `number_abnormalities.csv`, `structural_abnormalities.csv` (column *chromosome numbers*).", ""]
        lines += gband_table(grows)
        ab = [r for r in grows if r["abn_shown"] is not None]
        lines += ["",
                  f"Numerical abnormalities with a named class (47 or 45 chromosomes; `number_abnormalities.csv`): "
                  f"the summary shows the named gain/loss in {_pct(sum(r['abn_shown'] for r in ab), len(ab))} "
                  f"of the checkable images ({', '.join(sorted(r['image'] + ': ' + r['summary'] + ' [' + str(r['number']) + ',' + r['desc'] + ']' for r in ab))}).",
                  ""]
        off = Counter(r["boxes"] - r["number"] for r in grows if r["number"] is not None and not r["count_ok"])
        if off:
            lines += ["Box count minus CSV number where they differ: "
                      + ", ".join(f"{k:+d}: {v} image(s)" for k, v in sorted(off.items())), ""]
        miss = [r for r in grows if r["number"] is not None and not r["count_ok"]]
        if miss:
            lines += ["Images whose box count differs: " + ", ".join(
                f"{r['image']} ({r['boxes']} boxes, CSV {r['number']})" for r in miss), ""]
        odd = [r for r in grows if r["kind"] == "normal" and r["number"] == 46 and r["summary"] not in ("46,XX", "46,XY")]
        if odd:
            lines += ["normal.csv images with 46 whose annotation summary is not 46,XX/46,XY (annotation class "
                      "labels): " + ", ".join(f"{r['image']} `{r['summary']}`" for r in odd), ""]
        unk = sum(r["unknown_names"] for r in grows)
        if unk:
            lines += [f"{unk} boxes with an unknown class name (counted as unassigned).", ""]
    # ---- orientation
    sroot = args.data / "single-chromosomes-gband"
    lines += ["## Short arm up: the karyogram's orientation heuristic on straightened G-band chromosomes", ""]
    if args.orientation_every <= 0 or not sroot.is_dir():
        lines += [f"Not measured ({'skipped' if args.orientation_every <= 0 else f'`{sroot}` absent'}).", ""]
    else:
        ores = orientation_rows(sroot, args.orientation_every)
        lines += [f"Data: every {args.orientation_every}. cell (sorted by name) of `{shown(sroot)}` ({ores['cells']} cells); each crop is upright with",
                  "its short arm up (karyogram convention), so it is judged as it is and turned by 180 degrees (half",
                  "the judgements each way; a rule that never turns scores 50 %). Mask: Otsu, largest dark component.",
                  "This checks `orient_upright` only (the crops are already straight; `upright_crop` is not involved).", ""]
        lines += orientation_table(ores)
        lines += ["", "Nearly metacentric classes (3, 19, 20) cannot be oriented from the width profile and are never",
                  "marked sure by the class-aware rule; chromosome 1 is left to the generic rule (with the class prior it",
                  "scored 36 %).", ""]
    lines += [f"Run time: {time.time() - t0:.1f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    if args.detail:
        args.detail.parent.mkdir(parents=True, exist_ok=True)
        args.detail.write_text(json.dumps(detail, indent=1, default=str))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
