"""Importer for Pascal VOC box annotations (the CIL 24-chromosome G-band set, ``cil-gband``).

Class names are Denver names (``A1 A2 A3 B4 B5 C6 ... C12 X D13 ... G22 Y``) or plain ones (``1``, ``X``)
and map to ids 1-24. The set has boxes only: it is written as box-only (no masks), so training skips
the mask loss and evaluation gives box AP only. The image decides the size (the XML's ``<depth>3`` and
occasionally its ``<size>`` are those of the colour originals).
"""
from __future__ import annotations

import csv
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from chromoseg.data.classes import class_id
from chromoseg.data.coco import CocoWriter
from chromoseg.data.io import IMAGE_SUFFIXES, ImageReadError, read_image_for_import
from chromoseg.data.report import ProblemLog

log = logging.getLogger(__name__)


def parse_voc(xml_path) -> tuple[dict, list[dict]]:
    """``(size, objects)`` of a VOC file; ``size`` has width/height (None when absent), each object
    name and bbox ``[xmin, ymin, xmax, ymax]``. Raises ValueError naming the file when it is not VOC."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"{xml_path}: not a readable VOC XML file ({err})") from err
    if root.tag != "annotation":
        raise ValueError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>")
    size_el = root.find("size")

    def num(el, tag):
        t = el.find(tag) if el is not None else None
        return float(t.text) if t is not None and t.text and t.text.strip() else None

    size = {"width": num(size_el, "width"), "height": num(size_el, "height"), "filename": (root.findtext("filename") or "").strip()}
    objects = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        box = [num(bb, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        objects.append({"name": (obj.findtext("name") or "").strip(), "bbox": box,
                        "difficult": (obj.findtext("difficult") or "0").strip() == "1"})
    return size, objects


def _find_image(images_dir: Path, stem: str) -> Path | None:
    for suf in IMAGE_SUFFIXES:
        for cand in (images_dir / f"{stem}{suf}", images_dir / f"{stem}{suf.upper()}"):
            if cand.is_file():
                return cand
    return None


def import_voc(root, out_dir, lists=("train", "test"), images="images", annotations="annotations",
               progress: bool = True, limit: int | None = None, quiet: bool = False) -> dict:
    """Import a VOC set into ``out_dir``: one box-only JSON per list file (``train.txt`` -> ``train.json``),
    or ``all.json`` when there are no list files; ``import_report.csv``; ``problems.json``. ``limit``:
    at most that many images, spread over the list files (:func:`chromoseg.data.splits.take_spread`).
    ``quiet``: problems are not logged as they are found (still in ``problems.json`` and the summary).

    Box corners are taken as continuous pixel coordinates, as torchvision's VOC reference does (the
    one-pixel question of VOC's inclusive ``xmax`` is below the annotators' own precision).
    """
    from tqdm import tqdm

    root, out_dir = Path(root), Path(out_dir)
    images_dir, ann_dir = root / images, root / annotations
    for p in (root, images_dir, ann_dir):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such folder (expected {root}/{images} and {root}/{annotations})")
    subsets = {}
    for name in lists:
        lf = root / f"{name}.txt"
        if lf.is_file():
            subsets[name] = [ln.strip() for ln in lf.read_text().splitlines() if ln.strip()]
    if not subsets:
        subsets = {"all": sorted(p.stem for p in ann_dir.glob("*.xml"))}
    if limit is not None:
        from chromoseg.data.splits import take_spread

        kept = take_spread([(name, stem) for name, stems in subsets.items() for stem in stems], lambda it: it[0],
                           limit, groups=tuple(subsets))
        subsets = {name: [stem for n, stem in kept if n == name] for name in subsets}
    problems = ProblemLog(quiet=quiet)
    rows = []
    summary = {"images": 0, "boxes": 0, "skipped_images": 0, "skipped_boxes": 0}
    for subset, stems in subsets.items():
        writer = CocoWriter(box_only=True)
        for stem in tqdm(stems, desc=f"import VOC {subset}", disable=not progress, unit="img"):
            stem = Path(stem).stem
            xml = ann_dir / f"{stem}.xml"
            img_path = _find_image(images_dir, stem)
            if img_path is None:
                problems.add(images_dir / stem, "image listed but not found", kind="missing-image")
                summary["skipped_images"] += 1
                continue
            if not xml.is_file():
                problems.add(xml, "annotation file not found", kind="missing-annotation")
                summary["skipped_images"] += 1
                continue
            try:
                size, objects = parse_voc(xml)
                image, scale = read_image_for_import(img_path)  # scale: the file's pixel size, if any
            except ValueError as err:  # ImageReadError is a ValueError
                problems.add(getattr(err, "path", xml), getattr(err, "problem", str(err)), kind="unreadable")
                summary["skipped_images"] += 1
                continue
            H, W = image.shape
            if size["width"] and size["height"] and (int(size["width"]), int(size["height"])) != (W, H):
                problems.add(xml, f"<size> says {int(size['width'])}x{int(size['height'])} but the image is {W}x{H}; "
                             "the image's size is used", action="kept", kind="size-mismatch")
            iid = writer.add_image(str(img_path.resolve()), H, W, source_annotation=str(xml.resolve()), **scale)
            kept = 0
            for obj in objects:
                where = f"{xml} [object {obj['name']!r} {obj['bbox']}]"
                try:
                    cid = class_id(obj["name"])
                except ValueError:
                    problems.add(where, f"class name {obj['name']!r} is not one of 1-22, X, Y (Denver names allowed)", kind="label")
                    continue
                if any(v is None for v in obj["bbox"]):
                    problems.add(where, "incomplete <bndbox>", kind="bbox")
                    continue
                x0, y0, x1, y1 = obj["bbox"]
                if x1 <= x0 or y1 <= y0:
                    problems.add(where, "empty box", kind="empty-box")
                    continue
                cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
                if cx1 <= cx0 or cy1 <= cy0:
                    problems.add(where, f"box lies outside the {W}x{H} image", kind="out-of-image")
                    continue
                if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                    problems.add(where, f"box reaches outside the {W}x{H} image; clipped", action="kept", kind="clipped")
                writer.add_annotation(iid, cid, bbox=[cx0, cy0, cx1 - cx0, cy1 - cy0], difficult=int(obj["difficult"]))
                kept += 1
            summary["skipped_boxes"] += len(objects) - kept
            rows.append({"image": img_path.name, "subset": subset, "boxes": kept, "skipped_boxes": len(objects) - kept})
            summary["images"] += 1
            summary["boxes"] += kept
        writer.write(out_dir / f"{subset}.json", info={"description": f"VOC boxes from {root} ({subset})",
                                                      "source": str(root.resolve()), "subset": subset})
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "import_report.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["image", "subset", "boxes", "skipped_boxes"])
        wr.writeheader()
        wr.writerows(rows)
    problems.write(out_dir / "problems.json")
    summary["subsets"] = {k: len(v) for k, v in subsets.items()}
    summary["problems"] = problems.summary()
    from chromoseg.data.splits import empty_split_warnings

    summary["warnings"] = empty_split_warnings(summary["subsets"], limit)
    return summary
