"""The one place metrics are computed: sklearn's implementations, applied per label.

Binary tasks (e.g. in-hospital mortality) pass ``[n]`` arrays; multi-label tasks (e.g. the 25
phenotypes) pass ``[n, K]``. Scores are probabilities of the positive class. A NaN label means the
outcome is unknown for that stay (and label): the entry is dropped, per label.

Multi-label summaries follow the MIMIC-III benchmark's macro averaging (Harutyunyan et al. 2019):
AUROC and AUPRC are averaged over the labels that have both classes among the known entries (a
label with one class has no ranking to score), the threshold metrics and Brier over all labels.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import sklearn
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    roc_auc_score,
)

from sweeper.errors import SweeperError

METRICS: tuple[str, ...] = ("auroc", "auprc", "macro_f1", "accuracy", "brier")


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
    multi_label = labels.ndim == 2
    labels_2d = labels if multi_label else labels[:, None]
    scores_2d = scores if multi_label else scores[:, None]
    # Binary macro-F1 averages the F1 of both classes; per label of a multi-label task it is the
    # positive class's F1, which the macro average then averages over labels.
    f1_average = "binary" if multi_label else "macro"
    # Inputs were checked above; skipping sklearn's re-validation matters in the bootstrap, which
    # calls this thousands of times.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        per_label = [
            _label_metrics(labels_2d[:, k], scores_2d[:, k], threshold, metrics, f1_average)
            for k in range(labels_2d.shape[1])
        ]
    return {name: _mean_over_labels([row[name] for row in per_label]) for name in metrics}


def _label_metrics(
    y: np.ndarray, score: np.ndarray, threshold: float, metrics: Sequence[str], f1_average: str
) -> dict[str, float]:
    """Every requested metric for one label, on its stays with a known outcome."""
    known = ~np.isnan(y)
    y, score = y[known].astype(np.int8), score[known]
    if y.size == 0:
        return dict.fromkeys(metrics, float("nan"))
    has_both_classes = 0 < y.sum() < y.size
    predicted = (score >= threshold).astype(np.int8)
    out: dict[str, float] = {}
    for name in metrics:
        if name == "auroc":
            out[name] = float(roc_auc_score(y, score)) if has_both_classes else float("nan")
        elif name == "auprc":
            out[name] = float(average_precision_score(y, score)) if has_both_classes else float("nan")
        elif name == "macro_f1":
            out[name] = float(f1_score(y, predicted, average=f1_average, zero_division=0.0))
        elif name == "accuracy":
            out[name] = float(accuracy_score(y, predicted))
        elif name == "brier":
            out[name] = float(brier_score_loss(y, score, pos_label=1))
    return out


def _mean_over_labels(values: list[float]) -> float:
    """Mean over the labels where the metric is defined; NaN (without a warning) if none."""
    array = np.asarray(values, dtype=float)
    if np.isnan(array).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(array))


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
