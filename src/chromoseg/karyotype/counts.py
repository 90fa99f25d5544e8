"""Per-class chromosome counts of one metaphase, the sex call, an ISCN-style summary and flags.

Input: the instances of one image as dicts (see :mod:`chromoseg.karyotype.layout`,
``instances_from_coco``): ``category_id`` (1-24; 0 or missing = unassigned), optional ``score`` and
optional ``class_scores`` (24 probabilities, index 0 = class 1).

Rules (all thresholds are arguments of :func:`count_karyotype`):

* every instance counts in the total; unassigned ones count in no class;
* a chromosome is *weak* when its ``score`` < ``min_score`` (0.7) or the margin between its two
  largest class probabilities is < ``min_margin`` (0.2) - the latter only when ``class_scores`` exist;
* expected per class: two autosomes; X/Y by the called sex (a Y present: X 1, Y 1; otherwise X 2, Y 0);
* the summary is :func:`chromoseg.karyotype.iscn.format_iscn` of the class counts with the total of
  all instances; a class whose deviation from the expected count may be explained by a weak
  chromosome (a weak one assigned to it, or a weak one whose second-best class it is) is written
  with ``?`` (``45,XY,-?8``); when more than ``max_listed`` (8) classes depart from the expected
  count the result is no karyotype call and the summary is only ``total,sex,?`` (flag ``no_call``).

**Not a chromosome** (:func:`not_chromosomes`): a model's detection (it has a ``score``) is an
interphase nucleus or a piece of one (most are cut by the image's edge), or another blob, not a
chromosome, when its area, against the median area of the metaphase's other instances, is

* at least ``NUCLEUS_AREA_RATIO`` (2.5) times it with a solidity (area / convex hull area) of at
  least ``NUCLEUS_SOLIDITY`` (0.9): a large compact blob -- chromosomes that large are bent or
  crossed, never that filled out; or
* at least ``NOT_CHROMOSOME_AREA_RATIO`` (5) times it, whatever its shape: larger than any
  chromosome detection can be (a ragged nucleus, two touching, cytoplasm with chromosomes on it).

It is left out of every count, the total and the summary, and named in the flag
``not_chromosome``; ``KaryotypeCounts.excluded`` keeps its index and why (and
:func:`chromoseg.karyotype.assign.assign_instances` gives it no class slot). Chosen on the CIL
validation split (``benchmarks/results/nucleus_rule.md``): there the detections that match an
annotated chromosome reach at most 4.4 x the median, and those at 2.5 x or more are at most 0.87
solid; the rule leaves out 8 detections of the shipped G-band model, all nuclei, pieces of nuclei or
cytoplasm, none a chromosome. Smaller pieces of nuclei (1.5-2.3 x) stay counted. It needs masks and
at least ``NUCLEUS_MIN_INSTANCES`` (10) other instances with masks; instances without a score
(annotations, a reviewer's confirmed chromosomes) are never left out.

Flags (weak evidence, each ``code: message``): ``low_score`` (weak chromosomes by score),
``unsure_class`` (small class margin), ``unassigned`` (chromosomes without a class), ``count``
(total more than ``max_count_deviation`` = 2 from 46), ``class_count`` (a class with 0 or >= 4
chromosomes: more likely a mistake than a real nullisomy/tetrasomy), ``sex`` (no X, or more than 3
sex chromosomes), ``not_chromosome`` (see above), ``no_call`` (see above), ``inconsistent`` (unassigned chromosomes make the summary's list not add up).
``findings`` lists the departures from a normal 46,XX / 46,XY (what a reader should look at even when
the evidence is strong).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chromoseg.karyotype.iscn import AUTOSOMES, X_ID, Y_ID, format_iscn, id_to_chrom, sex_call

MIN_SCORE = 0.7
MIN_MARGIN = 0.2
#: the not-a-chromosome rule (:func:`not_chromosomes`), chosen on the CIL validation split
NUCLEUS_AREA_RATIO = 2.5
NUCLEUS_SOLIDITY = 0.9
NOT_CHROMOSOME_AREA_RATIO = 5.0
NUCLEUS_MIN_INSTANCES = 10


@dataclass
class KaryotypeCounts:
    counts: dict[int, int]  # class id 1..24 -> number of chromosomes
    total: int  # all chromosomes, unassigned included
    unassigned: int
    sex: str  # "XY", "XX", "X", "XXY", ... ("" = no sex chromosome)
    expected: dict[int, int]
    summary: str  # ISCN style, e.g. "45,XY,-8"
    #: index -> why the instance is weak evidence (:func:`instance_weakness` at the counting's
    #: thresholds), for every weak instance, those left out as not chromosomes included: worked out once
    #: here, read by the karyogram and the overlay
    weakness: dict[int, list[str]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    #: indices of the instances left out as not chromosomes -> why (:func:`not_chromosomes`)
    excluded: dict[int, str] = field(default_factory=dict)

    @property
    def weak(self) -> list[int]:
        """Indices of the weak instances that are counted (not left out as not chromosomes)."""
        return [i for i in self.weakness if i not in self.excluded]

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def deviations(self) -> dict[int, int]:
        """class id -> observed - expected, non-zero entries only."""
        return {c: self.counts[c] - self.expected[c] for c in self.counts if self.counts[c] != self.expected[c]}

    def as_row(self) -> dict:
        row = {
            "total": self.total,
            "sex": self.sex,
            "summary": self.summary,
            "unassigned": self.unassigned,
            "n_weak": len(self.weak),
            "n_not_chromosome": len(self.excluded),
            "flags": "; ".join(self.flags),
            "findings": "; ".join(self.findings),
        }
        for c in range(1, 25):
            row[f"n_{id_to_chrom(c)}"] = self.counts[c]
        return row


def class_margin(class_scores) -> float | None:
    """Difference of the two largest class probabilities (None when not given)."""
    if class_scores is None:
        return None
    p = np.sort(np.asarray(class_scores, dtype=float).ravel())
    if p.size < 2:
        return None
    return float(p[-1] - p[-2])


def second_class(class_scores) -> int | None:
    if class_scores is None:
        return None
    p = np.asarray(class_scores, dtype=float).ravel()
    if p.size < 2:
        return None
    return int(np.argsort(p)[-2]) + 1


def instance_weakness(inst: dict, min_score: float = MIN_SCORE, min_margin: float = MIN_MARGIN) -> list[str]:
    """Reasons why one instance is weak evidence: [] or some of 'low_score', 'unsure_class'."""
    out = []
    s = inst.get("score")
    if s is not None and float(s) < min_score:
        out.append("low_score")
    m = class_margin(inst.get("class_scores"))
    if m is not None and m < min_margin:
        out.append("unsure_class")
    return out


def _pixels(mask) -> tuple[np.ndarray, int, int]:
    """(the mask's array, its x0, y0 in the image): a :class:`chromoseg.ops.MaskWindow`'s own window
    (its ``data`` at ``x0, y0``: never pasted at full size), else the full mask at (0, 0)."""
    if not isinstance(mask, np.ndarray) and hasattr(mask, "x0") and hasattr(mask, "data"):
        return np.asarray(mask.data), int(mask.x0), int(mask.y0)
    return np.asarray(mask), 0, 0


def mask_area(mask) -> int | None:
    """Pixels of a mask (None for an instance without one); a mask window's counted in its window."""
    if mask is None:
        return None
    return int(np.count_nonzero(_pixels(mask)[0]))


def _bounds(mask) -> tuple[np.ndarray, int, int]:
    """(the mask cut to its bounding box as bool, its x0, y0); an empty mask: an empty array at (0, 0).
    Rows and columns are found with ``any`` (no index of every pixel of a full-image mask); a mask
    window is cut from its window."""
    m, wx, wy = _pixels(mask)
    m = m.astype(bool, copy=False)
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return m[:0, :0], 0, 0
    cols = np.flatnonzero(m.any(0))
    y0, x0 = int(rows[0]), int(cols[0])
    return m[y0:int(rows[-1]) + 1, x0:int(cols[-1]) + 1], x0 + wx, y0 + wy


def _solidity_of_crop(crop: np.ndarray) -> float:
    import cv2

    area = int(np.count_nonzero(crop))
    if area == 0:
        return 0.0
    crop = np.ascontiguousarray(crop, dtype=np.uint8)
    cnts, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros_like(crop)
    cv2.fillPoly(hull, [cv2.convexHull(np.vstack(cnts))], 1)
    return float(area) / max(int(hull.sum()), 1)


def solidity(mask) -> float:
    """Area / area of the convex hull of all the mask's pixels (pixel-counted, so 1.0 for a convex
    shape, about 0.9 for a straight chromosome, 0.5-0.8 for a bent one or a cluster)."""
    return _solidity_of_crop(_bounds(mask)[0])


def medians_of_others(areas) -> np.ndarray:
    """For each value of ``areas``, ``np.median`` of all the others (the same float64 values), from one
    sorted copy: O(n log n) instead of a median per value. Needs at least two values."""
    a = np.asarray(areas, dtype=np.float64)
    n = a.size
    if n < 2:
        raise ValueError("medians_of_others needs at least two values")
    order = np.argsort(a, kind="stable")
    s = a[order]
    pos = np.empty(n, np.intp)
    pos[order] = np.arange(n)  # where each value sits in the sorted copy
    m = n - 1  # the others

    def kth(k: int) -> np.ndarray:  # the k-th smallest of the others, for every value left out
        return np.where(k < pos, s[k], s[min(k + 1, n - 1)])

    if m % 2:
        return kth(m // 2)
    lo, hi = kth(m // 2 - 1), kth(m // 2)
    return (lo + hi) / 2.0  # np.median's mean of the two middle values


def _mask_of(inst: dict):
    """An instance's mask (a lazy one, a function, called)."""
    m = inst.get("mask")
    return m() if callable(m) else m


def _area_of(inst: dict) -> int | None:
    """An instance's mask pixels: ``mask_area`` for a lazy mask that gives it, else counted."""
    m = inst.get("mask")
    if callable(m) and inst.get("mask_area") is not None:
        return int(inst["mask_area"])
    return mask_area(_mask_of(inst))


def not_chromosomes(instances: list[dict], *, area_ratio: float = NUCLEUS_AREA_RATIO,
                    min_solidity: float = NUCLEUS_SOLIDITY, max_area_ratio: float = NOT_CHROMOSOME_AREA_RATIO,
                    min_instances: int = NUCLEUS_MIN_INSTANCES) -> dict[int, str]:
    """The instances of one metaphase that are not chromosomes (see the module docstring): index ->
    why, e.g. ``"large compact blob at (412, 35): 6,382 px = 4.5 x the metaphase's median, solidity
    0.95 (a nucleus?)"``. Only a model's detections (with a ``score``) and ``mask`` are judged,
    against the median mask area of the metaphase's other instances.

    A ``mask`` may also be a function of no argument that returns it, with the instance's pixel count
    in ``mask_area``: it is then called only for a detection large enough to be judged (the review
    app's batch list judges every metaphase without decoding every mask)."""
    areas = [_area_of(inst) for inst in instances]
    have = [i for i, a in enumerate(areas) if a]
    if len(have) < min_instances + 1:
        return {}
    # the median of the other instances' areas, for every instance, from one sorted array
    medians = medians_of_others([areas[i] for i in have])
    out: dict[int, str] = {}
    for i, median in zip(have, medians):
        if instances[i].get("score") is None:
            continue
        ratio = areas[i] / max(float(median), 1.0)
        if ratio < area_ratio:
            continue
        crop, x0, y0 = _bounds(_mask_of(instances[i]))  # decoded once, then only its bounding box
        sol = _solidity_of_crop(crop)
        if sol < min_solidity and ratio < max_area_ratio:
            continue
        ys, xs = np.nonzero(crop)
        ys, xs = ys + y0, xs + x0
        what = "large compact blob" if sol >= min_solidity else "blob larger than any chromosome"
        out[i] = (f"{what} at ({int(xs.mean())}, {int(ys.mean())}): {areas[i]:,} px = {ratio:.1f} x the "
                  f"metaphase's median, solidity {sol:.2f} (a nucleus?)")
    return out


def judged_not_chromosomes(instances: list[dict]) -> dict[int, str]:
    """The not-a-chromosome verdict of one metaphase, judged once: where every instance already carries
    the rule's mark ``not_chromosome`` (why, or None for a chromosome:
    :func:`chromoseg.karyotype.assign.assign_instances` marks its copies so), the marks; else
    :func:`not_chromosomes` of the instances."""
    if instances and all("not_chromosome" in inst for inst in instances):
        return {i: str(inst["not_chromosome"]) for i, inst in enumerate(instances) if inst["not_chromosome"]}
    return not_chromosomes(instances)


def chromosomes_only(instances: list[dict], **kw) -> list[dict]:
    """The instances without those :func:`not_chromosomes` leaves out (what a karyogram should show)."""
    gone = not_chromosomes(instances, **kw)
    return [inst for i, inst in enumerate(instances) if i not in gone]


def expected_for_sex(n_y: int) -> dict[int, int]:
    exp = {c: 2 for c in AUTOSOMES}
    exp[X_ID], exp[Y_ID] = (1, 1) if n_y > 0 else (2, 0)
    return exp


def count_karyotype(
    instances: list[dict],
    *,
    min_score: float = MIN_SCORE,
    min_margin: float = MIN_MARGIN,
    max_count_deviation: int = 2,
    max_unassigned: int = 0,
    max_listed: int = 8,
    exclude_non_chromosomes: bool = True,
    excluded: dict[int, str] | None = None,
) -> KaryotypeCounts:
    """Count the chromosomes of one metaphase and summarise them (see the module docstring).
    ``exclude_non_chromosomes=False`` counts every instance (no :func:`not_chromosomes` rule);
    ``excluded`` (index -> why) is the rule's verdict already made, used instead of judging
    ``instances`` again (the review app judges the masks, then counts instances without them); without
    it, :func:`judged_not_chromosomes` (the marks of a verdict made before, else the rule)."""
    counts = {c: 0 for c in range(1, 25)}
    unassigned = 0
    weakness: dict[int, list[str]] = {}
    n_low = n_unsure = 0
    questioned: set[int] = set()
    if excluded is not None:
        excluded = {int(i): str(why) for i, why in excluded.items()}
    else:
        excluded = judged_not_chromosomes(instances) if exclude_non_chromosomes else {}
    for i, inst in enumerate(instances):
        reasons = instance_weakness(inst, min_score, min_margin)
        if reasons:
            weakness[i] = reasons
        if i in excluded:
            continue
        c = int(inst.get("category_id") or 0)
        if 1 <= c <= 24:
            counts[c] += 1
        else:
            unassigned += 1
        if reasons:
            n_low += "low_score" in reasons
            n_unsure += "unsure_class" in reasons
            if 1 <= c <= 24:
                questioned.add(c)
            c2 = second_class(inst.get("class_scores"))
            if c2 is not None:
                questioned.add(c2)
    total = len(instances) - len(excluded)
    n_x, n_y = counts[X_ID], counts[Y_ID]
    sex = sex_call(n_x, n_y)
    expected = expected_for_sex(n_y)
    n_dev = sum(counts[c] != expected[c] for c in counts)
    if n_dev > max_listed:  # not a karyotype call: say so instead of listing every class
        summary = f"{total},{sex or '?'},?"
    else:
        summary = format_iscn(counts, total=total, questioned=questioned & _deviating(counts))

    flags: list[str] = []
    if excluded:
        flags.append(f"not_chromosome: {len(excluded)} instance(s) left out of the counts as not chromosomes: "
                     + "; ".join(excluded.values()))
    if n_low:
        flags.append(f"low_score: {n_low} chromosome(s) with score < {min_score:g}")
    if n_unsure:
        flags.append(f"unsure_class: {n_unsure} chromosome(s) with class margin < {min_margin:g}")
    if n_dev > max_listed:
        flags.append(f"no_call: {n_dev} classes differ from the expected count; no per-class summary")
    if unassigned > max_unassigned:
        flags.append(f"unassigned: {unassigned} chromosome(s) without a class")
    if abs(total - 46) > max_count_deviation:
        flags.append(f"count: {total} chromosomes, far from 46")
    odd = [id_to_chrom(c) for c in AUTOSOMES if counts[c] == 0 or counts[c] >= 4]
    if odd:
        flags.append("class_count: 0 or >= 4 of class " + ", ".join(odd))
    if n_x == 0 or n_x + n_y > 3:
        flags.append(f"sex: {n_x} X and {n_y} Y")

    findings: list[str] = []
    if total != 46:
        findings.append(f"{total} chromosomes")
    if sex not in ("XX", "XY"):
        findings.append(f"sex chromosomes {sex or 'none'}")
    for c in AUTOSOMES:
        d = counts[c] - 2
        if d:
            findings.append(f"{'+' if d > 0 else ''}{d} of {id_to_chrom(c)}")
    return KaryotypeCounts(
        counts=counts,
        total=total,
        unassigned=unassigned,
        sex=sex,
        expected=expected,
        summary=summary,
        weakness=weakness,
        flags=flags,
        findings=findings,
        excluded=excluded,
    )


def _deviating(counts: dict[int, int]) -> set[int]:
    return {c for c in AUTOSOMES if counts[c] != 2}


def counts_from_labels(labels) -> KaryotypeCounts:
    """Convenience: counts of a plain list of class ids (no scores)."""
    return count_karyotype([{"category_id": int(c)} for c in labels])
