"""The dataset format: writing, reading, and validation of broken annotations."""
import json

import numpy as np
import pytest

from chromoseg.data.coco import CocoWriter, decode_mask, encode_mask, load_coco
from chromoseg.data.report import ProblemLog


def rod(h=64, w=80, x0=10, x1=50, y0=20, y1=30):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_rle_round_trip():
    m = rod()
    assert np.array_equal(decode_mask(encode_mask(m), 64, 80), m)
    poly = [[10, 20, 50, 20, 50, 30, 10, 30]]
    assert abs(decode_mask(poly, 64, 80).sum() - m.sum()) < 100


def test_writer_derives_geometry(tmp_path):
    w = CocoWriter()
    iid = w.add_image("a.png", 64, 80)
    w.add_annotation(iid, 7, mask=rod())
    path = w.write(tmp_path / "d.json")
    data = load_coco(path)
    ann = data["annotations"][0]
    assert ann["bbox"] == [10.0, 20.0, 40.0, 10.0]
    cx, cy, rw, rh, ang = ann["rbox"]
    assert (cx, cy) == pytest.approx((30.0, 25.0), abs=0.5)
    assert (rw, rh) == pytest.approx((40.0, 10.0), abs=1.0)
    assert abs(ang) < 1  # a horizontal rod: the long side (w) along x, angle 0 (never -90: that is vertical)
    ends = sorted(ann["endpoints"])
    assert ends[0][0] < 16 and ends[1][0] > 44  # the two ends of the rod
    assert [c["name"] for c in data["categories"]][-2:] == ["X", "Y"]


def test_writer_rejects_bad_input():
    w = CocoWriter()
    iid = w.add_image("a.png", 64, 80)
    with pytest.raises(ValueError, match="category"):
        w.add_annotation(iid, 0, mask=rod())
    with pytest.raises(ValueError, match="empty"):
        w.add_annotation(iid, 3, mask=np.zeros((64, 80), bool))
    with pytest.raises(ValueError, match="shape"):
        w.add_annotation(iid, 3, mask=np.ones((10, 10), bool))


def test_validation_skips_and_counts(tmp_path):
    good = {"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5]}
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}, {"id": 2, "file_name": "b.png"}],
        "annotations": [
            good,
            {**good, "id": 2, "category_id": -1},
            {**good, "id": 3, "category_id": 119},
            {**good, "id": 4, "bbox": [1, 1, 0, 5]},
            {**good, "id": 5, "bbox": [30, 30, 5, 5]},
            {**good, "id": 6, "image_id": 9},
            {**good, "id": 7, "segmentation": []},
            {**good, "id": 8, "segmentation": {"size": [10, 10], "counts": "abc"}},
        ],
    }
    p = tmp_path / "set.json"
    p.write_text(json.dumps(data))
    problems = ProblemLog(quiet=True)
    out = load_coco(p, problems)
    assert [a["id"] for a in out["annotations"]] == [1]
    kinds = problems.counts()
    assert kinds["label (skipped)"] == 2
    assert kinds["empty-box (skipped)"] == 1 and kinds["out-of-image (skipped)"] == 1
    assert kinds["unknown-image (skipped)"] == 1 and kinds["empty-mask (skipped)"] == 1
    assert kinds["image-entry (skipped)"] == 1 and kinds["mask-size (skipped)"] == 1
    assert all(str(p) in pr.file for pr in problems.problems)


def test_unusable_json_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_coco(p)
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO"):
        load_coco(p)
    with pytest.raises(ValueError, match="no such"):
        load_coco(tmp_path / "missing.json")
