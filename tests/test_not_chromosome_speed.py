"""The not-a-chromosome rule made fast for the review page (issue 27, page open < 2 s): the median of
the other instances' areas from one sorted array, and each judged mask decoded once and worked on in
its bounding box, with exactly the results of the former formula (a ``np.median`` per instance and
the full mask)."""
from __future__ import annotations

import numpy as np
import pytest

from chromoseg.karyotype.counts import medians_of_others, not_chromosomes, solidity


def old_medians(areas):
    """The former formula: ``np.median`` of all the others, for every value."""
    return np.array([float(np.median([a for j, a in enumerate(areas) if j != i])) for i in range(len(areas))])


def old_not_chromosomes(instances, area_ratio=2.5, min_solidity=0.9, max_area_ratio=5.0, min_instances=10):
    """The rule as it was before (O(n^2) medians, full-size masks), for comparison."""
    areas = [int(np.count_nonzero(i["mask"])) if i.get("mask") is not None else None for i in instances]
    have = [i for i, a in enumerate(areas) if a]
    if len(have) < min_instances + 1:
        return {}
    out = {}
    for i in have:
        if instances[i].get("score") is None:
            continue
        median = float(np.median([areas[j] for j in have if j != i]))
        ratio = areas[i] / max(median, 1.0)
        if ratio < area_ratio:
            continue
        mask = instances[i]["mask"]
        sol = solidity(mask)
        if sol < min_solidity and ratio < max_area_ratio:
            continue
        ys, xs = np.nonzero(mask)
        what = "large compact blob" if sol >= min_solidity else "blob larger than any chromosome"
        out[i] = (f"{what} at ({int(xs.mean())}, {int(ys.mean())}): {areas[i]:,} px = {ratio:.1f} x the "
                  f"metaphase's median, solidity {sol:.2f} (a nucleus?)")
    return out


@pytest.mark.parametrize("seed", range(40))
def test_medians_of_others_equal_np_median_of_all_but_one(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    if seed % 3 == 0:  # many ties
        areas = rng.integers(1, 6, n)
    elif seed % 3 == 1:  # areas as on the slides, one huge
        areas = rng.integers(200, 4000, n)
        areas[rng.integers(n)] = 60_000
    else:  # large values (odd sums: halves)
        areas = rng.integers(1, 10**9, n)
    got = medians_of_others(areas.tolist())
    want = old_medians(areas.tolist())
    assert got.dtype == np.float64 and np.array_equal(got, want)  # exactly, not approximately


def test_medians_of_others_small_and_float():
    assert medians_of_others([3, 7]).tolist() == [7.0, 3.0]
    vals = [0.1, 0.7, 0.3, 0.3, 1e-9]
    assert np.array_equal(medians_of_others(vals), old_medians(vals))
    with pytest.raises(ValueError):
        medians_of_others([1])


def _blob(shape, cx, cy, rx, ry):
    yy, xx = np.mgrid[:shape[0], :shape[1]] + 0.5
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


@pytest.mark.parametrize("seed", range(12))
def test_not_chromosomes_unchanged_on_random_metaphases(seed):
    """Random rods and blobs (compact and ragged, large and small, at the image's edges): the same
    verdicts and the same words as the former code."""
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(120, 300)), int(rng.integers(120, 300)))
    insts = []
    for _ in range(int(rng.integers(8, 40))):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        kind = rng.integers(4)
        if kind == 0:  # a rod-like chromosome
            m = _blob(shape, cx, cy, rng.uniform(2, 4), rng.uniform(6, 16))
        elif kind == 1:  # a nucleus, often cut by the edge
            m = _blob(shape, cx, cy, rng.uniform(10, 30), rng.uniform(10, 30))
        elif kind == 2:  # a ragged blob: two discs apart
            m = _blob(shape, cx, cy, 9, 9) | _blob(shape, cx + 25, cy + 5, 8, 8)
        else:  # nothing (no pixels)
            m = np.zeros(shape, bool)
        insts.append({"mask": m, "score": None if rng.random() < 0.1 else float(rng.random())})
    got = not_chromosomes(insts)
    assert got == old_not_chromosomes(insts)
    # a lazy mask with its pixel count (as the review page gives it): the same again
    lazy = [{"score": i["score"], "mask_area": int(i["mask"].sum()), "mask": (lambda m=i["mask"]: m)} for i in insts]
    assert not_chromosomes(lazy) == got


def test_solidity_unchanged_and_in_the_bounding_box():
    shape = (200, 300)
    for m in (_blob(shape, 150, 100, 30, 20), _blob(shape, 10, 10, 40, 8) | _blob(shape, 200, 150, 5, 30),
              np.zeros(shape, bool)):
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            assert solidity(m) == 0.0
            continue
        import cv2

        crop = np.ascontiguousarray(m[ys.min():ys.max() + 1, xs.min():xs.max() + 1], dtype=np.uint8)
        cnts, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = np.zeros_like(crop)
        cv2.fillPoly(hull, [cv2.convexHull(np.vstack(cnts))], 1)
        assert solidity(m) == float(ys.size) / max(int(hull.sum()), 1)
        assert solidity(m.astype(np.uint8)) == solidity(m)
