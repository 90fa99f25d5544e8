"""Karyotype package: ISCN parser, counts -> summary, karyogram layout, overlay, report, CLI (synthetic data)."""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest

from chromoseg.karyotype.counts import count_karyotype, counts_from_labels
from chromoseg.karyotype.iscn import (
    expected_counts,
    format_iscn,
    karyotype_summary,
    parse_karyotype,
    read_case_info,
    sex_call,
)

NORMAL = [c for c in range(1, 23) for _ in range(2)]


# ------------------------------------------------------------------------------------ ISCN parser
# (raw string as found in the M-FISH case_info.txt files, cleaned text, total, sex, gains, losses,
#  structural classes)
REAL_CASES = [
    ("46,XY", "46,XY", 46, "XY", {}, {}, set()),
    ("45,XY,-8", "45,XY,-8", 45, "XY", {}, {8: 1}, set()),
    ("44,XX,-8, -13", "44,XX,-8, -13", 44, "XX", {}, {8: 1, 13: 1}, set()),
    ("47,XX,+r(9)acare Hermann Cytogenetics\n", "47,XX,+r(9)", 47, "XX", {}, {}, {9}),
    ("46,XX,t(4;9)YUTUYTUY", "46,XX,t(4;9)", 46, "XX", {}, {}, {4, 9}),
    ("46,XY\x00\x00\x00", "46,XY", 46, "XY", {}, {}, set()),
    ("46,XX,t(X;4)etics Laboratory\r\n", "46,XX,t(X;4)", 46, "XX", {}, {}, {23, 4}),
    ("44,X,-5,-14,+18,Ins(11;8),t(5;16),t(7;16),t(9;14),t(14;15),t(5;17)", None, 44, "X", {18: 1},
     {5: 1, 14: 1}, {5, 7, 8, 9, 11, 14, 15, 16, 17}),
    ("50,XY,+7,+8,+15,+20", "50,XY,+7,+8,+15,+20", 50, "XY", {7: 1, 8: 1, 15: 1, 20: 1}, {}, set()),
    ("47,XY,+?13,t(3;13),t(8;3),t(16;8)", None, 47, "XY", {13: 1}, {}, {3, 8, 13, 16}),
    ("45,XY,-18,-22,t(7;8),t(9;10),t(11;20),t(15;18), +t(20;5)", None, 45, "XY", {}, {18: 1, 22: 1},
     {5, 7, 8, 9, 10, 11, 15, 18, 20}),
    ("45,XX,-13,-18,+der(5)", None, 45, "XX", {}, {13: 1, 18: 1}, {5}),
    ("42,X,-5,-14,-21,-21,+18,Ins(11;8),t(5;16)", None, 42, "X", {18: 1}, {5: 1, 14: 1, 21: 2}, {5, 8, 11, 16}),
]


@pytest.mark.parametrize("raw,text,total,sex,gains,losses,struct", REAL_CASES)
def test_parse_real_case_strings(raw, text, total, sex, gains, losses, struct):
    k = parse_karyotype(raw.encode("latin-1"))
    if text is not None:
        assert k.text == text
    assert k.total == total and k.sex == sex
    assert k.gains == gains and k.losses == losses
    assert k.structural_classes == struct
    assert k.consistent, k.warnings
    exp, unc = expected_counts(k)
    assert sum(exp.values()) == total
    assert unc >= struct


def test_parse_cuts_junk_and_reports_it():
    k = parse_karyotype(b"47,XX,+r(9)acare Hermann Cytogenetics\n\nmore")
    assert k.junk.startswith("acare") and any("ignored" in w for w in k.warnings)
    assert k.structural[0].extra and k.structural[0].name == "r"
    assert k.expected_counts()[9] == 3 and 9 in k.uncertain_classes()


def test_parse_questioned_gain_and_summary():
    k = parse_karyotype("47,XY,+?13,t(3;13)")
    assert 13 in k.questioned
    assert karyotype_summary(k) == "47,XY,+?13"


def test_parse_synthetic_and_inconsistent():
    k = parse_karyotype("47,XXY")
    assert (k.n_x, k.n_y, k.total) == (2, 1, 47) and k.consistent
    assert karyotype_summary(k) == "47,XXY"
    assert karyotype_summary(parse_karyotype("45,X")) == "45,X"
    bad = parse_karyotype("46,XY,-8")  # 46 declared, 45 implied
    assert not bad.consistent and any("differs" in w for w in bad.warnings)
    # a self-contradicting string makes every class's count uncertain (the docstring's promise)
    assert bad.uncertain_classes() == set(range(1, 25))
    assert parse_karyotype("45,XY,-8").uncertain_classes() == set()
    assert parse_karyotype("47,XY,+mar").markers == 1
    with pytest.raises(ValueError):
        parse_karyotype("XY,46")


def test_read_case_info_bytes(tmp_path):
    p = tmp_path / "case_info.txt"
    p.write_bytes(b"46,XY\x00\x00\x00\xe9\xff")
    assert read_case_info(p).text == "46,XY"


# ------------------------------------------------------------------------------------ counts
def test_counts_to_summary():
    assert counts_from_labels(NORMAL + [23, 24]).summary == "46,XY"
    assert counts_from_labels([c for c in NORMAL] + [23, 23]).summary == "46,XX"
    loss8 = list(NORMAL)
    loss8.remove(8)
    assert counts_from_labels(loss8 + [23, 24]).summary == "45,XY,-8"
    assert counts_from_labels(NORMAL + [21, 23, 23]).summary == "47,XX,+21"
    assert counts_from_labels(NORMAL + [23]).summary == "45,X"
    assert counts_from_labels(NORMAL + [23, 23, 24]).summary == "47,XXY"
    k = counts_from_labels(NORMAL + [23, 24])
    assert not k.flags and not k.findings and k.sex == "XY"


def test_sex_call_and_format():
    assert sex_call(1, 1) == "XY" and sex_call(2, 0) == "XX" and sex_call(1, 0) == "X"
    assert sex_call(2, 1) == "XXY" and sex_call(0, 0) == ""
    c = {i: 2 for i in range(1, 23)}
    c.update({23: 0, 24: 0, 5: 1, 14: 1, 18: 3})
    assert format_iscn(c) == "43,?,-5,-14,+18"


def test_counts_flags_and_questioned():
    insts = [{"category_id": c, "score": 0.99} for c in NORMAL + [23, 24]]
    insts.remove({"category_id": 8, "score": 0.99})
    # one weak chromosome called 9 whose second choice is 8: the -8 / +9 become questioned
    p = np.full(24, 0.01)
    p[8], p[7] = 0.5, 0.4
    insts.append({"category_id": 9, "score": 0.6, "class_scores": p.tolist()})
    k = count_karyotype(insts)
    assert k.summary == "46,XY,-?8,+?9"
    assert any(f.startswith("low_score") for f in k.flags)
    assert any(f.startswith("unsure_class") for f in k.flags)
    k2 = count_karyotype([{"category_id": c} for c in NORMAL[:30]] + [{"category_id": 0}] * 3)
    assert any(f.startswith("count") for f in k2.flags) and any(f.startswith("unassigned") for f in k2.flags)
    assert k2.total == 33 and k2.unassigned == 3


# ------------------------------------------------------------------------------------ layout
def _rect_mask(shape, cx, cy, length, width, angle_deg, pinch_at=None):
    """A rod along (cos a, -sin a), optionally pinched (narrower) at a relative position along it."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    a = math.radians(angle_deg)
    dl = np.array([math.cos(a), -math.sin(a)])
    ds = np.array([math.sin(a), math.cos(a)])
    u = (xx - cx) * dl[0] + (yy - cy) * dl[1]
    v = (xx - cx) * ds[0] + (yy - cy) * ds[1]
    half_w = np.full_like(u, width / 2)
    if pinch_at is not None:
        pos = u / length + 0.5  # 0 at the start (-dl end), 1 at the end
        half_w = half_w * (1 - 0.6 * np.exp(-((pos - pinch_at) / 0.04) ** 2))
    return (np.abs(u) <= length / 2) & (np.abs(v) <= half_w)


def _scene(bright=False):
    from chromoseg.karyotype.layout import rbox_from_mask

    shape = (240, 320)
    specs = [  # (class, cx, cy, length, width, angle)
        (1, 60, 60, 80, 12, 0), (1, 160, 50, 78, 12, 30), (2, 250, 60, 70, 11, -60),
        (7, 60, 150, 50, 10, 90), (23, 150, 150, 55, 10, 45), (24, 250, 150, 25, 9, 10),
        (0, 120, 210, 40, 9, 0),
    ]
    img = np.full(shape, 40 if bright else 220, np.uint8)
    insts = []
    for c, cx, cy, L, w, a in specs:
        m = _rect_mask(shape, cx, cy, L, w, a, pinch_at=0.3)
        img[m] = 200 if bright else 60
        insts.append({"category_id": c, "mask": m, "rbox": rbox_from_mask(m), "bbox": None,
                      "endpoints": None, "score": 0.95, "class_scores": None})
    return img, insts


def test_rbox_from_mask_canonical():
    from chromoseg.karyotype.layout import rbox_from_mask

    m = _rect_mask((100, 100), 50, 50, 60, 8, 30)
    cx, cy, w, h, a = rbox_from_mask(m)
    assert w >= h and -90 <= a < 90
    assert abs(cx - 50) < 1 and abs(cy - 50) < 1 and abs(w - 60) < 3 and abs(h - 8) < 3
    assert abs(a - 30) < 3


def test_upright_crop_is_a_rotation_not_a_mirror():
    from chromoseg.karyotype.layout import upright_crop

    img = np.full((101, 101), 255, np.uint8)
    m = np.zeros((101, 101), bool)
    m[45:56, 20:81] = True  # horizontal rod, centre (50.5, 50.5)
    img[m] = 120
    img[48:53, 72:77] = 0  # marker towards +x (along the long axis)
    img[45:48, 45:56] = 30  # marker towards -y (the top edge)
    g, mc = upright_crop(img, m, [50.5, 50.5, 61, 11, 0.0])
    assert g.shape[0] > 4 * g.shape[1]  # vertical now
    ys, xs = np.nonzero(g < 15)  # the +x marker: below the centre (d_long points down)
    assert ys.mean() > g.shape[0] * 0.7
    ys, xs = np.nonzero((g >= 20) & (g <= 40))  # the top-edge marker lies on the right
    assert xs.mean() > g.shape[1] / 2


def test_orientation_short_arm_up_both_ways():
    from chromoseg.karyotype.layout import orient_upright, upright_crop

    for pinch in (0.25, 0.75):
        m = _rect_mask((120, 160), 80, 60, 100, 14, 0, pinch_at=pinch)
        img = np.where(m, 80, 255).astype(np.uint8)
        g, mc = upright_crop(img, m, [80, 60, 100, 14, 0.0])
        g2, m2, info = orient_upright(g, mc)
        assert info["rule"] == "centromere" and info["sure"]
        rows = np.nonzero(m2.any(1))[0]
        width = m2.sum(1)[rows[0]:rows[-1] + 1]
        inner = slice(int(0.1 * len(width)), int(0.9 * len(width)))
        narrow = inner.start + int(np.argmin(width[inner]))
        assert narrow < len(width) / 2  # the centromere is in the upper half: short arm up


def test_orientation_class_prior():
    from chromoseg.karyotype.layout import orient_upright, upright_crop

    for pinch in (0.3, 0.7):
        m = _rect_mask((120, 160), 80, 60, 100, 14, 0, pinch_at=pinch)
        img = np.where(m, 80, 255).astype(np.uint8)
        g, mc = upright_crop(img, m, [80, 60, 100, 14, 0.0])
        _, m4, info = orient_upright(g, mc, class_id=4)  # submetacentric, index ~0.29
        assert info["rule"] == "class_prior" and info["sure"]
        rows = np.nonzero(m4.any(1))[0]
        width = m4.sum(1)[rows[0]:rows[-1] + 1]
        assert int(np.argmin(width[5:-5])) + 5 < len(width) / 2
        _, _, info1 = orient_upright(g, mc, class_id=19)  # metacentric: never sure
        assert not info1["sure"]


@pytest.mark.parametrize("bright", [False, True])
def test_karyogram_layout_rows_and_homologues(bright):
    from chromoseg.karyotype.layout import render_karyogram

    img, insts = _scene(bright)
    kg, place = render_karyogram(img, insts, title="synthetic", return_layout=True)
    assert kg.dtype == np.uint8 and kg.ndim == 3 and kg.shape[2] == 3
    assert (kg[:3] == 255).all()  # white background
    by = {}
    for p in place:
        by.setdefault(p["category_id"], []).append(p)
    assert all(p["row"] == 0 for p in by[1]) and by[2][0]["row"] == 0
    assert by[7][0]["row"] == 1
    assert by[23][0]["row"] == 3 and by[24][0]["row"] == 3
    assert by[0][0]["row"] == 4  # unassigned: a row of its own
    a, b = sorted(by[1], key=lambda p: p["x"])
    assert 0 <= b["x"] - (a["x"] + a["w"]) <= 8  # homologues side by side
    assert not any(p["row"] == 0 and a["x"] < p["x"] < b["x"] for p in place)
    for p in place:  # every rod stands upright
        assert p["h"] > 1.5 * p["w"], p
    assert all(p["h"] > 3 * p["w"] for p in by[1])  # incl. the horizontal one (80 x 12 px)
    # chromosomes are dark on white, whatever the input polarity
    inside = [kg[p["y"] + p["h"] // 2, p["x"] + p["w"] // 2, 0] for p in place]
    assert np.median(inside) < 128
    # one common scale: the longest (class 1, 80 px) is the tallest
    assert max(place, key=lambda p: p["h"])["category_id"] == 1


def test_karyogram_marks_weak_and_box_only():
    from chromoseg.karyotype.layout import LOW_SCORE_COLOR, render_karyogram

    img, insts = _scene()
    insts[0]["score"] = 0.3
    insts[3]["mask"] = None  # box-only: approximate mask from the box
    ys, xs = np.nonzero(_rect_mask(img.shape, 60, 150, 50, 10, 90))
    insts[3]["bbox"] = [xs.min() - 2.0, ys.min() - 2.0, xs.max() - xs.min() + 5.0, ys.max() - ys.min() + 5.0]
    insts[3]["rbox"] = None
    kg, place = render_karyogram(img, insts, return_layout=True)
    assert any(p["category_id"] == 7 and p["h"] > 2 * p["w"] for p in place)
    assert (kg.reshape(-1, 3) == np.array(LOW_SCORE_COLOR, np.uint8)).all(1).any()


def test_instances_from_coco_and_overlay():
    from chromoseg.data.coco import encode_mask
    from chromoseg.karyotype.layout import instances_from_coco
    from chromoseg.karyotype.overlay import render_overlay

    img, insts = _scene()
    coco = {"images": [{"id": 3, "file_name": "a.png", "height": 240, "width": 320}],
            "annotations": [{"id": i, "image_id": 3, "category_id": it["category_id"],
                             "segmentation": encode_mask(it["mask"]), "bbox": [0, 0, 1, 1], "score": 0.9}
                            for i, it in enumerate(insts)]}
    got = instances_from_coco(coco, 3)
    assert len(got) == len(insts) and all(g["mask"].shape == (240, 320) for g in got)
    assert np.array_equal(got[0]["mask"], insts[0]["mask"])
    res = instances_from_coco(coco["annotations"], 3)  # a results list: size from the RLE
    assert len(res) == len(insts)
    ov = render_overlay(img, got)
    assert ov.ndim == 3 and ov.shape[2] == 3 and ov.shape[0] >= 240


# ------------------------------------------------------------------------------------ report
def _results(tmp_path):
    from chromoseg.karyotype.layout import render_karyogram, save_png

    img, insts = _scene()
    kg = render_karyogram(img, insts)
    normal = counts_from_labels(NORMAL + [23, 24])
    finding = counts_from_labels(NORMAL + [21, 23, 23])
    flagged = count_karyotype([{"category_id": c, "score": 0.5} for c in NORMAL + [23, 24]])
    return [
        {"image": "a_normal.tif", "overlay": np.zeros((20, 30, 3), np.uint8), "karyogram": kg, "counts": normal},
        {"image": "b_flagged.tif", "overlay": None, "karyogram": str(save_png(tmp_path / "k.png", kg)),
         "counts": flagged, "truth": "46,XY", "truth_summary": "46,XY"},
        {"image": "c_trisomy.tif", "overlay": None, "karyogram": kg, "counts": finding},
        {"image": "d_failed.tif", "error": "cannot decode image", "counts": {}},
    ]


def test_report_self_contained_and_sorted(tmp_path):
    from chromoseg.karyotype.report import write_report

    html_path, csv_path = write_report(_results(tmp_path), tmp_path / "r.html")
    text = html_path.read_text()
    assert not re.search(r"https?://", text)
    srcs = re.findall(r"src='([^']*)'", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in text and "<script" not in text
    order = [text.index(n) for n in ("d_failed", "b_flagged", "c_trisomy", "a_normal")]
    assert order == sorted(order)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["image"] for r in rows] == ["d_failed.tif", "b_flagged.tif", "c_trisomy.tif", "a_normal.tif"]
    assert rows[2]["summary"] == "47,XX,+21" and rows[2]["n_21"] == "3"


# ------------------------------------------------------------------------------------ CLI
def test_cli_karyogram_end_to_end(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from chromoseg.cli import main
    from chromoseg.data.coco import encode_mask

    img, insts = _scene(bright=True)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(img).save(tmp_path / "imgs" / "m1.png")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    anns = [{"id": i + 1, "image_id": 1, "category_id": it["category_id"] or 1,
             "segmentation": encode_mask(it["mask"]), "bbox": [0.0, 0.0, 10.0, 10.0], "area": 1, "iscrowd": 0}
            for i, it in enumerate(insts)]
    coco = {"images": [{"id": 1, "file_name": "m1.png", "height": 240, "width": 320, "karyotype": "46,XY"},
                       {"id": 2, "file_name": "broken.png", "height": 240, "width": 320}],
            "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in range(1, 25)]}
    ann_path = tmp_path / "set.json"
    ann_path.write_text(json.dumps(coco))
    # named as `chromoseg predict` names them: its own image ids, the file name decides
    results = [dict(a, score=0.5, image_id=2, file_name="/elsewhere/m1.png") for a in anns]
    results[-1]["category_id"] = 0
    (tmp_path / "res.json").write_text(json.dumps(results))
    # what predict records beside its results: the overlay's title names the model and threshold
    (tmp_path / "images.json").write_text(json.dumps({"images": [
        {"id": 2, "file_name": "/elsewhere/m1.png", "model": {"name": "mfish"}, "inference": {"score_threshold": 0.2}}]}))
    out = tmp_path / "out"
    import chromoseg.karyotype.overlay as ov

    real, titles = ov.render_overlay, []
    monkeypatch.setattr(ov, "render_overlay", lambda *a, **kw: titles.append(kw.get("title")) or real(*a, **kw))
    rc = main(["karyogram", str(ann_path), "--images", str(tmp_path / "imgs"), "--out", str(out),
               "--results", str(tmp_path / "res.json"), "--no-progress"])
    # one image of two skipped: exit 3, named on stderr and in problems.json, as predict does (it was 0,
    # with the problems as JSON in problems.txt, and overlays without title or legend)
    assert rc == 3 and "skipped: broken.png" in capsys.readouterr().err
    assert (out / "m1.karyogram.png").is_file() and (out / "m1.overlay.png").is_file()
    assert (out / "report.html").is_file() and (out / "report.csv").is_file()
    assert not (out / "problems.txt").exists()
    assert "broken.png" in json.dumps(json.loads((out / "problems.json").read_text()))
    assert titles == [ov.overlay_title("m1.png", model="mfish", score_threshold=0.2, chromosomes=len(anns))]
    titles.clear()
    assert main(["karyogram", str(ann_path), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "gt"),
                 "--limit", "1", "--quiet"]) == 0  # the annotations: no model, no threshold
    assert titles == [ov.overlay_title("m1.png", chromosomes=len(anns))]
    lines = (out / "summaries.tsv").read_text().splitlines()
    assert any(line.startswith("m1.png\t") and "low_score" in line for line in lines)
    assert main(["karyogram", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert main(["karyogram", str(ann_path), "--out", str(out), "--results", str(tmp_path / "x.json")]) == 2
    assert "no such" in capsys.readouterr().err


def test_cli_help_teaches(capsys):
    from chromoseg.cli import main

    with pytest.raises(SystemExit):
        main(["karyogram", "--help"])
    text = capsys.readouterr().out
    assert "report.html" in text and "--results" in text and "examples" in text


def test_far_from_a_karyotype_is_no_call():
    from chromoseg.karyotype.counts import count_karyotype

    k = count_karyotype([{"category_id": c, "score": 0.9} for c in (1, 1, 2, 23)])
    assert k.summary == "4,X,?" and any(f.startswith("no_call") for f in k.flags)
    k = count_karyotype([])
    assert k.summary == "0,?,?"


def test_truth_flag_names_both_karyotypes(tmp_path):
    """The flag read "the known karyotype 46,XY reads 46,XY, this summary differs": it now names the
    summary that differs and the known karyotype (and what a structural one counts as)."""
    from chromoseg.karyotype.pipeline import analyse_metaphase

    img, insts = _scene()
    row = analyse_metaphase(img, insts, "a.tif", tmp_path, "a", truth="46,XY", overlay=False)
    ours = row["counts"].summary
    (flag,) = [f for f in row["flags"] if f.startswith("truth:")]
    assert flag == f"truth: this summary {ours} differs from the known karyotype 46,XY" and "reads" not in flag
    row = analyse_metaphase(img, insts, "a.tif", tmp_path, "a", truth="46,XX,t(4;9)", overlay=False)
    assert any("known karyotype 46,XX,t(4;9) (counted as" in f for f in row["flags"])


def test_demo_says_whether_model_and_expert_agree():
    from chromoseg.cli.demo import _agreement
    from chromoseg.karyotype.counts import counts_from_labels

    expert = [{"image": "V1701XYD.tif", "counts": counts_from_labels(NORMAL + [23, 24]), "truth": "46,XY"}]
    (line,) = _agreement([{"file_name": "/x/V1701XYD.tif", "summary": "47,XXY"}], expert)
    assert "DISAGREE" in line and "model 47,XXY" in line and "expert annotations 46,XY" in line
    (line,) = _agreement([{"file_name": "/x/V1701XYD.tif", "summary": "46,XY"}], expert)
    assert "agrees" in line
