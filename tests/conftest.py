"""Shared test helpers: where the real data lives, and small synthetic sets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``../shared/data`` beside the repository, or ``$CHROMOSEG_DATA``."""
    env = os.environ.get("CHROMOSEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_data(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test with a clear message."""
    p = shared_data().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (set CHROMOSEG_DATA or put ../shared/data beside the repo)")
    return p


def make_tiny_checkpoint(path: Path, variant: str = "ermr") -> Path:
    """A randomly initialised small model saved as ``chromoseg train`` saves checkpoints."""
    from chromoseg.models import build_model
    from chromoseg.models.builder import SMALL

    cfg = dict(variant=variant, backbone="resnet18", image_size=(128, 160), **SMALL)
    torch.manual_seed(0)
    torch.save({"model": build_model(**cfg).state_dict(), "model_config": cfg}, path)
    return path
