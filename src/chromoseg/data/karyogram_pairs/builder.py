"""Build an annotated instance set from metaphase + karyogram pairs (seed paper, section II.A).

Pairing by name: a file's *pair key* is its name without the suffix and without a trailing role letter,
i.e. the last ``.``/``_``/``-``-separated token when it is one letter (``8129A.001.A.TIF`` and
``8129A.001.K.TIF`` both give ``8129A.001``), or else a single letter glued to the end of a name that
ends ``<digit><letter>`` (``cell07A.png`` / ``cell07K.png`` give ``cell07``). Keys are compared
case-insensitively. A key found on one side only, or twice on one side, is reported and skipped.
A ``--pairs`` CSV (columns ``metaphase,karyogram``; relative paths against the CSV's folder) overrides it.

Per pair: parse the karyogram (:mod:`.layout`), find its chromosomes in the metaphase (:mod:`.matching`),
keep the matches with ``score >= min_score``, and add the metaphase with those instances to the
COCO set (bbox, area, rbox and endpoints derived from each mask by :class:`chromoseg.data.coco.CocoWriter`;
each annotation also carries ``match_score``, ``match_ncc``, ``match_coverage``, ``match_inliers``,
``match_method``, ``karyogram_index``). A pair whose karyogram or metaphase cannot be read, whose
karyogram has no standard layout, or whose share of matched karyogram chromosomes is below
``min_matched`` (default 0.3: the metaphase is not the one the karyogram was made from) is skipped
with a message naming both files; nothing of it is written, and the batch goes on.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layout import KaryogramLayout, parse_karyogram
from .matching import Match, MatchParams, match_pair

log = logging.getLogger("chromoseg.data.karyogram_pairs")

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


class PairError(Exception):
    """A pair that cannot be used; the message names the files and the problem."""


def pair_key(path) -> str:
    """The name shared by a metaphase and its karyogram, lower case (see the module doc)."""
    return pair_name(path).lower()


def pair_name(path) -> str:
    """:func:`pair_key` with the file's own letter case (used to name the review sheets)."""
    stem = Path(path).name
    for suf in IMAGE_SUFFIXES:
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    m = re.match(r"^(.*\S)[._-]([A-Za-z])$", stem)
    if m:
        return m.group(1)
    m = re.match(r"^(.*\d)([A-Za-z])$", stem)
    if m:
        return m.group(1)
    return stem


def _list_images(folder) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_by_name(metaphases, karyograms) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pairs ``(metaphase, karyogram)`` matched by :func:`pair_key`, and messages for the left-overs."""
    problems: list[str] = []

    def index(files, what):
        out: dict[str, Path] = {}
        for p in files:
            k = pair_key(p)
            if k in out:
                problems.append(f"{p}: same pair key {k!r} as {out[k]} among the {what}; both skipped")
                out[k] = None  # type: ignore[assignment]
            elif k not in out:
                out[k] = p
        return {k: v for k, v in out.items() if v is not None}

    ms = index(_list_images(metaphases), "metaphases")
    ks = index(_list_images(karyograms), "karyograms")
    pairs = []
    for k in sorted(ms):
        if k in ks:
            pairs.append((ms[k], ks[k]))
        else:
            problems.append(f"{ms[k]}: no karyogram with pair key {k!r}; skipped")
    for k in sorted(set(ks) - set(ms)):
        problems.append(f"{ks[k]}: no metaphase with pair key {k!r}; skipped")
    return pairs, problems


def read_pairs_csv(path) -> list[tuple[Path, Path]]:
    """Pairs from a CSV with columns ``metaphase,karyogram`` (a header row is required)."""
    path = Path(path)
    if not path.is_file():
        raise PairError(f"{path}: no such pairs CSV")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"metaphase", "karyogram"} <= set(rows[0]):
        raise PairError(f"{path}: expected a header with columns 'metaphase' and 'karyogram'")
    out = []
    for r in rows:
        m, k = Path(r["metaphase"].strip()), Path(r["karyogram"].strip())
        out.append((m if m.is_absolute() else path.parent / m, k if k.is_absolute() else path.parent / k))
    return out


@dataclass
class PairResult:
    name: str
    metaphase: Path
    karyogram: Path
    shape: tuple[int, int]
    layout: KaryogramLayout
    kept: list[Match]
    dropped: list[Match]  # matched but below min_score
    unmatched: list[int]
    global_scale: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_found(self) -> int:
        return len(self.layout.chromosomes)

    @property
    def matched_share(self) -> float:
        return (len(self.kept) + len(self.dropped)) / max(1, self.n_found)

    def summary_row(self) -> dict:
        scores = [m.score for m in self.kept]
        return {
            "pair": self.name,
            "metaphase": str(self.metaphase),
            "karyogram": str(self.karyogram),
            "found": self.n_found,
            "matched": len(self.kept) + len(self.dropped),
            "kept": len(self.kept),
            "below_min_score": len(self.dropped),
            "unmatched": len(self.unmatched),
            "matched_share": round(self.matched_share, 4),
            "mean_score": round(float(np.mean(scores)), 4) if scores else "",
            "unmatched_classes": " ".join(
                _cname(self.layout.chromosomes[i].class_id) for i in self.unmatched
            ),
            "notes": " | ".join(self.layout.warnings + self.notes),
        }


def _cname(cid) -> str:
    from chromoseg.data.classes import class_name

    return class_name(cid) if cid is not None else "?"


def _read(path, what: str) -> np.ndarray:
    from chromoseg.data.io import ImageReadError, read_image, to_uint8

    try:
        return to_uint8(read_image(path))
    except ImageReadError as err:
        raise PairError(f"{what} {err}") from err


def build_pair(
    metaphase_path,
    karyogram_path,
    params: MatchParams | None = None,
    min_score: float = 0.0,
    min_matched: float = 0.3,
) -> PairResult:
    """Match one pair; raises :class:`PairError` (naming both files) for a pair that cannot be used."""
    mp, kp = Path(metaphase_path), Path(karyogram_path)
    both = f"(metaphase {mp}, karyogram {kp})"
    meta = _read(mp, "metaphase")
    karyo = _read(kp, "karyogram")
    layout = parse_karyogram(karyo)
    if not layout.slots:
        raise PairError(f"karyogram {kp}: no slot underlines found, not a karyogram in the standard layout {both}")
    if not layout.chromosomes:
        raise PairError(f"karyogram {kp}: no chromosomes found above its slots {both}")
    res = match_pair(meta, layout, params)
    n = len(layout.chromosomes)
    share = len(res.matches) / n
    if share < min_matched:
        raise PairError(
            f"only {len(res.matches)} of {n} karyogram chromosomes ({share:.0%}) found in the metaphase, below "
            f"{min_matched:.0%}: the metaphase does not match its karyogram {both}"
        )
    kept = [m for m in res.matches if m.score >= min_score and m.class_id is not None and m.mask.any()]
    dropped = [m for m in res.matches if m not in kept]
    return PairResult(
        name=pair_name(mp), metaphase=mp, karyogram=kp, shape=meta.shape, layout=layout, kept=kept, dropped=dropped,
        unmatched=res.unmatched, global_scale=res.global_scale, notes=res.notes,
    )


@dataclass
class BuildSummary:
    out_dir: Path
    results: list[PairResult]
    skipped: list[str]
    annotations: Path | None

    def text(self) -> str:
        n_f = sum(r.n_found for r in self.results)
        n_k = sum(len(r.kept) for r in self.results)
        n_m = sum(len(r.kept) + len(r.dropped) for r in self.results)
        lines = [
            f"{len(self.results)} pairs built, {len(self.skipped)} skipped; "
            f"{n_m}/{n_f} karyogram chromosomes matched ({n_m / max(1, n_f):.1%}), {n_k} kept as instances",
        ]
        if self.annotations:
            lines.append(f"dataset: {self.annotations}")
        for s in self.skipped:
            lines.append(f"skipped: {s}")
        return "\n".join(lines)


SUMMARY_FIELDS = [
    "pair", "metaphase", "karyogram", "found", "matched", "kept", "below_min_score", "unmatched",
    "matched_share", "mean_score", "unmatched_classes", "notes",
]


def build_dataset(
    pairs: list[tuple[Path, Path]],
    out_dir,
    params: MatchParams | None = None,
    min_score: float = 0.0,
    min_matched: float = 0.3,
    review: bool = True,
    progress: bool = True,
    skipped: list[str] | None = None,
) -> BuildSummary:
    """Build ``out_dir/annotations.json`` (+ ``review/NAME.png``, ``summary.csv``, ``pairs/NAME.csv``)."""
    import cv2
    from tqdm import tqdm

    from chromoseg.data.coco import CocoWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = list(skipped or [])
    writer = CocoWriter()
    results: list[PairResult] = []
    for mp, kp in tqdm(pairs, desc="karyogram pairs", unit="pair", disable=not progress):
        try:
            r = build_pair(mp, kp, params, min_score=min_score, min_matched=min_matched)
        except PairError as err:
            msg = str(err)
            log.warning("skipped pair: %s", msg)
            skipped.append(msg)
            continue
        results.append(r)
        mpath = Path(mp).resolve()
        try:
            fname = os.path.relpath(mpath, out_dir.resolve())
        except ValueError:  # another drive
            fname = str(mpath)
        iid = writer.add_image(fname, r.shape[0], r.shape[1], karyogram=str(Path(kp).resolve()), pair=r.name)
        for m in r.kept:
            writer.add_annotation(
                iid, int(m.class_id), mask=m.mask, score=None,
                match_score=float(m.score), match_ncc=float(m.ncc), match_coverage=float(m.coverage),
                match_inliers=int(m.inliers), match_method=m.method, karyogram_index=int(m.chrom),
            )
        if review:
            from .review import render_review
            from .layout import to_grey

            meta = _read(mp, "metaphase")
            sheet = render_review(to_grey(meta), r.layout, r.kept, r.dropped, r.unmatched, r.name)
            (out_dir / "review").mkdir(exist_ok=True)
            cv2.imwrite(str(out_dir / "review" / f"{r.name}.png"), sheet)
        pdir = out_dir / "pairs"
        pdir.mkdir(exist_ok=True)
        with open(pdir / f"{r.name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["karyogram_index", "class", "status", "score", "ncc", "coverage", "inliers", "method", "angle", "scale"])
            by_chrom = {m.chrom: m for m in r.kept + r.dropped}
            kept_ids = {m.chrom for m in r.kept}
            for c in r.layout.chromosomes:
                m = by_chrom.get(c.index)
                if m is None:
                    w.writerow([c.index, _cname(c.class_id), "unmatched", "", "", "", "", "", "", ""])
                else:
                    w.writerow([c.index, _cname(c.class_id), "kept" if c.index in kept_ids else "below_min_score",
                                m.score, m.ncc, m.coverage, m.inliers, m.method, round(m.angle, 1), round(m.scale, 4)])
    ann_path = None
    if results:
        ann_path = writer.write(
            out_dir / "annotations.json",
            info={
                "description": "instances built from metaphase + karyogram pairs (chromoseg data build-from-karyograms)",
                "min_score": min_score,
                "pairs": len(results),
                "skipped": skipped,
            },
        )
    with open(out_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for r in results:
            w.writerow(r.summary_row())
    if skipped:
        (out_dir / "skipped.txt").write_text("\n".join(skipped) + "\n")
    return BuildSummary(out_dir, results, skipped, ann_path)
