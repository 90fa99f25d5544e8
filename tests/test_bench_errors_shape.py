"""benchmarks/bench_errors.py --by-shape: the length, bend and overlap of a ground-truth chromosome,
and the per-bucket table, on synthetic masks."""
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_errors import (BEND_BINS, bend_bin, chromosome_shape, overlap_kinds, shape_buckets,  # noqa: E402
                          shape_of_stages, shape_table)


def _bar(h=100, w=120, y0=40, x0=20, length=60, width=10):
    m = np.zeros((h, w), bool)
    m[y0:y0 + width, x0:x0 + length] = True
    return m


def _half_ring(h=100, w=120, cx=60.0, cy=30.0, r=30.0, width=10.0):
    """A U: the lower half of a ring of mid radius ``r`` (axis length about pi * r, tips 2 r apart)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    d = np.hypot(xx - cx, yy - cy)
    return (np.abs(d - r) < width / 2) & (yy >= cy)


def test_straight_bar_is_its_length_and_not_bent():
    s = chromosome_shape(_bar(length=60, width=10))
    assert s["axis"]
    assert s["length"] == pytest.approx(60, abs=3)
    assert s["bend"] < 0.01
    assert bend_bin(s["bend"]) == "straight"
    assert s["aspect"] == pytest.approx(6.0, abs=0.1)


def test_u_shaped_mask_is_long_and_bent():
    s = chromosome_shape(_half_ring(r=30.0))
    assert s["axis"]
    assert s["length"] == pytest.approx(np.pi * 30, rel=0.1)  # along the U, not across it
    assert s["bend"] == pytest.approx(1 - 2 / np.pi, abs=0.06)  # a half circle: 1 - 2r / (pi r) = 0.36
    assert bend_bin(s["bend"]) == "bent"
    assert s["aspect"] < 2.5  # its rotated box is fat: the box does not see the length


def test_blob_falls_back_to_its_box():
    m = np.zeros((40, 40), bool)
    m[10:20, 10:22] = True  # not elongated: no medial axis
    s = chromosome_shape(m)
    assert not s["axis"] and s["bend"] == 0.0
    assert s["length"] == pytest.approx(12, abs=0.01)


def test_overlap_kinds():
    a = _bar(y0=10, x0=10, length=40, width=8)
    b = np.zeros_like(a)
    b[5:40, 30:36] = True  # crosses a
    c = np.zeros_like(a)
    c[18:25, 50:90] = True  # its pixel (18, 50) is a diagonal neighbour of a's last one, (17, 49)
    d = np.zeros_like(a)
    d[80:90, 10:40] = True  # far from all
    assert overlap_kinds([a, b, c, d]) == ["overlapping", "overlapping", "touching", "apart"]
    assert overlap_kinds([]) == []


def test_shape_tables_count_each_bucket():
    rng = np.random.default_rng(0)
    stages = ["right_class", "wrong_class", "rpn", "mask_iou_low"]
    recs = [{"stage": stages[k % 4], "length": float(10 + k), "bend": float(rng.uniform(0, 0.3)),
             "aspect": 3.0, "overlap": ("apart", "touching", "overlapping")[k % 3], "proposal_iou": 0.6,
             "anchor_iou": 0.5} for k in range(60)]
    buckets = dict(shape_buckets(recs))
    assert len(buckets["all"]) == 60
    lengths = [n for n in buckets if n.startswith(("short", "middle", "long ("))]
    assert sum(len(buckets[n]) for n in lengths) == 60
    assert sum(len(buckets[n]) for n in buckets if n.startswith(("straight", "curved", "bent"))) == 60
    assert sum(len(buckets[k]) for k in ("apart", "touching", "overlapping")) == 60
    lines = shape_table(recs)
    row = next(line for line in lines if line.startswith("| all |"))
    assert "| 60 | 50.0% | 25.0% |" in row  # found = either class; RPN-missed a quarter
    assert any(line.startswith("| found | 30 |") for line in shape_of_stages(recs))
    assert BEND_BINS[0] < BEND_BINS[1]


def test_anchor_sets_and_best_anchor_iou():
    from types import SimpleNamespace

    import torch

    from bench_errors import anchor_generator_of, anchor_table, best_anchor_iou
    from chromoseg.models.rpn import RotatedAnchorGenerator

    base = RotatedAnchorGenerator((16.0, 32.0), (1.5, 3.0), (0.0, 90.0))
    alt = anchor_generator_of("ratios=1.5,3,6; angles=0,45,90", base)
    assert [s[0] for s in alt.sizes] == [16.0, 32.0] and alt.ratios == (1.5, 3.0, 6.0)
    assert alt.angles == (0.0, 45.0, 90.0)
    with pytest.raises(ValueError):
        anchor_generator_of("sizes=8", base)  # one size per level
    image_list = SimpleNamespace(tensors=torch.zeros(1, 1, 64, 64), image_sizes=[(64, 64)])
    feats = [torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 8, 8)]  # strides 4 and 8
    w6, h6 = 32 * np.sqrt(6), 32 / np.sqrt(6)  # the alternative's level-2 ratio-6 anchor at 45 degrees
    gt = torch.tensor([[28.0, 28.0, w6, h6, 45.0]])  # on the stride-8 grid: (3 + .5) * 8 = 28
    own = best_anchor_iou(base, gt, image_list, feats)
    new = best_anchor_iou(alt, gt, image_list, feats)
    assert new[0] == pytest.approx(1.0, abs=1e-4) and own[0] < 0.5
    recs = [{"stage": "rpn", "length": 80.0, "bend": 0.0, "aspect": 6.0, "overlap": "apart",
             "anchor_iou": float(own[0]), "anchor_iou_0": float(new[0])}]
    lines = anchor_table(recs, ["ratios=1.5,3,6"])
    assert any(line.startswith("| RPN-missed | 1 | 0% / 0% / 0.30 |") and "100% / 100% / 1.00" in line
               for line in lines)
