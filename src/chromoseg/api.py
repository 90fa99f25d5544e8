"""One call from Python, as a notebook user expects (in the spirit of Cellpose's ``model.eval``)::

    import chromoseg
    model = chromoseg.load_model()            # the shipped default (mfish); or a name, or a file
    result = model.predict("metaphase.tif")   # a path or a 2-D array (8/16-bit grey)
    result.instances[0]["mask"], result.instances[0]["rbox"], result.instances[0]["category_id"]
    result.karyotype                          # e.g. "46,XY" (ISCN-style summary of the counts)
    result.flags                              # what the evidence does not support
    result.karyogram                          # RGB uint8 array, the karyogram image
    result.framing                            # the crop around the metaphase and the scale it ran at

Each instance is a dict: ``mask`` (bool ``[H, W]``), ``bbox`` (x, y, w, h), ``rbox`` (cx, cy, w, h,
angle in degrees, w the long side), ``endpoints`` ([[x, y], [x, y]]), ``category_id`` (1-22, 23 = X,
24 = Y), ``score`` and ``class_scores`` (24 probabilities), in image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Result:
    instances: list[dict]
    karyotype: str
    flags: list[str] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    karyogram: np.ndarray | None = None
    #: how the image reached the network: ``frame`` (x0, y0, x1, y1, the crop around the metaphase in
    #: image pixels) and ``scale`` (network input pixels per image pixel)
    framing: dict = field(default_factory=dict)


class Model:
    """A loaded chromoseg model with the settings ``chromoseg predict`` uses (see
    :class:`chromoseg.engine.predict.InferenceConfig`)."""

    def __init__(self, predictor):
        self.predictor = predictor

    def predict(self, image, karyogram: bool = True) -> Result:
        """Chromosomes of one metaphase: a path or a 2-D uint8/uint16 array."""
        from chromoseg.data.io import read_image
        from chromoseg.karyotype.counts import count_karyotype

        arr = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"predict needs a 2-D uint8 or uint16 grey image, got {arr.dtype} {arr.shape}")
        from chromoseg.engine.predict import polarity_problem

        why = polarity_problem(getattr(self.predictor, "stain", None), arr)
        if why:
            raise ValueError(f"{image if isinstance(image, (str, Path)) else 'image'}: {why}")
        (insts,) = self.predictor([arr])
        counts = count_karyotype(insts)
        kg = None
        if karyogram:
            from chromoseg.karyotype.layout import render_karyogram

            kg = render_karyogram(arr, insts, title=counts.summary)
        framing = (getattr(self.predictor, "last_framing", None) or [{}])[0]
        return Result(insts, counts.summary, list(counts.flags), dict(counts.counts), kg, dict(framing))

    __call__ = predict


def load_model(name: str | Path | None = None, device: str = "cpu", **settings) -> Model:
    """A shipped model by name (``mfish``, the default; ``auto``: each image goes to the shipped model
    of its stain, by its polarity), or a ``chromoseg train`` checkpoint / ``chromoseg export`` file.
    ``settings`` override the inference settings (``score_threshold``, ``classes="karyotype"``, ...).
    ``predict`` refuses (ValueError) an image whose polarity does not fit the model's stain."""
    from chromoseg.engine.predict import InferenceConfig, Predictor, StainRouter

    cfg = InferenceConfig(score=None, classes=None, score_threshold=None)  # None: the model file's choice
    for k, v in settings.items():
        if not hasattr(cfg, k):
            raise TypeError(f"unknown setting {k!r}; see chromoseg.engine.predict.InferenceConfig")
        setattr(cfg, k, v)
    if str(name) == "auto":
        return Model(StainRouter.shipped(cfg, device=device))
    return Model(Predictor.from_checkpoint(name, cfg, device=device))
