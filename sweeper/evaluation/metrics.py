"""The one place metrics are computed: weighted AUROC, AUPRC, macro-F1, accuracy, Brier and the
calibration metrics ACE and Brier skill score; a regression task's (``los``) MSE, MAE, Pearson and
Spearman come from ``sweeper.evaluation.regression`` through the same two functions.

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

Calibration (per label, macro-averaged like Brier):

- ``ace``, adaptive calibration error: the stays sorted by score (stable) are cut into
  ``ACE_BINS`` = 15 bins of (nearly) equal count, as ``numpy.array_split`` cuts them (the first
  n mod 15 bins one stay larger; empty bins, when n < 15, are left out); ACE is the mean over bins
  of |mean label − mean score|. Under weights a stay's copies fill consecutive positions of the
  sorted resample, so its weight is split between the bins they fall in: the same bins as
  ``array_split`` of the resampled array, still scored for all resamples at once (cumulative sums
  read at the bin edges), so the bootstrap stays vectorised: 1000 resamples of 300 stays × 3 seeds
  took 0.41 s without ACE and BSS and 0.63 s with them (binary), 6.2 s and 12.3 s for 25 labels
  (``bootstrap_ci``, measured with the test suite running beside it).
- ``bss``, Brier skill score: 1 − Brier / (p (1 − p)), p the (weighted) prevalence of the stays
  scored, p (1 − p) the Brier score of always predicting p; NaN when only one class is present.
  tests/evaluation/test_calibration_metrics.py checks both against hand computations.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sweeper.data.schema import REGRESSION_TASKS
from sweeper.errors import SweeperError
from sweeper.evaluation.regression import REGRESSION_METRICS, regression_metrics

METRICS: tuple[str, ...] = ("auroc", "auprc", "macro_f1", "accuracy", "brier", "ace", "bss")
"""The metrics of a classification task (binary or multi-label)."""
ALL_METRICS: tuple[str, ...] = METRICS + REGRESSION_METRICS
LOWER_IS_BETTER = frozenset({"brier", "ace", "mse", "mae"})
ACE_BINS = 15
DEFAULT_REGRESSION_METRIC = "spearman"
"""What ranks a regression task unless the spec says otherwise (``regression_metric``): rank-based
like AUROC, the same on hours and on log1p(hours), and not dominated by the few longest stays as
MSE and MAE in hours are."""
_RANKING_METRICS = frozenset({"auroc", "auprc"})
_SORTED_METRICS = _RANKING_METRICS | {"ace"}
_THRESHOLD_METRICS = frozenset({"macro_f1", "accuracy", "brier", "bss"})


def task_metrics(task: str | None) -> tuple[str, ...]:
    """The metrics a task is scored by: ``REGRESSION_METRICS`` for a regression task (``los``),
    else ``METRICS``."""
    return REGRESSION_METRICS if task in REGRESSION_TASKS else METRICS


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (Brier, ACE, MSE, MAE)."""
    return metric in LOWER_IS_BETTER


def metric_for(rank_by, task: str) -> str:
    """The metric ``task`` is ranked by. ``rank_by``: a mapping of task to metric (the spec's,
    ``sweeper.plan.ranking.rank_metrics``) or one metric name. A task the mapping lacks, or whose kind the one
    name does not fit (``auroc`` for ``los``), gets its kind's default: ``auroc``, or
    ``DEFAULT_REGRESSION_METRIC`` for a regression task."""
    fits = task_metrics(task)
    chosen = rank_by if isinstance(rank_by, str) else rank_by.get(task)
    if chosen in fits:
        return chosen
    return DEFAULT_REGRESSION_METRIC if fits == REGRESSION_METRICS else "auroc"


def is_regression(metrics: Sequence[str]) -> bool:
    """Whether ``metrics`` are regression metrics (all of them) or classification ones (none)."""
    unknown = [name for name in metrics if name not in ALL_METRICS]
    if unknown:
        raise MetricsError(f"unknown metric(s) {unknown}; known: {', '.join(ALL_METRICS)}")
    regression = [name in REGRESSION_METRICS for name in metrics]
    if any(regression) and not all(regression):
        raise MetricsError(f"metrics {list(metrics)} mix regression ({', '.join(REGRESSION_METRICS)}) and classification ones")
    return bool(regression) and all(regression)


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
    A metric that is undefined (e.g. AUROC when no label has both classes) is NaN. With regression
    ``metrics`` (``task_metrics("los")``), labels and scores are ``[n]`` log1p(hours), labels NaN
    where unknown (``sweeper.evaluation.regression``).
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
    if is_regression(metrics):
        return regression_metrics(labels, scores, weights, metrics)
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
    needs_sorting = not _SORTED_METRICS.isdisjoint(metrics)
    # Sorting by score (only needed for the ranking metrics and ACE) leaves the threshold metrics unchanged.
    stays = known[np.argsort(scores[known], kind="stable")] if needs_sorting else known
    positive, scores, weights = labels[stays] == 1, scores[stays], weights[:, stays]
    out: dict[str, np.ndarray] = {}
    if not _RANKING_METRICS.isdisjoint(metrics):
        auroc, auprc = _ranking_metrics(positive, scores, weights)
        out.update(auroc=auroc, auprc=auprc)
    if "ace" in metrics:
        out["ace"] = adaptive_calibration_error(positive, scores, weights)
    if not _THRESHOLD_METRICS.isdisjoint(metrics):  # the bootstrap of one ranking metric skips these
        # Binary macro-F1 averages the F1 of both classes; per label of a multi-label task it is the
        # positive class's F1, which the macro average then averages over labels.
        f1, accuracy, brier = _threshold_metrics(
            positive, scores, weights, threshold, both_classes_f1=not multi_label
        )
        out.update(macro_f1=f1, accuracy=accuracy, brier=brier, bss=_brier_skill_score(positive, weights, brier))
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


def adaptive_calibration_error(positive: np.ndarray, sorted_scores: np.ndarray, weights: np.ndarray,
                               n_bins: int = ACE_BINS) -> np.ndarray:
    """``[R]``: ACE over ``n_bins`` equal-mass bins of the stays, sorted by ascending score; NaN
    where a weighting holds no weight (module docstring).

    Weighting r lays the stays out on [0, W_r) in sorted order, stay i on [C_{i-1}, C_i) (C the
    cumulative weight); bin b is [e_b, e_{b+1}) with e_b = b⌊W/B⌋ + min(b, W − B⌊W/B⌋), the
    ``array_split`` cuts. A bin's label (score) sum is F(e_{b+1}) − F(e_b), F the cumulative
    label (score) weight, linear within each stay's interval.
    """
    n_rows, n = weights.shape
    total = weights.sum(axis=1)
    per_bin = np.floor(total / n_bins)
    edges = np.arange(n_bins + 1)[None, :] * per_bin[:, None] + np.minimum(np.arange(n_bins + 1)[None, :], (total - n_bins * per_bin)[:, None])
    ends = np.cumsum(weights, axis=1)
    # The stay whose interval holds each edge (n: the edge is the end), by one searchsorted over all
    # rows at once: row r is shifted by r·(max W + 1) so the rows stay apart and each sorted.
    shift = (np.arange(n_rows) * (total.max(initial=0.0) + 1.0))[:, None]
    holder = np.searchsorted((ends + shift).ravel(), (edges + shift).ravel(), side="right").reshape(edges.shape)
    holder -= n * np.arange(n_rows)[:, None]
    # F(t) = F(C_i) − v_i (C_i − t) inside stay i's interval; the edge W (holder n) is the last stay's end.
    holder = np.minimum(holder, n - 1)
    end_at = np.take_along_axis(ends, holder, axis=1)

    def cumulative(values: np.ndarray) -> np.ndarray:  # F at every edge, [R, n_bins + 1]
        at = np.take_along_axis(np.cumsum(weights * values, axis=1), holder, axis=1)
        return at - values[holder] * (end_at - edges)

    mass = np.diff(edges, axis=1)
    gap = np.abs(np.diff(cumulative(positive.astype(float)), axis=1) - np.diff(cumulative(sorted_scores), axis=1))
    filled = mass > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bin_error = np.where(filled, gap / np.where(filled, mass, 1.0), 0.0)
        return np.where(total > 0, per_bin_error.sum(axis=1) / filled.sum(axis=1), np.nan)


def _brier_skill_score(positive: np.ndarray, weights: np.ndarray, brier: np.ndarray) -> np.ndarray:
    """``[R]``: 1 − Brier / p(1 − p), p the weighted prevalence; NaN unless both classes weigh > 0."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = (weights @ positive.astype(float)) / total
        reference = prevalence * (1 - prevalence)
        return np.where(reference > 0, 1 - brier / reference, np.nan)


def _mean_over_labels(per_label: np.ndarray) -> np.ndarray:
    """``[K, R]`` -> ``[R]``: mean over the labels where the metric is defined; NaN if none."""
    defined = ~np.isnan(per_label)
    n_defined = defined.sum(axis=0)
    total = np.where(defined, per_label, 0.0).sum(axis=0)
    return np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)


def _checked(labels, scores, metrics: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of matching ``[n]`` / ``[n, K]`` shape, finite scores in [0, 1], known metrics;
    for regression metrics ``[n]`` arrays, finite predictions, labels finite or NaN."""
    regression = is_regression(metrics)
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if regression:
        if labels.shape != scores.shape or labels.ndim != 1:
            raise MetricsError(f"labels {labels.shape} and predictions {scores.shape} of a regression task must both be [n]")
        if not np.isfinite(scores).all() or np.isinf(labels).any():
            raise MetricsError("regression predictions must be finite and labels finite or NaN (unknown); log1p(hours) for los")
        return labels, scores
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
