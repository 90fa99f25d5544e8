"""Bad or odd input never costs a user their results: one clear line, the batch goes on."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chromoseg.cli import EXIT_NOTHING_DONE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, main
from chromoseg.data.io import ImageReadError, bit_depth, list_images, read_image, to_float01
from chromoseg.engine import predict as predict_mod
from chromoseg.engine.predict import InferenceConfig, Predictor, predict_paths

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.fixture()
def predictor(tiny_checkpoint):
    return Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0))


def _small_copy(dst: Path, name: str) -> Path:
    """A 160 x 128 crop of the example (fast for the tiny model)."""
    from PIL import Image

    arr = read_image(EXAMPLE)[100:228, 200:360]
    p = dst / name
    Image.fromarray(arr).save(p)
    return p


def test_too_large_image_is_refused_and_the_good_one_kept(predictor, tmp_path, monkeypatch):
    good = _small_copy(tmp_path, "good.png")
    big = tmp_path / "big.png"
    from PIL import Image

    Image.fromarray(np.zeros((300, 400), np.uint8)).save(big)
    from chromoseg.engine import pipeline

    monkeypatch.setattr(pipeline, "MAX_IMAGE_PIXELS", 200 * 200)  # the real limit, scaled down
    s = predict_paths(predictor, [big, good], tmp_path / "out", progress=False)
    assert s["images"] == 1 and s["skipped"] == 1
    probs = json.loads((tmp_path / "out" / "problems.json").read_text())
    assert probs[0]["file"] == str(big) and "too large" in probs[0]["problem"] and "400x300" in probs[0]["problem"]
    meta = json.loads((tmp_path / "out" / "images.json").read_text())
    assert [im["file_name"] for im in meta["images"]] == [str(good)]
    assert (tmp_path / "out" / "report.csv").read_text().count("good.png") == 1


def test_model_failure_skips_that_image_only(predictor, tmp_path):
    good = _small_copy(tmp_path, "good.png")
    bad = _small_copy(tmp_path, "bad.png")
    real = predictor.model.forward

    def flaky(images, targets=None):
        flaky.calls += 1
        if flaky.calls == 1:
            raise RuntimeError("not enough memory: you tried to allocate 40 GB")
        return real(images, targets)

    flaky.calls = 0
    predictor.model.forward = flaky
    s = predict_paths(predictor, [bad, good], tmp_path / "out", progress=False)
    assert s["images"] == 1 and s["skipped_files"] == [str(bad)]
    assert "not enough memory" in (tmp_path / "out" / "problems.json").read_text()


def test_twelve_bit_data_is_read_at_its_real_depth(tmp_path):
    import tifffile

    a8 = read_image(EXAMPLE)
    a12 = (a8.astype(np.uint32) * 4095 // 255).astype(np.uint16)  # what a 12-bit camera writes
    a16 = (a8.astype(np.uint16) * 257).astype(np.uint16)
    tifffile.imwrite(tmp_path / "12.tif", a12)
    tifffile.imwrite(tmp_path / "16.tif", a16)
    r12, r16 = read_image(tmp_path / "12.tif"), read_image(tmp_path / "16.tif")
    assert r12.dtype == np.uint16 and bit_depth(r12) == 12 and bit_depth(r16) == 16 and bit_depth(a8) == 8
    f8, f12, f16 = to_float01(a8), to_float01(r12), to_float01(r16)
    assert np.abs(f12 - f8).max() < 1.5 / 255 and np.abs(f16 - f8).max() < 1e-6
    assert bit_depth(np.array([[1000]], np.uint16)) == 12 and bit_depth(np.array([[300]], np.uint16)) == 12
    assert bit_depth(np.array([[200]], np.uint16)) == 8 and bit_depth(np.array([[16000]], np.uint16)) == 14


def test_truncated_tiff_says_truncated(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "full.tif", (np.arange(200 * 300) % 4096).reshape(200, 300).astype(np.uint16))
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(tmp_path / "cut.tif")
    assert "finite" not in str(info.value) and str(tmp_path / "cut.tif") in str(info.value)


def test_broken_link_in_a_folder_is_reported(predictor, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = _small_copy(folder, "good.png")
    os.symlink(folder / "gone.tif", folder / "link.tif")
    paths = list_images([folder])
    assert folder / "link.tif" in paths and good in paths
    s = predict_paths(predictor, paths, tmp_path / "out", progress=False)
    assert s["images"] == 1 and s["skipped"] == 1
    probs = json.loads((tmp_path / "out" / "problems.json").read_text())
    assert probs[0]["file"].endswith("link.tif") and "broken symbolic link" in probs[0]["problem"]


def test_killed_batch_leaves_valid_files_and_a_rerun_finishes_it(predictor, tmp_path):
    a = _small_copy(tmp_path, "a.png")
    b = _small_copy(tmp_path, "b.png")
    real = Predictor.run_model  # the network's call, inside the per-image pipeline
    calls = {"n": 0}

    def dies_on_second(self, images, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # what a kill looks like from inside: nothing after this runs
        return real(self, images, *a, **kw)

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Predictor, "run_model", dies_on_second)
        with pytest.raises(KeyboardInterrupt):
            predict_paths(predictor, [a, b], out, progress=False)
    meta = json.loads((out / "images.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert [im["file_name"] for im in meta["images"]] == [str(a)]
    assert all(r["file_name"] == str(a) for r in results)
    assert all(f.stat().st_size > 0 for f in out.iterdir()) and not list(out.glob("*.tmp"))
    assert not (out / "b.overlay.png").exists()
    s = predict_paths(predictor, [a, b], out, progress=False, skip_existing=True)
    assert s["images"] == 1 and s["already_done"] == 1
    meta = json.loads((out / "images.json").read_text())
    assert [im["file_name"] for im in meta["images"]] == [str(a), str(b)]
    csv = (out / "report.csv").read_text()
    assert "a.png" in csv and "b.png" in csv


def test_exit_status_says_what_was_done(tiny_checkpoint, tmp_path, capsys):
    good = _small_copy(tmp_path, "good.png")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not an image")
    common = ["--model", str(tiny_checkpoint), "--score-threshold", "0", "--quiet", "--no-karyogram"]
    assert main(["predict", str(good), "--out", str(tmp_path / "o1")] + common) == EXIT_OK
    assert main(["predict", str(good), str(bad), "--out", str(tmp_path / "o2")] + common) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert f"skipped: {bad}" in err
    assert main(["predict", str(bad), "--out", str(tmp_path / "o3")] + common) == EXIT_NOTHING_DONE


@pytest.mark.parametrize("argv, word", [
    (["train", "--data", ".", "--lr", "-1"], "--lr"),
    (["train", "--data", ".", "--image-size", "0x0"], "--image-size"),
    (["train", "--data", ".", "--epochs", "0"], "--epochs"),
    (["train", "--data", ".", "--batch-size", "two"], "--batch-size"),
    (["predict", "x.tif", "--score-threshold", "1.5"], "--score-threshold"),
    (["predict", "x.tif", "--top-k", "0"], "--top-k"),
    (["predict", "x.tif", "--mask-nms-iou", "nan"], "--mask-nms-iou"),
    (["evaluate", "a.json", "b.json", "--max-dets", "-3"], "--max-dets"),
])
def test_numeric_options_are_checked_by_argparse(argv, word, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert word in err[-1] and "Traceback" not in "\n".join(err)


def test_every_command_module_registers(monkeypatch):
    """A command module that fails to import fails the CLI, instead of a silently lost command."""
    import chromoseg.cli as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"demo", "data", "train", "pretrain", "export", "predict", "evaluate", "benchmark",
            "karyogram"} <= set(sub.choices)
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("chromoseg.no_such_module",))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_image_of_the_wrong_polarity_is_refused(predictor, tmp_path):
    from PIL import Image

    from chromoseg.data.io import light_background

    good = _small_copy(tmp_path, "dapi.png")
    gband = tmp_path / "gband.png"
    Image.fromarray(255 - read_image(good)).save(gband)  # dark chromosomes on a light background
    assert light_background(read_image(gband)) and not light_background(read_image(good))
    predictor.stain = "fluorescence"
    s = predict_paths(predictor, [gband, good], tmp_path / "out", progress=False)
    assert s["images"] == 1 and s["skipped_files"] == [str(gband)]
    msg = json.loads((tmp_path / "out" / "problems.json").read_text())[0]["problem"]
    assert "dark on a light background" in msg and "fluorescence" in msg


def test_auto_sends_each_image_to_the_model_of_its_stain(tiny_checkpoint, tmp_path):
    from PIL import Image

    from chromoseg.engine.predict import StainRouter

    dapi = _small_copy(tmp_path, "dapi.png")
    gband = tmp_path / "gband.png"
    Image.fromarray(255 - read_image(dapi)).save(gband)
    seen = {}

    def recording(stain):
        p = Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0))
        p.stain = stain
        real = p.__class__.run_model  # the pipeline's model call (each image of a router alone)
        p.__class__ = type("Recording", (Predictor,), {"run_model": lambda self, imgs, *a, **kw: (
            seen.setdefault(stain, []).append(len(imgs)), real(self, imgs, *a, **kw))[1]})
        return p

    router = StainRouter({"fluorescence": recording("fluorescence"), "brightfield": recording("brightfield")})
    s = predict_paths(router, [gband, dapi, gband], tmp_path / "out", progress=False)
    assert s["images"] == 3 and s["skipped"] == 0  # no image is refused for its polarity
    assert seen == {"brightfield": [1, 1], "fluorescence": [1]}


@pytest.mark.realdata
def test_polarity_of_the_real_stains():
    import glob

    from conftest import require_data

    from chromoseg.data.io import light_background

    root = require_data()
    cil = sorted(glob.glob(str(root / "cil-gband" / "images" / "*")))[:5]
    dapi = sorted(glob.glob(str(root / "adir-mfish" / "*" / "*D.tif")))[:5]
    assert cil and dapi
    assert all(light_background(read_image(f)) for f in cil)
    assert not any(light_background(read_image(f)) for f in dapi)


def test_shipped_model_knows_its_stain():
    from chromoseg.weights import resolve_model

    assert Predictor.from_checkpoint("mfish").stain == "fluorescence" and resolve_model("auto") == resolve_model(None)


def _label_map(dst: Path, name: str) -> Path:
    """A class map like the M-FISH expert's *K.tif: 0 background, classes 1-24, 255 where two overlap."""
    from PIL import Image

    lab = np.zeros((128, 160), np.uint8)
    for c in range(1, 25):
        lab[4 + 5 * (c % 12): 7 + 5 * (c % 12), 6 * c: 6 * c + 4] = c
    lab[60:64, 60:70] = 255
    Image.fromarray(lab).save(dst / name)
    return dst / name


def test_a_slide_folder_predicts_only_its_metaphases(predictor, tmp_path, capsys, tiny_checkpoint):
    """A folder like ``adir-mfish/A03__13`` holds the metaphases (*D.tif) beside the expert's label maps
    (*K.tif): the label maps, and predict's own outputs, are left out with a note, not predicted."""
    from chromoseg.engine.predict import not_a_metaphase

    folder = tmp_path / "slide"
    folder.mkdir()
    good = _small_copy(folder, "A0101D.png")
    lab = _label_map(folder, "A0101K.png")
    shutil.copy(good, folder / "A0101D.overlay.png")  # an earlier run's output in the same folder
    assert not_a_metaphase(good, read_image(good)) is None
    assert "label map" in not_a_metaphase(lab, read_image(lab))
    s = predict_paths(predictor, list_images([folder]), tmp_path / "out", progress=False)
    assert s["images"] == 1 and s["skipped"] == 0
    assert sorted(Path(n["file"]).name for n in s["not_metaphases"]) == ["A0101D.overlay.png", "A0101K.png"]
    meta = json.loads((tmp_path / "out" / "images.json").read_text())
    assert [im["file_name"] for im in meta["images"]] == [str(good)] and len(meta["not_metaphases"]) == 2
    # the CLI: the folder gives exit 0 and a note; a label map named on the command line is a problem
    common = ["--model", str(tiny_checkpoint), "--score-threshold", "0", "--quiet", "--no-karyogram"]
    assert main(["predict", str(folder), "--out", str(tmp_path / "o1")] + common) == EXIT_OK
    assert "left out 2 file(s) that are not metaphase images" in capsys.readouterr().out
    assert main(["predict", str(good), str(lab), "--out", str(tmp_path / "o2")] + common) == EXIT_PARTIAL
    assert f"skipped: {lab}" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_label_maps_are_not_metaphases():
    from conftest import require_data

    from chromoseg.engine.predict import not_a_metaphase

    slide = require_data("adir-mfish", "A03__13")
    found = list_images([slide])
    kept = [p for p in found if not_a_metaphase(p, read_image(p)) is None]
    assert kept and all(p.name.endswith("D.tif") for p in kept) and len(kept) * 2 == len(found)
    root = require_data()
    for pattern in ("cil-gband/images/*.jpg", "karyogram-pairs/a/*.TIF"):
        some = sorted(root.glob(pattern))[:3]
        assert some and all(not_a_metaphase(p, read_image(p)) is None for p in some)


def test_unusable_inputs_exit_2_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """A missing file, an empty folder, a glob matching nothing: exit 2 with one line, before the model
    loads and before the output folder is made (README: 2 = a bad command line or unusable input)."""
    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Predictor, "from_checkpoint", no_model)
    good = _small_copy(tmp_path, "good.png")
    (tmp_path / "empty").mkdir()
    for inputs, says in [([str(tmp_path / "missing.tif")], "no such file"),
                         ([str(good), str(tmp_path / "missing.tif")], "no such file"),
                         ([str(tmp_path / "empty")], "no image files"),
                         ([str(tmp_path / "*.bmp")], "matches")]:
        assert main(["predict", *inputs, "--out", str(tmp_path / "o")]) == EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0]
        assert not (tmp_path / "o").exists()


def test_a_continued_run_keeps_each_images_model_and_settings(tiny_checkpoint, tmp_path, capsys):
    """--skip-existing with another --score-threshold: the earlier images keep the settings they were
    made with (images.json records the model and the settings per image), and the summary counts this
    run's chromosomes apart from the folder's total."""
    a = _small_copy(tmp_path, "a.png")
    b = _small_copy(tmp_path, "b.png")
    out = tmp_path / "out"
    common = ["--model", str(tiny_checkpoint), "--score", "object", "--quiet", "--no-karyogram", "--out", str(out)]
    assert main(["predict", str(a), "--score-threshold", "0"] + common) == EXIT_OK
    first = json.loads((out / "images.json").read_text())
    assert first["inference"]["score_threshold"] == 0.0 and first["model"]["file"] == str(tiny_checkpoint)
    n_a = len(json.loads((out / "results.json").read_text()))
    capsys.readouterr()
    assert main(["predict", str(a), str(b), "--skip-existing", "--score-threshold", "0.6"] + common) == EXIT_OK
    meta = json.loads((out / "images.json").read_text())
    by_name = {Path(im["file_name"]).name: im for im in meta["images"]}
    assert by_name["a.png"]["inference"]["score_threshold"] == 0.0
    assert by_name["b.png"]["inference"]["score_threshold"] == 0.6
    for im in meta["images"]:
        assert im["model"]["file"] == str(tiny_checkpoint) and len(im["model"]["sha256"]) == 16
    assert "inference" not in meta and "different" in meta["settings_differ"]
    results = json.loads((out / "results.json").read_text())
    n_b = len(results) - n_a
    # counted as the report counts them: what the not-a-chromosome rule marked is said apart
    kept_a = sum(1 for r in results[:n_a] if not r.get("not_chromosome"))
    kept_b = sum(1 for r in results[n_a:] if not r.get("not_chromosome"))
    said = capsys.readouterr().out
    assert f"this run: 1 image(s), {kept_b} chromosomes" in said
    assert f"2 image(s) and {kept_a + kept_b} chromosomes" in said and "in all" in said
    assert n_b - kept_b == 0 or f"(+{n_b - kept_b} left out as not chromosomes" in said
    assert "different models or settings" in said and "score >= 0.6" in said and "score >= 0" in said


def test_strip_tags_listing_a_strip_that_is_not_there_are_kept_as_a_warning(tiny_checkpoint, tmp_path, capsys):
    """Another lab's TIFFs list a second strip that is not in the file: predicted as their plain twin,
    each reader warning in problems.json as kept (not skipped), and the exit status is 0."""
    import tifffile
    from test_data_io_tiff import list_a_strip_that_is_not_there

    crop = read_image(EXAMPLE)[100:228, 200:360]
    odd = tmp_path / "odd.tif"
    tifffile.imwrite(odd, crop, rowsperstrip=crop.shape[0])
    list_a_strip_that_is_not_there(odd)
    good = _small_copy(tmp_path, "good.png")
    out = tmp_path / "out"
    common = ["--model", str(tiny_checkpoint), "--score-threshold", "0", "--quiet", "--no-karyogram", "--out", str(out)]
    assert main(["predict", str(odd), str(good)] + common) == EXIT_OK
    said = capsys.readouterr()
    assert "skipped:" not in said.err and "0 skipped" in said.out
    assert "warned about 1 file(s) that were used all the same (odd.tif)" in said.out
    probs = json.loads((out / "problems.json").read_text())
    assert probs and all(p["file"] == str(odd) and p["action"] == "kept" and p["kind"] == "read-warning" for p in probs)
    text = " | ".join(p["problem"] for p in probs)
    assert "incorrect StripOffsets count (2 != 1)" in text and "beyond the end of the file" in text
    meta = json.loads((out / "images.json").read_text())
    assert [Path(im["file_name"]).name for im in meta["images"]] == ["odd.tif", "good.png"]
    assert meta["images"][0]["channel"] == "grey" and meta["images"][0]["pixel_size_um"] is None
    # a warning beside a real skip: exit 3 for the skip only, and only the skipped file is listed
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not an image")
    s = predict_paths(Predictor.from_checkpoint(tiny_checkpoint, InferenceConfig(score_threshold=0.0)), [odd, bad],
                      tmp_path / "out2", progress=False)
    assert s["skipped"] == 1 and s["skipped_files"] == [str(bad)] and s["warnings"] >= 2
    assert s["warned_files"] == [str(odd)] and s["images"] == 1
    assert main(["predict", str(odd), str(bad), "--out", str(tmp_path / "out3")] + common[:-2]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert f"skipped: {bad}" in err and f"skipped: {odd}" not in err
