"""One metaphase from instances to karyotype: counts, ISCN summary, flags, karyogram and overlay.

Shared by ``chromoseg karyogram`` (annotations or results files) and ``chromoseg predict`` (a model's
instances), so both write the same files and report rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from chromoseg.karyotype.counts import MIN_MARGIN, MIN_SCORE


def truth_for(img: dict | None, path: Path | None) -> str | None:
    """The known karyotype of an image: its dataset entry's ``karyotype``, else the ``case_info.txt``
    beside it (M-FISH layout), else None."""
    for key in ("karyotype", "case_karyotype"):
        if img and img.get(key):
            return str(img[key])
    if path is not None:
        ci = Path(path).parent / "case_info.txt"
        if ci.is_file():
            from chromoseg.karyotype.iscn import read_case_info

            try:
                return read_case_info(ci).text
            except ValueError:
                return None
    return None


def mark_not_chromosomes(instances: list[dict]) -> dict[int, str]:
    """Mark the instances the not-a-chromosome rule leaves out (:func:`chromoseg.karyotype.counts.not_chromosomes`)
    as :func:`analyse_metaphase` does, ``inst["not_chromosome"] = why``, without counting or drawing
    anything (``chromoseg predict --no-karyotype`` still writes the mark into ``results.json``);
    returns ``{index: why}``. A verdict already marked on every instance (``None`` for a chromosome,
    :func:`chromoseg.karyotype.assign.assign_instances`'s) is read, not judged again."""
    from chromoseg.karyotype.counts import judged_not_chromosomes

    out = judged_not_chromosomes(instances)
    for i, why in out.items():
        instances[i]["not_chromosome"] = why
    return out


def karyotype_analysis(instances: list[dict], *, truth: str | None = None, min_score: float = MIN_SCORE,
                       min_margin: float = MIN_MARGIN) -> dict:
    """The karyotype of one metaphase's instances (full-size masks): ``counts`` (a
    :class:`~chromoseg.karyotype.counts.KaryotypeCounts`: per class, ISCN-style ``summary``, flags),
    ``flags`` (the counts' and, where it differs from ``truth``, the known karyotype, :func:`truth_flag`),
    ``truth``, ``truth_summary`` and ``not_chromosomes`` ({index: why}: the instances the
    not-a-chromosome rule leaves out of every count, marked on the dicts themselves,
    ``inst["not_chromosome"] = why``)."""
    from chromoseg.karyotype.counts import count_karyotype
    from chromoseg.karyotype.iscn import karyotype_summary, parse_karyotype

    truth_summary = None
    if truth:
        try:
            truth_summary = karyotype_summary(parse_karyotype(truth))
        except ValueError:
            truth_summary = None
    counts = count_karyotype(instances, min_score=min_score, min_margin=min_margin)
    for i, why in counts.excluded.items():
        instances[i]["not_chromosome"] = why
    flags = list(counts.flags)
    if truth_summary is not None and truth_summary.replace("?", "") != counts.summary.replace("?", ""):
        flags.append(truth_flag(counts.summary, truth, truth_summary))
    return {"truth": truth, "truth_summary": truth_summary, "flags": flags, "counts": counts,
            "not_chromosomes": dict(counts.excluded)}


def analyse_metaphase(image: np.ndarray, instances: list[dict], name: str, out_dir, stem: str, *,
                      truth: str | None = None, chrom_height: int = 150, invert: bool | None = None,
                      min_score: float = MIN_SCORE, min_margin: float = MIN_MARGIN, overlay: bool = True,
                      overlay_title: dict | None = None, analysis: dict | None = None) -> dict:
    """Count, summarise and draw one metaphase; writes ``stem.karyogram.png`` (and ``stem.overlay.png``)
    into ``out_dir`` and returns the report row (see :mod:`chromoseg.karyotype.report`).

    Instances the not-a-chromosome rule leaves out (:func:`chromoseg.karyotype.counts.not_chromosomes`:
    a large compact blob, a nucleus) are in no count, not in the karyogram, drawn grey with ``?`` in
    the overlay, named in the ``not_chromosome`` flag, listed in the row's ``not_chromosomes``
    ({index: why}) and marked on the instance dicts themselves (``inst["not_chromosome"] = why``),
    so that a caller that keeps the instances keeps the mark. ``analysis``: the
    :func:`karyotype_analysis` of these instances already made (``chromoseg predict``'s pipeline
    makes it): drawn and written, not made again; its counts' weak marks (``weakness``, at the
    thresholds it was made with) are those the karyogram and the overlay draw.

    ``overlay_title`` (a dict, possibly empty, of :func:`chromoseg.karyotype.overlay.overlay_title`'s
    ``model`` and ``score_threshold``): the overlay gets a title band (``name``, those, and the count,
    the not-a-chromosome instances said apart) and a legend; None (the default): no band."""
    from chromoseg.karyotype.layout import render_karyogram, save_png
    from chromoseg.karyotype.overlay import overlay_title as make_title
    from chromoseg.karyotype.overlay import render_overlay

    out_dir = Path(out_dir)
    if analysis is None:
        analysis = karyotype_analysis(instances, truth=truth, min_score=min_score, min_margin=min_margin)
    counts, excluded = analysis["counts"], analysis["not_chromosomes"]
    chromosomes = [inst for i, inst in enumerate(instances) if i not in excluded]
    weak = counts.weakness  # each instance's weak marks, worked out once by the counting
    kg = render_karyogram(image, chromosomes, title=f"{name}   {counts.summary}", chrom_height=chrom_height,
                          invert=invert, min_score=min_score, min_margin=min_margin,
                          weak=[weak.get(i, []) for i in range(len(instances)) if i not in excluded])
    row = {"image": name, "truth": analysis["truth"], "truth_summary": analysis["truth_summary"],
           "flags": list(analysis["flags"]), "counts": counts,
           "karyogram": str(save_png(out_dir / f"{stem}.karyogram.png", kg)),
           "not_chromosomes": dict(excluded)}
    if overlay:  # what was left out stays visible: grey, labelled "?"
        shown = [{**inst, "category_id": 0} if i in excluded else inst for i, inst in enumerate(instances)]
        title = None if overlay_title is None else make_title(
            name, chromosomes=counts.total, not_chromosomes=len(excluded), **overlay_title)
        ov = render_overlay(image, shown, min_score=min_score, min_margin=min_margin, title=title,
                            weak=[weak.get(i, []) for i in range(len(instances))])
        row["overlay"] = str(save_png(out_dir / f"{stem}.overlay.png", ov))
    return row


def truth_flag(summary: str, truth: str, truth_summary: str) -> str:
    """The flag of a summary that differs from the known karyotype: both named, ours first (the known
    karyotype's own text, and what it counts as where a structural change makes the two differ)."""
    counted = f" (counted as {truth_summary})" if truth_summary != truth else ""
    return f"truth: this summary {summary} differs from the known karyotype {truth}{counted}"


def error_row(name: str, err: Exception, truth: str | None = None) -> dict:
    """The report row of a metaphase that could not be processed."""
    return {"image": name, "truth": truth, "truth_summary": None, "error": str(err), "flags": [], "findings": [],
            "counts": {}}
