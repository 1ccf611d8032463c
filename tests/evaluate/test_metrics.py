"""Metrics against hand-computed values."""

import numpy as np
import pytest

from vidsearch.errors import ConfigError, ShapeError
from vidsearch.evaluate import metrics as m


def test_average_precision_wu_2007():
    # relevant {a, b, c}; retrieved at ranks 1, 3 (c never retrieved): (1/1 + 2/3) / 3
    assert m.average_precision(["a", "x", "b", "y"], {"a", "b", "c"}) == pytest.approx((1 + 2 / 3) / 3)
    assert m.average_precision(["x", "a"], {"a"}) == pytest.approx(0.5)
    assert m.average_precision(["a", "b"], {"a", "b"}) == 1.0
    assert m.average_precision(["x"], set()) == 0.0
    assert m.average_precision(["a", "a", "b"], {"a", "b"}) == pytest.approx((1 + 2 / 3) / 2)  # duplicates count once


def test_mean_average_precision():
    assert m.mean_average_precision([["a"], ["x", "b"]], [{"a"}, {"b"}]) == pytest.approx(0.75)
    with pytest.raises(ValueError):  # ShapeError is also a ValueError
        m.mean_average_precision([["a"]], [])
    with pytest.raises(ShapeError, match="one ground-truth set per ranking"):
        m.mean_average_precision([["a"]], [])


def test_bad_inputs_are_errors_that_say_what_was_expected():
    with pytest.raises(ShapeError, match="2 scores and 1 true/false labels"):
        m.micro_average_precision([0.1, 0.2], [True], 1)
    with pytest.raises(ShapeError):
        m.precision_recall_curve([0.1], [True, False], 1)
    for fn in (m.precision_at_k, m.recall_at_k, m.accuracy_at_k, m.f1_at_k):
        with pytest.raises(ConfigError, match="k must be >= 1"):
            fn(["a"], {"a"}, 0)
    with pytest.raises(ConfigError):
        m.knn_recall(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64), 0)


def test_micro_ap_pools_all_queries():
    # predictions sorted: 0.9 T, 0.8 F, 0.7 T ; 3 ground-truth pairs (one never predicted)
    uap = m.micro_average_precision([0.7, 0.9, 0.8], [True, True, False], 3)
    assert uap == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m.micro_average_precision([0.5], [False], 1) == 0.0
    p, r, t = m.precision_recall_curve([0.7, 0.9, 0.8], [True, True, False], 3)
    np.testing.assert_allclose(p, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(t, [0.9, 0.8, 0.7])


def test_precision_recall_f1_accuracy_at_k():
    ranking = ["a", "x", "b", "y", "z"]
    rel = {"a", "b", "c", "d"}
    assert m.precision_at_k(ranking, rel, 5) == pytest.approx(2 / 5)
    assert m.recall_at_k(ranking, rel, 5) == pytest.approx(2 / 4)
    assert m.f1_at_k(ranking, rel, 5) == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert m.accuracy_at_k(ranking, rel, 1) == 1.0
    assert m.accuracy_at_k(["x", "a"], rel, 1) == 0.0
    assert m.f1_at_k(["x"], rel, 1) == 0.0


def test_knn_recall_with_ties():
    exact = np.array([[1, 2, 3]])
    approx = np.array([[1, 3, 9]])
    assert m.knn_recall(approx, exact, 3) == pytest.approx(2 / 3)
    # 9 is at the same distance as the 3rd exact neighbour: a tie, not an error
    assert m.knn_recall(approx, exact, 3, np.array([[0.1, 0.3, 0.3]]), np.array([[0.1, 0.2, 0.3]])) == 1.0
    assert m.knn_recall(approx, exact, 3, np.array([[0.1, 0.3, 0.5]]), np.array([[0.1, 0.2, 0.3]])) == pytest.approx(2 / 3)


def test_temporal_iou():
    assert m.temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert m.temporal_iou((0, 1), (2, 3)) == 0.0
    assert m.temporal_iou((2, 4), (2, 4)) == 1.0


def test_by_class_and_macro_mean():
    assert m.by_class([1.0, 0.0, 1.0], ["a", "a", "b"]) == {"a": 0.5, "b": 1.0}
    assert m.macro_mean([1.0, 0.0, 1.0], ["a", "a", "b"]) == 0.75
