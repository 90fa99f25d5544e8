"""Karyogram-pair builder (paper II.A): layout parsing, matching, building, CLI.

Synthetic pairs (banded rods + a karyogram made from them) run everywhere; the real karyogram-pairs
set is used when ../shared/data (or $CHROMOSEG_DATA) is there, and skipped with a message otherwise.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from chromoseg.data.karyogram_pairs import (
    MatchParams,
    PairError,
    build_dataset,
    build_pair,
    match_pair,
    pair_by_name,
    pair_key,
    parse_karyogram,
    read_pairs_csv,
)
from chromoseg.data.karyogram_pairs.layout import _align_row
from chromoseg.data.karyogram_pairs.synthetic import evaluate_matches, fake_metaphase, make_karyogram

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CHROMOSEG_DATA") or REPO.parent / "shared" / "data")
REAL = DATA / "karyogram-pairs"


def _pair(tmp: Path, name: str, seed: int, drop=(), karyo_seed=None, n=8):
    img, inst = fake_metaphase(n, seed=seed)
    if karyo_seed is not None:
        kimg, kinst = fake_metaphase(n, seed=karyo_seed)
    else:
        kimg, kinst = img, inst
    kar, placed = make_karyogram(kimg, kinst, scale=1.3, drop=drop)
    (tmp / "a").mkdir(exist_ok=True)
    (tmp / "k").mkdir(exist_ok=True)
    mp, kp = tmp / "a" / f"{name}.A.png", tmp / "k" / f"{name}.K.png"
    cv2.imwrite(str(mp), img)
    cv2.imwrite(str(kp), kar)
    return mp, kp, inst, placed


# ---------------------------------------------------------------- names


def test_pair_key_strips_role_letter():
    assert pair_key("a/8129A.001.A.TIF") == pair_key("k/8129A.001.K.TIF") == "8129a.001"
    assert pair_key("cell07A.png") == pair_key("cell07K.png") == "cell07"
    assert pair_key("x_12_K.tif") == "x_12"
    assert pair_key("plain.png") == "plain"


def test_pair_by_name_reports_left_overs(tmp_path):
    for p in ("a/1.A.png", "a/2.A.png", "k/1.K.png", "k/3.K.png"):
        (tmp_path / p).parent.mkdir(exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    pairs, problems = pair_by_name(tmp_path / "a", tmp_path / "k")
    assert [(m.name, k.name) for m, k in pairs] == [("1.A.png", "1.K.png")]
    assert len(problems) == 2 and any("2.A.png" in p for p in problems) and any("3.K.png" in p for p in problems)


def test_pairs_csv(tmp_path):
    (tmp_path / "p.csv").write_text("metaphase,karyogram\nm/x.png,k/y.png\n")
    assert read_pairs_csv(tmp_path / "p.csv") == [(tmp_path / "m/x.png", tmp_path / "k/y.png")]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PairError, match="metaphase"):
        read_pairs_csv(tmp_path / "bad.csv")


# ---------------------------------------------------------------- layout


def test_align_row_missing_and_shifted_slots():
    tmpl = (0.1, 0.3, 0.5, 0.7, 0.9)
    assert _align_row([0.1, 0.3, 0.7, 0.9], tmpl) == [0, 1, 3, 4]  # the third slot has no underline
    assert _align_row([0.15, 0.35, 0.55, 0.75], tmpl) == [0, 1, 2, 3]  # shifted row, last slot missing
    assert _align_row([0.1, 0.3, 0.5, 0.7, 0.9], tmpl) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("light", [True, False])
def test_parse_synthetic_karyogram(light):
    img, inst = fake_metaphase(10, seed=3, light=light)
    kar, placed = make_karyogram(img, inst, scale=1.2)
    lay = parse_karyogram(kar)
    assert lay.light_background == light
    assert len(lay.slots) == 24
    assert sorted(c.class_id for c in lay.chromosomes) == sorted(c for c, _ in inst)
    # every cut-out sits where it was placed, with that class
    for p in placed:
        hits = [c for c in lay.chromosomes if abs(c.box[0] - p.box[0]) <= 3 and abs(c.box[3] - p.box[3]) <= 3]
        assert hits and hits[0].class_id == p.class_id


def test_parse_reports_missing_chromosome_and_empty_slot():
    img, inst = fake_metaphase(8, seed=1, classes=(1, 1, 2, 2, 7, 7, 21, 21))
    kar, _ = make_karyogram(img, inst, drop=(5,))
    lay = parse_karyogram(kar)
    assert len(lay.chromosomes) == 7
    assert lay.class_counts()[7] == 1
    text = " ".join(lay.warnings)
    assert "class 7 has 1 chromosomes" in text
    assert "slot of class 3 is empty" in text


# ---------------------------------------------------------------- matching


def test_match_recovers_synthetic_instances():
    img, inst = fake_metaphase(8, seed=0)
    kar, _ = make_karyogram(img, inst, scale=1.3)
    res = match_pair(img, parse_karyogram(kar))
    ev = evaluate_matches(inst, [(m.class_id, m.mask) for m in res.matches])
    assert ev["recovered_right_class"] >= 7, ev
    assert all(m.score >= 0.6 for m in res.matches)
    for m in res.matches:  # pose: the cut-out was enlarged 1.3x, so it is shrunk back
        assert 0.65 < m.scale < 0.9


def _textureless_fluorescent(n=10, seed=0):
    """Bright, blurred chromosomes on black with faint bands (like DAPI): look-alikes told apart by outline,
    brightness and little texture."""
    banded, inst = fake_metaphase(n, seed=seed, light=False)
    rng = np.random.default_rng(seed)
    ink = np.zeros(inst[0][1].shape, np.float32)
    for _, m in inst:
        ink[m] = rng.uniform(90, 220) * (0.8 + 0.2 * banded[m] / 200.0)
    ink = cv2.GaussianBlur(ink, (0, 0), 1.2) + 6.0
    return np.clip(ink + rng.normal(0, 1.5, ink.shape), 0, 255).astype(np.uint8), inst


def test_match_textureless_lookalikes():
    """DAPI-like cut-outs without bands: found by the full-resolution search, told apart by brightness."""
    img, inst = _textureless_fluorescent(10, seed=5)
    kar, _ = make_karyogram(img, inst, scale=1.5)
    # the global scale comes from the foreground area here: on so few, so uniform rods the rotated-template
    # scale search is ambiguous (its correlation is flat over +-10 % of scale)
    res = match_pair(img, parse_karyogram(kar), MatchParams(scale_search=()))
    ev = evaluate_matches(inst, [(m.class_id, m.mask) for m in res.matches])
    assert ev["recovered_right_class"] >= len(inst) - 1, ev
    assert np.mean(ev["ious"]) > 0.85, ev


def test_build_pair_with_missing_chromosome(tmp_path):
    mp, kp, inst, _ = _pair(tmp_path, "c1", seed=2, drop=(0,))
    r = build_pair(mp, kp)
    assert r.n_found == len(inst) - 1
    assert len(r.kept) == len(inst) - 1 and not r.unmatched


def test_mismatched_pair_is_skipped_with_message(tmp_path):
    mp, kp, _, _ = _pair(tmp_path, "bad", seed=4, karyo_seed=5)
    with pytest.raises(PairError) as err:
        build_pair(mp, kp)
    assert str(mp) in str(err.value) and str(kp) in str(err.value)
    assert "does not match" in str(err.value)


def test_build_dataset_batch_goes_on(tmp_path):
    (tmp_path / "in").mkdir()
    good = _pair(tmp_path / "in", "g1", seed=6)
    bad = _pair(tmp_path / "in", "b1", seed=7, karyo_seed=8)
    unreadable_m = tmp_path / "in" / "a" / "u1.A.png"
    unreadable_k = tmp_path / "in" / "k" / "u1.K.png"
    unreadable_m.write_bytes(b"not an image")
    unreadable_k.write_bytes(b"not an image")
    pairs, problems = pair_by_name(tmp_path / "in" / "a", tmp_path / "in" / "k")
    assert not problems and len(pairs) == 3
    out = tmp_path / "out"
    s = build_dataset(pairs, out, MatchParams(), min_score=0.0, progress=False)
    assert len(s.results) == 1 and len(s.skipped) == 2
    assert any("b1.A.png" in m and "does not match" in m for m in s.skipped)
    assert any("u1.A.png" in m for m in s.skipped)
    data = json.loads((out / "annotations.json").read_text())
    assert [Path(i["file_name"]).name for i in data["images"]] == ["g1.A.png"]
    assert len(data["annotations"]) == len(good[2])
    a = data["annotations"][0]
    assert {"segmentation", "bbox", "rbox", "endpoints", "match_score"} <= set(a)
    assert (out / "review" / "g1.png").is_file()
    assert not (out / "review" / "b1.png").exists()
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["pair"] for r in rows] == ["g1"] and int(rows[0]["matched"]) == len(good[2])
    assert "b1" in (out / "skipped.txt").read_text()


def test_min_score_leaves_weak_matches_out(tmp_path):
    mp, kp, inst, _ = _pair(tmp_path, "s1", seed=9)
    r = build_pair(mp, kp, min_score=1.01)
    assert not r.kept and len(r.dropped) == len(inst)


def test_cli(tmp_path, capsys):
    from chromoseg.cli import main

    _pair(tmp_path, "p1", seed=10)
    _pair(tmp_path, "p2", seed=11, karyo_seed=12)
    rc = main(["data", "build-from-karyograms", str(tmp_path / "a"), str(tmp_path / "k"), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 pairs built, 1 skipped" in out and "p2.A.png" in out
    assert (tmp_path / "o" / "annotations.json").is_file()
    rc = main(["data", "build-from-karyograms", str(tmp_path / "nope"), str(tmp_path / "k"), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real():
    if not REAL.is_dir():
        pytest.skip(f"real karyogram pairs not found at {REAL} (set CHROMOSEG_DATA to the shared data folder)")
    return REAL


def test_real_karyogram_layout(real):
    from chromoseg.data.io import read_image

    for name in ("8129A.001.K.TIF", "8129A.046.K.TIF"):
        lay = parse_karyogram(read_image(real / "k" / name))
        assert len(lay.slots) == 24, lay.warnings
        counts = lay.class_counts()
        assert all(counts.get(c) == 2 for c in range(1, 23)), counts
        assert counts.get(23) == 1 and counts.get(24) == 1  # 46,XY


def test_real_pair_sift_only(real):
    """SIFT + DBSCAN alone (no template search) on a real pair: most cut-outs found, high scores."""
    r = build_pair(real / "a" / "8129A.019.A.TIF", real / "k" / "8129A.019.K.TIF",
                   MatchParams(template_fallback=False, ecc=False, dense=False, local_refine=False,
                               photo_refine_top=0), min_matched=0.3)
    assert r.matched_share >= 0.5
    assert np.median([m.score for m in r.kept]) > 0.8


def test_real_mismatched_pair_is_skipped(real):
    """The metaphase of one cell with the karyogram of another: clear message naming both files."""
    mp, kp = real / "a" / "8129A.001.A.TIF", real / "k" / "8129A.004.K.TIF"
    with pytest.raises(PairError) as err:
        # the default scoring and gates with a coarser full-resolution search (the test stays fast)
        build_pair(mp, kp, MatchParams(ecc=False, extra_passes=0, dense_angle_step=15.0, dense_top=3))
    assert "does not match" in str(err.value) and str(mp) in str(err.value) and str(kp) in str(err.value)
