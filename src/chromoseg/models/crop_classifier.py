"""A second-stage chromosome classifier over each instance's crop, turned upright by its rotated box.

The RoI head classifies from 7x7 FPN features shared with box regression; a chromosome's class is
better read from its own pixels at full resolution and from its length relative to the other
chromosomes of the cell (the classic karyotyping cues: size, centromere position, bands). For each
instance:

* :func:`instance_crops`: the image and the instance's own mask sampled in its rotated box (widened
  by ``pad``: 15 % along, 40 % across), the long side along the crop's columns (``rroi_align``):
  ``[N, 2, 24, 64]`` (channel 0 the image standardised per cell, channel 1 the mask, cut from the
  mask's own window: :class:`~chromoseg.ops.MaskWindow`, or a full mask);
* :func:`relative_lengths`: the box's long side divided by the cell's mean (1 = an average
  chromosome; 46 chromosomes assumed only through the mean);
* :class:`CropClassifier`: four conv-BN-ReLU blocks with pooling, global average pooling, the
  relative length (and its square) appended, two linear layers -> 24 class logits;
* :class:`CropClassifierEnsemble`: several of them (e.g. trained from different starts), their class
  probabilities averaged; :func:`build_crop_classifier` makes either from a model's config.

Training (``chromoseg.engine.crop_classifier``) uses ground-truth instances with random 180-degree
turns and mirror flips (a chromosome's two ends are not told apart by the box). At prediction it
replaces the RoI head's class probabilities of the final instances (``Predictor``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

CROP_SIZE = (24, 64)  # rows (across the chromosome), columns (along it)
PAD = (1.15, 1.4)  # box widened along (w) and across (h)
_WINDOW_BATCH = 1 << 21  # mask-window pixels per rroi_align call (windows padded to the largest)


def instance_crops(image: torch.Tensor, masks, rboxes: torch.Tensor,
                   size: tuple[int, int] = CROP_SIZE, pad: tuple[float, float] = PAD) -> torch.Tensor:
    """Upright crops ``[N, 2, *size]`` of ``image [H, W]`` (float) and each instance's mask in its rotated
    box ``rboxes [N, 5]`` (canonical: w the long side). ``masks``: one per instance, each a
    :class:`~chromoseg.ops.MaskWindow` of the image or a full ``[H, W]`` mask, or an ``[N, H, W]`` stack
    (bool, integer or float: the mask channel samples the values). Each crop's mask channel is cut
    from its own window: no full-size array per instance is made."""
    from chromoseg.ops import rroi_align

    n = rboxes.shape[0]
    if n == 0:
        return image.new_zeros((0, 2) + tuple(size))
    windows = _mask_windows(masks, image.shape[-2:])
    if len(windows) != n:
        raise ValueError(f"{len(windows)} masks for {n} rotated boxes")
    img = _standardised(image.float(), windows)
    r = _padded_rboxes(rboxes, size, pad)
    a = rroi_align(img[None, None], torch.cat([torch.zeros(n, 1), r], 1), size, sampling_ratio=2)
    return torch.cat([a, _mask_crops(windows, r, image.shape[-2:], size).to(a)], 1)


def _mask_windows(masks, image_size) -> list:
    """``masks`` as :class:`~chromoseg.ops.MaskWindow` s of an image of ``image_size`` (H, W): a window
    as it is, a full mask as a window over the whole image (a view, no copy)."""
    from chromoseg.ops import MaskWindow

    H, W = (int(v) for v in image_size)
    out = [m if isinstance(m, MaskWindow) else MaskWindow(m, 0, 0, tuple(m.shape[-2:])) for m in masks]
    for w in out:
        if w.image_size != (H, W):
            raise ValueError(f"a mask of a {w.image_size[1]}x{w.image_size[0]} image for a {W}x{H} image")
    return out


def _as_tensor(data) -> torch.Tensor:
    """A window's data (or a part of it) as a torch tensor (NumPy: copied only where its strides need it)."""
    return data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))


def _standardised(img: torch.Tensor, windows: list) -> torch.Tensor:
    """``img`` standardised by the mean and standard deviation of the cell's pixels (those of any
    instance's mask, nonzero values; the whole image where the masks hold 10 pixels or fewer)."""
    fg = torch.zeros(img.shape, dtype=torch.bool, device=img.device)
    for w in windows:
        x0, y0, x1, y1 = w.bounds
        fg[y0:y1, x0:x1] |= _as_tensor(w.data).to(img.device) != 0
    px = img[fg]
    mu, sd = (px.mean(), px.std()) if px.numel() > 10 else (img.mean(), img.std())
    return (img - mu) / sd.clamp(min=1e-3)


def _padded_rboxes(rboxes: torch.Tensor, size: tuple[int, int], pad: tuple[float, float]) -> torch.Tensor:
    """The rotated boxes (float32) widened by ``pad`` (along, across), none thinner than the crop's grid
    allows (half its aspect ratio)."""
    r = rboxes.float().clone()
    r[:, 2] *= pad[0]
    r[:, 3] = torch.maximum(r[:, 3] * pad[1], r[:, 2] / size[1] * size[0] * 0.5)
    return r


def _mask_crops(windows: list, r: torch.Tensor, image_size, size: tuple[int, int]) -> torch.Tensor:
    """Each mask sampled in its padded rotated box ``r [N, 5]``: ``[N, 1, *size]`` (float32). Each mask
    only in its box's axis-aligned bounds (in the image); those regions, zero-padded to a common size,
    go through one ``rroi_align`` call per batch of ``_WINDOW_BATCH`` pixels, each with its own bounds."""
    from chromoseg.ops import rbox_to_hbox, rroi_align

    H, W = (int(v) for v in image_size)
    hb = rbox_to_hbox(r)
    x0 = hb[:, 0].floor().clamp(0, W - 1).long()
    y0 = hb[:, 1].floor().clamp(0, H - 1).long()
    x1 = torch.maximum(hb[:, 2].ceil().clamp(max=W).long(), x0 + 1)
    y1 = torch.maximum(hb[:, 3].ceil().clamp(max=H).long(), y0 + 1)
    hw = torch.stack((y1 - y0, x1 - x0), 1)
    rk = r.clone()
    rk[:, 0] -= x0
    rk[:, 1] -= y0
    out = torch.zeros((len(windows), 1) + tuple(size), device=r.device)
    box = torch.stack((x0, y0, x1, y1), 1).tolist()
    for idx, bh, bw in _batches(hw):
        buf = torch.zeros((len(idx), 1, bh, bw), device=r.device)
        for b, k in enumerate(idx):
            xa, ya, xb, yb = box[k]
            _paste_part(buf[b, 0, :yb - ya, :xb - xa], windows[k], xa, ya)
        rois = torch.cat([torch.arange(len(idx), dtype=r.dtype)[:, None], rk[idx]], 1)
        out[idx] = rroi_align(buf, rois, size, sampling_ratio=2, bounds=hw[idx])
    return out


def _batches(hw: torch.Tensor) -> list[tuple[list[int], int, int]]:
    """Regions of sizes ``hw [N, 2]`` (h, w) grouped for sampling: ``(indices, h, w)`` per batch, its
    regions padded to (h, w), at most ``_WINDOW_BATCH`` pixels (a larger region alone); similar sizes
    together (by area), so little padding."""
    order = (hw[:, 0] * hw[:, 1]).argsort().tolist()
    sizes = hw.tolist()
    batches, cur, bh, bw = [], [], 0, 0
    for k in order:
        h, w = max(bh, sizes[k][0]), max(bw, sizes[k][1])
        if cur and (len(cur) + 1) * h * w > _WINDOW_BATCH:
            batches.append((cur, bh, bw))
            cur, h, w = [], sizes[k][0], sizes[k][1]
        cur.append(k)
        bh, bw = h, w
    batches.append((cur, bh, bw))
    return batches


def _paste_part(dst: torch.Tensor, window, x0: int, y0: int) -> None:
    """Write into ``dst`` (the image's pixels ``[y0:y0+h, x0:x0+w]``, its shape ``[h, w]``) the part of
    ``window`` that falls in it; the rest of ``dst`` is left as it is."""
    h, w = dst.shape
    wx0, wy0, wx1, wy1 = window.bounds
    ax0, ay0, ax1, ay1 = max(x0, wx0), max(y0, wy0), min(x0 + w, wx1), min(y0 + h, wy1)
    if ax1 > ax0 and ay1 > ay0:
        part = window.data[ay0 - wy0:ay1 - wy0, ax0 - wx0:ax1 - wx0]
        dst[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = _as_tensor(part).to(dst.device)


def relative_lengths(rboxes: torch.Tensor) -> torch.Tensor:
    """Long side of each box over the cell's mean long side ``[N]``."""
    if rboxes.shape[0] == 0:
        return rboxes.new_zeros(0)
    w = rboxes[:, 2].float().clamp(min=1e-3)
    return w / w.mean()


class CropClassifier(nn.Module):
    """``forward(crops [N, 2, 24, 64], rel_length [N]) -> logits [N, 24]``."""

    def __init__(self, num_classes: int = 24, width: int = 16):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        c = [2, width, width * 2, width * 4, width * 4]
        blocks = []
        for a, b in zip(c[:-1], c[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                       nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d((1, 2)) if a == c[-2] else nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(c[-1] * 2 + 2, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                  nn.Linear(256, num_classes))

    def forward(self, crops: torch.Tensor, rel_length: torch.Tensor) -> torch.Tensor:
        f = self.features(crops)
        f = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        rl = rel_length.float()[:, None]
        return self.head(torch.cat([f, rl, rl * rl], 1))

    @torch.no_grad()
    def classify(self, image: torch.Tensor, masks, rboxes: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, 24]`` of one cell's instances (eval mode); ``masks`` as
        :func:`instance_crops` takes them (windows, full masks or a stack)."""
        if rboxes.shape[0] == 0:
            return rboxes.new_zeros((0, self.num_classes))
        crops = instance_crops(image, masks, rboxes)
        rl = relative_lengths(rboxes)
        # both ends first (the box does not orient it) and both mirror images (across the long axis):
        # on the M-FISH validation instances 76.5 % right with the first two, 77.2 % with all four
        # -- one batch of the four, channels-last (about half the CPU time of four NCHW calls)
        views = torch.cat((crops, crops.flip(-1), crops.flip(-2), crops.flip(-1).flip(-2)))
        logits = self(views.contiguous(memory_format=torch.channels_last), rl.repeat(4))
        return F.softmax(logits.view(4, crops.shape[0], -1).mean(0), dim=1)


class CropClassifierEnsemble(nn.Module):
    """The mean class probabilities of ``members`` (:class:`CropClassifier`, same classes):
    ``forward`` gives the log of the mean, so its softmax is the mean and it stands in for one
    classifier everywhere (training excepted: train the members one by one)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)
        if not len(self.members):
            raise ValueError("an ensemble needs at least one classifier")
        self.num_classes, self.width = self.members[0].num_classes, self.members[0].width

    def forward(self, crops: torch.Tensor, rel_length: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(crops, rel_length).float(), 1) for m in self.members])
        return logp.logsumexp(0) - math.log(len(self.members))

    classify = CropClassifier.classify


def build_crop_classifier(num_classes: int = 24, width: int | list[int] = 16, members: int = 1) -> nn.Module:
    """One :class:`CropClassifier`, or an ensemble of ``members`` of them (``members > 1``); ``width`` a
    list: an ensemble of one member per width (members of different widths)."""
    if isinstance(width, (list, tuple)):
        if len(width) < 2:
            raise ValueError(f"crop classifier widths {width}: a list names an ensemble's members, at least two")
        return CropClassifierEnsemble([CropClassifier(num_classes, int(w)) for w in width])
    if members > 1:
        return CropClassifierEnsemble([CropClassifier(num_classes, width) for _ in range(members)])
    return CropClassifier(num_classes, width)
