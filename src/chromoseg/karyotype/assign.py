"""Karyotype-aware class assignment: the classes of one metaphase's chromosomes chosen jointly.

Each chromosome alone takes its most probable class; but a metaphase holds (nearly) two of each
autosome, so when three chromosomes claim class 4 and none class 5, the least sure of the three is
more likely a 5. :func:`assign_classes` makes that choice for all chromosomes at once as a min-cost
matching (``scipy.optimize.linear_sum_assignment``) of chromosomes to *class slots*:

* two slots per autosome, two X slots and one Y slot, at cost ``-log p(class)``;
* ``extra`` more slots per class for gains (and for an unusual count), each at an added penalty of
  ``gain_penalty`` nats (default 3: a third copy is taken only when every other class is at least
  e^3 = 20 times less likely for that chromosome);
* empty slots cost nothing (losses are free: a chromosome missed by the detector must not pull
  another one into its class).

The sex chromosomes: a cell is XX or XY, so the matching is made twice, once with the female cell's
free slots (2 X, no Y) and once with the male's (1 X, 1 Y), each with the ``extra`` gain slots of
every class (a third sex chromosome, 47,XXY or 47,XYY, is a gain like a trisomy), and the cheaper
of the two is kept. (Until 2026-12 there were 2 X and 1 Y slots at no penalty in one matching: a male
cell's free second X slot drew an autosome into it -- 13 of the 23 M-FISH validation metaphases came
out ``XXY`` or ``XXYY``, 1 does with two matchings (``58,XYY``), none in the expert's classes;
``benchmarks/results/karyotype_line.md``.) Chromosomes without ``class_scores`` keep their class, and so
do the detections that are not chromosomes (:func:`chromoseg.karyotype.counts.not_chromosomes`: a
nucleus): they take no slot, so a nucleus called "2" cannot push a real 2 into another class.
"""
from __future__ import annotations

import numpy as np

from chromoseg.karyotype.iscn import AUTOSOMES, X_ID, Y_ID

#: slots at no penalty, per class id, of a female (XX) and of a male (XY) cell
FEMALE_SLOTS = {**{c: 2 for c in AUTOSOMES}, X_ID: 2, Y_ID: 0}
MALE_SLOTS = {**{c: 2 for c in AUTOSOMES}, X_ID: 1, Y_ID: 1}
#: the slots at no penalty of the assignment before 2026-12 (2 X and 1 Y in one matching), kept for
#: ``slot_table``'s default
BASE_SLOTS = {**{c: 2 for c in AUTOSOMES}, X_ID: 2, Y_ID: 1}
GAIN_PENALTY = 3.0
EXTRA_SLOTS = 2


def slot_table(n_needed: int, gain_penalty: float = GAIN_PENALTY, extra: int = EXTRA_SLOTS,
               base: dict[int, int] | None = None):
    """Class id and penalty of every slot: the ``base`` slots (default :data:`BASE_SLOTS`), then
    ``extra`` per class at ``gain_penalty`` each (more layers when ``n_needed`` chromosomes would not
    fit)."""
    base = BASE_SLOTS if base is None else base
    cls, pen = [], []
    for c, k in base.items():
        cls += [c] * k
        pen += [0.0] * k
    layers = max(int(extra), -(-(n_needed - len(cls)) // len(base)))
    for layer in range(layers):
        for c in base:
            cls.append(c)
            pen.append(gain_penalty * (layer + 1))
    return np.asarray(cls, np.int64), np.asarray(pen, np.float64)


def assign_classes(class_scores, gain_penalty: float = GAIN_PENALTY, extra: int = EXTRA_SLOTS,
                   eps: float = 1e-6) -> np.ndarray:
    """Class ids (1-24) for ``class_scores [N, 24]`` (probabilities, index 0 = class 1), chosen
    jointly for one metaphase (see the module docstring). Returns int64 ``[N]``."""
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(class_scores, np.float64).reshape(-1, 24)
    n = p.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    p = p / np.clip(p.sum(1, keepdims=True), eps, None)  # the class given that it is a chromosome
    best = None
    for base in (FEMALE_SLOTS, MALE_SLOTS):  # the cell is XX or XY: the cheaper matching
        cls, pen = slot_table(n, gain_penalty, extra, base)
        cost = -np.log(np.clip(p[:, cls - 1], eps, None)) + pen[None, :]
        rows, cols = linear_sum_assignment(cost)
        total = float(cost[rows, cols].sum())
        if best is None or total < best[0]:
            out = np.zeros(n, np.int64)
            out[rows] = cls[cols]
            best = (total, out)
    return best[1]


def assign_instances(instances: list[dict], exclude_non_chromosomes: bool = True, **kw) -> list[dict]:
    """Copies of one metaphase's instances with ``category_id`` from :func:`assign_classes` (the
    per-chromosome argmax kept as ``category_id_independent``); instances without
    ``class_scores``, and those :func:`chromoseg.karyotype.counts.not_chromosomes` leaves out (unless
    ``exclude_non_chromosomes`` is False), are left as they are and take no class slot. The rule's
    verdict is marked on every copy, ``not_chromosome`` = why or None, so that the karyotype analysis
    reads it instead of judging again (:func:`chromoseg.karyotype.counts.judged_not_chromosomes`)."""
    from chromoseg.karyotype.counts import judged_not_chromosomes

    skip = judged_not_chromosomes(instances) if exclude_non_chromosomes else {}
    idx = [i for i, inst in enumerate(instances) if inst.get("class_scores") is not None and i not in skip]
    out = [dict(inst) for inst in instances]
    if exclude_non_chromosomes:
        for i, inst in enumerate(out):
            inst["not_chromosome"] = skip.get(i)
    if not idx:
        return out
    labels = assign_classes([instances[i]["class_scores"] for i in idx], **kw)
    for i, c in zip(idx, labels.tolist()):
        out[i]["category_id_independent"] = out[i].get("category_id")
        out[i]["category_id"] = int(c)
    return out
