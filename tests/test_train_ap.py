"""Validation by AP in ``chromoseg train``: the AP pass, early stopping on an AP (higher is better),
best.pt chosen by it, --val-every, resume, and the annotators' boxes for box AP."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from test_train import tiny_cfg, write_set

REPO = Path(__file__).resolve().parents[1]
AP_KEYS = {f"val/{kind}_ap{at}{mode}{proto}" for kind in ("mask", "box") for at in ("", "50", "75")
           for mode in ("", "_binary") for proto in ("", "_coco")}


def records(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def epochs(run: Path) -> list[dict]:
    return [r for r in records(run) if "event" not in r]


def test_ap_metric_names_and_config():
    from chromoseg.engine.train import TrainConfig, is_ap_metric

    for name in ("mask_ap", "mask_ap50", "box_ap75", "box_ap50_binary", "mask_ap_binary_coco", "val/box_ap50"):
        assert is_ap_metric(name), name
    for name in ("loss_mask", "mask_ap_50", "ap", "box_ap50_coco_binary", "mask_ap25"):
        assert not is_ap_metric(name), name
    assert TrainConfig(early_stop_metric="val/box_ap50").early_stop_metric == "box_ap50"
    assert TrainConfig().early_stop_metric == "loss_mask" and TrainConfig().val_every == 1
    with pytest.raises(ValueError, match="early_stop_metric"):
        TrainConfig(early_stop_metric="accuracy")
    with pytest.raises(ValueError, match="val_every"):
        TrainConfig(val="v.json", early_stop_metric="mask_ap", val_every=0)
    with pytest.raises(ValueError, match="rotated variant"):
        TrainConfig(variant="mr", val_score="object")
    with pytest.raises(ValueError, match="val_score"):
        TrainConfig(val_score="mean")
    # a configuration written before AP validation (no val_every, val_score) still loads
    old = TrainConfig().to_dict()
    del old["val_every"], old["val_score"]
    assert TrainConfig.from_dict(old).val_every == 1 and TrainConfig.from_dict(old).val_score == "class"


def test_validate_ap_with_object_scores_leaves_the_model_in_training(tmp_path):
    """The AP pass predicts with a model of its own (here: object scores, a rotated variant); the model
    being trained stays in training mode with its own settings."""
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.transforms import default_transforms
    from chromoseg.engine.train import validate_ap
    from chromoseg.models import SMALL, build_model

    mcfg = dict(variant="ermr", backbone="resnet18", image_size=(128, 160), num_classes=24, **SMALL)
    torch.manual_seed(0)
    model = build_model(**mcfg).train()
    val = ChromosomeDataset(write_set(tmp_path, 1, 10, "val.json"), transforms=default_transforms(False, size=(128, 160)))
    m = validate_ap(model, mcfg, val, torch.device("cpu"), show_progress=False, score="object")
    assert AP_KEYS <= set(m) and m["val/ap_images"] == 1
    assert all(v is not None and 0.0 <= v <= 1.0 for k, v in m.items() if k in AP_KEYS)
    assert model.training and model.roi_heads.score_mode == "class" and model.roi_heads.detections_per_img == 30


def test_early_stopping_higher_is_better():
    from chromoseg.engine.train import EarlyStopping

    es = EarlyStopping(patience=3, mode="max")
    flags = [es.update(v, i + 1) for i, v in enumerate([0.2, 0.5, 0.4, 0.45, 0.5, 0.3])]
    assert flags == [True, True, False, False, False, False]
    assert es.should_stop and es.best == 0.5 and es.best_epoch == 2
    # nothing above the score threshold yet: AP 0 epochs are each the new best, patience not spent
    es = EarlyStopping(patience=2, mode="max")
    assert all(es.update(0.0, e) for e in range(1, 6)) and es.best_epoch == 5 and not es.should_stop
    assert es.update(0.1, 6) and not es.update(0.0, 7) and not es.should_stop and not es.update(0.05, 8)
    assert es.should_stop
    # measured every 3 epochs: patience counts epochs, not measurements
    es = EarlyStopping(patience=5, mode="max")
    es.update(0.3, 3)
    es.update(0.2, 6)
    assert es.bad_epochs == 3 and not es.should_stop
    es.update(0.25, 9)
    assert es.bad_epochs == 6 and es.should_stop
    # state round trip; a stopper saved before AP monitoring has no mode: it monitored a loss
    es2 = EarlyStopping(patience=5, mode="max")
    es2.load_state_dict(es.state_dict())
    assert es2.state_dict() == es.state_dict()
    old = {"patience": 10, "min_delta": 0.0, "best": 0.7, "best_epoch": 4, "bad_epochs": 2}
    loss = EarlyStopping(10)
    loss.load_state_dict(old)
    assert loss.best == 0.7 and loss.mode == "min"
    with pytest.raises(ValueError, match="'min' metric"):
        EarlyStopping(10, mode="max").load_state_dict(old)


def _set_with_source_boxes(tmp_path) -> Path:
    """A tiny set whose annotations keep a wider annotator's box beside each mask (as pseudo-masks do)."""
    path = write_set(tmp_path / "d", 2, 3, "val.json")
    d = json.loads(path.read_text())
    for a in d["annotations"]:
        x, y, w, h = a["bbox"]
        a["source_bbox"] = [x - 4.0, y - 4.0, w + 8.0, h + 8.0]
    path.write_text(json.dumps(d))
    return path


def test_annotator_boxes_is_bench_gbands_rule(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_gband import annotator_boxes as bench_rule

    from chromoseg.engine.train import annotator_boxes

    gt = json.loads(_set_with_source_boxes(tmp_path).read_text())
    assert annotator_boxes(gt) == bench_rule(gt)
    plain = json.loads(write_set(tmp_path / "p", 1, 0, "val.json").read_text())
    assert annotator_boxes(plain) is plain and bench_rule(plain) is plain


def test_ap_metrics_scores_boxes_against_the_annotators_boxes(tmp_path):
    from chromoseg.engine.evaluate import perfect_results
    from chromoseg.engine.train import ap_metrics, ap_monitor

    gt = json.loads(_set_with_source_boxes(tmp_path).read_text())
    masks_right = perfect_results(gt)  # the masks, and boxes at the masks' bounds
    m = ap_metrics(gt, masks_right)
    assert set(m) == AP_KEYS
    assert m["val/mask_ap"] == pytest.approx(1.0) and m["val/mask_ap_binary_coco"] == pytest.approx(1.0)
    assert m["val/box_ap75"] < 0.5  # the masks' bounds are not the annotators' (wider) boxes
    by_source = {a["id"]: a["source_bbox"] for a in gt["annotations"]}
    ids = [a["id"] for a in gt["annotations"]]  # perfect_results keeps the annotations' order
    boxes_right = [dict(r, bbox=by_source[i]) for r, i in zip(masks_right, ids)]
    m = ap_metrics(gt, boxes_right)
    assert m["val/box_ap"] == pytest.approx(1.0) and m["val/mask_ap"] == pytest.approx(1.0)
    # nothing detected: 0, not COCOeval's "no value"
    assert ap_metrics(gt, [])["val/mask_ap50"] == 0.0
    # a box-only set has no mask AP: a mask metric is monitored by the box AP
    box_only = {**gt, "chromoseg": {"box_only": True}}
    m = ap_metrics(box_only, boxes_right)
    assert not any(k.startswith("val/mask") for k in m)
    assert ap_monitor(m, "mask_ap50") == ("val/box_ap50", m["val/box_ap50"])
    assert ap_monitor({"val/loss": 1.0}, "mask_ap") == (None, None)


def test_fit_logs_the_ap_of_predict_and_monitors_it(tmp_path):
    """A tiny real run: every epoch logs the APs; they are what predict's rule gives on the run's
    checkpoint, scored by evaluate; the stopper monitors the AP, higher is better."""
    from chromoseg.data.io import read_image
    from chromoseg.engine.checkpoint import load_checkpoint
    from chromoseg.engine.predict import Predictor, instances_to_results
    from chromoseg.engine.train import ap_metrics, fit

    cfg = tiny_cfg(tmp_path, early_stop_metric="mask_ap_coco")
    s = fit(cfg, show_progress=False)
    run = Path(cfg.out)
    recs = epochs(run)
    assert len(recs) == 2 and s["monitored"] == "val/mask_ap_coco"
    for r in recs:
        assert AP_KEYS <= set(r) and r["val/ap_images"] == 1 and r["val/ap_seconds"] > 0
        assert r["monitored"] == "val/mask_ap_coco" and r["monitor"] == r["val/mask_ap_coco"]
        assert "val/loss_mask" in r  # the loss pass stays
    start = records(run)[0]
    assert start["early_stop_metric"] == "mask_ap_coco" and start["val_every"] == 1
    ck = load_checkpoint(run / "last.pt")
    assert ck["early_stopping"]["mode"] == "max"
    # the same figures from the saved checkpoint through predict's own path
    pred = Predictor.from_checkpoint(run / "last.pt", {"score_threshold": 0.0})
    gt = json.loads(Path(cfg.val).read_text())
    results = []
    for im in gt["images"]:
        insts = pred([read_image(Path(cfg.val).parent / im["file_name"])])[0]
        results += [dict(r, file_name=im["file_name"]) for r in instances_to_results(insts, im["id"], im["file_name"])]
    again = ap_metrics(gt, results)
    for k in AP_KEYS:
        assert recs[-1][k] == pytest.approx(again[k], abs=1e-9), k


def _fake_passes(monkeypatch, aps, calls=None):
    """validate gives losses that fall every epoch (best.pt by loss would be the last epoch);
    validate_ap gives ``aps`` in turn."""
    import chromoseg.engine.train as tr

    losses = iter([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    aps = iter(aps)
    monkeypatch.setattr(tr, "validate", lambda *a, **k: {"val/loss_mask": next(losses), "val/loss": 1.0})

    def ap(*a, **k):
        if calls is not None:
            calls.append(k.get("score"))
        v = next(aps)
        return {"val/mask_ap": v, "val/box_ap": v / 2}

    monkeypatch.setattr(tr, "validate_ap", ap)
    return tr


def test_best_follows_the_ap_and_resume_keeps_the_stopper(tmp_path, monkeypatch):
    from chromoseg.engine.checkpoint import load_checkpoint

    seq = [0.1, 0.3, 0.2, 0.25, 0.9, 0.95]
    tr = _fake_passes(monkeypatch, seq)
    s = tr.fit(tiny_cfg(tmp_path / "a", epochs=6, patience=2, early_stop_metric="mask_ap"), show_progress=False)
    run_a = tmp_path / "a" / "run"
    assert s["stopped"] == "early_stopping" and s["epochs_run"] == 4 and s["best_epoch"] == 2 and s["best"] == 0.3
    assert load_checkpoint(run_a / "best.pt")["epoch"] == 2  # the highest AP, not the lowest loss (epoch 4)
    assert [r["bad_epochs"] for r in epochs(run_a)] == [0, 0, 1, 2]
    # killed after epoch 3, resumed: the stopper goes on from its saved state and stops at the same epoch
    tr = _fake_passes(monkeypatch, seq[:3])
    tr.fit(tiny_cfg(tmp_path / "b", epochs=6, patience=2, early_stop_metric="mask_ap"), show_progress=False,
           stop_after=3)
    run_b = tmp_path / "b" / "run"
    assert load_checkpoint(run_b / "last.pt")["early_stopping"] == {
        "patience": 2, "min_delta": 0.0, "mode": "max", "best": 0.3, "best_epoch": 2, "bad_epochs": 1}
    tr = _fake_passes(monkeypatch, seq[3:])
    s = tr.fit(tiny_cfg(tmp_path / "b", epochs=6, patience=2, early_stop_metric="mask_ap"),
               resume=str(run_b / "last.pt"), show_progress=False)
    assert s["stopped"] == "early_stopping" and s["epochs_run"] == 1 and s["best_epoch"] == 2
    assert load_checkpoint(run_b / "best.pt")["epoch"] == 2
    assert load_checkpoint(run_b / "last.pt")["early_stopping"] == load_checkpoint(run_a / "last.pt")["early_stopping"]


def test_val_every_runs_the_ap_pass_every_n_epochs_and_at_the_last(tmp_path, monkeypatch):
    from chromoseg.engine.checkpoint import load_checkpoint

    calls = []
    tr = _fake_passes(monkeypatch, [0.2, 0.1, 0.15], calls)
    s = tr.fit(tiny_cfg(tmp_path, epochs=5, patience=10, early_stop_metric="mask_ap", val_every=2),
               show_progress=False)
    recs = epochs(tmp_path / "run")
    assert len(calls) == 3 and [r["epoch"] for r in recs if "val/mask_ap" in r] == [2, 4, 5]
    assert all("val/loss_mask" in r for r in recs)  # the loss pass every epoch
    assert recs[0]["monitor"] is None and recs[0]["monitored"] == "val/mask_ap"
    assert [r["bad_epochs"] for r in recs] == [0, 0, 0, 2, 3]  # epochs since the best (epoch 2)
    assert s["best_epoch"] == 2 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2


def test_cli_early_stop_metric_val_every_and_switch_on_resume(tmp_path, capsys):
    import yaml

    from chromoseg.cli import main
    from chromoseg.engine.checkpoint import load_checkpoint

    tr = write_set(tmp_path / "d", 1, 0, "train.json")
    va = write_set(tmp_path / "d", 1, 10, "val.json")
    out = tmp_path / "run"
    common = ["--train", str(tr), "--val", str(va), "--variant", "mr", "--backbone", "resnet18", "--small",
              "--image-size", "160x128", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out)]
    with pytest.raises(SystemExit) as err:
        main(["train", *common, "--early-stop-metric", "accuracy"])
    assert err.value.code == 2
    assert "accuracy" in capsys.readouterr().err
    assert main(["train", *common, "--epochs", "1", "--val-every", "3"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["early_stop_metric"] == "loss_mask" and saved["val_every"] == 3
    rec = epochs(out)[-1]
    assert AP_KEYS <= set(rec) and rec["monitored"] == "val/loss_mask"  # the last epoch has the AP pass
    assert load_checkpoint(out / "last.pt")["early_stopping"]["mode"] == "min"
    # resumed with an AP metric: the run monitors it from here on, its stopper afresh
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--early-stop-metric", "val/box_ap50",
                 "--no-progress"]) == 0
    assert "box_ap50" in capsys.readouterr().out
    ev = [r for r in records(out) if r.get("event") == "monitor"]
    assert ev and ev[0]["was"] == "loss_mask" and ev[0]["now"] == "box_ap50"
    rec = epochs(out)[-1]
    assert rec["epoch"] == 2 and rec["monitored"] == "val/box_ap50" and rec["best_epoch"] == 2
    ck = load_checkpoint(out / "last.pt")
    assert ck["early_stopping"]["mode"] == "max" and ck["config"]["early_stop_metric"] == "box_ap50"
    assert load_checkpoint(out / "best.pt")["epoch"] == 2


def test_resume_with_object_scores_restarts_the_ap_stopper(tmp_path, monkeypatch):
    import shutil

    from chromoseg.engine.checkpoint import load_checkpoint

    calls = []
    tr = _fake_passes(monkeypatch, [0.5, 0.1], calls)
    tr.fit(tiny_cfg(tmp_path, variant="rmr", epochs=1, early_stop_metric="mask_ap"), show_progress=False)
    run = tmp_path / "run"
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    # resumed without switch_metric: the run's own scores and stopper (0.1 < 0.5: not a new best)
    again = tiny_cfg(tmp_path, variant="rmr", epochs=2, early_stop_metric="mask_ap", val_score="object")
    tr.fit(again, resume=str(tmp_path / "epoch1.pt"), show_progress=False)
    assert calls == ["class", "class"] and load_checkpoint(run / "last.pt")["early_stopping"]["best_epoch"] == 1
    # with switch_metric: object scores from here on, the stopper afresh
    calls.clear()
    tr = _fake_passes(monkeypatch, [0.2], calls)
    tr.fit(again, resume=str(tmp_path / "epoch1.pt"), show_progress=False, switch_metric=True)
    ev = [r for r in records(run) if r.get("event") == "monitor"]
    assert calls == ["object"] and len(ev) == 1 and ev[0]["val_score"] == "object"
    ck = load_checkpoint(run / "last.pt")
    assert ck["config"]["val_score"] == "object" and ck["early_stopping"]["best"] == 0.2
    assert ck["early_stopping"]["best_epoch"] == 2 and load_checkpoint(run / "best.pt")["epoch"] == 2


def test_val_rescore_reaches_the_predictor_of_the_ap_pass(tmp_path, monkeypatch):
    """--val-rescore: the AP pass predicts as `predict --rescore on` (the shipped G-band setting)."""
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.transforms import default_transforms
    from chromoseg.engine import predict
    from chromoseg.engine.train import TrainConfig, validate_ap
    from chromoseg.models import SMALL, build_model

    seen = []
    real = predict.Predictor.from_checkpoint.__func__

    def spy(cls, path, settings=None, **kw):
        p = real(cls, path, settings, **kw)
        seen.append(p.model.roi_heads.rescore)
        return p

    monkeypatch.setattr(predict.Predictor, "from_checkpoint", classmethod(spy))
    mcfg = dict(variant="ermr", backbone="resnet18", image_size=(128, 160), num_classes=24, **SMALL)
    model = build_model(**mcfg).train()
    val = ChromosomeDataset(write_set(tmp_path, 1, 10, "val.json"), transforms=default_transforms(False, size=(128, 160)))
    for rescore in (False, True):
        validate_ap(model, mcfg, val, torch.device("cpu"), show_progress=False, score="object", rescore=rescore)
    assert seen == [False, True]
    old = TrainConfig().to_dict()
    del old["val_rescore"]  # a configuration written before the option still loads, without rescoring
    assert TrainConfig.from_dict(old).val_rescore is False


def test_a_failing_validation_keeps_the_epochs_training(tmp_path, monkeypatch):
    """An error in the validation passes (here the AP pass at epoch 2) leaves that epoch's training in
    last.pt, named in metrics.jsonl, so --resume goes on from the next epoch instead of redoing it."""
    from chromoseg.engine.checkpoint import load_checkpoint

    tr = _fake_passes(monkeypatch, [0.1, 0.2, 0.3])
    real_ap = tr.validate_ap
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ImportError("cannot import name 'x' (a source file edited under the run)")
        return real_ap(*a, **k)

    monkeypatch.setattr(tr, "validate_ap", failing)
    cfg = tiny_cfg(tmp_path, epochs=3, early_stop_metric="mask_ap")
    with pytest.raises(ImportError):
        tr.fit(cfg, show_progress=False)
    run = tmp_path / "run"
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and "cannot import" in last["metrics"]["validation_error"]
    assert load_checkpoint(run / "best.pt")["epoch"] == 1
    assert [r["event"] for r in records(run) if "event" in r] == ["start", "validation_failed"]
    s = tr.fit(cfg, resume=str(run / "last.pt"), show_progress=False)
    assert [r["epoch"] for r in epochs(run)] == [1, 3] and s["epochs_run"] == 1
