"""Rotated-box conventions and the RBoxCoder (paper eq. (1))."""
import math

import pytest
import torch

from chromoseg.ops import (RBoxCoder, hbox_to_rbox, normalize_rboxes, rbox_area, rbox_from_paper,
                           rbox_to_corners, rbox_to_hbox, rbox_to_paper, rbox_iou_aligned)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def _any_boxes(n, gen, dtype=torch.float64):
    """Boxes in any form: w < h allowed, angles far outside [-90, 90)."""
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 500
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 80 + 1
    a = torch.rand(n, 1, generator=gen, dtype=dtype) * 1440 - 720
    return torch.cat((xy, wh, a), 1)


def _same_rect(b1, b2, atol=1e-6):
    """Same rectangle: same corner set (up to cyclic order / reversal)."""
    c1, c2 = rbox_to_corners(b1), rbox_to_corners(b2)
    d = (c1[:, :, None, :] - c2[:, None, :, :]).norm(dim=-1)  # [N,4,4]
    return bool((d.amin(2) < atol).all())


def _is_canonical(b):
    return bool((b[:, 2] >= b[:, 3]).all() and (b[:, 4] >= -90).all() and (b[:, 4] < 90).all())


@pytest.mark.parametrize("device", DEVICES)
def test_normalize_canonical_same_rect_idempotent(device):
    gen = torch.Generator().manual_seed(0)
    b = _any_boxes(3000, gen).to(device)
    b0 = b.clone()
    n = normalize_rboxes(b)
    assert torch.equal(b, b0)  # input untouched
    assert _is_canonical(n)
    assert _same_rect(b.cpu(), n.cpu())
    assert torch.equal(normalize_rboxes(n), n)
    # tie w == h and exact boundary angles stay canonical
    edge = torch.tensor([[0, 0, 5, 5, 90.0], [0, 0, 3, 7, -90.0], [0, 0, 7, 3, 90.0],
                         [0, 0, 7, 3, -1e-30], [0, 0, -4, 2, 10]], device=device)
    ne = normalize_rboxes(edge)
    assert _is_canonical(ne) and _same_rect(edge.abs().cpu(), ne.cpu())
    assert ne[2, 4].item() == -90.0


def test_long_side_direction_convention():
    # positive angle turns the long side counter-clockwise on screen (y down): up-right
    c = rbox_to_corners(torch.tensor([[0.0, 0.0, 10.0, 2.0, 30.0]]))[0]
    long_dir = c[1] - c[0]
    assert long_dir[0] > 0 and long_dir[1] < 0
    assert torch.allclose(long_dir / 10, torch.tensor([math.cos(math.pi / 6), -math.sin(math.pi / 6)]))


def test_hbox_conversions_and_area():
    gen = torch.Generator().manual_seed(1)
    b = _any_boxes(500, gen)
    hb = rbox_to_hbox(b)
    c = rbox_to_corners(b)
    assert torch.allclose(hb[:, :2], c.amin(1), atol=1e-9)
    assert torch.allclose(hb[:, 2:], c.amax(1), atol=1e-9)
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 30.0], [0.0, 0.0, 4.0, 9.0]])
    r = hbox_to_rbox(xyxy)
    assert torch.allclose(r, torch.tensor([[30.0, 25.0, 40.0, 10.0, 0.0], [2.0, 4.5, 9.0, 4.0, -90.0]]))
    assert torch.allclose(rbox_to_hbox(r), xyxy, atol=1e-5)
    assert torch.allclose(rbox_area(b), b[:, 2] * b[:, 3])


def test_paper_form_round_trip():
    gen = torch.Generator().manual_seed(2)
    b = normalize_rboxes(_any_boxes(3000, gen))
    p = rbox_to_paper(b)
    assert bool(((p[:, 4] >= -90) & (p[:, 4] < 0)).all())
    # the side of length w_p runs along (cos theta, sin theta)
    c = rbox_to_corners(b)
    t = torch.deg2rad(p[:, 4])
    dirs = torch.stack((torch.cos(t), torch.sin(t)), 1)
    e = torch.stack((c[:, 1] - c[:, 0], c[:, 2] - c[:, 1]), 1)  # [N,2,2]: w side, h side
    along = (e @ dirs[:, :, None]).squeeze(-1).abs() / e.norm(dim=-1)  # |cos| between dirs and sides
    side_len = torch.where(along[:, 0] > along[:, 1], b[:, 2], b[:, 3])
    assert torch.allclose(side_len, p[:, 2])
    back = rbox_from_paper(p)
    assert torch.allclose(back, b, atol=1e-9)
    # OpenCV-legacy example: a tall box written with theta = -90
    assert torch.allclose(rbox_from_paper(torch.tensor([[5.0, 5.0, 2.0, 8.0, -90.0]])),
                          torch.tensor([[5.0, 5.0, 8.0, 2.0, 0.0]]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weights", [(1, 1, 1, 1, 1), (10, 10, 5, 5, 1), (10, 10, 5, 5, 10)])
def test_coder_round_trip(device, weights):
    gen = torch.Generator().manual_seed(3)
    coder = RBoxCoder(weights)
    ref = _any_boxes(2000, gen).to(device)
    gt = _any_boxes(2000, gen).to(device)
    gt[:, 2:4] = ref[:, 2:4] * torch.exp(torch.randn(2000, 2, generator=gen, dtype=torch.float64)).to(device)
    # near +-90 degrees and nearly square boxes
    gt[:100, 4] = 89.999
    gt[100:200, 4] = -89.999
    ref[200:300, 4] = 89.9999
    gt[300:400, 3] = gt[300:400, 2] * (1 - 1e-6)
    ref0, gt0 = ref.clone(), gt.clone()
    d = coder.encode(ref, gt)
    assert torch.equal(ref, ref0) and torch.equal(gt, gt0)
    assert bool((d[:, 4].abs() <= weights[4] * math.pi / 2 + 1e-12).all())  # wrapped angle delta
    dec = coder.decode(d, ref)
    assert _is_canonical(dec)
    assert torch.allclose(dec, normalize_rboxes(gt), atol=1e-6)
    assert bool((rbox_iou_aligned(dec, gt) > 1 - 1e-6).all())


def test_coder_identical_boxes_give_zero_deltas():
    gen = torch.Generator().manual_seed(4)
    b = _any_boxes(1000, gen)
    b[:50, 4] = -90.0
    b[50:100, 4] = 89.99999
    for w in [(1, 1, 1, 1, 1), (10, 10, 5, 5, 1)]:
        d = RBoxCoder(w).encode(b, b)
        assert d.abs().max() < 1e-9
        # the same rectangle in another parametrisation also gives zero deltas
        alt = torch.stack((b[:, 0], b[:, 1], b[:, 3], b[:, 2], b[:, 4] + 270), 1)
        assert RBoxCoder(w).encode(b, alt).abs().max() < 1e-9


def test_coder_paper_equation_values():
    """Eq. (1): dx = (gx - px) / pw, dy = (gy - py) / ph, dw = ln(gw / pw), dh = ln(gh / ph),
    da = pi / 180 * (ga - pa) wrapped into [-90, 90)."""
    p = torch.tensor([[10.0, 20.0, 40.0, 10.0, 80.0]])
    g = torch.tensor([[14.0, 18.0, 50.0, 5.0, -85.0]])
    d = RBoxCoder().encode(p, g)[0]
    exp = torch.tensor([4 / 40, -2 / 10, math.log(50 / 40), math.log(5 / 10), math.radians(15.0)])
    assert torch.allclose(d, exp, atol=1e-6)
    d10 = RBoxCoder((10, 10, 5, 5, 1)).encode(p, g)[0]
    assert torch.allclose(d10, exp * torch.tensor([10, 10, 5, 5, 1]), atol=1e-5)


def test_coder_decode_clamps_and_multiclass():
    coder = RBoxCoder((10, 10, 5, 5, 1))
    ref = torch.tensor([[50.0, 50.0, 20.0, 10.0, 0.0]])
    big = torch.tensor([[0.0, 0.0, 100.0, 100.0, 0.0]])
    out = coder.decode(big, ref)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 2:4], torch.tensor([20.0 * 1000 / 16, 10.0 * 1000 / 16]))
    d = torch.randn(3, 15, generator=torch.Generator().manual_seed(0))
    refs = ref.repeat(3, 1)
    multi = coder.decode(d, refs)
    assert multi.shape == (3, 15)
    assert torch.allclose(multi[:, 5:10], coder.decode(d[:, 5:10], refs))
