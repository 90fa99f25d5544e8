"""The paper's Tables I and II, measured: evaluate trained variants on an annotated split.

Table I compares Deep Snake (``snake``), Mask R-CNN (``mr``), Rotated Mask R-CNN (``rmr``) and the
Enhanced model (``ermr``) in multi-class and binary mode; Table II the ablations ERM-1 ... ERM-4 (``rmr``, ``erm2``, ``erm3``,
``ermr``) in multi-class mode. AP, AP@0.5 and AP@0.75 of masks, x100 like the paper, "under the
confidence score threshold of 0.5" (the paper's protocol); standard COCO AP (no threshold) is given too.
The paper's own numbers stand beside ours.
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path

from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD
from chromoseg.models.variants import REGISTRY

#: the two protocols each table reports, by their key in ``<table>.json``: the paper's ("under the
#: confidence score threshold of 0.5") and COCO's (no threshold)
PAPER, COCO = str(float(PAPER_SCORE_THRESHOLD)), str(0.0)
THRESHOLDS = {PAPER: PAPER_SCORE_THRESHOLD, COCO: 0.0}

#: Table I of the paper: (AP, AP@0.5, AP@0.75) per (network, mode); the paper's "ERMUR" is ermr.
PAPER_TABLE1 = {
    ("snake", "multi"): (47.01, 58.26, 56.95), ("snake", "binary"): (64.16, 80.87, 77.83),
    ("mr", "multi"): (42.43, 64.16, 55.99), ("rmr", "multi"): (47.87, 64.27, 61.15),
    ("ermr", "multi"): (49.52, 65.89, 63.11), ("mr", "binary"): (58.23, 90.72, 75.25),
    ("rmr", "binary"): (66.04, 90.81, 84.39), ("ermr", "binary"): (69.96, 95.83, 89.71),
}
#: Table II of the paper (multi-class): ERM-1 = rmr, ERM-2 = +ED, ERM-3 = +H&R, ERM-4 = ermr.
PAPER_TABLE2 = {"rmr": (47.87, 64.27, 61.15), "erm2": (47.98, 64.26, 61.28), "erm3": (48.96, 65.96, 63.37),
                "ermr": (49.52, 65.89, 63.11)}
TABLES = {
    "table1": {"variants": ("snake", "mr", "rmr", "ermr"), "modes": ("multi", "binary"), "paper": PAPER_TABLE1,
               "title": "Table I: chromosome instance segmentation, Deep Snake vs Mask R-CNN vs Rotated vs Enhanced"},
    "table2": {"variants": ("rmr", "erm2", "erm3", "ermr"), "modes": ("multi",), "paper": PAPER_TABLE2,
               "title": "Table II: ablations ERM-1 (rotated) ... ERM-4 (H&R + ED), multi-class"},
}
#: each variant's row name, from the registry (``chromoseg.models.variants``)
ROW_NAMES = {name: v.label for name, v in REGISTRY.items()}


def hardware(device: str) -> str:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def _training_summary(ckpt: Path) -> dict:
    """What the run beside a checkpoint says about its training (epochs, best val mask loss, recipe)."""
    out = {}
    metrics = ckpt.parent / "metrics.jsonl"
    if metrics.is_file():
        recs = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
        epochs = [r for r in recs if "epoch" in r and "event" not in r]
        out["epochs_trained"] = len(epochs)
        out["train_seconds"] = round(sum(r.get("train/seconds", 0.0) for r in epochs))
        vals = [r["val/loss_mask"] for r in epochs if r.get("val/loss_mask") is not None]
        if vals:
            out["best_val_mask_loss"] = round(min(vals), 4)
    cfg = ckpt.parent / "config.yaml"
    if cfg.is_file():
        import yaml

        c = yaml.safe_load(cfg.read_text()) or {}
        out["recipe"] = {k: c.get(k) for k in ("backbone", "image_size", "epochs", "batch_size", "lr", "small",
                                               "backbone_weights", "max_images") if k in c}
    return out


def run_table(table: str, checkpoints: dict[str, str], gt, work_dir, out_dir, device: str = "cpu",
              batch_size: int = 1, progress: bool = True, binary_gt=None) -> dict:
    """Predict with each checkpoint on the images of ``gt``, evaluate, and write ``out_dir/<table>.md``
    and ``.json``. ``checkpoints`` maps variant names to ``best.pt`` paths. ``binary_gt``: another
    annotated set (e.g. BioImLab's test split, no classes) scored class-agnostically as an extra column."""
    from chromoseg.data.coco import load_coco, resolve_image_path
    from chromoseg.engine.evaluate import evaluate
    from chromoseg.engine.predict import Predictor, predict_paths

    spec = TABLES[table]
    missing = [v for v in spec["variants"] if v not in checkpoints]
    if missing:
        raise ValueError(f"{table} needs a checkpoint for {', '.join(missing)} (--model NAME=PATH)")
    gt = Path(gt)
    data = load_coco(gt)
    paths = [resolve_image_path(im["file_name"], gt.parent) for im in data["images"]]
    extra = None
    if binary_gt is not None:
        binary_gt = Path(binary_gt)
        extra = [resolve_image_path(im["file_name"], binary_gt.parent) for im in load_coco(binary_gt)["images"]]
    rows = {}
    for v in spec["variants"]:
        ck = Path(checkpoints[v])
        # the paper's rule (class scores, each chromosome's own class), whatever the file recommends; all
        # detections after mask NMS: the evaluation applies each protocol's score threshold
        pred = Predictor.from_checkpoint(ck, {"score": "class", "classes": "independent", "score_threshold": 0.0},
                                         device=device)
        pdir = Path(work_dir) / table / v
        predict_paths(pred, paths, pdir, batch_size=batch_size, overlays=False, label_images=False, karyotype=False,
                      progress=progress)
        res = {}
        for key, thr in THRESHOLDS.items():
            rep = evaluate(gt, pdir / "results.json", score_threshold=thr, modes=spec["modes"], iou_types=("segm",))
            res[key] = {m: {k: rep["metrics"][m]["segm"][k] for k in ("AP", "AP50", "AP75")} for m in spec["modes"]}
        rows[v] = {"checkpoint": str(ck), "training": _training_summary(ck), "results": res,
                   "predictions": str(pdir / "results.json")}
        if extra is not None:
            bdir = Path(work_dir) / table / f"{v}-binary"
            predict_paths(pred, extra, bdir, batch_size=batch_size, overlays=False, label_images=False,
                          karyotype=False, progress=progress)
            rows[v]["binary_extra"] = {}
            for key, thr in THRESHOLDS.items():
                rep = evaluate(binary_gt, bdir / "results.json", score_threshold=thr, modes=("binary",),
                               iou_types=("segm",))
                rows[v]["binary_extra"][key] = {k: rep["metrics"]["binary"]["segm"][k] for k in ("AP", "AP50", "AP75")}
    report = {"table": table, "title": spec["title"], "ground_truth": str(gt), "images": len(paths),
              "binary_ground_truth": str(binary_gt) if binary_gt is not None else None,
              "instances": sum(1 for a in data["annotations"] if not a.get("iscrowd")),
              # `chromoseg ...` also under `python -m chromoseg.cli` (argv[0] is then chromoseg/cli/__main__.py)
              "command": ("chromoseg " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "chromoseg"
                          or Path(sys.argv[0]).parts[-3:] == ("chromoseg", "cli", "__main__.py")
                          else " ".join(sys.argv)),
              "hardware": hardware(device), "device": device,
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", "rows": rows,
              "paper": {f"{k[0]}/{k[1]}" if isinstance(k, tuple) else k: v for k, v in spec["paper"].items()}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{table}.json").write_text(json.dumps(report, indent=1))
    (out_dir / f"{table}.md").write_text(table_markdown(report, spec))
    return report


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def table_markdown(report: dict, spec: dict) -> str:
    lines = [f"# {report['title']}", "",
             f"- command: `{report['command']}`",
             f"- data: `{report['ground_truth']}` ({report['images']} images, {report['instances']} instances; "
             "chromoseg's fixed slide split)",
             f"- hardware: {report['hardware']}; date: {report['date']}",
             f"- metric: mask AP ×100 (pycocotools), 'paper' = under the {PAPER_SCORE_THRESHOLD:g} confidence threshold "
             "as in the paper's tables; 'COCO' = no threshold", ""]
    head = "| network | mode | AP | AP@0.5 | AP@0.75 | AP (COCO) | paper AP | paper AP@0.5 | paper AP@0.75 |"
    lines += [head, "|---|---|---|---|---|---|---|---|---|"]
    for mode in spec["modes"]:
        for v in spec["variants"]:
            r = report["rows"][v]["results"]
            p = r[PAPER][mode]
            c = r[COCO][mode]
            key = (v, mode) if isinstance(next(iter(spec["paper"])), tuple) else v
            pp = spec["paper"].get(key, (None, None, None))
            lines.append(f"| {ROW_NAMES.get(v, v)} | {mode} | {_pct(p['AP'])} | {_pct(p['AP50'])} | {_pct(p['AP75'])} | "
                         f"{_pct(c['AP'])} | {pp[0]} | {pp[1]} | {pp[2]} |")
    if report.get("binary_ground_truth"):
        lines += ["", f"Binary (class-agnostic) mask AP on `{report['binary_ground_truth']}`, another lab's images "
                      "(the paper has no such column):", "",
                  "| network | AP | AP@0.5 | AP@0.75 | AP (COCO) |", "|---|---|---|---|---|"]
        for v in spec["variants"]:
            b = report["rows"][v]["binary_extra"]
            lines.append(f"| {ROW_NAMES.get(v, v)} | {_pct(b[PAPER]['AP'])} | {_pct(b[PAPER]['AP50'])} | "
                         f"{_pct(b[PAPER]['AP75'])} | {_pct(b[COCO]['AP'])} |")
    lines += ["", "Checkpoints and how they were trained:", ""]
    for v in spec["variants"]:
        row = report["rows"][v]
        lines.append(f"- {ROW_NAMES.get(v, v)}: `{row['checkpoint']}` — {json.dumps(row['training'])}")
    return "\n".join(lines) + "\n"
