"""Deep Snake (variant ``snake``): the pieces (circular convolution, contour sampling, octagon, losses)
and the model (train / eval outputs, a few optimisation steps, checkpoint round trip). CPU, tiny sizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chromoseg.models import build_model
from chromoseg.models.snake import (CircConv, Snake, center_targets, contour_loss, decode_centers, detection_losses,
                                    diamond_contour, draw_gaussian, feature_to_image, fill_contour, focal_loss,
                                    gaussian_radius, image_to_feature, initial_contour, mask_geometry,
                                    aligned_contour, octagon_from_extreme, resample_closed, sample_vertex_features,
                                    signed_area)

SIZE = (96, 128)
TINY = dict(backbone="resnet18", image_size=SIZE, fpn_channels=32, snake_channels=16, center_head_channels=16,
            box_detections_per_img=8, box_score_thresh=0.0)


def bars_sample(h=SIZE[0], w=SIZE[1], angles=(20.0, -60.0), seed=0):
    """Two bright slanted bars on a dark background, with the target dict the dataset gives."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    img = torch.zeros(1, h, w)
    masks, boxes = [], []
    for k, a in enumerate(angles):
        cx, cy = w * (k + 1) / (len(angles) + 1), h / 2
        r = math.radians(a)
        du = (xx - cx) * math.cos(r) - (yy - cy) * math.sin(r)
        dv = (xx - cx) * math.sin(r) + (yy - cy) * math.cos(r)
        m = (du.abs() <= 18) & (dv.abs() <= 5)
        img[0][m] = 0.8
        ys, xs = torch.where(m)
        masks.append(m.to(torch.uint8))
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    n = len(angles)
    target = dict(boxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.arange(1, n + 1),
                  masks=torch.stack(masks), rboxes=torch.zeros(n, 5), has_masks=torch.tensor(True),
                  class_known=torch.ones(n, dtype=torch.bool))
    return img + 0.05 * torch.rand(1, h, w, generator=g), target


# ---- circular convolution / snake ------------------------------------------------------------------

def test_circular_conv_wraps_around():
    n = 16
    conv = CircConv(1, 1, kernel_size=3)
    x = torch.randn(1, 1, n, requires_grad=True)
    y = conv(x)
    assert y.shape == (1, 1, n)
    y[0, 0, 0].backward()
    assert x.grad[0, 0, n - 1].abs() > 0  # vertex 0 sees vertex N-1
    assert x.grad[0, 0, 2:n - 1].abs().sum() == 0
    ref = F.conv1d(F.pad(x.detach(), (1, 1), mode="circular"), conv.weight, conv.bias)
    torch.testing.assert_close(y.detach(), ref)
    # a whole dilated snake: still N vertices, and vertex 0's offset depends on the last vertex
    torch.manual_seed(0)
    snake = Snake(4, channels=8).eval()
    x = torch.randn(2, 4, 40, requires_grad=True)
    out = snake(x)
    assert out.shape == (2, 40, 2)
    out[0, 0].sum().backward()
    assert x.grad[0, :, -1].abs().sum() > 0 and x.grad[1].abs().sum() == 0


# ---- contours ----------------------------------------------------------------------------------------

def test_uniform_resampling_of_a_square():
    sq = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    p = resample_closed(sq, 16)
    assert p.shape == (16, 2)
    torch.testing.assert_close(p[0], sq[0])
    step = (torch.roll(p, -1, 0) - p).norm(dim=1)
    torch.testing.assert_close(step, torch.ones(16))
    on_edge = (p[:, 0] == 0) | (p[:, 0] == 4) | (p[:, 1] == 0) | (p[:, 1] == 4)
    assert on_edge.all()
    # a densely sampled polygon (many tiny collinear segments) gives the same points
    dense = resample_closed(sq, 400)
    torch.testing.assert_close(resample_closed(dense, 16), p, atol=1e-5, rtol=0)
    # batched, and a degenerate (zero-length) polygon
    b = resample_closed(torch.stack([sq, torch.zeros(4, 2)]), 8)
    assert b.shape == (2, 8, 2) and torch.isfinite(b).all() and (b[1] == 0).all()


def test_vertex_features_are_the_map_at_integer_coordinates():
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 5, 7)
    pts = torch.tensor([[[0.0, 0.0], [6.0, 4.0], [3.0, 2.0]], [[1.0, 1.0], [5.0, 0.0], [0.0, 4.0]]])
    bidx = torch.tensor([1, 0])
    f = sample_vertex_features(feat, pts, bidx)
    assert f.shape == (2, 3, 3)
    for k in range(2):
        for v in range(3):
            x, y = int(pts[k, v, 0]), int(pts[k, v, 1])
            torch.testing.assert_close(f[k, :, v], feat[bidx[k], :, y, x])
    half = sample_vertex_features(feat, torch.tensor([[[2.5, 1.0]]]), torch.tensor([0]))
    torch.testing.assert_close(half[0, :, 0], (feat[0, :, 1, 2] + feat[0, :, 1, 3]) / 2)
    # the coordinate convention: a feature cell's centre is the centre of its 4 x 4 image pixels
    assert float(image_to_feature(torch.tensor(2.0))) == 0.0
    assert float(feature_to_image(image_to_feature(torch.tensor(13.7)))) == pytest.approx(13.7)


def test_octagon_from_extreme_points():
    ex = torch.tensor([[[6.0, 0.0], [10.0, 3.0], [4.0, 8.0], [0.0, 5.0]]])  # top, right, bottom, left
    octo = octagon_from_extreme(ex)[0]
    assert ((octo[:, 0] >= 0) & (octo[:, 0] <= 10) & (octo[:, 1] >= 0) & (octo[:, 1] <= 8)).all()
    for p in ex[0]:
        assert (octo - p).norm(dim=1).min() < 1e-6  # passes through every extreme point
    d1 = octo - torch.roll(octo, 1, 0)
    d2 = torch.roll(octo, -1, 0) - octo
    corners = (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]).abs() > 1e-6
    assert int(corners.sum()) == 8
    # corners: each extreme point extended by 1/4 of its edge (10 wide, 8 high), truncated at the box
    expect = {(8.5, 0.0), (10.0, 1.0), (10.0, 5.0), (6.5, 8.0), (1.5, 8.0), (0.0, 7.0), (0.0, 3.0), (3.5, 0.0)}
    assert {tuple(round(v, 4) for v in q.tolist()) for q in octo[corners]} == expect
    init = initial_contour(ex, 128)[0]
    assert init.shape == (128, 2)
    torch.testing.assert_close(init[0], ex[0, 0])  # starts at the top extreme point
    assert signed_area(init.numpy()) > 0  # clockwise on screen, like the ground-truth contours
    assert ((init[:, 0] >= 0) & (init[:, 0] <= 10) & (init[:, 1] >= 0) & (init[:, 1] <= 8)).all()
    # a point at a box corner: the segment is truncated there
    c = octagon_from_extreme(torch.tensor([[[0.0, 0.0], [10.0, 3.0], [4.0, 8.0], [0.0, 5.0]]]))[0]
    assert c[:, 0].min() >= 0 and c[:, 1].min() >= 0


def test_diamond_vertices_are_the_edge_midpoints():
    d = diamond_contour(torch.tensor([[2.0, 4.0, 10.0, 8.0]]), 40)[0]
    torch.testing.assert_close(d[::10], torch.tensor([[6.0, 4.0], [10.0, 6.0], [6.0, 8.0], [2.0, 6.0]]))


def test_ground_truth_geometry_from_a_mask():
    m = np.zeros((20, 30), np.uint8)
    m[5:9, 10:20] = 1  # 4 rows x 10 columns
    ex, cont, box = mask_geometry(m)
    np.testing.assert_array_equal(box, [10, 5, 20, 9])
    np.testing.assert_allclose(ex, [[15.5, 5.5], [19.5, 7.5], [15.5, 8.5], [10.5, 7.5]])
    assert signed_area(cont) > 0
    assert (fill_contour(cont, m.shape) == m).all()  # the polygon through boundary centres fills the mask
    gt = aligned_contour(cont, (19.8, 3.0), 64)
    torch.testing.assert_close(gt[0], torch.tensor([19.5, 5.5]))  # starts at the point nearest the start
    assert signed_area(gt.numpy()) > 0
    assert mask_geometry(np.zeros((4, 4), np.uint8)) is None
    _, t = bars_sample()
    for mk in t["masks"].numpy():  # slanted bars: the filled contour is the mask
        c = mask_geometry(mk)[1]
        f = fill_contour(c, mk.shape).astype(bool)
        assert (f & (mk > 0)).sum() / (f | (mk > 0)).sum() > 0.97


# ---- losses ------------------------------------------------------------------------------------------

def test_contour_loss_zero_when_perfect():
    a = torch.rand(3, 128, 2) * 20
    assert float(contour_loss(a, a)) == 0.0
    assert float(contour_loss(a + 0.3, a)) > 0
    assert float(contour_loss(a[:0], a[:0])) == 0.0


def test_focal_loss_and_targets():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 1, 3, 4] = 1.0
    perfect = torch.where(target > 0, 30.0, -30.0)
    s, n = focal_loss(perfect, target)
    assert int(n) == 1 and float(s) < 1e-8
    vals = [float(focal_loss(perfect * t, target)[0]) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(vals, vals[1:])), vals
    # CenterNet's radius rule and Gaussian: peak exactly 1 at the centre
    assert gaussian_radius(10, 10) == pytest.approx(2.7332, abs=1e-4)
    heat = torch.zeros(9, 9)
    draw_gaussian(heat, 4, 4, 2)
    assert heat[4, 4] == 1.0 and 0 < heat[4, 6] < 1 and heat[4, 7] == 0
    # targets from boxes: cell, size, offset in stride-4 feature pixels
    t = dict(boxes=torch.tensor([[8.0, 4.0, 26.0, 38.0]]), labels=torch.tensor([2]))  # centre (17, 21)
    tg = center_targets([t], 3, (16, 16), "cpu")
    assert tg["cell"].tolist() == [[4, 5]] and tg["heat"][0, 1, 5, 4] == 1.0 and tg["heat"][0, 0].sum() == 0
    torch.testing.assert_close(tg["wh"], torch.tensor([[4.5, 8.5]]))
    torch.testing.assert_close(tg["offset"], torch.tensor([[-0.25, -0.25]]))  # centre (3.75, 4.75)
    # perfect heads give ~zero detection losses, and decode back to the box
    hm = torch.where(tg["heat"] >= 1, 30.0, -30.0)
    wh = torch.zeros(1, 2, 16, 16)
    off = torch.zeros(1, 2, 16, 16)
    wh[0, :, 5, 4] = tg["wh"][0]
    off[0, :, 5, 4] = tg["offset"][0]
    losses = detection_losses(hm, wh, off, tg)
    assert all(float(v) < 1e-6 for v in losses.values()), losses
    det = decode_centers(hm, wh, off, [(16, 16)], k=5, score_thresh=0.5)[0]
    assert det["labels"].tolist() == [2]
    torch.testing.assert_close(feature_to_image(det["boxes"].reshape(2, 2)).reshape(4), t["boxes"][0])
    # an instance of unknown class: no class channel is told "not here"; the channel maximum is
    t2 = dict(boxes=t["boxes"], labels=torch.tensor([2]), class_known=torch.tensor([False]))
    tg2 = center_targets([t2], 3, (16, 16), "cpu")
    assert tg2["heat"].sum() == 0 and tg2["any_heat"][0, 0, 5, 4] == 1.0
    hm2 = torch.full((1, 3, 16, 16), -30.0)
    hm2[0, 0, 5, 4] = 30.0  # any class at the centre: fine
    assert float(detection_losses(hm2, wh, off, tg2)["loss_heatmap"]) < 1e-6
    assert float(detection_losses(torch.full((1, 3, 16, 16), -30.0), wh, off, tg2)["loss_heatmap"]) > 1


# ---- the model ---------------------------------------------------------------------------------------

def tiny_model(**kw):
    torch.manual_seed(0)
    return build_model("snake", **dict(TINY, **kw))


def test_train_mode_losses_are_finite_and_reach_every_parameter():
    model = tiny_model()
    model.train()
    im0, t0 = bars_sample(seed=0)
    im1, t1 = bars_sample(seed=1, angles=(80.0, 5.0, -30.0))
    t1["class_known"] = torch.tensor([True, False, True])  # one chromosome of unknown class
    im2, t2 = bars_sample(seed=2)
    t2["has_masks"] = torch.tensor(False)  # box-only image: detector only
    losses = model([im0, im1, im2], [t0, t1, t2])
    assert set(losses) == {"loss_heatmap", "loss_wh", "loss_offset", "loss_extreme", "loss_contour_1",
                           "loss_contour_2", "loss_contour_3"}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing  # DDP runs with find_unused_parameters=False
    # no masks at all: the contour terms are zero but still connected to the snake parameters
    model.zero_grad()
    losses = model([im2], [t2])
    assert float(losses["loss_contour_1"].detach()) == 0.0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.contour_snakes.parameters())


def test_eval_outputs_at_the_original_size():
    model = tiny_model().eval()
    im, _ = bars_sample(h=60, w=90)  # resized to 96 x 128 inside, outputs mapped back to 60 x 90
    with torch.no_grad():
        out = model([im])
    assert len(out) == 1
    d = out[0]
    n = d["scores"].shape[0]
    assert 0 < n <= TINY["box_detections_per_img"]
    assert d["boxes"].shape == (n, 4) and d["labels"].shape == (n,) and d["labels"].dtype == torch.int64
    assert d["masks"].shape == (n, 1, 60, 90) and d["masks"].dtype == torch.float32
    assert d["rboxes"].shape == (n, 5) and d["endpoints"].shape == (n, 2, 2)
    assert d["class_scores"].shape == (n, 24) and d["contours"].shape == (n, 128, 2)
    assert ((d["labels"] >= 1) & (d["labels"] <= 24)).all()
    assert ((d["rboxes"][:, 4] >= -90) & (d["rboxes"][:, 4] < 90)).all() and (d["rboxes"][:, 2] >= d["rboxes"][:, 3]).all()
    assert set(torch.unique(d["masks"]).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(d["scores"], d["class_scores"][torch.arange(n), d["labels"] - 1])
    # the prediction code turns it into instances unchanged
    from chromoseg.engine.predict import resolve_settings, select_instances

    inst = select_instances(d, resolve_settings(None, dict(score_threshold=0.0, mask_nms_iou=0.0, min_area=1)))
    assert all(set(i) >= {"mask", "bbox", "rbox", "endpoints", "category_id", "score"} for i in inst)


def test_a_few_steps_reduce_the_loss():
    model = tiny_model()
    im, t = bars_sample()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    first = None
    contour_terms = ("loss_extreme", "loss_contour_1", "loss_contour_2", "loss_contour_3")
    for _ in range(6):
        torch.manual_seed(1)  # the same box jitter each step
        losses = model([im], [t])
        total = sum(losses.values())
        first = {k: float(v.detach()) for k, v in losses.items()} if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    torch.manual_seed(1)
    with torch.no_grad():
        last = {k: float(v) for k, v in model([im], [t]).items()}
    assert sum(last.values()) < 0.5 * sum(first.values()), (first, last)
    assert sum(last[k] for k in contour_terms) < sum(first[k] for k in contour_terms), (first, last)


def test_checkpoint_round_trip(tmp_path):
    from chromoseg.engine.checkpoint import export_model, load_model
    from chromoseg.engine.train import TrainConfig

    cfg = TrainConfig(variant="snake", backbone="resnet18", image_size=SIZE, small=True,
                      model_kwargs=dict(fpn_channels=32, snake_channels=16, center_head_channels=16,
                                        box_score_thresh=0.0)).model_config()
    torch.manual_seed(0)
    model = build_model(**cfg)
    model.train()
    im, t = bars_sample()
    model([im], [t])  # move the BatchNorm statistics off their initial values
    model.eval()
    ck = tmp_path / "last.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg, "epoch": 1}, ck)
    with torch.no_grad():
        ref = model([im])[0]
        for path in (ck, export_model(ck, tmp_path / "m.safetensors", half=False)["path"]):
            out = load_model(path)([im])[0]
            assert set(out) == set(ref)
            for k in ref:
                torch.testing.assert_close(out[k], ref[k], msg=k)
    assert model.config["variant"] == "snake"
    torch.manual_seed(1)  # other initial weights: only the loaded state can make the outputs agree
    again = build_model(**model.config)  # the model's own config rebuilds it too
    loaded = again.load_state_dict(model.state_dict())
    assert not loaded.missing_keys and not loaded.unexpected_keys
    with torch.no_grad():
        out = again.eval()([im])[0]
    assert set(out) == set(ref)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], msg=k)


def test_builder_and_cli_accept_snake():
    with pytest.raises(ValueError):
        build_model("snake", ed=True, **TINY)
    from chromoseg.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--variant", "snake", "--small"])
    assert args.variant == "snake"
