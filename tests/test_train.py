"""Training engine tests: early stopping, checkpoints, resume after a (simulated) kill, NaN stop, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from test_models import synth_sample


def write_set(folder, n=2, seed=0, name="train.json", h=128, w=160):
    """A tiny chromoseg COCO set of synthetic images (PNG files + RLE masks)."""
    import cv2

    from chromoseg.data.classes import coco_categories
    from chromoseg.data.coco import encode_mask

    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img, t = synth_sample(h=h, w=w, seed=seed + i)
        fn = folder / f"{name[:-5]}_{i}.png"
        cv2.imwrite(str(fn), (img[0].clamp(0, 1).numpy() * 255).astype(np.uint8))
        images.append({"id": i + 1, "file_name": fn.name, "height": h, "width": w})
        for k in range(t["labels"].shape[0]):
            m = t["masks"][k].numpy().astype(bool)
            x0, y0, x1, y1 = t["boxes"][k].tolist()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(t["labels"][k]),
                         "segmentation": encode_mask(m), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": float(m.sum()), "iscrowd": 0, "endpoints": t["endpoints"][k].tolist()})
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": coco_categories()}))
    return path


def tiny_cfg(tmp_path, **kw):
    from chromoseg.engine.train import TrainConfig

    data = tmp_path / "data"
    tr = write_set(data, 2, 0, "train.json")
    va = write_set(data, 1, 10, "val.json")
    args = dict(train=str(tr), val=str(va), out=str(tmp_path / "run"), variant="mr", backbone="resnet18",
                image_size=(128, 160), epochs=2, batch_size=2, workers=0, device="cpu", small=True,
                warmup_iters=2, augment=True)
    args.update(kw)
    return TrainConfig(**args)


def test_early_stopping_rule():
    from chromoseg.engine.train import EarlyStopping

    es = EarlyStopping(patience=3)
    vals = [1.0, 0.8, 0.9, 0.85, 0.8, 0.81]
    flags = [es.update(v, i + 1) for i, v in enumerate(vals)]
    assert flags == [True, True, False, False, False, False]
    assert es.should_stop and es.best == 0.8 and es.best_epoch == 2
    es2 = EarlyStopping(patience=3)
    es2.load_state_dict(es.state_dict())
    assert es2.should_stop and es2.best_epoch == 2
    never = EarlyStopping(patience=0)
    for i in range(20):
        never.update(1.0, i)
    assert not never.should_stop


def test_warmup_then_constant():
    from chromoseg.engine.train import warmup_lambda

    f = warmup_lambda(10, 0.001)
    assert math.isclose(f(0), 0.001) and f(10) == 1.0 and f(500) == 1.0 and 0.001 < f(5) < 1.0


def test_atomic_save(tmp_path):
    from chromoseg.engine.checkpoint import atomic_save

    p = tmp_path / "a" / "x.pt"
    atomic_save({"a": torch.ones(2)}, p)
    assert torch.equal(torch.load(p)["a"], torch.ones(2))
    with pytest.raises(Exception):  # a save that fails half-way leaves the old file as it was
        atomic_save({"a": torch.zeros(2), "b": lambda: 0}, p)
    assert torch.equal(torch.load(p)["a"], torch.ones(2)) and [f.name for f in p.parent.iterdir()] == ["x.pt"]


def test_one_atomic_write_helper():
    """Every temporary-file-then-rename write goes through chromoseg.atomic: no os.replace elsewhere."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "chromoseg"
    hand_written = [str(f.relative_to(src)) for f in src.rglob("*.py")
                    if f.name != "atomic.py" and ("os.replace(" in f.read_text() or "os.rename(" in f.read_text())]
    assert not hand_written


def test_fit_resume_matches_uninterrupted(tmp_path):
    from chromoseg.engine.checkpoint import load_checkpoint, load_model
    from chromoseg.engine.train import fit

    full = fit(tiny_cfg(tmp_path / "a"), show_progress=False)
    assert full["epochs_run"] == 2
    run_a = tmp_path / "a" / "run"
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= {p.name for p in run_a.iterdir()}
    recs = [json.loads(l) for l in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["event"] == "start" and recs[-2]["epoch"] == 2 and "val/loss_mask" in recs[-2]
    assert recs[-1] == {"event": "epochs", "epoch": 2}  # why it ended: the --epochs cap

    cfg_b = tiny_cfg(tmp_path / "b")
    part = fit(cfg_b, show_progress=False, stop_after=1)  # "killed" after epoch 1
    assert part["epochs_run"] == 1 and load_checkpoint(tmp_path / "b" / "run" / "last.pt")["epoch"] == 1
    rest = fit(cfg_b, resume=str(tmp_path / "b" / "run" / "last.pt"), show_progress=False)
    assert rest["epochs_run"] == 1

    a = load_checkpoint(run_a / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "run" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-5), k
    assert a["early_stopping"] == b["early_stopping"]
    assert math.isclose(a["metrics"]["val/loss_mask"], b["metrics"]["val/loss_mask"], rel_tol=1e-4)
    model = load_model(run_a / "best.pt")
    assert not model.training and model.variant == "mr"


def test_start_epoch_continues_a_schedule_from_a_model(tmp_path):
    """The run folder is gone: a model of epoch 2 plus --start-epoch 2 trains epoch 3 at the lost run's
    learning rate (cosine schedule) and numbers its epochs as that run would have."""
    from chromoseg.engine.checkpoint import load_checkpoint
    from chromoseg.engine.train import TrainingError, fit

    fit(tiny_cfg(tmp_path / "a", epochs=4, lr_schedule="cosine", patience=0), show_progress=False, stop_after=3)
    recs = [json.loads(l) for l in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["epoch"]: r["lr"] for r in recs if "lr" in r}
    assert lr[3] > 0 and lr[2] > lr[3]  # mid-schedule
    model_of_epoch_2 = tmp_path / "a" / "epoch2.pt"
    fit(tiny_cfg(tmp_path / "b", epochs=4, lr_schedule="cosine", patience=0), show_progress=False, stop_after=2)
    (tmp_path / "b" / "run" / "last.pt").rename(model_of_epoch_2)
    cont = tiny_cfg(tmp_path / "c", epochs=4, lr_schedule="cosine", patience=0, init_weights=str(model_of_epoch_2),
                    start_epoch=2)
    s = fit(cont, show_progress=False, stop_after=1)
    assert s["epochs_run"] == 1
    ck = load_checkpoint(tmp_path / "c" / "run" / "last.pt")
    assert ck["epoch"] == 3 and math.isclose(ck["metrics"]["lr"], lr[3], rel_tol=1e-6)
    with pytest.raises(TrainingError, match="init_weights"):
        fit(tiny_cfg(tmp_path / "d", epochs=3, start_epoch=2), show_progress=False)


def test_early_stop_in_fit(tmp_path, monkeypatch):
    import chromoseg.engine.train as tr
    from chromoseg.engine.checkpoint import load_checkpoint

    seq = iter([1.0, 0.9, 0.95, 0.97, 0.5, 0.4])
    monkeypatch.setattr(tr, "validate", lambda *a, **k: {"val/loss_mask": next(seq), "val/loss": 1.0})
    s = tr.fit(tiny_cfg(tmp_path, epochs=6, patience=2), show_progress=False)
    assert s["stopped"] == "early_stopping" and s["epochs_run"] == 4 and s["best_epoch"] == 2
    run = tmp_path / "run"
    assert load_checkpoint(run / "best.pt")["epoch"] == 2 and load_checkpoint(run / "last.pt")["epoch"] == 4
    again = tr.fit(tiny_cfg(tmp_path, epochs=6, patience=2), resume=str(run / "last.pt"), show_progress=False)
    assert again["stopped"] == "early_stopping" and again["epochs_run"] == 0


def test_time_limit_ends_the_epoch_early_and_saves(tmp_path):
    import json

    from chromoseg.engine.checkpoint import load_checkpoint
    from chromoseg.engine.train import fit

    cfg = tiny_cfg(tmp_path, epochs=5, batch_size=1, time_limit=1e-6)  # passed after the first step
    s = fit(cfg, show_progress=False)
    assert s["stopped"] == "time_limit" and s["epochs_run"] == 1
    assert s["last"]["train/partial"] and s["last"]["train/images"] == 1  # one of the two images
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1 and (tmp_path / "run" / "best.pt").is_file()
    events = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "time_limit", "epoch": 1, "minutes": 1e-6}


def test_nan_loss_stops(tmp_path):
    from chromoseg.engine.train import TrainingError, fit

    with pytest.raises(TrainingError, match="non-finite loss"):
        fit(tiny_cfg(tmp_path, lr=1e30, warmup_iters=0, grad_clip=0.0, epochs=3), show_progress=False)


def test_cli_train_help_and_errors(tmp_path, capsys):
    from chromoseg.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "0.005" in out and "momentum 0.9" in out and "10 epochs" in out and "--resume" in out
    assert main(["train", "--train", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["train"]) == 2


def test_cli_train_config_file(tmp_path):
    from chromoseg.cli import main

    tr = write_set(tmp_path / "d", 1, 0, "train.json")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train: {tr}\nvariant: mr\nbackbone: resnet18\nsmall: true\nimage_size: [128, 160]\n"
                   f"epochs: 1\nworkers: 0\ndevice: cpu\ncompact: true\nlr_schedule: cosine\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["variant"] == "mr" and saved["epochs"] == 1 and saved["image_size"] == [128, 160]
    assert (out / "best.pt").is_file() and saved["lr_schedule"] == "cosine"
    assert torch.load(out / "best.pt", weights_only=False)["model_config"]["fpn_channels"] == 128  # --compact
    # `--out RUN --resume` alone continues from the run's own config (here one more epoch)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    epochs = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if '"epoch": 2' in ln and "event" not in ln]
    assert epochs and yaml.safe_load((out / "config.yaml").read_text())["variant"] == "mr"



def test_cli_stop_after_whole_epochs_and_the_time_limit_of_this_call(tmp_path, capsys):
    """--stop-after N trains N whole epochs and stops (the run's --epochs cap kept); a resumed call's
    --time-limit is its own (the first call's is not carried over); reaching the cap is recorded."""
    import yaml

    from chromoseg.cli import main

    tr = write_set(tmp_path / "d", 1, 0, "train.json")
    out = tmp_path / "run"

    def events():
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"event"' in x]

    assert main(["train", "--train", str(tr), "--variant", "mr", "--backbone", "resnet18", "--small",
                 "--image-size", "160x128", "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out),
                 "--epochs", "3", "--time-limit", "5", "--stop-after", "1"]) == 0
    assert "1 epochs run (stop_after)" in capsys.readouterr().out
    assert [e["event"] for e in events()] == ["start"]  # no end event: the run goes on
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--time-limit", "30", "--stop-after", "5",
                 "--no-progress"]) == 0
    assert "2 epochs run (epochs)" in capsys.readouterr().out
    assert events()[-2:] == [{**events()[-2], "event": "resume"}, {"event": "epochs", "epoch": 3}]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 3 and saved["time_limit"] == 30


def test_train_options_defaults_are_train_configs():
    """The parser declares no default of its own: an option not typed is absent, so TrainConfig's
    (and build_model's) defaults apply, and its help shows those."""
    from chromoseg.cli import build_parser
    from chromoseg.cli.train import train_options
    from chromoseg.engine.train import TrainConfig

    parser = build_parser()
    assert train_options(parser.parse_args(["train", "--data", "d"]), {}) == ({}, set())
    train = parser._subparsers._group_actions[0].choices["train"]
    help_text = " ".join(train.format_help().split())
    d = TrainConfig()
    for text in (f"(default {d.epochs})", f"(default {d.batch_size})", f"(default {d.lr:g})", f"(default {d.variant};",
                 f"(default {d.image_size[1]}x{d.image_size[0]},", f"learning rate {d.lr:g}", f"momentum {d.momentum:g}"):
        assert text in help_text


def test_train_options_typed_beats_the_file_even_at_the_default():
    """What was typed wins over a --config file / the resumed run's config, also where it equals the
    default (the old rule, a diff against the parser's defaults, let the file win then); the file wins
    over what was not typed; the file's model_kwargs stand whole."""
    from chromoseg.cli import build_parser
    from chromoseg.cli.train import train_options

    parser = build_parser()
    args = parser.parse_args(["train", "--epochs", "100", "--val-score", "class", "--no-augment", "--zoom", "0.7",
                              "1.4", "--stain", "brightfield", "--roi-fg-iou", "0.5", "--endpoint-loss-weight", "100"])
    opts, typed = train_options(args, {"epochs": 2, "lr": 0.1, "val_score": "object"})
    assert opts == {"epochs": 100, "lr": 0.1, "val_score": "class", "augment": False, "zoom": (0.7, 1.4),
                    "model_kwargs": {"invert": True, "endpoint_loss_weight": 100.0}}  # 0.5 is build_model's default
    assert typed == {"epochs", "val_score", "augment", "zoom"}
    opts, _ = train_options(args, {"model_kwargs": {"frame": True}})
    assert opts["model_kwargs"] == {"frame": True}


def test_cosine_schedule_after_warmup():
    from chromoseg.engine.train import warmup_lambda

    f = warmup_lambda(10, 0.001, total_iters=110)
    assert f(0) == pytest.approx(0.001) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0) and f(500) == pytest.approx(0.0)
    assert warmup_lambda(10, 0.001)(500) == 1.0  # constant: the paper


def test_amp_choice_per_device(monkeypatch):
    import torch

    import chromoseg.engine.train as tr
    from chromoseg.engine.train import TrainingError, amp_dtype

    cpu = torch.device("cpu")
    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: False)
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: True)  # bf16 instructions: auto trains in bf16
    assert amp_dtype("auto", cpu) == torch.bfloat16 and amp_dtype("off", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(TrainingError, match="GPU"):
        amp_dtype("fp16", cpu)


def test_extra_training_set_without_classes(tmp_path):
    """--extra-train: a second set whose chromosomes have no class trains with the first."""
    from chromoseg.engine.train import fit

    extra = write_set(tmp_path / "extra", 2, 20, "extra.json")
    d = json.loads(extra.read_text())
    for a in d["annotations"]:
        a["class_known"] = False
    d["chromoseg"] = {"classes_known": False}
    extra.write_text(json.dumps(d))
    cfg = tiny_cfg(tmp_path, variant="ermr", epochs=1, extra_train=[str(extra)])
    summary = fit(cfg, show_progress=False)
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["train_images"] == 4 and summary["epochs_run"] == 1
    assert math.isfinite(summary["last"]["train/loss_classifier"])


def test_fit_with_an_empty_validation_set_trains_without_validation(tmp_path):
    """An import with a small --limit can leave val.json empty: fit trains on and monitors the training loss."""
    from chromoseg.engine.train import fit

    cfg = tiny_cfg(tmp_path, epochs=1)
    d = json.loads(open(cfg.val).read())
    d["images"], d["annotations"] = [], []
    open(cfg.val, "w").write(json.dumps(d))
    s = fit(cfg, show_progress=False)
    assert s["epochs_run"] == 1 and s["monitored"].startswith("train/")
