"""Classification metrics in the original study's layout.

The confusion matrix is normalised by *actual* class (each column sums to 1):
``[[P(pred blend | blend), P(pred blend | not)], [P(pred not | blend), P(pred not | not)]]``.
"""

from __future__ import annotations

import numpy as np


def _as_bool(a) -> np.ndarray:
    return np.asarray(a).astype(bool)


def confusion(pred, truth) -> list[list[float]]:
    """Column-normalised 2x2 confusion matrix (NaN where a class is absent)."""
    pred, truth = _as_bool(pred), _as_bool(truth)
    blend_recall = pred[truth].mean() if truth.any() else np.nan
    nonblend_recall = (~pred[~truth]).mean() if (~truth).any() else np.nan
    return [
        [float(blend_recall), float(1 - nonblend_recall)],
        [float(1 - blend_recall), float(nonblend_recall)],
    ]


def recalls(pred, truth) -> dict:
    """Blend recall, non-blend recall and accuracy (None where a class is absent)."""
    pred, truth = _as_bool(pred), _as_bool(truth)

    def _mean(a):
        return float(a.mean()) if a.size else None

    return {
        "accuracy": _mean(pred == truth),
        "blend_recall": _mean(pred[truth]),
        "nonblend_recall": _mean(~pred[~truth]),
    }


def roc_auc(score, truth) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    score = np.asarray(score, dtype=np.float64)
    truth = _as_bool(truth)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Rules of :func:`choose_threshold`.
THRESHOLD_RULES = ("balanced", "accuracy")


def choose_threshold(probability, truth, rule: str = "balanced") -> float:
    """The threshold maximising balanced accuracy, or accuracy (ties go to the one closest to 0.5).

    Parameters
    ----------
    probability, truth : array-like
        Blend probabilities and true labels of the same stamps.
    rule : str
        ``balanced`` (the mean of the two recalls: the threshold does not
        depend on the share of blends) or ``accuracy`` (right calls over all
        stamps: the threshold for the share of blends these stamps have).
        [default: balanced]
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    p = np.asarray(probability, dtype=np.float64)
    truth = _as_bool(truth)
    candidates = np.unique(np.concatenate([np.linspace(0.02, 0.98, 97), [0.5]]))
    best, best_score = 0.5, -1.0
    for t in candidates:
        pred = p >= t
        if rule == "balanced":
            score = 0.5 * (pred[truth].mean() + (~pred[~truth]).mean())
        else:
            score = float(np.mean(pred == truth))
        if score > best_score + 1e-12 or (
            abs(score - best_score) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)
        ):
            best, best_score = float(t), float(score)
    return best
