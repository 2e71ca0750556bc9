"""Metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ecg import metrics as m

# four records, two classes; every record has at least one label
Y = np.array([[1, 0], [0, 1], [1, 1], [1, 0]])
P = np.array([[0.9, 0.2], [0.3, 0.8], [0.6, 0.4], [0.35, 0.5]])


def test_auc_by_hand():
    # class 0: every positive (0.9, 0.6, 0.35) above the one negative (0.3) -> 1.0
    # class 1: positives 0.8, 0.4 vs negatives 0.2, 0.5 -> 3 of 4 pairs ordered -> 0.75
    np.testing.assert_allclose(m.per_class_auc(Y, P), [1.0, 0.75])
    assert m.macro_auc(Y, P) == pytest.approx(0.875)


def test_fmax_by_hand():
    # t in (0.30, 0.35]: precision (1 + 1 + 1 + 1/2) / 4 = 0.875, recall 1 -> F = 14/15,
    # the best over the grid; its first grid point is 0.31
    f, t = m.fmax(Y, P)
    assert f == pytest.approx(14 / 15)
    assert t == pytest.approx(0.31)


def test_accuracies_by_hand():
    # thresholds 0.5: records 0 and 1 exact, record 2 misses class 1, record 3 predicts class 1 only
    assert m.exact_match_accuracy(Y, P, np.array([0.5, 0.5])) == pytest.approx(0.5)
    # Keras binary accuracy (p > 0.5): 2 + 2 + 1 + 1 right cells of 8
    assert m.label_accuracy(Y, P) == pytest.approx(0.75)


def test_thresholds_and_f1_by_hand():
    thresholds = m.tune_thresholds(Y, P)
    # class 0: any t in (0.3, 0.35] catches all three positives and no negative: F1 = 1 first at 0.31
    assert thresholds[0] == pytest.approx(0.31)
    # class 1: t in (0.2, 0.4] -> TP 2, FP 1 (0.5) -> F1 0.8; t in (0.5, 0.8] -> TP 1 -> 2/3; best 0.8 first at 0.21
    assert thresholds[1] == pytest.approx(0.21)
    np.testing.assert_allclose(m.per_class_f1(Y, P, thresholds), [1.0, 0.8])
    np.testing.assert_array_equal(m.confusion_counts(Y, P, thresholds), [[3, 0, 0, 1], [2, 1, 0, 1]])


def test_auc_undefined_for_a_single_valued_class_is_an_error():
    y = Y.copy()
    y[:, 1] = 1
    assert np.isnan(m.per_class_auc(y, P)[1])
    with pytest.raises(m.MetricError, match=r"class index\(es\) \[1\]"):  # two classes: not PTB-XL's, no names
        m.macro_auc(y, P)


def test_undefined_auc_names_the_superclass():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 5)) < 0.5).astype(int)
    y[:, 4] = 0  # no HYP record
    with pytest.raises(m.MetricError, match=r"AUC undefined for class\(es\) HYP: all records"):
        m.macro_auc(y, rng.random((40, 5)))


def test_non_finite_probabilities_name_the_class():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 5)) < 0.5).astype(int)
    p = rng.random((40, 5))
    p[3, 1] = np.nan
    with pytest.raises(m.MetricError, match=r"probabilities of class\(es\) MI are NaN or infinite"):
        m.macro_auc(y, p)


def test_bootstrap_is_reproducible_under_a_seed():
    rng = np.random.default_rng(3)
    y = (rng.random((200, 5)) < 0.3).astype(int)
    p = np.clip(y * 0.3 + rng.random((200, 5)) * 0.7, 0, 1)
    a = m.bootstrap_auc(y, p, n_boot=200, seed=7)
    assert a == m.bootstrap_auc(y, p, n_boot=200, seed=7)
    assert a != m.bootstrap_auc(y, p, n_boot=200, seed=8)
    assert a[0] < m.macro_auc(y, p) < a[1]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must be equal"):
        m.macro_auc(Y, P[:, :1])
