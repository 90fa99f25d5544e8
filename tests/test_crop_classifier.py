"""The second-stage crop classifier: upright crops, its model, training, attaching, use in predict."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chromoseg.models.crop_classifier import CROP_SIZE, CropClassifier, instance_crops, relative_lengths


def _bar(h, w, cx, cy, length, width, angle):
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    r = math.radians(angle)
    du = (xx - cx) * math.cos(r) - (yy - cy) * math.sin(r)
    dv = (xx - cx) * math.sin(r) + (yy - cy) * math.cos(r)
    return (du.abs() <= length / 2) & (dv.abs() <= width / 2)


def test_crops_are_upright_and_the_same_whatever_the_angle():
    crops = []
    for angle in (0.0, 37.0, -80.0):
        m = _bar(90, 120, 60, 45, 50, 10, angle)
        img = m.float() * 0.8
        c = instance_crops(img, m[None], torch.tensor([[60.0, 45, 50, 10, angle]]))
        assert c.shape == (1, 2) + CROP_SIZE
        crops.append(c[0, 1])
    # the mask lies along the crop's columns (long axis), centred; all angles give the same crop
    mid = crops[0][CROP_SIZE[0] // 2]
    assert mid[CROP_SIZE[1] // 2] > 0.9 and mid[1] < 0.1 and crops[0][1, CROP_SIZE[1] // 2] < 0.1
    for c in crops[1:]:
        assert (c - crops[0]).abs().mean() < 0.05


def test_relative_lengths_and_model_shapes():
    rb = torch.tensor([[0, 0, 10.0, 3, 0], [0, 0, 30.0, 3, 0]])
    assert relative_lengths(rb).tolist() == pytest.approx([0.5, 1.5])
    m = CropClassifier().eval()
    x = torch.randn(3, 2, *CROP_SIZE)
    assert m(x, torch.ones(3)).shape == (3, 24)
    img = torch.rand(60, 80)
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 10:14, 10:40] = masks[1, 30:34, 20:60] = True
    p = m.classify(img, masks, torch.tensor([[25.0, 12, 30, 4, 0], [40.0, 32, 40, 4, 0]]))
    assert p.shape == (2, 24) and torch.allclose(p.sum(1), torch.ones(2), atol=1e-5)


def test_training_learns_lengths(tmp_path):
    """Classes told apart by length alone: a few epochs learn it."""
    from chromoseg.engine.crop_classifier import fit_crop_classifier, joint_accuracy, predict_probs

    g = torch.Generator().manual_seed(0)

    def make(n):
        labels = torch.randint(0, 4, (n,), generator=g)
        crops = torch.zeros(n, 2, *CROP_SIZE)
        for k, c in enumerate(labels.tolist()):
            half = 8 + 6 * c
            crops[k, :, 9:15, 32 - half:32 + half] = 1.0
        rel = (0.6 + 0.3 * labels.float()) * (1 + 0.02 * torch.randn(n, generator=g))
        return {"crops": crops, "rel": rel, "labels": labels, "image": torch.arange(n) // 8}

    train, val = make(256), make(64)
    model, hist = fit_crop_classifier(train, val, epochs=6, lr=5e-3, batch=16, progress=False)
    acc = float((predict_probs(model, val).argmax(1) == val["labels"]).float().mean())
    assert acc > 0.9 and len(hist) == 6 and max(h["val_accuracy"] for h in hist) == pytest.approx(acc)
    # joint accuracy: classes assigned per metaphase (about two per autosome), each image on its own
    probs = torch.full((5, 24), 0.002)
    probs[0, 0] = probs[1, 0] = 0.9  # image 0: two sure 1s ...
    probs[2, 0], probs[2, 1] = 0.5, 0.45  # ... and a 2 that looks a little more like a third 1
    probs[3:, 0], probs[3:, 2] = 0.6, 0.35  # image 1: two fairly sure 1s
    probs = probs / probs.sum(1, keepdim=True)
    cells = {"labels": torch.tensor([0, 0, 1, 0, 0]), "image": torch.tensor([0, 0, 0, 1, 1])}
    assert int((probs.argmax(1) == cells["labels"]).sum()) == 4  # each on its own: the 2 is taken for a 1
    assert joint_accuracy(probs, cells) == 1.0  # a third 1 in image 0 is unlikely: it becomes the 2
    # taken as one metaphase, four 1s: two of them lose their class
    assert joint_accuracy(probs, {**cells, "image": torch.zeros(5, dtype=torch.long)}) == 0.6


def test_attach_export_load_and_predict_use_it(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.engine.checkpoint import export_model, load_model
    from chromoseg.engine.crop_classifier import attach
    from chromoseg.engine.predict import InferenceConfig, Predictor, reclassify

    ck = make_tiny_checkpoint(tmp_path / "tiny.pt")
    clf = CropClassifier().eval()
    out = attach(ck, clf, tmp_path / "with.pt")
    export_model(out, tmp_path / "with.safetensors")
    model = load_model(tmp_path / "with.safetensors")
    assert model.crop_classifier is not None
    x = torch.randn(2, 2, *CROP_SIZE)
    assert torch.allclose(model.crop_classifier(x, torch.ones(2)), clf(x, torch.ones(2)), atol=2e-2)  # fp16 file
    # reclassify: classes from the classifier, scores scaled by the detection's chromosome probability
    m = np.zeros((60, 80), bool)
    m[20:26, 10:50] = True
    inst = {"mask": m, "rbox": [30.0, 23.0, 40.0, 6.0, 0.0], "category_id": 3, "score": 0.8,
            "class_scores": [0.0] * 2 + [0.8] + [0.0] * 21}
    (new,) = reclassify(model.crop_classifier, torch.rand(60, 80), [inst])
    assert new["category_id"] == int(np.argmax(new["class_scores"])) + 1
    assert sum(new["class_scores"]) == pytest.approx(0.8, abs=1e-4) and new["class_scores_roi_head"][2] == 0.8
    pred = Predictor.from_checkpoint(tmp_path / "with.safetensors", InferenceConfig(score="object", score_threshold=0))
    assert pred.model.crop_classifier is not None


def _single_cell(path, lengths):
    """A cell archive like the single-chromosome set's: upright dark bars on white, one per class."""
    entries = {}
    for k, (cls, length) in enumerate(lengths):
        crop = np.full((length + 10, 24), 255, np.uint8)
        crop[5:5 + length, 7:17] = 60
        crop[5 + length // 3:5 + length // 3 + 3, 7:17] = 20  # a band
        entries[f"{cls}/clase{cls}_{k}_{path.stem}"] = crop
    np.savez(path, **entries)


def test_single_chromosome_crops_are_upright_per_cell_and_polarised(tmp_path):
    from chromoseg.engine.crop_classifier import collect_single_crops

    for c in range(3):
        _single_cell(tmp_path / f"cell{c}.npz", [(1, 90), (1, 86), (21, 30), (23, 60)])
    fl = collect_single_crops(tmp_path, cells="all", progress=False)
    bf = collect_single_crops(tmp_path, cells="all", dark_on_light=True, progress=False)
    assert fl["crops"].shape == (12, 2) + CROP_SIZE
    assert sorted(set(fl["labels"].tolist())) == [0, 20, 22]
    assert fl["image"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # one metaphase per cell
    rel = dict(zip(fl["labels"][:4].tolist(), fl["rel"][:4].tolist()))
    assert rel[0] > 1.2 > rel[22] > rel[20]  # lengths relative to the cell's mean
    mask = fl["crops"][:, 1] > 0.5
    assert mask[:, CROP_SIZE[0] // 2, CROP_SIZE[1] // 2].all()  # the chromosome lies along the crop
    inside_fl, outside_fl = fl["crops"][:, 0][mask].mean(), fl["crops"][:, 0][~mask].mean()
    inside_bf, outside_bf = bf["crops"][:, 0][mask].mean(), bf["crops"][:, 0][~mask].mean()
    assert inside_fl > outside_fl and inside_bf < outside_bf  # inverted for a fluorescence model


def test_fit_starts_from_init():
    from chromoseg.engine.crop_classifier import fit_crop_classifier

    init = CropClassifier(width=8).eval()
    data = {"crops": torch.randn(8, 2, *CROP_SIZE), "rel": torch.ones(8), "labels": torch.arange(8) % 3,
            "image": torch.zeros(8, dtype=torch.long)}
    model, _ = fit_crop_classifier(data, data, epochs=1, lr=1e-12, batch=8, progress=False, init=init)
    assert model.features[0].out_channels == 8
    a, b = init.state_dict(), model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a if "running" not in k and "num_batches" not in k)


def test_an_ensemble_averages_probabilities_and_survives_export(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.engine.checkpoint import export_model, load_model
    from chromoseg.engine.crop_classifier import attach, predict_probs
    from chromoseg.models.crop_classifier import CropClassifierEnsemble

    torch.manual_seed(1)
    a, b = CropClassifier().eval(), CropClassifier().eval()
    ens = CropClassifierEnsemble([a, b]).eval()
    x, rl = torch.randn(5, 2, *CROP_SIZE), torch.rand(5) + 0.5
    mean = (torch.softmax(a(x, rl), 1) + torch.softmax(b(x, rl), 1)) / 2
    assert torch.allclose(torch.softmax(ens(x, rl), 1), mean, atol=1e-5)
    data = {"crops": x, "rel": rl, "labels": torch.zeros(5, dtype=torch.long), "image": torch.zeros(5)}
    assert predict_probs(ens, data).shape == (5, 24)
    out = attach(make_tiny_checkpoint(tmp_path / "tiny.pt"), ens, tmp_path / "with.pt")
    export_model(out, tmp_path / "with.safetensors")
    model = load_model(tmp_path / "with.safetensors")
    assert isinstance(model.crop_classifier, CropClassifierEnsemble) and len(model.crop_classifier.members) == 2
    assert model.config["crop_classifier_members"] == 2
    assert torch.allclose(torch.softmax(model.crop_classifier(x, rl), 1), mean, atol=1e-2)  # fp16 file
    img, masks = torch.rand(60, 80), torch.zeros(1, 60, 80, dtype=torch.bool)
    masks[0, 20:26, 10:50] = True
    p = model.crop_classifier.classify(img, masks, torch.tensor([[30.0, 23, 40, 6, 0]]))
    assert p.shape == (1, 24) and float(p.sum()) == pytest.approx(1.0, abs=1e-4)
    # attaching one classifier again drops the ensemble's member count
    one = load_model(attach(tmp_path / "with.pt", a, tmp_path / "one.pt"))
    assert isinstance(one.crop_classifier, CropClassifier) and "crop_classifier_members" not in one.config


def test_an_ensemble_of_members_of_different_widths_survives_export(tmp_path):
    """--reuse of a width-16 and a width-24 classifier: the file records one width per member and loads."""
    from conftest import make_tiny_checkpoint

    from chromoseg.engine.checkpoint import export_model, load_model
    from chromoseg.engine.crop_classifier import attach
    from chromoseg.models.crop_classifier import CropClassifierEnsemble

    torch.manual_seed(2)
    ens = CropClassifierEnsemble([CropClassifier(width=16), CropClassifier(width=24)]).eval()
    out = attach(make_tiny_checkpoint(tmp_path / "tiny.pt"), ens, tmp_path / "with.pt")
    export_model(out, tmp_path / "with.safetensors")
    model = load_model(tmp_path / "with.safetensors")
    assert [m.width for m in model.crop_classifier.members] == [16, 24]
    assert model.config["crop_classifier_width"] == [16, 24]
    x, rl = torch.randn(3, 2, *CROP_SIZE), torch.rand(3) + 0.5
    assert torch.allclose(torch.softmax(model.crop_classifier(x, rl), 1), torch.softmax(ens(x, rl), 1), atol=1e-2)


def test_train_classifier_refuses_a_missing_singles_folder(tmp_path, capsys):
    from chromoseg.cli import main

    (tmp_path / "train.json").write_text("{}")
    (tmp_path / "val.json").write_text("{}")
    rc = main(["train-classifier", "--data", str(tmp_path), "--model", "mfish", "--pretrain-singles",
               str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "--pretrain-singles" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_train_classifier_refuses_a_missing_default_singles_folder(tmp_path, capsys, monkeypatch):
    """--pretrain-singles without a folder: the default folder's absence is said before any cropping."""
    from chromoseg.cli import main
    from chromoseg.data import single_chromosomes as sc

    monkeypatch.setattr(sc, "default_data_dir", lambda: tmp_path / "nowhere")
    (tmp_path / "train.json").write_text("{}")
    (tmp_path / "val.json").write_text("{}")
    rc = main(["train-classifier", "--data", str(tmp_path), "--model", "mfish", "--pretrain-singles",
               "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere: no such folder" in err and not (tmp_path / "x.pt").exists()


def test_mask_windows_in_one_call_equal_one_call_per_instance(monkeypatch):
    """The masks' windows sampled together (padded, per-RoI bounds, several calls when large) give
    exactly what one rroi_align call per window gives, boxes over the image border included."""
    import chromoseg.models.crop_classifier as cc
    from chromoseg.ops import rbox_to_hbox, rroi_align

    g = torch.Generator().manual_seed(1)
    H, W = 60, 80
    image = torch.rand(H, W, generator=g)
    rboxes = torch.tensor([[20.0, 30.0, 30.0, 8.0, 30.0], [2.0, 3.0, 20.0, 6.0, -10.0], [78.0, 58.0, 25.0, 9.0, 80.0],
                           [50.0, 10.0, 12.0, 5.0, 0.0], [40.0, 40.0, 40.0, 10.0, -45.0]])
    masks = torch.rand(5, H, W, generator=g) > 0.5
    monkeypatch.setattr(cc, "_WINDOW_BATCH", 3000)  # several batches
    got = instance_crops(image, masks, rboxes)
    r = rboxes.clone()
    r[:, 2] *= cc.PAD[0]
    r[:, 3] = torch.maximum(r[:, 3] * cc.PAD[1], r[:, 2] / CROP_SIZE[1] * CROP_SIZE[0] * 0.5)
    hb = rbox_to_hbox(r)
    for k in range(5):
        x0, y0 = int(hb[k, 0].floor().clamp(0, W - 1)), int(hb[k, 1].floor().clamp(0, H - 1))
        x1, y1 = int(hb[k, 2].ceil().clamp(x0 + 1, W)), int(hb[k, 3].ceil().clamp(y0 + 1, H))
        rk = r[k:k + 1].clone()
        rk[:, 0] -= x0
        rk[:, 1] -= y0
        one = rroi_align(masks[k, y0:y1, x0:x1].float()[None, None], torch.cat([torch.zeros(1, 1), rk], 1),
                         CROP_SIZE, sampling_ratio=2)
        assert torch.equal(got[k, 1], one[0, 0]), k


def test_crops_from_mask_windows_equal_those_from_full_masks(monkeypatch):
    """Masks in their own windows (predict's instances) give exactly the crops and class
    probabilities of the full-size stack -- masks on the image's border, a box over it and an empty
    mask included -- and no window is made full-size on the way."""
    from chromoseg.ops import MaskWindow, window_of

    g = torch.Generator().manual_seed(4)
    H, W = 70, 90
    image = torch.rand(H, W, generator=g)
    masks = torch.zeros(5, H, W, dtype=torch.bool)
    masks[0, 10:16, 5:50] = True
    masks[1, 0:6, 60:90] = True  # on the top and right borders
    masks[2, 40:70, 0:7] = True  # on the bottom and left borders
    masks[3, 30:36, 30:70] = torch.rand(6, 40, generator=g) > 0.3  # ragged; masks[4] empty
    rb = torch.tensor([[27.5, 13, 45, 6, 0], [75, 3, 30, 6, 0], [3.5, 55, 30, 7, 90], [50, 33, 40, 6, 0],
                       [20, 60, 10, 4, 30]])
    clf = CropClassifier().eval()
    want_crops, want_probs = instance_crops(image, masks, rb), clf.classify(image, masks, rb)
    wins = [window_of(m) for m in masks]
    assert wins[1].bounds == (60, 0, 90, 6) and wins[4].data.size == 0

    def no_full(*a, **k):
        raise AssertionError("a window was made full-size")

    monkeypatch.setattr(MaskWindow, "full", no_full)
    monkeypatch.setattr(MaskWindow, "__array__", no_full)
    assert torch.equal(instance_crops(image, wins, rb), want_crops)
    assert torch.equal(clf.classify(image, wins, rb), want_probs)
    # a float window (mask probabilities) larger than its mask: sampled as the full float mask
    probs = torch.rand(H, W, generator=g) * masks[3]
    fw = MaskWindow(probs[28:40, 25:75], 25, 28, (H, W))
    assert torch.equal(instance_crops(image, [fw], rb[3:4]), instance_crops(image, probs[None], rb[3:4]))
    with pytest.raises(ValueError, match="71 image"):  # a window of another image
        instance_crops(image, [MaskWindow(np.ones((2, 2), bool), 0, 0, (H + 1, W))], rb[:1])


def test_classify_sees_both_ends_and_both_mirror_images():
    """A chromosome and its mirror image (across its long axis), or turned end for end, get the same
    class probabilities: the classifier averages all four views of each crop."""
    torch.manual_seed(0)
    m = CropClassifier().eval()
    g = torch.Generator().manual_seed(2)
    img = torch.rand(40, 80, generator=g)
    masks = torch.zeros(1, 40, 80, dtype=torch.bool)
    masks[0, 16:24, 15:65] = True
    rb = torch.tensor([[40.0, 20.0, 50.0, 8.0, 0.0]])  # centred: flips of the image keep the box
    p = m.classify(img, masks, rb)
    for dims in ((0,), (1,), (0, 1)):
        q = m.classify(img.flip(dims), masks.flip([d + 1 for d in dims]), rb)
        assert torch.allclose(p, q, atol=1e-6), dims


def test_classify_in_one_batch_equals_the_four_views_one_by_one():
    """classify runs the four views as one channels-last batch: the same probabilities as the mean of
    four separate NCHW calls' logits (float rounding only)."""
    import torch.nn.functional as F

    from chromoseg.models.crop_classifier import CropClassifierEnsemble

    torch.manual_seed(1)
    img = torch.rand(60, 90)
    masks = torch.zeros(3, 60, 90, dtype=torch.bool)
    masks[0, 10:16, 10:50] = masks[1, 30:36, 20:70] = masks[2, 45:52, 40:60] = True
    rb = torch.tensor([[30.0, 13, 40, 6, 0], [45.0, 33, 50, 6, 0], [50.0, 48.5, 20, 7, 0]])
    for m in (CropClassifier().eval(), CropClassifierEnsemble([CropClassifier(), CropClassifier()]).eval()):
        crops, rl = instance_crops(img, masks, rb), relative_lengths(rb)
        with torch.no_grad():
            views = (crops, crops.flip(-1), crops.flip(-2), crops.flip(-1).flip(-2))
            want = F.softmax(sum(m(v, rl) for v in views) / 4, dim=1)
        assert torch.allclose(m.classify(img, masks, rb), want, atol=1e-5)


def _two_chromosome_set(tmp_path, name="set.json"):
    """One 60 x 90 image with two bright bars, classes 5 and 9; the set's path."""
    from PIL import Image

    from chromoseg.data.coco import CocoWriter

    h, w = 60, 90
    img = np.zeros((h, w), np.uint8)
    wr = CocoWriter()
    iid = wr.add_image("cell.png", h, w)
    for cls, (y, x0, x1) in zip((5, 9), [(10, 5, 45), (40, 20, 80)]):
        m = np.zeros((h, w), bool)
        m[y:y + 6, x0:x1] = True
        img[m] = 200
        wr.add_annotation(iid, cls, mask=m)
    Image.fromarray(img).save(tmp_path / "cell.png")
    return wr.write(tmp_path / name)


def _bar_instance(y, x0, x1, h=60, w=90):
    m = np.zeros((h, w), bool)
    m[y:y + 6, x0:x1] = True
    return {"mask": m, "rbox": [(x0 + x1) / 2, y + 3.0, float(x1 - x0), 6.0, 0.0], "category_id": 1, "score": 0.9}


def _fake_predictor(found):
    class FakePredictor:
        @classmethod
        def from_checkpoint(cls, model, cfg):
            assert cfg.crop_classifier is False
            return cls()

        def __call__(self, images):
            assert images[0].shape == (60, 90)
            return [list(found)]

    return FakePredictor


def test_detected_crops_take_their_matched_chromosome_class(tmp_path, monkeypatch):
    """collect_detected_crops: the model's instances matched one-to-one to the ground truth (mask IoU),
    crops cut from the detected masks and boxes, relative lengths among all the detections."""
    from chromoseg.engine import predict as predict_mod
    from chromoseg.engine.crop_classifier import collect_detected_crops

    path = _two_chromosome_set(tmp_path)
    # the second chromosome found first and a little short, the first whole, one detection on nothing
    found = [_bar_instance(40, 22, 80), _bar_instance(10, 5, 45), _bar_instance(52, 60, 70)]
    monkeypatch.setattr(predict_mod, "Predictor", _fake_predictor(found))
    data = collect_detected_crops("any", path, progress=False)
    assert data["labels"].tolist() == [8, 4]  # classes 9 and 5, in the detections' order
    assert data["crops"].shape == (2, 2) + CROP_SIZE
    lengths = torch.tensor([58.0, 40.0, 10.0])
    assert data["rel"].tolist() == pytest.approx((lengths[:2] / lengths.mean()).tolist())
    monkeypatch.setattr(predict_mod, "Predictor", _fake_predictor([_bar_instance(52, 60, 70)]))
    with pytest.raises(ValueError, match="no chromosome that matches"):  # nothing matches: one clear error
        collect_detected_crops("any", path, progress=False)


def test_train_classifier_from_an_ensemble_on_detected_crops(tmp_path, monkeypatch, capsys):
    """--init ENSEMBLE --detected-crops: each member trained on from its own weights, on ground-truth
    and detected crops; the result is an ensemble of as many members, with the count in the report."""
    import json

    from conftest import make_tiny_checkpoint

    from chromoseg.cli import main
    from chromoseg.engine import predict as predict_mod
    from chromoseg.engine.checkpoint import load_model
    from chromoseg.engine.crop_classifier import attach
    from chromoseg.models.crop_classifier import CropClassifierEnsemble

    for name in ("train.json", "val.json"):
        _two_chromosome_set(tmp_path, name)
    ck = make_tiny_checkpoint(tmp_path / "tiny.pt")
    torch.manual_seed(0)
    start = CropClassifierEnsemble([CropClassifier(), CropClassifier()]).eval()
    attach(ck, start, tmp_path / "start.pt")
    monkeypatch.setattr(predict_mod, "Predictor", _fake_predictor([_bar_instance(10, 6, 45)]))
    args = ["train-classifier", "--data", str(tmp_path), "--model", str(ck), "--init", str(tmp_path / "start.pt"),
            "--detected-crops", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out.pt")]
    assert main(args) == 0
    assert "detected crops: 1 of the model's instances" in capsys.readouterr().out
    clf = load_model(tmp_path / "out.pt").crop_classifier
    assert isinstance(clf, CropClassifierEnsemble) and len(clf.members) == 2
    moved = [any(not torch.equal(a, b) for a, b in zip(m.parameters(), s.parameters()))
             for m, s in zip(clf.members, start.members)]
    assert all(moved)
    report = json.loads((tmp_path / "out.classifier.json").read_text())
    assert report["detected_crops"] == 1 and [h["member"] for h in report["history"]] == [0, 1]
    assert main(args[:-2] + ["--reuse", str(tmp_path / "start.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "--init" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_train_classifier_init_takes_a_shipped_models_name(tmp_path, monkeypatch):
    """--init mfish (the --help example) starts from the shipped model's classifier ensemble."""
    from conftest import make_tiny_checkpoint

    from chromoseg.cli import main
    from chromoseg.engine.checkpoint import load_model
    from chromoseg.models.crop_classifier import CropClassifierEnsemble
    from chromoseg.weights import resolve_model

    for name in ("train.json", "val.json"):
        _two_chromosome_set(tmp_path, name)
    ck = make_tiny_checkpoint(tmp_path / "tiny.pt")
    shipped = load_model(resolve_model("mfish")).crop_classifier
    assert main(["train-classifier", "--data", str(tmp_path), "--model", str(ck), "--init", "mfish",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out.pt")]) == 0
    clf = load_model(tmp_path / "out.pt").crop_classifier
    assert isinstance(clf, CropClassifierEnsemble) and len(clf.members) == len(shipped.members)
