"""rroi_align: torchvision equivalence at angle 0, rotation equivariance, frame, gradients."""
import pytest
import torch
import torchvision

import chromoseg.ops.roi_align as ra_mod
from chromoseg.ops import rroi_align

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def _axis_aligned_rois(gen, k, img_w, img_h, batch):
    """RoIs inside the image (float64): (batch_idx, cx, cy, w, h, 0) and torchvision's xyxy form."""
    w = torch.rand(k, generator=gen, dtype=torch.float64) * (img_w * 0.5) + 0.5
    h = torch.rand(k, generator=gen, dtype=torch.float64) * (img_h * 0.5) + 0.5
    x1 = torch.rand(k, generator=gen, dtype=torch.float64) * (img_w - w)
    y1 = torch.rand(k, generator=gen, dtype=torch.float64) * (img_h - h)
    bi = torch.randint(0, batch, (k,), generator=gen).to(torch.float64)
    ours = torch.stack((bi, x1 + w / 2, y1 + h / 2, w, h, torch.zeros(k, dtype=torch.float64)), 1)
    tv = torch.stack((bi, x1, y1, x1 + w, y1 + h), 1)
    return ours, tv


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.125])
@pytest.mark.parametrize("sampling_ratio", [2, 0, 3])
def test_matches_torchvision_at_angle_zero(device, scale, sampling_ratio):
    gen = torch.Generator().manual_seed(int(scale * 1000) + sampling_ratio)
    x = torch.randn(2, 3, 24, 30, generator=gen, dtype=torch.float64).to(device)
    ours, tv = _axis_aligned_rois(gen, 40, 30 / scale, 24 / scale, 2)
    for out_size in [(7, 7), (5, 3)]:
        ref = torchvision.ops.roi_align(x, tv.to(device), out_size, scale, sampling_ratio, aligned=True)
        got = rroi_align(x, ours.to(device), out_size, scale, sampling_ratio)
        assert got.shape == ref.shape == (40, 3, *out_size)
        assert torch.allclose(got, ref, atol=1e-10), (got - ref).abs().max()
    # float32 too
    ref = torchvision.ops.roi_align(x.float(), tv.float().to(device), 7, scale, sampling_ratio, aligned=True)
    got = rroi_align(x.float(), ours.float().to(device), 7, scale, sampling_ratio)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-4)


def test_matches_torchvision_at_map_border():
    """Samples just outside the map follow torchvision's border rule (-1 .. H / W)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 10, 12, generator=gen, dtype=torch.float64)
    tv = torch.tensor([[0, -1.2, -0.7, 4.0, 3.0], [0, 9.5, 7.2, 12.9, 10.8], [0, -3, -3, 15, 13]],
                      dtype=torch.float64)
    ours = torch.cat((tv[:, :1], (tv[:, 1:3] + tv[:, 3:5]) / 2, tv[:, 3:5] - tv[:, 1:3],
                      torch.zeros(3, 1, dtype=torch.float64)), 1)
    ref = torchvision.ops.roi_align(x, tv, 4, 1.0, 2, aligned=True)
    assert torch.allclose(rroi_align(x, ours, 4, 1.0, 2), ref, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_rot90_equivariance(device, scale):
    """Rotating the map by 90 deg counter-clockwise (torch.rot90) == adding 90 deg to the angle."""
    gen = torch.Generator().manual_seed(11)
    H, W = 28, 36
    x = torch.randn(1, 2, H, W, generator=gen, dtype=torch.float64)
    img_w, img_h = W / scale, H / scale
    k = 30
    cx = torch.rand(k, generator=gen, dtype=torch.float64) * img_w * 0.4 + img_w * 0.3
    cy = torch.rand(k, generator=gen, dtype=torch.float64) * img_h * 0.4 + img_h * 0.3
    w = torch.rand(k, generator=gen, dtype=torch.float64) * 8 / scale + 2
    h = torch.rand(k, generator=gen, dtype=torch.float64) * 4 / scale + 1
    a = torch.rand(k, generator=gen, dtype=torch.float64) * 180 - 90
    z = torch.zeros(k, dtype=torch.float64)
    rois = torch.stack((z, cx, cy, w, h, a), 1)
    # rot90 (dims H, W): the point (x, y) goes to (y, img_w - x), directions turn by +90 deg
    rois_r = torch.stack((z, cy, img_w - cx, w, h, a + 90), 1)
    xr = torch.rot90(x, 1, dims=(2, 3))
    out = rroi_align(x.to(device), rois.to(device), (5, 7), scale, 2)
    out_r = rroi_align(xr.to(device), rois_r.to(device), (5, 7), scale, 2)
    assert torch.allclose(out, out_r, atol=1e-9)
    # and the same box written with w and h swapped (angle - 90) samples a transposed grid
    rois_t = torch.stack((z, cx, cy, h, w, a - 90), 1)
    out_t = rroi_align(x.to(device), rois_t.to(device), (7, 5), scale, 2)
    # u' = -v, v' = u  =>  out_t[r', c'] = out[c', ow-1-r'] ... check via flips
    assert torch.allclose(out_t, out.transpose(2, 3).flip(2), atol=1e-9)


def test_output_frame_on_linear_ramp():
    """Columns run along (cos a, -sin a), rows along (sin a, cos a) (bilinear is exact on ramps)."""
    H, W = 40, 50
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    x = torch.stack((xs, ys))[None]  # channel 0 = x of the pixel centre, channel 1 = y
    cx, cy, w, h, a = 25.0, 20.0, 16.0, 6.0, 30.0
    rois = torch.tensor([[0, cx, cy, w, h, a]], dtype=torch.float64)
    oh, ow = 3, 4
    out = rroi_align(x, rois, (oh, ow), 1.0, 2)[0]
    r = torch.deg2rad(torch.tensor(a, dtype=torch.float64))
    u = torch.stack((torch.cos(r), -torch.sin(r)))
    v = torch.stack((torch.sin(r), torch.cos(r)))
    su = -w / 2 + (torch.arange(ow, dtype=torch.float64) + 0.5) * w / ow
    sv = -h / 2 + (torch.arange(oh, dtype=torch.float64) + 0.5) * h / oh
    exp = (torch.tensor([cx, cy], dtype=torch.float64)[:, None, None]
           + u[:, None, None] * su[None, None, :] + v[:, None, None] * sv[None, :, None])
    assert torch.allclose(out, exp, atol=1e-9)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.0, 3.5, 5.0, 2.0, 30.0], [1, 4.2, 2.1, 4.0, 3.0, -70.0],
                         [1, 0.5, 6.5, 3.0, 2.0, 10.0], [0, 7.6, 1.0, 6.0, 1.5, 89.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: rroi_align(t, rois, (3, 2), 1.0, 2), (x,))
    assert torch.autograd.gradcheck(lambda t: rroi_align(t, rois, 2, 0.8, 0), (x,))


def test_backward_matches_torchvision_at_angle_zero():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 16, 20, generator=gen, dtype=torch.float64)
    ours, tv = _axis_aligned_rois(gen, 20, 40, 32, 1)
    g = torch.randn(20, 4, 7, 7, generator=gen, dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    (rroi_align(x1, ours, 7, 0.5, 2) * g).sum().backward()
    x2 = x.clone().requires_grad_()
    (torchvision.ops.roi_align(x2, tv, 7, 0.5, 2, aligned=True) * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)


def test_chunking_empty_and_inputs_unchanged(monkeypatch):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 12, 14, generator=gen)
    rois = torch.cat((torch.randint(0, 2, (25, 1), generator=gen).float(),
                      torch.rand(25, 2, generator=gen) * 12, torch.rand(25, 2, generator=gen) * 8 + 1,
                      torch.rand(25, 1, generator=gen) * 360 - 180), 1)
    x0, r0 = x.clone(), rois.clone()
    full = rroi_align(x, rois, 5, 1.0, 2)
    monkeypatch.setattr(ra_mod, "_MAX_NNZ", 300)
    assert torch.allclose(rroi_align(x, rois, 5, 1.0, 2), full, atol=1e-6)
    assert torch.equal(x, x0) and torch.equal(rois, r0)
    assert rroi_align(x, rois[:0], (4, 6), 1.0, 2).shape == (0, 3, 4, 6)
    with pytest.raises(ValueError):
        rroi_align(x, rois[:, :5], 5)
    bad = rois.clone()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="batch indices"):
        rroi_align(x, bad, 5)


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_bounds_sample_padded_images_as_each_on_its_own(sampling_ratio):
    """Images of different sizes zero-padded into one batch, each RoI with its image's bounds, give
    exactly the per-image results, RoIs over the borders included; bad bounds are refused."""
    g = torch.Generator().manual_seed(0)
    sizes = [(7, 19), (23, 11), (16, 16)]
    imgs = [torch.rand(2, h, w, generator=g) for h, w in sizes]
    rois = torch.tensor([[0, 3.0, 2.0, 12.0, 5.0, 20.0], [0, 18.5, 6.5, 9.0, 4.0, -70.0],
                         [1, 1.0, 20.0, 15.0, 6.0, 45.0], [1, 10.0, 22.9, 8.0, 8.0, 0.0],
                         [2, 8.0, 8.0, 30.0, 3.0, 10.0], [2, 15.9, 0.2, 6.0, 6.0, -30.0]])
    batch = torch.zeros(3, 2, 23, 19)
    for b, im in enumerate(imgs):
        batch[b, :, :im.shape[1], :im.shape[2]] = im
    bounds = torch.tensor([sizes[int(b)] for b in rois[:, 0]])
    got = rroi_align(batch, rois, (5, 7), sampling_ratio=sampling_ratio, bounds=bounds)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        one = rroi_align(imgs[b][None], torch.cat([torch.zeros(1), roi[1:]])[None], (5, 7),
                         sampling_ratio=sampling_ratio)
        assert torch.equal(got[k:k + 1], one), k
    with pytest.raises(ValueError, match="bounds"):
        rroi_align(batch, rois, (5, 7), bounds=bounds + 30)
