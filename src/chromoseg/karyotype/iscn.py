"""The ISCN notation, now :mod:`chromoseg.data.iscn` (``chromoseg.data`` imports nothing of
``chromoseg.karyotype``); this name is the same module, kept for the karyotype modules and callers
that import it from here."""
import sys

from chromoseg.data import iscn as _iscn

sys.modules[__name__] = _iscn
