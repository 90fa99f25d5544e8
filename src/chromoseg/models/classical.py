"""A classical baseline every learned model must beat: Otsu threshold + connected components.

``otsu_instances(image)``: the grey image is thresholded at Otsu's level (``skimage``), bright
objects on a dark background for fluorescence (``bright=True``; ``False`` for G-band, dark on
light), split into 8-connected components (``scipy.ndimage.label``) and components under
``min_area`` pixels (30) are dropped. Each component is one "chromosome" of class 0 (unknown) with
score 1; touching chromosomes stay one component and nuclei count as chromosomes, which is what
this baseline's numbers show.
"""
from __future__ import annotations

import numpy as np


def otsu_instances(image: np.ndarray, bright: bool = True, min_area: int = 30) -> list[dict]:
    """Instances (``mask`` bool ``[H, W]``, ``score`` 1.0, ``category_id`` 0) of a grey image."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ValueError(f"otsu_instances needs a 2-D grey image, got shape {img.shape}")
    if not np.isfinite(img).all() or img.max() == img.min():
        return []
    t = threshold_otsu(img)
    fg = img > t if bright else img < t
    lab, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    out = []
    for k in np.flatnonzero(areas >= min_area):
        if k == 0:
            continue
        out.append({"mask": lab == k, "score": 1.0, "category_id": 0})
    return out
