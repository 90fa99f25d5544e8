"""Intra-op threading control for op sequences made of many small tensor operations.

Rotated IoU / NMS and the RoIAlign sampling-matrix build run hundreds of element-wise steps on
tensors of a few thousand elements. With several intra-op threads each step may open an OpenMP
parallel region whose barrier waits for every thread; when the cores are shared with other
processes that wait can take a scheduler time slice (milliseconds) per step. These sequences
therefore run with one intra-op thread; the few heavy steps (the sparse-dense product in
``rroi_align``) run outside and use all threads. The previous setting is always restored.
``torch.set_num_threads`` is process-wide: another Python thread running torch CPU ops at the same
moment would also run single-threaded for that short time (results are unaffected).
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def serial_cpu(device: torch.device | str | None = "cpu"):
    """Context: one intra-op CPU thread inside (no-op for CUDA devices or when already 1)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n = torch.get_num_threads()
    if dev.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
