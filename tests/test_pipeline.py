"""One per-image pipeline (issue 28): ``chromoseg predict``'s batch writer, the Python API, ``chromoseg
demo`` and a bare ``Predictor`` call all run :func:`chromoseg.engine.pipeline.predict_images`, give the
same results for the same image, and leave the model's modules as they were."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import chromoseg
from chromoseg.data.io import read_image
from chromoseg.engine import pipeline
from chromoseg.engine.predict import InferenceConfig, Predictor, StainRouter, instances_to_results, predict_paths

REPO = Path(__file__).resolve().parents[1]
DAPI = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"
GBAND = REPO / "examples" / "cil-gband" / "103203.jpg"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("pipe") / "tiny.pt")


@pytest.fixture
def analyses(monkeypatch):
    """The analysis each image of a pipeline call got, in order (a spy on the pipeline's last step)."""
    seen = []
    real = pipeline.analyse

    def spy(instances, analysis, truth=None):
        seen.append(analysis)
        return real(instances, analysis, truth)

    monkeypatch.setattr(pipeline, "analyse", spy)
    return seen


def test_every_caller_runs_the_one_pipeline(tiny, tmp_path, analyses):
    from chromoseg.cli import main

    Predictor.from_checkpoint(tiny, InferenceConfig(score_threshold=0.0))([read_image(DAPI)])
    assert analyses == [None]  # a bare predictor call: instances only
    predict_paths(Predictor.from_checkpoint(tiny), [DAPI], tmp_path / "writer", progress=False)
    predict_paths(Predictor.from_checkpoint(tiny), [DAPI], tmp_path / "plain", karyotype=False, progress=False)
    assert analyses[1:] == ["karyotype", "not-chromosomes"]
    chromoseg.load_model(tiny).predict(DAPI)
    assert analyses[3:] == ["karyotype"]
    assert main(["demo", "--model", str(tiny), "--out", str(tmp_path / "demo"), "--quiet"]) in (0, 1)
    assert analyses[4:] == ["karyotype"]  # the demo's prediction (the expert's reference has no model)


def test_writer_and_api_give_the_same_prediction(tiny, tmp_path):
    """The writer only writes: its results.json and images.json hold what the API returns."""
    model = chromoseg.load_model(tiny, score_threshold=0.0)
    res = model.predict(DAPI)
    predict_paths(model.predictor, [DAPI], tmp_path, progress=False)
    written = json.loads((tmp_path / "results.json").read_text())
    image = json.loads((tmp_path / "images.json").read_text())["images"][0]
    assert written == instances_to_results(res.instances, 1, str(DAPI))
    assert image["summary"] == res.karyotype  # the writer also flags a summary that differs from case_info.txt's
    assert [f for f in image["flags"] if not f.startswith("truth:")] == res.flags
    assert {k: image[k] for k in res.framing} == res.framing
    assert image["inference"] == res.settings and image["model"] == res.model


def test_the_model_is_not_changed_during_a_call(tiny):
    """The call's options (scale rule, masks only above the threshold) are arguments of the model
    call: the transform's and the heads' attributes are the same during the call as before it."""
    pred = Predictor.from_checkpoint(tiny, {"train_pixel_size_um": 0.5, "score": "object", "score_threshold": 0.3})
    t, heads = pred.model.transform, pred.model.roi_heads
    state = []
    hook = heads.register_forward_pre_hook(
        lambda m, args: state.append((t.pixel_sizes, t.train_pixel_size_um, heads.mask_score_thresh)))
    try:
        pred([read_image(DAPI)], pixel_sizes=[0.1])  # 0.1 um: the metaphase fits the input at 0.5 um
    finally:
        hook.remove()
    assert state == [(None, None, 0.0)]
    assert pred.last_framing[0]["scale_rule"] == "pixel size"
    assert pred.call_options(pred.cfg, [0.1]) == {"pixel_sizes": [0.1], "train_pixel_size_um": 0.5,
                                                   "mask_score_thresh": pytest.approx(0.298)}


def test_a_router_sends_each_image_to_the_model_of_its_stain(tiny):
    dapi = read_image(DAPI)
    fluo = Predictor.from_checkpoint(tiny, InferenceConfig(score_threshold=0.0))
    bright = Predictor.from_checkpoint(tiny, InferenceConfig(score_threshold=0.0))
    preds = pipeline.predict_images(StainRouter({"fluorescence": fluo, "brightfield": bright}), [dapi, 255 - dapi])
    assert [p.predictor for p in preds] == [fluo, bright]
    with pytest.raises(ValueError, match="analysis"):
        pipeline.predict_images(fluo, [dapi], analysis="counts")


@pytest.mark.parametrize("path", [GBAND], ids=["gband"])
def test_shipped_example_equal_through_api_and_predict(path, tmp_path):
    """The shipped model of the example's stain (``--model auto``): ``chromoseg predict``'s files and
    ``chromoseg.load_model().predict`` hold the same chromosomes, karyotype, framing and settings."""
    model = chromoseg.load_model()
    res = model.predict(path)
    summary = predict_paths(StainRouter.shipped(), [path], tmp_path, progress=False)
    assert summary["images"] == 1
    written = json.loads((tmp_path / "results.json").read_text())
    image = json.loads((tmp_path / "images.json").read_text())["images"][0]
    assert written == instances_to_results(res.instances, 1, str(path))
    assert len(written) > 30 and image["summary"] == res.karyotype
    assert image["model"] == res.model and image["model"]["name"] == "gband"
    assert {k: image[k] for k in res.framing} == res.framing
    assert isinstance(res.karyogram, np.ndarray) and (tmp_path / f"{path.stem}.karyogram.png").is_file()
    assert torch.is_grad_enabled()  # the pipeline's no-grad block does not leak


def test_the_walk_benchmark_counts_modules_crossings_and_returns():
    """benchmarks/bench_predict_walk.py's numbers from a call sequence: a -> b -> c, back to b from c
    twice (one return), a call within c (no crossing), a call from outside chromoseg (no crossing)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_predict_walk import walk

    calls = [(None, None, "a", "f"), ("a", "f", "b", "g"), ("b", "g", "c", "h"), ("c", "h", "c", "h2"),
             ("c", "h", "b", "g"), ("c", "h2", "b", "g2"), (None, None, "c", "h"), ("b", "g", "a", "f")]
    w = walk(calls)
    assert (w["modules"], w["crossings"], w["returns"]) == (3, 5, 2)
    assert w["first_entered"] == ["a", "b", "c"] and w["back_edges"] == {"c -> b": 2, "b -> a": 1}
    # where each return is made: the functions, with how many calls
    assert w["back_edge_calls"] == {"c -> b": {"h -> g": 1, "h2 -> g2": 1}, "b -> a": {"g -> f": 1}}
