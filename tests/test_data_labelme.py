"""LabelMe polygons (BioImLab Q-band) into chromoseg's format: masks, split by case, binary evaluation."""
import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from chromoseg.data.importers.labelme import case_of, import_labelme, polygon_mask
from chromoseg.engine.evaluate import evaluate, perfect_results


def _labelme(path, shapes, size=(60, 80), embed=True):
    img = np.zeros(size, np.uint8)
    img[10:20, 10:50] = 200
    buf = io.BytesIO()
    Image.fromarray(np.stack([img] * 3, -1)).save(buf, format="JPEG")
    doc = {"version": "4.5.7", "shapes": shapes, "imagePath": path.with_suffix(".jpg").name,
           "imageData": base64.b64encode(buf.getvalue()).decode() if embed else None,
           "imageHeight": size[0], "imageWidth": size[1]}
    path.write_text(json.dumps(doc))


def test_polygon_mask_and_case():
    m = polygon_mask([[10, 10], [50, 10], [50, 20], [10, 20]], 60, 80)
    assert m[15, 30] and not m[5, 30] and abs(int(m.sum()) - 40 * 10) <= 60
    assert case_of("original_104b") == "104" and case_of("original_7") == "7" and case_of("x") is None


def test_import_labelme(tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    rect = {"label": "chr", "shape_type": "polygon", "points": [[10, 10], [50, 10], [50, 20], [10, 20]]}
    _labelme(src / "original_1.json", [rect, {"label": "chr", "shape_type": "point", "points": [[3, 3]]}])
    _labelme(src / "original_18a.json", [rect])  # case 18: test split
    (src / "original_9.json").write_text("{not json")
    s = import_labelme(src, tmp_path / "out", progress=False)
    assert s["images"] == 2 and s["instances"] == 2 and s["splits"]["test"] == 1
    probs = json.loads((tmp_path / "out" / "problems.json").read_text())
    assert any("original_9" in p["file"] for p in probs) and any("point" in p["problem"] for p in probs)
    data = json.loads((tmp_path / "out" / "all.json").read_text())
    assert data["chromoseg"]["classes_known"] is False
    ann = data["annotations"][0]
    assert ann["class_known"] is False and abs(ann["rbox"][2] - 40) < 2 and len(ann["endpoints"]) == 2
    assert (tmp_path / "out" / "images" / "original_1.png").is_file()
    rep = evaluate(tmp_path / "out" / "all.json", perfect_results(tmp_path / "out" / "all.json"))
    assert rep["modes"] == ["binary"] and "multi" in rep["skipped_modes"]
    assert rep["metrics"]["binary"]["segm"]["AP"] == pytest.approx(1.0)


@pytest.mark.realdata
def test_import_real_bioimlab(tmp_path):
    from conftest import require_data

    src = require_data("bioimlab-qband", "json")
    s = import_labelme(src, tmp_path / "b", limit=3, progress=False)
    assert s["images"] == 3 and 3 * 30 <= s["instances"] <= 3 * 60 and s["problems"] == "no problems found"


def test_labelme_limit_writes_every_split_and_a_report(tmp_path):
    """With --limit the LabelMe import wrote no val/test files and never an import_report.csv."""
    src = tmp_path / "json"
    src.mkdir()
    rect = {"label": "chr", "shape_type": "polygon", "points": [[10, 10], [50, 10], [50, 20], [10, 20]]}
    for case in ("1", "2", "3", "17", "18"):  # train, train, train, val, test
        _labelme(src / f"original_{case}.json", [rect])
    s = import_labelme(src, tmp_path / "out", limit=3, progress=False)
    assert s["splits"] == {"all": 3, "train": 1, "val": 1, "test": 1} and not s["warnings"]
    rows = (tmp_path / "out" / "import_report.csv").read_text().splitlines()
    assert rows[0].startswith("file,case,split") and len(rows) == 4
    s = import_labelme(src, tmp_path / "out2", limit=1, progress=False)
    for name in ("train", "val", "test", "all"):
        assert (tmp_path / "out2" / f"{name}.json").is_file()
    assert any("val.json has no images" in w for w in s["warnings"])


def test_show_draws_a_classless_set_without_class_labels(tmp_path, monkeypatch):
    """`data show` on the BioImLab import labelled every chromosome "1" (its placeholder category)."""
    from chromoseg.karyotype.show import show_dataset
    from chromoseg.karyotype import overlay

    src = tmp_path / "json"
    src.mkdir()
    rect = {"label": "chr", "shape_type": "polygon", "points": [[10, 10], [50, 10], [50, 20], [10, 20]]}
    low = {"label": "chr", "shape_type": "polygon", "points": [[10, 30], [50, 30], [50, 40], [10, 40]]}
    _labelme(src / "original_1.json", [rect, low])
    import_labelme(src, tmp_path / "out", progress=False)
    seen = []
    real = overlay.render_overlay
    monkeypatch.setattr(overlay, "render_overlay", lambda img, insts, **kw: (seen.append(kw), real(img, insts, **kw))[1])
    written, _ = show_dataset(tmp_path / "out" / "all.json", tmp_path / "show", progress=False)
    assert written and seen == [{"classes": False}]
    # what classes=False draws: no label text (pure white pixels), a hue per chromosome
    dark = np.zeros((60, 80), np.uint8)
    insts = [{"category_id": 1, "mask": polygon_mask(s["points"], 60, 80)} for s in (rect, low)]
    white = lambda pic: int((pic == 255).all(-1).sum())  # noqa: E731
    assert white(real(dark, insts)) > 0 and white(real(dark, insts, classes=False)) == 0
    pic = real(dark, insts, classes=False, upscale=1.0)
    assert tuple(pic[15, 30]) != tuple(pic[35, 30])
