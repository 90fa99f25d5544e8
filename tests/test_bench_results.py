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


def test_bench_gband_scores_what_predict_writes_at_a_threshold():
    """bench_gband predicts every candidate (score threshold 0) once; at a threshold it must score what
    `predict` writes at that threshold: the same detections, with karyotype-aware classes chosen over
    the kept ones only (the shipped G-band model on the shipped example)."""
    from bench_gband import as_predicted

    from chromoseg.data.io import read_image
    from chromoseg.engine.predict import Predictor, instances_to_results

    img = read_image(REPO / "examples" / "cil-gband" / "103203.jpg")
    predictor = Predictor.from_checkpoint("gband", {"score_threshold": 0.0})
    assert predictor.cfg.classes == "karyotype"
    every = instances_to_results(predictor([img])[0], 1, "103203.jpg")
    for thr in (0.3, 0.6):
        written = instances_to_results(predictor([img], score_threshold=thr)[0], 1, "103203.jpg")
        derived = as_predicted(every, thr, karyotype=True)
        assert len(written) == len(derived) > 0
        assert [(r["category_id"], r["score"], r["bbox"]) for r in written] == \
            [(r["category_id"], r["score"], r["bbox"]) for r in derived]


def test_bench_gband_threshold_frees_the_slots_of_dropped_candidates():
    """Two sure 1s and a weak candidate that is also most like a 1: over all three, the weak one takes a
    class-1 slot and pushes a sure one into class 2; at threshold 0.5 both sure ones are 1s."""
    import numpy as np
    from pycocotools import mask as mask_utils
    from bench_gband import as_predicted

    def det(score, p1, x):
        m = np.zeros((64, 64), np.uint8, order="F")
        m[10:50, x:x + 4] = 1
        rle = mask_utils.encode(m)
        p = [0.0] * 24
        p[0], p[1] = p1, 1 - p1
        return {"image_id": 1, "score": score, "category_id": 1, "class_scores": p, "segmentation": rle}

    res = [det(0.9, 0.9, 5), det(0.8, 0.8, 15), det(0.2, 0.999, 25)]
    assert sorted(r["category_id"] for r in as_predicted(res, 0.0, True)) == [1, 1, 2]
    assert [r["category_id"] for r in as_predicted(res, 0.5, True)] == [1, 1]
    assert [r["category_id"] for r in as_predicted(res, 0.5, False)] == [1, 1]
