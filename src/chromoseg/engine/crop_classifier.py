"""Training the second-stage crop classifier (``chromoseg.models.crop_classifier``) on ground-truth
instances, and attaching it to a detector checkpoint.

``collect_crops(json)``: every non-crowd instance of a chromoseg COCO set as an upright crop, its
relative length and class. ``collect_single_crops(folder)``: the same for the single G-banded
chromosomes (``../shared/data/single-chromosomes-gband``, one cell per archive), for pretraining.
``fit_crop_classifier``: AdamW with a one-cycle schedule, batch 128, random 180-degree turns and mirror
flips, intensity jitter, the relative length jittered by 5 %; the epoch with the best validation
accuracy is kept; ``init`` starts it from a pretrained classifier. ``attach``: a detector checkpoint
plus the classifier (or an ensemble, ``chromoseg.models.crop_classifier.CropClassifierEnsemble``),
saved as a checkpoint (``chromoseg export`` then writes the shipped file).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def collect_crops(dataset_json, max_images: int | None = None, progress: bool = True) -> dict:
    """``{"crops" [N,2,24,64], "rel" [N], "labels" [N] (0-23), "image" [N]}`` of a set's instances."""
    from tqdm import tqdm

    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.models.crop_classifier import instance_crops, relative_lengths

    ds = ChromosomeDataset(dataset_json, max_images=max_images)
    crops, rel, labels, image = [], [], [], []
    for i in tqdm(range(len(ds)), desc=f"crops {Path(dataset_json).name}", disable=not progress, leave=False):
        img, t = ds.load(i)
        if t["labels"].numel() == 0:
            continue
        crops.append(instance_crops(img[0], t["masks"], t["rboxes"]))
        rel.append(relative_lengths(t["rboxes"]))
        labels.append(t["labels"] - 1)
        image.append(torch.full((t["labels"].numel(),), i))
    return {"crops": torch.cat(crops), "rel": torch.cat(rel), "labels": torch.cat(labels), "image": torch.cat(image)}


def collect_detected_crops(model, dataset_json, max_images: int | None = None, min_iou: float = 0.5,
                           progress: bool = True) -> dict:
    """The crops a classifier is given at prediction: ``model``'s own final instances on a set's images
    (its recommended settings, classes not used), each matched one-to-one to a ground-truth chromosome
    (``linear_sum_assignment`` on mask IoU, kept at ``>= min_iou``) whose class it takes. Each crop is
    cut from the detected mask's window and rotated box, its relative length taken among all the image's
    detections (as ``Predictor`` does). Same keys as :func:`collect_crops`."""
    from scipy.optimize import linear_sum_assignment
    from tqdm import tqdm

    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.io import read_image
    from chromoseg.engine.predict import InferenceConfig, Predictor
    from chromoseg.models.crop_classifier import instance_crops, relative_lengths
    from chromoseg.ops import window_iou, window_of

    # the file's recommended score and threshold; each chromosome's own class, from the RoI head
    pred = Predictor.from_checkpoint(model, InferenceConfig(classes="independent", crop_classifier=False))
    ds = ChromosomeDataset(dataset_json, max_images=max_images)
    crops, rel, labels, image = [], [], [], []
    for i in tqdm(range(len(ds)), desc=f"detected crops {Path(dataset_json).name}", disable=not progress, leave=False):
        img, t = ds.load(i)
        if t["labels"].numel() == 0:  # (crowd regions are left out of the targets)
            continue
        insts = pred([read_image(ds.image_path(i))])[0]
        if not insts:
            continue
        wins = [window_of(d["mask"]) for d in insts]  # each detection's mask in its own window
        rboxes = torch.tensor([d["rbox"] for d in insts], dtype=torch.float32)
        iou = window_iou(wins, [window_of(m) for m in t["masks"]]).numpy()
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] >= min_iou
        if "class_known" in t:  # a chromosome of unknown class teaches no class
            ok &= t["class_known"].bool().numpy()[cols]
        rows, cols = rows[ok], cols[ok]
        if not len(rows):
            continue
        rl = relative_lengths(rboxes)
        sel = torch.as_tensor(rows, dtype=torch.long)
        crops.append(instance_crops(img[0], [wins[k] for k in rows.tolist()], rboxes[sel]))
        rel.append(rl[sel])
        labels.append(t["labels"][torch.as_tensor(cols, dtype=torch.long)] - 1)
        image.append(torch.full((len(rows),), i))
    if not crops:
        raise ValueError(f"{dataset_json}: the model found no chromosome that matches the ground truth")
    return {"crops": torch.cat(crops), "rel": torch.cat(rel), "labels": torch.cat(labels), "image": torch.cat(image)}


def collect_single_crops(src_dir=None, cells="train", dark_on_light: bool = False, max_cells: int | None = None,
                         progress: bool = True) -> dict:
    """The single-chromosome set's crops as :func:`collect_crops` gives a metaphase set's: each cell's
    straightened chromosomes (dark on light, long axis vertical) are laid side by side on one canvas
    (gaps of half the tallest crop, so a neighbour stays out of a crop's padding), their masks from
    :func:`chromoseg.data.synth.crop_mask` and rotated boxes from the masks, then cropped by
    :func:`chromoseg.models.crop_classifier.instance_crops` with the cell as the metaphase (per-cell
    standardisation and relative lengths). ``dark_on_light=False`` inverts the crops (bright on dark,
    for a fluorescence model: a G-dark band is DAPI/Q-bright); a brightfield model keeps them.
    ``cells``: ``"train"`` / ``"val"`` / ``"test"`` (the set's fixed split by cell) or ``"all"``."""
    from tqdm import tqdm

    from chromoseg.data.single_chromosomes import default_data_dir
    from chromoseg.data.synth import read_cell, select_cells
    from chromoseg.models.crop_classifier import instance_crops, relative_lengths
    from chromoseg.ops import mask_to_rbox

    src = Path(src_dir) if src_dir is not None else default_data_dir()
    names = select_cells(src, cells)[:max_cells]
    crops, rel, labels, image = [], [], [], []
    for i, name in enumerate(tqdm(names, desc=f"single-chromosome cells ({cells})", disable=not progress, leave=False)):
        chroms = read_cell(src / f"{name}.npz")
        if not chroms:
            continue
        hmax = max(c.image.shape[0] for c in chroms)
        gap = hmax // 2 + 4
        H = hmax + 2 * gap
        W = sum(c.image.shape[1] for c in chroms) + gap * (len(chroms) + 1)
        canvas = np.full((H, W), 255, np.uint8)
        masks = np.zeros((len(chroms), H, W), bool)
        x = gap
        for k, c in enumerate(chroms):
            h, w = c.image.shape
            y = gap + (hmax - h) // 2
            m = c.get_mask()
            canvas[y:y + h, x:x + w] = np.where(m, c.image, 255)
            masks[k, y:y + h, x:x + w] = m
            x += w + gap
        img = torch.from_numpy(canvas.astype(np.float32) / 255.0)
        if not dark_on_light:
            img = 1.0 - img
        m = torch.from_numpy(masks)
        rboxes = torch.stack([mask_to_rbox(mk) for mk in m])
        crops.append(instance_crops(img, m, rboxes))
        rel.append(relative_lengths(rboxes))
        labels.append(torch.tensor([c.category_id - 1 for c in chroms]))
        image.append(torch.full((len(chroms),), i))
    if not crops:
        raise FileNotFoundError(f"{src}: no usable single-chromosome cells in {cells!r}")
    return {"crops": torch.cat(crops), "rel": torch.cat(rel), "labels": torch.cat(labels), "image": torch.cat(image)}


def _augment(x: torch.Tensor, rl: torch.Tensor, g: torch.Generator):
    n = x.shape[0]
    flip_len = torch.rand(n, generator=g) < 0.5
    flip_across = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip_len[:, None, None, None], x.flip(-1), x)
    x = torch.where(flip_across[:, None, None, None], x.flip(-2), x)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, generator=g) - 0.5)
    shift = 0.2 * (torch.rand(n, 1, 1, generator=g) - 0.5)
    x = torch.cat([x[:, :1] * gain[:, None] + shift[:, None], x[:, 1:]], 1)
    rl = rl * (1 + 0.1 * (torch.rand(n, generator=g) - 0.5))
    return x, rl


@torch.no_grad()
def predict_probs(model, data: dict, batch: int = 512) -> torch.Tensor:
    model.eval()
    out = []
    for s in range(0, data["crops"].shape[0], batch):
        x, rl = data["crops"][s:s + batch], data["rel"][s:s + batch]
        out.append(F.softmax((model(x, rl) + model(x.flip(-1), rl)) / 2, 1))
    return torch.cat(out) if out else torch.zeros(0, 24)


def fit_crop_classifier(train: dict, val: dict, epochs: int = 15, lr: float = 3e-3, batch: int = 128,
                        seed: int = 0, width: int = 16, progress: bool = True,
                        init: torch.nn.Module | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train on ``train`` crops, keep the epoch with the best ``val`` accuracy. Returns (model, history).
    ``init``: a classifier (e.g. pretrained on single chromosomes) whose weights are the start; its
    width is used."""
    from tqdm import tqdm

    from chromoseg.models.crop_classifier import CropClassifier

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        width = init.width
    model = CropClassifier(width=width)
    if init is not None:
        model.load_state_dict(init.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-3)
    n = train["crops"].shape[0]
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    best, best_state, hist = -1.0, None, []
    for ep in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for s in tqdm(range(0, n, batch), desc=f"classifier epoch {ep + 1}/{epochs}", disable=not progress, leave=False):
            idx = perm[s:s + batch]
            x, rl = _augment(train["crops"][idx], train["rel"][idx], g)
            loss = F.cross_entropy(model(x, rl), train["labels"][idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * idx.numel()
        acc = float((predict_probs(model, val).argmax(1) == val["labels"]).float().mean())
        hist.append({"epoch": ep + 1, "train_loss": tot / n, "val_accuracy": acc, "seconds": time.perf_counter() - t0})
        log.info("classifier epoch %d: loss %.3f, val accuracy %.3f", ep + 1, tot / n, acc)
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), hist


def joint_accuracy(probs: torch.Tensor, data: dict) -> float:
    """Accuracy after the karyotype-aware assignment per cell (``chromoseg.karyotype.assign``)."""
    from chromoseg.karyotype.assign import assign_classes

    right = 0
    for i in data["image"].unique():
        sel = data["image"] == i
        right += int((torch.from_numpy(assign_classes(probs[sel].numpy())) - 1 == data["labels"][sel]).sum())
    return right / max(int(data["labels"].numel()), 1)


def attach(checkpoint, classifier, out) -> Path:
    """Write ``checkpoint`` (a ``chromoseg train`` checkpoint or export) with ``classifier`` attached
    as a checkpoint file ``out`` (``chromoseg export`` reads it)."""
    from chromoseg.engine.checkpoint import atomic_save, load_checkpoint, read_exported

    if Path(checkpoint).suffix == ".safetensors":
        import json

        state, meta = read_exported(checkpoint)
        ck = {"model": state, "model_config": json.loads(meta["model_config"]),
              "config": json.loads(meta.get("train_config", "{}")), "epoch": meta.get("epoch")}
    else:
        ck = load_checkpoint(checkpoint)
    ck = dict(ck)
    state = {k: v for k, v in ck["model"].items() if not k.startswith("crop_classifier.")}
    state.update({f"crop_classifier.{k}": v for k, v in classifier.state_dict().items()})
    cfg = dict(ck["model_config"])
    cfg["crop_classifier"] = True
    widths = [m.width for m in getattr(classifier, "members", [classifier])]
    cfg["crop_classifier_width"] = widths[0] if len(set(widths)) == 1 else widths  # a list: one per member
    members = len(widths)
    if members > 1:
        cfg["crop_classifier_members"] = members
    else:
        cfg.pop("crop_classifier_members", None)
    ck.update(model=state, model_config=cfg)
    ck.pop("optimizer", None)
    atomic_save(ck, out)
    return Path(out)
