"""Transforms keep image, masks, both box kinds and endpoints consistent."""
import random

import numpy as np
import pytest
import torch

from chromoseg.data import transforms as T
from chromoseg.ops import endpoint_heatmap, masks_to_rboxes, rbox_iou


def make_sample(h=60, w=80):
    """Two rods (one tilted) with their geometry measured from the masks."""
    import cv2

    masks = np.zeros((2, h, w), np.uint8)
    masks[0, 10:16, 8:40] = 1
    cv2.line(masks[1], (50, 10), (70, 50), 1, 5)
    img = torch.from_numpy(0.1 + 0.8 * masks.max(0).astype(np.float32))[None]
    m = torch.from_numpy(masks)
    rb = masks_to_rboxes(m.bool())
    ends = torch.tensor([[[8.5, 13], [39.5, 13]], [[50.5, 10.5], [70.5, 50.5]]], dtype=torch.float32)
    target = {"boxes": T.masks_to_boxes(m), "rboxes": rb.float(), "labels": torch.tensor([3, 21]), "masks": m,
              "endpoints": ends, "iscrowd": torch.zeros(2, dtype=torch.int64), "area": m.flatten(1).sum(1).float(),
              "has_masks": torch.tensor(True), "has_endpoints": torch.tensor(True), "image_id": torch.tensor(1)}
    return img, target


def check_consistent(image, t, rbox_iou_min=0.8):
    H, W = image.shape[-2:]
    assert t["masks"].shape[1:] == (H, W)
    assert torch.allclose(t["boxes"], T.masks_to_boxes(t["masks"]))
    measured = masks_to_rboxes(t["masks"].bool())
    ious = rbox_iou(measured.double(), t["rboxes"].double()).diagonal()
    assert (ious > rbox_iou_min).all(), ious
    for k in range(t["masks"].shape[0]):  # each endpoint lies on or right next to its mask
        ys, xs = torch.nonzero(t["masks"][k], as_tuple=True)
        pts = torch.stack([xs, ys], 1).float() + 0.5
        for e in t["endpoints"][k]:
            assert (pts - e).norm(dim=1).min() < 3.5


def test_resize_scales_everything():
    img, t = make_sample()
    img2, t2 = T.Resize((120, 200))(img, t)
    assert img2.shape == (1, 120, 200)
    check_consistent(img2, t2)
    assert torch.allclose(t2["endpoints"][0, 0], torch.tensor([8.5 * 2.5, 13 * 2.0]))


def test_flips_are_exact_and_invertible():
    img, t = make_sample()
    random.seed(0)
    f = T.RandomHorizontalFlip(p=1.0)
    img2, t2 = f(*f(img, t))
    assert torch.equal(img2, img) and torch.equal(t2["masks"], t["masks"])
    assert torch.allclose(t2["rboxes"], t["rboxes"], atol=1e-4)
    v = T.RandomVerticalFlip(p=1.0)
    img3, t3 = v(img, t)
    check_consistent(img3, t3)
    assert torch.equal(t3["masks"], t["masks"].flip(1))


@pytest.mark.parametrize("seed", range(4))
def test_rotations_keep_geometry(seed):
    random.seed(seed)
    img, t = make_sample(80, 80)
    img2, t2 = T.RandomRotate90(p=1.0)(img, t)
    check_consistent(img2, t2, rbox_iou_min=0.9)
    img3, t3 = T.RandomRotation(degrees=180, p=1.0)(img, t)
    check_consistent(img3, t3, rbox_iou_min=0.75)


def test_instances_pushed_out_are_removed():
    img, t = make_sample()
    A = np.array([[1.0, 0, 60], [0, 1, 0], [0, 0, 1]])  # shift right by 60 px: rod 0 (x 8-40) partly, rod 1 fully out
    img2, t2 = T.affine(img, t, A, (60, 80))
    assert t2["labels"].tolist() == [3]
    assert t2["masks"].shape[0] == 1 and t2["boxes"][0, 0] == 68


def test_box_only_targets():
    img, t = make_sample()
    t["has_masks"] = torch.tensor(False)
    t["masks"] = torch.zeros_like(t["masks"])
    img2, t2 = T.Resize((30, 40))(img, t)
    assert torch.allclose(t2["boxes"][0], t["boxes"][0] / 2)
    assert t2["masks"].shape == (2, 30, 40)


def test_intensity_changes_image_only():
    random.seed(1)
    img, t = make_sample()
    img2, t2 = T.RandomIntensity(p=1.0)(img, t)
    assert not torch.equal(img2, img) and img2.min() >= 0 and img2.max() <= 1
    assert t2 is t


def test_heatmap_peaks_at_endpoints():
    img, t = make_sample()
    heat = endpoint_heatmap(t["endpoints"], size=(60, 80), sigma=2.0)
    assert heat.shape == (60, 80) and float(heat.max()) <= 1.0
    assert heat[13, 8] > 0.8 and heat[40, 20] < 0.01


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool])
def test_mask_boxes_and_areas_equal_the_plain_counts(dtype):
    """The fast uint8 reductions give the plain nonzero counts and tight boxes (empty masks too)."""
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(7, 33, 50, generator=g) < 0.05)
    masks[2] = False  # empty
    masks[3] = True  # full
    masks[4] = False
    masks[4, 5:9, 40:44] = True
    m = masks.to(dtype)
    assert torch.equal(T._mask_areas(m), masks.flatten(1).sum(1).float())
    ref = []
    for k in masks:
        ys, xs = torch.nonzero(k, as_tuple=True)
        ref.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if ys.numel() else [0, 0, 0, 0])
    assert torch.equal(T.masks_to_boxes(m), torch.tensor(ref, dtype=torch.float32))
