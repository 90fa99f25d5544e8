"""The one-call Python API."""
from pathlib import Path

import numpy as np
import pytest

import chromoseg

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "adir-mfish" / "V17__XY" / "V1701XYD.tif"


def test_load_model_predict(tmp_path):
    from conftest import make_tiny_checkpoint

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"), score="object", score_threshold=0.0)
    res = model.predict(EXAMPLE)
    assert res.instances and res.karyotype.split(",")[0] == str(len(res.instances))
    inst = res.instances[0]
    assert inst["mask"].shape == (517, 645) and len(inst["rbox"]) == 5 and 1 <= inst["category_id"] <= 24
    assert res.karyogram.ndim == 3 and res.karyogram.dtype == np.uint8
    with pytest.raises(TypeError, match="unknown setting"):
        chromoseg.load_model(tmp_path / "t.pt", threshold=0.3)
    with pytest.raises(ValueError, match="2-D"):
        model.predict(np.zeros((10, 10, 3), np.uint8))


def test_predict_refuses_an_image_of_the_other_stain(tmp_path):
    from conftest import make_tiny_checkpoint

    from chromoseg.data.io import read_image

    model = chromoseg.load_model(make_tiny_checkpoint(tmp_path / "t.pt"))
    model.predictor.stain = "fluorescence"
    with pytest.raises(ValueError, match="dark on a light background"):
        model.predict(255 - read_image(EXAMPLE))
