"""Mask ops: min-area rectangles, rotated crop / paste, mask IoU / NMS, endpoints, heatmaps."""
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from chromoseg.ops import (crop_masks_rotated, endpoint_heatmap, mask_endpoints, mask_iou, mask_nms,
                           mask_to_rbox, masks_to_rboxes, paste_masks_rotated, rbox_to_corners,
                           rroi_align)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def _raster_rbox(box, shape):
    """Pixels whose centre lies inside the rotated box (cx, cy, w, h, angle_deg)."""
    cx, cy, w, h, a = box
    H, W = shape
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    r = math.radians(a)
    dx, dy = xs - cx, ys - cy
    su = dx * math.cos(r) - dy * math.sin(r)
    sv = dx * math.sin(r) + dy * math.cos(r)
    return (np.abs(su) <= w / 2) & (np.abs(sv) <= h / 2)


def _angle_diff(a, b):
    return abs((a - b + 90) % 180 - 90)


def _data_root():
    env = os.environ.get("CHROMOSEG_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def test_mask_to_rbox_recovers_rasterised_rectangles():
    rng = np.random.default_rng(0)
    for _ in range(60):
        w = rng.uniform(12, 70)
        h = rng.uniform(4, w / 1.5)
        a = rng.uniform(-90, 90)
        box = (rng.uniform(40, 80), rng.uniform(40, 60), w, h, a)
        m = _raster_rbox(box, (100, 120))
        got = mask_to_rbox(torch.from_numpy(m)).tolist()
        assert abs(got[0] - box[0]) < 1.0 and abs(got[1] - box[1]) < 1.0, (box, got)
        # the rectangle encloses whole pixel squares: up to ~1.5 px larger, never much smaller
        assert -0.5 < got[2] - w < 1.5 and -0.5 < got[3] - h < 1.5, (box, got)
        # angle within 2 deg where the pixel staircase allows it (long boxes); corners within 2 px
        if w >= 45:
            assert _angle_diff(got[4], a) < 2.0, (box, got)
        else:
            assert _angle_diff(got[4], a) < 2.0 + math.degrees(math.atan(1.5 / w)), (box, got)
        cg = rbox_to_corners(torch.tensor([got], dtype=torch.float64))[0]
        ce = rbox_to_corners(torch.tensor([box], dtype=torch.float64))[0]
        dmin = (cg[:, None, :] - ce[None, :, :]).norm(dim=-1).amin(1)
        assert dmin.max() < 2.0, (box, got)
        assert got[2] >= got[3] and -90 <= got[4] < 90


def test_mask_to_rbox_small_and_special_inputs():
    one = np.zeros((5, 6), bool)
    one[2, 3] = True
    assert mask_to_rbox(one).tolist() == [3.5, 2.5, 1.0, 1.0, 0.0] or \
        torch.allclose(mask_to_rbox(one)[:4], torch.tensor([3.5, 2.5, 1.0, 1.0]))
    row = np.zeros((5, 6), np.uint8)
    row[1, 1:5] = 1  # horizontal bar 4 x 1
    assert torch.allclose(mask_to_rbox(row), torch.tensor([3.0, 1.5, 4.0, 1.0, 0.0]), atol=1e-5)
    col = torch.zeros(8, 4, dtype=torch.bool)
    col[2:7, 1] = True  # vertical bar 1 x 5: long side vertical -> angle -90
    assert torch.allclose(mask_to_rbox(col), torch.tensor([1.5, 4.5, 5.0, 1.0, -90.0]), atol=1e-5)
    assert mask_to_rbox(np.zeros((4, 4))).tolist() == [0.0] * 5
    ms = torch.stack([torch.from_numpy(one), col[:5, :6] if False else torch.from_numpy(row.astype(bool))])
    out = masks_to_rboxes(ms)
    assert out.shape == (2, 5) and out.dtype == torch.float32
    assert masks_to_rboxes(torch.zeros(0, 5, 6)).shape == (0, 5)


def _synthetic_chromosome(shape=(96, 112)):
    """A bent, thick band (banana) like a chromosome."""
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (56, 80), (40, 45), 0, 200, 330, 1, thickness=9)
    return m.astype(bool)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_then_paste_synthetic(device):
    m = torch.from_numpy(_synthetic_chromosome()).to(device)
    m0 = m.clone()
    rb = mask_to_rbox(m)[None]
    for size in (28, 56):
        crop = crop_masks_rotated(m[None], rb, torch.tensor([0], device=device), size)
        assert crop.shape == (1, size, size) and crop.dtype == torch.float32
        assert 0 <= crop.min() and crop.max() <= 1
        paste = paste_masks_rotated(crop, rb, m.shape)
        assert paste.shape == (1, *m.shape)
        assert mask_iou(paste >= 0.5, m[None]).item() >= 0.9
    assert torch.equal(m, m0)


def test_crop_then_paste_real_chromosome():
    root = _data_root()
    path = root / "adir-mfish" / "A01__XY" / "A0101XYK.tif"
    if not path.exists():
        pytest.skip(f"real M-FISH label map not found at {path} (set CHROMOSEG_DATA to the data root)")
    from PIL import Image
    from skimage.measure import label

    lab_map = np.array(Image.open(path))
    done = 0
    for v in (1, 7, 16, 23):
        comp = label(lab_map == v, connectivity=2)
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        if sizes.max() < 50:
            continue
        m = torch.from_numpy(comp == sizes.argmax())
        rb = mask_to_rbox(m)[None]
        crop = crop_masks_rotated(m[None], rb, torch.tensor([0]), 28)
        paste = paste_masks_rotated(crop, rb, m.shape)
        iou = mask_iou(paste >= 0.5, m[None]).item()
        assert iou >= 0.9, (v, iou)
        done += 1
    assert done >= 2


def test_crop_frame_is_rroi_align_frame_and_several_masks():
    H, W = 60, 70
    boxes = [(30.0, 25.0, 40.0, 10.0, 25.0), (40.0, 35.0, 30.0, 12.0, -60.0)]
    masks = torch.stack([torch.from_numpy(_raster_rbox(b, (H, W))) for b in boxes])
    rois = torch.tensor(boxes)
    idx = torch.tensor([1, 0])
    crop = crop_masks_rotated(masks, rois[[1, 0]], idx, 14)
    ref = rroi_align(masks[:, None].float(), torch.cat((idx[:, None].float(), rois[[1, 0]]), 1), 14, 1.0, 2)[:, 0]
    assert torch.allclose(crop, ref)
    # a mask cropped with its own box is (almost) all foreground inside
    assert crop[:, 2:-2, 2:-2].min() > 0.9
    assert crop_masks_rotated(masks, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 7).shape == (0, 7, 7)


def test_paste_geometry_and_orientation():
    H, W = 50, 60
    box = (30.0, 25.0, 36.0, 12.0, 30.0)
    ones = torch.ones(1, 8, 8)
    full = paste_masks_rotated(ones, torch.tensor([box]), (H, W))[0]
    assert torch.equal(full > 0.5, torch.from_numpy(_raster_rbox(box, (H, W))))
    # left half of the grid (columns, i.e. -u side of the w axis) -> pixels with su < 0
    half = torch.zeros(1, 8, 8)
    half[:, :, :4] = 1.0
    p = paste_masks_rotated(half, torch.tensor([box]), (H, W))[0].numpy()
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    r = math.radians(box[4])
    su = (xs - box[0]) * math.cos(r) - (ys - box[1]) * math.sin(r)
    inside = _raster_rbox(box, (H, W))
    assert (p[inside & (su < -3)] > 0.99).all() and (p[inside & (su > 3)] < 0.01).all()
    # top half of the grid (rows) -> pixels with sv < 0
    top = torch.zeros(1, 8, 8)
    top[:, :4, :] = 1.0
    p = paste_masks_rotated(top, torch.tensor([box]), (H, W))[0].numpy()
    sv = (xs - box[0]) * math.sin(r) + (ys - box[1]) * math.cos(r)
    assert (p[inside & (sv < -1.5)] > 0.99).all() and (p[inside & (sv > 1.5)] < 0.01).all()
    # boxes partly outside the image and empty input
    out = paste_masks_rotated(ones.repeat(2, 1, 1), torch.tensor([[0.0, 0.0, 20, 10, 10], [100, 100, 5, 5, 0]]), (H, W))
    assert out.shape == (2, H, W) and out[1].sum() == 0 and out[0].sum() > 0
    assert paste_masks_rotated(torch.zeros(0, 8, 8), torch.zeros(0, 5), (H, W)).shape == (0, H, W)


def test_mask_iou_and_nms_vs_bruteforce():
    rng = np.random.default_rng(1)
    H, W = 40, 50
    masks = []
    for _ in range(30):
        b = (rng.uniform(10, 40), rng.uniform(10, 30), rng.uniform(10, 30), rng.uniform(4, 10), rng.uniform(-90, 90))
        masks.append(_raster_rbox(b, (H, W)))
    masks.append(masks[3].copy())  # duplicate
    masks.append(np.zeros((H, W), bool))  # empty
    m = torch.from_numpy(np.stack(masks))
    iou = mask_iou(m, m).numpy()
    flat = np.stack(masks).reshape(len(masks), -1)
    inter = flat[:, None, :] & flat[None, :, :]
    union = flat[:, None, :] | flat[None, :, :]
    ref = inter.sum(-1) / np.maximum(union.sum(-1), 1)
    assert np.allclose(iou, ref)
    assert np.allclose(mask_iou(m.float() * 0.9, m.to(torch.uint8)).numpy(), ref)
    scores = torch.from_numpy(rng.uniform(size=len(masks))).float()
    m0, s0 = m.clone(), scores.clone()
    for thr in (0.2, 0.5):
        keep = mask_nms(m, scores, thr)
        order = sorted(range(len(masks)), key=lambda i: -scores[i].item())
        ref_keep = []
        for i in order:
            if all(ref[i, k] <= thr for k in ref_keep):
                ref_keep.append(i)
        assert keep.dtype == torch.int64 and keep.tolist() == ref_keep
    assert torch.equal(m, m0) and torch.equal(scores, s0)
    assert mask_nms(torch.zeros(0, H, W), torch.zeros(0), 0.5).shape == (0,)


def test_mask_endpoints_on_curved_line():
    m = np.zeros((120, 140), np.uint8)
    # an arc from 200 to 330 degrees of an ellipse centred at (70, 90), axes (50, 55)
    cv2.ellipse(m, (70, 90), (50, 55), 0, 200, 330, 1, thickness=9)
    m = m.astype(bool)
    m0 = m.copy()
    e = mask_endpoints(m)
    assert e.shape == (2, 2) and e.dtype == torch.float32
    true = []
    for t in (200, 330):
        r = math.radians(t)
        true.append((70 + 50 * math.cos(r) + 0.5, 90 + 55 * math.sin(r) + 0.5))
    true = sorted(true, key=lambda p: (p[1], p[0]))
    for got, exp in zip(e.tolist(), true):
        assert math.dist(got, exp) < 7.0, (e, true)
    assert e[0, 1] <= e[1, 1]  # first = upper end
    assert np.array_equal(m, m0)
    # pixel centres on the mask
    for x, y in e.tolist():
        assert m[int(y), int(x)] and x % 1 == 0.5 and y % 1 == 0.5
    # torch input gives the same
    assert torch.equal(mask_endpoints(torch.from_numpy(m)), e)


def test_mask_endpoints_degenerate_masks():
    dot = np.zeros((7, 7), bool)
    dot[3, 4] = True
    e = mask_endpoints(dot)
    assert e.shape == (2, 2) and torch.isfinite(e).all()
    assert torch.allclose(e.mean(0), torch.tensor([4.5, 3.5]))
    blob = np.zeros((30, 30), np.uint8)
    cv2.circle(blob, (15, 14), 6, 1, -1)
    e = mask_endpoints(blob)
    assert e.shape == (2, 2) and torch.isfinite(e).all()
    assert (e[0, 1], e[0, 0]) <= (e[1, 1], e[1, 0])
    assert torch.equal(mask_endpoints(np.zeros((5, 5))), torch.zeros(2, 2))
    # horizontal bar, one pixel high: ends ordered by x when y ties
    bar = np.zeros((9, 30), bool)
    bar[4, 4:26] = True
    assert mask_endpoints(bar).tolist() == [[4.5, 4.5], [25.5, 4.5]]
    # thick bar: the ends near both short sides, upper one first
    bar[3:6, 4:26] = True
    e = mask_endpoints(bar)
    assert sorted([abs(e[0, 0] - 4.5), abs(e[1, 0] - 25.5)])[1] <= 2 or \
        sorted([abs(e[1, 0] - 4.5), abs(e[0, 0] - 25.5)])[1] <= 2
    assert (e[0, 1], e[0, 0]) <= (e[1, 1], e[1, 0])


def test_endpoint_heatmap():
    assert torch.equal(endpoint_heatmap(torch.zeros(0, 2, 2), (10, 12)), torch.zeros(10, 12))
    ep = torch.tensor([[[3.5, 4.5], [20.2, 9.9]], [[30.0, 5.0], [-50.0, -50.0]]])
    ep0 = ep.clone()
    h = endpoint_heatmap(ep, (16, 40), sigma=3.0)
    assert h.shape == (16, 40) and h.dtype == torch.float32
    assert torch.equal(ep, ep0)
    assert h[4, 3] == 1.0 and h[9, 20] == 1.0 and h[5, 30] == 1.0
    assert h.max() == 1.0 and h.min() >= 0
    # Gaussian profile: 3 px from a peak, exp(-9/18)
    assert abs(h[4, 6].item() - math.exp(-0.5)) < 1e-6
    # max (not sum) over overlapping Gaussians
    two = endpoint_heatmap(torch.tensor([[[5.5, 5.5], [6.5, 5.5]]]), (12, 12), sigma=3.0)
    assert two.max() == 1.0
    assert abs(two[5, 9].item() - math.exp(-9 / 18)) < 1e-6


def test_mask_areas_count_every_foreground_pixel():
    from chromoseg.ops import mask_areas

    g = torch.Generator().manual_seed(0)
    m = torch.zeros(4, 40, 50, dtype=torch.bool)
    m[0, 3:9, 5:30] = True
    m[1] = torch.rand(40, 50, generator=g) > 0.7  # scattered over the whole image
    m[2, 39, 49] = True  # the last pixel; m[3] stays empty
    assert mask_areas(m).tolist() == m.flatten(1).sum(1).tolist()
    assert mask_areas(m.float()).tolist() == m.flatten(1).sum(1).tolist()
    assert mask_areas(m[:0]).shape == (0,)
