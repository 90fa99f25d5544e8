"""The single G-banded chromosome set (``../shared/data/single-chromosomes-gband``): one ``CELL.npz``
per cell, entries ``CLASS/claseCLASS_K_CELL`` (8-bit grey crops, dark on light, CLASS 1-24), and its
fixed split by cell. Read by ``chromoseg pretrain`` (:mod:`chromoseg.engine.pretrain`) and by
``chromoseg data synth`` (:mod:`chromoseg.data.synth`)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

#: the split's own seed, independent of any run's ``--seed``
SPLIT_SEED = 12345
#: train / val / test fractions of the cells
SPLIT = (0.8, 0.1, 0.1)
#: an entry's name: groups CLASS, CLASS again, K (index in the cell), CELL
ENTRY_NAME = re.compile(r"^(\d+)/clase(\d+)_(\d+)_(.+)$")


def default_data_dir() -> Path:
    """``../shared/data/single-chromosomes-gband``: beside the repository this package is in, else beside
    the working folder (a copy of the package run from elsewhere, e.g. a frozen copy for a long training
    run, with ``PYTHONPATH`` pointing at it); the first if neither exists (its error names it)."""
    rel = Path("shared") / "data" / "single-chromosomes-gband"
    places = [Path(__file__).resolve().parents[3].parent / rel, Path.cwd().resolve().parent / rel]
    return next((p for p in places if p.is_dir()), places[0])


def split_cells(cells: list[str], seed: int = SPLIT_SEED, fractions=SPLIT) -> dict[str, list[str]]:
    """Deterministic split of cell names into train/val/test (sorted names, seeded permutation)."""
    cells = sorted(cells)
    order = np.random.RandomState(seed).permutation(len(cells))
    n_tr = int(round(fractions[0] * len(cells)))
    n_va = int(round(fractions[1] * len(cells)))
    pick = [cells[i] for i in order]
    return {"train": sorted(pick[:n_tr]), "val": sorted(pick[n_tr:n_tr + n_va]), "test": sorted(pick[n_tr + n_va:])}
