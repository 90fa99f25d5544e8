"""Every public op leaves its inputs untouched, and the ops table of docs/architecture.md is exported."""
import numpy as np
import pytest
import torch

import chromoseg.ops as ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]

TABLE = ["normalize_rboxes", "rbox_to_corners", "rbox_to_hbox", "hbox_to_rbox", "rbox_to_paper",
         "rbox_from_paper", "rbox_area", "rbox_iou", "rbox_iou_aligned", "nms_rotated",
         "batched_nms_rotated", "rroi_align", "RBoxCoder", "mask_to_rbox", "masks_to_rboxes",
         "crop_masks_rotated", "paste_masks_rotated", "mask_iou", "mask_nms", "mask_endpoints",
         "endpoint_heatmap"]


def test_exports():
    for name in TABLE:
        assert hasattr(ops, name) and name in ops.__all__, name


def _check(fn, *args):
    before = [a.clone() if isinstance(a, torch.Tensor) else (a.copy() if isinstance(a, np.ndarray) else a)
              for a in args]
    fn(*args)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), fn
        elif isinstance(a, np.ndarray):
            assert np.array_equal(a, b), fn


@pytest.mark.parametrize("device", DEVICES)
def test_ops_do_not_modify_inputs(device):
    gen = torch.Generator().manual_seed(0)
    n = 40
    boxes = torch.cat((torch.rand(n, 2, generator=gen) * 60, torch.rand(n, 2, generator=gen) * 20 + 2,
                       torch.rand(n, 1, generator=gen) * 500 - 250), 1).to(device)
    boxes[:5, 2] = 1.0  # w < h rows
    boxes2 = boxes.flip(0).contiguous()
    scores = torch.rand(n, generator=gen).to(device)
    idxs = torch.randint(0, 3, (n,), generator=gen).to(device)
    xyxy = ops.rbox_to_hbox(boxes)
    for f in (ops.normalize_rboxes, ops.rbox_to_corners, ops.rbox_to_hbox, ops.rbox_to_paper,
              ops.rbox_from_paper, ops.rbox_area):
        _check(f, boxes)
    _check(ops.hbox_to_rbox, xyxy)
    _check(ops.rbox_iou, boxes, boxes2)
    _check(ops.rbox_iou_aligned, boxes, boxes2)
    _check(ops.nms_rotated, boxes, scores, 0.3)
    _check(ops.batched_nms_rotated, boxes, scores, idxs, 0.3)
    coder = ops.RBoxCoder((10, 10, 5, 5, 1))
    _check(coder.encode, boxes, boxes2)
    _check(coder.decode, torch.randn(n, 5, generator=gen).to(device), boxes)
    feat = torch.randn(2, 3, 16, 20, generator=gen).to(device)
    rois = torch.cat((idxs[:, None].float().clamp(max=1), boxes), 1)
    _check(ops.rroi_align, feat, rois, (4, 5), 0.25, 2)
    _check(ops.rroi_align, feat, rois, 3, 0.25, 0)
    masks = torch.zeros(3, 40, 50, dtype=torch.bool, device=device)
    masks[0, 5:20, 10:30] = True
    masks[1, 10:30, 20:25] = True
    masks[2, 12:18, 22:40] = True
    _check(ops.mask_to_rbox, masks[0])
    _check(ops.masks_to_rboxes, masks)
    _check(ops.mask_to_rbox, masks[0].cpu().numpy())
    rb = ops.masks_to_rboxes(masks)
    ridx = torch.tensor([0, 1, 2, 0], device=device)
    _check(ops.crop_masks_rotated, masks, rb[ridx], ridx, 14)
    probs = torch.rand(3, 14, 14, generator=gen).to(device)
    _check(ops.paste_masks_rotated, probs, rb, (40, 50))
    _check(ops.mask_iou, masks, masks.float())
    _check(ops.mask_nms, masks, scores[:3], 0.5)
    _check(ops.mask_endpoints, masks[1])
    _check(ops.mask_endpoints, masks[1].cpu().numpy())
    eps = torch.stack([ops.mask_endpoints(m) for m in masks]).to(device)
    _check(ops.endpoint_heatmap, eps, (40, 50), 3.0)


def test_thread_setting_restored():
    """Ops that run their small-op sequences single-threaded restore the caller's setting."""
    n0 = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        gen = torch.Generator().manual_seed(1)
        b = torch.cat((torch.rand(50, 2, generator=gen) * 50, torch.rand(50, 2, generator=gen) * 20 + 1,
                       torch.rand(50, 1, generator=gen) * 180), 1)
        ops.rbox_iou(b, b)
        ops.nms_rotated(b, torch.rand(50, generator=gen), 0.5)
        ops.rroi_align(torch.randn(1, 2, 8, 8, generator=gen), torch.tensor([[0, 4.0, 4, 3, 2, 10]]), 3)
        assert torch.get_num_threads() == 2
        from chromoseg.ops._threads import serial_cpu

        with pytest.raises(RuntimeError):
            with serial_cpu("cpu"):
                assert torch.get_num_threads() == 1
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n0)
