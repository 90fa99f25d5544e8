"""``chromoseg.data.synth``: crop masks, synthetic metaphases, the written data set and its CLI."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from chromoseg.data.synth import Crop, crop_mask, read_cell, select_cells, synth_dataset, synth_metaphase


def _bar_crop(length: int, width: int = 9, seed: int = 0, pad: int = 4) -> np.ndarray:
    """A straightened fake chromosome: a dark banded bar on a clean light background, long axis vertical."""
    rng = np.random.default_rng(seed)
    crop = np.full((length + 2 * pad, width + 2 * pad), 250, np.uint8)
    bands = rng.uniform(40, 140, size=max(2, length // 6))
    rows = np.repeat(bands, int(np.ceil(length / len(bands))))[:length]
    crop[pad:pad + length, pad:pad + width] = rows[:, None].astype(np.uint8)
    return crop


def _crops(n: int = 6) -> list[Crop]:
    classes = (1, 2, 7, 7, 21, 23)[:n]
    return [Crop(c, _bar_crop(60 - 6 * i, seed=i), name=f"{c}/clase{c}_0_fake") for i, c in enumerate(classes)]


def test_crop_mask_of_a_dark_bar():
    crop = np.full((60, 26), 245, np.uint8)
    crop[5:55, 8:18] = 70
    crop[30:33, 12:14] = 200  # a light band inside: a hole to fill
    crop[1:3, 22:24] = 60  # a speck apart from the chromosome
    m = crop_mask(crop)
    truth = np.zeros_like(m)
    truth[5:55, 8:18] = True
    assert (m & truth).sum() / (m | truth).sum() > 0.95
    assert m[30:33, 12:14].all() and not m[1:3, 22:24].any()
    assert not crop_mask(np.full((20, 10), 200, np.uint8)).any()  # no contrast, no mask


def test_synth_metaphase_instances_image_and_endpoints():
    from scipy import ndimage

    from chromoseg.data.io import light_background
    from chromoseg.ops import mask_to_rbox

    crops = _crops()
    img, inst = synth_metaphase(crops, np.random.default_rng(3), size=(320, 260))
    assert img.dtype == np.uint8 and img.shape == (260, 320)
    assert len(inst) == len(crops)
    assert Counter(d["category_id"] for d in inst) == Counter(c.category_id for c in crops)
    assert light_background(img)
    union = np.zeros(img.shape, bool)
    for d in inst:
        m = d["mask"]
        assert m.dtype == bool and m.shape == img.shape and m.sum() > 20
        # inside the image, not cut by its border
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        union |= m
        # endpoints on (or within 2 px of) the mask, about one chromosome length apart
        outside = ndimage.distance_transform_edt(~m)
        (x1, y1), (x2, y2) = d["endpoints"]
        for x, y in ((x1, y1), (x2, y2)):
            assert 0 <= x < img.shape[1] and 0 <= y < img.shape[0]
            assert outside[int(y), int(x)] <= 2.0
        long_side = float(mask_to_rbox(m)[2])
        assert 0.7 * long_side <= np.hypot(x2 - x1, y2 - y1) <= 1.05 * long_side
    assert img[union].mean() < img[~union].mean() - 40  # dark chromosomes on a light background


def test_overlapping_chromosomes_keep_their_whole_masks():
    crop = _bar_crop(50, seed=5)
    crops = [Crop(3, crop), Crop(4, crop.copy())]
    img, inst = synth_metaphase(crops, np.random.default_rng(0), size=(300, 300), p_overlap=1.0, p_touch=0.0,
                                scale_jitter=(1.0, 1.0), bend=(0.0, 0.0), p_nucleus=0.0, debris=0.0)
    a, b = inst[0]["mask"], inst[1]["mask"]
    both = a & b
    assert inst[1]["placement"] == "overlap" and both.any()
    # the same crop, the same scale: the covered one keeps its full area (turned: pixel counts differ a little)
    assert abs(int(a.sum()) - int(b.sum())) < 0.08 * a.sum()
    only = (a ^ b)
    assert img[both].mean() < img[only].mean() - 10  # the overlap is darker, as in G-band overlaps


def test_same_rng_same_metaphase():
    crops = _crops(3)
    i1, a = synth_metaphase(crops, np.random.default_rng(7), size=200)
    i2, b = synth_metaphase(crops, np.random.default_rng(7), size=200)
    assert np.array_equal(i1, i2) and all(np.array_equal(x["mask"], y["mask"]) for x, y in zip(a, b))


def _fake_cells(folder, n_cells: int = 2, bad: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    classes = {}
    for k in range(n_cells):
        cell = f"9700000{k}.1{k}"
        entries = {}
        for i, c in enumerate((1, 1, 5, 16, 23, 24)[: 4 + k]):
            entries[f"{c}/clase{c}_{i}_{cell}"] = _bar_crop(56 - 5 * i, seed=10 * k + i)
        classes[cell] = Counter(int(key.split("/")[0]) for key in entries)
        entries["notes"] = np.zeros(3)  # not a chromosome entry: reported and skipped
        np.savez_compressed(folder / f"{cell}.npz", **entries)
    if bad:
        (folder / "broken.npz").write_bytes(b"not a zip archive")
    return classes


def test_synth_dataset_writes_a_loadable_set(tmp_path):
    from chromoseg.data.coco import load_coco
    from chromoseg.data.dataset import ChromosomeDataset
    from chromoseg.data.report import ProblemLog

    src = tmp_path / "cells"
    classes = _fake_cells(src)
    out = tmp_path / "out"
    summary = synth_dataset(src, out, n_images=3, seed=1, size=256)
    assert summary["images"] == 3 and summary["cells_used"] == 2
    problems = json.loads((out / "synth.problems.json").read_text())
    assert any("broken.npz" in p["file"] and p["kind"] == "unreadable" for p in problems)
    assert any("notes" in p["file"] and p["kind"] == "entry" for p in problems)

    log = ProblemLog(quiet=True)
    coco = load_coco(out / "synth.json", log, check_files=True)
    assert len(log) == 0 and len(coco["images"]) == 3
    for im in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert Counter(a["category_id"] for a in anns) == classes[im["cell"]]
        assert all(len(a["rbox"]) == 5 and a["rbox"][2] >= a["rbox"][3] > 0 and len(a["endpoints"]) == 2 for a in anns)

    ds = ChromosomeDataset(out / "synth.json")
    assert len(ds.problems) == 0
    image, t = ds.load(0)
    n = len(ds.annotations(0))
    H, W = image.shape[-2:]
    assert t["masks"].shape == (n, H, W) and t["rboxes"].shape == (n, 5) and t["labels"].shape == (n,)
    assert t["endpoints"].shape == (n, 2, 2) and bool(t["has_masks"]) and bool(t["has_endpoints"])
    assert all(int(m.sum()) > 0 for m in t["masks"])

    # the same seed gives the same files
    synth_dataset(src, tmp_path / "again", n_images=3, seed=1, size=256)
    assert (tmp_path / "again" / "synth.json").read_text() == (out / "synth.json").read_text()
    for k in (1, 2, 3):
        name = f"images/synth_{k:05d}.png"
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_cell_selection_follows_the_pretrain_split(tmp_path):
    from chromoseg.data.single_chromosomes import split_cells

    for k in range(20):
        (tmp_path / f"cell{k:02d}.npz").write_bytes(b"")
    parts = {s: select_cells(tmp_path, s) for s in ("train", "val", "test")}
    names = sorted(f"cell{k:02d}" for k in range(20))
    assert parts == split_cells(names)
    assert sorted(sum(parts.values(), [])) == names == select_cells(tmp_path, "all")
    with pytest.raises(ValueError):
        select_cells(tmp_path, "everything")


def test_cli_synth(tmp_path, capsys):
    from chromoseg.cli import main

    src = tmp_path / "cells"
    _fake_cells(src, bad=False)
    out = tmp_path / "o"
    assert main(["data", "synth", "--source", str(src), "--out", str(out), "--n", "1", "--size", "240x200",
                 "--quiet"]) == 0
    data = json.loads((out / "synth.json").read_text())
    assert data["images"][0]["width"] == 240 and data["images"][0]["height"] == 200
    assert "wrote 1 images" in capsys.readouterr().out
    assert main(["data", "synth", "--source", str(tmp_path / "nowhere"), "--out", str(out), "--n", "1"]) == 2
    assert main(["data", "synth", "--source", str(src), "--out", str(out), "--size", "big"]) == 2


def test_real_cell():
    from conftest import require_data

    folder = require_data("single-chromosomes-gband")
    path = sorted(folder.glob("*.npz"))[0]
    with np.load(path) as z:
        want = Counter(int(k.split("/")[0]) for k in z.files)
    crops = read_cell(path)
    assert Counter(c.category_id for c in crops) == want
    img, inst = synth_metaphase(crops, np.random.default_rng(0), size=500)
    assert len(inst) == len(crops)
    assert Counter(d["category_id"] for d in inst) == want
    assert max(img.shape) == 500 and all(d["mask"].any() for d in inst)


def test_fluorescence_metaphase_is_bright_on_dark_with_the_same_instances():
    """``stain="fluorescence"``: the same placement as G-band for the same drawn geometry, but bright
    chromosomes on a dark background (overlaps brightest) at the set's peak grey; an unknown stain is refused."""
    from chromoseg.data.io import light_background
    from chromoseg.data.synth import SynthParams

    crops = _crops()
    p = SynthParams.fluorescence(length_frac=(0.15, 0.17), p_overlap=0.5, p_touch=0.0)
    img, inst = synth_metaphase(crops, np.random.default_rng(3), size=(320, 260), params=p)
    assert img.dtype == np.uint8 and img.shape == (260, 320) and len(inst) == len(crops)
    assert not light_background(img)
    union = np.zeros(img.shape, bool)
    count = np.zeros(img.shape, int)
    for d in inst:
        union |= d["mask"]
        count += d["mask"]
    assert img[union].mean() > img[~union].mean() + 40
    assert np.median(img[~union]) <= 20 and 80 <= np.percentile(img, 97) <= 180
    if (count > 1).any():
        assert img[count > 1].mean() > img[count == 1].mean()
    with pytest.raises(ValueError, match="stain"):
        synth_metaphase(crops, np.random.default_rng(3), size=(320, 260), stain="dapi")
