"""Importer for LabelMe JSON polygons (the BioImLab Q-band set, ``bioimlab-qband``).

Each ``*.json`` holds one image, embedded (``imageData``, base64) or beside it (``imagePath``), and
``shapes``: one polygon per chromosome (``shape_type`` ``polygon``; other shapes are reported and
left out). The polygons carry no class: every instance is written with ``category_id`` 1 as a
placeholder and ``"class_known": false``, and the set with ``"chromoseg": {"classes_known": false}``,
so that evaluation is binary (class-agnostic) only and training can leave the class loss out.
Overlapping chromosomes each keep their full outline.

Embedded images are written once as PNG into ``OUT/images/`` (grey: LabelMe stores RGB with three
equal channels); an image beside its JSON is referred to where it is.

Split (``--split`` name, default ``bioimlab-qband``): by case, the number in ``original_N[a-c]``
(the letters are cells of one case), ``chromoseg/data/splits/bioimlab-qband.json``.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import numpy as np

from chromoseg.data.coco import CocoWriter
from chromoseg.data.report import ProblemLog

log = logging.getLogger(__name__)

CASE_RE = re.compile(r"(\d+)[a-z]?$", re.I)


def case_of(stem: str) -> str | None:
    """The case number of a BioImLab file stem (``original_104b`` -> ``104``)."""
    m = CASE_RE.search(stem)
    return m.group(1) if m else None


def polygon_mask(points, height: int, width: int) -> np.ndarray:
    """Filled polygon (LabelMe pixel coordinates, x right, y down; a vertex at a pixel's centre at
    ``(j + 0.5, i + 0.5)`` in chromoseg's continuous frame) as a bool mask."""
    import cv2

    pts = np.asarray(points, np.float64).reshape(-1, 2)
    m = np.zeros((height, width), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def _image_of(doc: dict, json_path: Path, images_dir: Path) -> tuple[Path, np.ndarray, dict]:
    """The image of a LabelMe file (the file beside it, else the embedded one saved as a PNG), its grey
    array, and what its COCO record keeps of the file: ``pixel_size_um`` where the file beside records one."""
    from PIL import Image

    from chromoseg.data.io import read_image_for_import

    beside = json_path.parent / str(doc.get("imagePath") or "")
    if doc.get("imagePath") and beside.is_file():
        return (beside, *read_image_for_import(beside))
    data = doc.get("imageData")
    if not data:
        raise ValueError("no embedded image (imageData) and no image file beside it")
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        arr = np.array(im.convert("L"))
    out = images_dir / f"{json_path.stem}.png"
    if not out.is_file():
        from chromoseg.atomic import atomic_path

        with atomic_path(out) as tmp:
            Image.fromarray(arr).save(tmp, format="PNG")
    return out, arr, {}


def import_labelme(source, out_dir, split: str | None = "bioimlab-qband", limit: int | None = None,
                   progress: bool = True, quiet: bool = False) -> dict:
    """Import a folder of LabelMe JSON files (searched recursively) into ``out_dir``: ``all.json``
    and, with a shipped ``split``, ``train/val/test.json`` (each written, empty or not);
    ``import_report.csv`` (a row per file); ``problems.json``. ``limit``: at most that many files,
    spread over the splits (:func:`chromoseg.data.splits.take_spread`). ``quiet``: problems are not
    logged as they are found. Returns a summary; its ``warnings`` name any split left without images."""
    import csv

    from tqdm import tqdm

    from chromoseg.data.splits import SPLIT_NAMES, empty_split_warnings, load_split, split_of, take_spread

    source, out_dir = Path(source), Path(out_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder")
    files = sorted(source.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{source}: no LabelMe .json files")
    problems = ProblemLog(quiet=quiet)
    split_def = load_split(split) if split else None
    files = take_spread(files, lambda f: split_of(split_def, case_of(f.stem) or "") if split_def else None, limit)
    rows = []
    writers = {"all": CocoWriter(), **({s: CocoWriter() for s in SPLIT_NAMES} if split_def else {})}
    n_inst = 0
    for path in tqdm(files, desc="import LabelMe", unit="img", disable=not progress):
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or "shapes" not in doc:
                raise ValueError("not a LabelMe file (no 'shapes')")
            img_path, arr, scale = _image_of(doc, path, out_dir / "images")
        except (OSError, ValueError) as err:
            problems.add(path, str(err), kind="unreadable")
            rows.append({"file": path.name, "case": case_of(path.stem) or "", "split": "", "image": "",
                         "instances": "", "left_out_shapes": "", "status": "skipped (unreadable)"})
            continue
        h, w = arr.shape
        masks = []
        n_left_out = 0
        for k, shp in enumerate(doc["shapes"]):
            if shp.get("shape_type", "polygon") != "polygon" or len(shp.get("points") or []) < 3:
                problems.add(path, f"shape {k} ({shp.get('shape_type')}, {len(shp.get('points') or [])} points) is not "
                                   "a polygon: left out", kind="shape")
                n_left_out += 1
                continue
            m = polygon_mask(shp["points"], h, w)
            if m.sum() < 10:
                problems.add(path, f"shape {k}: polygon covers under 10 pixels: left out", kind="tiny")
                n_left_out += 1
                continue
            masks.append(m)
        case = case_of(path.stem)
        targets = ["all"]
        if split_def:
            s = split_of(split_def, case) if case else None
            if s is None:
                problems.add(path, f"case {case!r} is in no split of {split}: only in all.json", action="kept",
                             kind="split")
            else:
                targets.append(s)
        for t in targets:
            wr = writers[t]
            iid = wr.add_image(str(img_path.resolve()), h, w, case=case, **scale)
            for m in masks:
                wr.add_annotation(iid, 1, mask=m, class_known=False)
        n_inst += len(masks)
        rows.append({"file": path.name, "case": case or "", "split": targets[1] if len(targets) > 1 else "",
                     "image": str(img_path), "instances": len(masks), "left_out_shapes": n_left_out, "status": "imported"})
    from chromoseg.atomic import atomic_path, write_text

    info = {"source": str(source), "format": "labelme", "classes_known": False}
    written = {}
    for name, wr in writers.items():  # every split's file, an empty one too: no stale file of an earlier import
        d = wr.to_dict(info)
        d.setdefault("chromoseg", {})["classes_known"] = False
        written[name] = write_text(out_dir / f"{name}.json", json.dumps(d, separators=(",", ":")))
    with atomic_path(out_dir / "import_report.csv") as tmp, open(tmp, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["file", "case", "split", "image", "instances", "left_out_shapes", "status"])
        wr.writeheader()
        wr.writerows(rows)
    problems.write(out_dir / "problems.json")
    splits = {k: len(w.images) for k, w in writers.items()}
    return {"images": len(writers["all"].images), "instances": n_inst, "files": {k: str(v) for k, v in written.items()},
            "splits": splits, "problems": problems.summary(),
            "warnings": empty_split_warnings({k: n for k, n in splits.items() if k in SPLIT_NAMES}, limit)}
