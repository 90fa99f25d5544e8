"""``chromoseg pretrain`` on a tiny fake single-chromosome folder, and loading its weights in a detector."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def fake_cells(folder, n_cells=10, per_class=(1, 2, 3)):
    rng = np.random.RandomState(0)
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(n_cells):
        cell = f"9700{c:04d}.{c}"
        entries = {}
        for cls in per_class:
            for k in range(2):
                h, w = rng.randint(30, 60), rng.randint(10, 20)
                a = np.full((h, w), 230, np.uint8)
                a[:, w // 3: 2 * w // 3] = 40 + 50 * cls  # class-dependent grey bar
                entries[f"{cls}/clase{cls}_{k}_{cell}"] = a
        np.savez_compressed(folder / f"{cell}.npz", **entries)
    np.savez_compressed(folder / "broken.npz", **{"weird_name": np.zeros((5, 5), np.uint8)})
    return folder


def test_split_by_cell_is_fixed():
    from chromoseg.engine.pretrain import split_cells

    cells = [f"c{i}" for i in range(50)]
    a, b = split_cells(cells), split_cells(list(reversed(cells)))
    assert a == b
    assert len(a["train"]) == 40 and len(a["val"]) == 5 and len(a["test"]) == 5
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])


def test_square_resize_keeps_aspect():
    from chromoseg.engine.pretrain import square_resize

    a = np.full((40, 10), 255, np.uint8)
    a[:, 4:6] = 0
    out = square_resize(a, 20)
    assert out.shape == (20, 20)
    assert out[:, :5].min() == 255  # padding on both sides
    assert out[:, 9:11].max() <= 128


def test_pretrain_writes_loadable_backbone(tmp_path):
    from chromoseg.cli import main
    from chromoseg.models import SMALL, build_model

    data = fake_cells(tmp_path / "cells")
    out = tmp_path / "pre"
    # enough steps that the network tells some crops apart (after 2 epochs it gave one class to all, and
    # any accuracy computed on any split came out 1/3)
    rc = main(["pretrain", "--data", str(data), "--backbone", "resnet18", "--epochs", "4", "--batch-size", "8",
               "--lr", "0.02", "--image-size", "32", "--out", str(out), "--device", "cpu", "--no-progress"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["test_images"] > 0 and rep["problems"] >= 1
    ck = torch.load(out / "backbone.pt", weights_only=True)
    # the reported accuracies are the saved network's (backbone + fc) on the split's val and test cells
    from chromoseg.engine.pretrain import load_cells
    from chromoseg.models.backbone import build_resnet

    split = json.loads((out / "split.json").read_text())
    net = build_resnet("resnet18", in_channels=1, num_classes=24)
    net.load_state_dict({**ck["backbone"], **{f"fc.{k}": v for k, v in ck["fc"].items()}})
    net.eval()
    for part in ("val", "test"):
        xs, ys = load_cells(data, split[part], 32, [])
        with torch.no_grad():
            right = int((net((xs.float() / 255.0 - 0.5) / 0.25).argmax(1) == ys).sum())
        assert rep[f"{part}_images"] == len(ys) > 0
        assert rep[f"{part}_accuracy"] == pytest.approx(right / len(ys)), part
    assert ck["arch"] == "resnet18" and not any(k.startswith("fc.") for k in ck["backbone"])
    model = build_model("mr", backbone="resnet18", backbone_weights=str(out / "backbone.pt"), image_size=(64, 80),
                        **SMALL)
    assert torch.equal(model.backbone.body.conv1.weight, ck["backbone"]["conv1.weight"])


def test_pretrain_missing_folder(tmp_path, capsys):
    from chromoseg.cli import main

    assert main(["pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err


def test_default_single_chromosome_folder_found_from_a_copy_of_the_package(tmp_path, monkeypatch):
    """default_data_dir: beside the repository the package is in, else beside the working folder (a frozen
    copy of the package elsewhere, run from the repository with PYTHONPATH, found no folder before)."""
    from chromoseg.data import single_chromosomes as sc

    repo_copy = tmp_path / "runs" / "src-copy" / "src" / "chromoseg" / "data"
    repo_copy.mkdir(parents=True)
    monkeypatch.setattr(sc, "__file__", str(repo_copy / "single_chromosomes.py"))
    (tmp_path / "work" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "repo")
    beside_cwd = tmp_path / "work" / "shared" / "data" / "single-chromosomes-gband"
    assert sc.default_data_dir() == tmp_path / "runs" / "shared" / "data" / "single-chromosomes-gband"  # neither
    beside_cwd.mkdir(parents=True)
    assert sc.default_data_dir() == beside_cwd
    beside_pkg = tmp_path / "runs" / "shared" / "data" / "single-chromosomes-gband"
    beside_pkg.mkdir(parents=True)
    assert sc.default_data_dir() == beside_pkg  # the package's own repository first
