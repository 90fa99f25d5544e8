"""Input/output transform of the detection models (the role of torchvision's
``GeneralizedRCNNTransform``).

* grey input (values in [0, 1]): every image becomes ``in_channels`` channels (RGB is averaged to
  grey; grey is repeated when the backbone takes 3 channels); with ``invert=True`` (a brightfield
  model: dark chromosomes on a light background, G-band) it becomes ``1 - x``, so that the network
  always sees bright chromosomes on a dark background and fluorescence weights carry over; then
  ``(x - image_mean) / image_std``;
* framing (``frame=True``, at inference only; training data is framed by
  ``chromoseg.data.transforms.FrameToContent``): each image is first cropped to its metaphase with a
  margin at the input's aspect ratio (``chromoseg.ops.frame_box``; padded with the background grey
  where that reaches past the image), so chromosome size at the input no longer depends on how the
  camera framed the cell; detections are mapped back to the whole image and carry ``frame``
  (x0, y0, x1, y1 of the crop, image pixels);
* resize: to a fixed ``image_size=(H, W)`` (the paper: 512 x 640) or, with ``image_size=None``, the
  image keeps its size; targets follow (boxes, hboxes, rboxes, endpoints, masks, endpoint_heatmap);
* batch: zero-padded to a multiple of ``size_divisible`` (torchvision's ``ImageList``);
* ``postprocess`` maps the detections back to the original image size and pastes the mask
  probabilities (rotated RoIs with ``paste_masks_rotated``, axis-aligned ones with torchvision's
  ``paste_masks_in_image``), giving ``masks [N,1,H,W]`` float probabilities like torchvision.

Anisotropic resizing of a rotated box is done on its two side vectors (the parallelogram is
approximated by the rectangle along the scaled long side with the parallelogram's area); it
is exact when the two scale factors are equal and nearly so for the small aspect changes used here.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def canonical_rboxes(b: torch.Tensor) -> torch.Tensor:
    """w >= h, angle in [-90, 90) (local helper; same contract as ``chromoseg.ops.normalize_rboxes``)."""
    b = b.clone()
    swap = b[:, 3] > b[:, 2]
    w = torch.where(swap, b[:, 3], b[:, 2])
    h = torch.where(swap, b[:, 2], b[:, 3])
    a = torch.where(swap, b[:, 4] - 90.0, b[:, 4])
    a = torch.remainder(a + 90.0, 180.0) - 90.0
    return torch.stack([b[:, 0], b[:, 1], w, h, a], dim=1)


def scale_rboxes(b: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    if b.numel() == 0 or (sx == 1.0 and sy == 1.0):
        return b.clone()
    rad = b[:, 4] * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    ux, uy = c * b[:, 2] * sx, -s * b[:, 2] * sy  # long side
    vx, vy = s * b[:, 3] * sx, c * b[:, 3] * sy  # short side
    w = torch.hypot(ux, uy)
    h = (ux * vy - uy * vx).abs() / w.clamp(min=1e-6)  # same area as the scaled parallelogram
    a = torch.rad2deg(torch.atan2(-uy, ux))
    return canonical_rboxes(torch.stack([b[:, 0] * sx, b[:, 1] * sy, w, h, a], dim=1))


def scale_boxes(b: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    return b * torch.tensor([sx, sy, sx, sy], dtype=b.dtype, device=b.device)


class ChromoTransform(nn.Module):
    def __init__(self, image_size=(512, 640), image_mean: float = 0.5, image_std: float = 0.25,
                 size_divisible: int = 32, in_channels: int = 1, invert: bool = False, frame: bool = False):
        super().__init__()
        self.invert = bool(invert)
        self.frame = bool(frame)
        self.image_size = tuple(int(s) for s in image_size) if image_size else None
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.size_divisible = int(size_divisible)
        self.in_channels = int(in_channels)

    def _channels(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() == 2:
            img = img[None]
        if img.shape[0] == self.in_channels:
            return img
        if img.shape[0] == 3 and self.in_channels == 1:
            return img.mean(dim=0, keepdim=True)
        if img.shape[0] == 1:
            return img.expand(self.in_channels, -1, -1)
        raise ValueError(f"image with {img.shape[0]} channels; expected 1 or 3")

    def resize_target(self, target: dict, old_hw, new_hw) -> dict:
        (h, w), (nh, nw) = old_hw, new_hw
        sx, sy = nw / w, nh / h
        t = dict(target)
        for key in ("boxes", "hboxes"):
            if key in t:
                t[key] = scale_boxes(t[key].float(), sx, sy)
        if "rboxes" in t:
            t["rboxes"] = scale_rboxes(t["rboxes"].float(), sx, sy)
        if "endpoints" in t:
            e = t["endpoints"].float().clone()
            e[..., 0] *= sx
            e[..., 1] *= sy
            t["endpoints"] = e
        if "masks" in t and t["masks"].numel() > 0:
            m = t["masks"][:, None].float()
            t["masks"] = F.interpolate(m, size=(nh, nw), mode="nearest")[:, 0].to(torch.uint8)
        elif "masks" in t:
            t["masks"] = t["masks"].new_zeros((t["masks"].shape[0], nh, nw))
        if "endpoint_heatmap" in t:
            hm = t["endpoint_heatmap"].float()
            hm = hm.reshape(1, 1, *hm.shape[-2:])
            t["endpoint_heatmap"] = F.interpolate(hm, size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if "area" in t:
            t["area"] = t["area"] * (sx * sy)
        return t

    def forward(self, images, targets=None):
        from torchvision.models.detection.image_list import ImageList

        out_imgs, out_tgts, frames = [], [], []
        for i, img in enumerate(images):
            img = self._channels(img).float()
            if self.frame and targets is None and not self.training:
                img, box = self._framed(img)
                frames.append(box)
            h, w = img.shape[-2:]
            if self.invert:
                img = 1.0 - img
            img = (img - self.image_mean) / self.image_std
            if self.image_size and (h, w) != self.image_size:
                img = F.interpolate(img[None], size=self.image_size, mode="bilinear", align_corners=False)[0]
                if targets is not None:
                    out_tgts.append(self.resize_target(targets[i], (h, w), self.image_size))
            elif targets is not None:
                out_tgts.append(dict(targets[i]))
            out_imgs.append(img)
        image_sizes = [tuple(im.shape[-2:]) for im in out_imgs]
        batched = self.batch_images(out_imgs)
        image_list = ImageList(batched, image_sizes)
        image_list.frames = frames or None  # read by postprocess
        return image_list, (out_tgts if targets is not None else None)

    def _framed(self, img: torch.Tensor):
        """``img [C, H, W]`` cropped to its metaphase (:func:`chromoseg.ops.frame_box`) and the crop box."""
        from chromoseg.ops import background_level, crop_padded, frame_box

        grey = img.mean(0).cpu().numpy()
        box = frame_box(grey, self.image_size)
        H, W = grey.shape
        if box == (0, 0, W, H):
            return img, box
        return crop_padded(img, box, background_level(grey)), box

    def batch_images(self, images):
        d = self.size_divisible
        hmax = max(im.shape[-2] for im in images)
        wmax = max(im.shape[-1] for im in images)
        hmax = int(math.ceil(hmax / d) * d)
        wmax = int(math.ceil(wmax / d) * d)
        out = images[0].new_zeros((len(images), images[0].shape[0], hmax, wmax))
        for im, o in zip(images, out):
            o[:, : im.shape[-2], : im.shape[-1]].copy_(im)
        return out

    def postprocess(self, results, image_sizes, original_sizes, frames=None):
        from torchvision.models.detection.roi_heads import paste_masks_in_image

        frames = frames or [None] * len(results)
        for res, (h, w), full_hw, frame in zip(results, image_sizes, original_sizes, frames):
            oh, ow = full_hw if frame is None else (frame[3] - frame[1], frame[2] - frame[0])
            sx, sy = ow / w, oh / h
            for key in ("boxes", "hboxes"):
                if key in res:
                    res[key] = scale_boxes(res[key], sx, sy)
            if "rboxes" in res:
                res["rboxes"] = scale_rboxes(res["rboxes"], sx, sy)
            if "endpoints" in res:
                e = res["endpoints"].clone()
                e[..., 0] *= sx
                e[..., 1] *= sy
                res["endpoints"] = e
            if "masks" in res:
                m = res["masks"]
                if m.shape[0] == 0:
                    res["masks"] = m.new_zeros((0, 1, oh, ow))
                elif "rboxes" in res:
                    from chromoseg.ops import paste_masks_rotated

                    res["masks"] = paste_masks_rotated(m[:, 0], res["rboxes"], image_size=(oh, ow))[:, None]
                else:
                    res["masks"] = paste_masks_in_image(m, res["boxes"], (oh, ow))
            if "endpoint_heatmap" in res:
                hm = res["endpoint_heatmap"][None, :, :h, :w]
                res["endpoint_heatmap"] = F.interpolate(hm, size=(oh, ow), mode="bilinear", align_corners=False)[0]
            if frame is not None:
                self._unframe(res, frame, full_hw)
        return results

    @staticmethod
    def _unframe(res: dict, frame, full_hw) -> None:
        """Move one image's detections from its crop ``frame`` into the whole image of ``full_hw``."""
        from chromoseg.ops import paste_shifted

        x0, y0 = float(frame[0]), float(frame[1])
        H, W = full_hw
        for key in ("boxes", "hboxes"):
            if key in res:
                b = res[key] + torch.tensor([x0, y0, x0, y0], dtype=res[key].dtype, device=res[key].device)
                b[:, 0::2] = b[:, 0::2].clamp(0, W)
                b[:, 1::2] = b[:, 1::2].clamp(0, H)
                res[key] = b
        if "rboxes" in res:
            r = res["rboxes"].clone()
            r[:, 0] += x0
            r[:, 1] += y0
            res["rboxes"] = r
        if "endpoints" in res:
            e = res["endpoints"].clone()
            e[..., 0] += x0
            e[..., 1] += y0
            res["endpoints"] = e
        for key in ("masks", "endpoint_heatmap"):
            if key in res:
                res[key] = paste_shifted(res[key], int(frame[0]), int(frame[1]), (H, W))
        res["frame"] = torch.tensor([float(v) for v in frame])

