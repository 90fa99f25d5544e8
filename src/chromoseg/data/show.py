"""``chromoseg data show``: draw a set's annotations over its images, to PNG files a person opens."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from chromoseg.data.coco import decode_mask, is_box_only, load_coco, resolve_image_path
from chromoseg.data.io import ImageReadError, read_image, to_uint8
from chromoseg.data.report import ProblemLog


def show_dataset(annotations, out_dir, limit: int | None = None, names: list[str] | None = None,
                 image_root=None, progress: bool = True) -> tuple[list[Path], ProblemLog]:
    """Write ``out_dir/<image stem>.png`` for each image (or the first ``limit``, or those ``names``):
    masks filled in their class colour, rotated boxes, endpoints and class labels; flagged instances
    in red. Returns the written paths and the problems met."""
    import cv2
    from tqdm import tqdm

    from chromoseg.viz import add_caption, draw_instances

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
        insts = []
        for a in anns.get(info["id"], []):
            inst = {"category_id": a["category_id"], "bbox": a.get("bbox"), "rbox": a.get("rbox"),
                    "endpoints": a.get("endpoints"), "flag": a.get("unresolved"), "score": a.get("score")}
            if not box_only and a.get("segmentation"):
                inst["mask"] = decode_mask(a["segmentation"], h, w)
            insts.append(inst)
        picture = draw_instances(grey, insts, draw_bbox=box_only)
        caption = [f"{Path(info['file_name']).name}: {len(insts)} instances"
                   + (f", karyotype {info['karyotype']}" if info.get("karyotype") else "")
                   + (" (boxes only)" if box_only else "")]
        if info.get("unresolved_classes"):
            caption.append("unresolved: " + "; ".join(f"{k}: {v}" for k, v in info["unresolved_classes"].items())[:150])
        picture = add_caption(picture, caption)
        out = out_dir / f"{Path(info['file_name']).stem}.png"
        cv2.imwrite(str(out), picture)
        written.append(out)
    return written, problems
