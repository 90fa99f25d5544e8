"""Export a reviewed predict folder into ``DIR/reviewed/`` (every file written atomically):

- ``results.json``: the corrected COCO results of every metaphase (as ``chromoseg predict`` writes
  them; an edited chromosome carries ``review``: its origin, who set its class, the model's class; one
  the not-a-chromosome rule leaves out carries ``not_chromosome``, why, as the review page judges it);
- ``images.json``: the images with their corrected karyotype line, flags and reviewed mark;
- per metaphase ``<stem>.karyogram.png`` (titled with the reviewer), ``<stem>.overlay.png`` and
  ``<stem>.labels.tif``; ``report.html`` / ``report.csv`` for the set;
- ``dataset.json``: the metaphases marked reviewed as a chromoseg COCO dataset (absolute image paths,
  RLE masks, rotated boxes and endpoints from the masks; without what the not-a-chromosome rule leaves
  out) that ``chromoseg train --extra-train`` and
  :class:`chromoseg.data.dataset.ChromosomeDataset` read;
- ``export.json``: what was written, when and by whom.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chromoseg.review.render import Renderer, counting_instances, karyotype_view
from chromoseg.review.store import NotFound, ReviewStore, now_iso


def _result_entry(img: dict, inst: dict, not_chromosome: str | None = None) -> dict:
    out = {"image_id": img["id"], "file_name": img["file_name"], "category_id": int(inst.get("category_id") or 0),
           "score": inst.get("score", 1.0), "segmentation": inst.get("segmentation"), "bbox": inst.get("bbox"),
           "rbox": inst.get("rbox"), "endpoints": inst.get("endpoints"), "area": inst.get("area")}
    if inst.get("top_end") is not None:  # a reviewer's orientation: chromoseg karyogram --results reads it
        out["top_end"] = inst["top_end"]
    if inst.get("class_scores") is not None and not inst.get("class_by"):
        out["class_scores"] = inst["class_scores"]
    review = {k: inst[k] for k in ("origin", "class_by", "class_at", "model_category_id", "joined_from", "split_from",
                                   "edited_by", "edited_at", "turned_by", "turned_at", "drawn_with")
              if inst.get(k) is not None}
    if review and review != {"origin": "model"}:
        out["review"] = review
    if not_chromosome:  # the rule's verdict now, not the one results.json had (a reviewer may have set a class)
        out["not_chromosome"] = not_chromosome
    return out


def label_image(masks: list[np.ndarray], shape) -> np.ndarray:
    """uint16 labels: k = the k-th instance; where instances overlap the earlier one keeps the pixel."""
    lab = np.zeros(shape, np.uint16)
    for k in range(len(masks), 0, -1):
        lab[masks[k - 1]] = k
    return lab


def export_reviewed(store: ReviewStore, renderer: Renderer | None = None, out=None, user: str | None = None) -> dict:
    """Write the exports (see the module docstring) into ``out`` (default ``DIR/reviewed``); returns a
    summary: ``out``, ``files`` (relative to DIR where inside it), ``images``, ``reviewed``,
    ``dataset_images``, ``dataset_annotations``, ``problems``."""
    import tifffile

    from chromoseg.atomic import atomic_path, write_text
    from chromoseg.data.classes import coco_categories
    from chromoseg.data.coco import CocoWriter
    from chromoseg.karyotype.counts import count_karyotype
    from chromoseg.karyotype.layout import save_png
    from chromoseg.karyotype.overlay import render_overlay
    from chromoseg.karyotype.report import write_report
    from chromoseg.review.geometry import decode

    renderer = renderer or Renderer(store)
    out = Path(out) if out else store.dir / "reviewed"
    out.mkdir(parents=True, exist_ok=True)
    user = user or store.user
    results, images_meta, rows, problems, files = [], [], [], [], []
    writer = CocoWriter()
    n_reviewed = 0
    for img in store.images:
        snap = store.snapshot(img["id"])
        insts, reviewed = snap["instances"], snap["reviewed"]
        n_reviewed += bool(reviewed)
        excluded = renderer.not_chromosomes(img["id"], insts, snap["version"])  # {id: why}, as the page shows
        results.extend(_result_entry(img, i, excluded.get(i["id"])) for i in insts)
        cinsts = counting_instances(insts, reviewed)
        counts = count_karyotype(cinsts, excluded={k: excluded[i["id"]] for k, i in enumerate(insts)
                                                   if i["id"] in excluded})
        kv = karyotype_view(insts, reviewed, renderer.truth(img["id"]), excluded)  # the flags, with the known karyotype's
        meta = {k: v for k, v in img.items() if k not in ("name",)}
        meta.update(instances=len(insts), summary=counts.summary, flags=kv["flags"], reviewed=reviewed,
                    review_version=snap["version"])
        images_meta.append(meta)
        try:
            arr = renderer.image_array(img["id"])
        except NotFound as err:
            problems.append(f"{img['file_name']}: {err}; no karyogram, overlay or dataset entry")
            continue
        masks = [decode(i, img["height"], img["width"]) for i in insts]
        stem = img["stem"]
        rgb, _, _ = renderer.karyogram_array(img["id"], snap, image=arr)
        kg = save_png(out / f"{stem}.karyogram.png", rgb)
        drawn = [dict(ci, mask=m if m.any() else None, rbox=i.get("rbox"), endpoints=i.get("endpoints"),
                      **({"category_id": 0} if i["id"] in excluded else {}))  # left out: grey "?", as predict's
                 for ci, m, i in zip(cinsts, masks, insts)]
        ov = save_png(out / f"{stem}.overlay.png", render_overlay(arr, drawn))
        with atomic_path(out / f"{stem}.labels.tif") as tmp:
            tifffile.imwrite(tmp, label_image(masks, arr.shape[:2]), compression="zlib")
        files += [kg, ov, out / f"{stem}.labels.tif"]
        rows.append({"image": img["name"], "truth": kv["truth"], "truth_summary": kv["truth_summary"], "flags": kv["flags"],
                     "counts": counts, "karyogram": str(kg), "overlay": str(ov)})
        if reviewed:
            path = store.locate_image(img["id"]).resolve()
            iid = writer.add_image(str(path), img["height"], img["width"], reviewed=reviewed,
                                   source=f"{store.dir.name}/{img['file_name']}")
            for i, m in zip(insts, masks):
                c = int(i.get("category_id") or 0)
                if i["id"] in excluded:  # the page showed it as no chromosome: no training example of one
                    problems.append(f"{img['file_name']}: #{i['id']} left out of dataset.json (not a chromosome: "
                                    f"{excluded[i['id']]}; set its class to keep it)")
                    continue
                if not 1 <= c <= 24 or not m.any():
                    problems.append(f"{img['file_name']}: chromosome #{i['id']} left out of dataset.json "
                                    f"({'no class' if m.any() else 'no pixels'})")
                    continue
                writer.add_annotation(iid, c, mask=m, review_origin=i.get("origin", "model"))
    write_text(out / "results.json", json.dumps(results))
    write_text(out / "images.json", json.dumps({"images": images_meta, "categories": coco_categories()}, indent=1))
    writer.write(out / "dataset.json", info={"description": f"reviewed metaphases of {store.dir}",
                                             "exported_at": now_iso(), "exported_by": user})
    files += [out / "results.json", out / "images.json", out / "dataset.json"]
    if rows:
        h, c = write_report(rows, out / "report.html", out / "report.csv", title=f"chromoseg review: {store.dir.name}",
                            note=f"reviewed predictions, exported {now_iso()} by {user}")
        files += [h, c]
    summary = {"out": str(out), "exported_at": now_iso(), "exported_by": user, "images": len(store.images),
               "reviewed": n_reviewed, "dataset_images": len(writer.images),
               "dataset_annotations": len(writer.annotations), "review_version": store.version, "problems": problems}
    write_text(out / "export.json", json.dumps(summary, indent=1))
    files.append(out / "export.json")
    rel = []
    for f in files:
        try:
            rel.append(str(Path(f).resolve().relative_to(store.dir)))
        except ValueError:
            rel.append(str(f))
    summary["files"] = rel
    return summary
