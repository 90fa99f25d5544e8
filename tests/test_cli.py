"""The chromoseg command: help, data import/show on the shipped example, errors."""
import subprocess
import sys
from pathlib import Path

from chromoseg.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "data", "evaluate"):
        assert cmd in out


def test_demo_and_show(tmp_path):
    """The README's first command: the shipped model on the shipped example, plus the expert reference."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    d = tmp_path / "demo"
    for name in ("V1701XYD.overlay.png", "V1701XYD.karyogram.png", "report.html", "report.csv", "results.json"):
        assert (d / name).stat().st_size > 0, name
    import csv
    import json

    (model_row,) = csv.DictReader((d / "report.csv").open())
    (expert_row,) = csv.DictReader((d / "expert" / "report.csv").open())
    # the summary columns are computed, not copied from the truth column
    assert expert_row["summary"] == "46,XY" and expert_row["total"] == "46" and expert_row["n_1"] == "2"
    n_found = len(json.loads((d / "results.json").read_text()))
    assert model_row["image"] == "V1701XYD.tif" and model_row["truth"] == "46,XY"
    assert model_row["total"] == str(n_found) and model_row["summary"].split(",")[0] == str(n_found)
    assert (d / "gband" / "103203.karyogram.png").stat().st_size > 0  # the G-band example with the G-band model
    # --model auto (the demo's default, as predict's): each example went to the model of its stain
    names = [json.loads((f / "images.json").read_text())["images"][0]["model"]["name"] for f in (d, d / "gband")]
    assert names == ["mfish", "gband"]
    # the demo is `chromoseg predict` with its defaults (the model file's recommended score threshold too)
    from chromoseg.cli.demo import EXAMPLE

    assert main(["predict", str(EXAMPLE / "V17__XY" / "V1701XYD.tif"), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    assert len(json.loads((tmp_path / "p" / "results.json").read_text())) == n_found
    gt = d / "expert" / "dataset" / "all.json"
    assert main(["data", "show", str(gt), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert (tmp_path / "s" / "V1701XYD.png").stat().st_size > 10_000
    assert main(["data", "check", str(gt)]) == 0


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["data", "import", "mfish", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["data", "show", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2


def test_console_script_runs():
    exe = Path(sys.executable).with_name("chromoseg")
    out = subprocess.run([str(exe), "data", "import", "--help"], capture_output=True, text=True, check=True).stdout
    assert "mfish" in out and "voc" in out


def test_a_mistyped_option_gets_the_commands_usage_and_a_hint(capsys):
    """`predict mixed --ouput x` answered with the top-level usage; now predict's, naming --out."""
    import pytest

    for argv, usage, hint in [(["predict", "mixed", "--ouput", "x"], "usage: chromoseg predict", "did you mean --out?"),
                              (["data", "import", "mfish", "a", "--out", "b", "--limt", "3"],
                               "usage: chromoseg data import", "did you mean --limit?")]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and usage in err and "unrecognized arguments" in err and hint in err


def test_train_help_examples_are_w_by_h_like_the_default(capsys):
    """The example's --image-size 256x320 was portrait against the 640x512 (W x H) default."""
    import re

    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    sizes = re.findall(r"--image-size (\d+)x(\d+)", capsys.readouterr().out)
    assert sizes and all(int(w) * 512 == int(h) * 640 for w, h in sizes)


def test_ctrl_c_in_predict_says_how_to_continue(tmp_path, capsys, monkeypatch):
    import json

    from chromoseg.engine import predict as predict_mod

    def interrupted(predictor, paths, out, **kw):
        Path(out).mkdir(parents=True)
        (Path(out) / "images.json").write_text(json.dumps({"images": [{"id": 1, "file_name": str(paths[0])}]}))
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_mod.Predictor, "from_checkpoint", classmethod(lambda cls, *a, **k: object()))
    monkeypatch.setattr(predict_mod, "predict_paths", interrupted)
    image = REPO / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"
    assert main(["predict", str(image), "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert "interrupted: the 1 image(s) finished so far are saved" in err and "--skip-existing" in err
