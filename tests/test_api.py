"""The one-call Python API."""
from pathlib import Path

import numpy as np
import pytest

import chromoseg

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


def test_load_model_predict(tmp_path):
    from conftest import make_tiny_checkpoint

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"), score="object", score_threshold=0.0)
    res = model.predict(EXAMPLE)
    # the count leaves out what the not-a-chromosome rule marks (a nucleus-like blob), as predict does
    counted = [i for i in res.instances if not i.get("not_chromosome")]
    assert counted and res.karyotype.split(",")[0] == str(len(counted))
    inst = res.instances[0]
    assert inst["mask"].shape == (517, 645) and len(inst["rbox"]) == 5 and 1 <= inst["category_id"] <= 24
    assert res.karyogram.ndim == 3 and res.karyogram.dtype == np.uint8
    with pytest.raises(TypeError, match="unknown setting"):
        chromoseg.load_model(tmp_path / "t.pt", threshold=0.3)
    with pytest.raises(ValueError, match="2-D"):
        model.predict(np.zeros((10, 10, 3), np.uint8))


def test_predict_refuses_an_image_of_the_other_stain(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.data.io import read_image

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"))
    model.predictor.stain = "fluorescence"
    with pytest.raises(ValueError, match="dark on a light background"):
        model.predict(255 - read_image(EXAMPLE))


def test_instances_have_attributes_class_names_and_pictures(tmp_path):
    """The README promised ``inst.bbox`` (instances were plain dicts), classes 23/24 had no names in the
    API, nothing saved the overlay or karyogram, and a wrong-stain error named a command-line flag."""
    from conftest import make_tiny_checkpoint

    from chromoseg.api import Instance
    from chromoseg.data.io import read_image

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"), score="object", score_threshold=0.0)
    res = model.predict(EXAMPLE)
    inst = res.instances[0]
    assert isinstance(inst, dict) and inst.bbox == inst["bbox"] and inst.mask is inst["mask"]
    assert inst.class_name == chromoseg.CLASS_NAMES[inst.category_id - 1]
    with pytest.raises(AttributeError, match="no 'colour'"):
        inst.colour
    assert Instance(category_id=23).class_name == "X" and Instance(category_id=24).class_name == "Y"
    assert chromoseg.class_name(23) == "X" and chromoseg.class_name(0) is None
    assert sum(res.counts_by_name.values()) == sum(res.counts.values())
    paths = res.save(tmp_path / "pics", "v17")
    assert paths["overlay"].name == "v17.overlay.png" and paths["karyogram"].name == "v17.karyogram.png"
    assert res.name == "V1701XYD.tif" and model.predict(read_image(EXAMPLE)[:200, :240]).name is None
    assert all(p.stat().st_size > 1000 for p in paths.values())
    model.predictor.stain = "fluorescence"
    with pytest.raises(ValueError, match=r'chromoseg.load_model\("gband"\)') as info:
        model.predict(255 - read_image(EXAMPLE))
    assert "--model" not in str(info.value)


def test_predict_a_channel_of_a_file_and_the_pixel_size(tmp_path):
    """``predict(path, channel=)`` reads that channel of a multi-channel file; ``result.source`` says
    which, with the pixel size (the file's, or the one given) and the readers' warnings."""
    import tifffile
    from conftest import make_tiny_checkpoint

    from chromoseg.data.io import ImageReadError, read_image

    crop = read_image(EXAMPLE)[100:228, 200:360].astype(np.uint16) * 16
    planes = np.stack([crop, np.flipud(crop), np.fliplr(crop)])
    ome = tmp_path / "cells.ome.tif"
    tifffile.imwrite(ome, planes, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "FITC", "Cy3"]}, "PhysicalSizeX": 0.065,
                               "PhysicalSizeXUnit": "\u00b5m"})
    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"), score="object", score_threshold=0.0)
    res = model.predict(ome, channel="fitc", karyogram=False)
    assert np.array_equal(res.image, planes[1])
    assert res.source["channel"] == "FITC" and res.source["channel_index"] == 1
    assert res.source["channels"] == ["DAPI", "FITC", "Cy3"] and res.source["warnings"] == []
    assert res.source["pixel_size_um"] == pytest.approx(0.065) and "PhysicalSizeX" in res.source["pixel_size_source"]
    assert isinstance(res.framing, dict) and res.karyotype  # the fields that were there are still there
    first = model.predict(str(ome), karyogram=False, pixel_size_um=0.1)  # default: the first, with a warning
    assert np.array_equal(first.image, planes[0]) and first.source["channel"] == "DAPI"
    assert any("3 channels" in w for w in first.source["warnings"])
    assert first.source["pixel_size_um"] == 0.1 and first.source["pixel_size_um_in_file"] == pytest.approx(0.065)
    with pytest.raises(ImageReadError, match="no channel named 'TRITC': the file has DAPI, FITC, Cy3"):
        model.predict(ome, channel="TRITC")
    with pytest.raises(ValueError, match="array is already one grey channel"):
        model.predict(crop, channel=1)
    with pytest.raises(ValueError, match="pixel_size_um"):
        model.predict(ome, pixel_size_um=0)
    arr = model.predict(crop, karyogram=False, pixel_size_um=0.07)
    assert arr.source == {"pixel_size_um": 0.07, "pixel_size_source": "given (pixel_size_um=)"}
    assert model.predict(crop, karyogram=False).source == {}


def test_predict_takes_settings_per_call_without_changing_the_model(tmp_path):
    """``model.predict(image, score_threshold=...)``, as Cellpose's ``eval``: that result is made with
    them (and says so in ``result.settings``), the model's own settings stay for the next call."""
    import torch
    from conftest import make_tiny_checkpoint

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"), score="object", score_threshold=0.0)
    heads = model.predictor.model.roi_heads
    with torch.no_grad():  # spread the untrained model's object scores over (0, 1)
        heads.box_predictor.cls_score.weight[0].mul_(60)
        heads.box_predictor.cls_score.bias[0] += 7
    every = model.predict(EXAMPLE, karyogram=False)
    scores = sorted(i.score for i in every.instances)
    assert len(scores) > 4 and every.settings["score_threshold"] == 0.0
    thr = scores[len(scores) // 2]
    some = model.predict(EXAMPLE, karyogram=False, score_threshold=thr)
    assert some.settings["score_threshold"] == thr and some.settings["score"] == "object"
    assert [i.score for i in some.instances] == [i.score for i in every.instances if i.score >= thr]
    assert 0 < len(some.instances) < len(every.instances)
    assert model.settings.score_threshold == 0.0  # the model's own
    again = model.predict(EXAMPLE, karyogram=False)
    assert len(again.instances) == len(every.instances) and again.settings == every.settings
    assert some.model["file"] == str(tmp_path / "t.pt")
    with pytest.raises(ValueError, match="proposals is fixed when the model is loaded"):
        model.predict(EXAMPLE, proposals=50)
    with pytest.raises(TypeError, match="unknown setting 'threshold'"):
        model.predict(EXAMPLE, threshold=0.3)


def test_predict_refuses_what_the_command_line_refuses(tmp_path, monkeypatch):
    """The API checked the stain by itself and had no size guard: one rule (predict.image_problem) now
    refuses an image that ``chromoseg predict`` skips -- too large, a label map, the other stain."""
    from conftest import make_tiny_checkpoint

    from chromoseg.data.io import read_image
    from chromoseg.engine import pipeline, predict

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"))
    image = read_image(EXAMPLE)
    monkeypatch.setattr(pipeline, "MAX_IMAGE_PIXELS", image.size - 1)
    with pytest.raises(ValueError, match="image too large .*645x517"):
        model.predict(image)
    assert predict.image_problem(image, None)[0] == "too-large"
    monkeypatch.undo()
    labels = np.zeros((200, 300), np.uint8)
    labels[20:60, 30:40] = 3
    labels[100:150, 200:212] = 17
    with pytest.raises(ValueError, match="a label map or mask, not a metaphase image"):
        model.predict(labels)
    assert predict.image_problem(labels, None)[0] == "not-a-metaphase"
    model.predictor.stain = "fluorescence"
    assert predict.image_problem(255 - image, "fluorescence")[0] == "wrong-stain"
    with pytest.raises(ValueError, match="dark on a light background"):
        model.predict(255 - image)


def test_load_model_defaults_to_the_model_of_each_images_stain():
    """chromoseg.load_model() is --model auto: an image goes to the shipped model of its stain (the
    G-band one raised ValueError with the default), which loads when its first image comes;
    result.model says which model made the result."""
    from chromoseg.data.io import read_image

    model = chromoseg.load_model()
    assert model.predictor.predictors == {}  # nothing loaded before an image needs it
    dapi = read_image(EXAMPLE)[60:460, 100:560]
    res = model.predict(dapi, karyogram=False)
    assert res.model["name"] == "mfish" and res.model["stain"] == "fluorescence" and res.instances
    assert set(model.predictor.predictors) == {"fluorescence"}
    gband = model.predict(EXAMPLE.parents[2] / "cil-gband" / "103203.jpg", karyogram=False)
    assert gband.model["name"] == "gband" and gband.settings["score_threshold"] == 0.4 and gband.instances
    assert res.settings["score_threshold"] == 0.2  # each model's own recommendation
    with pytest.raises(TypeError, match="unknown setting"):
        chromoseg.load_model(threshold=0.3)  # before any model loads


def test_the_overlay_greys_what_is_not_a_chromosome_and_says_what_made_it(tmp_path, monkeypatch):
    """``Result.overlay()`` / ``save()`` drew a nucleus the counts left out in its class colour, like a
    chromosome, and had no title or legend, where ``chromoseg predict``'s overlay greys it and names the
    image, model, score threshold and count (issue 30)."""
    import chromoseg.karyotype.overlay as ov
    from chromoseg.api import Instance, Result

    img = np.full((120, 160), 60, np.uint8)

    def blob(x0, y0, w, h, cat, **extra):
        m = np.zeros(img.shape, bool)
        m[y0:y0 + h, x0:x0 + w] = True
        return Instance(mask=m, bbox=[x0, y0, w, h], category_id=cat, score=0.9, **extra)

    insts = [blob(10, 10, 8, 40, 1), blob(40, 10, 8, 40, 23),
             blob(80, 30, 50, 50, 2, not_chromosome="large compact blob (a nucleus?)")]
    res = Result(insts, "2,X,?", [], {1: 1, 23: 1}, image=img, settings={"score_threshold": 0.3},
                 model={"name": "gband", "stain": "brightfield"}, name="m.png")
    real, seen = ov.render_overlay, {}

    def spy(image, instances, **kw):
        seen.update(kw, cats=[i.get("category_id") for i in instances])
        return real(image, instances, **kw)

    monkeypatch.setattr(ov, "render_overlay", spy)
    pic = res.overlay()
    assert seen["cats"] == [1, 23, 0]  # the nucleus grey, '?'
    assert seen["title"] == ov.overlay_title("m.png", model="gband", score_threshold=0.3, chromosomes=2,
                                             not_chromosomes=1)
    assert "2 chromosomes (1 not a chromosome)" in seen["title"]
    plain = real(img, insts)  # the picture alone, the nucleus in class 2's colour
    band = pic.shape[0] - plain.shape[0]
    assert band > 0 and pic.shape[1] == plain.shape[1]
    r, g, b = (int(v) for v in pic[band + 140, 180])  # inside the nucleus (x 90, y 70; drawn at 2x)
    assert max(r, g, b) - min(r, g, b) <= 2
    r, g, b = (int(v) for v in plain[140, 180])
    assert max(r, g, b) - min(r, g, b) > 10
    seen.clear()
    paths = res.save(tmp_path, "v")
    assert paths["overlay"].name == "v.overlay.png" and seen["title"].startswith("m.png")
