"""The physical scale rule (issue 29, deliverable 3): an image whose pixel size is known reaches the
network at the micrometres per pixel the model was trained at (``train_pixel_size_um``), whatever
the camera's pixel size; without a pixel size, or for a model that records none, it is framed."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chromoseg.engine.settings import InferenceConfig, resolve_settings
from chromoseg.models.transform import ChromoTransform, input_scale
from chromoseg.ops import frame_box, pixel_size_box

INPUT = (128, 160)  # the network input (H, W) of the tests' tiny model (conftest.make_tiny_checkpoint)
REF = 0.5  # micrometres per input pixel the model is said to be trained at
PX = 0.1  # micrometres per pixel of the full-size image; its half-size twin: 0.2


def metaphase(h=800, w=900, seed=0, dark_on_light=True):
    """Rods of 8 px width and 60 px length in a cluster off the centre of a larger empty field."""
    import cv2

    rng = np.random.default_rng(seed)
    bg, fg = (0.92, 0.3) if dark_on_light else (0.08, 0.7)
    img = np.full((h, w), bg, np.float32)
    for _ in range(14):
        x, y = rng.integers(330, 560), rng.integers(250, 430)
        a = rng.uniform(0, np.pi)
        cv2.line(img, (int(x), int(y)), (int(x + 60 * np.cos(a)), int(y + 60 * np.sin(a))), float(fg), 8)
    img += rng.normal(0, 0.01, (h, w)).astype(np.float32)
    return np.clip(img, 0, 1)


def half(img):
    import cv2

    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def network_input(t: ChromoTransform, img, pixel_size, ref=REF):
    """The input the transform gives the network for ``img`` (before normalisation) and its crop."""
    with torch.no_grad(), input_scale(SimpleNamespace(transform=t), [pixel_size], ref):
        il, _ = t.eval()([torch.from_numpy(img)[None]])
    x = il.tensors[0, 0, :il.image_sizes[0][0], :il.image_sizes[0][1]] * t.image_std + t.image_mean
    return x.numpy(), (il.frames or [None])[0]


def test_pixel_size_box_is_the_physical_crop_centred_on_the_metaphase():
    img = metaphase()
    box, note = pixel_size_box(img, INPUT, PX / REF)
    assert note is None
    assert (box[2] - box[0], box[3] - box[1]) == (800, 640)  # 160 / 0.2 by 128 / 0.2 image pixels
    framed = frame_box(img, INPUT)
    assert abs((box[0] + box[2]) - (framed[0] + framed[2])) <= 2 and abs((box[1] + box[3]) - (framed[1] + framed[3])) <= 2
    small, note2 = pixel_size_box(half(img), INPUT, 2 * PX / REF)
    assert note2 is None and (small[2] - small[0], small[3] - small[1]) == (400, 320)
    # the metaphase larger than the input at the model's pixel size: framed, and said why
    box, note = pixel_size_box(img, INPUT, 4 * PX / REF)
    assert box == framed and "larger than the model's input" in note
    # the crop would take in far more than the image: framed
    box, note = pixel_size_box(img, INPUT, PX / 20.0)
    assert box == framed and "times the image" in note
    with pytest.raises(ValueError):
        pixel_size_box(img, INPUT, 0.0)


@pytest.mark.parametrize("frame", [True, False])
def test_two_pixel_sizes_give_the_same_network_input(frame):
    """One synthetic metaphase, and its twin resized to half with its pixel size doubled: the network
    sees the same picture at the same scale (chromosomes of the same size in input pixels), framed or
    not; without a pixel size the framing rule is used (and then the two scales differ by 2 only
    because framing zooms to the cluster in both: the same here)."""
    t = ChromoTransform(image_size=INPUT, frame=frame)
    img = metaphase()
    a, box_a = network_input(t, img, PX)
    b, box_b = network_input(t, half(img), 2 * PX)
    assert box_a.rule == box_b.rule == "pixel size"
    scale_a, scale_b = INPUT[1] / (box_a[2] - box_a[0]), INPUT[1] / (box_b[2] - box_b[0])
    assert scale_a == pytest.approx(PX / REF) and scale_b == pytest.approx(2 * PX / REF)
    assert PX / scale_a == pytest.approx(2 * PX / scale_b) == pytest.approx(REF)  # micrometres per input pixel
    dark_a, dark_b = (a < 0.6).sum(), (b < 0.6).sum()  # the chromosomes' area in input pixels
    assert dark_a > 100 and abs(dark_a - dark_b) <= 0.08 * dark_a
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    # the full-size image framed by the content rule instead: another scale (the cluster fills the input)
    f, box_f = network_input(t, img, None)
    if frame:
        assert box_f.rule == "framing" and tuple(box_f) == frame_box(img, INPUT)
        assert (f < 0.6).sum() > 1.5 * dark_a
    else:
        assert box_f is None  # the whole image, as before


def test_settings_resolve_the_reference_once():
    assert resolve_settings().train_pixel_size_um is None
    assert resolve_settings({"train_pixel_size_um": "0.5"}).train_pixel_size_um == 0.5
    assert resolve_settings({"train_pixel_size_um": "0.5"}, InferenceConfig(train_pixel_size_um=0)).train_pixel_size_um == 0.0
    assert resolve_settings(None, {"train_pixel_size_um": 0.25}).train_pixel_size_um == 0.25
    with pytest.raises(ValueError):
        resolve_settings(None, {"train_pixel_size_um": -1})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint exported twice: with ``--train-pixel-size 0.5`` and without."""
    from chromoseg.cli import main
    from conftest import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("px")
    ck = make_tiny_checkpoint(d / "tiny.pt")
    assert main(["export", str(ck), "--out", str(d / "ref.safetensors"), "--train-pixel-size", str(REF)]) == 0
    assert main(["export", str(ck), "--out", str(d / "plain.safetensors")]) == 0
    return d


def test_export_records_the_reference_and_predict_uses_it(files):
    from chromoseg.cli import main
    from chromoseg.engine.checkpoint import read_metadata
    from chromoseg.engine.predict import Predictor

    assert read_metadata(files / "ref.safetensors")["train_pixel_size_um"] == "0.5"
    assert "train_pixel_size_um" not in read_metadata(files / "plain.safetensors")
    assert main(["export", str(files / "tiny.pt"), "--out", str(files / "x.safetensors"), "--train-pixel-size", "0"]) == 2
    pred = Predictor.from_checkpoint(files / "ref.safetensors")
    assert pred.cfg.train_pixel_size_um == REF
    img = (metaphase() * 255).astype(np.uint8)
    small = (half(metaphase()) * 255).astype(np.uint8)
    pred([img, small, img], pixel_sizes=[PX, 2 * PX, None])
    a, b, c = pred.last_framing
    assert a["scale_rule"] == b["scale_rule"] == "pixel size" and c["scale_rule"] == "whole image"
    assert a["scale"] == pytest.approx(PX / REF, rel=1e-3) and b["scale"] == pytest.approx(2 * PX / REF, rel=1e-3)
    with pytest.raises(ValueError):  # the model's input scale is fixed when it is loaded
        pred([img], train_pixel_size_um=0.3)
    off = Predictor.from_checkpoint(files / "ref.safetensors", {"train_pixel_size_um": 0})
    off([img], pixel_sizes=[PX])
    assert off.last_framing[0]["scale_rule"] == "whole image" and off.last_framing[0]["frame"] == [0, 0, 900, 800]


def test_a_file_without_the_key_behaves_as_before(files):
    """No ``train_pixel_size_um``: the same detections and framing with or without pixel sizes."""
    from chromoseg.engine.predict import Predictor

    pred = Predictor.from_checkpoint(files / "plain.safetensors", {"frame": True})
    assert pred.cfg.train_pixel_size_um is None
    img = (metaphase() * 255).astype(np.uint8)
    (without,) = pred([img])
    framing = pred.last_framing[0]
    (with_px,) = pred([img], pixel_sizes=[PX])
    assert pred.last_framing[0] == framing and framing["scale_rule"] == "framing"
    assert framing["frame"] == list(frame_box(img.astype(np.float32) / 255, INPUT))
    assert len(without) == len(with_px)
    for p, q in zip(without, with_px):
        assert p["score"] == q["score"] and np.array_equal(p["mask"], q["mask"])


def test_predict_records_the_scale_rule_from_the_file_pixel_size(files, tmp_path):
    """chromoseg predict on TIFFs with resolution tags: images.json records scale_rule and scale."""
    import json

    import tifffile

    from chromoseg.cli import main

    img = (metaphase() * 255).astype(np.uint8)
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "big.tif", img, resolution=(1e4 / PX, 1e4 / PX), resolutionunit="CENTIMETER")
    tifffile.imwrite(d / "small.tif", (half(metaphase()) * 255).astype(np.uint8),
                     resolution=(1e4 / (2 * PX), 1e4 / (2 * PX)), resolutionunit="CENTIMETER")
    tifffile.imwrite(d / "none.tif", img)
    out = tmp_path / "out"
    rc = main(["predict", str(d), "--model", str(files / "ref.safetensors"), "--out", str(out), "--quiet",
               "--no-karyogram", "--no-overlays", "--no-labels"])
    assert rc == 0
    images = {p["file_name"].rsplit("/", 1)[-1]: p for p in json.loads((out / "images.json").read_text())["images"]}
    assert images["big.tif"]["pixel_size_um"] == pytest.approx(PX)
    assert images["big.tif"]["scale_rule"] == images["small.tif"]["scale_rule"] == "pixel size"
    assert images["big.tif"]["scale"] == pytest.approx(PX / REF, rel=1e-3)
    assert images["small.tif"]["scale"] == pytest.approx(2 * PX / REF, rel=1e-3)
    assert images["none.tif"]["pixel_size_um"] is None and images["none.tif"]["scale_rule"] == "whole image"



def test_the_report_says_which_channel_and_pixel_size_each_image_was_read_with(files, tmp_path):
    """Issue 29: the channel used and the pixel size are written in report.html / report.csv beside
    the counts, not only in images.json (channel, pixel size and scale rule of each metaphase)."""
    import csv

    import tifffile

    from chromoseg.cli import main

    img = (metaphase(dark_on_light=False) * 255).astype(np.uint8)
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "cells.ome.tif", np.stack([255 - img, img]), ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["FITC", "DAPI"]}, "PhysicalSizeX": PX,
                               "PhysicalSizeY": PX})
    tifffile.imwrite(d / "plain.tif", img)
    out = tmp_path / "out"
    rc = main(["predict", str(d), "--model", str(files / "ref.safetensors"), "--out", str(out), "--quiet",
               "--channel", "dapi", "--no-overlays", "--no-labels"])
    assert rc == 0
    rows = {r["image"]: r for r in csv.DictReader((out / "report.csv").open())}
    ome, plain = rows["cells.ome.tif"], rows["plain.tif"]
    assert ome["channel"] == "DAPI" and float(ome["pixel_size_um"]) == pytest.approx(PX)
    assert ome["pixel_size_source"].startswith("OME PhysicalSizeX") and ome["scale_rule"] == "pixel size"
    assert plain["channel"] == "grey" and plain["pixel_size_um"] == "" and plain["scale_rule"] == "whole image"
    page = (out / "report.html").read_text()
    assert "channel DAPI (index 1 of FITC, DAPI)" in page and f"{PX:g} \u00b5m per pixel" in page
    assert "pixel size unknown" in page
    rc = main(["predict", str(d), "--model", str(files / "ref.safetensors"), "--out", str(out), "--quiet",
               "--channel", "dapi", "--no-overlays", "--no-labels", "--skip-existing"])
    assert rc == 0  # a continued run's report keeps the earlier images' rows, read as they were
    again = {r["image"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert again["cells.ome.tif"]["channel"] == "DAPI" and again["plain.tif"]["scale_rule"] == "whole image"
    rc = main(["predict", str(d / "plain.tif"), "--model", str(files / "ref.safetensors"), "--out",
               str(tmp_path / "given"), "--quiet", "--pixel-size", "0.2", "--no-overlays", "--no-labels"])
    assert rc == 0
    (row,) = csv.DictReader((tmp_path / "given" / "report.csv").open())
    assert float(row["pixel_size_um"]) == pytest.approx(0.2) and row["pixel_size_source"] == "given (--pixel-size)"
