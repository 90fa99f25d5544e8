"""``chromoseg pretrain``: the ResNet backbone as a 24-class classifier of single chromosomes.

No ImageNet weights can be downloaded here, so the backbone can instead start from a network that has
learnt G-band chromosome features: the single-chromosome set (one ``CELL.npz`` per cell, entries
``CLASS/claseCLASS_K_CELL``, 8-bit grey crops, dark on light, CLASS 1-24).

* Split by **cell** with a fixed seed (``SPLIT_SEED``, independent of ``--seed``): 80 % of the cells
  train, 10 % validation (best epoch), 10 % test (the held-out accuracy reported).
* Each crop is padded to a square with its border grey level (aspect ratio kept: chromosome length
  matters for the class) and resized to ``image_size``; training adds flips, a random polarity
  inversion (p = 0.5: the M-FISH DAPI images are bright on dark while the G-band crops are dark on
  light) and small intensity jitter.
* Network: the same grey-input ResNet the detectors use (:func:`chromoseg.models.backbone.build_resnet`);
  SGD momentum 0.9, cosine learning rate, label smoothing 0.1.
* Output ``OUT/backbone.pt``: ``{"backbone": ResNet state dict without fc, "fc": classifier,
  "arch", "in_channels": 1, "image_size", "val_accuracy", "test_accuracy", ...}`` -- the file
  ``chromoseg train --backbone-weights`` reads; ``OUT/report.json``; ``OUT/metrics.jsonl``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from chromoseg.data.single_chromosomes import ENTRY_NAME, SPLIT, SPLIT_SEED, default_data_dir, split_cells

log = logging.getLogger(__name__)


class PretrainError(RuntimeError):
    pass


def square_resize(crop: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square with the border grey level (median of the edge pixels), resize to size x size."""
    import cv2

    h, w = crop.shape
    edge = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    fill = int(np.median(edge)) if edge.size else 255
    s = max(h, w)
    out = np.full((s, s), fill, np.uint8)
    y0, x0 = (s - h) // 2, (s - w) // 2
    out[y0:y0 + h, x0:x0 + w] = crop
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def load_cells(folder: Path, cells: list[str], size: int, problems: list[str]):
    xs, ys = [], []
    for c in cells:
        path = folder / f"{c}.npz"
        try:
            z = np.load(path)
        except Exception as err:
            problems.append(f"{path}: cannot read ({err})")
            continue
        for key in z.files:
            m = ENTRY_NAME.match(key)
            if not m or not (1 <= int(m.group(1)) <= 24):
                problems.append(f"{path}: entry {key!r} skipped (name is not CLASS/claseCLASS_K_CELL, CLASS 1-24)")
                continue
            a = z[key]
            if a.ndim != 2 or a.dtype != np.uint8 or min(a.shape) < 2:
                problems.append(f"{path}: entry {key!r} skipped (not an 8-bit grey image)")
                continue
            xs.append(square_resize(a, size))
            ys.append(int(m.group(1)) - 1)
    if not xs:
        return torch.zeros((0, 1, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.stack(xs))[:, None], torch.tensor(ys, dtype=torch.int64)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x float [B,1,S,S] in [0,1]: flips, polarity inversion, intensity jitter."""
    b = x.shape[0]
    r = torch.rand(b, 4, generator=gen)
    x = torch.where((r[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where((r[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
    x = torch.where((r[:, 2] < 0.5)[:, None, None, None], 1.0 - x, x)
    gain = (0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=gen))
    bias = 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    return ((x - 0.5) * gain + 0.5 + bias).clamp(0, 1)


def _normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    # the same normalisation as the detectors' transform (mean 0.5, std 0.25)
    return (x_uint8.float() / 255.0)


@torch.no_grad()
def accuracy(model, xs, ys, device, batch_size=256) -> float:
    if len(ys) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for i in range(0, len(ys), batch_size):
        x = (_normalize(xs[i:i + batch_size]).to(device) - 0.5) / 0.25
        correct += int((model(x).argmax(1).cpu() == ys[i:i + batch_size]).sum())
    return correct / len(ys)


def pretrain(data: Optional[str] = None, backbone: str = "resnet50", epochs: int = 30, batch_size: int = 64,
             lr: float = 0.05, image_size: int = 96, max_cells: Optional[int] = None, workers: int = 2,
             device: str = "auto", seed: int = 0, out: str = "runs/pretrain", show_progress: bool = True,
             max_train_images: Optional[int] = None) -> dict:
    from tqdm import tqdm

    from chromoseg.engine.checkpoint import atomic_save
    from chromoseg.engine.train import resolve_device, seed_everything
    from chromoseg.models.backbone import build_resnet

    folder = Path(data) if data else default_data_dir()
    if not folder.is_dir():
        raise PretrainError(f"single-chromosome folder not found: {folder}")
    cells = sorted(p.stem for p in folder.glob("*.npz"))
    if not cells:
        raise PretrainError(f"{folder}: no .npz cell files")
    split = split_cells(cells)
    if max_cells:
        n = int(max_cells)
        per = {k: v[: max(1, round(n * f))] for (k, v), f in zip(split.items(), SPLIT)}
        split = per
    problems: list[str] = []
    t0 = time.time()
    data_ = {k: load_cells(folder, v, image_size, problems) for k, v in split.items()}
    for p in problems[:20]:
        log.warning("%s", p)
    if len(problems) > 20:
        log.warning("... %d more problems", len(problems) - 20)
    xtr, ytr = data_["train"]
    if max_train_images:
        xtr, ytr = xtr[:max_train_images], ytr[:max_train_images]
    if len(ytr) == 0:
        raise PretrainError(f"{folder}: no usable training crops")
    log.info("loaded %d/%d/%d crops (train/val/test cells %d/%d/%d) in %.1fs", len(ytr), len(data_["val"][1]),
             len(data_["test"][1]), len(split["train"]), len(split["val"]), len(split["test"]), time.time() - t0)
    dev = resolve_device(device)
    seed_everything(seed)
    model = build_resnet(backbone, in_channels=1, num_classes=24).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps = epochs * ((len(ytr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    best = (-1.0, None)
    mfile = outp / "metrics.jsonl"
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        t1, tot, correct = time.time(), 0.0, 0
        bar = tqdm(range(0, len(ytr), batch_size), desc=f"pretrain {ep + 1}/{epochs}", disable=not show_progress,
                   leave=False)
        for i in bar:
            idx = perm[i:i + batch_size]
            x = augment(_normalize(xtr[idx]), gen)
            x = ((x - 0.5) / 0.25).to(dev)
            y = ytr[idx].to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            if not torch.isfinite(loss):
                raise PretrainError(f"non-finite loss at epoch {ep + 1}; try a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        va = accuracy(model, *data_["val"], dev)
        rec = {"epoch": ep + 1, "train/loss": tot / len(ytr), "train/accuracy": correct / len(ytr), "val/accuracy": va,
               "seconds": time.time() - t1, "images_per_s": len(ytr) / max(time.time() - t1, 1e-9)}
        with open(mfile, "a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info("pretrain epoch %d: loss %.3f train acc %.3f val acc %.3f", ep + 1, rec["train/loss"],
                 rec["train/accuracy"], va)
        score = va if va == va else rec["train/accuracy"]
        if score > best[0]:
            best = (score, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    te = accuracy(model, *data_["test"], dev)
    state = {k: v for k, v in best[1].items() if not k.startswith("fc.")}
    weights = outp / "backbone.pt"
    report = {"arch": backbone, "in_channels": 1, "image_size": image_size, "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "val_accuracy": best[0], "test_accuracy": te,
              "train_images": len(ytr), "val_images": len(data_["val"][1]), "test_images": len(data_["test"][1]),
              "train_cells": len(split["train"]), "val_cells": len(split["val"]), "test_cells": len(split["test"]),
              "split_seed": SPLIT_SEED, "data": str(folder), "problems": len(problems), "weights": str(weights),
              "device": str(dev)}
    atomic_save({"backbone": state, "fc": {k[3:]: v for k, v in best[1].items() if k.startswith("fc.")},
                 **{k: v for k, v in report.items() if k != "weights"}}, weights)
    (outp / "report.json").write_text(json.dumps(report, indent=2))
    (outp / "split.json").write_text(json.dumps(split, indent=1))
    return report
