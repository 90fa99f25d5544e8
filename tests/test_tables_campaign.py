"""benchmarks/tables_campaign.py's bookkeeping (no training): when a network is finished, how many
whole epochs a stretch asks for, the queue and the one recipe. The end-to-end check (tiny networks)
is the command in the script's header."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import tables_campaign as tc  # noqa: E402


def write_run(run: Path, lines: list[dict], last_pt: bool = True) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if last_pt:
        (run / "last.pt").write_bytes(b"")
    return run


def epoch(n, best_epoch, best=0.2, **kw):
    return {"epoch": n, "train/images": 10, "train/seconds": 5.0, "train/images_per_s": 2.0, "val/ap_seconds": 1.0,
            "monitored": "val/mask_ap_coco", "best": best, "best_epoch": best_epoch, **kw}


def test_run_state_finished_by_early_stop_or_the_cap_and_training_otherwise(tmp_path):
    assert tc.run_state(tmp_path / "none", 100)["state"] == "queued"
    start = {"event": "start", "epoch": 0}
    st = tc.run_state(write_run(tmp_path / "a", [start, epoch(1, 1), epoch(2, 1)]), 100)
    assert st["state"] == "training" and st["epochs"] == 2 and st["reason"] is None
    assert st["train_images_per_s"] == 2.0 and st["train_minutes"] == 10 / 60
    st = tc.run_state(write_run(tmp_path / "b", [start, epoch(1, 1), epoch(2, 1), {"event": "early_stop", "epoch": 2}]), 100)
    assert st["state"] == "finished" and st["reason"] == "early stopping" and st["best_epoch"] == 1
    # the cap: recorded by train (event "epochs"), or the last epoch is the cap
    st = tc.run_state(write_run(tmp_path / "c", [start, epoch(1, 1), epoch(2, 2), {"event": "epochs", "epoch": 2}]), 2)
    assert st["state"] == "finished" and st["reason"] == "epoch cap"
    assert tc.run_state(write_run(tmp_path / "d", [start, epoch(1, 1), epoch(2, 2)]), 2)["reason"] == "epoch cap"
    # a stretch that asked for fewer epochs ends without an end event: still training
    assert tc.run_state(write_run(tmp_path / "e", [start, epoch(1, 1), {"event": "resume", "epoch": 1},
                                                   epoch(2, 2)]), 3)["state"] == "training"
    # a partial epoch (the safety time limit) is counted apart and not in images/s; a line cut by a kill is skipped
    run = write_run(tmp_path / "f", [start, epoch(1, 1), epoch(2, 1, **{"train/partial": True, "train/images": 1,
                                                                        "train/seconds": 100.0})])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train/')
    st = tc.run_state(run, 100)
    assert st["epochs"] == 2 and st["partial_epochs"] == 1 and st["train_images_per_s"] == 2.0


def test_whole_epochs_that_fit_in_the_budget():
    stretches = [{"seed": 0, "variant": "mr", "wall_s": 600.0, "epochs_run": 3},
                 {"seed": 0, "variant": "mr", "wall_s": 400.0, "epochs_run": 2},
                 {"seed": 0, "variant": "ermr", "wall_s": 50.0, "epochs_run": 0}]
    assert tc.seconds_per_epoch(stretches, 0, "mr") == 200.0
    assert tc.seconds_per_epoch(stretches, 0, "ermr") is None and tc.seconds_per_epoch(stretches, 1, "mr") is None
    assert tc.plan_epochs(1000.0, 200.0, 480) == 5 and tc.plan_epochs(199.0, 200.0, 480) == 0
    assert tc.plan_epochs(1000.0, None, 480) == 1 and tc.plan_epochs(400.0, None, 480) == 0  # measured first
    assert tc.stretch_minutes(stretches, 0, "mr") == 1000 / 60


def test_one_recipe_and_the_queue():
    six = {"snake", "mr", "rmr", "erm2", "erm3", "ermr"}
    assert {v for s, v in tc.QUEUE if s == 0} == six and len(tc.QUEUE) == len(set(tc.QUEUE))
    assert [k for k in tc.QUEUE if k[0] == 1] == [(1, "mr"), (1, "ermr")]  # the second seed after the six
    assert tc.QUEUE.index((0, "snake")) < tc.QUEUE.index((1, "mr"))
    r = tc.RECIPE
    assert r["early_stop_metric"] == "mask_ap_coco" and r["val_score"] == "class" and r["patience"] >= 10
    assert (r["backbone"], r["compact"], r["image_size"], r["lr_schedule"]) == ("resnet18", True, "480x384", "constant")
    assert set(tc.TINY) == set(tc.RECIPE)
    assert tc.tilde(str(Path.home() / "x")) == "~/x" and tc.tilde(str(REPO / "benchmarks")) == "benchmarks"
