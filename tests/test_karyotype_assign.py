"""Karyotype-aware class assignment (min-cost matching of chromosomes to class slots)."""
import numpy as np

from chromoseg.karyotype.assign import assign_classes, assign_instances, slot_table


def _probs(rows):
    p = np.full((len(rows), 24), 1e-4)
    for i, r in enumerate(rows):
        for c, v in r.items():
            p[i, c - 1] = v
    return p


def test_a_third_claimant_moves_to_the_empty_class():
    # three chromosomes look most like a 4; the least sure of them is nearly as likely a 5
    p = _probs([{4: 0.9}, {4: 0.85}, {4: 0.5, 5: 0.45}, {5: 0.9}])
    assert assign_classes(p).tolist() == [4, 4, 5, 5]
    assert (p.argmax(1) + 1).tolist() == [4, 4, 4, 5]  # what each chromosome alone would say


def test_a_clear_gain_is_kept():
    # trisomy 21: three sure 21s and nothing that could be anything else
    p = _probs([{21: 0.95}, {21: 0.95}, {21: 0.95, 22: 0.01}])
    assert assign_classes(p).tolist() == [21, 21, 21]


def test_sure_chromosomes_keep_their_classes_and_losses_are_free():
    p = _probs([{1: 0.9}, {2: 0.9}, {23: 0.9}, {24: 0.9}])
    assert assign_classes(p).tolist() == [1, 2, 23, 24]
    assert assign_classes(np.zeros((0, 24))).shape == (0,)


def test_many_chromosomes_fit():
    p = _probs([{7: 0.9}] * 120)
    out = assign_classes(p)
    assert out.shape == (120,) and (out == 7).sum() >= 3
    cls, pen = slot_table(120)
    assert len(cls) >= 120 and pen.min() == 0


def test_assign_instances_keeps_the_independent_class():
    insts = [{"category_id": 4, "class_scores": _probs([{4: 0.9}])[0].tolist()},
             {"category_id": 4, "class_scores": _probs([{4: 0.8}])[0].tolist()},
             {"category_id": 4, "class_scores": _probs([{4: 0.5, 5: 0.45}])[0].tolist()},
             {"category_id": 9}]
    out = assign_instances(insts)
    assert [o["category_id"] for o in out] == [4, 4, 5, 9]
    assert out[2]["category_id_independent"] == 4 and "category_id_independent" not in out[3]
    assert insts[2]["category_id"] == 4  # inputs untouched


def test_a_cell_is_xx_or_xy_a_third_sex_chromosome_is_a_gain():
    """A male cell: a clear X and Y; a third chromosome half X-like, nearly as likely a 9 (whose one
    copy is found) goes to the 9, not into a free second X slot (47,XXY is a gain like a trisomy)."""
    p = _probs([{23: 0.9}, {24: 0.9}, {9: 0.9}, {23: 0.5, 9: 0.4}])
    assert assign_classes(p).tolist() == [23, 24, 9, 9]
    # a female cell keeps both X; a sure third X is still possible (a gain)
    assert assign_classes(_probs([{23: 0.9}, {23: 0.9}])).tolist() == [23, 23]
    assert assign_classes(_probs([{23: 0.99}, {23: 0.99}, {23: 0.99}, {24: 1e-4}])).tolist()[:3] == [23, 23, 23]
    # a Y with an X is XY; two sure Y are kept (47,XYY)
    assert assign_classes(_probs([{23: 0.9}, {24: 0.9}])).tolist() == [23, 24]
    assert assign_classes(_probs([{23: 0.99}, {24: 0.99}, {24: 0.99}])).tolist() == [23, 24, 24]
