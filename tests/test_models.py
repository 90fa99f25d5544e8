"""Model tests on the CPU with small settings (resnet18, 128x160 images, few proposals and RoIs)."""
from __future__ import annotations

import math

import pytest
import torch

from chromoseg.models import SMALL, VARIANTS, build_model

SIZE = (128, 160)


def synth_sample(h=128, w=160, n=3, seed=0, has_masks=True):
    """An image with ``n`` bright slanted bars ("chromosomes") and a full target dict."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, h, w)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    masks, rboxes, boxes, ends = [], [], [], []
    for k in range(n):
        cx = 30 + (w - 60) * (k + 0.5) / n
        cy = h / 2 + float(torch.randint(-15, 15, (1,), generator=g))
        length, width = 50.0, 12.0
        a = float(torch.randint(-80, 80, (1,), generator=g))
        r = math.radians(a)
        ux, uy, vx, vy = math.cos(r), -math.sin(r), math.sin(r), math.cos(r)
        du = (xx - cx) * ux + (yy - cy) * uy
        dv = (xx - cx) * vx + (yy - cy) * vy
        m = (du.abs() <= length / 2) & (dv.abs() <= width / 2)
        img[0][m] = 0.8
        ys, xs = torch.where(m)
        masks.append(m.to(torch.uint8))
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
        rboxes.append([cx, cy, length, width, a])
        e = sorted([[cx - ux * length / 2, cy - uy * length / 2], [cx + ux * length / 2, cy + uy * length / 2]],
                   key=lambda p: (p[1], p[0]))
        ends.append(e)
    ends = torch.tensor(ends)
    heat = torch.zeros(1, h, w)
    for e in ends.reshape(-1, 2):
        heat[0] = torch.maximum(heat[0], torch.exp(-((xx - e[0]) ** 2 + (yy - e[1]) ** 2) / 18.0))
    target = dict(boxes=torch.tensor(boxes, dtype=torch.float32), rboxes=torch.tensor(rboxes),
                  labels=torch.arange(1, n + 1), endpoints=ends, endpoint_heatmap=heat,
                  masks=torch.stack(masks) if has_masks else torch.zeros(n, h, w, dtype=torch.uint8),
                  has_masks=torch.tensor(has_masks), has_endpoints=torch.tensor(True), image_id=torch.tensor(seed))
    return img + 0.05 * torch.rand(1, h, w, generator=g), target


def small_model(variant, **kw):
    torch.manual_seed(0)
    args = dict(SMALL, backbone="resnet18", image_size=SIZE, anchor_ratios=(3.0,))
    args.update(kw)
    return build_model(variant, **args)


def batch(n=2, **kw):
    ims, ts = zip(*[synth_sample(seed=i, **kw) for i in range(n)])
    return list(ims), list(ts)


EXPECTED = {
    "mr": {"loss_box_reg"},
    "rmr": {"loss_box_reg"},
    "erm2": {"loss_box_reg", "loss_endpoint"},
    "erm3": {"loss_box_reg_h", "loss_box_reg_r"},
    "ermr": {"loss_box_reg_h", "loss_box_reg_r", "loss_endpoint"},
}
COMMON = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_mask"}


@pytest.mark.parametrize("variant", list(EXPECTED))
def test_variant_train_and_eval(variant):
    model = small_model(variant, box_score_thresh=0.0)  # untrained: keep low scores so N > 0
    ims, ts = batch()
    model.train()
    losses = model(ims, ts)
    assert set(losses) == COMMON | EXPECTED[variant]
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    sum(losses.values()).backward()
    assert model.rpn.head.cls_logits.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(ims)
    assert len(out) == 2
    for o in out:
        n = o["scores"].shape[0]
        assert 0 < n <= SMALL["box_detections_per_img"]
        assert torch.all(o["scores"][:-1] >= o["scores"][1:])
        assert o["masks"].min() >= 0 and o["masks"].max() <= 1
        assert o["boxes"].shape == (n, 4) and o["labels"].shape == (n,) and o["labels"].dtype == torch.int64
        assert o["masks"].shape == (n, 1) + SIZE and o["masks"].dtype == torch.float32
        assert o["boxes"].device == ims[0].device
        if variant != "mr":
            assert o["rboxes"].shape == (n, 5)
        if "loss_endpoint" in EXPECTED[variant]:
            assert o["endpoints"].shape == (n, 2, 2)
            assert o["endpoint_heatmap"].shape == (1,) + SIZE
        else:
            assert "endpoints" not in o


def test_aliases_and_switches():
    assert VARIANTS["erm1"] == VARIANTS["rmr"] and VARIANTS["erm4"] == VARIANTS["ermr"]
    m = small_model("ermr", hr=False, ed=False)
    assert not m.roi_heads.hr and m.backbone.endpoint_branch is None
    with pytest.raises(ValueError):
        build_model("nope")
    with pytest.raises(ValueError):
        build_model("mr", weights_backbone="DEFAULT")


def test_output_mapped_to_original_size():
    model = small_model("erm3").eval()
    img, _ = synth_sample(h=160, w=200)
    with torch.no_grad():
        out = model([img])[0]
    assert out["masks"].shape[-2:] == (160, 200)


@pytest.mark.parametrize("variant", ["mr", "ermr"])
def test_box_only_images_skip_mask_loss(variant):
    model = small_model(variant).train()
    ims, ts = batch(has_masks=False)
    for t in ts:
        t["has_endpoints"] = torch.tensor(False)
    losses = model(ims, ts)
    assert float(losses["loss_mask"].detach()) == 0.0
    assert losses["loss_mask"].requires_grad
    if variant == "ermr":
        assert float(losses["loss_endpoint"].detach()) == 0.0
    assert float(losses["loss_classifier"].detach()) > 0


@pytest.mark.parametrize("variant,steps", [("mr", 14), ("rmr", 14), ("ermr", 14)])
def test_overfits_two_images(variant, steps):
    model = small_model(variant).train()
    ims, ts = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4)
    hist = []
    for _ in range(steps):
        losses = model(ims, ts)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        hist.append(float(total.detach()))
    first, last = sum(hist[:2]) / 2, sum(hist[-3:]) / 3
    assert last < 0.5 * first, hist


def test_backbone_weights_from_file(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.nn.init.normal_(ref.conv1.weight)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = small_model("rmr", backbone_weights=str(path))
    body = model.backbone.body
    assert torch.allclose(body.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    # the file `chromoseg pretrain` writes: {"backbone": state dict of a 1-channel ResNet, ...}
    from chromoseg.models.backbone import build_resnet

    grey = build_resnet("resnet18", in_channels=1)
    path2 = tmp_path / "pre.pt"
    torch.save({"backbone": grey.state_dict(), "arch": "resnet18"}, path2)
    model2 = small_model("mr", backbone_weights=str(path2))
    assert torch.equal(model2.backbone.body.conv1.weight, grey.conv1.weight)
    with pytest.raises(FileNotFoundError):
        small_model("mr", backbone_weights=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        small_model("mr", backbone_weights=str(bad))


def test_smooth_l1_is_eq3():
    from chromoseg.models.losses import smooth_l1

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert torch.allclose(smooth_l1(x), torch.tensor([1.5, 0.125, 0.0, 0.125, 1.5]))


def test_endpoint_loss_eq4():
    from chromoseg.models.losses import endpoint_loss

    tgt = torch.rand(1, 8, 10)
    pred = torch.zeros(1, 1, 16, 16)
    pred[0, 0, :8, :10] = tgt[0]
    assert float(endpoint_loss(pred, [{"endpoint_heatmap": tgt}], [(8, 10)])) == 0.0
    pred[0, 0, :8, :10] += 0.5
    assert math.isclose(float(endpoint_loss(pred, [{"endpoint_heatmap": tgt}], [(8, 10)])), 0.25, rel_tol=1e-5)


def test_map_levels_like_torchvision():
    from torchvision.ops.poolers import LevelMapper

    from chromoseg.models.roi_heads import map_levels

    side = torch.tensor([10.0, 60.0, 112.0, 224.0, 300.0, 500.0, 1000.0])
    rois = torch.stack([side, side, side, side, torch.zeros_like(side)], 1)
    hb = torch.stack([torch.zeros_like(side), torch.zeros_like(side), side, side], 1)
    ref = LevelMapper(2, 5)([hb])
    assert torch.equal(map_levels(rois), ref)


def test_rotated_anchors():
    from torchvision.models.detection.image_list import ImageList

    from chromoseg.models.rpn import RotatedAnchorGenerator

    ag = RotatedAnchorGenerator(sizes=(16, 32), ratios=(1.5, 3.0))
    feats = [torch.zeros(1, 4, 8, 10), torch.zeros(1, 4, 4, 5)]
    anchors = ag(ImageList(torch.zeros(1, 1, 32, 40), [(32, 40)]), feats)[0]
    assert anchors.shape == ((80 + 20) * 12, 5)
    assert anchors[:, 4].min() >= -90 and anchors[:, 4].max() < 90
    assert torch.all(anchors[:, 2] >= anchors[:, 3])
    assert torch.allclose(anchors[0, :2], torch.tensor([2.0, 2.0]))
    assert math.isclose(float(anchors[0, 2] * anchors[0, 3]), 256.0, rel_tol=1e-5)


def test_transform_resize_roundtrip():
    from chromoseg.models.transform import scale_rboxes

    b = torch.tensor([[50.0, 40.0, 30.0, 8.0, 30.0], [10.0, 10.0, 20.0, 5.0, -90.0]])
    s = scale_rboxes(b, 2.0, 2.0)
    assert torch.allclose(s, torch.tensor([[100.0, 80.0, 60.0, 16.0, 30.0], [20.0, 20.0, 40.0, 10.0, -90.0]]), atol=1e-4)
    back = scale_rboxes(scale_rboxes(b, 1.25, 0.8), 0.8, 1.25)
    assert torch.allclose(back[:, :4], b[:, :4], atol=0.5)


# ---- the H&R synthesis rule ------------------------------------------------------------------

def _fuse(**kw):
    from chromoseg.models.roi_heads import fuse_hr_detections

    return fuse_hr_detections(**kw)


def test_hr_fusion_recovers_isolated_detection():
    # 0, 1: two touching chromosomes found by the rotated branch; 2: an isolated one that only the
    # axis-aligned NMS kept; 3: a duplicate of 0 kept by the axis-aligned NMS (covered)
    rboxes = torch.tensor([[20.0, 20, 30, 6, 45], [30.0, 20, 30, 6, -45], [100.0, 100, 30, 6, 0],
                           [21.0, 20, 30, 6, 45]])
    from chromoseg.ops import rbox_to_hbox

    hboxes = rbox_to_hbox(rboxes)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idx, use_h = _fuse(rboxes=rboxes, hboxes=hboxes, scores=scores, keep_r=torch.tensor([0, 1]),
                       keep_h=torch.tensor([0, 2, 3]))
    assert idx.tolist() == [0, 1, 2]
    assert not use_h.any()


def test_hr_fusion_crowded_axis_detection_not_added_and_hbox_fallback():
    rboxes = torch.tensor([[20.0, 20, 30, 6, 45], [100.0, 100, 30, 6, 0], [104.0, 100, 30, 6, 0],
                           [200.0, 50, 30, 6, 0]])
    hboxes = torch.tensor([[5.0, 5, 35, 35], [85.0, 97, 115, 103], [89.0, 97, 119, 103],
                           [190.0, 30, 210, 70]])  # the last disagrees with its rotated box
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idx, use_h = _fuse(rboxes=rboxes, hboxes=hboxes, scores=scores, keep_r=torch.tensor([0]),
                       keep_h=torch.tensor([1, 2, 3]))
    # 1 and 2 overlap each other (crowded): the rotated branch decides; 3 is isolated: recovered
    assert idx.tolist() == [0, 3]
    assert use_h.tolist() == [False, True]


def test_hr_fusion_empty():
    e = torch.zeros(0, dtype=torch.int64)
    idx, use_h = _fuse(rboxes=torch.zeros(0, 5), hboxes=torch.zeros(0, 4), scores=torch.zeros(0), keep_r=e, keep_h=e)
    assert idx.numel() == 0 and use_h.numel() == 0


def _hr_recovery_case():
    """RoI heads inputs where rotated NMS removes candidate B (its rotated box overlaps A's) while B's
    axis-aligned box lies 80 px away, isolated: H&R fusion recovers B, without fusion only A is left."""
    proposals = [torch.tensor([[40.0, 40, 30, 6, 0], [41.0, 40, 30, 6, 0]])]  # B overlaps A (rotated IoU ~0.9)
    logits = torch.full((2, 25), -10.0)
    logits[:, 1] = 10.0  # both: class 1, sure
    logits[0, 1] = 11.0  # A ranks first
    rreg = torch.zeros(2, 25 * 5)
    hreg = torch.zeros(2, 25 * 4)
    hreg[1, 4] = 10.0 * 80 / 30  # B's class-1 hbox moved 80 px right (coder weight 10, width 30)
    return logits, rreg, hreg, proposals


def test_hr_fusion_switch(tmp_path):
    """The switch as ``bench_hr_ablation`` uses it (``load_model(path, hr_fusion=False)``) and as a
    model file records it: the same weights recover the isolated detection only with the fusion on."""
    from chromoseg.engine.checkpoint import load_model

    cfg = dict(SMALL, variant="erm3", backbone="resnet18", image_size=SIZE, anchor_ratios=(3.0,))
    torch.save({"model": small_model("erm3").state_dict(), "model_config": cfg}, tmp_path / "on.pt")
    off_cfg = dict(cfg, hr_fusion=False)
    torch.save({"model": small_model("erm3", hr_fusion=False).state_dict(), "model_config": off_cfg},
               tmp_path / "off.pt")
    logits, rreg, hreg, proposals = _hr_recovery_case()
    found = {}
    for name, model in [("default", load_model(tmp_path / "on.pt")),
                        ("asked off", load_model(tmp_path / "on.pt", hr_fusion=False)),
                        ("file off", load_model(tmp_path / "off.pt")),
                        ("built off", small_model("erm3", hr_fusion=False).eval())]:
        (res,) = model.roi_heads.postprocess_boxes(logits, rreg, hreg, proposals, [(128, 160)])
        found[name] = res["rboxes"].shape[0]
    assert found == {"default": 2, "asked off": 1, "file off": 1, "built off": 1}
    assert small_model("erm3", hr_fusion=False).config["hr_fusion"] is False  # what a saved model records


@pytest.mark.parametrize("variant", ["mr", "ermr"])
def test_autocast_bf16(variant):
    """Mixed precision (as on a GPU): losses finite, boxes and masks come out in float32."""
    model = small_model(variant, box_score_thresh=0.0).train()
    ims, ts = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(ims, ts)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.eval()(ims)
    assert out[0]["boxes"].dtype == torch.float32 and out[0]["masks"].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_forward():
    model = small_model("ermr").cuda()
    ims, ts = batch()
    ims = [i.cuda() for i in ims]
    ts = [{k: v.cuda() for k, v in t.items()} for t in ts]
    losses = model.train()(ims, ts)
    assert all(v.device.type == "cuda" for v in losses.values())
    with torch.no_grad():
        out = model.eval()(ims)
    assert out[0]["masks"].device.type == "cuda"


def test_endpoint_loss_weight():
    ims, ts = batch()
    a = small_model("erm2").train()(ims, ts)["loss_endpoint"]
    b = small_model("erm2", endpoint_loss_weight=100.0).train()(ims, ts)["loss_endpoint"]
    assert math.isclose(float(b.detach()), 100.0 * float(a.detach()), rel_tol=1e-4)


def test_compact_widths_and_size():
    """The shipped model's widths: 128-channel FPN / mask head, 512-d box head, ~16 M parameters."""
    from chromoseg.models import COMPACT

    m = build_model("ermr", backbone="resnet18", image_size=(128, 160), **COMPACT).eval()
    n = sum(p.numel() for p in m.parameters())
    assert 15e6 < n < 17.5e6 and n * 2 < 40e6  # fits the 40 MB budget in fp16
    assert m.backbone.fpn.out_channels == 128 and m.config["fpn_channels"] == 128
    with torch.no_grad():
        out = m([torch.rand(1, 128, 160)])[0]
    assert out["endpoint_heatmap"].shape == (1, 128, 160)


def test_backbone_weights_from_a_training_checkpoint(tmp_path):
    from conftest import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "t.pt")
    src = torch.load(ck, weights_only=False)["model"]
    m = build_model("rmr", backbone="resnet18", image_size=(128, 160), backbone_weights=str(ck), fpn_channels=64)
    body = m.backbone.fpn.body.state_dict()
    assert torch.equal(body["layer3.0.conv1.weight"], src["backbone.fpn.body.layer3.0.conv1.weight"])


def test_detections_carry_their_class_probabilities():
    """Each rotated detection has its RoI's 24 class probabilities; its own class's entry is its score."""
    torch.manual_seed(0)
    m = build_model("ermr", backbone="resnet18", image_size=(128, 160), **SMALL, box_score_thresh=0.0).eval()
    with torch.no_grad():
        out = m([torch.rand(1, 128, 160)])[0]
    n = out["scores"].shape[0]
    assert n > 0 and out["class_scores"].shape == (n, 24)
    own = out["class_scores"][torch.arange(n), out["labels"] - 1]
    torch.testing.assert_close(own, out["scores"])
    assert float(out["class_scores"].sum(1).max()) <= 1.0 + 1e-5


def test_endpoint_branch_is_the_papers_six_layers_with_layer5_added_back():
    """Paper Sec. II-B: six convolutions; the 5th layer's features are added back into the FPN maps
    and the 6th predicts the heatmap."""
    from collections import OrderedDict

    from chromoseg.models.backbone import EndpointBranch

    torch.manual_seed(0)
    br = EndpointBranch(in_channels=8, channels=4)
    convs = [m for m in br.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 == br.num_layers
    assert [c.out_channels for c in convs] == [4, 4, 4, 4, 8, 1]  # layer 5 returns to the FPN width
    for m in convs:
        torch.nn.init.normal_(m.weight, std=0.3)
    seen = {}
    br.convs[4].register_forward_hook(lambda mod, inp, out: seen.__setitem__("l5", out))
    br.convs[3].register_forward_hook(lambda mod, inp, out: seen.__setitem__("l4", out))
    x = torch.randn(1, 8, 10, 12)
    new, heat = br(OrderedDict(p=x), (40, 48))
    assert torch.allclose(new["p"], x + torch.relu(seen["l5"]))
    assert heat.shape == (1, 1, 40, 48)
    # the heatmap is layer 6 on layer 5's (ReLU) features, resized to the image (one level: no averaging)
    want = torch.nn.functional.interpolate(br.predictor(torch.relu(seen["l5"])), size=(40, 48), mode="bilinear",
                                           align_corners=False)
    assert torch.allclose(heat, want, atol=1e-6) and heat.abs().max() > 0
    assert not torch.allclose(new["p"] - x, torch.zeros_like(x))


def test_models_saved_with_the_old_endpoint_branch_still_load(tmp_path):
    """Files written before the six-layer branch (5 layers, no ``ed_layers`` in their build
    arguments) load with the depth their weights have."""
    from chromoseg.engine.checkpoint import load_model

    old = small_model("ermr", ed_layers=5)
    cfg = dict(SMALL, variant="ermr", backbone="resnet18", image_size=SIZE, anchor_ratios=(3.0,))
    torch.save({"model": old.state_dict(), "model_config": cfg}, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt")
    assert len(model.backbone.endpoint_branch.convs) + 1 == 5
    new = small_model("ermr")
    torch.save({"model": new.state_dict(), "model_config": cfg}, tmp_path / "new.pt")
    assert len(load_model(tmp_path / "new.pt").backbone.endpoint_branch.convs) + 1 == 6


def test_detection_endpoints_follow_the_heatmap_and_fall_back_to_the_box_ends():
    from chromoseg.models.rcnn import detection_endpoints

    rb = torch.tensor([[50.0, 30.0, 40.0, 8.0, 0.0], [50.0, 30.0, 40.0, 8.0, 90.0 - 180.0]])  # horizontal, vertical
    flat = torch.zeros(1, 60, 100)
    e = detection_endpoints(flat, rb)
    # a flat heatmap: the ends of each box, never its centre
    assert torch.allclose(e[0], torch.tensor([[30.0, 30.0], [70.0, 30.0]]), atol=0.7)
    assert torch.allclose(e[1], torch.tensor([[50.0, 10.0], [50.0, 50.0]]), atol=0.7)
    assert ((e - rb[:, None, :2]).norm(dim=-1) > 15).all()
    # peaks inside the box are found (to the sampling step, 40 / 32 px)
    from chromoseg.ops import endpoint_heatmap

    heat = endpoint_heatmap(torch.tensor([[36.2, 30.0], [61.7, 30.0]]), (60, 100))[None]
    e = detection_endpoints(heat, rb[:1])
    assert torch.allclose(e[0], torch.tensor([[36.5, 30.0], [61.5, 30.0]]), atol=1.3)
    assert detection_endpoints(flat, rb[:0]).shape == (0, 2, 2)


def test_hr_fusion_runs_inside_the_roi_heads():
    """RotatedRoIHeads.postprocess_boxes with H&R: a candidate that rotated NMS removes but whose
    axis-aligned box is isolated elsewhere is recovered (as an angle-0 box from its hbox) only when
    the fusion is on."""
    logits, rreg, hreg, proposals = _hr_recovery_case()
    out = {}
    for fusion in (True, False):
        heads = small_model("erm3", hr_fusion=fusion).roi_heads.eval()
        (res,) = heads.postprocess_boxes(logits, rreg, hreg, proposals, [(128, 160)])
        out[fusion] = res
    assert out[False]["rboxes"].shape[0] == 1 and torch.allclose(out[False]["rboxes"][0], proposals[0][0], atol=1e-4)
    fused = out[True]
    assert fused["rboxes"].shape[0] == 2 and fused["labels"].tolist() == [1, 1]
    assert torch.allclose(fused["rboxes"][1], torch.tensor([121.0, 40, 30, 6, 0]), atol=1e-3)
    assert torch.allclose(fused["boxes"][1], torch.tensor([106.0, 37, 136, 43]), atol=1e-3)



def test_object_score_mode_gives_one_candidate_per_roi():
    """box_score_mode="object": a chromosome whose class is unsure (no class probability above the
    threshold) is still a candidate, scored 1 - P(background), with its likeliest class's box; one
    candidate per RoI (the class mode gives one per class above the threshold); NMS across classes."""
    proposals = [torch.tensor([[40.0, 40, 30, 6, 0], [100.0, 40, 30, 6, 30], [101.0, 40, 30, 6, 30]])]
    logits = torch.zeros(3, 25)
    logits[0, 0] = -10.0  # A: surely a chromosome, class spread evenly (each ~1/24)
    logits[1, 3], logits[1, 4] = 8.0, 7.5  # B: class 3 or 4
    logits[2, 5] = 6.0  # C: B's near-duplicate (rotated IoU ~0.9), another class, less sure it is one
    rreg = torch.zeros(3, 25 * 5)
    rreg[0, 5 * 7] = 10.0 * 2 / 30  # A's class-7 box 2 px right; class 7 is A's likeliest
    logits[0, 7] = 0.1
    hreg = torch.zeros(3, 25 * 4)
    by_mode = {}
    for mode in ("class", "object"):
        heads = small_model("ermr", box_score_mode=mode, box_score_thresh=0.05).roi_heads.eval()
        (res,) = heads.postprocess_boxes(logits, rreg, hreg, proposals, [(128, 160)])
        by_mode[mode] = res
    obj, cls = by_mode["object"], by_mode["class"]
    # class mode: A has no class above 0.05 -> lost; B gives two candidates (classes 3, 4), C one
    assert sorted(cls["labels"].tolist()) == [3, 4, 5]
    # object mode: A kept with class 7 and its class-7 box, B kept once (class 3), C removed by NMS
    assert sorted(obj["labels"].tolist()) == [3, 7]
    a = obj["labels"].tolist().index(7)
    assert obj["scores"][a] > 0.99 and torch.allclose(obj["rboxes"][a], torch.tensor([42.0, 40, 30, 6, 0]), atol=1e-3)
    assert obj["class_scores"].shape == (2, 24)
    with pytest.raises(ValueError, match="score_mode"):
        small_model("ermr", box_score_mode="best")

def test_unknown_class_instances_train_without_a_class():
    """A positive RoI of unknown class costs -log(1 - p_bg) (any chromosome class will do)."""
    from chromoseg.models.losses import classification_loss

    logits = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    labels = torch.tensor([1, 1, 0])
    known = torch.tensor([True, False, True])
    p = torch.softmax(logits, 1)
    expect = (-torch.log(p[0, 1]) - torch.log(p[1, 1:].sum()) - torch.log(p[2, 0])) / 3
    assert torch.allclose(classification_loss(logits, labels, known), expect)
    assert torch.allclose(classification_loss(logits, labels, torch.ones(3, dtype=torch.bool)),
                          torch.nn.functional.cross_entropy(logits, labels))
    # in the model: with every class unknown the losses stay finite and train; the class loss differs
    model = small_model("ermr").train()
    ims, ts = batch()
    torch.manual_seed(1)
    ref = model(ims, ts)
    for t in ts:
        t["class_known"] = torch.zeros(len(t["labels"]), dtype=torch.bool)
    torch.manual_seed(1)
    out = model(ims, ts)
    assert all(torch.isfinite(v) for v in out.values())
    assert float(out["loss_classifier"].detach()) < float(ref["loss_classifier"].detach())  # no class to get wrong
    sum(out.values()).backward()


@pytest.mark.parametrize("variant", ["ermr", "mr"])
def test_roi_foreground_iou_threshold_decides_the_sampled_labels(variant, tmp_path):
    """box_fg_iou_thresh (train --roi-fg-iou): a RoI overlapping its chromosome at IoU 0.45 is
    background under the paper's 0.5 and that chromosome under 0.4; the value survives a checkpoint,
    and the paper's value is not written into the model's config."""
    from chromoseg.engine.checkpoint import load_model

    gt = torch.tensor([[50.0, 40.0, 60.0, 10.0, 0.0]])  # rotated box (cx, cy, w, h, angle)
    near = torch.tensor([[50.0, 40.0, 60.0 * 0.45, 10.0, 0.0]])  # same box, 0.45 as long: IoU 0.45
    target = {"rboxes": gt, "labels": torch.tensor([3]), "boxes": torch.tensor([[20.0, 35.0, 80.0, 45.0]])}
    labels = {}
    for t in (0.5, 0.4):
        args = dict(variant=variant, backbone="resnet18", image_size=SIZE, box_fg_iou_thresh=t, **SMALL)
        m = build_model(**args)
        assert ("box_fg_iou_thresh" in m.config) == (t != 0.5)
        if variant == "mr":  # torchvision's heads: the same two thresholds
            matcher = m.roi_heads.tv.proposal_matcher
            assert (matcher.high_threshold, matcher.low_threshold) == (t, t)
            continue
        out = m.roi_heads.select_training_samples([near], [target])
        labels[t] = out[2][0][0].item()  # the proposal itself (ground truth is appended after it)
        path = tmp_path / f"m{t}.pt"
        torch.save({"model": m.state_dict(), "model_config": args}, path)
        assert load_model(path).roi_heads.proposal_matcher.high_threshold == t
    if variant == "ermr":
        assert labels == {0.5: 0, 0.4: 3}
    with pytest.raises(ValueError, match="box_fg_iou_thresh"):
        build_model(variant, backbone="resnet18", image_size=SIZE, box_fg_iou_thresh=1.0, **SMALL)


def test_variant_registry_is_the_one_list():
    """The CLI's choices and help, the tables' rows and ``VARIANTS`` all read the registry."""
    from chromoseg.cli import build_parser
    from chromoseg.engine.tables import ROW_NAMES, TABLES
    from chromoseg.models.builder import FAMILY_BUILDERS
    from chromoseg.models.variants import NAMES, REGISTRY, canonical_name, get_variant

    assert set(VARIANTS) == set(NAMES) and all(VARIANTS[n] == v.switches for n, v in NAMES.items())
    assert {v.family for v in REGISTRY.values()} <= set(FAMILY_BUILDERS)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    variant_opt = next(a for a in train._actions if a.dest == "variant")
    assert list(variant_opt.choices) == list(NAMES)
    for name, v in REGISTRY.items():
        assert f"  {name} " in train.description and v.help in train.description
    for spec in TABLES.values():
        assert all(ROW_NAMES[n] == REGISTRY[n].label for n in spec["variants"])
    assert canonical_name("ERM1") == "rmr" and canonical_name("erm4") == "ermr" and get_variant("Erm4").name == "ermr"
    with pytest.raises(ValueError, match="unknown variant"):
        get_variant("erm5")


def test_build_model_dispatches_variants_by_family(monkeypatch):
    """``build_model`` hands every argument (its defaults included) to the builder of the variant's family."""
    from chromoseg.models import builder
    from chromoseg.models.variants import REGISTRY

    seen = []
    monkeypatch.setitem(builder.FAMILY_BUILDERS, "rcnn", lambda v, spec, **kw: seen.append((v, spec, kw)) or "rcnn")
    monkeypatch.setitem(builder.FAMILY_BUILDERS, "snake", lambda v, spec, **kw: seen.append((v, spec, kw)) or "snake")
    assert build_model("ERM1", num_classes=1) == "rcnn" and build_model("snake") == "snake"
    (v, spec, kw), (sv, sspec, _) = seen
    assert (v, spec, sv, sspec) == ("erm1", REGISTRY["rmr"], "snake", REGISTRY["snake"])
    assert kw["num_classes"] == 1 and kw["endpoint_loss_weight"] == 1.0 and "weights_backbone" not in kw


def test_variant_names_load_no_torch():
    """The command line reads the registry while it builds its parser: that must not import torch."""
    import subprocess
    import sys

    code = ("import sys; from chromoseg.cli import build_parser; build_parser(); "
            "import chromoseg.models.variants; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
