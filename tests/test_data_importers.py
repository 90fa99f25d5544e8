"""Importers: M-FISH label maps -> instances, VOC boxes -> box-only sets, with validation."""
import json

import numpy as np
import pytest
from PIL import Image

from chromoseg.data.coco import load_coco
from chromoseg.data.importers.mfish import derive_instances, expected_counts, import_mfish
from chromoseg.data.importers.voc import import_voc


def test_expected_counts_from_karyotype():
    counts, uncertain, total = expected_counts("45,XY,-8")
    assert total == 45 and counts[8] == 1 and counts[1] == 2 and counts[23] == 1 and counts[24] == 1
    counts, _, _ = expected_counts("46,XX")
    assert counts[23] == 2 and counts[24] == 0


def _label_map():
    """Synthetic map: class 3 crossed by class 5 (overlap 255) so 3 is cut in two; two separate 7s."""
    L = np.zeros((60, 80), np.uint8)
    L[20:24, 5:35] = 3  # a horizontal 3, crossed at x 18-21
    L[5:40, 18:22] = 5  # a vertical 5
    L[20:24, 18:22] = 255  # the crossing
    L[45:49, 5:25] = 3  # the other 3
    L[50:54, 40:60] = 7
    L[30:34, 50:75] = 7
    L[2, 70] = 9  # a one-pixel fragment
    return L


def test_derive_instances_rule():
    expected = {c: 2 for c in range(1, 23)}
    expected[5] = 1
    inst, unresolved, dropped = derive_instances(_label_map(), expected, uncertain={23, 24})
    by_class = {}
    for c, m, flag in inst:
        by_class.setdefault(c, []).append((m, flag))
    assert len(by_class[3]) == 2, "the 3 cut by the overlap must be joined into one chromosome"
    crossed = max(by_class[3], key=lambda mf: mf[0].sum())[0]
    assert crossed[21, 19] and crossed[20:24, 5:35].all()  # it includes the overlap pixels
    assert by_class[5][0][0][21, 19]  # ...and so does the crossing chromosome
    assert len(by_class[7]) == 2 and dropped == 1
    assert 9 in unresolved and 1 in unresolved  # class 9 only had a fragment; class 1 is absent


def test_import_real_mfish_slide(tmp_path):
    from conftest import require_data

    root = require_data("adir-mfish")
    sub = tmp_path / "mfish"
    sub.mkdir()
    (sub / "A01__XY").symlink_to(root / "A01__XY")
    (sub / "V18__08").symlink_to(root / "V18__08")
    summary = import_mfish(sub, tmp_path / "out", progress=False)
    assert summary["images"] == 6 and summary["skipped_images"] == 0
    rows = (tmp_path / "out" / "import_report.csv").read_text().splitlines()
    assert len(rows) == 7
    data = load_coco(tmp_path / "out" / "all.json")
    per_image = {}
    for a in data["annotations"]:
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    names = {im["id"]: im["file_name"].rsplit("/", 1)[-1] for im in data["images"]}
    counts = {names[i]: n for i, n in per_image.items()}
    # measured once by hand on the label maps: four A01 cells give 46, one has touching 12s (45)
    assert sorted(counts[n] for n in names.values() if n.startswith("A01")) == [45, 46, 46, 46, 46]
    assert counts["V180408D.tif"] in (44, 45, 46)  # 45,XY,-8
    assert {im["karyotype"] for im in data["images"]} == {"46,XY", "45,XY,-8"}
    # the split: A01 is train, V18 is val
    assert len(json.loads((tmp_path / "out" / "train.json").read_text())["images"]) == 5
    assert len(json.loads((tmp_path / "out" / "val.json").read_text())["images"]) == 1
    a = data["annotations"][0]
    assert len(a["rbox"]) == 5 and len(a["endpoints"]) == 2 and a["segmentation"]["counts"]


def test_import_mfish_bad_inputs(tmp_path):
    root = tmp_path / "set" / "A01__XY"
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "A0101XYD.tif")
    Image.fromarray(np.zeros((31, 40), np.uint8)).save(root / "A0101XYK.tif")  # size mismatch
    (root / "A0102XYD.tif").write_bytes(b"garbage")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "A0102XYK.tif")
    L = np.zeros((30, 40), np.uint8)
    L[5:10, 5:20] = 1
    L[20, 20] = 119
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "A0103XYD.tif")
    Image.fromarray(L).save(root / "A0103XYK.tif")
    (root / "case_info.txt").write_bytes(b"46,XY\x00\x00junk")
    summary = import_mfish(tmp_path / "set", tmp_path / "out", progress=False)
    assert summary["images"] == 1 and summary["skipped_images"] == 2
    problems = json.loads((tmp_path / "out" / "problems.json").read_text())
    text = json.dumps(problems)
    assert "A0101XYK.tif" in text and "A0102XYD.tif" in text and "[119]" in text
    with pytest.raises(FileNotFoundError, match="no such folder"):
        import_mfish(tmp_path / "nowhere", tmp_path / "out2", progress=False)


def _voc(path, name, objects, size=(40, 30)):
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.write_text(f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


def test_import_voc_validation(tmp_path):
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.full((30, 40), 200, np.uint8)).save(root / "images" / "a.jpg")
    Image.fromarray(np.full((30, 40), 200, np.uint8)).save(root / "images" / "b.jpg")
    (root / "images" / "c.jpg").write_bytes(b"broken")
    _voc(root / "annotations" / "a.xml", "a.jpg", [("A1", (1, 1, 10, 20)), ("G22", (5, 5, 9, 9)), ("X", (30, 20, 50, 40)),
                                                  ("-1", (1, 1, 5, 5)), ("119", (1, 1, 5, 5)), ("C7", (8, 8, 8, 12)),
                                                  ("Y", (60, 60, 70, 70))])
    _voc(root / "annotations" / "b.xml", "b.jpg", [("B4", (2, 2, 12, 12))], size=(80, 60))
    _voc(root / "annotations" / "c.xml", "c.jpg", [("B4", (2, 2, 12, 12))])
    (root / "train.txt").write_text("a\nb\nc\nmissing\n")
    summary = import_voc(root, tmp_path / "out", progress=False)
    assert summary["images"] == 2 and summary["skipped_images"] == 2
    assert summary["boxes"] == 4 and summary["skipped_boxes"] == 4
    data = load_coco(tmp_path / "out" / "train.json")
    assert data["chromoseg"]["box_only"] is True
    cats = sorted(a["category_id"] for a in data["annotations"])
    assert cats == [1, 4, 22, 23]
    clipped = [a for a in data["annotations"] if a["category_id"] == 23][0]
    assert clipped["bbox"] == [30.0, 20.0, 10.0, 10.0]
    text = (tmp_path / "out" / "problems.json").read_text()
    for needle in ("'-1'", "'119'", "empty box", "outside", "clipped", "c.jpg", "b.xml", "missing"):
        assert needle in text, needle


def test_import_real_gband_subset(tmp_path):
    from conftest import require_data

    src = require_data("cil-gband")
    names = (src / "train.txt").read_text().split()[:4]
    root = tmp_path / "g"
    root.mkdir()
    (root / "images").symlink_to(src / "images")
    (root / "annotations").symlink_to(src / "annotations")
    (root / "train.txt").write_text("\n".join(names))
    summary = import_voc(root, tmp_path / "out", progress=False)
    assert summary["images"] == 4 and summary["skipped_images"] == 0
    assert 4 * 40 <= summary["boxes"] <= 4 * 50  # about 46 per metaphase
    data = load_coco(tmp_path / "out" / "train.json")
    assert {a["category_id"] for a in data["annotations"]} <= set(range(1, 25))


def test_limit_spreads_over_the_splits():
    from chromoseg.data.splits import take_spread

    items = ["train"] * 109 + ["val"] * 23 + ["test"] * 25  # the M-FISH split, in file order
    picked = take_spread(list(range(len(items))), lambda i: items[i], 12)
    assert [sum(items[i] == s for i in picked) for s in ("train", "val", "test")] == [7, 2, 3]
    assert picked == sorted(picked) and picked[:7] == list(range(7))  # each split's first ones, in order
    assert [items[i] for i in take_spread(list(range(157)), lambda i: items[i], 2)] == ["train", "val"]
    assert take_spread([1, 2, 3], lambda i: None, None) == [1, 2, 3]


@pytest.mark.realdata
def test_import_mfish_with_a_limit_fills_every_split_and_train_accepts_it(tmp_path, capsys, monkeypatch):
    """`data import mfish --limit 12` wrote 12 training images and empty val/test files, and `train --data`
    then died after its first epoch (float(None): the empty validation set's loss). The limit now draws
    from every split; an empty split is warned about at import and at train (trained without it)."""
    from conftest import require_data

    from chromoseg.cli import main

    root = require_data("adir-mfish")
    out = tmp_path / "mfish"
    assert main(["data", "import", "mfish", str(root), "--out", str(out), "--limit", "3", "--quiet"]) == 0
    said = capsys.readouterr()
    assert "warning" not in said.err and "WARNING" not in said.err
    sizes = {s: len(json.loads((out / f"{s}.json").read_text())["images"]) for s in ("train", "val", "test")}
    assert sizes == {"train": 1, "val": 1, "test": 1}
    assert len((out / "import_report.csv").read_text().splitlines()) == 4
    # a set whose val.json is empty: train says so before it starts and trains without validation
    (out / "val.json").write_text(json.dumps({**json.loads((out / "val.json").read_text()), "images": [],
                                              "annotations": []}))
    import chromoseg.engine.train as train_mod

    seen = {}
    monkeypatch.setattr(train_mod, "fit", lambda cfg, **kw: seen.setdefault("cfg", cfg) and {
        "epochs_run": 0, "stopped": None, "best": None, "best_epoch": None, "out": cfg.out})
    assert main(["train", "--data", str(out), "--out", str(tmp_path / "run"), "--max-images", "4"]) == 0
    assert seen["cfg"].val is None and "has no images" in capsys.readouterr().err
    (out / "train.json").write_text(json.dumps({"images": [], "annotations": []}))
    assert main(["train", "--data", str(out), "--out", str(tmp_path / "run")]) == 2
    assert "has no images" in capsys.readouterr().err


def test_import_voc_limit_and_quiet(tmp_path, caplog):
    """`data import voc --limit 5` imported every image (the option was accepted and ignored), and --quiet
    still logged a line per problem."""
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in "abcde":
        Image.fromarray(np.full((30, 40), 200, np.uint8)).save(root / "images" / f"{name}.jpg")
        _voc(root / "annotations" / f"{name}.xml", f"{name}.jpg", [("A1", (1, 1, 10, 20)), ("B4", (30, 20, 50, 40))])
    (root / "train.txt").write_text("a\nb\nc\n")
    (root / "test.txt").write_text("d\ne\n")
    from chromoseg.cli import main

    with caplog.at_level("WARNING"):
        assert main(["data", "import", "voc", str(root), "--out", str(tmp_path / "out"), "--limit", "2", "--quiet"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert [len(load_coco(tmp_path / "out" / f"{s}.json")["images"]) for s in ("train", "test")] == [1, 1]
    assert "clipped" in (tmp_path / "out" / "problems.json").read_text()  # every problem still recorded
    with caplog.at_level("WARNING"):
        summary = import_voc(root, tmp_path / "out2", progress=False)
    assert summary["images"] == 5 and len([r for r in caplog.records if "clipped" in r.getMessage()]) == 5


def test_importers_keep_the_files_pixel_size(tmp_path):
    """`data import`: an image whose file records its pixel size (TIFF resolution tags, written by
    tifffile) keeps it in its COCO image record as pixel_size_um; one without has no such key."""
    import tifffile

    from chromoseg.data.importers.labelme import import_labelme

    img = np.full((30, 40), 200, np.uint8)
    img[5:20, 8:12] = 40
    tagged = dict(resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER")  # 0.2 um per pixel
    # VOC boxes
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    tifffile.imwrite(root / "images" / "a.tif", img, **tagged)
    tifffile.imwrite(root / "images" / "b.tif", img)
    for n in "ab":
        _voc(root / "annotations" / f"{n}.xml", f"{n}.tif", [("A1", (8, 5, 12, 20))])
    import_voc(root, tmp_path / "voc-out", progress=False)
    voc = {im["file_name"].rsplit("/", 1)[-1]: im for im in load_coco(tmp_path / "voc-out" / "all.json")["images"]}
    assert voc["a.tif"]["pixel_size_um"] == pytest.approx(0.2) and "pixel_size_um" not in voc["b.tif"]
    # M-FISH label maps
    slide = tmp_path / "mfish" / "A01__XY"
    slide.mkdir(parents=True)
    L = np.zeros((30, 40), np.uint8)
    L[5:20, 8:12] = 1
    for n, kw in (("01", tagged), ("02", {})):
        tifffile.imwrite(slide / f"A01{n}XYD.tif", 255 - img, **kw)
        Image.fromarray(L).save(slide / f"A01{n}XYK.tif")
    (slide / "case_info.txt").write_text("46,XY")
    import_mfish(tmp_path / "mfish", tmp_path / "mfish-out", progress=False, quiet=True)
    mf = {im["file_name"].rsplit("/", 1)[-1]: im for im in load_coco(tmp_path / "mfish-out" / "all.json")["images"]}
    assert mf["A0101XYD.tif"]["pixel_size_um"] == pytest.approx(0.2) and "pixel_size_um" not in mf["A0102XYD.tif"]
    # LabelMe polygons with the image file beside them
    lm = tmp_path / "labelme"
    lm.mkdir()
    for n, kw in (("original_1", tagged), ("original_2", {})):
        tifffile.imwrite(lm / f"{n}.tif", img, **kw)
        (lm / f"{n}.json").write_text(json.dumps({"imagePath": f"{n}.tif", "imageHeight": 30, "imageWidth": 40,
                                                  "shapes": [{"label": "chr", "shape_type": "polygon",
                                                              "points": [[8, 5], [12, 5], [12, 20], [8, 20]]}]}))
    import_labelme(lm, tmp_path / "lm-out", split=None, progress=False, quiet=True)
    got = {im["file_name"].rsplit("/", 1)[-1]: im for im in load_coco(tmp_path / "lm-out" / "all.json")["images"]}
    assert got["original_1.tif"]["pixel_size_um"] == pytest.approx(0.2) and "pixel_size_um" not in got["original_2.tif"]
