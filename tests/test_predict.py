"""Prediction: the paper's inference rule and the files predict writes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chromoseg.engine.predict import InferenceConfig, Predictor, label_image, predict_paths, select_instances
from chromoseg.engine.settings import resolve_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


def fake_detections():
    masks = torch.zeros(4, 1, 40, 50)
    masks[0, 0, 5:10, 5:30] = 0.9
    masks[1, 0, 5:10, 6:30] = 0.8  # near-duplicate of 0: removed by mask NMS
    masks[2, 0, 20:25, 10:40] = 0.95
    masks[3, 0, 30:35, 10:40] = 0.9  # score 0.3: under the threshold
    return {"boxes": torch.zeros(4, 4), "labels": torch.tensor([3, 3, 7, 9]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.3]),
            "masks": masks}


def rule(**overrides) -> InferenceConfig:
    """The paper's rule with these settings, resolved (what select_instances takes)."""
    return resolve_settings(None, overrides)


def test_select_instances_takes_resolved_settings():
    with pytest.raises(ValueError, match="resolved settings .*score_threshold"):
        select_instances(fake_detections(), InferenceConfig())


def test_paper_rule():
    insts = select_instances(fake_detections(), rule())
    assert [i["category_id"] for i in insts] == [3, 7]
    assert insts[0]["mask"].sum() == 5 * 25 and insts[0]["bbox"] == [5.0, 5.0, 25.0, 5.0]
    assert len(insts[0]["rbox"]) == 5 and len(insts[0]["endpoints"]) == 2
    no_nms = select_instances(fake_detections(), rule(mask_nms_iou=0, score_threshold=0))
    assert len(no_nms) == 4
    top2 = select_instances(fake_detections(), rule(top_k=1))
    assert len(top2) == 1


def test_object_score_keeps_a_chromosome_of_unsure_class():
    det = fake_detections()
    cs = torch.full((4, 24), 0.0)
    cs[0, 2], cs[1, 2], cs[2, 6] = 0.9, 0.8, 0.7
    cs[3, 8], cs[3, 9] = 0.3, 0.35  # unsure between 9 and 10, but surely a chromosome (P(bg) 0.35)
    det["class_scores"] = cs
    insts = select_instances(det, rule(score="object"))
    # the paper's class score drops the last one; its class is its most probable one (10), not the
    # candidate's own label (9)
    assert [i["category_id"] for i in insts] == [3, 7, 10]
    assert insts[2]["score"] == pytest.approx(0.65) and insts[2]["class_scores"][9] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="class_scores"):
        select_instances(fake_detections(), rule(score="object"))


def test_class_is_the_argmax_of_the_reported_probabilities():
    det = fake_detections()
    cs = torch.full((4, 24), 0.01)
    cs[0, 4], cs[1, 2], cs[2, 6], cs[3, 8] = 0.6, 0.8, 0.7, 0.9  # candidate 0 (label 3) is most likely a 5
    det["class_scores"] = cs
    for score in ("class", "object"):
        insts = select_instances(det, rule(score=score, mask_nms_iou=0, score_threshold=0))
        assert insts and all(i["category_id"] == int(np.argmax(i["class_scores"])) + 1 for i in insts)
    class_rule = select_instances(det, rule(score="class", mask_nms_iou=0, score_threshold=0))
    assert class_rule[0]["category_id"] == 9 and class_rule[0]["score"] == pytest.approx(0.9)


def test_label_image_keeps_higher_score():
    insts = select_instances(fake_detections(), rule(mask_nms_iou=0, score_threshold=0))
    lab = label_image(insts, (40, 50))
    assert lab.dtype == np.uint16 and lab[7, 20] == 1 and lab[22, 20] == 3 and lab.max() == 4


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


def test_predict_writes_outputs(tiny_checkpoint, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"nope")
    # object scores lower the heads' candidate threshold, so the untrained model's detections come through
    pred = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0, score="object"))
    summary = predict_paths(pred, [EXAMPLE, bad], tmp_path / "out", progress=False)
    assert summary["images"] == 1 and summary["skipped"] == 1
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert all(r["file_name"] == str(EXAMPLE) and 1 <= r["category_id"] <= 24 for r in results)
    assert results  # score threshold 0: the untrained model's candidates all come through
    r = results[0]
    assert r["segmentation"]["size"] == [517, 645] and len(r["rbox"]) == 5 and len(r["endpoints"]) == 2
    assert r["category_id"] == int(np.argmax(r["class_scores"])) + 1
    import tifffile

    lab = tifffile.imread(out / "V1701XYD.labels.tif")
    assert lab.shape == (517, 645) and lab.dtype == np.uint16 and lab.max() == len(results)
    assert (out / "V1701XYD.overlay.png").stat().st_size > 1000
    assert (out / "V1701XYD.karyogram.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "V1701XYD" in html and "http://" not in html and "https://" not in html
    # the header says the settings in words, not as a Python dict
    assert "object score &gt;= 0; masks of the top 100" in html and "top_k" not in html
    meta = json.loads((out / "images.json").read_text())["images"][0]
    assert meta["summary"] and meta["instances"] == len(results)
    assert "broken.tif" in (out / "problems.json").read_text()


def test_predict_cli_errors(tmp_path, capsys):
    from chromoseg.cli import main

    assert main(["predict", str(EXAMPLE), "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "empty"), "--model", "x.pt"]) == 2


def test_masks_skipped_below_the_threshold_give_the_same_instances(tiny_checkpoint):
    """Object scores: the RoI heads drop detections under the score threshold before the mask head
    (``Predictor.call_options``' ``mask_score_thresh``, an argument of the predictor's own model call:
    the heads are never changed); the rule's instances are the same as with every mask made."""
    from chromoseg.data.io import read_image

    image = read_image(EXAMPLE)
    pred = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0, score="object"))
    heads = pred.model.roi_heads
    with torch.no_grad():  # spread the untrained model's object scores (1 - P(background)) over (0, 1)
        heads.box_predictor.cls_score.weight[0].mul_(60)
        heads.box_predictor.cls_score.bias[0] += 7
    scores = sorted(inst["score"] for inst in pred([image])[0])
    assert len(scores) > 4 and heads.mask_score_thresh == 0.0
    thr = scores[len(scores) // 2]  # half of them pass
    assert pred.call_options(pred.settings(score_threshold=thr)) == {"mask_score_thresh": pytest.approx(thr - 2e-3)}
    made, state = [], []

    def seen(module, inputs, output):  # masks made, and the heads' own attribute while making them
        made.append(output.shape[0])
        state.append(heads.mask_score_thresh)

    hook = heads.mask_head.register_forward_hook(seen)
    fast = pred([image], score_threshold=thr)[0]
    pred.call_options = lambda cfg, pixel_sizes=None: {}  # every detection's mask, as a direct model call
    slow = pred([image], score_threshold=thr)[0]
    hook.remove()
    assert state == [0.0, 0.0] and heads.mask_score_thresh == 0.0  # the heads were never changed
    assert made[0] < made[1] and 0 < len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert (a["mask"] == b["mask"]).all() and a["category_id"] == b["category_id"]
        assert a["score"] == pytest.approx(b["score"]) and a["rbox"] == pytest.approx(b["rbox"])


def test_a_bare_array_is_refused_with_one_line(tiny_checkpoint):
    """A predictor takes a list of images: one 2-D array (which would be read row by row, each row an
    image) or a 3-D one inside the list is refused before any work."""
    pred = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig())
    image = np.zeros((40, 50), np.uint8)
    with pytest.raises(TypeError, match=r"one array of shape \(40, 50\).*pass \[image\]"):
        pred(image)
    with pytest.raises(TypeError, match="image 0: .*2-D"):
        pred([np.zeros((40, 50, 3), np.uint8)])


def test_amp_runs_the_model_in_bf16_only_when_asked_or_native(tiny_checkpoint, monkeypatch):
    """InferenceConfig.amp: "bf16" runs the network's convolutions in bf16 and still returns float32
    instances; "off" keeps fp32; "auto" follows the CPU's bf16 instructions; anything else is refused."""
    from chromoseg.data.io import read_image
    from chromoseg.engine import amp

    image = read_image(EXAMPLE)
    pred = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0, score="object"))
    dtypes = []
    conv = next(m for m in pred.model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    for mode, native, want in [("bf16", False, torch.bfloat16), ("off", True, torch.float32),
                               ("auto", True, torch.bfloat16), ("auto", False, torch.float32)]:
        monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda native=native: native)
        pred.cfg.amp = mode
        out = pred([image])[0]
        assert dtypes[-1] == want, mode
        assert out and all(isinstance(d["score"], float) and d["mask"].dtype == bool for d in out)
    hook.remove()
    pred.cfg.amp = "fp8"
    with pytest.raises(ValueError, match="amp 'fp8'"):
        pred([image])


def test_help_states_the_threshold_the_shipped_models_use(capsys):
    """predict --help said detections under 0.5 are dropped while both shipped models recommend 0.2:
    it now reads each shipped file's recommendation."""
    from chromoseg.cli import main
    from chromoseg.engine.checkpoint import read_metadata
    from chromoseg.weights import SHIPPED, shipped_path

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "under the confidence score 0.5 are dropped" not in said
    for name in SHIPPED:
        assert f"{name} {read_metadata(shipped_path(name))['default_score_threshold']}" in said


# ------------------------------------------------------------------------------------------------
# images as labs have them: channels and the pixel size recorded in images.json


def _three_channel_ome(path: Path) -> tuple[Path, np.ndarray]:
    """A 3-channel OME-TIFF (DAPI, FITC, Cy3; 0.065 um per pixel) of a 160 x 128 crop of the example:
    each channel a different picture, so that the channel read can be told by its pixels."""
    import tifffile

    from chromoseg.data.io import read_image

    crop = read_image(EXAMPLE)[100:228, 200:360].astype(np.uint16) * 16
    planes = np.stack([crop, np.flipud(crop), np.fliplr(crop)])
    tifffile.imwrite(path, planes, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "FITC", "Cy3"]}, "PhysicalSizeX": 0.065,
                               "PhysicalSizeXUnit": "\u00b5m", "PhysicalSizeY": 0.065, "PhysicalSizeYUnit": "\u00b5m"})
    return path, planes


def test_predict_records_the_channel_and_pixel_size_of_an_ome_tiff(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """--channel fitc reads the FITC plane (any case) and images.json says so, with the file's pixel
    size; --pixel-size overrides it (the file's value kept beside it); without --channel the first
    channel is read with a warning kept in problems.json, and the exit status stays 0."""
    from chromoseg.cli import EXIT_OK, main
    from chromoseg.engine import predict as predict_mod

    ome, planes = _three_channel_ome(tmp_path / "cells.ome.tif")
    common = ["--model", str(tiny_checkpoint), "--score-threshold", "0", "--quiet", "--no-karyogram"]
    seen = []
    real = Predictor.run_model

    def spy(self, images, *a, **kw):  # the one place the network is given the pixels (the per-image pipeline's)
        seen.append(images[0].copy())
        return real(self, images, *a, **kw)

    monkeypatch.setattr(Predictor, "run_model", spy)
    assert main(["predict", str(ome), "--channel", "fitc", "--out", str(tmp_path / "o1")] + common) == EXIT_OK
    assert np.array_equal(seen[-1], planes[1])  # the model saw FITC
    im = json.loads((tmp_path / "o1" / "images.json").read_text())["images"][0]
    assert im["channel"] == "FITC" and im["channel_index"] == 1 and im["channels"] == ["DAPI", "FITC", "Cy3"]
    assert im["pixel_size_um"] == pytest.approx(0.065) and "PhysicalSizeX" in im["pixel_size_source"]
    assert "pixel_size_um_in_file" not in im
    assert json.loads((tmp_path / "o1" / "problems.json").read_text()) == []

    assert main(["predict", str(ome), "--channel", "2", "--pixel-size", "0.1", "--out", str(tmp_path / "o2")] + common) \
        == EXIT_OK
    assert np.array_equal(seen[-1], planes[2])
    im = json.loads((tmp_path / "o2" / "images.json").read_text())["images"][0]
    assert im["channel"] == "Cy3" and im["pixel_size_um"] == 0.1 and im["pixel_size_source"] == "given (--pixel-size)"
    assert im["pixel_size_um_in_file"] == pytest.approx(0.065)

    capsys.readouterr()
    assert main(["predict", str(ome), "--out", str(tmp_path / "o3")] + common) == EXIT_OK  # a warning is no skip
    assert np.array_equal(seen[-1], planes[0])
    im = json.loads((tmp_path / "o3" / "images.json").read_text())["images"][0]
    assert im["channel"] == "DAPI" and im["channel_index"] == 0
    probs = json.loads((tmp_path / "o3" / "problems.json").read_text())
    assert [(p["action"], p["kind"]) for p in probs] == [("kept", "read-warning")]
    assert "3 channels" in probs[0]["problem"] and "DAPI, FITC, Cy3" in probs[0]["problem"]
    said = capsys.readouterr()
    assert "0 skipped" in said.out and "warned about 1 file(s)" in said.out and "skipped:" not in said.err

    # --skip-existing: the report reads the earlier image again from the channel it was predicted from
    calls = []
    read = predict_mod.read_image_with_info
    monkeypatch.setattr(predict_mod, "read_image_with_info",
                        lambda path, channel=None: calls.append((Path(path).name, channel)) or read(path, channel))
    s = predict_paths(Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0)), [ome],
                      tmp_path / "o1", progress=False, skip_existing=True)
    assert s["already_done"] == 1 and calls == [("cells.ome.tif", 1)]


def test_predict_channel_the_file_does_not_have_is_skipped_naming_its_channels(tiny_checkpoint, tmp_path, capsys):
    from chromoseg.cli import EXIT_NOTHING_DONE, EXIT_USAGE, main

    ome, _ = _three_channel_ome(tmp_path / "cells.ome.tif")
    common = ["--model", str(tiny_checkpoint), "--quiet", "--no-karyogram", "--out", str(tmp_path / "o")]
    assert main(["predict", str(ome), "--channel", "TRITC"] + common) == EXIT_NOTHING_DONE
    err = capsys.readouterr().err
    assert f"skipped: {ome}" in err
    probs = json.loads((tmp_path / "o" / "problems.json").read_text())
    assert probs[0]["action"] == "skipped"
    assert "no channel named 'TRITC': the file has DAPI, FITC, Cy3" in probs[0]["problem"]
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            main(["predict", str(ome), "--pixel-size", bad] + common)
        assert "--pixel-size" in capsys.readouterr().err
    with pytest.raises(ValueError, match="pixel_size_um"):
        predict_paths(None, [ome], tmp_path / "o4", pixel_size_um=-1.0)
    with pytest.raises(TypeError, match="channel"):
        predict_paths(None, [ome], tmp_path / "o4", channel=1.5)


def test_predict_help_teaches_channel_and_pixel_size(capsys):
    from chromoseg.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--channel NAME|INDEX" in text and "DAPI or dapi" in text and "0-based index" in text
    assert "--pixel-size UM" in text and "micrometres per pixel" in text
    assert "the channel it was read from" in text and "pixel_size_um" in text  # images.json's entry
    assert '"action": "kept"' in text


def test_review_flags_a_differing_karyotype_as_predict_does():
    """The review page had its own, older wording of the flag of a summary that differs from the known
    karyotype; it now uses predict's (``chromoseg.karyotype.pipeline.truth_flag``)."""
    from chromoseg.karyotype.pipeline import truth_flag
    from chromoseg.review.render import karyotype_view

    classes = [c for c in range(1, 23) for _ in (0, 1)] + [23, 24]  # 46,XY
    insts = [{"id": k, "category_id": c, "score": 0.99} for k, c in enumerate(classes)]
    view = karyotype_view(insts[:-1], reviewed=True, truth="46,XY")
    flags = [f for f in view["flags"] if f.startswith("truth:")]
    assert flags == [truth_flag(view["summary"], "46,XY", "46,XY")] and "reads" not in flags[0]
    assert not [f for f in karyotype_view(insts, reviewed=True, truth="46,XY")["flags"] if f.startswith("truth:")]


# ------------------------------------------------------------------------------------------------
# settings: the model file's recommendations and the caller's choices, resolved once


def test_settings_are_resolved_by_one_pure_rule():
    """resolve_settings: the caller's choice, else the file's recommendation, else the paper's rule;
    a new object each time, neither input changed."""
    from dataclasses import asdict

    from chromoseg.engine.settings import PAPER_SCORE_THRESHOLD, resolve_settings

    meta = {"default_score": "object", "default_score_threshold": "0.2", "default_classes": "karyotype",
            "default_proposals": "500", "stain": "fluorescence", "format": "chromoseg-model"}
    meta_before = dict(meta)
    mine = InferenceConfig(score_threshold=0.3, classes="independent")
    mine_before = asdict(mine)
    got = resolve_settings(meta, mine)
    assert got is not mine and asdict(mine) == mine_before and meta == meta_before
    assert (got.score, got.score_threshold, got.classes, got.proposals, got.frame) == ("object", 0.3, "independent",
                                                                                         500, False)
    assert resolve_settings(meta, got) == got and resolve_settings(meta, got) is not got
    # nothing chosen (InferenceConfig(), None, {} or None values): the file's recommendations
    for nothing in (None, {}, InferenceConfig(), {"score_threshold": None, "classes": None}):
        r = resolve_settings(meta, nothing)
        assert (r.score, r.score_threshold, r.classes, r.proposals) == ("object", 0.2, "karyotype", 500)
    # no recommendation: the paper's rule; proposals: the model's own; frame: the model's own
    plain = resolve_settings()
    assert (plain.score, plain.score_threshold, plain.classes, plain.proposals, plain.frame) == (
        "class", PAPER_SCORE_THRESHOLD, "independent", None, False)
    assert resolve_settings({"frame": True}).frame is True and resolve_settings({"frame": True}, {"frame": False}).frame is False
    with pytest.raises(TypeError, match="unknown setting 'threshold'"):
        resolve_settings(meta, {"threshold": 0.3})
    with pytest.raises(ValueError, match="score 'logit'"):
        resolve_settings(None, {"score": "logit"})
    with pytest.raises(ValueError, match="proposals must be at least 1"):
        resolve_settings({"default_proposals": "0"})


def test_no_settings_means_the_files_recommendations(tiny_checkpoint, tmp_path):
    """Predictor.from_checkpoint(path) without settings used the paper's rule, not the file's (the API
    and the demo wrote InferenceConfig(score=None, score_threshold=None, classes=None) by hand to get
    them); now no settings, InferenceConfig() and the API all mean the file's recommendations, and the
    caller's settings object is not changed."""
    from dataclasses import asdict

    import chromoseg
    from chromoseg.cli import main

    out = tmp_path / "m.safetensors"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--default-score", "object",
                 "--default-score-threshold", "0.35", "--default-classes", "karyotype"]) == 0
    want = ("object", 0.35, "karyotype")
    for pred in (Predictor.from_checkpoint(out), Predictor.from_checkpoint(out, InferenceConfig()),
                 chromoseg.load_model(out).predictor):
        assert (pred.cfg.score, pred.cfg.score_threshold, pred.cfg.classes) == want
        assert pred.model.roi_heads.score_mode == "object"  # the heads were built for the resolved score
    mine = InferenceConfig(score_threshold=0.6)
    before = asdict(mine)
    told = Predictor.from_checkpoint(out, mine)
    assert asdict(mine) == before and told.cfg is not mine
    assert (told.cfg.score, told.cfg.score_threshold, told.cfg.classes) == ("object", 0.6, "karyotype")
    assert told.recommended_score_threshold == 0.35
    # a checkpoint recommends nothing: the paper's rule
    plain = Predictor.from_checkpoint(tiny_checkpoint)
    assert (plain.cfg.score, plain.cfg.score_threshold, plain.cfg.classes) == ("class", 0.5, "independent")


def test_a_call_takes_its_own_settings_without_changing_the_predictors(tiny_checkpoint):
    """predictor(images, score_threshold=...) and the like: that call's instances are made with them,
    the predictor's own settings stay; the settings the model was loaded with cannot change per call."""
    from chromoseg.data.io import read_image

    image = read_image(EXAMPLE)
    pred = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0, score="object"))
    with torch.no_grad():  # spread the untrained model's object scores over (0, 1)
        pred.model.roi_heads.box_predictor.cls_score.weight[0].mul_(60)
        pred.model.roi_heads.box_predictor.cls_score.bias[0] += 7
    own = pred.cfg
    every = pred([image])[0]
    scores = sorted(inst["score"] for inst in every)
    assert len(scores) > 4
    thr = scores[len(scores) // 2]
    some = pred([image], score_threshold=thr)[0]
    assert pred.cfg is own and pred.cfg.score_threshold == 0.0  # the predictor's settings are as they were
    assert pred.last_settings[0].score_threshold == thr
    assert [i["score"] for i in some] == [i["score"] for i in every if i["score"] >= thr]
    assert len(pred([image])[0]) == len(every)  # the next call is back on the predictor's own
    assert pred([image], mask_nms_iou=0.0)[0] != [] and pred.cfg.mask_nms_iou == 0.5
    with pytest.raises(ValueError, match="score is fixed when the model is loaded"):
        pred([image], score="class")
    with pytest.raises(TypeError, match="unknown setting 'threshold'"):
        pred([image], threshold=0.3)


# ------------------------------------------------------------------------------------------------
# --model auto, the default: each image to the shipped model of its stain


def test_a_folder_of_both_stains_is_predicted_by_default_each_with_its_model(tmp_path, capsys):
    """`chromoseg predict FOLDER` with DAPI and G-band images: the default model skipped the G-band one
    (wrong stain, exit 3); now each goes to the shipped model of its stain, exit 0, and images.json,
    the report and the summary say which."""
    import shutil

    from chromoseg.cli import main

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "dapi.tif")
    shutil.copy(REPO / "examples" / "cil-gband" / "103203.jpg", folder / "gband.jpg")
    assert main(["predict", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    said = capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "images.json").read_text())
    by = {Path(im["file_name"]).name: im["model"]["name"] for im in meta["images"]}
    assert by == {"dapi.tif": "mfish", "gband.jpg": "gband"}
    assert all(im["instances"] > 0 for im in meta["images"]) and "settings_differ" in meta
    assert "mfish (fluorescence) 1 image(s), gband (brightfield) 1 image(s)" in said
    html = (tmp_path / "out" / "report.html").read_text()
    assert "model mfish (fluorescence)" in html and "model gband (brightfield)" in html


def test_results_json_and_report_csv_name_what_is_not_a_chromosome(tmp_path):
    """Issue 30: a detection the not-a-chromosome rule leaves out of the counts carries
    ``not_chromosome`` (why) in results.json (chromosomes carry no such key; the file stays valid COCO
    results), with or without the karyotype; report.csv counts them per image (``n_not_chromosome``)."""
    import csv

    from pycocotools.coco import COCO

    from chromoseg.data.classes import coco_categories
    from test_karyotype_nucleus import predict_nucleus_folder

    out = predict_nucleus_folder(tmp_path / "k")
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 47
    assert "nucleus" in results[46]["not_chromosome"] and "solidity" in results[46]["not_chromosome"]
    assert not any("not_chromosome" in r for r in results[:46])
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 720, "width": 960, "file_name": "nucleus.png"}], "annotations": [],
                  "categories": coco_categories()}
    gt.createIndex()
    assert len(gt.loadRes(results).getAnnIds()) == 47  # pycocotools takes it as it is
    (row,) = list(csv.DictReader((out / "report.csv").open()))
    assert row["n_not_chromosome"] == "1" and row["total"] == "46" and row["summary"] == "46,XX"
    plain = json.loads((predict_nucleus_folder(tmp_path / "n", karyotype=False) / "results.json").read_text())
    assert [("not_chromosome" in r) for r in plain] == [False] * 46 + [True]
