"""chromoseg: chromosome instance segmentation (Enhanced Rotated Mask R-CNN) and karyotyping.

``chromoseg.load_model(name).predict(image)`` is the one-call Python API (see :mod:`chromoseg.api`).
"""

__version__ = "0.1.0"


def load_model(name=None, device: str = "cpu", **settings):
    """A shipped model (default ``mfish``) or a model file, ready to ``.predict(image)``; see
    :func:`chromoseg.api.load_model`."""
    from chromoseg.api import load_model as _load

    return _load(name, device=device, **settings)
