"""Synthetic karyograms made from instance ground truth, to measure the karyogram-pair builder.

:func:`make_karyogram` cuts every instance out of its metaphase with its mask, turns it upright (long
axis vertical, by the principal axis of the mask), optionally rescales it, and lays the cut-outs out in
the standard rows (1-5, 6-12, 13-18, 19-22 X Y) with an underline and a printed label (``cv2.putText``)
per class, on a background that follows the stain: black for fluorescence (DAPI: bright chromosomes on
dark), white for G-banding. The slots sit at the same relative positions as in the real karyograms of
``karyogram-pairs`` (:data:`.layout.STANDARD_X`).

:func:`evaluate_matches` scores the builder's output against the ground truth: one-to-one matching of
instances by mask IoU (Hungarian), then the share of ground-truth instances recovered with IoU >= 0.8,
the mean IoU, and the share recovered with the right class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chromoseg.data.classes import class_name

from .layout import STANDARD_ROWS, STANDARD_X, light_background, to_grey


@dataclass
class Placed:
    """Where a ground-truth instance went in the synthetic karyogram."""

    instance: int  # index into the instance list given to make_karyogram
    class_id: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the karyogram


def instances_from_label_map(label_map: np.ndarray, min_area: int = 30) -> list[tuple[int, np.ndarray]]:
    """Development fallback: 8-connected components of each class value 1-24 (overlap pixels 255 left out)."""
    import cv2

    out = []
    for c in range(1, 25):
        m = (label_map == c).astype(np.uint8)
        if not m.any():
            continue
        n, lab = cv2.connectedComponents(m, connectivity=8)
        for i in range(1, n):
            mm = lab == i
            if mm.sum() >= min_area:
                out.append((c, mm))
    return out


def instances_from_coco(dataset: dict, image: dict) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Non-crowd instances ``(class, mask)`` of one image of a loaded COCO set, and the number of crowds."""
    from chromoseg.data.coco import decode_mask

    h, w = int(image["height"]), int(image["width"])
    out, crowds = [], 0
    for a in dataset["annotations"]:
        if a["image_id"] != image["id"]:
            continue
        if a.get("iscrowd", 0):
            crowds += 1
            continue
        if "segmentation" not in a:
            continue
        out.append((int(a["category_id"]), decode_mask(a["segmentation"], h, w)))
    return out, crowds


def _upright(crop: np.ndarray, mask: np.ndarray, bg: int, scale: float):
    """Rotate (and scale) a cut-out so that the principal axis of its mask is vertical."""
    import cv2

    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c = pts.mean(0)
    cov = np.cov((pts - c).T) if len(pts) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    v = evecs[:, int(np.argmax(evals))]  # long axis (x, y)
    ang = np.degrees(np.arctan2(v[1], v[0]))  # image angle of the long axis, y down
    rot = ang - 90.0  # cv2 positive = counter-clockwise on screen; turn the axis onto the vertical
    while rot > 90:
        rot -= 180
    while rot <= -90:
        rot += 180
    h, w = mask.shape
    diag = int(np.ceil(np.hypot(h, w) * scale)) + 4
    R = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), rot, scale)
    R[:, 2] += (diag / 2 - c[0], diag / 2 - c[1])
    img = cv2.warpAffine(crop, R, (diag, diag), flags=cv2.INTER_LINEAR, borderValue=bg)
    m = cv2.warpAffine(mask.astype(np.float32), R, (diag, diag), flags=cv2.INTER_LINEAR) > 0.5
    img = np.where(m, img, bg).astype(np.uint8)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return img[:1, :1], m[:1, :1]
    return img[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1], m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def make_karyogram(
    image: np.ndarray,
    instances: list[tuple[int, np.ndarray]],
    *,
    scale: float = 1.0,
    light: bool | None = None,
    drop: tuple[int, ...] = (),
    gap: int = 6,
    margin: int = 20,
) -> tuple[np.ndarray, list[Placed]]:
    """A karyogram image (uint8 grey) in the standard layout and where each instance was put.

    ``instances`` are ``(class_id, mask)`` of ``image``; ``drop`` lists instance indices to leave out
    (a karyogram with a chromosome missing). ``light`` is the background (default: that of ``image``).
    """
    import cv2

    grey = to_grey(image)
    if light is None:
        light = light_background(grey)
    bg, ink = (255, 0) if light else (0, 255)
    cuts: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for i, (cid, mask) in enumerate(instances):
        if i in drop or not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.where(mask[y0:y1, x0:x1], grey[y0:y1, x0:x1], bg).astype(np.uint8)
        im, m = _upright(crop, mask[y0:y1, x0:x1], bg, scale)
        cuts.setdefault(cid, []).append((i, im, m))
    # geometry: every slot's underline is as wide as the widest slot content needs
    widths = [sum(m.shape[1] for _, _, m in v) + gap * (len(v) + 1) for v in cuts.values()]
    line_w = max(widths + [40])
    span = int(np.ceil(line_w / 0.13))  # underline ~13% of the span, as in the real karyograms
    W = span + 2 * margin + line_w
    rows_h = []
    for row in STANDARD_ROWS:
        hs = [m.shape[0] for c in row for _, _, m in cuts.get(c, [])]
        rows_h.append(max(hs + [20]))
    label_h = 40
    H = margin + sum(h + 12 + label_h for h in rows_h) + margin
    kar = np.full((H, W), bg, np.uint8)
    placed: list[Placed] = []
    y = margin
    for r, row in enumerate(STANDARD_ROWS):
        y_line = y + rows_h[r] + 6
        for j, cid in enumerate(row):
            xc = margin + line_w / 2 + STANDARD_X[r][j] * span
            lx0, lx1 = int(round(xc - line_w / 2)), int(round(xc + line_w / 2))
            kar[y_line: y_line + 2, lx0:lx1] = ink
            text = class_name(cid)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
            cv2.putText(kar, text, (int(xc - tw / 2), y_line + 8 + th), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ink, 1, cv2.LINE_AA)
            items = cuts.get(cid, [])
            total = sum(m.shape[1] for _, _, m in items) + gap * max(0, len(items) - 1)
            x = int(round(xc - total / 2))
            for i, im, m in items:
                h, w = m.shape
                yb = y_line - 4
                region = kar[yb - h: yb, x: x + w]
                region[m] = im[m]
                placed.append(Placed(i, cid, (x, yb - h, x + w, yb)))
                x += w + gap
        y = y_line + label_h + 6
    return kar, placed


def mask_iou_matrix(gt: list[np.ndarray], pred: list[np.ndarray]) -> np.ndarray:
    """IoU of every ground-truth mask with every predicted mask (bool [H, W] each)."""
    if not gt or not pred:
        return np.zeros((len(gt), len(pred)))
    G = np.stack([g.ravel() for g in gt]).astype(np.float32)
    P = np.stack([p.ravel() for p in pred]).astype(np.float32)
    inter = G @ P.T
    union = G.sum(1)[:, None] + P.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1)


def evaluate_matches(gt: list[tuple[int, np.ndarray]], pred: list[tuple[int, np.ndarray]], iou_thr: float = 0.8) -> dict:
    """One-to-one IoU matching of predicted ``(class, mask)`` to ground truth ``(class, mask)``.

    Returns counts: ``gt``, ``pred``, ``recovered`` (IoU >= iou_thr), ``recovered_right_class``
    (IoU >= iou_thr and the same class), ``matched_right_class`` (IoU >= 0.5 and the same class), and
    ``ious`` (best one-to-one IoU of every ground-truth instance, 0 if none).
    """
    from scipy.optimize import linear_sum_assignment

    iou = mask_iou_matrix([m for _, m in gt], [m for _, m in pred])
    best = np.zeros(len(gt))
    right = np.zeros(len(gt), bool)
    if iou.size:
        r, c = linear_sum_assignment(-iou)
        for i, j in zip(r, c):
            best[i] = iou[i, j]
            right[i] = gt[i][0] == pred[j][0]
    return {
        "gt": len(gt),
        "pred": len(pred),
        "recovered": int((best >= iou_thr).sum()),
        "recovered_right_class": int(((best >= iou_thr) & right).sum()),
        "matched_right_class": int(((best >= 0.5) & right).sum()),
        "ious": best.tolist(),
    }


def fake_metaphase(
    n: int = 8,
    shape: tuple[int, int] = (220, 300),
    *,
    seed: int = 0,
    light: bool = True,
    classes: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """A small synthetic banded metaphase (for tests): ``n`` separate rod-shaped chromosomes with random
    band patterns, random angles and lengths that fall with the class number; returns the grey image
    (dark on light if ``light``) and the instances ``(class, mask)``."""
    import cv2

    rng = np.random.default_rng(seed)
    H, W = shape
    classes = classes or tuple(int(c) for c in rng.choice(np.arange(1, 23), size=n, replace=True))
    ink = np.zeros((H, W), np.float32)
    occupied = np.zeros((H, W), bool)
    inst: list[tuple[int, np.ndarray]] = []
    for cid in classes:
        length = int(70 - 1.8 * min(cid, 22) + rng.integers(-4, 5))
        width = 11
        for _ in range(200):
            ang = float(rng.uniform(0, 180))
            cx, cy = float(rng.uniform(length / 2 + 4, W - length / 2 - 4)), float(rng.uniform(length / 2 + 4, H - length / 2 - 4))
            m = np.zeros((H, W), np.uint8)
            box = cv2.boxPoints(((cx, cy), (length, width), ang)).astype(np.int32)
            cv2.fillConvexPoly(m, box, 1)
            m = m.astype(bool)
            if not (cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & occupied).any():
                break
        else:
            continue
        # bands along the axis
        a = np.radians(ang)
        yy, xx = np.nonzero(m)
        t = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        nb = 9
        levels = rng.uniform(0.35, 1.0, nb)
        idx = np.clip(((t + length / 2) / length * nb).astype(int), 0, nb - 1)
        ink[yy, xx] = 200 * levels[idx]
        occupied |= m
        inst.append((int(cid), m))
    ink = cv2.GaussianBlur(ink, (0, 0), 1.0)
    ink = np.clip(ink + rng.normal(0, 2.0, ink.shape), 0, 255)
    img = (255 - ink) if light else ink
    return img.astype(np.uint8), inst
