"""One call from Python, as a notebook user expects (in the spirit of Cellpose's ``model.eval``)::

    import chromoseg
    model = chromoseg.load_model()            # each image to the shipped model of its stain; or a name, or a file
    result = model.predict("metaphase.tif")   # a path or a 2-D array (8/16-bit grey)
    model.predict("cells.ome.tif", channel="dapi")   # one channel of a multi-channel file (name or index)
    model.predict("metaphase.tif", score_threshold=0.4)   # settings for this call only (result.settings)
    inst = result.instances[0]
    inst.mask, inst.rbox, inst.category_id, inst.class_name   # or inst["mask"], ...: both work
    result.karyotype                          # e.g. "46,XY" (ISCN-style summary of the counts)
    result.flags                              # what the evidence does not support
    result.counts_by_name                     # {"1": 2, ..., "X": 1, "Y": 1}
    result.karyogram                          # RGB uint8 array, the karyogram image
    result.framing                            # the crop around the metaphase and the scale it ran at
    result.source                             # the channel read, the pixel size (um) and the readers' warnings
    result.save("out/", "metaphase")          # metaphase.overlay.png and metaphase.karyogram.png

Each instance is an :class:`Instance`: a dict whose keys are also attributes -- ``mask`` (bool
``[H, W]``, made on first access from ``mask_window``, the mask's own window of the image), ``bbox`` (x, y, w, h), ``rbox`` (cx, cy, w, h, angle in degrees, w the long side),
``endpoints`` ([[x, y], [x, y]]), ``category_id`` (1-22, 23 = X, 24 = Y), ``score`` and
``class_scores`` (24 probabilities), in image pixels -- plus ``class_name`` ("1".."22", "X", "Y").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def class_name(class_id) -> str | None:
    """A class id's name: 1-22 -> "1".."22", 23 -> "X", 24 -> "Y"; None for 0 / None (unassigned)."""
    from chromoseg.data.classes import class_name as _name

    return _name(int(class_id)) if class_id else None


class Instance(dict):
    """One chromosome: a dict (``inst["mask"]``) whose keys are also attributes (``inst.mask``), with
    ``class_name`` ("1".."22", "X", "Y"; None when unassigned).

    The mask is kept in its own window of the image (``inst.mask_window``, a
    :class:`chromoseg.ops.MaskWindow`: the bool pixels of the mask's bounding box and its offset);
    ``inst.mask`` / ``inst["mask"]`` / ``inst.get("mask")`` paste it into a full-size bool ``[H, W]``
    array on the first access (kept from then on: only the masks asked for take full-size memory)."""

    __slots__ = ()

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if key == "mask":
            from chromoseg.ops import MaskWindow, full_mask

            if isinstance(value, MaskWindow):  # pasted once, on the first access, and kept
                value = full_mask(value)
                dict.__setitem__(self, key, value)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    @property
    def mask_window(self):
        """The mask in its window (:class:`chromoseg.ops.MaskWindow`; ``.data``, ``.x0``, ``.y0``,
        ``.bounds``, ``.area``, ``.full()``), without the full-size array."""
        from chromoseg.ops import window_of

        m = dict.get(self, "mask")
        return None if m is None else window_of(m)

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"an instance has no {key!r}; it has {', '.join(self)}, class_name") from None

    @property
    def class_name(self) -> str | None:
        return class_name(self.get("category_id"))

    def __dir__(self):
        return [*super().__dir__(), *(k for k in self if isinstance(k, str) and k.isidentifier())]


@dataclass
class Result:
    instances: list[Instance]
    karyotype: str
    flags: list[str] = field(default_factory=list)
    #: class id (1-24) -> number of chromosomes; :attr:`counts_by_name` keys them "1".."22", "X", "Y"
    counts: dict[int, int] = field(default_factory=dict)
    karyogram: np.ndarray | None = None
    #: how the image reached the network: ``frame`` (x0, y0, x1, y1, the crop around the metaphase in
    #: image pixels) and ``scale`` (network input pixels per image pixel)
    framing: dict = field(default_factory=dict)
    #: the grey image the instances belong to (what :meth:`overlay` and :meth:`save` draw on)
    image: np.ndarray | None = field(default=None, repr=False)
    #: how the image was read, as ``chromoseg predict`` records it in ``images.json``: ``channel`` (the
    #: one read: a name, ``R``/``G``/``B``, ``grey``, or ``luma`` for colour converted to grey),
    #: ``channel_index``, ``channels`` (all the file's), ``pixel_size_um`` (micrometres per pixel; None
    #: when unknown) and ``pixel_size_source``, plus ``warnings`` (what the readers worked around, e.g.
    #: the first of several channels read); for an array only the pixel size given, if any
    source: dict = field(default_factory=dict)
    #: the settings the instances were made with (:class:`chromoseg.engine.settings.InferenceConfig`'s
    #: fields: the model's, with the call's overrides) and ``model``, which model made them (name,
    #: file, SHA-256 prefix, stain; with ``load_model("auto")`` the one of the image's stain)
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    #: the image's file name (None for an array): the overlay's title names it
    name: str | None = None

    @property
    def counts_by_name(self) -> dict[str, int]:
        return {class_name(c): n for c, n in sorted(self.counts.items())}

    def overlay(self, name: str | None = None) -> np.ndarray:
        """RGB uint8 picture of the image with each chromosome's mask, rotated box, endpoints and class
        (what ``chromoseg predict`` writes as NAME.overlay.png): what the not-a-chromosome rule left out
        (``inst.not_chromosome``) grey with ``?``, and above the picture a title (``name``, default the
        image's file name, the model, the score threshold and the chromosome count, those left out
        said apart) and a legend of the marks."""
        from chromoseg.karyotype.overlay import overlay_title, render_overlay

        if self.image is None:
            raise ValueError("this result has no image to draw on")
        shown = [Instance({**dict(inst), "category_id": 0})
                 if inst.get("not_chromosome") else inst for inst in self.instances]
        n_out = sum(1 for inst in self.instances if inst.get("not_chromosome"))
        model = (self.model or {}).get("name")
        title = overlay_title(name or self.name or "image", model=Path(str(model)).name if model else None,
                              score_threshold=(self.settings or {}).get("score_threshold"),
                              chromosomes=len(self.instances) - n_out, not_chromosomes=n_out)
        return render_overlay(self.image, shown, title=title)

    def save(self, out_dir, name: str = "metaphase") -> dict[str, Path]:
        """Write ``NAME.overlay.png`` and, when the result has one, ``NAME.karyogram.png`` into
        ``out_dir`` (made if missing), as ``chromoseg predict`` does. Returns the paths by kind."""
        from chromoseg.karyotype.layout import save_png

        out = Path(out_dir)
        paths = {"overlay": save_png(out / f"{name}.overlay.png", self.overlay(self.name or name))}
        if self.karyogram is not None:
            paths["karyogram"] = save_png(out / f"{name}.karyogram.png", self.karyogram)
        return paths


class Model:
    """A loaded chromoseg model with the settings ``chromoseg predict`` uses (see
    :class:`chromoseg.engine.predict.InferenceConfig`)."""

    def __init__(self, predictor):
        self.predictor = predictor

    @property
    def settings(self):
        """The settings a call without overrides uses (:class:`chromoseg.engine.settings.InferenceConfig`;
        with ``load_model("auto")``, the fluorescence model's)."""
        return self.predictor.cfg

    def predict(self, image, karyogram: bool = True, channel=None, pixel_size_um: float | None = None,
                **settings) -> Result:
        """Chromosomes of one metaphase: a path or a 2-D uint8/uint16 array.

        ``settings``: inference settings for this call only, as in Cellpose's ``eval`` -- e.g.
        ``score_threshold=0.4``, ``classes="karyotype"``, ``mask_threshold``, ``mask_nms_iou``,
        ``min_area``, ``crop_classifier``, ``amp`` (None: the model file's recommendation); the model's
        own stay as they are. Those fixed when the model is loaded (``top_k``, ``score``,
        ``proposals``, ``frame``) are given to :func:`load_model` (``ValueError`` here). An unknown name
        is a ``TypeError``. ``result.settings`` holds the settings used.

        ``channel`` (paths only): which channel the model sees -- a name as the file gives it, in any
        case (an OME channel's ``Name`` or ``Fluor``: ``"dapi"``; an ImageJ label), ``"R"``/``"G"``/``"B"``
        of a colour image, or a 0-based index; None (default): a grey image as it is, colour converted
        to grey, the first channel of a multi-channel file (with a warning in ``result.source``). A
        file without that channel raises :class:`chromoseg.data.io.ImageReadError` naming those it
        has. ``pixel_size_um``: micrometres per pixel, recorded in ``result.source`` instead of the
        file's own; the image's pixel size sets its scale where the model records the one it was
        trained at (``train_pixel_size_um``; ``result.framing["scale_rule"]`` says which rule)."""
        from chromoseg.data.io import image_record, read_image_with_info

        if pixel_size_um is not None and not (np.isfinite(float(pixel_size_um)) and float(pixel_size_um) > 0):
            raise ValueError(f"pixel_size_um must be a positive number of micrometres per pixel, not {pixel_size_um!r}")
        if isinstance(image, (str, Path)):
            arr, info = read_image_with_info(image, channel=channel)
            source = {**image_record(info, pixel_size_um), "warnings": list(info["warnings"])}
            if pixel_size_um is not None:
                source["pixel_size_source"] = "given (pixel_size_um=)"
        else:
            if channel is not None:
                raise ValueError("channel= chooses a channel of an image file; an array is already one grey "
                                 "channel (pass the path, or the channel's 2-D plane)")
            arr = np.asarray(image)
            source = {"pixel_size_um": float(pixel_size_um), "pixel_size_source": "given (pixel_size_um=)"} \
                if pixel_size_um is not None else {}
        if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"predict needs a 2-D uint8 or uint16 grey image, got {arr.dtype} {arr.shape}")
        from dataclasses import asdict

        from chromoseg.engine.pipeline import check_image, predict_images
        from chromoseg.ops import swap_in_full_masks

        path = image if isinstance(image, (str, Path)) else None
        problem = check_image(self.predictor, arr, path, python=True)  # the rule of chromoseg predict
        if problem:
            raise ValueError(f"{path if path is not None else 'image'}: {problem[1]}")
        px = source.get("pixel_size_um")  # the scale rule's, where the model records its own pixel size
        (pred,) = predict_images(self.predictor, [arr], [px] if px else None, analysis="karyotype", **settings)
        counts = pred.analysis["counts"]
        insts = [Instance(i) for i in pred.instances]  # marked by the analysis (not_chromosome)
        kg = None
        if karyogram:
            from chromoseg.karyotype.layout import render_karyogram

            with swap_in_full_masks(insts):  # the karyotype code takes full-size masks: for this block only
                kg = render_karyogram(arr, [inst for i, inst in enumerate(insts) if i not in counts.excluded],
                                      title=counts.summary)
        return Result(insts, counts.summary, list(counts.flags), dict(counts.counts), kg, dict(pred.framing), arr,
                      source, asdict(pred.settings), pred.model, Path(image).name if path is not None else None)

    __call__ = predict


def load_model(name: str | Path | None = None, device: str = "cpu", **settings) -> Model:
    """``auto`` or None (the default): each image goes to the shipped model of its stain, by its polarity
    (``mfish`` for fluorescence, ``gband`` for G-band; ``result.model`` says which); a shipped model by
    name; or a ``chromoseg train`` checkpoint / ``chromoseg export`` file.
    ``settings`` override the inference settings the model file recommends (``score_threshold``,
    ``classes="karyotype"``, ...: :class:`chromoseg.engine.settings.InferenceConfig`; an unknown name
    is a ``TypeError``); ``Model.predict`` takes them per call too. ``predict`` refuses (ValueError)
    an image that ``chromoseg predict`` skips: too large, a label map, or a polarity that does not fit
    the model's stain."""
    from chromoseg.engine.predict import Predictor, StainRouter

    if name is None or str(name) == "auto":
        return Model(StainRouter.shipped(settings, device=device))
    return Model(Predictor.from_checkpoint(name, settings, device=device))
