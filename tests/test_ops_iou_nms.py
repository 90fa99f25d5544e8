"""rbox_to_corners, rbox_iou, nms_rotated, batched_nms_rotated against shapely / brute force."""
import numpy as np
import pytest
import torch

from chromoseg.ops import (batched_nms_rotated, nms_rotated, rbox_iou, rbox_iou_aligned,
                           rbox_to_corners)

shapely = pytest.importorskip("shapely")
from shapely.geometry import Polygon  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def _poly(box):
    """Independent reference: rectangle from the contract (w side along (cos a, -sin a))."""
    cx, cy, w, h, a = [float(v) for v in box]
    r = np.deg2rad(a)
    u = np.array([np.cos(r), -np.sin(r)]) * w / 2
    v = np.array([np.sin(r), np.cos(r)]) * h / 2
    c = np.array([cx, cy])
    return Polygon([c - u - v, c + u - v, c + u + v, c - u + v])


def _ref_iou(a, b):
    out = np.zeros((len(a), len(b)))
    pa = [_poly(x) for x in a]
    pb = [_poly(x) for x in b]
    for i, p in enumerate(pa):
        for j, q in enumerate(pb):
            if p.intersects(q):
                u = p.union(q).area
                out[i, j] = p.intersection(q).area / u if u > 0 else 0.0
    return out


def _random_boxes(n, gen, center=100.0, size=40.0, offset=0.0):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * center + offset
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size + 0.5
    a = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 400 - 200
    return torch.cat((xy, wh, a), 1)


def _tricky_pairs(gen):
    """(a, b) rows: identical, contained, edge-touching, shared edges, thin, far away, 1e4 coords."""
    base = _random_boxes(60, gen)
    rows_a, rows_b = [], []
    for bx in base:
        cx, cy, w, h, a = bx.tolist()
        r = np.deg2rad(a)
        u = np.array([np.cos(r), -np.sin(r)])
        v = np.array([np.sin(r), np.cos(r)])
        cands = [
            [cx, cy, w, h, a],  # identical
            [cx, cy, h, w, a + 90],  # identical, other parametrisation
            [cx, cy, w * 0.5, h * 0.5, a],  # contained, same angle
            [cx, cy, min(w, h) * 0.3, min(w, h) * 0.3, a + 37],  # contained, rotated
            [*(np.array([cx, cy]) + u * w), w, h, a],  # touching along an edge
            [*(np.array([cx, cy]) + u * w / 2), w, h, a],  # half overlap, collinear edges
            [*(np.array([cx, cy]) + v * h / 3), w, h, a],  # shifted along v
            [*(np.array([cx, cy]) + (u * w + v * h) / 2), w, h, a + 45],  # corner on corner
            [cx, cy, w, 0.01, a],  # thin inside
            [cx, cy, w, 0.01, a + 90],  # thin across
            [cx + 1e3, cy, w, h, a],  # far away
        ]
        rows_a += [[cx, cy, w, h, a]] * len(cands)
        rows_b += cands
    a = torch.tensor(rows_a, dtype=torch.float64)
    b = torch.tensor(rows_b, dtype=torch.float64)
    big = a.clone()
    big[:, :2] += 1e4
    bigb = b.clone()
    bigb[:, :2] += 1e4
    thin = _random_boxes(100, gen, center=20, size=30)
    thin[:, 3] = 0.01
    thin2 = thin.clone()
    thin2[:, 4] += torch.rand(100, generator=gen, dtype=torch.float64) * 10
    return torch.cat((a, big, thin)), torch.cat((b, bigb, thin2))


def test_corners_match_contract():
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(2000, gen)
    c = rbox_to_corners(boxes).numpy()
    for k in range(0, 2000, 7):
        ref = np.array(_poly(boxes[k]).exterior.coords)[:4]
        assert np.allclose(c[k], ref, atol=1e-9)
    # consecutive corners go around the box: positive shoelace area equal to w * h
    x, y = c[..., 0], c[..., 1]
    area = 0.5 * (x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1)
    assert np.allclose(area, (boxes[:, 2] * boxes[:, 3]).numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_rbox_iou_random_vs_shapely(device):
    gen = torch.Generator().manual_seed(1)
    a = _random_boxes(120, gen)
    b = _random_boxes(90, gen)
    got = rbox_iou(a.to(device), b.to(device)).cpu().numpy()
    ref = _ref_iou(a.numpy(), b.numpy())
    assert (ref > 0).mean() > 0.1  # the test exercises overlapping pairs
    assert np.abs(got - ref).max() < 1e-7
    assert got.min() >= 0 and got.max() <= 1
    # float32 input gives float32 output of the same values
    got32 = rbox_iou(a.float().to(device), b.float().to(device))
    assert got32.dtype == torch.float32
    assert np.abs(got32.cpu().numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_rbox_iou_tricky_cases(device):
    gen = torch.Generator().manual_seed(2)
    a, b = _tricky_pairs(gen)
    got = rbox_iou_aligned(a.to(device), b.to(device)).cpu().numpy()
    ref = np.array([_ref_iou(x[None].numpy(), y[None].numpy())[0, 0] for x, y in zip(a, b)])
    err = np.abs(got - ref)
    assert err.max() < 1e-6, (err.argmax(), a[err.argmax()], b[err.argmax()], got[err.argmax()], ref[err.argmax()])
    n = 60
    assert np.allclose(got[0:11 * n:11], 1.0) and np.allclose(got[1:11 * n:11], 1.0)
    assert np.allclose(got[4:11 * n:11], 0.0)  # edge-touching
    # the matrix form agrees with the aligned form, and is symmetric
    m = rbox_iou(a[:200].to(device), b[:200].to(device)).cpu()
    assert torch.allclose(m.diagonal(), torch.from_numpy(got[:200]), atol=1e-9)
    mt = rbox_iou(b[:200].to(device), a[:200].to(device)).cpu()
    assert torch.allclose(m, mt.T, atol=1e-9)


def test_rbox_iou_many_boxes_symmetric_and_chunked(monkeypatch):
    import chromoseg.ops.iou as iou_mod

    gen = torch.Generator().manual_seed(3)
    boxes = _random_boxes(1500, gen, center=600, size=60)
    full = rbox_iou(boxes, boxes)
    assert torch.allclose(full, full.T, atol=1e-12)
    assert torch.allclose(full.diagonal(), torch.ones(1500, dtype=torch.float64))
    assert full.min() >= 0 and full.max() <= 1
    # small chunks give the same result
    monkeypatch.setattr(iou_mod, "_PAIR_CHUNK", 97)
    monkeypatch.setattr(iou_mod, "_DENSE_CHUNK", 500)
    monkeypatch.setattr(iou_mod, "_ROW_BLOCK", 7)
    assert torch.equal(rbox_iou(boxes[:300], boxes), full[:300])
    # spot-check against shapely
    idx = torch.randint(0, 1500, (300, 2), generator=gen)
    for i, j in idx.tolist():
        assert abs(full[i, j].item() - _ref_iou(boxes[i:i + 1].numpy(), boxes[j:j + 1].numpy())[0, 0]) < 1e-7


def test_rbox_iou_empty():
    assert rbox_iou(torch.zeros(0, 5), torch.zeros(3, 5)).shape == (0, 3)
    assert rbox_iou(torch.zeros(2, 5), torch.zeros(0, 5)).shape == (2, 0)
    # zero-area boxes give 0, not nan
    z = torch.tensor([[5.0, 5, 0, 3, 10], [5.0, 5, 0, 0, 0]])
    out = rbox_iou(z, z)
    assert torch.isfinite(out).all() and (out == 0).all()


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ious = _ref_iou(boxes, boxes)
    keep = []
    for i in order:
        if all(ious[i, k] <= thr for k in keep):
            keep.append(i)
    return keep


def _clustered_boxes(n, gen, k=8):
    cen = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 200
    ang = torch.rand(k, generator=gen, dtype=torch.float64) * 180 - 90
    idx = torch.randint(0, k, (n,), generator=gen)
    jit = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    return torch.stack((cen[idx, 0] + 4 * jit[:, 0], cen[idx, 1] + 4 * jit[:, 1],
                        50 + 8 * jit[:, 2], 12 + 2 * jit[:, 3], ang[idx] + 8 * jit[:, 4]), 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("thr", [0.1, 0.5, 0.7])
def test_nms_rotated_vs_bruteforce(device, thr):
    gen = torch.Generator().manual_seed(4)
    boxes = _clustered_boxes(150, gen)
    scores = torch.rand(150, generator=gen, dtype=torch.float64)
    scores[10:20] = scores[0]  # ties keep the original order
    keep = nms_rotated(boxes.to(device), scores.to(device), thr)
    assert keep.dtype == torch.int64 and keep.device.type == device
    assert keep.cpu().tolist() == _brute_nms(boxes.numpy(), scores.tolist(), thr)
    assert torch.all(scores[keep.cpu()][:-1] >= scores[keep.cpu()][1:])


@pytest.mark.parametrize("device", DEVICES)
def test_batched_nms_rotated_vs_bruteforce(device):
    gen = torch.Generator().manual_seed(5)
    boxes = _clustered_boxes(200, gen, k=5)
    boxes[:50, :2] += 1e4  # far from the others: large offsets must not matter
    scores = torch.rand(200, generator=gen)
    idxs = torch.randint(0, 4, (200,), generator=gen)
    idxs[:10] = -3
    keep = batched_nms_rotated(boxes.to(device), scores.to(device), idxs.to(device), 0.4)
    ref = []
    for c in idxs.unique().tolist():
        sel = (idxs == c).nonzero(as_tuple=True)[0]
        ref += sel[_brute_nms(boxes[sel].numpy(), scores[sel].tolist(), 0.4)].tolist()
    ref = sorted(ref, key=lambda i: (-scores[i].item(), i))
    assert keep.cpu().tolist() == ref


def test_nms_empty_and_single():
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms_rotated(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).shape == (0,)
    assert nms_rotated(torch.tensor([[1.0, 1, 2, 1, 0]]), torch.tensor([0.3]), 0.5).tolist() == [0]
