"""Mask work for the review app: outlines, join, split along a line, a drawn polygon or brush stroke,
new instances.

Coordinates are chromoseg's continuous pixels (pixel (i, j) covers x in [j, j+1), y in [i, i+1)):
outlines are returned as the contour's pixel indices (add 0.5 for the pixel centres); lines and
polygons drawn in the browser come in continuous coordinates.
"""
from __future__ import annotations

import numpy as np

#: most points accepted in a drawn line or polygon
MAX_POINTS = 20000


class GeometryError(ValueError):
    """A drawn line or polygon that cannot be used (the message says why)."""


def decode(inst: dict, height: int, width: int) -> np.ndarray:
    """Boolean ``[height, width]`` mask of an instance (all False when it has none)."""
    from chromoseg.data.coco import decode_mask

    seg = inst.get("segmentation")
    if not seg:
        return np.zeros((height, width), bool)
    return decode_mask(seg, height, width)


def mask_pixels(inst: dict, height: int, width: int) -> int:
    """How many pixels an instance's mask covers, counted on its RLE without decoding it (a
    compressed RLE; other segmentations are decoded); 0 when it has none."""
    from pycocotools import mask as mask_utils

    seg = inst.get("segmentation")
    if not seg:
        return 0
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str) and tuple(seg.get("size", ())) == (height, width):
        return int(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode("ascii")}))
    return int(np.count_nonzero(decode(inst, height, width)))


def outlines(mask: np.ndarray, max_points: int = 400) -> list[list[int]]:
    """The mask's outer contours (``cv2.findContours``), each a flat ``[x0, y0, x1, y1, ...]`` of pixel
    indices, largest first; long contours are simplified (``approxPolyDP``) to about ``max_points``."""
    import cv2

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)  # a 1-px border so contours close
    crop[1:-1, 1:-1] = m[y0:y1, x0:x1]
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in sorted(contours, key=lambda c: -cv2.contourArea(c)):
        if len(c) > max_points:
            c = cv2.approxPolyDP(c, 0.5 * len(c) / max_points, True)
        pts = c.reshape(-1, 2) + np.array([x0 - 1, y0 - 1])
        out.append([int(v) for v in pts.ravel()])
    return out


def instance_geometry(mask: np.ndarray) -> dict:
    """``segmentation`` (RLE), ``bbox`` (the mask's bounds), ``area``, ``rbox`` and ``endpoints`` of a mask."""
    from chromoseg.data.coco import derive_geometry, encode_mask, mask_bbox

    rbox, ends = derive_geometry(np.ascontiguousarray(mask, dtype=bool))
    return {"segmentation": encode_mask(mask), "bbox": [round(v, 2) for v in mask_bbox(mask)],
            "area": int(mask.sum()), "rbox": rbox, "endpoints": ends}


def check_points(points, what: str, min_points: int) -> np.ndarray:
    """``points`` (a JSON list of ``[x, y]``) as a float array ``[N, 2]``, or a :class:`GeometryError`."""
    if not isinstance(points, list) or not min_points <= len(points) <= MAX_POINTS:
        raise GeometryError(f"{what}: expected a list of {min_points} to {MAX_POINTS} [x, y] points")
    out = np.empty((len(points), 2), np.float64)
    for k, p in enumerate(points):
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
            raise GeometryError(f"{what}: point {k} is not [x, y]")
        out[k] = p
    if not np.isfinite(out).all() or np.abs(out).max() > 1e6:
        raise GeometryError(f"{what}: coordinates must be finite numbers")
    return out


def _pixels(points: np.ndarray) -> np.ndarray:
    """Continuous coordinates -> OpenCV integer pixel coordinates (the pixel a point lies in)."""
    return np.floor(points).astype(np.int32).reshape(-1, 1, 2)


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """The pixels whose centres lie inside a drawn polygon (continuous coordinates), clipped to the image."""
    from skimage.draw import polygon

    pts = check_points(points, "polygon", 3)
    pts = np.clip(pts, -1, [width + 1, height + 1])
    rr, cc = polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=(height, width))
    m = np.zeros((height, width), bool)
    m[rr, cc] = True
    return m


#: the largest brush radius accepted, in image pixels
MAX_BRUSH_RADIUS = 100


def brush_mask(points, radius, height: int, width: int) -> np.ndarray:
    """The pixels a round brush of ``radius`` image pixels covers along a stroke (continuous
    coordinates: its points joined by straight runs, ``cv2.polylines`` with sub-pixel points and round
    ends), holes filled (a stroke around a chromosome's outline takes its inside too), clipped to the image."""
    import cv2
    from scipy import ndimage

    pts = check_points(points, "stroke", 1)
    if (not isinstance(radius, (int, float)) or isinstance(radius, bool) or not np.isfinite(radius)
            or not 0.5 <= radius <= MAX_BRUSH_RADIUS):
        raise GeometryError(f"radius: expected a number of image pixels from 0.5 to {MAX_BRUSH_RADIUS}")
    shift = 4
    pts = np.clip(pts, -2 * MAX_BRUSH_RADIUS, [width + 2 * MAX_BRUSH_RADIUS, height + 2 * MAX_BRUSH_RADIUS])
    fixed = np.round((pts - 0.5) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)  # pixel centres at integers
    m = np.zeros((height, width), np.uint8)
    thick = max(1, int(round(2 * radius)))
    if len(pts) == 1:
        cv2.circle(m, tuple(int(v) for v in fixed[0, 0]), int(round(radius * (1 << shift))), 1, -1, cv2.LINE_8, shift)
    else:
        cv2.polylines(m, [fixed], False, 1, thickness=thick, lineType=cv2.LINE_8, shift=shift)
    return ndimage.binary_fill_holes(m.astype(bool))


def split_mask(mask: np.ndarray, line, thickness: int = 2, min_piece: int = 8) -> list[np.ndarray]:
    """Cut a mask along a drawn polyline: the pieces left (4-connected) once the line's pixels are
    taken out, each of at least ``min_piece`` pixels (and 2 % of the mask); the line's own pixels and
    any crumbs go to the nearest piece. Raises :class:`GeometryError` unless there are two or more."""
    import cv2
    from scipy import ndimage

    pts = check_points(line, "line", 2)
    if not mask.any():
        raise GeometryError("the chromosome has no pixels")
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    y0, y1 = max(ys[0] - 2, 0), min(ys[-1] + 3, mask.shape[0])
    x0, x1 = max(xs[0] - 2, 0), min(xs[-1] + 3, mask.shape[1])
    m = mask[y0:y1, x0:x1]
    cut = np.zeros(m.shape, np.uint8)
    local = np.clip(pts - [x0, y0], -10, [m.shape[1] + 10, m.shape[0] + 10])
    cv2.polylines(cut, [_pixels(local)], False, 1, thickness=max(1, int(thickness)))
    rest = (m & (cut == 0)).astype(np.uint8)
    n, lab = cv2.connectedComponents(rest, connectivity=4)
    areas = np.bincount(lab.ravel(), minlength=n)
    need = max(min_piece, 0.02 * m.sum())
    keep = [k for k in range(1, n) if areas[k] >= need]
    if len(keep) < 2:
        raise GeometryError("the line does not cut the chromosome in two: draw it across the whole chromosome")
    markers = np.zeros(m.shape, np.int32)
    for k, lbl in enumerate(sorted(keep, key=lambda lbl: -areas[lbl]), start=1):
        markers[lab == lbl] = k
    _, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
    nearest = markers[iy, ix]
    nearest[~m] = 0
    pieces = []
    for k in range(1, len(keep) + 1):
        full = np.zeros(mask.shape, bool)
        full[y0:y1, x0:x1] = nearest == k
        pieces.append(full)
    return pieces
