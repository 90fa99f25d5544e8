"""Masks kept in their own windows: one instance's mask is a small box-sized array plus its offset in
the image (:class:`MaskWindow`), never a full-size array per detection.

A chromosome covers a few thousand pixels of a 5-20 MP camera image; a stack of full-size masks, one
per detection, made prediction's memory grow with the image (8.9 GB at 2500 x 2500, the model's
masks as float32 full-size). Here the model's mask probabilities, their thresholded masks, the
areas, the IoUs of mask NMS and the COCO RLE of ``results.json`` are all computed in the windows;
:meth:`MaskWindow.full` (or :func:`full_mask`) pastes one into a full-size array where a consumer
needs one (the karyotype analysis, the overlay).

Pixel (i, j) of the window is pixel (y0 + i, x0 + j) of the image; the window lies inside the image.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .masks import _overlapping_pairs

__all__ = ["MaskWindow", "full_mask", "window_of", "window_areas", "window_iou", "window_nms",
           "window_rle", "swap_in_full_masks", "paste_masks_in_image_windows"]


@dataclass(frozen=True, eq=False)
class MaskWindow:
    """One mask in its window: ``data`` (``[h, w]``: a bool or float NumPy array, or a torch tensor) is
    pixels ``[y0:y0+h, x0:x0+w]`` of an image of ``image_size`` (H, W); every pixel outside is 0.

    ``shape`` is the full mask's (H, W), ``np.asarray(window)`` / ``astype`` its full-size array and
    ``sum`` / ``any`` / ``==`` those of the full mask, so code that takes a full mask that way takes a
    window too."""

    data: np.ndarray | Tensor
    x0: int
    y0: int
    image_size: tuple[int, int]

    def __post_init__(self):
        H, W = (int(v) for v in self.image_size)
        h, w = self.data.shape[-2:]
        object.__setattr__(self, "image_size", (H, W))
        object.__setattr__(self, "x0", int(self.x0))
        object.__setattr__(self, "y0", int(self.y0))
        if self.x0 < 0 or self.y0 < 0 or self.x0 + w > W or self.y0 + h > H:
            raise ValueError(f"window {w}x{h} at ({self.x0}, {self.y0}) is not inside the {W}x{H} image")

    @property
    def shape(self) -> tuple[int, int]:
        """The full mask's shape (H, W)."""
        return self.image_size

    ndim = 2

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the window in the image, end exclusive."""
        h, w = self.data.shape[-2:]
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    @property
    def area(self) -> int:
        """Foreground pixels (nonzero values)."""
        d = self.data
        return int(torch.count_nonzero(d)) if isinstance(d, Tensor) else int(np.count_nonzero(d))

    def full(self) -> np.ndarray | Tensor:
        """The full-size ``[H, W]`` mask (same dtype as ``data``; a new array)."""
        H, W = self.image_size
        x0, y0, x1, y1 = self.bounds
        if isinstance(self.data, Tensor):
            out = self.data.new_zeros((H, W))
        else:
            out = np.zeros((H, W), self.data.dtype)
        out[y0:y1, x0:x1] = self.data
        return out

    @property
    def dtype(self):
        """The data's dtype (bool for a thresholded mask)."""
        return self.data.dtype

    def any(self) -> bool:
        """Whether the mask has a foreground pixel."""
        return self.area > 0

    def sum(self):
        """The sum of the values (the area of a bool mask), as the full mask's ``sum()``."""
        return self.data.sum()

    def astype(self, dtype, **kwargs) -> np.ndarray:
        """The full-size NumPy array as ``dtype`` (as a full mask's ``astype``)."""
        return np.asarray(self).astype(dtype, **kwargs)

    def __eq__(self, other):  # elementwise on the full masks, as two arrays compare
        return np.asarray(self) == np.asarray(other)

    def __ne__(self, other):
        return np.asarray(self) != np.asarray(other)

    __hash__ = None  # mutable-array semantics (as an ndarray's)

    def __array__(self, dtype=None, copy=None):
        full = self.full()
        if isinstance(full, Tensor):
            full = full.cpu().numpy()
        return full if dtype is None else full.astype(dtype, copy=False)

    def threshold(self, value: float) -> "MaskWindow":
        """The bool mask ``data > value`` (NumPy), cut to its foreground's bounds (an empty mask: a 0 x 0
        window at the old origin)."""
        d = self.data
        b = (d > value).cpu().numpy() if isinstance(d, Tensor) else np.asarray(d) > value
        return MaskWindow(b, self.x0, self.y0, self.image_size).tight()

    def tight(self) -> "MaskWindow":
        """The same mask in the smallest window that holds its foreground."""
        d = self.data if not isinstance(self.data, Tensor) else self.data.cpu().numpy()
        rows = np.flatnonzero(d.any(1)) if d.size else np.zeros(0, np.int64)
        if rows.size == 0:
            return MaskWindow(d[:0, :0], self.x0, self.y0, self.image_size)
        cols = np.flatnonzero(d[rows[0]:rows[-1] + 1].any(0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        if (r0, c0) == (0, 0) and (r1, c1) == d.shape:
            return self
        return MaskWindow(d[r0:r1, c0:c1], self.x0 + c0, self.y0 + r0, self.image_size)

    def shifted(self, dx: int, dy: int, image_size: tuple[int, int]) -> "MaskWindow":
        """The window moved by whole pixels ``(dx, dy)`` into an image of ``image_size``, the part
        outside cut off (what :func:`chromoseg.ops.paste_shifted` does to a full mask)."""
        H, W = (int(v) for v in image_size)
        h, w = self.data.shape[-2:]
        x0, y0 = self.x0 + int(dx), self.y0 + int(dy)
        cx0, cy0 = max(0, -x0), max(0, -y0)
        cx1, cy1 = max(cx0, min(w, W - x0)), max(cy0, min(h, H - y0))
        return MaskWindow(self.data[cy0:cy1, cx0:cx1], min(max(x0 + cx0, 0), W), min(max(y0 + cy0, 0), H), (H, W))


def full_mask(mask) -> np.ndarray:
    """A full-size bool ``[H, W]`` NumPy mask from a :class:`MaskWindow` or a full mask (returned as it
    is when it already is a bool NumPy array)."""
    if isinstance(mask, MaskWindow):
        return np.asarray(mask, bool)
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    return m if m.dtype == bool else m != 0


def window_of(mask) -> MaskWindow:
    """A bool NumPy :class:`MaskWindow` from a window or a full mask (bool/int: nonzero, float: >= 0.5,
    as :func:`chromoseg.ops.mask_iou` takes them), cut to its foreground."""
    if not isinstance(mask, MaskWindow):
        mask = MaskWindow(mask, 0, 0, tuple(mask.shape[-2:]))
    d = mask.data.detach().cpu().numpy() if isinstance(mask.data, Tensor) else np.asarray(mask.data)
    d = d if d.dtype == bool else (d >= 0.5 if np.issubdtype(d.dtype, np.floating) else d != 0)
    return MaskWindow(d, mask.x0, mask.y0, mask.image_size).tight()


def window_areas(windows: list[MaskWindow]) -> Tensor:
    """Foreground pixels ``[N]`` (int64) of bool windows."""
    return torch.tensor([w.area for w in windows], dtype=torch.int64)


def window_iou(a: list[MaskWindow], b: list[MaskWindow] | None = None) -> Tensor:
    """IoU ``[N, M]`` (float32) between bool windows ``a`` and ``b`` (``b`` None: ``a`` with itself) of
    one image: each pair's intersection counted on the two windows' common part, the same numbers
    as :func:`chromoseg.ops.mask_iou` on the full masks. Two empty masks have IoU 0."""
    same = b is None
    b = a if same else b
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return torch.zeros((n, m), dtype=torch.float32)
    area_a = torch.tensor([float(w.area) for w in a], dtype=torch.float64)
    area_b = area_a if same else torch.tensor([float(w.area) for w in b], dtype=torch.float64)
    ba = torch.tensor([w.bounds for w in a], dtype=torch.int64).reshape(-1, 4)
    bb = ba if same else torch.tensor([w.bounds for w in b], dtype=torch.int64).reshape(-1, 4)
    inter = torch.zeros((n, m), dtype=torch.float64)
    for i, j, xa, ya, xb, yb in _overlapping_pairs(ba, bb, area_a, area_b):
        if same and j < i:  # (j, i) came first: pairs by row
            inter[i, j] = inter[j, i]
            continue
        wa, wb = a[i], b[j]
        pa = wa.data[ya - wa.y0:yb - wa.y0, xa - wa.x0:xb - wa.x0]
        pb = wb.data[ya - wb.y0:yb - wb.y0, xa - wb.x0:xb - wb.x0]
        inter[i, j] = float(np.count_nonzero(pa & pb))
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / union.clamp(min=1)).to(torch.float32)


def window_nms(windows: list[MaskWindow], scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy mask NMS on bool windows: int64 indices of the kept ones by decreasing score (the rule
    of :func:`chromoseg.ops.mask_nms`, on the windows)."""
    from .masks import greedy_keep

    return greedy_keep(window_iou(windows), scores, iou_threshold)


def window_rle(window: MaskWindow) -> dict:
    """COCO RLE (``counts`` a str, ``size`` [H, W]) of a bool window's full-size mask, made from the
    window: the same as ``pycocotools.mask.encode`` of the full mask (column-major runs), without it.
    Runs are counted on the window's columns padded to the image's height; the columns left and
    right of the window add to the first and last runs of zeros."""
    from pycocotools import mask as mask_utils

    H, W = window.image_size
    x0, y0, x1, y1 = window.bounds
    d = np.asarray(window.data, bool)
    if d.size == 0 or not d.any():
        counts = [H * W]
    else:
        strip = np.zeros((H, x1 - x0), np.uint8)
        strip[y0:y1] = d
        flat = strip.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(edges).tolist()
        if flat[0]:  # runs start with zeros
            runs.insert(0, 0)
        runs[0] += x0 * H
        tail = (W - x1) * H
        if tail:
            if len(runs) % 2 == 1:  # the last run is zeros
                runs[-1] += tail
            else:
                runs.append(tail)
        counts = runs
    rle = mask_utils.frPyObjects({"counts": counts, "size": [H, W]}, H, W)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def paste_masks_in_image_windows(masks: Tensor, boxes: Tensor, image_size) -> list[MaskWindow]:
    """What torchvision's ``paste_masks_in_image`` pastes (axis-aligned boxes, ``masks [N, 1, m, m]``),
    one window per box (float tensors, the same values), without the full-size stack."""
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    H, W = int(image_size[0]), int(image_size[1])
    if masks.shape[0] == 0:
        return []
    masks, scale = expand_masks(masks, padding=1)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    out = []
    for m, box in zip(masks, boxes):
        bx0, by0, bx1, by1 = (int(v) for v in box)
        w, h = max(bx1 - bx0 + 1, 1), max(by1 - by0 + 1, 1)
        x0, x1, y0, y1 = max(bx0, 0), min(bx1 + 1, W), max(by0, 0), min(by1 + 1, H)
        if x1 <= x0 or y1 <= y0:
            out.append(MaskWindow(m.new_zeros((0, 0)), min(x0, W), min(y0, H), (H, W)))
            continue
        r = F.interpolate(m[0].expand((1, 1, -1, -1)), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out.append(MaskWindow(r[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0], x0, y0, (H, W)))
    return out


@contextlib.contextmanager
def swap_in_full_masks(instances: list[dict], key: str = "mask"):
    """Within the block, each instance's ``key`` that is a :class:`MaskWindow` is its full-size bool
    mask, in the same dicts (so what the block's code marks on them stays: e.g. the karyotype
    analysis's ``not_chromosome``); afterwards the windows are back. For code that needs full masks
    (:mod:`chromoseg.karyotype`): the full masks exist only for the block's duration."""
    swapped = []
    try:
        for inst in instances:
            m = dict.get(inst, key)  # the stored value (a dict subclass may paste on access)
            if isinstance(m, MaskWindow):
                inst[key] = full_mask(m)
                swapped.append((inst, m))
        yield instances
    finally:
        for inst, m in swapped:
            if isinstance(dict.get(inst, key), np.ndarray):
                inst[key] = m
