"""Drawing chromosome instances over an image (data show, prediction overlays, review sheets)."""
from __future__ import annotations

import colorsys

import numpy as np


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct BGR colour per class (1-24); grey for unknown (0)."""
    if not class_id:
        return (160, 160, 160)
    h = ((int(class_id) - 1) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_instances(image: np.ndarray, instances: list[dict], alpha: float = 0.35, draw_rbox: bool = True,
                   draw_bbox: bool = False, draw_endpoints: bool = True, label: bool = True) -> np.ndarray:
    """Colour BGR picture of ``image`` (grey uint8 ``[H, W]``) with each instance drawn.

    An instance is a dict with ``category_id`` and any of: ``mask`` (bool ``[H, W]``), ``bbox`` (COCO xywh),
    ``rbox`` ``[cx, cy, w, h, angle]``, ``endpoints`` ``[[x, y], [x, y]]``, ``score``, ``flag`` (a short
    note drawn in red). Coordinates are continuous pixels.
    """
    import cv2

    from chromoseg.data.classes import class_name

    if image.ndim == 2:
        canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR).astype(np.float32)
    else:
        canvas = image.astype(np.float32).copy()
    H, W = canvas.shape[:2]
    scale = max(1.0, min(H, W) / 512.0)
    for inst in instances:
        m = inst.get("mask")
        if m is not None and m.any():
            col = np.array(class_colour(inst.get("category_id", 0)), np.float32)
            canvas[m] = canvas[m] * (1 - alpha) + col * alpha
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for inst in instances:
        cid = int(inst.get("category_id", 0) or 0)
        col = class_colour(cid)
        m = inst.get("mask")
        if m is not None and m.any():
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, col, 1, cv2.LINE_AA)
        anchor = None
        if draw_rbox and inst.get("rbox") is not None:
            pts = rbox_polygon(inst["rbox"])
            cv2.polylines(out, [np.round(pts - 0.5).astype(np.int32)], True, col, 1, cv2.LINE_AA)
            anchor = (inst["rbox"][0], inst["rbox"][1])
        if (draw_bbox or anchor is None) and inst.get("bbox") is not None:
            x, y, w, h = inst["bbox"]
            cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)) - 1, int(round(y + h)) - 1), col, 1)
            anchor = anchor or (x + w / 2, y + h / 2)
        if draw_endpoints and inst.get("endpoints") is not None:
            for ex, ey in inst["endpoints"]:
                cv2.circle(out, (int(ex), int(ey)), max(2, int(2 * scale)), (255, 255, 255), -1, cv2.LINE_AA)
                cv2.circle(out, (int(ex), int(ey)), max(2, int(2 * scale)), col, 1, cv2.LINE_AA)
        if label and anchor is not None:
            text = class_name(cid) if 1 <= cid <= 24 else "?"
            if inst.get("score") is not None:
                text += f" {inst['score']:.2f}"
            if inst.get("flag"):
                text += "!"
            org = (int(anchor[0]) - 6, int(anchor[1]) + 4)
            fs = 0.4 * scale
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 255) if inst.get("flag") else col, 1, cv2.LINE_AA)
    return out


def rbox_polygon(rbox) -> np.ndarray:
    """``[4, 2]`` corners of one rotated box (numpy; see ``chromoseg.ops.rbox_to_corners``)."""
    import torch

    from chromoseg.ops import rbox_to_corners

    return rbox_to_corners(torch.as_tensor([list(rbox)], dtype=torch.float64))[0].numpy()


def add_caption(image_bgr: np.ndarray, lines: list[str], height: int = 18) -> np.ndarray:
    """The picture with a white band of text lines above it."""
    import cv2

    band = np.full((height * len(lines) + 6, image_bgr.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, image_bgr])
