"""A stain's polarity is said once (chromoseg.data.stain): the CLI's --stain options, the model file's
stain and the image check read it."""
from __future__ import annotations

import numpy as np
import pytest

from chromoseg.data.stain import STAINS, image_stain, inverts, stain_of


def test_each_stain_round_trips_through_its_polarity():
    assert [inverts(s) for s in STAINS] == [False, True]  # fluorescence (the default) first
    assert all(stain_of(inverts(s)) == s for s in STAINS)
    with pytest.raises(ValueError, match="unknown stain"):
        inverts("gband")


def test_an_images_stain_from_its_polarity():
    dark = np.zeros((64, 64), np.float32)
    dark[20:40, 30:34] = 0.9  # a bright chromosome on a dark background
    assert image_stain(dark) == stain_of(False) and image_stain(1.0 - dark) == stain_of(True)


def test_the_polarity_rule_has_one_home():
    """light_background is chromoseg.data.stain's (image_stain uses it there); chromoseg.data.io's name
    is the same function, kept for its callers."""
    from chromoseg.data import io, stain

    assert io.light_background is stain.light_background
    flat = np.full((8, 8), 7, np.uint8)  # no 1-99 % range: not dark on light
    assert stain.light_background(flat) is False


def test_the_stain_options_read_the_one_list():
    from chromoseg.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    data = sub["data"]._subparsers._group_actions[0].choices
    for parser in (sub["train"], sub["export"], data["pseudo-masks"]):
        opt = next(a for a in parser._actions if a.dest == "stain")
        assert tuple(opt.choices) == STAINS
