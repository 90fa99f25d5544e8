"""Pseudo-masks for box-only sets: each box's chromosome taken from the image's own pixels.

The CIL G-band set has axis-aligned boxes and classes but no masks. Inside a box a G-banded chromosome
is darker than the clean background around it, so its pixels can be found by a threshold:

1. the image is turned bright-on-dark (inverted when ``dark=True``), optionally smoothed (``sigma``);
2. per box, the threshold is ``0.75 * (the box's own Otsu threshold) + 0.25 * (the whole image's)``
   (pale bands of a chromosome fall below the image's threshold alone; the box's alone follows a box
   that holds little background too far into the chromosome);
3. the pixels above it inside the box (grown by ``margin`` = 2 px), closed (3x3) and with holes filled, are the
   box's candidates;
4. a pixel claimed by several boxes goes to the box it lies deepest in (depth = distance to the
   nearest box edge divided by that side's length, so 0.5 is a box's centre line); it is shared when its
   depth in a second box is at least ``share`` = 0.5 times the deepest (two chromosomes crossing: each keeps
   its whole outline, as in the M-FISH and BioImLab masks);
5. each box keeps the connected component (8-connected) of its pixels that covers most of the box's
   central region, or the largest one when none does.

``measure_pseudo_masks`` scores the method where the truth is known (a set with masks: its boxes are
derived from the masks, pseudo-masks are made from them and compared, per instance, by IoU). The
defaults were chosen that way on six validation images each of M-FISH and BioImLab (fluorescence,
``dark=False``); ``benchmarks/results/pseudo_masks.md`` has the figures, G-band included.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    values = values.ravel()
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    return float(threshold_otsu(values))


def _box_depth(shape, box) -> tuple[slice, slice, np.ndarray]:
    """Slices of the integer pixel window of ``box`` (x0, y0, x1, y1, continuous) and each pixel's
    relative depth in it (min over the four edges of distance / side length; 0.5 on the centre line)."""
    H, W = shape
    x0, y0, x1, y1 = box
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), W), min(int(np.ceil(y1)), H)
    xs = np.arange(c0, c1) + 0.5
    ys = np.arange(r0, r1) + 0.5
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    dx = np.minimum(xs - x0, x1 - xs) / bw
    dy = np.minimum(ys - y0, y1 - ys) / bh
    depth = np.minimum(dy[:, None], dx[None, :])
    return slice(r0, r1), slice(c0, c1), depth


def pseudo_masks(image: np.ndarray, boxes, dark: bool = True, margin: float = 2.0,
                 share: float = 0.5, sigma: float = 0.0, mix: float = 0.75) -> list[np.ndarray]:
    """Boolean ``[H, W]`` masks, one per box, of the chromosome pixels inside each box.

    ``image``: 2-D grey (any integer or float type); ``boxes``: ``[N, 4]`` (x0, y0, x1, y1) in pixels,
    continuous coordinates; ``dark``: chromosomes darker than the background (G-band; False for
    fluorescence); ``mix``: weight of the box's own Otsu threshold against the image's (step 2).
    Rules in the module docstring. A box whose window holds no candidate pixel gets an
    empty mask (the caller decides what to do with it)."""
    from scipy import ndimage as ndi
    from skimage.filters import gaussian

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D grey, got shape {img.shape}")
    if dark:
        img = img.max() - img
    img = gaussian(img, sigma=sigma, preserve_range=True) if sigma > 0 else img
    H, W = img.shape
    t_img = _otsu(img)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    # candidates per box, and each pixel's deepest claim (depth, box) over the boxes that claim it
    cands, windows = [], []
    best = np.zeros((H, W), np.float32)
    owner = np.full((H, W), -1, np.int32)
    close = np.ones((3, 3), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        rs, cs, depth = _box_depth((H, W), (x0 - margin, y0 - margin, x1 + margin, y1 + margin))
        win = img[rs, cs]
        if win.size == 0:
            cands.append(None)
            windows.append((rs, cs, depth))
            continue
        t = (1.0 - mix) * t_img + mix * _otsu(win)
        fg = ndi.binary_fill_holes(ndi.binary_closing(win > t, close, border_value=0) | (win > t))
        d = np.where(fg, depth, 0.0).astype(np.float32)
        cands.append(fg)
        windows.append((rs, cs, depth))
        b, o = best[rs, cs], owner[rs, cs]
        better = fg & (d > b)
        b[better] = d[better]
        o[better] = i
    masks = []
    for i in range(n):
        m = np.zeros((H, W), bool)
        fg = cands[i]
        if fg is None or not fg.any():
            masks.append(m)
            continue
        rs, cs, depth = windows[i]
        mine = fg & ((owner[rs, cs] == i) | (np.where(fg, depth, 0.0) >= share * best[rs, cs]))
        lab, k = ndi.label(mine, structure=np.ones((3, 3), bool))
        if k > 1:
            central = depth >= 0.25
            cover = ndi.sum_labels(central & mine, lab, index=np.arange(1, k + 1))
            if cover.max() <= 0:
                cover = ndi.sum_labels(mine, lab, index=np.arange(1, k + 1))
            mine = lab == (int(np.argmax(cover)) + 1)
        m[rs, cs] = mine
        masks.append(m)
    return masks


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def add_pseudo_masks(dataset_json, out_json, dark: bool = True, progress: bool = True, **kw) -> dict:
    """Write ``out_json``: the box-only set ``dataset_json`` with a pseudo-mask, rotated box and endpoints
    per box (``pseudo_mask: 1`` on each annotation, the VOC box kept as ``source_bbox``). A box whose
    pseudo-mask has under 20 px is left out and listed in ``OUT.problems.json`` and the returned summary
    (the image keeps its other chromosomes)."""
    from tqdm import tqdm

    from chromoseg.data.coco import _atomic_write_json, derive_geometry, encode_mask, load_coco, mask_bbox, resolve_image_path
    from chromoseg.data.io import read_image
    from chromoseg.data.report import ProblemLog

    problems = ProblemLog()
    ds = load_coco(dataset_json, problems)
    root = Path(dataset_json).parent
    by_image: dict[int, list[dict]] = {}
    for a in ds["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out_anns, kept_images = [], []
    summary = {"images": 0, "boxes": 0, "masks": 0, "dropped": 0, "skipped_images": 0}
    for im in tqdm(ds["images"], desc="pseudo-masks", disable=not progress, unit="img"):
        anns = by_image.get(im["id"], [])
        try:
            image = read_image(resolve_image_path(im["file_name"], root))
        except (ValueError, FileNotFoundError) as err:
            problems.add(im["file_name"], str(err), kind="unreadable")
            summary["skipped_images"] += 1
            continue
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        masks = pseudo_masks(image, boxes, dark=dark, **kw) if anns else []
        name = im["file_name"]
        if not Path(name).is_absolute():  # relative to the new file's folder
            name = os.path.relpath(resolve_image_path(name, root).resolve(), Path(out_json).parent.resolve())
        kept_images.append(dict(im, file_name=name, has_masks=True))
        summary["images"] += 1
        for a, m in zip(anns, masks):
            summary["boxes"] += 1
            if m.sum() < 20:
                problems.add(f"{im['file_name']} [annotation {a['id']}]", "no chromosome pixels found in the box",
                             kind="empty-pseudo-mask")
                summary["dropped"] += 1
                continue
            rbox, ends = derive_geometry(m)
            b = dict(a)
            b.update(segmentation=encode_mask(m), bbox=mask_bbox(m), area=float(m.sum()), rbox=rbox,
                     endpoints=ends, pseudo_mask=1, source_bbox=a["bbox"])
            out_anns.append(b)
            summary["masks"] += 1
    info = dict(ds.get("info", {}))
    info["pseudo_masks"] = f"chromoseg.data.pseudo_masks from {Path(dataset_json).name} (dark={dark})"
    out = {"info": info, "images": kept_images, "annotations": out_anns, "categories": ds["categories"]}
    out_json = Path(out_json)
    _atomic_write_json(out, out_json)
    problems.write(out_json.with_suffix(".problems.json"))
    return summary


def measure_pseudo_masks(dataset_json, dark: bool, invert_note: str = "", limit: int | None = None,
                         progress: bool = True, **kw) -> dict:
    """Mean per-instance IoU of pseudo-masks made from the axis-aligned boxes of a set **with** masks
    against those masks (``dark``: the images' polarity). Returns ``{"instances", "mean_iou",
    "iou_ge_0.5", "iou_ge_0.75", "images"}``."""
    from tqdm import tqdm

    from chromoseg.data.coco import decode_mask, load_coco, mask_bbox, resolve_image_path
    from chromoseg.data.io import read_image

    ds = load_coco(dataset_json)
    root = Path(dataset_json).parent
    by_image: dict[int, list[dict]] = {}
    for a in ds["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = ds["images"][:limit] if limit else ds["images"]
    ious = []
    for im in tqdm(images, desc="measure pseudo-masks", disable=not progress, unit="img"):
        anns = [a for a in by_image.get(im["id"], []) if a.get("segmentation")]
        if not anns:
            continue
        image = read_image(resolve_image_path(im["file_name"], root))
        truth = [decode_mask(a["segmentation"], im["height"], im["width"]) for a in anns]
        boxes = []
        for m in truth:
            x, y, w, h = mask_bbox(m)
            boxes.append([x, y, x + w, y + h])
        for m, p in zip(truth, pseudo_masks(image, boxes, dark=dark, **kw)):
            ious.append(mask_iou(m, p))
    ious = np.asarray(ious)
    return {"images": len(images), "instances": int(len(ious)), "mean_iou": float(ious.mean()) if len(ious) else 0.0,
            "iou_ge_0.5": float((ious >= 0.5).mean()) if len(ious) else 0.0,
            "iou_ge_0.75": float((ious >= 0.75).mean()) if len(ious) else 0.0}
