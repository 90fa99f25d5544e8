"""Overlay of the instances on the metaphase: coloured masks, rotated boxes, endpoints, class labels.

Colours are fixed per class (24 hues); an unassigned instance is grey. Weak instances (low score or
small class margin, see :mod:`chromoseg.karyotype.counts`) get their label followed by ``?``. For
instances without classes (``classes=False``: a set annotated without them, e.g. BioImLab's polygons)
each chromosome gets its own hue and no label: a placeholder class is never drawn as if it were one.
The image is shown as it is (no inversion), stretched to 8 bits.
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


def render_overlay(image: np.ndarray, instances: list[dict], *, alpha: float = 0.35,
                   upscale: float | None = None, min_score: float = MIN_SCORE,
                   min_margin: float = MIN_MARGIN, classes: bool = True) -> np.ndarray:
    """RGB uint8 overlay. ``upscale`` (default: so that the longer side is >= 900 px, at most 2x)
    enlarges the picture so that labels stay legible. ``classes=False``: the instances carry no real
    class (their ``category_id`` is a placeholder): a hue per instance, no class labels."""
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
    for inst, col in zip(instances, cols):
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
        if instance_weakness(inst, min_score, min_margin):
            txt += "?"
        labels.append((txt, rbox[0] * s, rbox[1] * s, col))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for txt, x, y, col in labels:  # labels last, with a dark outline, so no box hides them
        (tw, th), _ = cv2.getTextSize(txt, font, 0.5, 1)
        org = (int(x - tw / 2), int(y + th / 2))
        cv2.putText(out, txt, org, font, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, txt, org, font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
