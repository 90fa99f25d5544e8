"""Prediction: images in, chromosome instances out (API behind ``chromoseg predict``).

The paper's inference rule is the default (section III): masks of the top 100 detections, mask-level
NMS to remove redundant results, then the confidence threshold 0.5. Each step is configurable in
:class:`InferenceConfig`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from chromoseg.data.io import ImageReadError, read_image, to_float01
from chromoseg.data.report import ProblemLog

log = logging.getLogger(__name__)


@dataclass
class InferenceConfig:
    top_k: int = 100  #: detections whose masks are computed (the paper: top 100)
    mask_threshold: float = 0.5  #: mask probability -> binary mask
    mask_nms_iou: float = 0.5  #: mask-level NMS threshold, class-agnostic (None/<=0: off)
    score_threshold: float = 0.5  #: the paper's confidence threshold, applied last
    min_area: int = 4  #: masks with fewer pixels are dropped
    #: what ``score`` is: "class" = the detection's class probability (the paper, torchvision);
    #: "object" = 1 - P(background) of its RoI (is it a chromosome at all), the class's own
    #: probability then shows only in ``class_scores`` (rotated variants only); None (in
    #: ``Predictor.from_checkpoint``) = the model file's ``default_score``, else "class"
    score: str | None = "class"
    #: how classes are chosen: "independent" = each chromosome's most probable class; "karyotype" =
    #: jointly per metaphase (``chromoseg.karyotype.assign``: two slots per autosome, penalised gains)
    classes: str = "independent"


def select_instances(det: dict, cfg: InferenceConfig) -> list[dict]:
    """Turn one image's raw model output into instances by the paper's rule.

    ``det``: ``boxes`` [N,4], ``labels``, ``scores``, ``masks`` [N,1,H,W] probabilities, optional ``rboxes``
    and ``endpoints``, ``class_scores`` [N,24]. Returns dicts with ``mask`` (bool numpy), ``bbox`` (xywh),
    ``rbox``, ``endpoints``, ``category_id``, ``score`` (and ``class_scores``), by decreasing score.
    """
    from chromoseg.data.coco import mask_bbox
    from chromoseg.ops import mask_endpoints, mask_nms, mask_to_rbox

    cand = det["scores"].detach().float().cpu()  # each candidate's probability of its own class
    labels = det["labels"].detach().cpu()
    scores = rank = cand
    if cfg.score not in ("class", "object"):
        raise ValueError(f"score {cfg.score!r}: use 'class' or 'object'")
    if "class_scores" in det:
        # a detection's class is the most probable of the 24 it reports (one RoI gives a candidate per
        # class above the heads' threshold; its likeliest class's candidate ranks first, mask NMS
        # removes the others)
        cs = det["class_scores"].detach().float().cpu()
        labels = cs.argmax(1) + 1
        scores = cs.sum(1).clamp(max=1.0) if cfg.score == "object" else cs.amax(1)
        rank = scores + 1e-3 * cand
    elif cfg.score == "object":
        raise ValueError("score='object' needs a model whose detections carry class_scores (rotated variants)")
    order = torch.argsort(rank, descending=True)[: cfg.top_k]
    if order.numel() == 0:
        return []
    masks = det["masks"][order, 0].detach().cpu() > cfg.mask_threshold
    area = masks.flatten(1).sum(1)
    ok = area >= cfg.min_area
    order, masks = order[ok], masks[ok]
    if cfg.mask_nms_iou and cfg.mask_nms_iou > 0 and order.numel():
        keep = mask_nms(masks, rank[order], cfg.mask_nms_iou)
        order, masks = order[keep], masks[keep]
    sel = scores[order] >= cfg.score_threshold
    order, masks = order[sel], masks[sel]
    out = []
    for k, i in enumerate(order.tolist()):
        m = masks[k].numpy()
        rbox = det["rboxes"][i].tolist() if "rboxes" in det else mask_to_rbox(masks[k]).tolist()
        if "endpoints" in det:
            ends = det["endpoints"][i].tolist()
        else:
            ends = np.asarray(mask_endpoints(m)).tolist()
        inst = {"mask": m, "bbox": mask_bbox(m), "rbox": [float(v) for v in rbox],
                "endpoints": [[float(x), float(y)] for x, y in ends],
                "category_id": int(labels[i]), "score": float(scores[i])}
        if "class_scores" in det:  # the detection's RoI's 24 class probabilities (flags unsure classes)
            inst["class_scores"] = [float(v) for v in det["class_scores"][i]]
        out.append(inst)
    return out


def instances_to_results(instances: list[dict], image_id: int | str, file_name: str) -> list[dict]:
    """COCO results entries (RLE masks) for one image's instances."""
    from chromoseg.data.coco import encode_mask

    return [{"image_id": image_id, "file_name": file_name, "category_id": inst["category_id"],
             "score": round(inst["score"], 5), "segmentation": encode_mask(inst["mask"]),
             "bbox": [round(v, 2) for v in inst["bbox"]], "rbox": [round(v, 3) for v in inst["rbox"]],
             "endpoints": [[round(x, 2), round(y, 2)] for x, y in inst["endpoints"]], "area": int(inst["mask"].sum()),
             **({"class_scores": [round(v, 4) for v in inst["class_scores"]]} if "class_scores" in inst else {})}
            for inst in instances]


def label_image(instances: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """uint16 instance label image: 0 background, k = the k-th instance (by decreasing score); where
    instances overlap, the higher-scoring one keeps the pixel."""
    lab = np.zeros(shape, np.uint16)
    for k in range(len(instances), 0, -1):  # lowest score first, so higher scores overwrite
        lab[instances[k - 1]["mask"]] = k
    return lab


class Predictor:
    """A model plus the inference rule; ``predictor(image_arrays)`` returns instances per image."""

    def __init__(self, model, cfg: InferenceConfig | None = None, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.cfg = cfg or InferenceConfig()
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path=None, cfg: InferenceConfig | None = None, device="cpu") -> "Predictor":
        """``path``: a ``chromoseg train`` checkpoint, a ``chromoseg export`` file, a shipped model's
        name (``mfish``) or None for the default shipped model (see :mod:`chromoseg.weights`)."""
        from chromoseg.engine.checkpoint import load_model
        from chromoseg.weights import resolve_model

        cfg = cfg or InferenceConfig()
        path = resolve_model(path)
        if cfg.score is None:  # the model's own recommendation (export --default-score), else the paper's
            cfg.score = "class"
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    cfg.score = (f.metadata() or {}).get("default_score", "class")
        # keep enough candidates for the top-k rule; the score threshold is applied after mask NMS
        # object scores: a chromosome of unsure class has a small top class probability, so the heads'
        # candidate threshold (on class probabilities) is lowered
        model = load_model(path, device=device, box_detections_per_img=max(cfg.top_k, 1),
                           box_score_thresh=0.01 if cfg.score == "object" else 0.05)
        return cls(model, cfg, device)

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[list[dict]]:
        tensors = [torch.from_numpy(to_float01(a))[None].to(self.device) for a in images]
        outputs = self.model(tensors)
        found = [select_instances({k: v for k, v in o.items()}, self.cfg) for o in outputs]
        if self.cfg.classes == "karyotype":
            from chromoseg.karyotype.assign import assign_instances

            found = [assign_instances(insts) for insts in found]
        elif self.cfg.classes != "independent":
            raise ValueError(f"classes {self.cfg.classes!r}: use 'independent' or 'karyotype'")
        return found


def predict_paths(predictor: Predictor, paths: list[Path], out_dir, batch_size: int = 1, overlays: bool = True,
                  label_images: bool = True, karyotype: bool = True, progress: bool = True) -> dict:
    """Predict every image in ``paths`` and write into ``out_dir``:

    - ``results.json``: COCO results for all images (``file_name`` names each image; ``image_id`` is its
      index in ``images.json``), with RLE masks, ``bbox``, ``rbox``, ``endpoints``, class and score;
    - ``images.json``: the images (id, file name, size);
    - per image ``<stem>.labels.tif`` (16-bit instance labels) and ``<stem>.overlay.png``;
    - with ``karyotype``: per image ``<stem>.karyogram.png``, and for the run ``report.html`` (one
      self-contained page, flagged metaphases first) and ``report.csv`` with counts, ISCN-style summary
      and flags (see :mod:`chromoseg.karyotype`);
    - ``problems.json``: files that could not be read (skipped, the batch goes on).
    """
    import tifffile
    from tqdm import tqdm

    from chromoseg.karyotype.layout import save_png
    from chromoseg.karyotype.overlay import render_overlay
    from chromoseg.karyotype.pipeline import analyse_metaphase, truth_for
    from chromoseg.karyotype.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = ProblemLog()
    results, images_meta, rows = [], [], []
    stems: dict[str, int] = {}
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
    batch: list[tuple[Path, np.ndarray]] = []

    def flush():
        if not batch:
            return
        preds = predictor([a for _, a in batch])
        for (path, arr), insts in zip(batch, preds):
            iid = len(images_meta) + 1
            images_meta.append({"id": iid, "file_name": str(path), "height": arr.shape[0], "width": arr.shape[1],
                                "instances": len(insts)})
            results.extend(instances_to_results(insts, iid, str(path)))
            stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
            stems[path.stem] = stems.get(path.stem, 0) + 1
            if label_images:
                tifffile.imwrite(out_dir / f"{stem}.labels.tif", label_image(insts, arr.shape), compression="zlib")
            if karyotype:
                row = analyse_metaphase(arr, insts, path.name, out_dir, stem, truth=truth_for(None, path),
                                        overlay=overlays)
                rows.append(row)
                images_meta[-1]["summary"] = row["counts"].summary
                images_meta[-1]["flags"] = row["flags"]
            elif overlays:
                save_png(out_dir / f"{stem}.overlay.png", render_overlay(arr, insts))
        bar.update(len(batch))
        batch.clear()

    for path in paths:
        try:
            arr = read_image(path)
        except ImageReadError as err:
            problems.add(err.path, err.problem, kind="unreadable")
            bar.update(1)
            continue
        batch.append((Path(path), arr))
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    from chromoseg.data.classes import coco_categories

    (out_dir / "results.json").write_text(json.dumps(results))
    (out_dir / "images.json").write_text(json.dumps({"images": images_meta, "categories": coco_categories(),
                                                     "inference": asdict(predictor.cfg)}, indent=1))
    problems.write(out_dir / "problems.json")
    if karyotype and rows:
        write_report(rows, out_dir / "report.html", out_dir / "report.csv", title="chromoseg predictions",
                     note=f"model predictions; inference: {asdict(predictor.cfg)}")
    return {"images": len(images_meta), "skipped": len(problems), "instances": len(results),
            "problems": problems.summary(), "out": str(out_dir)}
