"""Straightened chromosomes (chromoseg.karyotype.straighten and the karyogram's use of it): a bent,
banded synthetic chromosome of known geometry comes out at its arc length and band width, its bands in
order and not mirrored; degenerate masks fall back to the plain crop without error."""
from __future__ import annotations

import json

import numpy as np
import pytest

from chromoseg.karyotype.straighten import NotStraightenable, medial_axis, straighten_instance

H, W = 300, 320
CX, CY, R, BAND_W = 160.0, 170.0, 90.0, 14.0
T0, T1 = np.deg2rad(-160.0), np.deg2rad(-20.0)
N_BANDS = 7


def bent_chromosome(outer_dark: bool = False):
    """A 140-degree arc of radius 90 px, 14 px wide (arc length 219.9 px), in 7 bands of rising grey
    (40, 65, ... 190) from the end at -160 degrees; optionally the outer half darker by 20 (a marker
    of handedness). Returns (grey image, mask, endpoints: the -160 degree end first)."""
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    rad = np.hypot(xx - CX, yy - CY)
    ang = np.arctan2(yy - CY, xx - CX)
    mask = (np.abs(rad - R) <= BAND_W / 2) & (ang >= T0) & (ang <= T1)
    band = np.clip(((ang - T0) / (T1 - T0) * N_BANDS).astype(int), 0, N_BANDS - 1)
    grey = 40.0 + 25.0 * band
    if outer_dark:
        grey = grey - 20.0 * (rad > R)
    img = np.full((H, W), 255, np.uint8)
    img[mask] = grey[mask].astype(np.uint8)
    ends = [[CX + R * np.cos(T0), CY + R * np.sin(T0)], [CX + R * np.cos(T1), CY + R * np.sin(T1)]]
    return img, mask, ends


def band_profile(g: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Median grey of the mask in each row that has mask pixels."""
    return np.array([np.median(g[r][m[r]]) for r in range(g.shape[0]) if m[r].any()])


def test_bent_chromosome_straightened_to_its_arc_length_and_width():
    img, mask, ends = bent_chromosome()
    g, m, axis = straighten_instance(img, mask, ends)
    arc = R * (T1 - T0)  # 219.9 px
    assert axis.length == pytest.approx(arc, rel=0.03)
    rows = np.nonzero(m.any(1))[0]
    assert rows[-1] - rows[0] + 1 == pytest.approx(arc, rel=0.03)
    widths = m.sum(1)[rows[5:-5]]
    assert np.median(widths) == pytest.approx(BAND_W, abs=1.5)
    assert widths.min() >= BAND_W - 3 and widths.max() <= BAND_W + 3
    # the straightened mask has (about) the mask's area, the axis runs down the centre column
    assert m.sum() == pytest.approx(mask.sum(), rel=0.05)
    c = m.shape[1] // 2
    assert m[rows[5]:rows[-5], c].all()


def test_bands_stay_in_order_and_the_endpoints_set_the_direction():
    img, mask, ends = bent_chromosome()
    g, m, _ = straighten_instance(img, mask, ends)
    prof = band_profile(g, m)
    levels = 40 + 25 * np.arange(N_BANDS)
    seen = [levels[np.argmin(np.abs(levels - v))] for v in prof[3:-3]]
    runs = [v for k, v in enumerate(seen) if k == 0 or v != seen[k - 1]]
    assert runs == list(levels)  # every band once, in order, from the first endpoint's end
    g2, m2, _ = straighten_instance(img, mask, ends[::-1])
    prof2 = band_profile(g2, m2)
    assert prof2[3] > prof2[-4]  # the other endpoint first: the bands run the other way


def test_straightening_is_a_rotation_never_a_mirror():
    img, mask, ends = bent_chromosome(outer_dark=True)
    g, m, _ = straighten_instance(img, mask, ends)
    # going from the -160 degree end with rising angle, the outside of the arc is on the right
    c = m.shape[1] // 2
    rows = np.nonzero(m.any(1))[0][5:-5]
    left = np.mean([g[r, :c][m[r, :c]].mean() for r in rows])
    right = np.mean([g[r, c + 1:][m[r, c + 1:]].mean() for r in rows])
    assert right < left - 10
    # a straight vertical rod drawn downwards is sampled as it is (no mirror, no turn)
    rod = np.zeros((120, 60), bool)
    rod[10:110, 20:32] = True
    im = np.full(rod.shape, 255, np.uint8)
    im[rod] = 100
    im[10:110, 20:24] = 30  # its left edge dark
    gr, mr, _ = straighten_instance(im, rod, [[26, 10], [26, 110]])
    rows = np.nonzero(mr.any(1))[0]
    assert rows[-1] - rows[0] + 1 == pytest.approx(100, abs=3)
    cols = np.nonzero(mr.any(0))[0]
    assert gr[60, cols[0]:cols[0] + 3].mean() < 60 and gr[60, cols[-1] - 2:cols[-1] + 1].mean() > 80


@pytest.mark.parametrize("kind", ["tiny", "ring", "disk", "empty", "speck-pair"])
def test_degenerate_masks_are_refused(kind):
    yy, xx = np.mgrid[0:120, 0:120] + 0.5
    rad = np.hypot(xx - 60, yy - 60)
    mask = {"tiny": rad < 2.5, "ring": np.abs(rad - 35) <= 5, "disk": rad < 25, "empty": rad < 0,
            "speck-pair": (np.hypot(xx - 20, yy - 20) < 2) | (np.hypot(xx - 90, yy - 90) < 2)}[kind]
    with pytest.raises(NotStraightenable):
        medial_axis(mask)


def _instances(masks, classes):
    from chromoseg.data.coco import derive_geometry

    out = []
    for k, (m, c) in enumerate(zip(masks, classes)):
        rbox, ends = derive_geometry(m) if m.any() else (None, None)
        out.append({"id": k + 1, "category_id": c, "mask": m if m.any() else None, "rbox": rbox, "endpoints": ends,
                    "bbox": None, "score": 0.99, "class_scores": None})
    return out


def test_karyogram_straightens_the_bent_one_and_keeps_degenerate_ones_plain():
    from chromoseg.karyotype.layout import render_karyogram

    img, bent, _ = bent_chromosome()
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    ring = np.hypot(xx - 40, yy - 250) <= 14
    ring &= np.hypot(xx - 40, yy - 250) >= 7
    tiny = np.hypot(xx - 300, yy - 20) < 2.5
    disk = np.hypot(xx - 280, yy - 260) < 12
    rods = []
    for x in (130, 150, 170):  # straight rods of 80 px: the common scale's median length
        rod = np.zeros((H, W), bool)
        rod[200:280, x:x + 10] = True
        rods.append(rod)
    for m in [ring, tiny, disk] + rods:
        img[m] = 80
    insts = _instances([bent, ring, tiny, disk] + rods, [2, 5, 21, 19, 3, 3, 4])
    kg, places = render_karyogram(img, insts, return_layout=True, straighten=True)
    by = {p["index"]: p for p in places}
    assert set(by) == set(range(7))
    assert by[0]["straightened"] and by[4]["straightened"]
    assert not by[1]["straightened"] and not by[2]["straightened"] and not by[3]["straightened"]
    # the bent one stands at its arc length on the karyogram's common scale (the straight rod: 80 px)
    assert by[0]["h"] / by[4]["h"] == pytest.approx((R * (T1 - T0)) / 80, rel=0.08)
    kg2, places2 = render_karyogram(img, insts, return_layout=True, straighten=False)
    assert not any(p["straightened"] for p in places2)
    by2 = {p["index"]: p for p in places2}
    assert by2[0]["h"] / by2[4]["h"] < 0.9 * by[0]["h"] / by[4]["h"]  # as cut, the bent one looks shorter
    # top / bottom are the chromosome's two ends in the image
    ends = {tuple(np.round(by[0]["top"])), tuple(np.round(by[0]["bottom"]))}
    want = {(round(CX + R * np.cos(a)), round(CY + R * np.sin(a))) for a in (T0, T1)}
    for e in ends:
        assert min(np.hypot(e[0] - w[0], e[1] - w[1]) for w in want) < 5


def test_a_reviewers_top_end_decides_the_orientation():
    from chromoseg.karyotype.layout import render_karyogram

    img, bent, ends = bent_chromosome()
    for straighten in (True, False):
        for want in ends:
            insts = _instances([bent], [2])
            insts[0]["top_end"] = want
            _, places = render_karyogram(img, insts, return_layout=True, straighten=straighten)
            p = places[0]
            assert p["orientation"]["rule"] == "reviewer" and p["orientation"]["sure"]
            assert np.hypot(*(np.subtract(p["top"], want))) < np.hypot(*(np.subtract(p["bottom"], want)))


def test_straightening_context_sets_the_default():
    from chromoseg.karyotype.layout import render_karyogram, straightening

    img, bent, _ = bent_chromosome()
    insts = _instances([bent], [2])
    with straightening(False):
        _, p_off = render_karyogram(img, insts, return_layout=True)
    _, p_on = render_karyogram(img, insts, return_layout=True)
    assert not p_off[0]["straightened"] and p_on[0]["straightened"]


def test_karyogram_cli_straighten_switch(tmp_path):
    from PIL import Image

    from chromoseg.cli import main
    from chromoseg.data.coco import CocoWriter

    img, bent, _ = bent_chromosome()
    Image.fromarray(img).save(tmp_path / "bent.png")
    w = CocoWriter()
    iid = w.add_image("bent.png", H, W)
    w.add_annotation(iid, 2, mask=bent)
    w.write(tmp_path / "set.json")
    pics = {}
    for flag in ("--straighten", "--no-straighten"):
        out = tmp_path / flag.strip("-")
        assert main(["karyogram", str(tmp_path / "set.json"), "--out", str(out), "--no-progress", flag]) == 0
        pics[flag] = np.asarray(Image.open(out / "bent.karyogram.png"))
        assert "straightened along their medial axis" in (out / "report.html").read_text() or flag != "--straighten"
    assert pics["--straighten"].shape != pics["--no-straighten"].shape or (pics["--straighten"] != pics["--no-straighten"]).any()


def test_medial_axes_are_remembered_and_refusals_too():
    img, mask, ends = bent_chromosome()
    a = medial_axis(mask, ends)
    assert medial_axis(mask.copy(), [list(e) for e in ends]) is a
    assert medial_axis(mask, ends[::-1]) is not a  # other endpoints: another answer
    ring = np.zeros((60, 60), bool)
    yy, xx = np.mgrid[0:60, 0:60] + 0.5
    ring[np.abs(np.hypot(xx - 30, yy - 30) - 15) <= 4] = True
    for _ in range(2):
        with pytest.raises(NotStraightenable, match="ring"):
            medial_axis(ring)


def test_canonical_rbox_without_torch_matches_normalize_rboxes():
    import torch

    from chromoseg.karyotype.layout import canonical_rbox
    from chromoseg.ops import normalize_rboxes

    rng = np.random.default_rng(0)
    boxes = [[10, 20, 5, 30, 0.0], [10, 20, 30, 5, 90.0], [1, 2, 3, 3, -90.0], [1, 2, -4, 3, 270.0], [0, 0, 8, 9, -1e-12]]
    boxes += [[*rng.uniform(0, 100, 2), *rng.uniform(-40, 40, 2), rng.uniform(-400, 400)] for _ in range(200)]
    for b in boxes:
        want = normalize_rboxes(torch.tensor([b], dtype=torch.float64))[0].tolist()
        assert np.allclose(canonical_rbox(*b), want, atol=1e-9), b
