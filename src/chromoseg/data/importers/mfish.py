"""Importer for M-FISH label maps (ADIR / PSI M-FISH set #1): class maps -> chromosome instances.

Each metaphase has a DAPI image ``*D.tif`` (the input) and an expert label map ``*K.tif``: 0 background,
1-22 autosomes, 23 = X, 24 = Y, 255 = a pixel where two chromosomes overlap. The map gives classes, not
instances: both homologues of a class share one value. Instances are derived by this rule:

1. **Pieces.** Each 8-connected component of one class value is a piece.
2. **Overlaps.** Each 8-connected component of 255 pixels is an overlap region. It belongs to every
   chromosome that has a piece touching it (8-neighbourhood): an overlap pixel lies in two chromosomes,
   so it is added to both masks.
3. **Fragments.** A piece under ``MIN_PIECE`` pixels is joined to the nearest piece of its class
   within ``JOIN_GAP`` pixels; failing that it is left out and reported (never silently).
4. **Chromosomes cut in two.** While a class has more pieces than the karyotype expects (2 for an
   autosome; X/Y by the sex in ``case_info.txt``; +/- numerical changes), the two pieces of that class that
   touch a common overlap region, or lie within ``JOIN_GAP`` pixels of each other, and whose union is the
   most rod-like (largest fill of its minimum-area rectangle) are merged.
5. **Unresolved.** A class left with more pieces than expected (e.g. a translocation painted in two
   colours) or fewer (touching homologues that form one piece, or a lost chromosome) is *flagged*: its
   instances are kept as found and marked ``"unresolved"`` in the annotation, and the image's report row
   lists the class. With too few pieces, the largest piece is most likely two touching homologues: it
   is written as a COCO crowd region (``"iscrowd": 1``, ``"unresolved": "too-few"``), which COCO AP
   ignores and training leaves out, as torchvision's references do with crowds. Structural rearrangements in the karyotype make the expected counts of the classes
   involved uncertain; those classes are reported as ``uncertain`` rather than unresolved.

Per image the report gives the number of instances found against the count in ``case_info.txt``.
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chromoseg.data.classes import NUM_CLASSES, class_name
from chromoseg.data.coco import CocoWriter
from chromoseg.data.io import ImageReadError, read_image_for_import, read_label_map
from chromoseg.data.report import ProblemLog
from chromoseg.data.splits import SPLIT_NAMES, empty_split_warnings, load_split, split_of, take_spread
from chromoseg.data.iscn import parse_karyotype, read_case_info

log = logging.getLogger(__name__)

OVERLAP = 255
MIN_PIECE = 30  # pixels; smaller pieces are fragments
JOIN_GAP = 3  # pixels; pieces of one class this close may be one chromosome
_SLIDE_RE = re.compile(r"^([AV]\d\d)")


@dataclass
class ImageResult:
    """What the importer found in one metaphase."""

    name: str
    slide: str
    karyotype: str
    expected_total: int | None
    instances: list[tuple[int, np.ndarray, str | None]] = field(default_factory=list)  # (class, mask, flag)
    unresolved: dict[int, str] = field(default_factory=dict)  # class -> reason
    uncertain: list[int] = field(default_factory=list)
    fragments_dropped: int = 0


# ----------------------------------------------------------------------------- karyotype
def expected_counts(karyotype: str) -> tuple[dict[int, int], set[int], int | None]:
    """Expected per-class counts from an ISCN karyotype: ``(counts, uncertain_classes, total)``."""
    k = parse_karyotype(karyotype)
    return k.expected_counts(), set(k.uncertain_classes()), k.total


# ----------------------------------------------------------------------------- instance derivation
def _rod_score(mask: np.ndarray) -> float:
    """How rod-like a mask is: its area over the area of its minimum-area rectangle (1 = a filled rectangle)."""
    import cv2

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float32)
    (_, _), (w, h), _ = cv2.minAreaRect(pts)
    return float(mask.sum()) / max((w + 1) * (h + 1), 1.0)


def derive_instances(labels: np.ndarray, expected: dict[int, int], uncertain: set[int] | None = None):
    """Apply the module's rule to one label map.

    Returns ``(instances, unresolved, fragments_dropped)`` where ``instances`` is a list of
    ``(class_id, bool mask, flag or None)`` and ``unresolved`` maps class ids to a reason.
    Each class is worked on inside its own bounding window (plus a margin), which keeps this fast.
    """
    from scipy import ndimage as ndi

    eight = np.ones((3, 3), bool)
    uncertain = uncertain or set()
    H, W = labels.shape
    over_lab, _ = ndi.label(labels == OVERLAP, structure=eight)
    over_slices = ndi.find_objects(over_lab)
    instances: list[tuple[int, np.ndarray, str | None]] = []
    unresolved: dict[int, str] = {}
    dropped = 0
    margin = JOIN_GAP + 2
    for c in range(1, NUM_CLASSES + 1):
        want = expected.get(c, 2 if c <= 22 else 0)
        cls_full = labels == c
        if not cls_full.any():
            if want > 0 and c not in uncertain:
                unresolved[c] = f"none found, {want} expected"
            continue
        ys, xs = np.nonzero(cls_full)
        win = (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, H)),
               slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, W)))
        cls, olab = cls_full[win], over_lab[win]
        lab, n = ndi.label(cls, structure=eight)
        pieces = [lab == i for i in range(1, n + 1)]
        touch = [set(np.unique(olab[ndi.binary_dilation(p, eight) & ~p]).tolist()) - {0} for p in pieces]
        grown = [ndi.binary_dilation(p, eight, iterations=JOIN_GAP) for p in pieces]

        def near(i, j):
            return bool(touch[i] & touch[j]) or bool((grown[i] & pieces[j]).any())

        # fragments: join to a big piece of the class nearby, else drop (reported)
        big = [i for i, p in enumerate(pieces) if p.sum() >= MIN_PIECE]
        for i in range(n):
            if i in big:
                continue
            partners = [j for j in big if near(i, j)]
            if partners:
                j = partners[0]
                pieces[j] = pieces[j] | pieces[i]
                touch[j] |= touch[i]
                grown[j] = grown[j] | grown[i]
            else:
                dropped += 1
        merged = [pieces[i] for i in big]
        gtouch = [set(touch[i]) for i in big]
        ggrown = [grown[i] for i in big]
        # chromosomes cut in two: merge the most rod-like neighbouring pair while there are too many
        while len(merged) > max(want, 1):
            best = None
            for a in range(len(merged)):
                for b in range(a + 1, len(merged)):
                    shared = gtouch[a] & gtouch[b]
                    if not (shared or (ggrown[a] & merged[b]).any()):
                        continue
                    union = merged[a] | merged[b]
                    for o in shared:
                        union |= olab == o
                    score = _rod_score(union)
                    if best is None or score > best[0]:
                        best = (score, a, b)
            if best is None:
                break
            _, a, b = best
            merged[a] = merged[a] | merged[b]
            gtouch[a] |= gtouch[b]
            ggrown[a] = ggrown[a] | ggrown[b]
            del merged[b], gtouch[b], ggrown[b]
        flags: list[str | None] = [None] * len(merged)
        if c not in uncertain:
            if len(merged) > want:
                unresolved[c] = f"{len(merged)} pieces, {want} expected (not joinable)"
                flags = ["extra-pieces"] * len(merged)
            elif len(merged) < want:
                unresolved[c] = f"{len(merged)} found, {want} expected (touching homologues or missing)"
                if merged:
                    flags[int(np.argmax([m.sum() for m in merged]))] = "too-few"
        for m, t, flag in zip(merged, gtouch, flags):
            full = np.zeros((H, W), bool)
            full[win] = m
            for o in t:  # overlap pixels belong to every chromosome touching them
                sl = over_slices[o - 1]
                full[sl] |= over_lab[sl] == o
            instances.append((c, full, flag))
    return instances, unresolved, dropped


# ----------------------------------------------------------------------------- the set
def find_pairs(root) -> list[tuple[Path, Path, Path]]:
    """``(dapi, labels, case_info)`` triples below ``root`` (one folder per slide and case)."""
    import glob

    out = []
    for k in sorted(Path(p) for p in glob.glob(str(Path(root) / "**" / "*K.tif"), recursive=True)):  # follows links
        d = k.with_name(k.name[:-5] + "D.tif")
        out.append((d, k, k.parent / "case_info.txt"))
    return out


def _slide_of(d_path: Path) -> str:
    m = _SLIDE_RE.match(d_path.name)
    return m.group(1) if m else d_path.parent.name[:3]


def import_mfish(root, out_dir, split: str = "adir-mfish", limit: int | None = None, progress: bool = True,
                 quiet: bool = False) -> dict:
    """Import the M-FISH set at ``root`` into ``out_dir``: ``{train,val,test,all}.json``, ``import_report.csv``,
    ``problems.json``. ``limit``: at most that many images, spread over the splits
    (:func:`chromoseg.data.splits.take_spread`). ``quiet``: problems are not logged as they are found
    (they are still in ``problems.json`` and the summary). Returns a summary dict; its ``warnings``
    name any split left without images."""
    from tqdm import tqdm

    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected the adir-mfish folder with one sub-folder per slide)")
    pairs = find_pairs(root)
    if not pairs:
        raise FileNotFoundError(f"{root}: no '*K.tif' label maps found")
    split_def = load_split(split)
    pairs = take_spread(pairs, lambda pair: split_of(split_def, _slide_of(pair[0])), limit)
    problems = ProblemLog(quiet=quiet)
    writers = {s: CocoWriter() for s in (*SPLIT_NAMES, "all")}
    rows = []
    for d_path, k_path, case_path in tqdm(pairs, desc="import M-FISH", disable=not progress, unit="img"):
        name = d_path.name
        slide = _slide_of(d_path)
        try:
            image, scale = read_image_for_import(d_path)  # scale: the file's pixel size, if any
            labels = read_label_map(k_path)
        except ImageReadError as err:
            problems.add(err.path, err.problem, kind="unreadable")
            continue
        if image.shape != labels.shape:
            problems.add(k_path, f"label map is {labels.shape[1]}x{labels.shape[0]} but {d_path.name} is "
                         f"{image.shape[1]}x{image.shape[0]}", kind="size-mismatch")
            continue
        bad = np.setdiff1d(np.unique(labels), [0, *range(1, NUM_CLASSES + 1), OVERLAP])
        if bad.size:
            problems.add(k_path, f"label values {bad.tolist()} are not 0, 1-24 or 255; those pixels are treated as background",
                         action="kept", kind="label")
            labels = np.where(np.isin(labels, bad), 0, labels)
        karyotype = read_case_info(case_path).text if case_path.is_file() else ""
        if not karyotype:
            problems.add(case_path, "no karyotype (case_info.txt missing or empty): 2 per autosome assumed, X/Y unknown",
                         action="kept", kind="karyotype")
        expected, uncertain, total = expected_counts(karyotype or "46,XX")
        if not karyotype:
            uncertain |= {23, 24}
            total = None
        instances, unresolved, dropped = derive_instances(labels, expected, uncertain)
        if dropped:
            problems.add(k_path, f"{dropped} fragment(s) under {MIN_PIECE} px with no piece of their class nearby left out",
                         action="skipped", kind="fragment")
        s = split_of(split_def, slide)
        if s is None:
            problems.add(d_path, f"slide {slide} is not in the shipped split {split!r}: only in all.json", action="kept",
                         kind="split")
        extra = {"slide": slide, "case": d_path.parent.name, "karyotype": karyotype, "expected_count": total,
                 "unresolved_classes": {class_name(c): r for c, r in unresolved.items()}, **scale}
        file_name = str(d_path.resolve())
        targets = [writers["all"]] + ([writers[s]] if s else [])
        ids = [w.add_image(file_name, *image.shape, **extra) for w in targets]
        for c, mask, flag in instances:
            # the largest piece of a class with too few is most likely touching homologues: a COCO crowd
            # region (ignored by AP, left out of training targets), as torchvision's references treat crowds
            more = {"unresolved": flag, "iscrowd": int(flag == "too-few")} if flag else {}
            for w, iid in zip(targets, ids):
                w.add_annotation(iid, c, mask=mask, **more)
        rows.append({"image": name, "slide": slide, "split": s or "", "karyotype": karyotype,
                     "expected": total if total is not None else "", "found": len(instances),
                     "fragments_dropped": dropped,
                     "unresolved": "; ".join(f"{class_name(c)}: {r}" for c, r in unresolved.items()),
                     "uncertain": " ".join(class_name(c) for c in sorted(uncertain))})
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"description": "ADIR M-FISH set #1 imported by chromoseg (instances derived from label maps)",
            "source": str(root.resolve()), "split": split}
    for s, w in writers.items():
        w.write(out_dir / f"{s}.json", info={**info, "subset": s})
    with open(out_dir / "import_report.csv", "w", newline="") as f:
        cols = ["image", "slide", "split", "karyotype", "expected", "found", "fragments_dropped", "unresolved", "uncertain"]
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)
    problems.write(out_dir / "problems.json")
    exact = sum(1 for r in rows if r["expected"] != "" and r["found"] == r["expected"])
    summary = {
        "images": len(rows),
        "skipped_images": sum(1 for p in problems.problems if p.action == "skipped" and p.kind != "fragment"),
        "instances": sum(r["found"] for r in rows),
        "images_count_matches_karyotype": exact,
        "images_with_unresolved_classes": sum(1 for r in rows if r["unresolved"]),
        "unresolved_classes": sum(r["unresolved"].count(":") for r in rows if r["unresolved"]),
        "fragments_dropped": sum(r["fragments_dropped"] for r in rows),
        "per_split_images": {s: len(writers[s].images) for s in SPLIT_NAMES},
        "problems": problems.summary(),
        "warnings": empty_split_warnings({s: len(writers[s].images) for s in SPLIT_NAMES}, limit),
    }
    return summary
