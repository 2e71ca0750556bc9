"""Multi-label metrics for PTB-XL superclasses: AUC with bootstrap intervals, thresholds, F1, Fmax.

Everything takes ``y_true`` (N, C) in {0, 1} and ``y_prob`` (N, C) in [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from edge_ecg import CLASSES

THRESHOLD_GRID = np.round(np.arange(0.0, 1.0001, 0.01), 2)


class MetricError(ValueError):
    """A metric is undefined for the records given (e.g. a class with one label value)."""


def _check(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if y_true.shape != y_prob.shape or y_true.ndim != 2:
        raise ValueError(f"labels {y_true.shape} and probabilities {y_prob.shape} must be equal (N, C) arrays")
    if not np.isfinite(y_prob).all():
        bad = sorted({int(c) for c in np.flatnonzero(~np.isfinite(y_prob).all(axis=0))})
        raise MetricError(f"probabilities of {class_names(bad, y_prob.shape[1])} are NaN or infinite (a diverged model or non-finite inputs)")
    return y_true.astype(np.int64), y_prob


def per_class_auc(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """ROC AUC of each class; NaN where a class has only one label value among the records."""
    y_true, y_prob = _check(y_true, y_prob)
    out = np.full(y_true.shape[1], np.nan)
    for c in range(y_true.shape[1]):
        if 0 < y_true[:, c].sum() < len(y_true):
            out[c] = roc_auc_score(y_true[:, c], y_prob[:, c])
    return out


def macro_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean of the per-class AUCs (scikit-learn's ``average='macro'``); error if any is undefined."""
    aucs = per_class_auc(y_true, y_prob)
    if np.isnan(aucs).any():
        missing = [int(c) for c in np.flatnonzero(np.isnan(aucs))]
        raise MetricError(f"AUC undefined for {class_names(missing, len(aucs))}: all records have the same label")
    return float(aucs.mean())


def class_names(indices: list[int], n_classes: int) -> str:
    """'class(es) MI, HYP' for PTB-XL's superclasses; 'class index(es) [1, 4]' for other label sets."""
    if n_classes == len(CLASSES):
        return f"class(es) {', '.join(CLASSES[i] for i in indices)}"
    return f"class index(es) {indices}"


def bootstrap_samples(y_true: np.ndarray, n_boot: int, seed: int):
    """``n_boot`` record resamples (index arrays) in which every class has both label values.

    A resample where a class is all positive or all negative is drawn again, so every
    replicate gives a defined macro AUC. Reproducible under ``seed``.
    """
    rng = np.random.default_rng(seed)
    n, drawn = len(y_true), 0
    while drawn < n_boot:
        idx = rng.integers(0, n, n)
        pos = y_true[idx].sum(axis=0)
        if ((pos == 0) | (pos == n)).any():
            continue
        drawn += 1
        yield idx


def bootstrap_auc(
    y_true: np.ndarray, y_prob: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the macro AUC, resampling records (reproducible under ``seed``).

    Resamples in which a class has a single label value are drawn again, so every
    replicate is a valid macro AUC.
    """
    y_true, y_prob = _check(y_true, y_prob)
    macro_auc(y_true, y_prob)  # fails early if undefined on the full set
    values = [macro_auc(y_true[idx], y_prob[idx]) for idx in bootstrap_samples(y_true, n_boot, seed)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(
    labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Macro AUC of a minus b on the same records, with a paired percentile bootstrap interval.

    Each replicate resamples records once and scores both models on that sample, so
    the record-to-record variation they share cancels out.
    """
    if probs_a.shape != probs_b.shape or probs_a.shape != labels.shape:
        raise ValueError(f"paired comparison needs predictions of the same records: {probs_a.shape} vs {probs_b.shape}")
    diffs = [
        macro_auc(labels[idx], probs_a[idx]) - macro_auc(labels[idx], probs_b[idx])
        for idx in bootstrap_samples(labels, n_boot, seed)
    ]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"difference": macro_auc(labels, probs_a) - macro_auc(labels, probs_b), "ci95": [float(lo), float(hi)]}


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per-class decision threshold maximizing F1 (ties: the lowest threshold). Fit on validation data."""
    y_true, y_prob = _check(y_true, y_prob)
    best = np.full(y_true.shape[1], 0.5)
    for c in range(y_true.shape[1]):
        scores = [_f1(y_true[:, c], y_prob[:, c] >= t) for t in grid]
        best[c] = grid[int(np.argmax(scores))]
    return best


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def per_class_f1(y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    y_true, y_prob = _check(y_true, y_prob)
    return np.array([_f1(y_true[:, c], y_prob[:, c] >= thresholds[c]) for c in range(y_true.shape[1])])


def fmax(y_true: np.ndarray, y_prob: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> tuple[float, float]:
    """Fmax as the PTB-XL benchmark first defined it (CAFA's sample-centric F-max).

    For one threshold t swept over 0..1 in steps of 0.01: precision is averaged over
    the records with at least one positive prediction, recall over all (labelled) records; the
    result is the best 2PR/(P+R) and its threshold.
    """
    y_true, y_prob = _check(y_true, y_prob)
    best, best_t = 0.0, float(grid[0])
    true_count = y_true.sum(axis=1)
    labelled = true_count > 0  # PTB-XL's labelled records all are; others have no recall to average
    for t in grid:
        pred = y_prob >= t
        pred_count = pred.sum(axis=1)
        hit = (pred & (y_true == 1)).sum(axis=1)
        covered = pred_count > 0
        if not covered.any():
            continue
        precision = np.mean(hit[covered] / pred_count[covered])
        recall = np.mean(hit[labelled] / true_count[labelled])
        if precision + recall > 0:
            f = 2 * precision * recall / (precision + recall)
            if f > best:
                best, best_t = float(f), float(t)
    return best, best_t


def exact_match_accuracy(y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray) -> float:
    """Sample-wise accuracy: the fraction of records whose whole label set is predicted exactly."""
    y_true, y_prob = _check(y_true, y_prob)
    return float(np.mean(((y_prob >= thresholds) == (y_true == 1)).all(axis=1)))


def label_accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    """Label-wise accuracy, Keras's ``binary_accuracy``: the fraction of (record, class) cells right at 0.5.

    With five mostly negative labels this is high even for weak models; it is the
    figure behind the student report's "88 % accuracy".
    """
    y_true, y_prob = _check(y_true, y_prob)
    return float(np.mean((y_prob > threshold) == (y_true == 1)))


def confusion_counts(y_true: np.ndarray, y_prob: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(C, 4) counts of TP, FP, FN, TN per class at the given thresholds."""
    y_true, y_prob = _check(y_true, y_prob)
    pred, pos = y_prob >= thresholds, y_true == 1
    return np.stack(
        [(pred & pos).sum(0), (pred & ~pos).sum(0), (~pred & pos).sum(0), (~pred & ~pos).sum(0)], axis=1
    ).astype(int)
