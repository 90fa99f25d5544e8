"""The karyogram: every chromosome cut out, turned upright, laid out in the standard rows.

Input: the metaphase image (2-D grey, uint8 or uint16, or RGB) and its instances as dicts - what
:func:`instances_from_coco` returns from a chromoseg COCO dataset (ground truth) or a results list
(predictions)::

    {"category_id": 1..24 (0/None = unassigned), "mask": bool [H, W] or None,
     "rbox": [cx, cy, w, h, angle] or None, "endpoints": [[x1, y1], [x2, y2]] or None,
     "bbox": [x, y, w, h], "score": float or None, "class_scores": 24 floats or None, "id": ...,
     "top_end": [x, y] or None}   # optional: the image point whose end goes up (a reviewer's choice)

Rules (:func:`render_karyogram`):

* **Polarity.** The karyogram always shows dark chromosomes on white, like a classic G-band
  karyogram. When the chromosomes are brighter than the background (DAPI / M-FISH), the grey values
  are inverted first; the mask pixels are then stretched to their 1-99 % percentiles.
* **Cut-out.** Pixels outside the instance's mask are white. An instance without a mask (box-only
  sets such as the G-band VOC boxes) gets an approximate mask: Otsu's threshold inside its box, the
  largest dark component.
* **Upright.** The crop is sampled (``cv2.warpAffine``, a proper rotation, never a mirror) so that the
  rotated box's long side (``w``, along ``(cos a, -sin a)``) is vertical. When the box is nearly square
  (``w / h < 1.3``) and endpoints are given, the axis runs from one endpoint to the other instead.
  Missing rboxes are derived from the mask (``cv2.minAreaRect``).
* **Straightened** (default; :mod:`chromoseg.karyotype.straighten`): each chromosome resampled along
  its medial axis (the mask's skeleton path between its two tips, chosen with the prediction's
  ``endpoints``), so a bent chromosome stands straight at its true length. A mask with no usable axis
  (tiny, a ring, a blob, or one whose straightened area is off) keeps the upright crop above. Lengths
  for scaling and sorting are then the axis lengths. ``straighten=False`` (or the
  :func:`straightening` context) shows every chromosome as cut.
* **Short arm up** (:func:`orient_upright`). From the mask's width profile along the axis: when the
  class is known, the end whose neck lies where that class's centromere should be (textbook
  centromeric index) goes up; otherwise the end nearer the narrowest interior point, or failing a
  clear neck, the half with less stain. Unsure orientations (nearly metacentric classes 3, 19, 20,
  small margins) get a small grey ``?`` above the chromosome. A heuristic: about 86 % right on
  straightened G-band chromosomes (90 % of the ~80 % it is sure of; see benchmarks/results/counts.md);
  bent chromosomes and blurred DAPI masks fool it more often.
* **One scale** for all chromosomes of the karyogram: the longest one (lengths clipped at 3x the
  median, so a merged blob cannot shrink everything) becomes ``chrom_height`` pixels tall; a crop
  still taller than the row is shrunk on its own.
* **A reviewer's orientation**: an instance with ``top_end`` ``[x, y]`` (set in ``chromoseg review``
  by turning it end for end) is shown with its end nearer that image point up, marked sure.
* **Rows** 1-5, 6-12, 13-18, 19-22 + X + Y, class name printed under each class, homologues side by
  side (longest first); chromosomes without a class (``category_id`` 0/None) in a row of their own
  ("unassigned").
* **Marks.** Orange frame: ``score`` < ``min_score`` (0.7). Magenta frame: the two best class
  probabilities differ by < ``min_margin`` (0.2). A legend at the bottom explains them.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from pathlib import Path

import numpy as np

from chromoseg.karyotype.counts import MIN_MARGIN, MIN_SCORE, instance_weakness

KARYOGRAM_ROWS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),
    (6, 7, 8, 9, 10, 11, 12),
    (13, 14, 15, 16, 17, 18),
    (19, 20, 21, 22, 23, 24),
)
LOW_SCORE_COLOR = (255, 140, 0)  # RGB orange
UNSURE_CLASS_COLOR = (200, 0, 200)  # RGB magenta
UNSURE_ORIENT_COLOR = (150, 150, 150)
TEXT_COLOR = (20, 20, 20)

#: chromosomes straightened along their medial axis unless told otherwise (see the module docstring)
DEFAULT_STRAIGHTEN = True
_straighten: contextvars.ContextVar[bool] = contextvars.ContextVar("chromoseg_straighten", default=DEFAULT_STRAIGHTEN)


@contextlib.contextmanager
def straightening(flag: bool):
    """Within this context a karyogram rendered without an explicit ``straighten=`` straightens its
    chromosomes or not (``chromoseg karyogram --no-straighten`` passes its choice through
    :func:`chromoseg.karyotype.pipeline.analyse_metaphase` this way)."""
    token = _straighten.set(bool(flag))
    try:
        yield
    finally:
        _straighten.reset(token)


def _label(c) -> str:
    c = int(c or 0)
    if 1 <= c <= 22:
        return str(c)
    return {23: "X", 24: "Y"}.get(c, "?")


# ----------------------------------------------------------------------------------------- input
def instances_from_coco(coco, image_id, height: int | None = None, width: int | None = None) -> list[dict]:
    """The instances of one image from a COCO dataset dict (``annotations``) or a results list.

    ``height``/``width`` are taken from the dataset's ``images`` entry when there is one, otherwise
    from the RLE's ``size``; pass them for polygon results without a dataset.
    """
    from chromoseg.data.coco import decode_mask

    if isinstance(coco, dict):
        anns = coco.get("annotations", [])
        for img in coco.get("images", []):
            if img.get("id") == image_id:
                height = height or int(img["height"])
                width = width or int(img["width"])
                break
    else:
        anns = coco
    out = []
    for ann in anns:
        if ann.get("image_id") != image_id:
            continue
        seg = ann.get("segmentation")
        mask = None
        if seg:
            h, w = height, width
            if (h is None or w is None) and isinstance(seg, dict) and "size" in seg:
                h, w = seg["size"]
            if h is None or w is None:
                raise ValueError(f"annotation {ann.get('id')}: image size unknown for a polygon mask")
            mask = decode_mask(seg, int(h), int(w))
            if not mask.any():
                mask = None
        out.append(
            {
                "id": ann.get("id"),
                "category_id": int(ann.get("category_id") or 0),
                "mask": mask,
                "bbox": ann.get("bbox"),
                "rbox": ann.get("rbox"),
                "endpoints": ann.get("endpoints"),
                "score": ann.get("score"),
                "class_scores": ann.get("class_scores"),
                "top_end": ann.get("top_end"),
            }
        )
    return out


# ------------------------------------------------------------------------------------ geometry
def canonical_rbox(cx, cy, w, h, angle) -> list[float]:
    """Canonical form of one rotated box as a list: ``w >= h``, angle in [-90, 90) degrees (as
    :func:`chromoseg.ops.normalize_rboxes`, in plain Python: a karyogram needs no torch)."""
    w, h, a = abs(float(w)), abs(float(h)), float(angle)
    if w < h:
        w, h, a = h, w, a - 90.0
    a = math.fmod(a + 90.0, 180.0)
    a = (a + 180.0 if a < 0 else a) - 90.0
    if a >= 90.0:
        a -= 180.0
    return [float(cx), float(cy), w, h, a]


def rbox_from_mask(mask: np.ndarray) -> list[float] | None:
    """Minimum-area rotated rectangle of a mask as a list (see :func:`chromoseg.ops.mask_to_rbox`); None if empty."""
    import torch

    from chromoseg.ops import mask_to_rbox

    if not mask.any():
        return None
    return [float(v) for v in mask_to_rbox(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)))]


def approximate_mask(gray: np.ndarray, bbox, dark_objects: bool = True) -> np.ndarray:
    """A mask for a box-only instance: Otsu inside the box, largest component of the object side."""
    import cv2

    H, W = gray.shape
    x, y, bw, bh = bbox
    x0, y0 = max(0, int(math.floor(x))), max(0, int(math.floor(y)))
    x1, y1 = min(W, int(math.ceil(x + bw))), min(H, int(math.ceil(y + bh)))
    mask = np.zeros((H, W), bool)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return mask
    roi = gray[y0:y1, x0:x1]
    roi8 = roi if roi.dtype == np.uint8 else cv2.normalize(roi, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    mode = cv2.THRESH_BINARY_INV if dark_objects else cv2.THRESH_BINARY
    _, th = cv2.threshold(roi8, 0, 1, mode | cv2.THRESH_OTSU)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(th.astype(np.uint8), connectivity=8)
    if n <= 1:
        mask[y0:y1, x0:x1] = True
        return mask
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask[y0:y1, x0:x1] = lab == k
    return mask


def to_display_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grey copy of an image (RGB averaged; 16-bit stretched, see :func:`chromoseg.data.io.to_uint8`)."""
    from chromoseg.data.io import to_uint8

    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2).astype(img.dtype)
    return to_uint8(img)


def objects_are_bright(gray: np.ndarray, masks: list[np.ndarray]) -> bool:
    """True when the masked pixels are brighter on average than the rest (fluorescence / DAPI)."""
    if not masks:
        return float(np.median(gray)) < 128  # mostly dark image: a fluorescence image
    union = np.zeros(gray.shape, bool)
    for m in masks:
        union |= m
    if union.all() or not union.any():
        return float(np.median(gray)) < 128
    return float(gray[union].mean()) > float(gray[~union].mean())


def _axis_angle(inst: dict, rbox: list[float]) -> float:
    """Angle (deg) of the chromosome's long axis: the rbox's, or the endpoints' for squarish boxes."""
    ep = inst.get("endpoints")
    if ep is not None and rbox[2] < 1.3 * rbox[3]:
        (x1, y1), (x2, y2) = np.asarray(ep, float)
        if math.hypot(x2 - x1, y2 - y1) > 2:
            return math.degrees(math.atan2(-(y2 - y1), x2 - x1))
    return rbox[4]


def upright_crop(gray: np.ndarray, mask: np.ndarray, rbox, angle: float | None = None,
                 scale: float = 1.0, pad: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Sample the chromosome upright: its long axis vertical. Returns (grey crop, bool mask crop).

    ``gray``: uint8 image with dark chromosomes on white. Output pixel (u, v) - u to the right, v
    down, continuous coordinates with the crop's centre at the box centre - reads the image at
    ``c + (v - Ho/2)/s * d_long + (u - Wo/2)/s * d_u`` with ``d_long = (cos a, -sin a)`` and
    ``d_u = (-sin a, -cos a)``: a rotation (determinant +1), so the chromosome is never mirrored.
    """
    import cv2

    cx, cy, w, h, a = [float(v) for v in rbox]
    if angle is not None:  # axis from the endpoints: sample a square that holds the box in any direction
        a = float(angle)
        w = h = math.hypot(w, h)
    r = math.radians(a)
    dl = np.array([math.cos(r), -math.sin(r)])
    du = np.array([-math.sin(r), -math.cos(r)])
    Wo = max(3, int(math.ceil((h + 2 * pad) * scale)))
    Ho = max(3, int(math.ceil((w + 2 * pad) * scale)))
    c = np.array([cx, cy])
    t = c - 0.5 + (0.5 - Wo / 2.0) / scale * du + (0.5 - Ho / 2.0) / scale * dl
    M = np.array([[du[0] / scale, dl[0] / scale, t[0]], [du[1] / scale, dl[1] / scale, t[1]]], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    g = cv2.warpAffine(gray, M, (Wo, Ho), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    m = cv2.warpAffine(mask.astype(np.float32), M, (Wo, Ho), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0) > 0.5
    g = np.where(m, g, 255).astype(np.uint8)
    return _trim(g, m)


def _trim(g: np.ndarray, m: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return g, m
    y0, y1 = max(0, ys.min() - margin), min(m.shape[0], ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(m.shape[1], xs.max() + 1 + margin)
    return g[y0:y1, x0:x1], m[y0:y1, x0:x1]


#: Approximate centromeric index (short-arm length / total length) of each class, textbook values
#: for human chromosomes at about the 400-band stage (e.g. ISCN idiograms; Therman & Susman, *Human
#: Chromosomes*): used as a prior for where the constriction lies when the class is known.
CENTROMERIC_INDEX: dict[int, float] = {
    1: 0.48, 2: 0.39, 3: 0.47, 4: 0.29, 5: 0.29, 6: 0.39, 7: 0.39, 8: 0.34, 9: 0.35, 10: 0.32,
    11: 0.40, 12: 0.30, 13: 0.17, 14: 0.19, 15: 0.20, 16: 0.41, 17: 0.34, 18: 0.31, 19: 0.47,
    20: 0.45, 21: 0.31, 22: 0.30, 23: 0.40, 24: 0.27,
}


def _width_profile(m: np.ndarray):
    rows = np.nonzero(m.any(axis=1))[0]
    if len(rows) < 8:
        return None, 0, 0
    r0, r1 = rows[0], rows[-1]
    L = r1 - r0 + 1
    width = m[r0:r1 + 1].sum(axis=1).astype(float)
    k = max(1, int(round(L / 15)))
    sm = np.convolve(np.pad(width, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), mode="same")[k:-k]
    return sm, r0, L


def orient_upright(g: np.ndarray, m: np.ndarray, class_id: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Turn an upright crop by 180 degrees when its short arm is at the bottom.

    The mask's width profile along the (vertical) axis is smoothed over ~1/15 of the length.

    * Class known (``"class_prior"``): the *narrowness* ``max(0, 1 - width / median width)`` is summed
      under a Gaussian (sd 0.07 of the length) centred at the class's centromeric index from the top,
      and again from the bottom; the end with the narrower neck at the expected place goes up. Sure when
      the class is not (nearly) metacentric (|index - 0.5| >= 0.05: not 1, 3, 19, 20) and the two sums
      differ by >= 20 % of their total. Chromosome 1 (index 0.48) is left to the generic rule: with the
      prior it was right only 36 % of the time (generic: 56 %).
    * Class unknown or 1, or no neck at all: ``"centromere"``: an interior minimum (15-85 % of the length)
      at most 85 % of the median width is the centromere; the nearer end goes up (unsure within 45-55 %).
      Else ``"mass"``: the half with less stain goes up (unsure when the halves differ by < 5 %).

    Measured on 28k straightened G-band chromosomes (benchmarks/bench_counts.py, results in
    benchmarks/results/counts.md) - a heuristic: bent chromosomes and blurred DAPI masks fool it.
    Returns (grey, mask, info) with info = {"rule", "sure", "flipped", "centromere" (relative position
    from the top after turning, or None)}.
    """
    info = {"rule": "none", "sure": False, "flipped": False, "centromere": None}
    sm, r0, L = _width_profile(m)
    if sm is None:
        return g, m, info
    flip = None
    ci = CENTROMERIC_INDEX.get(int(class_id or 0))
    if ci is not None and abs(ci - 0.5) >= 0.025:  # chromosome 1 (0.48): the prior misleads, measured
        inner = sm[int(0.1 * L):int(0.9 * L) + 1]
        med = float(np.median(inner)) if inner.size else 0.0
        if med > 0:
            x = (np.arange(L) + 0.5) / L
            nar = np.clip(1.0 - sm / med, 0.0, None)
            nar[(x < 0.05) | (x > 0.95)] = 0.0
            top = float((nar * np.exp(-0.5 * ((x - ci) / 0.07) ** 2)).sum())
            bot = float((nar * np.exp(-0.5 * ((x - (1 - ci)) / 0.07) ** 2)).sum())
            if top + bot > 1e-6:
                flip = bot > top
                margin = abs(top - bot) / (top + bot)
                info.update(rule="class_prior", sure=abs(ci - 0.5) >= 0.05 and margin >= 0.2,
                            centromere=ci)
    if flip is None:
        lo, hi = int(0.15 * L), int(math.ceil(0.85 * L))
        if hi - lo >= 3:
            i = lo + int(np.argmin(sm[lo:hi]))
            med = float(np.median(sm[lo:hi]))
            if med > 0 and sm[i] <= 0.85 * med:
                p = (i + 0.5) / L
                info.update(rule="centromere", sure=not (0.45 <= p <= 0.55))
                flip = p > 0.5
                info["centromere"] = 1 - p if flip else p
    if flip is None:
        dark = (255.0 - g.astype(float)) * m
        prof = dark[r0:r0 + L].sum(axis=1)
        top, bot = prof[: L // 2].sum(), prof[L - L // 2:].sum()
        if top + bot > 0:
            info.update(rule="mass", sure=abs(top - bot) / (top + bot) >= 0.05)
            flip = bot < top
        else:
            flip = False
    if flip:
        g, m = np.rot90(g, 2).copy(), np.rot90(m, 2).copy()
    info["flipped"] = bool(flip)
    return g, m, info


# ------------------------------------------------------------------------------------- render
def _axis_ends(mask: np.ndarray, rbox, angle: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The image points at the top and the bottom of :func:`upright_crop`'s crop (before any turn):
    the mask's extremes along the crop's vertical axis, on the line through the box centre."""
    a = math.radians(rbox[4] if angle is None else angle)
    dl = np.array([math.cos(a), -math.sin(a)])
    ys, xs = _mask_pixels(mask)
    c = np.array([rbox[0], rbox[1]], float)
    proj = (xs + 0.5 - c[0]) * dl[0] + (ys + 0.5 - c[1]) * dl[1]
    return c + float(proj.min()) * dl, c + float(proj.max()) * dl


def _mask_pixels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a mask's pixels, found within its bounding rows and columns (a
    full-image ``nonzero`` per chromosome costs more than the rest of its crop)."""
    rows = np.flatnonzero(mask.any(1))
    if not len(rows):
        return rows, rows
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(0))
    ys, xs = np.nonzero(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    return ys + rows[0], xs + cols[0]


def _orient_by_reviewer(top: np.ndarray, bottom: np.ndarray, top_end) -> bool | None:
    """True to turn the crop (its bottom end is nearer the reviewer's ``top_end``), None without one."""
    try:
        p = np.asarray(top_end, float).reshape(2)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(p).all():
        return None
    return bool(np.linalg.norm(bottom - p) < np.linalg.norm(top - p))


def prepare_chromosomes(image: np.ndarray, instances: list[dict], *, chrom_height: int = 150,
                        invert: bool | None = None, straighten: bool | None = None, min_score: float = MIN_SCORE,
                        min_margin: float = MIN_MARGIN, weak: list[list[str]] | None = None) -> tuple[list[dict], dict]:
    """Upright, oriented, commonly scaled crops of all instances (dark on white).

    ``straighten``: resample each chromosome along its medial axis (None: the default,
    :data:`DEFAULT_STRAIGHTEN` or the :func:`straightening` context). ``weak``: each instance's
    :func:`~chromoseg.karyotype.counts.instance_weakness` at ``min_score`` and ``min_margin``, or
    ``weak[i]`` where given (one list per instance: the counting's ``KaryotypeCounts.weakness``).
    Returns (items, meta): one item per instance that could be cut out, with keys ``index``,
    ``category_id``, ``gray``, ``mask``, ``length`` (px, image scale), ``orientation``, ``weak``,
    ``straightened`` (bool) and ``top`` / ``bottom`` (the image points shown at the crop's top and
    bottom end); meta: ``inverted``, ``scale``, ``skipped`` (indices without any pixels),
    ``straightened`` (how many were), ``straighten`` (whether it was asked).
    """
    import cv2

    from chromoseg.karyotype.straighten import NotStraightenable, medial_axis, straighten as sample_along

    if straighten is None:
        straighten = _straighten.get()
    gray = to_display_gray(image)
    masks = [inst["mask"] for inst in instances if inst.get("mask") is not None]
    bright = objects_are_bright(gray, masks)
    inv = bright if invert is None else bool(invert)
    g = (255 - gray) if inv else gray.copy()

    geo = []
    skipped = []
    for i, inst in enumerate(instances):
        mask = inst.get("mask")
        if mask is None and inst.get("bbox") is not None:
            mask = approximate_mask(g, inst["bbox"], dark_objects=True)
        if mask is None or not mask.any():
            skipped.append(i)
            continue
        rbox = inst.get("rbox")
        if rbox is None or len(rbox) != 5 or rbox[2] <= 0 or rbox[3] <= 0:
            rbox = rbox_from_mask(mask)
        else:
            rbox = canonical_rbox(*rbox)
        axis = None
        if straighten:
            try:
                axis = medial_axis(mask, inst.get("endpoints"))
            except NotStraightenable:
                axis = None
        geo.append((i, mask, rbox, axis))

    # contrast: stretch the chromosome pixels to their 1-99 % percentiles
    union = np.zeros(g.shape, bool)
    for _, m, _, _ in geo:
        union |= m
    if union.any():
        lo, hi = np.percentile(g[union], [1, 99])
        hi = max(hi, lo + 1)
        g = np.clip((g.astype(np.float32) - lo) * (235.0 / (hi - lo)), 0, 255).astype(np.uint8)

    lengths = np.array([ax.length if ax is not None else r[2] for _, _, r, ax in geo], float)
    if len(lengths):
        ref = float(min(lengths.max(), 3 * np.median(lengths)))
        scale = float(np.clip(chrom_height / max(ref, 1.0), 0.2, 6.0))
    else:
        scale = 1.0
    items = []
    n_straight = 0
    for (i, mask, rbox, axis), length in zip(geo, lengths):
        inst = instances[i]
        gc = mc = None
        if axis is not None:
            try:
                gs, ms = sample_along(g, mask, axis, scale=scale)
                ratio = float(ms.sum()) / (scale * scale) / max(float(mask.sum()), 1.0)
                if 0.75 <= ratio <= 1.33:
                    gc, mc = _trim(np.where(ms, gs, 255).astype(np.uint8), ms)
                    top, bottom = axis.points[0].copy(), axis.points[-1].copy()
            except NotStraightenable:
                gc = None
        straight = gc is not None
        if not straight:
            length = rbox[2]
            ang = _axis_angle(inst, rbox)
            ang = ang if ang != rbox[4] else None
            gc, mc = upright_crop(g, mask, rbox, angle=ang, scale=scale)
            top, bottom = _axis_ends(mask, rbox, ang)
        n_straight += straight
        turn = _orient_by_reviewer(top, bottom, inst.get("top_end"))
        if turn is None:
            gc, mc, orient = orient_upright(gc, mc, class_id=inst.get("category_id"))
        else:
            if turn:
                gc, mc = np.rot90(gc, 2).copy(), np.rot90(mc, 2).copy()
            orient = {"rule": "reviewer", "sure": True, "flipped": turn, "centromere": None}
        if orient["flipped"]:
            top, bottom = bottom, top
        if gc.shape[0] > chrom_height * 1.05:  # an outlier (e.g. a merged blob): shrink on its own
            f = chrom_height / gc.shape[0]
            size = (max(1, int(gc.shape[1] * f)), chrom_height)
            gc = cv2.resize(gc, size, interpolation=cv2.INTER_AREA)
            mc = cv2.resize(mc.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        items.append({
            "index": i,
            "category_id": int(inst.get("category_id") or 0),
            "gray": gc,
            "mask": mc,
            "length": float(length),
            "orientation": orient,
            "weak": list(weak[i]) if weak is not None else instance_weakness(inst, min_score, min_margin),
            "straightened": straight,
            "top": [round(float(v), 2) for v in top],
            "bottom": [round(float(v), 2) for v in bottom],
        })
    return items, {"inverted": inv, "scale": scale, "skipped": skipped, "straightened": n_straight,
                   "straighten": bool(straighten)}


def _text(canvas, s, org, scale=0.5, color=TEXT_COLOR, thickness=1, center=False):
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(s, font, scale, thickness)
    x, y = org
    if center:
        x = int(round(x - tw / 2))
    cv2.putText(canvas, s, (int(x), int(y)), font, scale, color, thickness, cv2.LINE_AA)
    return tw, th


def render_karyogram(
    image: np.ndarray,
    instances: list[dict],
    *,
    title: str | None = None,
    chrom_height: int = 150,
    invert: bool | None = None,
    min_score: float = MIN_SCORE,
    min_margin: float = MIN_MARGIN,
    return_layout: bool = False,
    straighten: bool | None = None,
    weak: list[list[str]] | None = None,
):
    """Karyogram image (RGB uint8, white background) of one metaphase; see the module docstring.

    ``invert``: None = automatic (fluorescence is inverted so chromosomes are dark), True/False forces.
    ``straighten``: chromosomes resampled along their medial axis (None: :data:`DEFAULT_STRAIGHTEN`,
    or what the :func:`straightening` context says). ``weak``: each instance's weak marks already
    worked out (:attr:`chromoseg.karyotype.counts.KaryotypeCounts.weakness`), else judged here.
    With ``return_layout`` also returns a list of placements ``{"index", "category_id", "row",
    "x", "y", "w", "h", "orientation", "weak", "straightened", "top", "bottom"}`` (x, y: top-left on
    the canvas; top, bottom: the image points shown at the chromosome's upper and lower end).
    """
    import cv2

    items, meta = prepare_chromosomes(image, instances, chrom_height=chrom_height, invert=invert,
                                      straighten=straighten, min_score=min_score, min_margin=min_margin, weak=weak)
    by_class: dict[int, list[dict]] = {}
    for it in items:
        c = it["category_id"] if 1 <= it["category_id"] <= 24 else 0
        by_class.setdefault(c, []).append(it)
    for lst in by_class.values():
        lst.sort(key=lambda it: -it["length"])

    gap_in, margin, label_h, row_gap = 6, 24, 26, 14
    typical_w = int(np.median([it["gray"].shape[1] for it in items])) if items else 20
    min_slot = 2 * typical_w + gap_in

    def slot_width(lst):
        return max(min_slot, sum(it["gray"].shape[1] for it in lst) + gap_in * max(0, len(lst) - 1))

    rows = [[(c, by_class.get(c, [])) for c in row] for row in KARYOGRAM_ROWS]
    unassigned = by_class.get(0, [])
    row_widths = [sum(slot_width(lst) for _, lst in row) + 16 * (len(row) - 1) for row in rows]
    W = max(row_widths + [600]) + 2 * margin
    # the unassigned chromosomes wrap into as many rows as needed
    un_rows: list[list[dict]] = []
    cur, cur_w = [], 0
    for it in unassigned:
        w = it["gray"].shape[1] + gap_in
        if cur and cur_w + w > W - 2 * margin:
            un_rows.append(cur)
            cur, cur_w = [], 0
        cur.append(it)
        cur_w += w
    if cur:
        un_rows.append(cur)

    def row_height(lsts):
        hs = [it["gray"].shape[0] for lst in lsts for it in lst]
        return max(hs) if hs else int(chrom_height * 0.4)

    title_h = 34 if title else 8
    legend_h = 30
    heights = [row_height([lst for _, lst in row]) for row in rows]
    un_heights = [row_height([r]) for r in un_rows]
    H = title_h + sum(h + label_h + row_gap for h in heights + un_heights) + (label_h if un_rows else 0) + legend_h + margin
    canvas = np.full((H, W, 3), 255, np.uint8)
    if title:
        _text(canvas, title, (margin, 24), scale=0.65, thickness=1)

    placements = []

    def put(it, x, y, row_idx):
        g = it["gray"]
        h, w = g.shape
        canvas[y:y + h, x:x + w] = g[..., None]
        weak = it["weak"]
        if "low_score" in weak:
            cv2.rectangle(canvas, (x - 3, y - 3), (x + w + 2, y + h + 2), LOW_SCORE_COLOR, 2)
        if "unsure_class" in weak:
            o = 6 if "low_score" in weak else 3
            cv2.rectangle(canvas, (x - o, y - o), (x + w - 1 + o, y + h - 1 + o), UNSURE_CLASS_COLOR, 2)
        if not it["orientation"]["sure"]:
            _text(canvas, "?", (x + w / 2, y - 2), scale=0.35, color=UNSURE_ORIENT_COLOR, center=True)
        placements.append({"index": it["index"], "category_id": it["category_id"], "row": row_idx,
                           "x": x, "y": y, "w": w, "h": h, "orientation": it["orientation"], "weak": weak,
                           "straightened": it["straightened"], "top": it["top"], "bottom": it["bottom"]})

    y = title_h + 6
    for r, (row, rh) in enumerate(zip(rows, heights)):
        widths = [slot_width(lst) for _, lst in row]
        free = W - 2 * margin - sum(widths)
        gap = free / len(row)
        x = margin + gap / 2
        base = y + rh  # chromosomes stand on this line
        for (c, lst), sw in zip(row, widths):
            content = sum(it["gray"].shape[1] for it in lst) + gap_in * max(0, len(lst) - 1)
            xi = x + (sw - content) / 2
            for it in lst:
                h, w = it["gray"].shape
                put(it, int(round(xi)), int(base - h), r)
                xi += w + gap_in
            cv2.line(canvas, (int(x + 4), base + 4), (int(x + sw - 4), base + 4), (90, 90, 90), 1)
            _text(canvas, _label(c), (x + sw / 2, base + 20), scale=0.55, center=True)
            x += sw + gap
        y = base + label_h + row_gap
    for ur, (lst, rh) in enumerate(zip(un_rows, un_heights)):
        base = y + rh
        xi = margin
        for it in lst:
            h, w = it["gray"].shape
            put(it, int(xi), int(base - h), len(rows) + ur)
            xi += w + gap_in
        cv2.line(canvas, (margin, base + 4), (int(xi), base + 4), (90, 90, 90), 1)
        y = base + label_h + row_gap
    if un_rows:
        _text(canvas, f"unassigned ({len(unassigned)})", (margin, y - row_gap - 6), scale=0.5)
        y += label_h
    # legend
    ly = H - margin + 2
    x = margin
    cv2.rectangle(canvas, (x, ly - 11), (x + 14, ly + 1), LOW_SCORE_COLOR, 2)
    tw, _ = _text(canvas, f"score < {min_score:g}", (x + 20, ly), scale=0.42)
    x += 20 + tw + 20
    cv2.rectangle(canvas, (x, ly - 11), (x + 14, ly + 1), UNSURE_CLASS_COLOR, 2)
    tw, _ = _text(canvas, f"class margin < {min_margin:g}", (x + 20, ly), scale=0.42)
    x += 20 + tw + 20
    _text(canvas, "?", (x + 4, ly), scale=0.45, color=UNSURE_ORIENT_COLOR)
    tw, _ = _text(canvas, "orientation unsure", (x + 16, ly), scale=0.42)
    x += 16 + tw + 20
    note = "inverted (fluorescence)" if meta["inverted"] else ""
    if meta["straighten"] and items:
        note += ("; " if note else "") + f"straightened {meta['straightened']} of {len(items)}"
    if meta["skipped"]:
        note += ("; " if note else "") + f"{len(meta['skipped'])} without pixels not shown"
    if note:
        _text(canvas, note, (x, ly), scale=0.42, color=(110, 110, 110))
    if return_layout:
        return canvas, placements
    return canvas


def save_png(path, rgb: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 array as PNG (atomically)."""
    from PIL import Image

    from chromoseg.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
    return path
