"""``chromoseg data show``: draw a set's annotations over its images, to PNG files a person opens.
Here, not in ``chromoseg.data``, because it draws with this package's overlay (``data`` imports
nothing of ``karyotype``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from chromoseg.data.coco import decode_mask, is_box_only, load_coco, resolve_image_path
from chromoseg.data.io import ImageReadError, read_image, to_uint8
from chromoseg.data.report import ProblemLog


def show_dataset(annotations, out_dir, limit: int | None = None, names: list[str] | None = None,
                 image_root=None, progress: bool = True) -> tuple[list[Path], ProblemLog]:
    """Write ``out_dir/<image stem>.png`` for each image (or the first ``limit``, or those ``names``):
    masks filled in their class colour, rotated boxes, endpoints and class labels (the overlay of
    :mod:`chromoseg.karyotype.overlay`), under a caption naming the image, its karyotype and any class
    the importer could not resolve. A set annotated without classes (``"chromoseg": {"classes_known":
    false}``, or annotations with ``"class_known": false``, e.g. the LabelMe import of BioImLab) is drawn
    with a hue per chromosome and no class labels (its category 1 is a placeholder, not chromosome 1),
    and the caption says so. Returns the written paths and the problems met."""
    from tqdm import tqdm

    from .layout import save_png
    from .overlay import render_overlay

    path = Path(annotations)
    problems = ProblemLog()
    coco = load_coco(path, problems)
    root = Path(image_root) if image_root else path.parent
    images = sorted(coco["images"], key=lambda im: im["id"])
    if names:
        wanted = set(names)
        images = [im for im in images if Path(im["file_name"]).name in wanted or Path(im["file_name"]).stem in wanted]
    if limit:
        images = images[:limit]
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    set_classes = (coco.get("chromoseg") or {}).get("classes_known", True) is not False
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for info in tqdm(images, desc="draw", disable=not progress, unit="img"):
        img_path = resolve_image_path(info["file_name"], root)
        try:
            grey = to_uint8(read_image(img_path))
        except ImageReadError as err:
            problems.add(err.path, err.problem, kind="unreadable")
            continue
        h, w = grey.shape
        box_only = is_box_only(coco, info)
        mine = anns.get(info["id"], [])
        classes = set_classes and not any(a.get("class_known") is False for a in mine)
        insts = []
        for a in mine:
            inst = {"category_id": a["category_id"], "bbox": a.get("bbox"), "rbox": a.get("rbox"),
                    "endpoints": a.get("endpoints"), "score": a.get("score")}
            if not box_only and a.get("segmentation"):
                inst["mask"] = decode_mask(a["segmentation"], h, w)
            insts.append(inst)
        picture = render_overlay(grey, insts, classes=classes)
        caption = [f"{Path(info['file_name']).name}: {len(insts)} instances"
                   + (f", karyotype {info['karyotype']}" if info.get("karyotype") else "")
                   + (" (boxes only)" if box_only else "")
                   + ("" if classes else " (annotated without classes: a colour per chromosome)")]
        if info.get("unresolved_classes"):
            caption.append("unresolved: " + "; ".join(f"{k}: {v}" for k, v in info["unresolved_classes"].items())[:150])
        out = save_png(out_dir / f"{Path(info['file_name']).stem}.png", add_caption(picture, caption))
        written.append(out)
    return written, problems


def add_caption(picture: np.ndarray, lines: list[str], height: int = 18) -> np.ndarray:
    """The RGB picture with a white band of text lines above it."""
    import cv2

    band = np.full((height * len(lines) + 6, picture.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, picture])
