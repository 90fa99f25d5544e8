"""Checkpoints: atomic writes, RNG state capture, and rebuilding a model from a checkpoint.

A training checkpoint (``last.pt`` / ``best.pt``) is a dict with ``model`` (state dict),
``model_config`` (the keyword arguments of :func:`chromoseg.models.build_model`), ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (epochs completed), ``early_stopping``, ``rng``, ``config``
(the training configuration) and ``metrics`` (the last epoch's record).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to ``path.tmp`` then ``os.replace``: a kill never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except (RuntimeError, IndexError):  # other GPU count
            pass


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # corrupted / not a checkpoint
        raise ValueError(f"{path}: cannot read checkpoint ({err})") from err


def load_model(path: str | Path, device="cpu", **overrides):
    """Rebuild the model saved in a checkpoint written by ``chromoseg train`` (``best.pt`` or
    ``last.pt``), load its weights and put it in eval mode. ``overrides`` change build arguments
    (e.g. ``box_score_thresh``)."""
    from chromoseg.models import build_model

    ck = load_checkpoint(path)
    if "model_config" not in ck or "model" not in ck:
        raise ValueError(f"{path}: not a chromoseg training checkpoint (no model_config/model)")
    cfg = dict(ck["model_config"])
    cfg.pop("backbone_weights", None)
    cfg.update(overrides)
    model = build_model(**cfg)
    model.load_state_dict(ck["model"])
    return model.to(device).eval()
