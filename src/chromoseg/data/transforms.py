"""Joint transforms of an image and its target (masks, both box kinds, endpoints).

Every transform takes and returns ``(image, target)``: ``image`` float32 ``[1, H, W]`` in [0, 1],
``target`` as described in ``docs/architecture.md``. Geometry is expressed as one affine map in
continuous pixel coordinates (pixel (i, j) covers x in [j, j+1), y in [i, i+1)), applied the same way
to everything:

- masks are resampled with nearest-neighbour, axis-aligned ``boxes`` are re-measured from the masks
  (or, for box-only targets, the transformed corners' enclosing box),
- ``hboxes`` (optional: the annotator's axis-aligned boxes where they are not the masks' bounds, e.g. the
  VOC boxes behind pseudo-masks) keep their margin around the mask's bounds: each side's margin is
  mapped exactly by flips, 90-degree turns and scaling, and becomes the mean margin times the scale
  under other turns,
- ``rboxes`` are mapped exactly for similarity maps (flips, rotations, uniform scale) and to first
  order otherwise; an instance that loses part of its mask at the image border gets its rbox re-measured,
- ``endpoints`` are mapped exactly,
- instances left with no pixels (or a box under one pixel) are removed.

The paper trains at 640x512 (width x height): ``Resize((512, 640))``.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F

INSTANCE_KEYS = ("boxes", "hboxes", "rboxes", "labels", "masks", "endpoints", "iscrowd", "area", "class_known")


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


# --------------------------------------------------------------------------- geometry core
def _apply_to_points(A: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    """Map ``[..., 2]`` points by the 2x3 (or 3x3) affine ``A``."""
    M = torch.as_tensor(A[:2], dtype=pts.dtype, device=pts.device)
    return pts @ M[:, :2].T + M[:, 2]


def _map_rboxes(A: np.ndarray, rboxes: torch.Tensor) -> torch.Tensor:
    from chromoseg.ops import normalize_rboxes

    if rboxes.numel() == 0:
        return rboxes.clone()
    L = torch.as_tensor(A[:2, :2], dtype=rboxes.dtype)
    a = torch.deg2rad(rboxes[:, 4])
    u = torch.stack([torch.cos(a), -torch.sin(a)], 1)  # long side direction
    v = torch.stack([torch.sin(a), torch.cos(a)], 1)  # short side direction
    Lu, Lv = u @ L.T, v @ L.T
    centre = _apply_to_points(A, rboxes[:, :2])
    w = rboxes[:, 2] * Lu.norm(dim=1)
    h = rboxes[:, 3] * Lv.norm(dim=1)
    ang = torch.rad2deg(torch.atan2(-Lu[:, 1], Lu[:, 0]))
    return normalize_rboxes(torch.cat([centre, w[:, None], h[:, None], ang[:, None]], 1))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of ``[N, H, W]`` masks in continuous pixels (empty masks give zeros)."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    m = masks.view(torch.uint8) if masks.dtype == torch.bool else masks  # uint8 reductions are far faster
    rows, cols = m.any(2).bool(), m.any(1).bool()
    h, w = m.shape[1:]
    ar_h = torch.arange(h)
    ar_w = torch.arange(w)
    big = 10 ** 9
    y0 = torch.where(rows, ar_h, big).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, big).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    boxes[~rows.any(1)] = 0
    return boxes


def _map_margins(A: np.ndarray, m: torch.Tensor) -> torch.Tensor:
    """Margins ``[N, 4]`` (left, top, right, bottom; pixels outward from a mask's bounds) under the
    linear part of ``A``: exact for axis-preserving maps (scales, flips) and 90-degree turns, else the
    mean margin times the map's scale on every side."""
    L = A[:2, :2]
    eps = 1e-9
    if abs(L[0, 1]) < eps and abs(L[1, 0]) < eps:  # x from x, y from y
        mx, my, fx, fy, sx, sy = m[:, [0, 2]], m[:, [1, 3]], L[0, 0] < 0, L[1, 1] < 0, abs(L[0, 0]), abs(L[1, 1])
    elif abs(L[0, 0]) < eps and abs(L[1, 1]) < eps:  # x from y, y from x (a 90-degree turn)
        mx, my, fx, fy, sx, sy = m[:, [1, 3]], m[:, [0, 2]], L[0, 1] < 0, L[1, 0] < 0, abs(L[0, 1]), abs(L[1, 0])
    else:
        mean = m.mean(1, keepdim=True) * math.sqrt(abs(np.linalg.det(L)))
        return mean.expand(-1, 4).clone()
    mx, my = mx * sx, my * sy
    if fx:
        mx = mx.flip(1)
    if fy:
        my = my.flip(1)
    return torch.stack([mx[:, 0], my[:, 0], mx[:, 1], my[:, 1]], 1)


def box_margins(hboxes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Margins ``[N, 4]`` (left, top, right, bottom) of ``hboxes`` around ``boxes`` (both xyxy)."""
    return torch.stack([boxes[:, 0] - hboxes[:, 0], boxes[:, 1] - hboxes[:, 1],
                        hboxes[:, 2] - boxes[:, 2], hboxes[:, 3] - boxes[:, 3]], 1)


def add_margins(boxes: torch.Tensor, margins: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``boxes`` (xyxy) grown by ``margins`` (left, top, right, bottom), clipped to an image of ``hw``."""
    H, W = hw
    out = boxes + margins * torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=boxes.dtype)
    out[:, 0::2] = out[:, 0::2].clamp(0, W)
    out[:, 1::2] = out[:, 1::2].clamp(0, H)
    return out


def _keep(target: dict, keep: torch.Tensor) -> dict:
    out = dict(target)
    if bool(keep.all()):
        return out
    for k in INSTANCE_KEYS:
        if k in out:
            out[k] = out[k][keep]
    return out


def _sampling_grid(A: np.ndarray, in_hw, out_hw) -> torch.Tensor:
    """grid_sample grid: output pixel centres -> input continuous coordinates -> [-1, 1]."""
    (Hin, Win), (H, W) = in_hw, out_hw
    Ainv = np.linalg.inv(A)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    src_x = Ainv[0, 0] * xs + Ainv[0, 1] * ys + Ainv[0, 2]
    src_y = Ainv[1, 0] * xs + Ainv[1, 1] * ys + Ainv[1, 2]
    return torch.stack([src_x / Win * 2 - 1, src_y / Hin * 2 - 1], -1)[None].float()


def _integer_shift(A: np.ndarray) -> tuple[int, int] | None:
    """``(dx, dy)`` when ``A`` is a pure translation by whole pixels, else None."""
    if np.allclose(A[:2, :2], np.eye(2)) and np.allclose(A[:2, 2], np.round(A[:2, 2])):
        return int(round(A[0, 2])), int(round(A[1, 2]))
    return None


def affine(image: torch.Tensor, target: dict, A: np.ndarray, out_hw: tuple[int, int], *, exact_grid: bool = False,
           flip_dims: tuple[int, ...] | None = None, fill: float | None = None):
    """Apply the affine map ``A`` (3x3, continuous coordinates, old -> new) and crop to ``out_hw``.

    ``exact_grid``: ``A`` maps pixel centres onto pixel centres (flips, 90-degree turns), so the image
    is moved without interpolation. ``flip_dims``: ``A`` is exactly a mirror of these dims (-1 = x,
    -2 = y) of an image of size ``out_hw``; image and masks are then flipped in memory (the same
    result as resampling, far cheaper). A whole-pixel translation (a crop or pad) is moved in memory.
    ``fill``: the grey level of output pixels from outside the image (default: the nearest border pixel).
    """
    if flip_dims:
        return image.flip(flip_dims), affine_target(target, A, image.shape[-2:], out_hw, flip_dims=flip_dims)
    shift = _integer_shift(A)
    if shift is not None:  # a crop or pad: moved in memory, exactly
        from chromoseg.ops import paste_shifted

        new_image = paste_shifted(image, *shift, out_hw, fill=float(fill) if fill is not None else 0.0)
        return new_image, affine_target(target, A, image.shape[-2:], out_hw)
    grid = _sampling_grid(A, image.shape[-2:], out_hw)
    mode = "nearest" if exact_grid else "bilinear"
    if fill is None:
        new_image = F.grid_sample(image[None], grid, mode=mode, padding_mode="border", align_corners=False)[0]
    else:
        new_image = F.grid_sample(image[None] - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)[0] + fill
    return new_image, affine_target(target, A, image.shape[-2:], out_hw, grid=grid)


def _mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """Pixel count ``[N]`` (float32) of 0/1 masks ``[N, H, W]`` (``chromoseg.ops.mask_areas``: counted in
    each mask's window, far cheaper on CPU than count_nonzero over a flattened dim)."""
    from chromoseg.ops import mask_areas

    return mask_areas(masks).float()


def affine_target(target: dict, A: np.ndarray, in_hw, out_hw, grid: torch.Tensor | None = None,
                  flip_dims: tuple[int, ...] | None = None) -> dict:
    """The target half of :func:`affine`."""
    H, W = out_hw
    shift = None if flip_dims else _integer_shift(A)
    if grid is None and not flip_dims and shift is None:
        grid = _sampling_grid(A, in_hw, out_hw)
    t = dict(target)
    has_masks = bool(t.get("has_masks", torch.tensor(True)))
    n = t["labels"].shape[0]
    if has_masks and n:
        masks = t["masks"]
        area_before = _mask_areas(masks) * abs(np.linalg.det(A[:2, :2]))
        if flip_dims:
            new_masks = masks.flip(flip_dims)
        elif shift is not None:
            from chromoseg.ops import paste_shifted

            new_masks = paste_shifted(masks, *shift, out_hw)
        else:
            new_masks = F.grid_sample(masks[:, None].float(), grid.expand(n, -1, -1, -1), mode="nearest",
                                      padding_mode="zeros", align_corners=False)[:, 0].to(torch.uint8)
        t["masks"] = new_masks
        margins = box_margins(t["hboxes"].float(), t["boxes"].float()) if "hboxes" in t else None
        t["boxes"] = masks_to_boxes(new_masks)
        if margins is not None:
            t["hboxes"] = add_margins(t["boxes"], _map_margins(A, margins), (H, W))
        t["area"] = _mask_areas(new_masks)
        t["rboxes"] = _map_rboxes(A, t["rboxes"])
        cut = t["area"] < 0.95 * area_before  # lost pixels at the border: measure the rbox again
        if cut.any():
            from chromoseg.ops import masks_to_rboxes

            nonempty = cut & (t["area"] > 0)
            if nonempty.any():
                t["rboxes"][nonempty] = masks_to_rboxes(new_masks[nonempty].bool()).to(t["rboxes"].dtype)
        keep = t["area"] > 0
    else:
        if "masks" in t:
            t["masks"] = torch.zeros((n, H, W), dtype=torch.uint8)
        if n:
            b = t["boxes"]
            corners = torch.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], 1)
            c = _apply_to_points(A, corners)
            nb = torch.cat([c.min(1).values, c.max(1).values], 1)
            nb[:, 0::2] = nb[:, 0::2].clamp(0, W)
            nb[:, 1::2] = nb[:, 1::2].clamp(0, H)
            t["boxes"] = nb
            t["area"] = (nb[:, 2] - nb[:, 0]) * (nb[:, 3] - nb[:, 1])
            t["rboxes"] = _map_rboxes(A, t["rboxes"])
        keep = torch.ones(n, dtype=torch.bool)
    if n:
        bw = t["boxes"][:, 2] - t["boxes"][:, 0]
        bh = t["boxes"][:, 3] - t["boxes"][:, 1]
        keep &= (bw >= 1) & (bh >= 1)
        ends = _apply_to_points(A, t["endpoints"].reshape(-1, 2)).reshape(-1, 2, 2)
        outside = (ends[..., 0] < 0) | (ends[..., 0] > W) | (ends[..., 1] < 0) | (ends[..., 1] > H)
        if has_masks and outside.any():  # the end was cut off: use the mask's pixel nearest to it
            for k, j in torch.nonzero(outside & keep[:, None]).tolist():
                ys, xs = torch.nonzero(t["masks"][k], as_tuple=True)
                pts = torch.stack([xs, ys], 1).to(ends.dtype) + 0.5
                ends[k, j] = pts[(pts - ends[k, j]).norm(dim=1).argmin()]
        ends[..., 0].clamp_(0, W)
        ends[..., 1].clamp_(0, H)
        t["endpoints"] = ends
        t = _keep(t, keep)
    return t


# --------------------------------------------------------------------------- transforms
class Resize:
    """Resize to ``size = (height, width)`` (the paper: ``(512, 640)``), aspect ratio not kept.

    The image is resampled with area averaging when shrinking (no aliasing) and bilinearly when
    growing; everything else follows the same scale map.
    """

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, target):
        import cv2

        H, W = self.size
        Hin, Win = image.shape[-2:]
        if (Hin, Win) == (H, W):
            return image, target
        A = np.diag([W / Win, H / Hin, 1.0])
        target = affine_target(target, A, (Hin, Win), (H, W))
        interp = cv2.INTER_AREA if H * W < Hin * Win else cv2.INTER_LINEAR
        new_image = torch.from_numpy(cv2.resize(image[0].numpy(), (W, H), interpolation=interp))[None]
        return new_image, target

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class RandomFlip:
    """Mirror left-right (``axis="x"``) or top-bottom (``axis="y"``) with probability ``p``; exact."""

    def __init__(self, axis: str = "x", p: float = 0.5):
        if axis not in ("x", "y"):
            raise ValueError(f"axis must be 'x' or 'y', not {axis!r}")
        self.axis, self.p = axis, p

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        H, W = image.shape[-2:]
        if self.axis == "x":
            A = np.array([[-1.0, 0, W], [0, 1, 0], [0, 0, 1]])
        else:
            A = np.array([[1.0, 0, 0], [0, -1, H], [0, 0, 1]])
        return affine(image, target, A, (H, W), exact_grid=True, flip_dims=(-1,) if self.axis == "x" else (-2,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(RandomFlip):
    def __init__(self, p: float = 0.5):
        super().__init__("x", p)


class RandomVerticalFlip(RandomFlip):
    def __init__(self, p: float = 0.5):
        super().__init__("y", p)


def rotation_matrix(degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """3x3 map turning the image ``degrees`` counter-clockwise on screen about ``centre`` (x, y)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    cx, cy = centre
    # counter-clockwise on screen with y down: x' = c x + s y, y' = -s x + c y (about the centre)
    R = np.array([[c, s, 0.0], [-s, c, 0.0], [0, 0, 1]])
    T1 = np.array([[1.0, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    T2 = np.array([[1.0, 0, cx], [0, 1, cy], [0, 0, 1]])
    return T2 @ R @ T1


class RandomRotate90:
    """Turn by 90, 180 or 270 degrees (chosen uniformly) with probability ``p``; a non-square image
    keeps its size by turning about its centre and cropping (instances cut at the border are re-measured)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        H, W = image.shape[-2:]
        k = random.choice((1, 2, 3))
        A = rotation_matrix(90.0 * k, (W / 2.0, H / 2.0))
        exact = (H - W) % 2 == 0 or k == 2  # pixel centres land on pixel centres
        return affine(image, target, A, (H, W), exact_grid=exact)

    def __repr__(self) -> str:
        return f"RandomRotate90(p={self.p})"


class RandomRotation:
    """Turn by a uniform random angle in ``[-degrees, degrees]`` about the centre, with probability ``p``.

    Only for sets with masks: a box-only set's axis-aligned boxes would grow with every turn."""

    def __init__(self, degrees: float = 180.0, p: float = 0.5):
        self.degrees = float(degrees)
        self.p = p

    def __call__(self, image, target):
        if random.random() >= self.p or not bool(target.get("has_masks", torch.tensor(True))):
            return image, target
        H, W = image.shape[-2:]
        A = rotation_matrix(random.uniform(-self.degrees, self.degrees), (W / 2.0, H / 2.0))
        return affine(image, target, A, (H, W))

    def __repr__(self) -> str:
        return f"RandomRotation(degrees={self.degrees}, p={self.p})"


class FrameToContent:
    """Crop (or pad, with the background grey) to the metaphase's extent plus a margin, at the aspect
    ratio of ``size = (H, W)``: :func:`chromoseg.ops.frame_box`, the same framing ``predict`` uses, so
    that a chromosome's size at the input does not depend on how the camera framed the cell.
    Deterministic (placed before ``Resize`` and cached with it)."""

    def __init__(self, size: tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, image, target):
        from chromoseg.ops import background_level, frame_box

        arr = image[0].numpy()
        x0, y0, x1, y1 = frame_box(arr, self.size)
        if (x0, y0, x1, y1) == (0, 0, arr.shape[1], arr.shape[0]):
            return image, target
        A = np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]])
        return affine(image, target, A, (y1 - y0, x1 - x0), fill=background_level(arr))

    def __repr__(self) -> str:
        return f"FrameToContent(size={self.size})"


class RandomZoom:
    """Scale by a factor drawn log-uniformly from ``scale`` and move to a random place that keeps as
    much of the image in view as the scale allows, with probability ``p``; the image keeps its size and
    what comes in from outside is the background grey (the median). Teaches the network chromosomes
    of other sizes and places than its training framing gives."""

    def __init__(self, scale: tuple[float, float] = (0.7, 1.4), p: float = 0.5):
        self.scale, self.p = (float(scale[0]), float(scale[1])), p

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        H, W = image.shape[-2:]
        s = math.exp(random.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        tx = random.uniform(min(0.0, W - s * W), max(0.0, W - s * W))
        ty = random.uniform(min(0.0, H - s * H), max(0.0, H - s * H))
        A = np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]])
        return affine(image, target, A, (H, W), fill=float(image.median()))

    def __repr__(self) -> str:
        return f"RandomZoom(scale={self.scale}, p={self.p})"


class RandomIntensity:
    """Photometric jitter of the image only: gamma, contrast, brightness and Gaussian noise."""

    def __init__(self, gamma=(0.7, 1.4), contrast=(0.8, 1.2), brightness=(-0.08, 0.08), noise=0.02, p: float = 0.8):
        self.gamma, self.contrast, self.brightness, self.noise, self.p = gamma, contrast, brightness, noise, p

    def __call__(self, image, target):
        if random.random() >= self.p:
            return image, target
        img = image.clamp(0, 1) ** random.uniform(*self.gamma)
        mean = img.mean()
        img = (img - mean) * random.uniform(*self.contrast) + mean + random.uniform(*self.brightness)
        if self.noise:
            img = img + torch.randn_like(img) * random.uniform(0, self.noise)
        return img.clamp(0, 1), target

    def __repr__(self) -> str:
        return f"RandomIntensity(gamma={self.gamma}, contrast={self.contrast}, brightness={self.brightness}, noise={self.noise})"


def default_transforms(train: bool, size: tuple[int, int] | None = (512, 640), frame: bool = False,
                       zoom: tuple[float, float] | None = None) -> Compose:
    """The paper's input size, plus flips, rotations and intensity jitter for training.

    ``frame``: first crop to the metaphase (:class:`FrameToContent`), as ``predict`` does for a model
    trained so; ``zoom``: with ``train``, also :class:`RandomZoom` over that scale range."""
    ts = ([FrameToContent(size)] if frame and size else []) + ([Resize(size)] if size else [])
    if train:
        ts += [RandomHorizontalFlip(0.5), RandomVerticalFlip(0.5), RandomRotation(180.0, 0.5)]
        if zoom:
            ts.append(RandomZoom(zoom, 0.5))
        ts.append(RandomIntensity())
    return Compose(ts)
