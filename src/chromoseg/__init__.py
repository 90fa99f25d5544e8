"""chromoseg: chromosome instance segmentation (Enhanced Rotated Mask R-CNN) and karyotyping.

``chromoseg.load_model(name).predict(image)`` is the one-call Python API (see :mod:`chromoseg.api`).
"""

__version__ = "0.1.0"

from chromoseg.data.classes import CLASS_NAMES  # noqa: E402  "1".."22", "X" (id 23), "Y" (id 24), by id - 1


def class_name(class_id):
    """A class id's name ("1".."22", "X" for 23, "Y" for 24; None for 0 / unassigned)."""
    from chromoseg.api import class_name as _name

    return _name(class_id)


def load_model(name=None, device: str = "cpu", **settings):
    """A shipped model (default ``mfish``) or a model file, ready to ``.predict(image)``; see
    :func:`chromoseg.api.load_model`."""
    from chromoseg.api import load_model as _load

    return _load(name, device=device, **settings)
