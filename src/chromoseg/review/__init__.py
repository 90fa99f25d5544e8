"""Review and correct a ``chromoseg predict`` folder in the browser (``chromoseg review DIR``).

- :mod:`chromoseg.review.store` - the reviewed state of a predict folder: the current instances of
  every metaphase, the edits (class, delete, join, split, draw or brush, turn, reviewed) with
  undo/redo, kept in ``DIR/review/`` (a file per edited metaphase and a journal; every edit saved at
  once, atomically, with who and when; versioned per metaphase, so an edit made on a stale version is
  refused).
- :mod:`chromoseg.review.geometry` - mask work: outlines (OpenCV contours), join, split along a line,
  a drawn polygon or brush stroke, the geometry (bbox, rbox, endpoints) of a new mask.
- :mod:`chromoseg.review.render` - the karyotype line, counts and flags of the current instances,
  the karyogram (the existing :mod:`chromoseg.karyotype.layout`) and the metaphase picture.
- :mod:`chromoseg.review.export` - corrected ``results.json``, karyograms, report and a COCO dataset
  of the reviewed metaphases (``chromoseg train --extra-train`` reads it) into ``DIR/reviewed/``.
- :mod:`chromoseg.review.app` - the web app (Starlette): token on every request, only files of DIR
  served, request size limits, a JSON API and the page (:mod:`chromoseg.review.static`).
- :mod:`chromoseg.review.server` - runs the app with uvicorn (``chromoseg review``).

Nothing here imports the CLI.
"""
from __future__ import annotations

from chromoseg.review.store import Conflict, NotFound, ReviewError, ReviewStore

__all__ = ["ReviewStore", "ReviewError", "NotFound", "Conflict"]
