"""The one place metrics are computed: weighted AUROC, AUPRC, macro-F1, accuracy and Brier.

Binary tasks (e.g. in-hospital mortality) pass ``[n]`` arrays; multi-label tasks (e.g. the 25
phenotypes) pass ``[n, K]``. Scores are probabilities of the positive class. A NaN label means the
outcome is unknown for that stay (and label): the entry is dropped, per label.

Multi-label summaries follow the MIMIC-III benchmark's macro averaging (Harutyunyan et al. 2019):
AUROC and AUPRC are averaged over the labels that have both classes among the known entries (a
label with one class has no ranking to score), the threshold metrics and Brier over all labels.

Why not call sklearn: the bootstrap scores every cell on 1000 resamples of its test stays, for
every seed and label. Calling sklearn once per resample cost 27.5 s per binary cell (300 stays x 3
seeds) and 500-935 s per 25-label phenotyping cell, far too slow for a sweep of ~52 cells on 2
cores; nearly all of it was sklearn's per-call overhead. Here a resample is the full test set with
each stay weighted by how often it was drawn, so ``weighted_metrics`` scores all resamples at once
as a ``[R, n]`` weight matrix: 0.07 s for that binary cell, 1.4 s for the 25-label one.
``compute_metrics`` is the same code with one resample of unit weights.
tests/evaluation/test_metrics.py pins every metric to sklearn's (roc_auc_score,
average_precision_score, f1_score, accuracy_score, brier_score_loss), with tied scores and with
sample weights, to 1e-12.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sweeper.errors import SweeperError

METRICS: tuple[str, ...] = ("auroc", "auprc", "macro_f1", "accuracy", "brier")
_RANKING_METRICS = frozenset({"auroc", "auprc"})


class MetricsError(SweeperError, ValueError):
    """Predictions that cannot be scored (wrong shapes, unknown metric names)."""


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """Score one set of predictions; returns ``{metric: value}`` for ``metrics`` (default all).

    ``labels``: ``[n]`` (binary) or ``[n, K]`` (multi-label) of 0/1/NaN; ``scores``: probabilities
    of the same shape; ``threshold``: a stay is predicted positive when its score is >= threshold.
    A metric that is undefined (e.g. AUROC when no label has both classes) is NaN.
    """
    labels, scores = _checked(labels, scores, metrics)
    unit_weights = np.ones((1, labels.shape[0]))
    values = _weighted_metrics(labels, scores, unit_weights, threshold, metrics)
    return {name: float(value[0]) for name, value in values.items()}


def weighted_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    threshold: float = 0.5,
    metrics: Sequence[str] = METRICS,
) -> dict[str, np.ndarray]:
    """``{metric: [R]}``: the metrics under each of R weightings of the stays at once.

    ``weights``: ``[R, n]`` non-negative. Row r scores the stays as if stay i appeared
    ``weights[r, i]`` times (a bootstrap resample's draw counts), or with sklearn's
    ``sample_weight=weights[r]``. Labels and scores are as in ``compute_metrics``. Per weighting, a
    class counts as present when its stays carry positive weight.
    """
    labels, scores = _checked(labels, scores, metrics)
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[1] != labels.shape[0]:
        raise MetricsError(f"weights {weights.shape} must be [n_weightings, n={labels.shape[0]}]")
    if not np.isfinite(weights).all() or weights.min(initial=0.0) < 0:
        raise MetricsError("weights must be finite and non-negative")
    return _weighted_metrics(labels, scores, weights, threshold, metrics)


def _weighted_metrics(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-label metrics, macro-averaged over labels; inputs already checked."""
    multi_label = labels.ndim == 2
    labels_2d = labels if multi_label else labels[:, None]
    scores_2d = scores if multi_label else scores[:, None]
    per_label = [
        _label_metrics(labels_2d[:, k], scores_2d[:, k], weights, threshold, metrics, multi_label)
        for k in range(labels_2d.shape[1])
    ]
    return {name: _mean_over_labels(np.stack([row[name] for row in per_label])) for name in metrics}


def _label_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    threshold: float,
    metrics: Sequence[str],
    multi_label: bool,
) -> dict[str, np.ndarray]:
    """``{metric: [R]}`` for one label, on its stays with a known outcome."""
    known = np.flatnonzero(~np.isnan(labels))
    if known.size == 0:
        return {name: np.full(weights.shape[0], np.nan) for name in metrics}
    needs_ranking = not _RANKING_METRICS.isdisjoint(metrics)
    # Sorting by score (only needed for the ranking metrics) leaves the threshold metrics unchanged.
    stays = known[np.argsort(scores[known], kind="stable")] if needs_ranking else known
    positive, scores, weights = labels[stays] == 1, scores[stays], weights[:, stays]
    out: dict[str, np.ndarray] = {}
    if needs_ranking:
        auroc, auprc = _ranking_metrics(positive, scores, weights)
        out.update(auroc=auroc, auprc=auprc)
    if not _RANKING_METRICS.issuperset(metrics):  # the bootstrap of one ranking metric skips these
        # Binary macro-F1 averages the F1 of both classes; per label of a multi-label task it is the
        # positive class's F1, which the macro average then averages over labels.
        f1, accuracy, brier = _threshold_metrics(
            positive, scores, weights, threshold, both_classes_f1=not multi_label
        )
        out.update(macro_f1=f1, accuracy=accuracy, brier=brier)
    return {name: out[name] for name in metrics}


def _ranking_metrics(
    positive: np.ndarray, sorted_scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(auroc [R], auprc [R])``; stays sorted by ascending score, NaN unless both classes weigh > 0.

    Tied scores form one group, i.e. one threshold, as in sklearn: AUROC is the area under the
    trapezoid ROC curve (a tie counts one half), AUPRC is sklearn's step-wise average precision
    ``sum_k (recall_k - recall_{k-1}) * precision_k`` over thresholds k from high to low.
    """
    # [R, n_groups]: weight of positives / negatives at each distinct score, ascending.
    positive_weight = weights * positive
    negative_weight = weights - positive_weight  # exact: each entry is w - w or w - 0
    group_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    if group_starts.size < sorted_scores.size:  # ties: merge each run of equal scores
        positive_weight = np.add.reduceat(positive_weight, group_starts, axis=1)
        negative_weight = np.add.reduceat(negative_weight, group_starts, axis=1)
    positive_total = positive_weight.sum(axis=1)
    negative_total = negative_weight.sum(axis=1)
    defined = (positive_total > 0) & (negative_total > 0)

    # Negatives scored strictly lower, plus half of those tied with the positive.
    negatives_below = np.cumsum(negative_weight, axis=1)
    negatives_below -= 0.5 * negative_weight
    pairs_ranked_right = np.einsum("rg,rg->r", positive_weight, negatives_below)

    # Thresholds from the highest score down: stays at or above the threshold are predicted positive.
    true_positives = np.cumsum(positive_weight[:, ::-1], axis=1)
    predicted_positives = true_positives + np.cumsum(negative_weight[:, ::-1], axis=1)
    precision = np.divide(
        true_positives, predicted_positives, out=np.zeros_like(true_positives), where=predicted_positives > 0
    )
    precision_times_recall_step = np.einsum("rg,rg->r", positive_weight[:, ::-1], precision)

    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.where(defined, pairs_ranked_right / (positive_total * negative_total), np.nan)
        auprc = np.where(defined, precision_times_recall_step / positive_total, np.nan)
    return auroc, auprc


def _threshold_metrics(
    positive: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float, both_classes_f1: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(f1 [R], accuracy [R], brier [R])``, NaN where all weight is zero.

    F1 follows sklearn with ``zero_division=0``: the positive class's F1, or with
    ``both_classes_f1`` the mean F1 over the classes present in the labels or the predictions.
    """
    predicted = scores >= threshold
    true_pos = weights @ (positive & predicted).astype(float)
    false_pos = weights @ (~positive & predicted).astype(float)
    false_neg = weights @ (positive & ~predicted).astype(float)
    true_neg = weights @ (~positive & ~predicted).astype(float)
    total = weights.sum(axis=1)
    squared_error = (scores - positive) ** 2

    # 2 TP + FP + FN is (labelled + predicted) weight of the class: zero iff the class is absent.
    f1_denominator_pos = 2 * true_pos + false_pos + false_neg
    f1_denominator_neg = 2 * true_neg + false_pos + false_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.where(f1_denominator_pos > 0, 2 * true_pos / f1_denominator_pos, 0.0)
        f1_neg = np.where(f1_denominator_neg > 0, 2 * true_neg / f1_denominator_neg, 0.0)
        if both_classes_f1:
            n_present = (f1_denominator_pos > 0).astype(float) + (f1_denominator_neg > 0)
            f1 = (f1_pos + f1_neg) / n_present  # an absent class contributes 0 to the sum
        else:
            f1 = f1_pos
        has_weight = total > 0
        f1 = np.where(has_weight, f1, np.nan)
        accuracy = np.where(has_weight, (true_pos + true_neg) / total, np.nan)
        brier = np.where(has_weight, (weights @ squared_error) / total, np.nan)
    return f1, accuracy, brier


def _mean_over_labels(per_label: np.ndarray) -> np.ndarray:
    """``[K, R]`` -> ``[R]``: mean over the labels where the metric is defined; NaN if none."""
    defined = ~np.isnan(per_label)
    n_defined = defined.sum(axis=0)
    total = np.where(defined, per_label, 0.0).sum(axis=0)
    return np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)


def _checked(labels, scores, metrics: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of matching ``[n]`` / ``[n, K]`` shape, finite scores in [0, 1], known metrics."""
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise MetricsError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim not in (1, 2):
        raise MetricsError(
            f"labels {labels.shape} and scores {scores.shape} must have the same shape, [n] for a "
            "binary task or [n, K] for a multi-label one"
        )
    if not np.isfinite(scores).all() or scores.min(initial=0.0) < 0 or scores.max(initial=0.0) > 1:
        raise MetricsError("scores must be finite probabilities in [0, 1]; apply a sigmoid to logits")
    known = labels[~np.isnan(labels)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise MetricsError("labels must be 0, 1 or NaN (unknown)")
    return labels, scores
