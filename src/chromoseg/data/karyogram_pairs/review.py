"""Review sheets for the manual screening step of the dataset building (seed paper, section II.A).

One PNG per pair: the metaphase (enlarged to at least ``min_height`` px) with every matched chromosome
drawn as a coloured contour and labelled ``class:score``; a side panel lists the pair, the counts and
every unmatched cut-out (class and a thumbnail), plus the matches below ``--min-score`` that were left
out (drawn dashed-grey on the image).
"""
from __future__ import annotations

import numpy as np

from chromoseg.data.classes import class_name

from .layout import KaryogramLayout, to_grey
from .matching import Match


def _colour(i: int) -> tuple[int, int, int]:
    import colorsys

    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)  # BGR


def _name(cid: int | None) -> str:
    return class_name(cid) if cid is not None else "?"


def render_review(
    metaphase: np.ndarray,
    layout: KaryogramLayout,
    kept: list[Match],
    dropped: list[Match],
    unmatched: list[int],
    title: str,
    min_height: int = 900,
    panel_width: int = 300,
) -> np.ndarray:
    """The review sheet as a BGR uint8 image."""
    import cv2

    grey = to_grey(metaphase)
    H, W = grey.shape
    z = max(1.0, min_height / H)
    big = cv2.resize(grey, (int(round(W * z)), int(round(H * z))), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def contours(mask):
        m = cv2.resize(mask.astype(np.uint8), (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_NEAREST)
        cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return cs

    for m in dropped:
        cv2.drawContours(canvas, contours(m.mask), -1, (150, 150, 150), 1)
    labels = []
    for m in kept:
        col = _colour(m.chrom)
        cv2.drawContours(canvas, contours(m.mask), -1, col, 2)
        ys, xs = np.nonzero(m.mask)
        if len(xs):
            labels.append((f"{_name(m.class_id)}:{m.score:.2f}", int(xs.mean() * z), int(ys.mean() * z), col))
    for text, x, y, col in labels:
        (tw, th), _ = cv2.getTextSize(text, font, 0.45, 1)
        x0, y0 = max(0, x - tw // 2), max(th + 2, y + th // 2)
        cv2.rectangle(canvas, (x0 - 1, y0 - th - 2), (x0 + tw + 1, y0 + 3), (255, 255, 255), -1)
        cv2.putText(canvas, text, (x0, y0), font, 0.45, col, 1, cv2.LINE_AA)

    panel = np.full((canvas.shape[0], panel_width, 3), 255, np.uint8)
    y = 22

    def line(text, colour=(0, 0, 0), scale=0.5):
        nonlocal y
        if y < panel.shape[0] - 6:
            cv2.putText(panel, text, (8, y), font, scale, colour, 1, cv2.LINE_AA)
        y += int(22 * scale / 0.5)

    line(title[:34], scale=0.5)
    n = len(layout.chromosomes)
    line(f"karyogram chromosomes: {n}")
    line(f"matched (kept): {len(kept)}", (0, 120, 0))
    line(f"below --min-score: {len(dropped)}", (110, 110, 110))
    line(f"unmatched: {len(unmatched)}", (0, 0, 200))
    if kept:
        line(f"mean score: {np.mean([m.score for m in kept]):.3f}")
    y += 6
    if unmatched:
        line("unmatched cut-outs:", (0, 0, 200))
        x = 8
        row_h = 0
        for i in unmatched:
            c = layout.chromosomes[i]
            th = 60
            s = th / max(c.image.shape)
            tw_ = max(4, int(c.image.shape[1] * s))
            th_ = max(4, int(c.image.shape[0] * s))
            thumb = cv2.cvtColor(cv2.resize(to_grey(c.image), (tw_, th_), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
            if x + tw_ + 8 > panel_width:
                x = 8
                y += row_h + 22
                row_h = 0
            if y + th_ + 18 > panel.shape[0]:
                break
            panel[y: y + th_, x: x + tw_] = thumb
            cv2.putText(panel, _name(c.class_id), (x, y + th_ + 14), font, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
            x += tw_ + 10
            row_h = max(row_h, th_)
        y += row_h + 30
    if dropped:
        line("left out (score):", (110, 110, 110))
        for m in sorted(dropped, key=lambda m: -m.score)[:20]:
            line(f"  {_name(m.class_id)}  {m.score:.2f}", (110, 110, 110), 0.45)
    if layout.warnings:
        line("karyogram notes:", (0, 90, 160))
        for w in layout.warnings[:12]:
            for k in range(0, len(w), 40):
                line(w[k: k + 40], (0, 90, 160), 0.38)
    return np.concatenate([canvas, panel], axis=1)
