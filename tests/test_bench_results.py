"""benchmarks/_results.py: a results file never names a path of the machine it ran on."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _results import shown  # noqa: E402


def test_shown_paths_name_no_machine_path(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    run = tmp_path / "chromoseg-runs" / "x" / "best.pt"
    run.parent.mkdir(parents=True)
    run.write_bytes(b"")
    assert shown(run) == "~/chromoseg-runs/x/best.pt"
    assert shown(REPO / "README.md") == "README.md"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: REPO.parent))  # a checkout inside the home folder
    assert shown(REPO / "README.md") == "README.md"
    assert shown("mfish") == "mfish"  # a shipped model's name stays a name
