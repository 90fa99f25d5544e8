"""Pseudo-masks for box-only sets, `data split`, and the brightfield (inverting) model input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from chromoseg.data.pseudo_masks import add_pseudo_masks, mask_iou, measure_pseudo_masks, pseudo_masks
from conftest import require_data


def _bar(shape, p0, p1, width):
    m = np.zeros(shape, np.uint8)
    cv2.line(m, p0, p1, 1, thickness=width)
    return m.astype(bool)


def _box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _gband(masks, shape, seed=0):
    """Dark chromosomes (with a pale band) on a light, noisy background."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 215.0) + rng.normal(0, 4, shape)
    for m in masks:
        img[m] = 70.0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_separate_and_diagonal_chromosomes_are_recovered():
    shape = (120, 160)
    bars = [_bar(shape, (20, 20), (70, 90), 7), _bar(shape, (100, 15), (140, 30), 6), _bar(shape, (110, 60), (110, 110), 8)]
    img = _gband(bars, shape)
    got = pseudo_masks(img, [_box(m) for m in bars], dark=True)
    ious = [mask_iou(m, p) for m, p in zip(bars, got)]
    assert min(ious) > 0.85, ious
    # the diagonal bar's box holds much background: none of it may be taken
    assert (got[0] & ~bars[0]).sum() < 0.1 * bars[0].sum()


def test_polarity_is_honoured():
    shape = (80, 100)
    bar = _bar(shape, (20, 40), (80, 40), 8)
    dark = _gband([bar], shape)
    assert mask_iou(bar, pseudo_masks(dark, [_box(bar)], dark=True)[0]) > 0.85
    assert mask_iou(bar, pseudo_masks(255 - dark, [_box(bar)], dark=False)[0]) > 0.85


def test_crossing_chromosomes_each_keep_their_whole_outline():
    shape = (140, 140)
    a = _bar(shape, (20, 70), (120, 70), 9)  # horizontal
    b = _bar(shape, (70, 15), (70, 125), 9)  # vertical, crossing a's middle
    img = _gband([a, b], shape)
    pa, pb = pseudo_masks(img, [_box(a), _box(b)], dark=True)
    assert mask_iou(a, pa) > 0.85 and mask_iou(b, pb) > 0.85
    assert (pa & pb).sum() > 0.5 * (a & b).sum()  # the crossing is shared, not cut out of one of them


def test_touching_neighbour_is_not_taken():
    shape = (100, 140)
    a = _bar(shape, (20, 30), (70, 30), 8)
    b = _bar(shape, (74, 10), (74, 90), 8)  # touches a's right end, its box overlaps a's box edge
    img = _gband([a, b], shape)
    pa, pb = pseudo_masks(img, [_box(a), _box(b)], dark=True)
    assert mask_iou(a, pa) > 0.8 and mask_iou(b, pb) > 0.8
    assert (pa & b & ~a).sum() < 0.1 * a.sum()


def _write_box_only_set(tmp_path, n_images=3):
    shape = (120, 160)
    images, anns = [], []
    for i in range(n_images):
        bars = [_bar(shape, (20 + 5 * i, 20), (70, 90), 7), _bar(shape, (110, 60), (110, 110), 8)]
        cv2.imwrite(str(tmp_path / f"g{i}.png"), _gband(bars, shape, seed=i))
        images.append({"id": i + 1, "file_name": f"g{i}.png", "height": shape[0], "width": shape[1], "has_masks": False})
        for k, m in enumerate(bars):
            x0, y0, x1, y1 = (float(v) for v in _box(m))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "chromoseg": {"box_only": True},
                                "categories": [{"id": c, "name": str(c)} for c in range(1, 25)]}))
    return path


def test_add_pseudo_masks_writes_a_trainable_set(tmp_path):
    from chromoseg.data.coco import is_box_only, load_coco
    from chromoseg.data.dataset import ChromosomeDataset

    src = _write_box_only_set(tmp_path)
    out = tmp_path / "sub" / "pm.json"  # another folder: image paths must still resolve
    summary = add_pseudo_masks(src, out, dark=True, progress=False)
    assert summary == {"images": 3, "boxes": 6, "masks": 6, "dropped": 0, "skipped_images": 0}
    ds = load_coco(out)
    assert not is_box_only(ds, ds["images"][0])
    a = ds["annotations"][0]
    assert a["pseudo_mask"] == 1 and len(a["rbox"]) == 5 and len(a["endpoints"]) == 2 and "source_bbox" in a
    sample = ChromosomeDataset(out)[0]
    assert sample[1]["masks"].shape[0] == 2 and sample[1]["masks"].any(dim=(1, 2)).all()


def test_split_dataset(tmp_path):
    from chromoseg.data.coco import split_dataset

    src = _write_box_only_set(tmp_path, n_images=5)
    a, b = tmp_path / "a.json", tmp_path / "x" / "b.json"
    assert split_dataset(src, a, b, 0.4, seed=1) == (3, 2)
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    ids_a, ids_b = {im["id"] for im in da["images"]}, {im["id"] for im in db["images"]}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 5
    assert {x["image_id"] for x in db["annotations"]} == ids_b
    assert all((b.parent / im["file_name"]).is_file() for im in db["images"])  # relative paths rewritten
    assert split_dataset(src, a, b, 0.4, seed=1) == (3, 2) and json.loads(b.read_text())["images"] == db["images"]


def test_measured_on_real_mfish_masks(tmp_path):
    """Where the truth is known (M-FISH masks, boxes derived from them): most instances are recovered.
    Two images of a validation slide (A05) imported here, so the test runs wherever the shared data is
    (it skipped without the ignored ``datasets/mfish``)."""
    from chromoseg.data.importers.mfish import import_mfish

    src = require_data("adir-mfish", "A05__XY")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / src.name).symlink_to(src)
    import_mfish(tmp_path / "raw", tmp_path / "set", limit=2, progress=False, quiet=True)
    val = tmp_path / "set" / "val.json"
    assert len(json.loads(val.read_text())["images"]) == 2
    r = measure_pseudo_masks(val, dark=False, limit=2, progress=False)
    assert r["instances"] > 50 and r["mean_iou"] > 0.75 and r["iou_ge_0.5"] > 0.9


def test_brightfield_model_inverts_its_input():
    from chromoseg.models.transform import ChromoTransform

    x = torch.rand(1, 40, 50)
    inv, plain = ChromoTransform((32, 32), invert=True), ChromoTransform((32, 32))
    assert torch.allclose(inv([x])[0].tensors, plain([1 - x])[0].tensors, atol=1e-6)


def test_brightfield_export_carries_its_stain(tmp_path):
    from chromoseg.engine.checkpoint import export_model, read_metadata
    from chromoseg.engine.predict import Predictor, polarity_problem
    from chromoseg.models import build_model
    from chromoseg.models.builder import SMALL

    cfg = dict(variant="rmr", backbone="resnet18", image_size=(64, 64), invert=True, **SMALL)
    torch.manual_seed(0)
    ck = tmp_path / "m.pt"
    torch.save({"model": build_model(**cfg).state_dict(), "model_config": cfg}, ck)
    assert Predictor.from_checkpoint(str(ck)).stain == "brightfield"
    out = export_model(ck, tmp_path / "m.safetensors")["path"]
    assert read_metadata(out)["stain"] == "brightfield"
    fluo = np.zeros((64, 64), np.uint8)
    fluo[20:40, 30:34] = 220
    assert "bright on a dark background" in polarity_problem("brightfield", fluo)
