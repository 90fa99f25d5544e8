"""chromoseg benchmark table1/table2: the paper's tables from checkpoints and an annotated split."""
import json

import pytest

from chromoseg.cli import main


def test_table2_end_to_end(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.data.importers.mfish import import_mfish
    from chromoseg.cli.demo import EXAMPLE

    import_mfish(EXAMPLE, tmp_path / "ex", progress=False)  # a one-image annotated set
    gt = tmp_path / "ex" / "all.json"
    args = ["benchmark", "table2", "--data", str(gt), "--out", str(tmp_path / "res"), "--work", str(tmp_path / "w"),
            "--quiet"]
    for v in ("rmr", "erm2", "erm3", "ermr"):
        args += ["--model", f"{v}={make_tiny_checkpoint(tmp_path / f'{v}.pt', v)}"]
    assert main(args) == 0
    rep = json.loads((tmp_path / "res" / "table2.json").read_text())
    assert set(rep["rows"]) == {"rmr", "erm2", "erm3", "ermr"} and rep["images"] == 1
    for row in rep["rows"].values():
        # untrained tiny models: no detection reaches the paper's 0.5, so AP at that threshold is 0;
        # without a threshold COCO's AP of random boxes on a real image is far below 5 points
        assert row["results"]["0.5"]["multi"]["AP"] == 0.0
        ap0 = row["results"]["0.0"]["multi"]["AP"]
        assert ap0 is not None and 0.0 <= ap0 < 0.05
    md = (tmp_path / "res" / "table2.md").read_text()
    assert "47.87" in md and "ERM-3 (H&R)" in md and "hardware" in md


def test_table1_with_snake_and_a_binary_column(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.data.importers.mfish import import_mfish
    from chromoseg.cli.demo import EXAMPLE

    import_mfish(EXAMPLE, tmp_path / "ex", progress=False)
    gt = tmp_path / "ex" / "all.json"
    args = ["benchmark", "table1", "--data", str(gt), "--binary-data", str(gt), "--out", str(tmp_path / "res"),
            "--work", str(tmp_path / "w"), "--quiet"]
    for v in ("snake", "mr", "rmr", "ermr"):
        args += ["--model", f"{v}={make_tiny_checkpoint(tmp_path / f'{v}.pt', v)}"]
    assert main(args) == 0
    rep = json.loads((tmp_path / "res" / "table1.json").read_text())
    assert set(rep["rows"]) == {"snake", "mr", "rmr", "ermr"}
    assert all(set(r["binary_extra"]) == {"0.5", "0.0"} for r in rep["rows"].values())
    md = (tmp_path / "res" / "table1.md").read_text()
    assert "| Deep Snake | multi |" in md and "47.01" in md and "Binary (class-agnostic)" in md


def test_missing_variant_is_a_clear_error(tmp_path, capsys):
    assert main(["benchmark", "table1", "--model", "mr=x.pt", "--data", "nowhere.json", "--out", str(tmp_path)]) == 2
    assert "rmr" in capsys.readouterr().err
