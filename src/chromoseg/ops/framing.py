"""Framing: where a metaphase lies in its image, so every image reaches the network at one scale.

A camera frames a cell however it likes: the metaphase may fill the field or sit small in a large
empty one. Resizing the whole image to the network's input makes chromosome size depend on that
framing. :func:`frame_box` finds the metaphase's extent from the image alone (the pixels that differ
from the background, whichever the polarity: dark G-band chromosomes on light, bright DAPI ones on
dark) and returns the crop -- the extent plus a margin, widened to the input's aspect ratio, possibly
reaching past the image (that part is filled with the background) -- that training and inference both
resize to the input. Where the image's pixel size is known and the model records the pixel size it
was trained at, :func:`pixel_size_box` gives the crop of the physical scale instead (a chromosome's
width in micrometres is nearly constant), centred on the metaphase. Coordinates are continuous
pixels, ``(x0, y0, x1, y1)`` integers.
"""
from __future__ import annotations

import numpy as np

#: margin around the metaphase's extent, as a fraction of its longer side, plus a few pixels
FRAME_MARGIN = 0.02
FRAME_MARGIN_PX = 8


def background_level(image: np.ndarray) -> float:
    """The image's background grey level: its median (a metaphase image is mostly background)."""
    return float(np.median(np.asarray(image, dtype=np.float32)))


def content_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounds ``(x0, y0, x1, y1)`` of the pixels that stand out from the background of a grey image
    (values in [0, 1]), or None when nothing does. A pixel stands out when its 5 x 5 mean differs from
    the median by more than Otsu's threshold of those differences (and at least 0.04); specks smaller
    than 3 x 3 are opened away and the extreme 0.1 % of the remaining pixels on each side ignored."""
    import cv2

    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"content_box needs a 2-D image, got shape {img.shape}")
    step = max(1, int(max(img.shape) // 1024))  # large images: measured on every step-th pixel
    small = img[::step, ::step]
    d = np.abs(cv2.blur(small, (5, 5)) - np.median(small))
    d8 = np.clip(d * 255.0, 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = (d8 > max(t, 0.04 * 255)).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(fg)
    if xs.size < 16:
        return None
    x0, x1 = np.quantile(xs, [0.001, 0.999])
    y0, y1 = np.quantile(ys, [0.001, 0.999])
    return (int(x0 * step), int(y0 * step), int(np.ceil((x1 + 1) * step)), int(np.ceil((y1 + 1) * step)))


def frame_box(image: np.ndarray, size: tuple[int, int] | None = None, margin: float = FRAME_MARGIN,
              margin_px: int = FRAME_MARGIN_PX) -> tuple[int, int, int, int]:
    """The crop ``(x0, y0, x1, y1)`` that frames the metaphase in ``image``: its :func:`content_box`
    grown by ``margin`` of its longer side plus ``margin_px`` on every side, then widened about its
    centre to the aspect ratio of ``size = (H, W)`` (the network's input) so that the resize to it is
    the same in x and y. May reach past the image (fill that part with :func:`background_level`).
    Without content the whole image is framed (at the aspect ratio)."""
    H, W = np.asarray(image).shape[-2:]
    box = content_box(image)
    if box is None:
        x0, y0, x1, y1 = 0.0, 0.0, float(W), float(H)
    else:
        x0, y0, x1, y1 = (float(v) for v in box)
        m = margin * max(x1 - x0, y1 - y0) + margin_px
        x0, y0, x1, y1 = x0 - m, y0 - m, x1 + m, y1 + m
    if size is not None:
        aspect = float(size[1]) / float(size[0])  # W / H of the input
        w, h = x1 - x0, y1 - y0
        if w / h < aspect:
            w = h * aspect
        else:
            h = w / aspect
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        x0, x1, y0, y1 = cx - w / 2.0, cx + w / 2.0, cy - h / 2.0, cy + h / 2.0
    return (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))


#: the pixel-size rule's crop may be at most this many times the image's area (it reaches past the
#: image where the image's field is smaller than the model's input at its training pixel size; the
#: masks are pasted at the crop's size, so this bounds their memory): beyond it the image is framed
PIXEL_BOX_MAX_AREA = 2.0


def pixel_size_box(image: np.ndarray, size: tuple[int, int], scale: float, margin: float = FRAME_MARGIN,
                   margin_px: int = FRAME_MARGIN_PX) -> tuple[tuple[int, int, int, int], str | None]:
    """The crop ``(x0, y0, x1, y1)`` that brings ``image`` to the network input ``size = (H, W)`` at
    ``scale`` input pixels per image pixel (the image's pixel size over the model's training pixel
    size, both in micrometres): ``W / scale`` by ``H / scale`` image pixels centred on the metaphase (the
    centre of :func:`frame_box`; the image's centre without content). Returns ``(box, note)``: ``note``
    None when that crop is used; else the crop is :func:`frame_box`'s and ``note`` says why -- the
    framed metaphase does not fit the crop (at the model's pixel size it is larger than the input), or
    the crop is over :data:`PIXEL_BOX_MAX_AREA` times the image's area."""
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number of input pixels per image pixel, got {scale!r}")
    H, W = np.asarray(image).shape[-2:]
    framed = frame_box(image, size, margin, margin_px)
    w, h = float(size[1]) / scale, float(size[0]) / scale
    bw, bh = int(round(w)), int(round(h))
    if framed[2] - framed[0] > bw + 1 or framed[3] - framed[1] > bh + 1:
        return framed, (f"the metaphase ({framed[2] - framed[0]} x {framed[3] - framed[1]} px framed) is larger than "
                        f"the model's input at its training pixel size ({bw} x {bh} px): framed instead")
    if bw * bh > PIXEL_BOX_MAX_AREA * H * W:
        return framed, (f"the model's input at its training pixel size ({bw} x {bh} px) would take in over "
                        f"{PIXEL_BOX_MAX_AREA:g} times the image ({W} x {H} px): framed instead")
    cx, cy = (framed[0] + framed[2]) / 2.0, (framed[1] + framed[3]) / 2.0
    x0, y0 = int(np.floor(cx - bw / 2.0)), int(np.floor(cy - bh / 2.0))
    return (x0, y0, x0 + max(bw, 1), y0 + max(bh, 1)), None


def paste_shifted(x, dx: int, dy: int, out_hw: tuple[int, int], fill: float = 0):
    """``x [..., h, w]`` (a NumPy array or a torch tensor) moved by whole pixels ``(dx, dy)`` onto a
    canvas ``[..., H, W]`` of ``out_hw`` filled with ``fill``: a crop, a pad or both, exactly."""
    H, W = out_hw
    h, w = x.shape[-2:]
    shape = (*x.shape[:-2], H, W)
    out = x.new_full(shape, fill) if hasattr(x, "new_full") else np.full(shape, fill, dtype=x.dtype)
    sx0, sy0, sx1, sy1 = max(0, -dx), max(0, -dy), min(w, W - dx), min(h, H - dy)
    if sx1 > sx0 and sy1 > sy0:
        out[..., sy0 + dy:sy1 + dy, sx0 + dx:sx1 + dx] = x[..., sy0:sy1, sx0:sx1]
    return out


def crop_padded(image, box: tuple[int, int, int, int], fill: float):
    """``image[..., y0:y1, x0:x1]``, the part outside the image filled with ``fill``."""
    x0, y0, x1, y1 = box
    return paste_shifted(image, -x0, -y0, (y1 - y0, x1 - x0), fill)
