"""Overlay of the instances on the metaphase: coloured masks, rotated boxes, endpoints, class labels.

Colours are fixed per class (24 hues); an unassigned instance is grey. Weak instances (low score or
small class margin, see :mod:`chromoseg.karyotype.counts`) get their label followed by ``?``. For
instances without classes (``classes=False``: a set annotated without them, e.g. BioImLab's polygons)
each chromosome gets its own hue and no label: a placeholder class is never drawn as if it were one.
The image is shown as it is (no inversion), stretched to 8 bits. An optional band above the picture
holds a title (:func:`overlay_title`: image, model, score threshold, count) and a legend of these marks.
"""
from __future__ import annotations

import colorsys

import numpy as np

from chromoseg.karyotype.counts import MIN_MARGIN, MIN_SCORE, instance_weakness
from chromoseg.karyotype.layout import _label, canonical_rbox, rbox_from_mask, to_display_gray


def class_color(c: int) -> tuple[int, int, int]:
    """RGB colour of class ``c`` (1-24); grey for 0/None."""
    c = int(c or 0)
    if not 1 <= c <= 24:
        return (160, 160, 160)
    h = ((c - 1) * 7 % 24) / 24.0  # neighbours in number get distant hues
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def rbox_corners(rbox) -> np.ndarray:
    """[4, 2] corners of one rotated box (see :func:`chromoseg.ops.rbox_to_corners`)."""
    import torch

    from chromoseg.ops import rbox_to_corners

    return rbox_to_corners(torch.tensor([list(rbox)], dtype=torch.float64))[0].numpy()


def instance_color(k: int) -> tuple[int, int, int]:
    """RGB colour of the k-th instance of a picture without classes (neighbours get distant hues)."""
    h = (k * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.8, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


SEP = " \u00b7 "  # the title's separator (drawn as " | ": OpenCV's Hershey fonts are ASCII only)


def overlay_title(name: str, *, model: str | None = None, score_threshold: float | None = None,
                  chromosomes: int | None = None, not_chromosomes: int = 0) -> str:
    """The overlay's title line, e.g. ``103203.jpg · model gband · score >= 0.3 · 46 chromosomes (1 not
    a chromosome)``; parts that are None are left out. ``chromosomes`` counts as the karyotype
    analysis does (the not-a-chromosome instances left out), ``not_chromosomes`` those left out."""
    parts = [str(name)]
    if model:
        parts.append(f"model {model}")
    if score_threshold is not None:
        parts.append(f"score >= {float(score_threshold):g}")
    if chromosomes is not None:
        n = f"{int(chromosomes)} chromosome{'' if int(chromosomes) == 1 else 's'}"
        if not_chromosomes:
            n += f" ({int(not_chromosomes)} not a chromosome)"
        parts.append(n)
    return SEP.join(parts)


def _legend_items(classes: bool, min_score: float, min_margin: float) -> list[tuple[tuple | None, str]]:
    """The legend's entries, (swatch colour or None, text), one per mark the overlay draws."""
    if not classes:
        return [((255, 200, 60), "a hue per chromosome (no classes)"),
                (None, "outline = mask, box = rotated box, dots = ends")]
    return [(class_color(1), "colour + label = class (1-22, X, Y)"),
            (None, f"'7?' = score < {min_score:g} or class margin < {min_margin:g}"),
            (class_color(0), "grey '?' = not a chromosome or no class"),
            (None, "outline = mask, box = rotated box, dots = ends")]


def _wrap(pieces: list, width: int, measure, sep_w: int) -> list[list]:
    """Pieces in lines of at most ``width`` px (a piece wider than a line gets a line of its own)."""
    lines: list[list] = [[]]
    used = 0
    for p in pieces:
        w = measure(p)
        if lines[-1] and used + sep_w + w > width:
            lines.append([])
            used = 0
        used += (sep_w if lines[-1] else 0) + w
        lines[-1].append(p)
    return lines


def _title_band(width: int, title: str | None, legend: bool, classes: bool, min_score: float,
                min_margin: float) -> np.ndarray:
    """The band above the overlay: the title (wrapped at its separators) over the legend, white and
    coloured on dark grey, ``width`` px wide."""
    import cv2

    font, fs, pad, swatch = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 8, 12
    ascii_ = lambda t: t.replace(SEP, " | ").encode("ascii", "replace").decode()  # noqa: E731
    tw = lambda t: cv2.getTextSize(ascii_(t), font, fs, 1)[0][0]  # noqa: E731
    line_h = cv2.getTextSize("Hg", font, fs, 1)[0][1] + 10
    avail = max(width - 2 * pad, 1)
    title_lines = []
    if title:
        parts = title.split(SEP)
        title_lines = [SEP.join(ln) for ln in _wrap(parts, avail, tw, tw(SEP))]
    items = _legend_items(classes, min_score, min_margin) if legend else []
    item_w = lambda it: (swatch + 4 if it[0] is not None else 0) + tw(it[1])  # noqa: E731
    legend_lines = _wrap(items, avail, item_w, 18) if items else []
    n = len(title_lines) + len(legend_lines)
    band = np.full((n * line_h + 2 * pad - 4, width, 3), 40, np.uint8)
    y = pad + line_h - 10
    for t in title_lines:
        cv2.putText(band, ascii_(t), (pad, y), font, fs, (255, 255, 255), 1, cv2.LINE_AA)
        y += line_h
    for line in legend_lines:
        x = pad
        for col, t in line:
            if col is not None:
                cv2.rectangle(band, (x, y - swatch + 1), (x + swatch - 1, y), tuple(int(c) for c in col), -1)
                x += swatch + 4
            cv2.putText(band, ascii_(t), (x, y), font, fs, (210, 210, 210), 1, cv2.LINE_AA)
            x += tw(t) + 18
        y += line_h
    return band


def render_overlay(image: np.ndarray, instances: list[dict], *, alpha: float = 0.35,
                   upscale: float | None = None, min_score: float = MIN_SCORE,
                   min_margin: float = MIN_MARGIN, classes: bool = True, title: str | None = None,
                   legend: bool | None = None, weak: list[list[str]] | None = None) -> np.ndarray:
    """RGB uint8 overlay. ``upscale`` (default: so that the longer side is >= 900 px, at most 2x)
    enlarges the picture so that labels stay legible. ``classes=False``: the instances carry no real
    class (their ``category_id`` is a placeholder): a hue per instance, no class labels.

    ``title`` (e.g. :func:`overlay_title`'s line) and ``legend`` (a line explaining the marks: class
    colours and labels, ``?`` for a weak chromosome, grey ``?``, outline, box and endpoints) go in a
    dark band above the picture, as wide as it, its lines wrapped to fit. ``legend=None`` (the
    default): a legend only with a title. With neither (the default call) there is no band: the
    picture is exactly what it was before titles existed; ``legend=True`` alone gives a band with
    only the legend. ``weak``: each instance's weak marks already worked out (the counting's
    :attr:`~chromoseg.karyotype.counts.KaryotypeCounts.weakness`), else judged here."""
    import cv2

    gray = to_display_gray(image)
    H, W = gray.shape
    if upscale is None:
        upscale = float(np.clip(900.0 / max(H, W), 1.0, 2.0))
    base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    colour = base.copy()
    cols = [class_color(inst.get("category_id")) if classes else instance_color(k) for k, inst in enumerate(instances)]
    for inst, col in zip(instances, cols):
        m = inst.get("mask")
        if m is not None:
            colour[m] = (1 - alpha) * colour[m] + alpha * np.array(col, np.float32)
    out = colour.clip(0, 255).astype(np.uint8)
    if upscale != 1.0:
        out = cv2.resize(out, (int(round(W * upscale)), int(round(H * upscale))), interpolation=cv2.INTER_LINEAR)
    s = upscale
    labels = []
    for k, (inst, col) in enumerate(zip(instances, cols)):
        m = inst.get("mask")
        if m is not None:
            cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cnts = [np.round((c.astype(np.float32) + 0.5) * s - 0.5).astype(np.int32) for c in cnts]
            cv2.polylines(out, cnts, True, col, 1, cv2.LINE_AA)
        rbox = inst.get("rbox")
        if rbox is None and m is not None:
            rbox = rbox_from_mask(m)
        if rbox is None and inst.get("bbox") is not None:
            x, y, bw, bh = inst["bbox"]
            rbox = canonical_rbox(x + bw / 2, y + bh / 2, bw, bh, 0.0)
        if rbox is None:
            continue
        pts = rbox_corners(rbox) * s - 0.5
        cv2.polylines(out, [np.round(pts).astype(np.int32)], True, col, 1, cv2.LINE_AA)
        ep = inst.get("endpoints")
        if ep is not None:
            for x, y in np.asarray(ep, float):
                cv2.circle(out, (int(round(x * s - 0.5)), int(round(y * s - 0.5))), 3, col, -1, cv2.LINE_AA)
        if not classes:
            continue
        txt = _label(inst.get("category_id"))
        if (weak[k] if weak is not None else instance_weakness(inst, min_score, min_margin)):
            txt += "?"
        labels.append((txt, rbox[0] * s, rbox[1] * s, col))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for txt, x, y, col in labels:  # labels last, with a dark outline, so no box hides them
        (tw, th), _ = cv2.getTextSize(txt, font, 0.5, 1)
        org = (int(x - tw / 2), int(y + th / 2))
        cv2.putText(out, txt, org, font, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, txt, org, font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    if legend is None:
        legend = title is not None
    if title is not None or legend:
        out = np.concatenate([_title_band(out.shape[1], title, legend, classes, min_score, min_margin), out], axis=0)
    return out
