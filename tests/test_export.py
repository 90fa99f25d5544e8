"""Exported (safetensors, fp16) models and the shipped default model."""
import json

import pytest
import torch

from chromoseg.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


def test_export_roundtrip_fp16(tiny, tmp_path):
    from safetensors import safe_open

    from chromoseg.engine.checkpoint import load_model

    out = tmp_path / "m.safetensors"
    assert main(["export", str(tiny), "--out", str(out)]) == 0
    assert out.stat().st_size < 0.6 * tiny.stat().st_size  # half precision
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
        assert f.get_tensor("roi_heads.box_head.fc6.weight").dtype == torch.float16
    assert meta["format"] == "chromoseg-model" and json.loads(meta["model_config"])["variant"] == "ermr"
    a, b = load_model(tiny), load_model(out)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sb[k].dtype == sa[k].dtype, k  # loaded back as float32
        torch.testing.assert_close(sb[k], sa[k], atol=2e-3, rtol=2e-3)
    x = [torch.rand(1, 128, 160, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        ha, hb = a(x)[0]["endpoint_heatmap"], b(x)[0]["endpoint_heatmap"]
    torch.testing.assert_close(hb, ha, atol=1e-3, rtol=1e-2)


def test_export_and_load_errors(tiny, tmp_path, capsys):
    from safetensors.torch import save_file

    from chromoseg.engine.checkpoint import load_model

    assert main(["export", str(tiny), "--out", str(tmp_path / "m.pt")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "none.pt" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors.*not a chromoseg model"):
        load_model(other)



def test_recommended_score_threshold_travels_with_the_file(tiny, tmp_path):
    """export --default-score-threshold T: predict and the Python API use T unless told otherwise; a file
    without it (or a checkpoint) gets the paper's 0.5."""
    from chromoseg.api import load_model as api_load
    from chromoseg.engine.predict import InferenceConfig, Predictor

    out = tmp_path / "m.safetensors"
    assert main(["export", str(tiny), "--out", str(out), "--default-score-threshold", "0.35"]) == 0
    assert Predictor.from_checkpoint(out, InferenceConfig(score_threshold=None)).cfg.score_threshold == 0.35
    told = Predictor.from_checkpoint(out, InferenceConfig(score_threshold=0.7))
    assert told.cfg.score_threshold == 0.7 and told.recommended_score_threshold == 0.35
    assert api_load(out).predictor.cfg.score_threshold == 0.35
    assert Predictor.from_checkpoint(tiny, InferenceConfig(score_threshold=None)).cfg.score_threshold == 0.5
    with pytest.raises(SystemExit) as e:  # argparse: not a probability
        main(["export", str(tiny), "--out", str(out), "--default-score-threshold", "1.5"])
    assert e.value.code == 2


def test_recommended_proposals_travel_with_the_file(tiny, tmp_path):
    """export --default-proposals N: the predictor's RPN keeps N proposals at test time (each level's
    top max(600, N) before NMS) unless told otherwise; without it the model keeps its own."""
    from chromoseg.engine.predict import InferenceConfig, Predictor

    out = tmp_path / "m.safetensors"
    assert main(["export", str(tiny), "--out", str(out), "--default-proposals", "1000"]) == 0
    rpn = Predictor.from_checkpoint(out).model.rpn
    assert (rpn.post_nms_top_n(), rpn.pre_nms_top_n()) == (1000, 1000)
    rpn = Predictor.from_checkpoint(out, InferenceConfig(proposals=200)).model.rpn
    assert (rpn.post_nms_top_n(), rpn.pre_nms_top_n()) == (200, 600)
    from chromoseg.engine.checkpoint import load_model

    own = load_model(tiny).eval().rpn
    rpn = Predictor.from_checkpoint(tiny).model.rpn
    assert (rpn.post_nms_top_n(), rpn.pre_nms_top_n()) == (own.post_nms_top_n(), own.pre_nms_top_n())
    with pytest.raises(SystemExit) as e:  # argparse: not a positive count
        main(["export", str(tiny), "--out", str(out), "--default-proposals", "0"])
    assert e.value.code == 2

def test_model_names_and_paths(tmp_path):
    from chromoseg.weights import DEFAULT, resolve_model, shipped_path

    assert resolve_model(None) == shipped_path(DEFAULT)
    assert resolve_model("mfish") == shipped_path("mfish")
    assert resolve_model("gband") == shipped_path("gband") and resolve_model("gband").name == "gband_ermr_r18.safetensors"
    with pytest.raises(FileNotFoundError, match="no shipped model of that name"):
        resolve_model("qband")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        resolve_model(tmp_path / "nowhere.pt")


def test_shipped_model_is_compact_and_documented():
    from chromoseg.engine.checkpoint import read_exported
    from chromoseg.weights import card_path, shipped_path

    path = shipped_path("mfish")
    assert path.stat().st_size <= 40_000_000
    state, meta = read_exported(path)
    cfg = json.loads(meta["model_config"])
    assert cfg["variant"] == "ermr" and cfg["num_classes"] == 24 and meta["default_score"] == "object"
    card = card_path("mfish").read_text()
    for needed in ("test split", "AP", "images/s", "command", "hardware"):
        assert needed in card, needed


def test_predict_default_model_on_the_example(tmp_path):
    from chromoseg.cli.demo import EXAMPLE

    img = next(EXAMPLE.glob("*/*D.tif"))
    assert main(["predict", str(img), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "p" / "images.json").read_text())
    assert meta["inference"]["score"] == "object"  # the shipped model's recommendation
    assert meta["images"][0]["file_name"].endswith("V1701XYD.tif")
    assert (tmp_path / "p" / "V1701XYD.karyogram.png").is_file()
    # the G-band model refuses a fluorescence image and names the right one: nothing done, exit 1
    assert main(["predict", str(img), "--model", "gband", "--out", str(tmp_path / "q")]) == 1
    assert "use --model mfish" in json.loads((tmp_path / "q" / "problems.json").read_text())[0]["problem"]


def test_shipped_gband_model_on_its_example(tmp_path):
    from chromoseg.engine.checkpoint import read_exported
    from chromoseg.cli.demo import EXAMPLE
    from chromoseg.weights import card_path, shipped_path

    path = shipped_path("gband")
    assert path.stat().st_size <= 40_000_000
    _, meta = read_exported(path)
    assert meta["stain"] == "brightfield" and json.loads(meta["model_config"])["invert"] is True
    assert 0 < float(meta["default_score_threshold"]) <= 0.5  # chosen on validation metaphases (see the card)
    card = card_path("gband").read_text()
    for needed in ("pseudo-masks", "AP", "command", "CIL", "Not trained on"):
        assert needed in card, needed
    img = EXAMPLE.parent / "cil-gband" / "103203.jpg"
    assert main(["predict", str(img), "--model", "auto", "--out", str(tmp_path / "g"), "--quiet"]) == 0
    res = json.loads((tmp_path / "g" / "results.json").read_text())
    assert len(res) >= 20  # a 46-chromosome metaphase: most of them found
    assert (tmp_path / "g" / "103203.karyogram.png").is_file() and (tmp_path / "g" / "103203.overlay.png").is_file()


def test_an_exported_training_run_records_its_stain_and_a_normal_file_mode(tiny, tmp_path):
    """A model exported from a `chromoseg train` run did not record its stain (so predict took G-band
    images into a fluorescence model without a word), and the file was written with mode 0600."""
    import os

    import numpy as np

    from chromoseg.engine.checkpoint import read_metadata
    from chromoseg.engine.predict import Predictor, polarity_problem

    ck = torch.load(tiny, weights_only=False)
    run = tmp_path / "best.pt"
    torch.save({**ck, "config": {"train": "datasets/mfish/train.json", "variant": "ermr"}, "epoch": 3}, run)
    out = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert read_metadata(out)["stain"] == "fluorescence"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".m.safetensors*"))
    gband_like = np.full((64, 64), 220, np.uint8)
    gband_like[20:40, 30:34] = 40
    assert polarity_problem(Predictor.from_checkpoint(out).stain, gband_like)
    assert main(["export", str(run), "--out", str(out), "--stain", "brightfield"]) == 0  # said explicitly: it wins
    assert read_metadata(out)["stain"] == "brightfield"


def test_an_export_names_no_path_of_the_machine(tiny, tmp_path, monkeypatch):
    """The training config in an export's metadata: absolute paths below the working folder made relative,
    below the home folder ``~/...``, elsewhere their last two parts; other values as they were."""
    from safetensors import safe_open

    from chromoseg.engine.checkpoint import load_checkpoint, portable_paths

    home, work = tmp_path / "home", tmp_path / "home" / "repo"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    ck = load_checkpoint(tiny)
    ck["config"] = {"train": str(work / "datasets" / "fit.json"), "out": str(home / "runs" / "s6"),
                    "init_weights": "/elsewhere/a/b/best.pt", "extra_train": [str(work / "synth.json")],
                    "lr": 0.004, "image_size": [512, 512], "stain": "brightfield"}
    torch.save(ck, tmp_path / "ck.pt")
    assert main(["export", str(tmp_path / "ck.pt"), "--out", str(tmp_path / "m.safetensors")]) == 0
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        cfg = json.loads(f.metadata()["train_config"])
    assert cfg == {"train": "datasets/fit.json", "out": "~/runs/s6", "init_weights": ".../b/best.pt",
                   "extra_train": ["synth.json"], "lr": 0.004, "image_size": [512, 512], "stain": "brightfield"}
    assert portable_paths(ck["config"]) is not ck["config"] and ck["config"]["out"].startswith("/")
