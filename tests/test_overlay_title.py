"""Issue 30: the overlay's title band (image, model, score threshold, count) and legend."""
from types import SimpleNamespace

import numpy as np
from PIL import Image

from chromoseg.karyotype import overlay as overlay_mod
from chromoseg.karyotype.overlay import overlay_title, render_overlay


def _picture():
    img = np.full((120, 160), 200, np.uint8)
    m = np.zeros(img.shape, bool)
    m[30:80, 60:72] = True
    img[m] = 60
    return img, [{"mask": m, "category_id": 7, "score": 0.5, "bbox": [60, 30, 12, 50]}]


def test_a_title_adds_a_band_above_the_unchanged_picture():
    img, insts = _picture()
    plain = render_overlay(img, insts)
    titled = render_overlay(img, insts, title=overlay_title("a.png", model="gband", score_threshold=0.3,
                                                            chromosomes=46, not_chromosomes=1))
    band = titled.shape[0] - plain.shape[0]
    assert band > 20 and titled.shape[1:] == plain.shape[1:]
    assert np.array_equal(titled[band:], plain)  # the picture below is the old overlay exactly
    assert len(np.unique(titled[:band].reshape(-1, 3), axis=0)) > 10  # text and swatches: not blank
    legend_only = render_overlay(img, insts, legend=True)
    assert plain.shape[0] < legend_only.shape[0] < titled.shape[0]
    assert np.array_equal(render_overlay(img, insts, legend=False), plain)


def test_title_line():
    assert overlay_title("103203.jpg", model="gband", score_threshold=0.3, chromosomes=46, not_chromosomes=1) == \
        "103203.jpg \u00b7 model gband \u00b7 score >= 0.3 \u00b7 46 chromosomes (1 not a chromosome)"
    assert overlay_title("x.tif", chromosomes=1) == "x.tif \u00b7 1 chromosome"


def test_predict_writes_the_titled_overlay(tmp_path, monkeypatch):
    import test_karyotype_nucleus as tkn

    titles = []
    real = overlay_mod.render_overlay

    def spy(*a, **kw):
        titles.append(kw.get("title"))
        return real(*a, **kw)

    monkeypatch.setattr(overlay_mod, "render_overlay", spy)
    fake = tkn.FakePredictor()
    fake.model_name, fake.cfg = "gband", SimpleNamespace(score_threshold=0.3)
    monkeypatch.setattr(tkn, "FakePredictor", lambda: fake)
    want = "nucleus.png \u00b7 model gband \u00b7 score >= 0.3 \u00b7 46 chromosomes (1 not a chromosome)"
    for karyotype in (True, False):
        out = tkn.predict_nucleus_folder(tmp_path / str(karyotype), karyotype=karyotype)
        ov = np.asarray(Image.open(out / "nucleus.overlay.png"))
        band = ov.shape[0] - tkn.SHAPE[0]  # 720 x 960: drawn at scale 1
        assert band > 20 and ov.shape[1] == tkn.SHAPE[1]
        assert ov[:band].std() > 5
        assert titles[-1] == want
