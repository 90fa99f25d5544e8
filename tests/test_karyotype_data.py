"""Karyotype package on the real data: the ISCN parser on every M-FISH case_info.txt, G-band VOC counts.

Skips with a clear message when the shared data folder is absent (``../shared/data`` beside the
repository, or the ``CHROMOSEG_DATA`` environment variable).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from chromoseg.karyotype.iscn import expected_counts, karyotype_summary, read_case_info

DATA = Path(os.environ.get("CHROMOSEG_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
MFISH = DATA / "adir-mfish"
GBAND = DATA / "cil-gband"

needs_mfish = pytest.mark.skipif(not MFISH.is_dir(), reason=f"real data absent: {MFISH} not found "
                                 "(set CHROMOSEG_DATA to the shared data folder)")
needs_gband = pytest.mark.skipif(not GBAND.is_dir(), reason=f"real data absent: {GBAND} not found "
                                 "(set CHROMOSEG_DATA to the shared data folder)")


@needs_mfish
def test_every_case_info_parses_consistently():
    files = sorted(MFISH.glob("*/case_info.txt"))
    assert len(files) >= 40
    for f in files:
        k = read_case_info(f)
        assert k.total is not None and k.sex in ("XX", "XY", "X"), f
        assert k.consistent, (f, k.text, k.warnings)
        exp, unc = expected_counts(k)
        assert sum(exp.values()) == k.total, (f, k.text)
        assert all(ch.isprintable() for ch in k.text), (f, k.text)
        assert karyotype_summary(k).startswith(f"{k.total},{k.sex}")
        if "(" in k.text:
            assert unc, (f, k.text)


@needs_mfish
@pytest.mark.parametrize("case,text,summary", [
    ("V18__08", "45,XY,-8", "45,XY,-8"),
    ("V15__41", "47,XX,+r(9)", "47,XX,+9"),
    ("V24__52", "46,XX,t(4;9)", "46,XX"),
    ("V13__XY", "46,XY", "46,XY"),
    ("V27__60", "47,XY,+?13,t(3;13),t(8;3),t(16;8)", "47,XY,+?13"),
    ("A23__51", None, "42,X,-5,-14,+18,-21,-21"),
])
def test_known_case_infos(case, text, summary):
    p = MFISH / case / "case_info.txt"
    if not p.is_file():
        pytest.skip(f"{p} not found")
    k = read_case_info(p)
    if text is not None:
        assert k.text == text
    assert karyotype_summary(k) == summary


@needs_gband
def test_gband_voc_counts_match_csv_sample():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_counts import _read_numbers, read_voc_labels

    numbers = _read_numbers(GBAND / "normal.csv")
    xmls = sorted((GBAND / "annotations").glob("*.xml"))[:20]
    assert xmls
    ok = sum(len(read_voc_labels(x)) == numbers[x.stem][0] for x in xmls if x.stem in numbers)
    assert ok >= 18
