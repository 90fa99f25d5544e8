"""chromoseg's dataset format: COCO instances JSON with optional ``rbox`` and ``endpoints`` keys.

- ``bbox`` is COCO's ``[x, y, w, h]`` in continuous pixels; ``segmentation`` is RLE or polygons;
  ``rbox`` is ``[cx, cy, w, h, angle]`` (canonical, degrees, see ``chromoseg.ops``);
  ``endpoints`` is ``[[x1, y1], [x2, y2]]``. Missing ``rbox`` / ``endpoints`` are derived from the mask.
- Box-only sets (no masks) carry ``"chromoseg": {"box_only": true}`` at the top level and
  ``"has_masks": false`` on each image; their annotations have no ``segmentation``.
- Categories are the 24 classes of :mod:`chromoseg.data.classes` with ids 1-24.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from chromoseg.data.classes import NUM_CLASSES, coco_categories
from chromoseg.data.report import ProblemLog


def encode_mask(mask: np.ndarray) -> dict:
    """COCO RLE of a boolean ``[H, W]`` mask, with ``counts`` as a str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Boolean ``[height, width]`` mask from RLE (compressed or not) or polygons."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        if tuple(rle["size"]) != (height, width):
            raise ValueError(f"RLE size {tuple(rle['size'])} does not match the image ({height}, {width})")
    else:
        raise ValueError(f"unknown segmentation type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, w, h]`` of a boolean mask's pixels (pixel squares, continuous coordinates)."""
    m = np.asarray(mask)
    rows = np.flatnonzero(m.any(1))  # (cheaper than every pixel's index on a full-image mask)
    if len(rows) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    cols = np.flatnonzero(m.any(0))
    x0, y0 = float(cols[0]), float(rows[0])
    return [x0, y0, float(cols[-1]) + 1.0 - x0, float(rows[-1]) + 1.0 - y0]


def derive_geometry(mask: np.ndarray) -> tuple[list[float], list[list[float]]]:
    """``(rbox, endpoints)`` of a boolean mask: minimum-area rectangle and skeleton ends."""
    import torch

    from chromoseg.ops import mask_endpoints, mask_to_rbox

    rbox = mask_to_rbox(torch.from_numpy(np.ascontiguousarray(mask)))
    ends = mask_endpoints(mask)
    ends = ends.tolist() if hasattr(ends, "tolist") else list(ends)
    return [round(float(v), 3) for v in rbox.tolist()], [[round(float(x), 2), round(float(y), 2)] for x, y in ends]


def _atomic_write_json(obj, path: Path) -> None:
    from chromoseg.atomic import write_text

    write_text(path, json.dumps(obj, separators=(",", ":")))


class CocoWriter:
    """Builds a dataset in chromoseg's format and writes it atomically.

    >>> w = CocoWriter(); i = w.add_image("a.tif", 512, 640)
    >>> w.add_annotation(i, 7, mask=m)  # bbox, area, rbox and endpoints derived from the mask
    >>> w.write("train.json")
    """

    def __init__(self, box_only: bool = False):
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.box_only = box_only
        self._sizes: dict[int, tuple[int, int]] = {}

    def add_image(self, file_name: str, height: int, width: int, **extra) -> int:
        image_id = len(self.images) + 1
        entry = {"id": image_id, "file_name": str(file_name), "height": int(height), "width": int(width)}
        if self.box_only:
            entry["has_masks"] = False
        entry.update(extra)
        self.images.append(entry)
        self._sizes[image_id] = (int(height), int(width))
        return image_id

    def add_annotation(self, image_id: int, category_id: int, mask=None, bbox=None, rbox=None,
                       endpoints=None, score=None, **extra) -> int:
        """Add one instance; with a mask, missing ``bbox``, ``area``, ``rbox`` and ``endpoints`` are derived."""
        if not 1 <= int(category_id) <= NUM_CLASSES:
            raise ValueError(f"category id {category_id} outside 1-{NUM_CLASSES}")
        ann = {"id": len(self.annotations) + 1, "image_id": int(image_id), "category_id": int(category_id),
               "iscrowd": int(extra.pop("iscrowd", 0))}
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != self._sizes[image_id]:
                raise ValueError(f"mask shape {mask.shape} != image size {self._sizes[image_id]}")
            if not mask.any():
                raise ValueError("empty mask")
            ann["segmentation"] = encode_mask(mask)
            ann["area"] = int(mask.sum())
            ann["bbox"] = mask_bbox(mask) if bbox is None else [float(v) for v in bbox]
            if rbox is None or endpoints is None:
                r, e = derive_geometry(mask)
                rbox = r if rbox is None else rbox
                endpoints = e if endpoints is None else endpoints
        else:
            if bbox is None:
                raise ValueError("an annotation needs a mask or a bbox")
            ann["bbox"] = [float(v) for v in bbox]
            ann["area"] = float(bbox[2] * bbox[3])
        if rbox is not None:
            ann["rbox"] = [float(v) for v in rbox]
        if endpoints is not None:
            ann["endpoints"] = [[float(x), float(y)] for x, y in endpoints]
        if score is not None:
            ann["score"] = float(score)
        ann.update(extra)
        self.annotations.append(ann)
        return ann["id"]

    def to_dict(self, info: dict | None = None) -> dict:
        out = {
            "info": dict(info or {}),
            "images": self.images,
            "annotations": self.annotations,
            "categories": coco_categories(),
        }
        if self.box_only:
            out["chromoseg"] = {"box_only": True}
        return out

    def write(self, path, info: dict | None = None) -> Path:
        path = Path(path)
        _atomic_write_json(self.to_dict(info), path)
        return path


def is_box_only(dataset: dict, image: dict | None = None) -> bool:
    """True when the set (or this image) has boxes but no masks."""
    if image is not None and "has_masks" in image:
        return not bool(image["has_masks"])
    return bool(dataset.get("chromoseg", {}).get("box_only", False))


def load_coco(path, problems: ProblemLog | None = None, check_files: bool = False) -> dict:
    """Load and check a dataset JSON; bad annotations are left out and reported in ``problems``.

    Checks: the JSON's structure, category ids 1-24, boxes that are empty or outside their image,
    annotations of unknown images, and (``check_files``) that image files exist. Raises ``ValueError``
    naming the file when the JSON itself is unusable.
    """
    path = Path(path)
    problems = problems if problems is not None else ProblemLog()
    if not path.is_file():
        raise ValueError(f"{path}: no such dataset file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    images = {}
    for img in data["images"]:
        try:
            iid, h, w = int(img["id"]), int(img["height"]), int(img["width"])
            name = str(img["file_name"])
        except (KeyError, TypeError, ValueError):
            problems.add(path, f"image entry {str(img)[:80]} lacks id/file_name/height/width", kind="image-entry")
            continue
        if h <= 0 or w <= 0:
            problems.add(f"{path} [{name}]", f"image size {w}x{h} is not positive", kind="image-entry")
            continue
        if check_files and not resolve_image_path(name, path.parent).is_file():
            problems.add(f"{path} [{name}]", "image file not found", kind="missing-image")
            continue
        images[iid] = img
    kept = []
    for ann in data["annotations"]:
        iid = ann.get("image_id")
        img = images.get(iid)
        where = f"{path} [annotation {ann.get('id')}, image {img['file_name'] if img else iid}]"
        if img is None:
            problems.add(where, "refers to an unknown or skipped image", kind="unknown-image")
            continue
        cat = ann.get("category_id")
        if not isinstance(cat, int) or not 1 <= cat <= NUM_CLASSES:
            problems.add(where, f"category id {cat!r} outside 1-{NUM_CLASSES}", kind="label")
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(np.isfinite(v) for v in bbox)):
            problems.add(where, f"bbox {bbox!r} is not [x, y, w, h]", kind="bbox")
            continue
        x, y, bw, bh = bbox
        if bw <= 0 or bh <= 0:
            problems.add(where, f"empty bbox {bbox}", kind="empty-box")
            continue
        if x >= img["width"] or y >= img["height"] or x + bw <= 0 or y + bh <= 0:
            problems.add(where, f"bbox {bbox} lies outside the {img['width']}x{img['height']} image", kind="out-of-image")
            continue
        seg = ann.get("segmentation")
        if "segmentation" in ann and not seg:
            problems.add(where, "empty segmentation", kind="empty-mask")
            continue
        if isinstance(seg, dict) and [int(v) for v in seg.get("size", [])] != [img["height"], img["width"]]:
            problems.add(where, f"mask size {seg.get('size')} differs from the image's {img['height']}x{img['width']}",
                         kind="mask-size")
            continue
        rbox = ann.get("rbox")
        if rbox is not None and not (len(rbox) == 5 and all(np.isfinite(v) for v in rbox) and rbox[2] > 0 and rbox[3] > 0):
            problems.add(where, f"rbox {rbox} is not [cx, cy, w, h, angle] with positive sides; derived again",
                         action="kept", kind="rbox")
            ann = {k: v for k, v in ann.items() if k != "rbox"}
        kept.append(ann)
    data["images"] = list(images.values())
    data["annotations"] = kept
    data.setdefault("categories", coco_categories())
    return data


class ImageIndex:
    """Finds a dataset's image id from a file name: exactly first, then by a unique base name
    (``a/b/img1.png`` matches ``img1.png`` when only one image has that base name)."""

    def __init__(self, images):
        self.ids = set()
        self._exact: dict[str, int] = {}
        self._base: dict[str, int | None] = {}
        for img in images:
            iid, fn = img["id"], str(img.get("file_name", ""))
            self.ids.add(iid)
            if not fn:
                continue
            self._exact.setdefault(fn, iid)
            base = os.path.basename(fn.replace("\\", "/"))
            self._base[base] = None if base in self._base else iid  # None: ambiguous

    def by_name(self, name: str) -> int | None:
        if name in self._exact:
            return self._exact[name]
        return self._base.get(os.path.basename(name.replace("\\", "/")))

    def image_of(self, det: dict) -> int | None:
        """The image of a result entry. Its ``file_name`` decides alone when present (``chromoseg
        predict`` numbers images in its own order); else an ``image_id`` of the set, or a string
        ``image_id`` that names a file. None when the image is not in the set."""
        fname = det.get("file_name")
        if isinstance(fname, str) and fname:
            return self.by_name(fname)
        iid = det.get("image_id")
        if isinstance(iid, bool):
            return None
        if isinstance(iid, float) and iid.is_integer():
            iid = int(iid)
        if isinstance(iid, int):
            return iid if iid in self.ids else None
        if isinstance(iid, str) and iid:
            found = self.by_name(iid)
            if found is not None:
                return found
            if iid.strip().lstrip("-").isdigit() and int(iid) in self.ids:
                return int(iid)
        return None


def resolve_image_path(file_name: str, root) -> Path:
    """An image's path: absolute names as they are, relative ones against ``root``."""
    p = Path(file_name)
    return p if p.is_absolute() else Path(root) / p


def split_dataset(path, out_a, out_b, fraction: float, seed: int = 0) -> tuple[int, int]:
    """Split a dataset JSON by image: a seeded random ``fraction`` of its images (at least one) with
    their annotations into ``out_b``, the rest into ``out_a``; relative image paths are rewritten for
    the new files' folders. Returns the two image counts."""
    path, out_a, out_b = Path(path), Path(out_a), Path(out_b)
    data = json.loads(path.read_text()) if path.is_file() else None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a dataset JSON")
    images = data["images"]
    if len(images) < 2:
        raise ValueError(f"{path}: {len(images)} image(s), nothing to split")
    n_b = min(max(1, round(fraction * len(images))), len(images) - 1)
    order = np.random.default_rng(seed).permutation(len(images))
    in_b = {images[i]["id"] for i in order[:n_b]}
    for out, keep in ((out_a, lambda i: i not in in_b), (out_b, lambda i: i in in_b)):
        part = dict(data)
        part["images"] = []
        for im in images:
            if keep(im["id"]):
                src = resolve_image_path(im["file_name"], path.parent)
                name = src if src.is_absolute() else Path(os.path.relpath(src, out.parent))
                part["images"].append(dict(im, file_name=str(name)))
        part["annotations"] = [a for a in data["annotations"] if keep(a["image_id"])]
        part["info"] = dict(data.get("info", {}), split=f"{path.name}: seed {seed}, fraction {fraction}")
        _atomic_write_json(part, out)
    return len(images) - n_b, n_b
