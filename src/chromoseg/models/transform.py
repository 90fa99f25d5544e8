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
  (x0, y0, x1, y1 of the crop, image pixels) and ``scale_rule``;
* physical scale (at inference, with ``train_pixel_size_um``: the micrometres per input pixel the
  model was trained at): an image whose pixel size is known (:func:`input_scale` gives them per
  call) is cropped about its metaphase to the size that the resize brings to that pixel size
  (``chromoseg.ops.pixel_size_box``; ``scale_rule`` "pixel size"), whether ``frame`` is on or not;
  images without a pixel size are framed (``frame``) or taken whole as before;
* resize: to a fixed ``image_size=(H, W)`` (the paper: 512 x 640) or, with ``image_size=None``, the
  image keeps its size; targets follow (boxes, hboxes, rboxes, endpoints, masks, endpoint_heatmap);
* batch: zero-padded to a multiple of ``size_divisible`` (torchvision's ``ImageList``);
* ``postprocess`` maps the detections back to the original image size and pastes the mask
  probabilities (rotated RoIs with ``paste_masks_rotated``, axis-aligned ones with torchvision's
  ``paste_masks_in_image``), giving ``masks [N,1,H,W]`` float probabilities like torchvision, or
  with ``mask_windows`` on (the predictor's) the same probabilities in each box's window
  (``mask_windows``: :class:`chromoseg.ops.MaskWindow` per detection), never at the image's size.

Anisotropic resizing of a rotated box is done on its two side vectors (the parallelogram is
approximated by the rectangle along the scaled long side with the parallelogram's area); it
is exact when the two scale factors are equal and nearly so for the small aspect changes used here.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
import torch.nn.functional as F


class InputCrop(tuple):
    """The crop ``(x0, y0, x1, y1)`` an image was resized to the input from, with the rule that chose it
    (``rule``: "pixel size" or "framing"; ``note``: why the pixel-size rule was not used, or None)."""

    def __new__(cls, box, rule: str, note: str | None = None):
        obj = super().__new__(cls, (int(v) for v in box))
        obj.rule, obj.note = rule, note
        return obj


@contextlib.contextmanager
def input_scale(model, pixel_sizes=None, train_pixel_size_um: float | None = None):
    """For the duration of one inference call of ``model`` (a model with a :class:`ChromoTransform`):
    the images' pixel sizes (``pixel_sizes``, one per image, micrometres per pixel or None) and the
    pixel size the model was trained at (None or 0: none), so that its transform brings each image with
    a pixel size to the training one. A model without such a transform is left alone."""
    t = getattr(model, "transform", None)
    if not isinstance(t, ChromoTransform):
        yield
        return
    before = (t.pixel_sizes, t.train_pixel_size_um)
    t.pixel_sizes = list(pixel_sizes) if pixel_sizes is not None else None
    t.train_pixel_size_um = float(train_pixel_size_um) if train_pixel_size_um else None
    try:
        yield
    finally:
        t.pixel_sizes, t.train_pixel_size_um = before


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
        #: at inference: each detection's mask probabilities as ``mask_windows`` (a list of
        #: :class:`chromoseg.ops.MaskWindow`, the box-sized window of the image each covers) instead of
        #: torchvision's ``masks [N, 1, H, W]`` at the image's size (``Predictor`` turns it on: the
        #: memory no longer grows with the image times the detections)
        self.mask_windows = False
        #: set per inference call by :func:`input_scale`: each image's pixel size (micrometres per
        #: pixel, None when unknown) and the model's training pixel size at the input (None: none)
        self.pixel_sizes: list | None = None
        self.train_pixel_size_um: float | None = None

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

    def forward(self, images, targets=None, pixel_sizes=None, train_pixel_size_um=None):
        """``pixel_sizes`` (each image's micrometres per pixel, None: unknown) and
        ``train_pixel_size_um`` (the model's at its input; None or 0: none): this call's, for the scale
        rule (not given: :attr:`pixel_sizes` and :attr:`train_pixel_size_um`, :func:`input_scale`'s)."""
        from torchvision.models.detection.image_list import ImageList

        if pixel_sizes is None:
            pixel_sizes, train_pixel_size_um = self.pixel_sizes, self.train_pixel_size_um
        out_imgs, out_tgts, frames = [], [], []
        for i, img in enumerate(images):
            img = self._channels(img).float()
            if targets is None and not self.training:
                px = pixel_sizes[i] if pixel_sizes is not None and i < len(pixel_sizes) else None
                if self.image_size and train_pixel_size_um and px:
                    img, box = self._scaled(img, float(px) / float(train_pixel_size_um))
                    frames.append(box)
                elif self.frame:
                    img, box = self._framed(img)
                    frames.append(box)
                else:
                    frames.append(None)
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
        image_list.frames = frames if any(f is not None for f in frames) else None  # read by postprocess
        return image_list, (out_tgts if targets is not None else None)

    def _framed(self, img: torch.Tensor):
        """``img [C, H, W]`` cropped to its metaphase (:func:`chromoseg.ops.frame_box`) and the crop box."""
        from chromoseg.ops import background_level, crop_padded, frame_box

        grey = img.mean(0).cpu().numpy()
        box = InputCrop(frame_box(grey, self.image_size), "framing")
        H, W = grey.shape
        if box == (0, 0, W, H):
            return img, box
        return crop_padded(img, box, background_level(grey)), box

    def _scaled(self, img: torch.Tensor, scale: float):
        """``img [C, H, W]`` cropped about its metaphase so that the resize to the input is ``scale``
        input pixels per image pixel (:func:`chromoseg.ops.pixel_size_box`; framed where that does not
        fit), and the crop box."""
        from chromoseg.ops import background_level, crop_padded, pixel_size_box

        grey = img.mean(0).cpu().numpy()
        box, note = pixel_size_box(grey, self.image_size, scale)
        box = InputCrop(box, "framing" if note else "pixel size", note)
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
            if "masks" in res and self.mask_windows:  # the same values, each in its box's window
                from chromoseg.ops import paste_masks_in_image_windows, paste_masks_rotated_windows

                m = res.pop("masks")
                res["mask_windows"] = (paste_masks_rotated_windows(m[:, 0], res["rboxes"], (oh, ow))
                                       if "rboxes" in res else paste_masks_in_image_windows(m, res["boxes"], (oh, ow)))
            elif "masks" in res:
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
        if "mask_windows" in res:
            res["mask_windows"] = [w.shifted(int(frame[0]), int(frame[1]), (H, W)) for w in res["mask_windows"]]
        res["frame"] = torch.tensor([float(v) for v in frame])
        if isinstance(frame, InputCrop):  # the rule that chose the crop (framing_of records it)
            res["scale_rule"] = frame.rule
            if frame.note:
                res["scale_note"] = frame.note

