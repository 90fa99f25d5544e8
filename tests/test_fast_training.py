"""The faster training loop learns exactly what the plain one did.

Each speed-up (pruned anchor matching, blocked NMS with an early stop, cached anchors, the data
cache, flips in memory) is checked against the straightforward computation it replaced.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import Matcher

from chromoseg.ops import nms_rotated, rbox_iou, rbox_match_quality
from test_models import batch, small_model


def _random_boxes(n, g, span=120.0, long=(5, 60), short=(3, 20)):
    return torch.cat([torch.rand(n, 2, generator=g) * span,
                      torch.rand(n, 1, generator=g) * (long[1] - long[0]) + long[0],
                      torch.rand(n, 1, generator=g) * (short[1] - short[0]) + short[0],
                      torch.rand(n, 1, generator=g) * 180 - 90], 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_quality_gives_the_full_matrix_matches(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = _random_boxes(3000, g)
    gt = torch.cat([_random_boxes(20, g), _random_boxes(6, g, long=(2, 6), short=(1, 3))])  # tiny ones: weak rows
    for hi, lo, low_quality in ((0.7, 0.3, True), (0.5, 0.5, False)):
        m = Matcher(hi, lo, allow_low_quality_matches=low_quality)
        full = m(rbox_iou(gt, anchors))
        fast_q = rbox_match_quality(gt, anchors, lo, low_quality)
        fast = m(fast_q)
        assert torch.equal(full, fast)
        assert bool((fast_q.amax(1) <= lo).any()) or not low_quality  # the weak-row path was used


def _greedy_reference(boxes, scores, thr):
    order = torch.argsort(scores, descending=True, stable=True)
    iou = rbox_iou(boxes[order], boxes[order])
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > thr
    return order[torch.tensor(keep, dtype=torch.int64)]


@pytest.mark.parametrize("thr", [0.1, 0.5, 0.7])
def test_blocked_nms_equals_one_box_at_a_time(thr):
    g = torch.Generator().manual_seed(3)
    boxes = _random_boxes(500, g, span=90.0)
    scores = torch.rand(500, generator=g)
    scores[::7] = scores[3]  # ties keep the original order
    ref = _greedy_reference(boxes, scores, thr)
    assert torch.equal(nms_rotated(boxes, scores, thr, block=64), ref)
    assert torch.equal(nms_rotated(boxes, scores, thr, max_keep=40, block=16), ref[:40])
    assert nms_rotated(boxes, scores, thr, max_keep=0).numel() == 0


def test_fixed_batch_losses_unchanged_by_the_fast_matching(monkeypatch):
    """fp32 losses of one fixed batch with the pruned matching and blocked NMS equal those with the
    full rotated-IoU matrix and the full NMS (tolerance 1e-6 relative)."""
    import chromoseg.ops as ops

    ims, ts = batch(2)

    def losses():
        model = small_model("ermr")
        model.train()
        torch.manual_seed(5)
        return {k: float(v.detach()) for k, v in model(ims, ts).items()}

    fast = losses()
    monkeypatch.setattr(ops, "rbox_match_quality", lambda gt, b, lo, lq=True, candidates=None: rbox_iou(gt, b))
    import chromoseg.ops.nms as nms_mod

    plain = nms_mod.nms_rotated

    def full_nms(boxes, scores, thr, max_keep=None, block=256):
        keep = plain(boxes, scores, thr, block=10 ** 9)  # one block: every pair at once
        return keep[:max_keep] if max_keep is not None else keep

    monkeypatch.setattr(nms_mod, "nms_rotated", full_nms)
    slow = losses()
    assert fast.keys() == slow.keys()
    for k in fast:
        assert fast[k] == pytest.approx(slow[k], rel=1e-6, abs=1e-7), k


def test_anchors_are_cached_per_size():
    model = small_model("rmr")
    ims, ts = batch(1)
    images, _ = model.transform(ims, ts)
    feats, _ = model.backbone(images.tensors)
    ag = model.rpn.anchor_generator
    a1 = ag(images, list(feats.values()))[0]
    a2 = ag(images, list(feats.values()))[0]
    assert a1 is a2 and torch.equal(a1, ag._grid_anchors(*images.tensors.shape[-2:], list(feats.values()))[0])



@pytest.mark.parametrize("size", [(96, 128), (100, 150)])
def test_anchor_grid_candidates_hold_every_overlapping_pair(size):
    """The anchor grid's candidate pairs contain every (box, anchor) pair whose interiors intersect
    (non-integer strides too), and matching through them gives the labels of the full matrix."""
    from chromoseg.models.rpn import RotatedAnchorGenerator
    from chromoseg.ops.iou import rbox_overlap_candidates
    from torchvision.models.detection.image_list import ImageList

    h, w = size
    ag = RotatedAnchorGenerator(sizes=(8.0, 16.0, 32.0))
    images = ImageList(torch.zeros(1, 1, h, w), [(h, w)])
    feats = [torch.zeros(1, 1, math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16)]
    anchors = ag(images, feats)[0]
    g = torch.Generator().manual_seed(h)
    gt = torch.cat([_random_boxes(12, g, span=float(min(h, w)), long=(6, 50), short=(2, 12)),
                    torch.tensor([[-5.0, 3.0, 20.0, 4.0, 10.0], [w + 2.0, h - 1.0, 30.0, 6.0, -45.0]])])
    i, j = ag.overlap_candidates(gt, images, feats)
    cand = set(zip(i.tolist(), j.tolist()))
    ri, rj = rbox_overlap_candidates(gt, anchors)
    assert ri.numel() > 100 and set(zip(ri.tolist(), rj.tolist())) <= cand
    assert len(cand) < 0.2 * gt.shape[0] * anchors.shape[0]  # far from every pair
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    assert torch.equal(m(rbox_match_quality(gt, anchors, 0.3, candidates=(i, j))), m(rbox_iou(gt, anchors)))

def test_flip_in_memory_equals_resampling():
    from chromoseg.data.transforms import affine
    from test_models import synth_sample

    img, t = synth_sample(h=64, w=90, n=3, seed=4)
    H, W = img.shape[-2:]
    for dims, A in (((-1,), np.array([[-1.0, 0, W], [0, 1, 0], [0, 0, 1]])),
                    ((-2,), np.array([[1.0, 0, 0], [0, -1, H], [0, 0, 1]]))):
        i1, t1 = affine(img, t, A, (H, W), exact_grid=True)
        i2, t2 = affine(img, t, A, (H, W), exact_grid=True, flip_dims=dims)
        assert torch.equal(i1, i2)
        for k in ("masks", "boxes", "rboxes", "endpoints", "area", "labels"):
            assert torch.allclose(t1[k].float(), t2[k].float(), atol=1e-5), k


def test_dataset_cache_gives_the_same_samples(tmp_path):
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.transforms import default_transforms
    from test_data_dataset import write_set

    path = write_set(tmp_path, size=(60, 80))  # resized to 48 x 64: the cached step does work
    plain = ChromosomeDataset(path, transforms=default_transforms(True, size=(48, 64)))
    cached = ChromosomeDataset(path, transforms=default_transforms(True, size=(48, 64)), cache=True)
    import random

    for epoch in range(4):
        for i in range(len(plain)):
            outs = []
            for ds in (plain, cached):
                torch.manual_seed(epoch * 10 + i)
                random.seed(epoch * 10 + i)
                outs.append(ds[i])
            (a, ta), (b, tb) = outs
            assert torch.equal(a, b)
            for k in ta:
                if torch.is_tensor(ta[k]):
                    assert torch.equal(ta[k], tb[k]), k
    assert len(cached._cache) == len(cached) and not plain._cache
