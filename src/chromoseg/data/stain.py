"""A stain's polarity, said once: which stains there are, which of them show chromosomes dark on a
light background (a model of such a stain inverts every image first, ``build_model(invert=True)``),
whether an image is dark on light (:func:`light_background`, the rule) and the stain of a model or an
image from its polarity. ``chromoseg train --stain``, ``chromoseg export --stain``, the model file's
``stain`` and ``predict``'s polarity check and model choice read it. Imports nothing heavy (the
command line reads it while it builds its parser)."""
from __future__ import annotations

#: each stain -> True where its chromosomes are dark on a light background (G-band brightfield), False
#: where bright on dark (DAPI, Q-band fluorescence); the first is the default of ``chromoseg train``
DARK_ON_LIGHT = {"fluorescence": False, "brightfield": True}
STAINS = tuple(DARK_ON_LIGHT)


def inverts(stain: str) -> bool:
    """Whether a model of ``stain`` inverts its images (``build_model(invert=...)``): the dark-on-light
    stains. ValueError for an unknown stain."""
    try:
        return DARK_ON_LIGHT[stain]
    except KeyError:
        raise ValueError(f"unknown stain {stain!r}: {' or '.join(STAINS)}") from None


def stain_of(dark_on_light: bool) -> str:
    """The stain of a model that inverts its images (or of an image dark on light) and of one that does not."""
    return next(s for s, dark in DARK_ON_LIGHT.items() if dark == bool(dark_on_light))


def light_background(arr) -> bool:
    """True for a dark-on-light image (G-band, brightfield): its median pixel (the background, as
    chromosomes cover a minority of a metaphase) lies in the upper half of its 1-99 % range. DAPI and
    Q-band fluorescence (bright on dark) give about 0.0-0.03 there, G-band 0.88-1.0."""
    import numpy as np

    a = np.asarray(arr, np.float32)
    lo, hi = np.percentile(a, [1, 99])
    if hi <= lo:
        return False
    return bool((np.median(a) - lo) / (hi - lo) > 0.5)


def image_stain(arr) -> str:
    """The stain an image looks like, from its polarity (:func:`light_background`)."""
    return stain_of(light_background(arr))
