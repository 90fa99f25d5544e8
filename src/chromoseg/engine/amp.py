"""Mixed precision: when bf16 autocast is used on which device (training and prediction)."""
from __future__ import annotations

import contextlib

import torch


def autocast_context(amp: str, device: torch.device):
    """The autocast context ``amp`` asks for on ``device``: "off" none; "bf16" bf16; "auto" bf16 on a CPU
    with bf16 instructions, else none (``chromoseg.engine.predict.InferenceConfig.amp``)."""
    if amp not in ("auto", "off", "bf16"):
        raise ValueError(f"amp {amp!r}: use 'auto', 'off' or 'bf16'")
    if device.type == "cpu" and (amp == "bf16" or (amp == "auto" and cpu_has_native_bf16())):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def float32_outputs(out: dict) -> dict:
    """A model output dict with its floating tensors back in float32 (after an autocast call)."""
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}
