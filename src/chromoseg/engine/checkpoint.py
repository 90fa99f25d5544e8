"""Checkpoints: atomic writes, RNG state capture, and rebuilding a model from a checkpoint.

A training checkpoint (``last.pt`` / ``best.pt``) is a dict with ``model`` (state dict),
``model_config`` (the keyword arguments of :func:`chromoseg.models.build_model`), ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (epochs completed), ``early_stopping``, ``rng``, ``config``
(the training configuration) and ``metrics`` (the last epoch's record).

An exported model (``chromoseg export``, and the models shipped in ``chromoseg/weights``) is a
safetensors file: the weights (half precision by default) plus string metadata ``format``
(``chromoseg-model``), ``model_config`` (JSON of the build arguments) and ``train_config`` (JSON),
and what ``chromoseg export`` was told of how to use it: ``stain``, the ``default_*`` recommendations
and ``train_pixel_size_um`` (micrometres per pixel of the network input the model was trained at: the
physical scale rule, :class:`chromoseg.engine.settings.InferenceConfig`); a file without one of these
keys is used as before.
:func:`load_model` reads both kinds.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`chromoseg.atomic.atomic_path` (synced to disk before the rename): a
    kill never leaves a half-written file."""
    from chromoseg.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


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


MODEL_FORMAT = "chromoseg-model"


def portable_paths(obj):
    """``obj`` (a training config: dicts, lists, strings) with each absolute path made one that names
    no machine: relative to the working folder where it lies below it (``datasets/gband/fit.json``),
    ``~/...`` below the home folder (``~/chromoseg-runs/NAME``), else its last two parts
    (``.../NAME/best.pt``). A new object; what is not a path is kept as it is."""
    if isinstance(obj, dict):
        return {k: portable_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_paths(v) for v in obj]
    if not (isinstance(obj, str) and obj.startswith("/")):
        return obj
    path = Path(obj)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            pass
    return ".../" + "/".join(path.parts[-2:])


def export_model(checkpoint: str | Path, out: str | Path, half: bool = True, metadata: dict | None = None) -> dict:
    """Write the weights of a ``chromoseg train`` checkpoint as a safetensors file (fp16 unless
    ``half=False``; integer buffers kept) with the build arguments in its metadata, and its ``stain``
    (brightfield for a model that inverts its images; fluorescence for another ``chromoseg train``
    run; ``metadata`` may say otherwise). The file is written atomically, with the usual file mode.
    Returns ``{"path", "bytes", "parameters", "epoch"}``."""
    import json

    from safetensors.torch import save_file

    from chromoseg.data.stain import stain_of

    ck = load_checkpoint(checkpoint)
    if "model_config" not in ck or "model" not in ck:
        raise ValueError(f"{checkpoint}: not a chromoseg training checkpoint (no model_config/model)")
    cfg = dict(ck["model_config"])
    cfg.pop("backbone_weights", None)
    tensors = {}
    for k, v in ck["model"].items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    meta = {"format": MODEL_FORMAT, "model_config": json.dumps(cfg, default=list),
            "train_config": json.dumps(portable_paths(ck.get("config", {})), default=str),
            "epoch": str(ck.get("epoch", ""))}
    # the stain: a brightfield model inverts its images; a `chromoseg train` run (its checkpoint holds its
    # config) that does not was trained with --stain fluorescence, the default; an explicit stain wins
    if cfg.get("invert") or (isinstance(ck.get("config"), dict) and ck["config"]):
        meta["stain"] = stain_of(bool(cfg.get("invert")))
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    from chromoseg.atomic import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:  # a normal file mode (0644 under the usual umask), as every other output
        save_file(tensors, str(tmp), metadata=meta)
    return {"path": str(out), "bytes": out.stat().st_size, "epoch": ck.get("epoch"),
            "parameters": sum(v.numel() for k, v in tensors.items() if v.is_floating_point())}


def read_metadata(path: str | Path) -> dict:
    """The string metadata of an exported ``.safetensors`` model (``{}`` for a training checkpoint)."""
    if Path(path).suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:
        raise ValueError(f"{path}: cannot read safetensors file ({err})") from err


def read_exported(path: str | Path) -> tuple[dict, dict]:
    """(state dict in float32, metadata) of a file written by :func:`export_model`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise ValueError(f"{path}: cannot read safetensors file ({err})") from err
    if meta.get("format") != MODEL_FORMAT or "model_config" not in meta:
        raise ValueError(f"{path}: not a chromoseg model (no {MODEL_FORMAT!r} metadata; "
                         "write one with `chromoseg export CHECKPOINT --out FILE`)")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state, meta


def load_model(path: str | Path, device="cpu", **overrides):
    """Rebuild a model from a checkpoint written by ``chromoseg train`` (``best.pt`` or ``last.pt``)
    or a ``.safetensors`` file from ``chromoseg export``, load its weights (as float32) and put it in
    eval mode. ``overrides`` change build arguments (e.g. ``box_score_thresh``)."""
    import json

    from chromoseg.models import build_model

    if Path(path).suffix == ".safetensors":
        state, meta = read_exported(path)
        cfg = json.loads(meta["model_config"])
        if cfg.get("image_size"):
            cfg["image_size"] = tuple(cfg["image_size"])
    else:
        ck = load_checkpoint(path)
        if "model_config" not in ck or "model" not in ck:
            raise ValueError(f"{path}: not a chromoseg training checkpoint (no model_config/model)")
        cfg, state = dict(ck["model_config"]), ck["model"]
    cfg.pop("backbone_weights", None)
    if "ed_layers" not in cfg:  # files from before 2026-11-30: read the branch's depth off the weights
        convs = {k.split(".")[3] for k in state if k.startswith("backbone.endpoint_branch.convs.")}
        if convs:
            cfg["ed_layers"] = len(convs) + 1
    cfg.update(overrides)
    model = build_model(**cfg)
    model.load_state_dict(state)
    return model.to(device).eval()


def read_state(path: str | Path) -> dict:
    """The model state dict (float32) of a training checkpoint or an exported ``.safetensors`` file."""
    if Path(path).suffix == ".safetensors":
        return read_exported(path)[0]
    ck = load_checkpoint(path)
    if "model" not in ck:
        raise ValueError(f"{path}: not a chromoseg training checkpoint (no model)")
    return ck["model"]


def load_matching_weights(model: torch.nn.Module, path: str | Path) -> tuple[int, list[str]]:
    """Initialise ``model`` from another chromoseg model file (checkpoint or export): every tensor
    whose name and shape agree is copied. Returns (tensors copied, names left as initialised).
    ``ValueError`` naming the file when nothing fits."""
    state = read_state(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor fits this model (another architecture?)")
    model.load_state_dict(usable, strict=False)
    left = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    return len(usable), left
