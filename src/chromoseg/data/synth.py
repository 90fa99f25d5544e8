"""Synthetic G-banded metaphases composed from the single chromosomes of one cell (``chromoseg data synth``).

Every instance's mask, class, rotated box and endpoints are exact, because the image is made from them:
each straightened crop of the single-chromosome set (one ``CELL.npz`` per cell, entries
``CLASS/claseCLASS_K_CELL``, read as in :mod:`chromoseg.data.single_chromosomes`) gets a mask from its clean
background (:func:`crop_mask`), is bent, scaled, turned and placed on a canvas, and the image is
composed from the placed chromosomes as light absorbers over a light, unevenly lit background.

Measured on the CIL G-band set (60 images drawn with ``random.Random(0)`` from its 1249 VOC files;
box statistics from the VOC boxes, grey levels from the Otsu-dark pixels inside boxes), the same
measurements on 40 synthetic images made with the defaults (``--seed 0 --cells train``, boxes from the
masks), and the parameters set from them:

=======================================  ====================  ====================  ==========================
quantity (median, p10-p90 over images)   CIL                   synthetic             parameter
=======================================  ====================  ====================  ==========================
image long side                          817 (569-1052) px     800                   ``size`` 800
width / height                           1.03 (0.78-1.37)      0.97 (0.83-1.27)      short side 0.75-1 x long
chromosomes per image                    46                    45-47 (the cell's)
median box diagonal / long side          0.129 (0.094-0.171)   0.133 (0.111-0.166)   ``length_frac``
box diagonal of chr 1 / long side        0.213 (0.150-0.272)   0.267 (0.222-0.336)   (not matched, see below)
chromosome width / long side (2 x        0.018 (0.014-0.027)   0.020 (0.018-0.023)   ``elongation`` 1.45
  median distance-transform ridge)
RMS distance of box centres from their   0.274 (0.235-0.309)   0.282 (0.255-0.307)   ``cluster``
  mean / long side
convex hull of box centres / area        0.44 (0.35-0.52)      0.45 (0.39-0.50)
union of boxes / image area              0.35 (0.23-0.51)      0.38 (0.27-0.54)
boxes with box IoU > 0 with another      0.93 (0.78-1.00)      0.91 (0.83-0.98)      ``p_touch`` 0.25,
  ... > 0.1                              0.61 (0.37-0.84)      0.59 (0.48-0.72)      ``p_overlap`` 0.25,
  ... > 0.3                              0.13 (0.04-0.24)      0.09 (0.00-0.17)      ``max_overlap`` 0.3
background grey (median outside boxes)   253 (239-255)         252 (237-255)         ``background``
chromosome grey (median of dark pixels)  143 (118-170)         143 (117-170)         ``ink``
  5th / 90th percentile                  96 / 179              96 / 172
images with an interphase nucleus        62 %                  60 % (drawn)          ``p_nucleus`` 0.6
sharpness (mean abs Laplacian on the     0.078 (0.064-0.099)   0.098 (0.070-0.127)   ``blur`` 1.0-1.7 px
  dark pixels / contrast)
=======================================  ====================  ====================  ==========================

The single-chromosome crops differ from CIL: chr 1 is about 117 px long (94-143), a cell's chromosomes
are on average 4.7 times as long as wide (3.5-6.0 over cells; CIL's are more slender, hence
``elongation``), the background is 255 and the 5th grey percentile of a crop about 33 (darker and
grainier than CIL, hence the ink rescaling, ``crop_smooth`` and ``body``). The crops' classes also
differ more in length than CIL's boxes do (chr 1 / median: 2.0 against 1.65), so the largest
chromosomes come out somewhat longer than in CIL when the median is matched.

Image model: ``I = clip(blur(L(x, y) * T_nucleus * T_debris * T_patches * prod_i (1 - ink_i)) + noise)``,
where ``L`` is a background level (often above 255, so the background saturates as in CIL) with a
linear gradient and smooth blotches, and ``ink_i`` is chromosome i's ink inside its mask (0 outside):
``1 - crop / crop background``, smoothed (``crop_smooth``), raised to at least ``body`` x the cell's
median ink (a solid grey body under the bands), times ``k`` so that the cell's median ink hits the
drawn contrast (``ink``). Overlapping chromosomes multiply, so the overlap is darker (as in real
G-band overlaps) and each keeps its whole mask (as in the M-FISH / BioImLab annotations). Nucleus,
debris and faint grey patches are no instances.

Geometry: a chromosome is bent (lateral displacement ``a sin(pi t)``, or an S ``a sin(2 pi t)``, along
its axis ``t``), scaled (``s`` across, ``s x elongation`` along; ``s`` from ``length_frac`` with a
per-chromosome jitter), turned by any angle (one ``cv2.remap`` per chromosome), and its mask outline
smoothed (``outline_smooth``).

Placement: chromosomes in random order; each is ``free`` (no contact: gap >= 3 px), ``touch`` (within
3 px of another, no shared pixel) or ``overlap`` (shares pixels with others: at most 30 % of its own
area and of each other's, never three layers), drawn with ``p_touch`` / ``p_overlap``; free positions are
uniform in an ellipse around the canvas centre (a metaphase spread), touching / overlapping ones are
near an already placed chromosome. When no position of the wanted kind is found the chromosome is
placed free; when none at all fits the chromosome is placed anywhere it fits in the canvas.

Endpoints: the centre of the top and of the bottom row of the crop's mask (for the few crops that are
not upright, the mask's skeleton ends), carried through the same bend, scale, rotation and translation
(the bend moves neither end). Pixel (i, j) covers
``[j, j+1) x [i, i+1)`` (the repository's convention). At a ragged tip the outline smoothing can leave
an end a pixel or two outside the final mask.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from chromoseg.data.report import ProblemLog

log = logging.getLogger(__name__)

#: which cells ``--cells`` selects; the split is ``chromoseg pretrain``'s (by cell, fixed seed, 80/10/10)
CELL_SETS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class SynthParams:
    """Knobs of :func:`synth_metaphase`; ranges are ``(low, high)`` drawn uniformly per image (or per
    chromosome where it says so). The defaults come from the CIL measurements in the module docstring."""

    #: mean chromosome length (long axis of the mask) as a fraction of the canvas's long side
    length_frac: tuple = (0.105, 0.17)
    #: per-chromosome scale jitter (multiplies length and width)
    scale_jitter: tuple = (0.9, 1.1)
    #: extra stretch along the long axis (CIL chromosomes are more slender than the straightened crops)
    elongation: float = 1.45
    #: the per-cell stretch stays within these bounds
    elongation_clip: tuple = (1.0, 1.8)
    #: mean length / mean width of the chromosome masks of a typical cell of the single-chromosome set
    #: (median over 60 cells: 4.7, 5-95 %: 3.5-6.0); see the scale rule in :func:`synth_metaphase`
    crop_aspect: float = 4.7
    #: bend: lateral displacement of the axis' middle as a fraction of the length, per chromosome
    bend: tuple = (0.0, 0.12)
    #: share of bends that are S-shaped rather than a single arc
    p_s_bend: float = 0.25
    #: the spread: half-axes of the placement ellipse as fractions of the canvas's half sides
    cluster: tuple = (0.75, 0.92)
    #: share of chromosomes placed touching another, and overlapping another
    p_touch: float = 0.25
    p_overlap: float = 0.25
    #: most of a chromosome's area (and of each one below it) that an overlap may cover
    max_overlap: float = 0.3
    #: pixels: "free" keeps at least this gap; "touch" comes within it
    gap: int = 3
    #: median ink (1 - grey / background) of a chromosome
    ink: tuple = (0.33, 0.6)
    #: every chromosome pixel gets at least this share of the cell's median ink (fills the light gaps
    #: between splayed chromatids: CIL chromosomes have a solid grey body under the bands)
    body: float = 0.75
    #: Gaussian sigma (crop pixels) smoothing a crop's grain before it is warped
    crop_smooth: float = 0.7
    #: Gaussian sigma (output pixels) smoothing the ragged outline of a crop's mask after warping
    outline_smooth: float = 1.0
    #: background level before clipping to 255 (CIL backgrounds are often saturated)
    background: tuple = (245.0, 280.0)
    #: linear illumination fall-off across the image (fraction of the level) and smooth blotches
    gradient: tuple = (0.0, 0.1)
    blotches: tuple = (0.0, 0.04)
    #: faint grey patches (cytoplasm remnants): darkening at their centre, and their size in px
    patches: tuple = (0.0, 0.06)
    patch_size: tuple = (8.0, 20.0)
    blur: tuple = (1.0, 1.7)
    noise: tuple = (1.0, 3.0)
    #: an interphase nucleus (not an instance): probability, radius as a fraction of the long side
    p_nucleus: float = 0.6
    nucleus_radius: tuple = (0.1, 0.2)
    nucleus_ink: tuple = (0.38, 0.55)
    #: debris specks (not instances): mean count
    debris: float = 15.0
    #: placement tries per chromosome
    tries: int = 80
    #: "gband" (dark on light) or "fluorescence" (a DAPI-like image: see :func:`to_fluorescence`)
    stain: str = "gband"
    #: fluorescence only: the image's 97th grey percentile (chromosomes) and its background grey
    fluor_peak: tuple = (95.0, 165.0)
    fluor_background: tuple = (3.0, 12.0)

    @classmethod
    def fluorescence(cls, **overrides) -> "SynthParams":
        """Settings for DAPI-like metaphases, from measurements of the ADIR M-FISH training images
        (109 images, 2026-11-30): the mean chromosome length per image is 0.047-0.081 (p10-p90) of the
        long side (CIL: about twice that), the chromosomes are wide (median rotated-box width / length
        0.43: the crops, 4.7 times as long as wide, are squeezed along), grey 97th percentile 78-167
        (p10-p90) and background 7-8; the spreads are more compact and the images blurrier. Bends are
        drawn up to twice as strong as for G-band: long bent chromosomes are what the fluorescence
        model misses most."""
        base = dict(stain="fluorescence", length_frac=(0.047, 0.081), elongation=0.85, elongation_clip=(0.7, 1.3),
                    bend=(0.0, 0.2), p_s_bend=0.3, cluster=(0.45, 0.85), blur=(1.0, 2.0))
        base.update(overrides)
        return cls(**base)


@dataclass
class Crop:
    """One straightened chromosome: ``image`` uint8 grey (dark on light, long axis vertical)."""

    category_id: int
    image: np.ndarray
    name: str = ""
    mask: Optional[np.ndarray] = field(default=None, repr=False)

    def get_mask(self) -> np.ndarray:
        if self.mask is None:
            self.mask = crop_mask(self.image)
        return self.mask


# ----------------------------------------------------------------------------------------------- crops
def crop_mask(crop: np.ndarray) -> np.ndarray:
    """Boolean mask of the chromosome in a straightened crop on a clean light background: Otsu
    threshold of the inverted crop, a 3x3 closing, the largest 8-connected component, holes filled.
    Empty when the crop has no contrast."""
    import cv2
    from scipy import ndimage

    a = np.asarray(crop)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"crop_mask expects a 2-D grey crop, got shape {a.shape}")
    a = a.astype(np.uint8) if a.dtype != np.uint8 else a
    if int(a.max()) - int(a.min()) < 8:
        return np.zeros(a.shape, bool)
    inv = 255 - a
    _, fg = cv2.threshold(inv, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros(a.shape, bool)
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return ndimage.binary_fill_holes(lab == big)


def _crop_ink(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Absorbance-like ink in [0, 1]: ``1 - crop / background`` inside the mask, 0 outside."""
    out = ~mask
    bg = float(np.median(crop[out])) if out.any() else 255.0
    bg = max(bg, float(np.percentile(crop, 99)), 1.0)
    ink = np.clip(1.0 - crop.astype(np.float32) / bg, 0.0, 1.0)
    ink[~mask] = 0.0
    return ink


def _crop_ends(mask: np.ndarray) -> np.ndarray:
    """``[[x1, y1], [x2, y2]]``, the two ends of the chromosome's axis in continuous pixel coordinates of
    the crop: the centres of the mask's top and bottom rows (3 rows averaged for x) for an upright crop;
    for a crop that is not upright (a few crops of the set are not straightened: a bent or tilted
    chromosome; the mask's principal axis more than 25 degrees off vertical while it is elongated,
    major/minor axis ratio > 1.3) the skeleton ends of :func:`chromoseg.ops.mask_endpoints`."""
    ys, xs = np.nonzero(mask)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    cxx, cyy, cxy = float((dx * dx).mean()), float((dy * dy).mean()), float((dx * dy).mean())
    tilt = abs(math.degrees(0.5 * math.atan2(2 * cxy, cyy - cxx)))  # major axis from the vertical
    tr, det = cxx + cyy, cxx * cyy - cxy * cxy
    disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
    ratio = math.sqrt((tr / 2 + disc) / max(tr / 2 - disc, 1e-9))
    if ratio > 1.3 and tilt > 25.0:
        from chromoseg.ops import mask_endpoints

        return mask_endpoints(mask).numpy().astype(np.float64)
    rows = np.flatnonzero(mask.any(1))
    y0, y1 = int(rows[0]), int(rows[-1])
    xt = np.nonzero(mask[y0:y0 + 3])[1].mean()
    xb = np.nonzero(mask[max(y1 - 2, 0):y1 + 1])[1].mean()
    return np.array([[xt + 0.5, y0 + 0.5], [xb + 0.5, y1 + 0.5]], np.float64)


def read_cell(path, problems: Optional[ProblemLog] = None) -> list[Crop]:
    """The crops of one ``CELL.npz`` (entries ``CLASS/claseCLASS_K_CELL``, CLASS 1-24). An unreadable
    file gives ``[]`` and a problem; a bad entry (odd name, class outside 1-24, not 8-bit grey, no
    chromosome found) is skipped with a problem."""
    from chromoseg.data.single_chromosomes import ENTRY_NAME

    path = Path(path)
    problems = problems if problems is not None else ProblemLog()
    try:
        with np.load(path, allow_pickle=False) as z:
            entries = [(k, z[k]) for k in sorted(z.files)]
    except Exception as err:  # noqa: BLE001 - any failure to read is reported, the run goes on
        problems.add(path, f"cannot read ({type(err).__name__}: {err})", kind="unreadable")
        return []
    crops = []
    for key, a in entries:
        m = ENTRY_NAME.match(key)
        if not m or not 1 <= int(m.group(1)) <= 24:
            problems.add(f"{path} [{key}]", "entry name is not CLASS/claseCLASS_K_CELL with CLASS 1-24", kind="entry")
            continue
        if a.ndim != 2 or a.dtype != np.uint8 or min(a.shape) < 4:
            problems.add(f"{path} [{key}]", f"not an 8-bit grey crop (shape {a.shape}, {a.dtype})", kind="entry")
            continue
        c = Crop(int(m.group(1)), np.ascontiguousarray(a), key)
        if c.get_mask().sum() < 20:
            problems.add(f"{path} [{key}]", "no chromosome found in the crop (no contrast)", kind="entry")
            continue
        crops.append(c)
    if not crops and entries:
        problems.add(path, "no usable chromosome in the cell", kind="empty-cell")
    elif not entries:
        problems.add(path, "the archive has no entries", kind="empty-cell")
    return crops


def select_cells(src_dir, cells: Union[str, Sequence[str], None] = "all") -> list[str]:
    """Cell names (``CELL`` of ``CELL.npz``) of ``src_dir``: ``"all"``, or ``"train"`` / ``"val"`` /
    ``"test"`` of :func:`chromoseg.data.single_chromosomes.split_cells` (by cell, fixed seed, 80/10/10), or
    an explicit list of names."""
    from chromoseg.data.single_chromosomes import split_cells

    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"single-chromosome folder not found: {src}")
    names = sorted(p.stem for p in src.glob("*.npz"))
    if not names:
        raise FileNotFoundError(f"{src}: no .npz cell files")
    if cells is None or (isinstance(cells, str) and cells == "all"):
        return names
    if isinstance(cells, str):
        if cells not in CELL_SETS:
            raise ValueError(f"cells {cells!r}: expected one of {', '.join(CELL_SETS)} or a list of cell names")
        return split_cells(names)[cells]
    missing = [c for c in cells if c not in set(names)]
    if missing:
        more = " ..." if len(missing) > 5 else ""
        raise FileNotFoundError(f"{src}: no cell file for {', '.join(missing[:5])}{more}")
    return list(cells)


# ------------------------------------------------------------------------------------------ geometry
@dataclass
class _Warped:
    ink: np.ndarray  # float32 [h, w]
    mask: np.ndarray  # bool [h, w]
    dx: int  # patch's top-left relative to the placement point (integers)
    dy: int
    ends: np.ndarray  # [2, 2] relative to the placement point
    length: float


def _warp(ink: np.ndarray, mask: np.ndarray, ends: np.ndarray, s: float, e: float, theta: float, amp: float,
          s_shape: bool, smooth: float = 0.0) -> _Warped:
    """Bend (lateral displacement ``amp * sin(pi y / h)``, or ``sin(2 pi y / h)`` for an S), scale (``s``
    across, ``s * e`` along the axis) and turn (``theta`` radians, counter-clockwise on screen) a crop
    about its centre; ``smooth`` (output px) smooths the mask's outline. Returns the patch and where it
    lies relative to the crop centre's new position."""
    import cv2

    h, w = mask.shape
    cx, cy = w / 2.0, h / 2.0
    k = (2.0 if s_shape else 1.0) * math.pi / h
    c, sn = math.cos(theta), math.sin(theta)

    def forward(x, y):
        x1 = x + amp * np.sin(k * y)
        X, Y = (x1 - cx) * s, (y - cy) * s * e
        return X * c + Y * sn, -X * sn + Y * c

    # extent: the crop's outline (bend included) mapped forward
    t = np.linspace(0.0, 1.0, max(h, w) + 1)
    bx = np.concatenate([t * w, t * w, np.zeros_like(t), np.full_like(t, w)])
    by = np.concatenate([np.zeros_like(t), np.full_like(t, h), t * h, t * h])
    px, py = forward(bx, by)
    dx, dy = int(math.floor(px.min())) - 1, int(math.floor(py.min())) - 1
    W, H = int(math.ceil(px.max())) + 2 - dx, int(math.ceil(py.max())) + 2 - dy
    gx, gy = np.meshgrid(dx + np.arange(W) + 0.5, dy + np.arange(H) + 0.5)
    X = gx * c - gy * sn
    Y = gx * sn + gy * c
    ys = Y / (s * e) + cy
    xs = X / s + cx - amp * np.sin(k * ys)
    mx, my = (xs - 0.5).astype(np.float32), (ys - 0.5).astype(np.float32)
    wi = cv2.remap(ink, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    wm = cv2.remap(mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if smooth > 0:
        wm = cv2.GaussianBlur(wm, (0, 0), smooth)
    m = wm >= 0.5
    wi = np.where(m, wi, 0.0).astype(np.float32)
    ex, ey = forward(ends[:, 0], ends[:, 1])
    length = float(np.hypot(*(ends[1] - ends[0]))) * s * e
    return _Warped(wi, m, dx, dy, np.stack([ex, ey], 1), length)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(np.pad(m, r).astype(np.uint8), k).astype(bool)


def _smooth_noise(rng, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise (computed at a lower resolution for large sigma)."""
    import cv2

    H, W = shape
    f = max(1, int(sigma // 4))
    small = rng.standard_normal((max(2, H // f + 2), max(2, W // f + 2))).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / f, 0.5))
    out = cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR) if f > 1 else small[:H, :W]
    out = out[:H, :W]
    sd = float(out.std())
    return (out - out.mean()) / (sd if sd > 0 else 1.0)


def _canvas_size(size, rng) -> tuple[int, int]:
    """``(H, W)`` from an int (long side; the short side 0.75-1.0 of it, landscape or portrait at random)
    or ``(W, H)`` / ``"WxH"``."""
    if isinstance(size, str):
        size = parse_size(size)
    if isinstance(size, (tuple, list)):
        return int(size[1]), int(size[0])
    L = int(size)
    short = int(round(L * rng.uniform(0.75, 1.0)))
    return (L, short) if rng.random() < 0.5 else (short, L)


def parse_size(text: str):
    """``"800"`` -> 800 (long side); ``"640x512"`` -> ``(640, 512)`` (width, height)."""
    t = str(text).lower().strip()
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x"))
            out = (w, h)
            ok = w >= 64 and h >= 64
        else:
            out = int(t)
            ok = out >= 64
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"size {text!r}: give the long side (e.g. 800) or WxH (e.g. 640x512), each >= 64 px")
    return out


# ------------------------------------------------------------------------------------- the composer
def synth_metaphase(cell_chromosomes: Iterable, rng: np.random.Generator, size=800,
                    params: Optional[SynthParams] = None, **overrides):
    """Compose one synthetic G-banded (or, with ``stain="fluorescence"``, DAPI-like) metaphase from the
    chromosomes of one cell.

    Args:
        cell_chromosomes: :class:`Crop` objects or ``(category_id, crop)`` pairs (uint8, dark on light,
            long axis vertical).
        rng: ``numpy.random.Generator``; the output is a function of its state.
        size: canvas long side (the short side is drawn 0.75-1.0 of it), or ``(W, H)`` / ``"WxH"``.
        params / overrides: :class:`SynthParams` (fields may also be given as keywords).

    Returns ``(image uint8 [H, W], instances)``; each instance is ``dict(mask=bool [H, W],
    category_id, endpoints=[[x1, y1], [x2, y2]], source=crop name, placement="free"|"touch"|"overlap"
    (what it got), length=axis length in px)``, in drawing order (later ones lie over earlier ones).
    """
    import cv2

    p = replace(params or SynthParams(), **overrides)
    crops = [c if isinstance(c, Crop) else Crop(int(c[0]), np.asarray(c[1], np.uint8)) for c in cell_chromosomes]
    crops = [c for c in crops if c.get_mask().sum() >= 4]
    H, W = _canvas_size(size, rng)
    L = max(H, W)
    if not crops:
        return np.full((H, W), 250, np.uint8), []

    # per-cell constants: mean axis length and median ink of the crops
    ends0 = [_crop_ends(c.get_mask()) for c in crops]
    inks = [_crop_ink(c.image, c.get_mask()) for c in crops]
    lens = np.array([np.hypot(*(e[1] - e[0])) + 1.0 for e in ends0])
    mean_len = float(lens.mean())
    mean_wid = float(np.mean([c.get_mask().sum() / n for c, n in zip(crops, lens)]))
    cell_ink = float(np.median(np.concatenate([i[c.get_mask()] for i, c in zip(inks, crops)])))
    for i, c in zip(inks, crops):
        m = c.get_mask()
        if p.crop_smooth > 0:
            i[:] = cv2.GaussianBlur(i, (0, 0), p.crop_smooth)
        i[:] = np.where(m, i, 0.0)
    # stretch and scale: a cell of the typical slenderness (crop_aspect) is stretched by `elongation` and
    # gets the drawn mean length; a more condensed cell is stretched more, a more slender one less
    # (by sqrt(crop_aspect / its aspect), within 1-1.8), and every cell keeps the typical cell's mean
    # sqrt(length x width), so a condensed cell still comes out somewhat shorter and wider
    e_cell = float(np.clip(p.elongation * math.sqrt(p.crop_aspect * mean_wid / mean_len), *p.elongation_clip))
    s0 = rng.uniform(*p.length_frac) * L / math.sqrt(p.crop_aspect * p.elongation * e_cell * mean_len * mean_wid)
    k_ink = rng.uniform(*p.ink) / max(cell_ink, 1e-3)

    owner = np.full((H, W), -1, np.int32)
    count = np.zeros((H, W), np.uint8)
    absorb = np.zeros((H, W), np.float32)  # sum of -log(1 - ink): products become sums
    blocked = np.zeros((H, W), bool)

    # an interphase nucleus first (placements keep clear of it)
    nucleus_T = None
    if rng.random() < p.p_nucleus:
        nucleus_T, nmask = _nucleus(rng, (H, W), L, p)
        blocked |= nmask

    cxc, cyc = W / 2 + rng.uniform(-0.06, 0.06) * W, H / 2 + rng.uniform(-0.06, 0.06) * H
    rx, ry = rng.uniform(*p.cluster) * W / 2, rng.uniform(*p.cluster) * H / 2
    margin = max(3, p.gap)
    placed: list[dict] = []
    areas: list[int] = []
    centres: list[tuple[float, float, float]] = []
    for idx in rng.permutation(len(crops)):
        c = crops[idx]
        s = s0 * rng.uniform(*p.scale_jitter)
        amp = rng.uniform(*p.bend) * rng.choice([-1.0, 1.0]) * c.image.shape[0]
        wp = _warp(inks[idx] * k_ink, c.get_mask(), ends0[idx], s, e_cell, rng.uniform(0, 2 * math.pi), amp,
                   bool(rng.random() < p.p_s_bend), p.outline_smooth)
        wp.ink = np.where(wp.mask, np.maximum(wp.ink, p.body * cell_ink * k_ink), 0.0).astype(np.float32)
        want = "free"
        if placed:
            u = rng.random()
            want = "overlap" if u < p.p_overlap else "touch" if u < p.p_overlap + p.p_touch else "free"
        dil = _dilate(wp.mask, p.gap)
        hh, ww = wp.mask.shape
        area = int(wp.mask.sum())
        got = None
        for kind in dict.fromkeys((want, "free", "any")):
            for _ in range(p.tries if kind != "any" else 4 * p.tries):
                if kind in ("touch", "overlap"):
                    ox, oy, olen = centres[int(rng.integers(len(centres)))]
                    r = rng.uniform(0.15, 0.6) * (olen + wp.length) / 2 if kind == "overlap" else \
                        rng.uniform(0.3, 0.9) * (olen + wp.length) / 2
                    a = rng.uniform(0, 2 * math.pi)
                    x, y = ox + r * math.cos(a), oy + r * math.sin(a)
                elif kind == "free":
                    rr, a = math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
                    x, y = cxc + rx * rr * math.cos(a), cyc + ry * rr * math.sin(a)
                else:
                    x, y = rng.uniform(0, W), rng.uniform(0, H)
                X0, Y0 = int(round(x)) + wp.dx, int(round(y)) + wp.dy
                if X0 < margin or Y0 < margin or X0 + ww > W - margin or Y0 + hh > H - margin:
                    continue
                if _fits(kind, wp.mask, dil, X0, Y0, p, owner, count, blocked, areas, area):
                    got = (kind, X0, Y0, int(round(x)), int(round(y)))
                    break
            if got:
                break
        if got is None:
            continue  # the canvas is full (only with absurd sizes); reported by the count
        kind, X0, Y0, x, y = got
        if kind == "any":
            kind = _classify(wp.mask, dil, X0, Y0, p, count)
        sl = (slice(Y0, Y0 + hh), slice(X0, X0 + ww))
        owner[sl][wp.mask] = len(placed)
        count[sl] += wp.mask
        absorb[sl] += -np.log1p(-np.clip(wp.ink, 0.0, 0.95))
        full = np.zeros((H, W), bool)
        full[sl] = wp.mask
        ends = wp.ends + np.array([x, y], np.float64)
        placed.append(dict(mask=full, category_id=c.category_id, endpoints=[[float(a), float(b)] for a, b in ends],
                           source=c.name, placement=kind, length=wp.length))
        areas.append(area)
        centres.append((float(x), float(y), wp.length))

    # background and rendering
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ga = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - W / 2) * math.cos(ga) + (yy - H / 2) * math.sin(ga)) / L
    level = rng.uniform(*p.background)
    light = level * (1.0 - rng.uniform(*p.gradient) * (ramp + 0.5))
    light *= 1.0 + rng.uniform(*p.blotches) * _smooth_noise(rng, (H, W), L / 10)
    T = np.exp(-absorb)
    T *= 1.0 - rng.uniform(*p.patches) * np.clip(_smooth_noise(rng, (H, W), rng.uniform(*p.patch_size)) - 0.5, 0, 2) / 2
    if nucleus_T is not None:
        T *= nucleus_T
    T *= _debris(rng, (H, W), p)
    img = light * T
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*p.blur))
    img = img + rng.normal(0.0, rng.uniform(*p.noise), img.shape).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if p.stain == "fluorescence":
        img = to_fluorescence(img, rng, p)
    elif p.stain != "gband":
        raise ValueError(f"unknown stain {p.stain!r} (gband, fluorescence)")
    return img, placed


def to_fluorescence(img: np.ndarray, rng: np.random.Generator, p: SynthParams) -> np.ndarray:
    """A DAPI-like image from a composed G-band one: inverted (chromosomes bright, their overlaps brighter,
    a nucleus a bright blob; DAPI-bright bands are the G-dark ones), scaled so that the 97th grey
    percentile comes to ``fluor_peak`` over a ``fluor_background`` grey, plus fresh sensor noise."""
    f = 255.0 - img.astype(np.float32)
    peak = max(float(np.percentile(f, 97)), 1.0)
    bg = rng.uniform(*p.fluor_background)
    out = bg + f * ((rng.uniform(*p.fluor_peak) - bg) / peak)
    out = out + rng.normal(0.0, rng.uniform(*p.noise), out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _fits(kind, m, dil, X0, Y0, p: SynthParams, owner, count, blocked, areas, area) -> bool:
    hh, ww = m.shape
    g = p.gap
    sl = (slice(Y0, Y0 + hh), slice(X0, X0 + ww))
    if (blocked[sl] & m).any():
        return False
    occ = count[sl] > 0
    inter = int((occ & m).sum())
    if kind in ("free", "touch"):
        if inter:
            return False
        H, W = count.shape
        ys, xs = slice(max(Y0 - g, 0), min(Y0 + hh + g, H)), slice(max(X0 - g, 0), min(X0 + ww + g, W))
        d = dil[ys.start - (Y0 - g): ys.stop - (Y0 - g), xs.start - (X0 - g): xs.stop - (X0 - g)]
        near = bool((d & (count[ys, xs] > 0)).any())
        return near if kind == "touch" else not near
    if kind == "overlap" and inter == 0:
        return False
    if inter == 0:
        return True
    if (count[sl][m] >= 2).any() or inter > p.max_overlap * area:
        return False
    per = np.bincount(owner[sl][m & occ])
    return all(n <= p.max_overlap * areas[i] for i, n in enumerate(per) if n)


def _classify(m, dil, X0, Y0, p, count) -> str:
    """What a placement made without a wish turned out to be."""
    hh, ww = m.shape
    if (count[Y0:Y0 + hh, X0:X0 + ww][m] > 0).any():
        return "overlap"
    g = p.gap
    near = count[Y0 - g:Y0 + hh + g, X0 - g:X0 + ww + g] > 0  # in the canvas: placements keep a margin >= gap
    return "touch" if (dil & near).any() else "free"


def _nucleus(rng, shape, L, p: SynthParams):
    """Transmission map of a textured, irregular, round interphase nucleus (usually near the border,
    often cut by it) and its mask (placements keep clear of it)."""
    import cv2

    H, W = shape
    r = rng.uniform(*p.nucleus_radius) * L
    if rng.random() < 0.75:  # near a border, partly outside
        side = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9)
        off = rng.uniform(-0.4, 0.5) * r
        cx, cy = [(t * W, -off), (t * W, H + off), (-off, t * H), (W + off, t * H)][side]
    else:
        cx, cy = rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H
    ang = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    rad = np.ones_like(ang)
    for k in range(2, 6):
        rad += rng.normal(0, 0.06 / k * 2) * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
    ratio, rot = rng.uniform(0.65, 1.0), rng.uniform(0, math.pi)
    ex, ey = r * rad * np.cos(ang), r * ratio * rad * np.sin(ang)
    pts = np.stack([cx + ex * math.cos(rot) - ey * math.sin(rot), cy + ex * math.sin(rot) + ey * math.cos(rot)], 1)
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.5)
    tex = 1.0 + 0.08 * _smooth_noise(rng, shape, 1.5) + 0.15 * _smooth_noise(rng, shape, 5.0) \
        + 0.1 * _smooth_noise(rng, shape, 15.0)
    ink = np.clip(rng.uniform(*p.nucleus_ink) * tex, 0.0, 0.9) * soft
    return (1.0 - ink).astype(np.float32), _dilate(m.astype(bool), 4)[4:-4, 4:-4]


def _debris(rng, shape, p: SynthParams) -> np.ndarray:
    """Transmission map of small dark specks and a few small clumps (not instances)."""
    import cv2

    H, W = shape
    ink = np.zeros(shape, np.float32)
    n = int(rng.poisson(p.debris))
    for _ in range(n):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        for _ in range(1 if rng.random() < 0.8 else int(rng.integers(2, 6))):
            r = rng.uniform(0.6, 2.5)
            cv2.circle(ink, (int(x * 4), int(y * 4)), int(r * 4), float(rng.uniform(0.3, 0.8)), -1, cv2.LINE_AA,
                       shift=2)
            x, y = x + rng.normal(0, 3), y + rng.normal(0, 3)
    return 1.0 - np.clip(ink, 0.0, 0.9)


# -------------------------------------------------------------------------------------- the data set
def synth_dataset(src_dir, out_dir, n_images: int, seed: int = 0, cells: Union[str, Sequence[str], None] = "all",
                  size=800, params: Optional[SynthParams] = None, progress: bool = False, **overrides) -> dict:
    """Write ``out_dir/images/synth_00001.png ...`` and ``out_dir/synth.json`` (chromoseg's COCO format:
    RLE masks, ``bbox``, ``rbox`` (minimum-area rectangle of the mask), ``endpoints``, ``category_id``;
    each annotation also names its ``source`` crop and ``placement``; each image its ``cell``) and
    ``out_dir/synth.problems.json``.

    One metaphase per image, from one cell: the selected cells (:func:`select_cells`) in a seeded order,
    cycled. Image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the same seed gives the
    same files. An unreadable cell file or bad entry is reported and skipped; the run goes on (raises
    ``ValueError`` only when no cell at all is usable). Returns a summary dict.
    """
    import torch
    from PIL import Image
    from tqdm import tqdm

    from chromoseg.atomic import atomic_path
    from chromoseg.data.coco import CocoWriter
    from chromoseg.ops import mask_to_rbox

    src, out = Path(src_dir), Path(out_dir)
    names = select_cells(src, cells)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    p = replace(params or SynthParams(), **overrides)
    problems = ProblemLog()
    cache: dict[str, list[Crop]] = {}
    bad: set[str] = set()
    seen: set[str] = set()
    writer = CocoWriter()
    (out / "images").mkdir(parents=True, exist_ok=True)
    pos = 0
    counts = {"images": 0, "instances": 0, "free": 0, "touch": 0, "overlap": 0, "cells_used": 0}
    used: set[str] = set()
    for i in tqdm(range(int(n_images)), desc="synth", unit="img", disable=not progress):
        crops = None
        for _ in range(len(order)):
            name = order[pos % len(order)]
            pos += 1
            if name in bad:
                continue
            if name not in cache:  # a cell read again (after the cache dropped it) is not reported twice
                got = read_cell(src / f"{name}.npz", problems if name not in seen else ProblemLog(quiet=True))
                seen.add(name)
                if not got:
                    bad.add(name)
                    continue
                if len(cache) > 64:
                    cache.pop(next(iter(cache)))
                cache[name] = got
            crops = cache[name]
            break
        if crops is None:
            raise ValueError(f"{src}: none of the {len(order)} selected cells is usable ({problems.summary()})")
        used.add(name)
        rng = np.random.default_rng([int(seed), i])
        image, inst = synth_metaphase(crops, rng, size=size, params=p)
        H, W = image.shape
        fname = f"images/synth_{i + 1:05d}.png"
        with atomic_path(out / fname) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        iid = writer.add_image(fname, H, W, cell=name, synthetic=True)
        for d in inst:
            rbox = [round(float(v), 3) for v in mask_to_rbox(torch.from_numpy(d["mask"])).tolist()]
            ends = [[round(x, 2), round(y, 2)] for x, y in d["endpoints"]]
            writer.add_annotation(iid, d["category_id"], mask=d["mask"], rbox=rbox, endpoints=ends,
                                  source=d["source"], placement=d["placement"])
            counts[d["placement"]] += 1
        counts["images"] += 1
        counts["instances"] += len(inst)
        if len(inst) < len(crops):
            problems.add(f"{fname} (cell {name})", f"only {len(inst)} of {len(crops)} chromosomes fitted on the canvas",
                         action="kept", kind="not-placed")
    counts["cells_used"] = len(used)
    kind = "G-banded" if p.stain == "gband" else "DAPI-like fluorescence"
    info = {"description": f"synthetic {kind} metaphases (chromoseg data synth)", "source": str(src),
            "seed": int(seed), "cells": cells if isinstance(cells, str) or cells is None else list(cells),
            "size": list(size) if isinstance(size, tuple) else size,
            "params": {f.name: getattr(p, f.name) for f in fields(p)}}
    writer.write(out / "synth.json", info=info)
    problems.write(out / "synth.problems.json")
    counts["problems"] = len(problems)
    counts["problem_summary"] = problems.summary()
    return counts


__all__ = ["SynthParams", "Crop", "crop_mask", "read_cell", "select_cells", "synth_metaphase", "synth_dataset",
           "to_fluorescence", "parse_size", "CELL_SETS"]
