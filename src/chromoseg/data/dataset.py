"""A torch ``Dataset`` over a chromoseg COCO file: images and their instance targets."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from chromoseg.data.coco import decode_mask, derive_geometry, is_box_only, load_coco, resolve_image_path
from chromoseg.data.io import ImageReadError, read_image, to_float01
from chromoseg.data.report import ProblemLog

log = logging.getLogger(__name__)

#: Gaussian sigma of the endpoint heatmap target (eq. 4), in pixels of the transformed image.
ENDPOINT_SIGMA = 3.0


class ChromosomeDataset(torch.utils.data.Dataset):
    """Yields ``(image, target)``: ``image`` float32 ``[1, H, W]`` in [0, 1] (grey), ``target`` a dict.

    ``target``: ``boxes`` [N,4] xyxy, ``rboxes`` [N,5], ``labels`` [N] (1-24), ``masks`` uint8 [N,H,W],
    ``endpoints`` [N,2,2], ``endpoint_heatmap`` [1,H,W], ``has_masks``, ``has_endpoints``, ``image_id``,
    ``hboxes`` [N,4] xyxy only where the annotations keep the annotator's own box beside a mask made from
    it (``source_bbox``, from ``data pseudo-masks``: the truth for the axis-aligned box branch), ``iscrowd``, ``area``, ``class_known`` [N] bool (False: a chromosome of unknown class, e.g. from
    LabelMe polygons; the rotated variants then train no class for it) (see ``docs/architecture.md``).

    Args:
        annotations: path of the dataset JSON (chromoseg's COCO format).
        transforms: callable ``(image, target) -> (image, target)``, e.g.
            :func:`chromoseg.data.transforms.default_transforms`.
        image_root: folder that relative ``file_name`` entries are read from (default: the JSON's folder).
        heatmap_sigma: Gaussian sigma of ``endpoint_heatmap`` in output pixels.
        keep_crowd: keep ``iscrowd`` regions (e.g. unseparated touching homologues) in the targets; by
            default they are left out, as in torchvision's detection references.
        cache: keep each image and its target in memory after decoding and after the deterministic
            leading transforms (``Resize``), so that later epochs only run the random augmentations
            (same samples as without the cache; masks kept one bit per pixel).

    Broken annotations are left out when the file is loaded (``self.problems`` lists them); an image
    that cannot be read raises :class:`~chromoseg.data.io.ImageReadError` naming the file.
    """

    def __init__(self, annotations, transforms=None, image_root=None, heatmap_sigma: float = ENDPOINT_SIGMA,
                 max_images: int | None = None, keep_crowd: bool = False, cache: bool = False):
        self.path = Path(annotations)
        self.problems = ProblemLog()
        self.coco = load_coco(self.path, self.problems)
        self.image_root = Path(image_root) if image_root else self.path.parent
        self.transforms = transforms
        self.cache = cache
        self.heatmap_sigma = heatmap_sigma
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        if max_images:
            self.images = self.images[: int(max_images)]
        self._anns: dict[int, list[dict]] = {}
        for ann in self.coco["annotations"]:
            if keep_crowd or not ann.get("iscrowd", 0):
                self._anns.setdefault(ann["image_id"], []).append(ann)
        if self.problems:
            log.warning("%s: %s", self.path, self.problems.summary())

    @property
    def transforms(self):
        return self._transforms

    @transforms.setter
    def transforms(self, transforms):
        self._transforms = transforms
        self._fixed, self._random = _split_transforms(transforms)
        self._cache = {}

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> Path:
        return resolve_image_path(self.images[index]["file_name"], self.image_root)

    def annotations(self, index: int) -> list[dict]:
        return self._anns.get(self.images[index]["id"], [])

    def load(self, index: int):
        """Image and target at the file's own size, before transforms."""
        info = self.images[index]
        path = self.image_path(index)
        arr = read_image(path)
        h, w = arr.shape
        if (h, w) != (info["height"], info["width"]):
            raise ImageReadError(path, f"image is {w}x{h} but the annotations say {info['width']}x{info['height']}")
        image = torch.from_numpy(to_float01(arr))[None]
        anns = self.annotations(index)
        box_only = is_box_only(self.coco, info) or any("segmentation" not in a for a in anns)
        n = len(anns)
        masks = np.zeros((n, h, w), np.uint8)
        rboxes = np.zeros((n, 5), np.float32)
        ends = np.zeros((n, 2, 2), np.float32)
        has_ends = True
        for k, a in enumerate(anns):
            if not box_only:
                masks[k] = decode_mask(a["segmentation"], h, w)
            r, e = a.get("rbox"), a.get("endpoints")
            if (r is None or e is None) and not box_only:
                r2, e2 = derive_geometry(masks[k].astype(bool))
                r = r if r is not None else r2
                e = e if e is not None else e2
            if r is None:  # box-only: the axis-aligned box as a rotated box
                x, y, bw, bh = a["bbox"]
                r = [x + bw / 2, y + bh / 2, bw, bh, 0.0]
            if e is None:
                has_ends = False
                e = [[0.0, 0.0], [0.0, 0.0]]
            rboxes[k] = r
            ends[k] = e
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                         np.float32).reshape(n, 4)
        from chromoseg.ops import normalize_rboxes

        target = {
            "boxes": torch.from_numpy(boxes),
            "rboxes": normalize_rboxes(torch.from_numpy(rboxes)),
            "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "endpoints": torch.from_numpy(ends),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "class_known": torch.tensor([bool(a.get("class_known", True)) for a in anns], dtype=torch.bool),
            "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32),
            "has_masks": torch.tensor(not box_only),
            "has_endpoints": torch.tensor(has_ends and n > 0 and not box_only),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
        }
        if not box_only and any("source_bbox" in a for a in anns):  # the annotator's boxes behind pseudo-masks
            src = [a.get("source_bbox", a["bbox"]) for a in anns]
            target["hboxes"] = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in src], dtype=torch.float32)
        return image, target

    def _prepared(self, index: int):
        """Image and target after the deterministic transforms (cached with ``cache=True``)."""
        item = self._cache.get(index)
        if item is None:
            item = self.load(index)
            for t in self._fixed:
                item = t(*item)
            if self.cache:
                self._cache[index] = _pack_masks(item)
        else:
            item = _unpack_masks(item)
        image, target = item
        return image, dict(target)  # the random transforms never modify their inputs in place

    def __getitem__(self, index: int):
        image, target = self._prepared(index)
        for t in self._random:
            image, target = t(image, target)
        from chromoseg.ops import endpoint_heatmap

        H, W = image.shape[-2:]
        if bool(target["has_endpoints"]):
            heat = endpoint_heatmap(target["endpoints"], size=(H, W), sigma=self.heatmap_sigma)
        else:
            heat = torch.zeros((H, W), dtype=torch.float32)
        target["endpoint_heatmap"] = heat[None].float()
        return image, target


class _PackedMasks:
    """Binary instance masks kept in the cache one bit per pixel (``np.packbits``): a framed CIL
    metaphase's 46 masks take ~3 MB instead of ~25 MB, so a training set of 900 metaphases fits."""

    __slots__ = ("bits", "shape", "dtype")

    def __init__(self, masks: torch.Tensor):
        self.shape, self.dtype = tuple(masks.shape), masks.dtype
        self.bits = np.packbits(masks.cpu().numpy().astype(bool, copy=False).reshape(-1))

    def unpack(self) -> torch.Tensor:
        n = int(np.prod(self.shape))
        return torch.from_numpy(np.unpackbits(self.bits, count=n).reshape(self.shape)).to(self.dtype)


def _pack_masks(item):
    """``(image, target)`` with binary ``masks`` packed for the cache (other masks are kept as they are)."""
    image, target = item
    m = target.get("masks")
    if isinstance(m, torch.Tensor) and m.numel() and m.dtype in (torch.uint8, torch.bool) and int(m.max()) <= 1:
        target = dict(target, masks=_PackedMasks(m))
    return image, target


def _unpack_masks(item):
    image, target = item
    if isinstance(target.get("masks"), _PackedMasks):
        target = dict(target, masks=target["masks"].unpack())
    return image, target


def _split_transforms(transforms) -> tuple[list, list]:
    """(deterministic leading transforms, the rest) of a ``Compose`` (or a single callable)."""
    from chromoseg.data.transforms import Compose, FrameToContent, Resize

    if transforms is None:
        return [], []
    ts = list(transforms.transforms) if isinstance(transforms, Compose) else [transforms]
    k = 0
    while k < len(ts) and isinstance(ts[k], (FrameToContent, Resize)):
        k += 1
    return ts[:k], ts[k:]


def collate_fn(batch):
    """Keep images and targets as lists (images may differ in size), like torchvision's references."""
    return tuple(zip(*batch))
