"""Rescoring (``RotatedRoIHeads.rescore_detections``): each final detection scored on its own box."""
import torch
import torch.nn.functional as F

from chromoseg.models import build_model


def _heads_and_inputs():
    torch.manual_seed(0)
    model = build_model("ermr", num_classes=24, backbone="resnet18", image_size=(128, 128),
                        fpn_channels=32, mask_channels=16, representation_size=64,
                        box_score_thresh=0.0, box_rescore=True).eval()
    assert model.roi_heads.rescore and "box_rescore" not in model.config  # an inference setting
    heads = model.roi_heads
    c = model.backbone.out_channels
    feats = {str(i): torch.randn(1, c, 128 // 2 ** (i + 2), 128 // 2 ** (i + 2)) for i in range(4)}
    g = torch.Generator().manual_seed(1)
    n = 40
    props = torch.stack([torch.rand(n, generator=g) * 80 + 24, torch.rand(n, generator=g) * 80 + 24,
                         torch.rand(n, generator=g) * 20 + 8, torch.rand(n, generator=g) * 60 + 20,
                         torch.rand(n, generator=g) * 180 - 90], 1)
    return heads, feats, [props], [(128, 128)]


def _run(heads, feats, props, shapes, rescore):
    heads.rescore = rescore
    with torch.no_grad():
        out, _ = heads(feats, props, shapes)
    return out[0]


def test_rescore_scores_each_detection_on_its_own_box():
    heads, feats, props, shapes = _heads_and_inputs()
    for mode in ("object", "class"):
        heads.score_mode = mode
        plain = _run(heads, feats, props, shapes, False)
        new = _run(heads, feats, props, shapes, True)
        assert plain["rboxes"].shape[0] > 3
        # same detections (boxes, labels, order), new probabilities
        assert torch.equal(plain["rboxes"], new["rboxes"]) and torch.equal(plain["labels"], new["labels"])
        with torch.no_grad():
            p = F.softmax(heads.box_predictor(heads.box_head(heads.box_roi_pool(feats, [new["rboxes"]], shapes)))[0], -1)
        assert torch.allclose(new["class_scores"], p[:, 1:], atol=1e-5)
        want = 1 - p[:, 0] if mode == "object" else p[torch.arange(len(p)), new["labels"]]
        assert torch.allclose(new["scores"], want, atol=1e-5)
        # the proposals' scores were not those of the final boxes (the boxes moved)
        assert not torch.allclose(plain["class_scores"], new["class_scores"], atol=1e-4)


def test_rescore_with_no_detections():
    heads, feats, props, shapes = _heads_and_inputs()
    heads.score_mode = "object"
    heads.score_thresh = 1.1  # nothing passes
    out = _run(heads, feats, props, shapes, True)
    assert out["rboxes"].shape[0] == 0 and out["scores"].shape[0] == 0


def test_rescore_setting_resolves_from_the_model_file():
    from chromoseg.engine.settings import InferenceConfig, LOAD_TIME_SETTINGS, resolve_settings

    assert resolve_settings({}).rescore is False  # the paper's scoring
    assert resolve_settings({"default_rescore": "true"}).rescore is True
    assert resolve_settings({"default_rescore": "false"}).rescore is False
    mine = InferenceConfig(rescore=False)
    assert resolve_settings({"default_rescore": "true"}, mine).rescore is False and mine.rescore is False
    assert "rescore" in LOAD_TIME_SETTINGS  # the heads are built with it
