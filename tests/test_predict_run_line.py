"""chromoseg predict's last lines and its bad-input refusal (issue 30): the run's line counts what the
not-a-chromosome rule left out apart from the chromosomes, and a missing input is refused before torch
is imported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]


def test_the_run_line_does_not_count_a_nucleus_as_a_chromosome(tmp_path, capsys):
    """The synthetic metaphase of 46 chromosomes with a nucleus called a 2: the report said 46
    chromosomes and the nucleus left out, the run's line '47 chromosomes'."""
    import json

    import test_karyotype_nucleus as tkn
    from PIL import Image

    from chromoseg.cli import EXIT_OK, main

    image = tmp_path / "nucleus.png"
    Image.fromarray(tkn.nucleus_image(tkn.with_nucleus(tkn.metaphase()))).save(image)
    out = tmp_path / "pred"
    with mock.patch("chromoseg.engine.predict.Predictor.from_checkpoint", lambda *a, **kw: tkn.FakePredictor()), \
            mock.patch("chromoseg.engine.pipeline.select_instances", lambda det, cfg: det), \
            mock.patch("chromoseg.engine.pipeline.assign_classes", lambda model, image, insts, cfg, device: insts):
        assert main(["predict", str(image), "--model", "fake.pt", "--out", str(out), "--quiet"]) == EXIT_OK
        said = capsys.readouterr().out
        assert "this run: 1 image(s), 46 chromosomes (+1 left out as not chromosomes" in said, said
        assert "47 chromosomes" not in said
        results = json.loads((out / "results.json").read_text())
        assert len(results) == 47 and sum(1 for r in results if r.get("not_chromosome")) == 1
        # a second image continued with --skip-existing: this run's and the folder's counts
        (tmp_path / "more").mkdir()
        Image.open(image).save(tmp_path / "more" / "second.png")
        assert main(["predict", str(image), str(tmp_path / "more" / "second.png"), "--model", "fake.pt",
                     "--out", str(out), "--quiet", "--skip-existing"]) == EXIT_OK
        said = capsys.readouterr().out
        assert ("this run: 1 image(s), 46 chromosomes (+1 left out as not chromosomes: nuclei?), 0 skipped; with the "
                "1 done before, 2 image(s) and 92 chromosomes (+2 left out") in said, said


def test_a_missing_input_is_refused_before_torch_is_imported(tmp_path):
    """A missing file, an empty folder: exit 2 with one line, without importing torch (which took a
    minute on a busy machine before the one line came)."""
    (tmp_path / "empty").mkdir()
    code = ("import sys\n"
            "from chromoseg.cli import main\n"
            "rcs = [main(['predict', a, '--out', sys.argv[1] + '/out']) for a in sys.argv[2:]]\n"
            "print('rcs', rcs, 'torch' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "nope.tif"),
                          str(tmp_path / "empty")], capture_output=True, text=True, env=env, timeout=600)
    assert "rcs [2, 2] False" in run.stdout, run.stdout + run.stderr
    assert "no such file or folder" in run.stderr and "a folder with no image files" in run.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_line_counts_no_nucleus_as_a_chromosome(tmp_path):
    """The demo printed images.json's detection count as 'N chromosomes', the nucleus included."""
    import test_karyotype_nucleus as tkn

    from chromoseg.cli.demo import chromosome_counts

    out = tkn.predict_nucleus_folder(tmp_path / "k")
    assert chromosome_counts(out) == {1: "46 chromosomes (+1 left out as not chromosomes: nuclei?)"}
    assert chromosome_counts(tmp_path / "nothing") == {}
