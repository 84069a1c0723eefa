"""Regression metrics of a length-of-stay task (``los``), weighted like ``sweeper.evaluation.metrics``.

Labels and predictions are log1p(hours): the model is trained on that scale (MSE loss) and its single
output is the prediction of log1p(hours). Every metric is reported on hours, as the masked global
alignment paper does (docs/methods.md, "Length of stay"): both are turned back with ``expm1`` first.

- ``mse``: mean squared error in hours²; ``mae``: mean absolute error in hours (lower is better);
- ``pearson``: Pearson's r between predicted and actual hours; ``spearman``: Spearman's ρ (the
  Pearson r of their average ranks, so the same on hours or on log1p(hours); higher is better).

As for classification, ``weights`` ``[R, n]`` score R weightings of the stays at once: row r counts
stay i ``weights[r, i]`` times (a bootstrap resample's draw counts). Spearman's ranks are then the
average ranks *within the resample*: a group of tied values holding total weight c after L units of
weight gets rank L + (c + 1)/2, exactly the rank its copies have in the resampled array. A NaN label
(length of stay unknown) drops the stay. tests/evaluation/test_regression_metrics.py pins each to
sklearn's mean_squared_error / mean_absolute_error and scipy's pearsonr / spearmanr, on the arrays
as given and on resampled (repeated) ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REGRESSION_METRICS: tuple[str, ...] = ("mse", "mae", "pearson", "spearman")


def regression_metrics(labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray,
                       metrics: Sequence[str] = REGRESSION_METRICS) -> dict[str, np.ndarray]:
    """``{metric: [R]}`` for ``[n]`` labels and predictions (log1p hours) under ``[R, n]`` weights;
    NaN where a weighting holds no weight (and, for the correlations, where either side is constant)."""
    known = ~np.isnan(labels)
    labels, predictions, weights = labels[known], predictions[known], weights[:, known]
    total = weights.sum(axis=1)
    has_weight = total > 0
    hours, predicted_hours = np.expm1(labels), np.expm1(predictions)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        error = predicted_hours - hours
        if "mse" in metrics:
            out["mse"] = np.where(has_weight, (weights @ error**2) / total, np.nan)
        if "mae" in metrics:
            out["mae"] = np.where(has_weight, (weights @ np.abs(error)) / total, np.nan)
    if "pearson" in metrics:
        out["pearson"] = weighted_pearson(hours, predicted_hours, weights)
    if "spearman" in metrics:
        out["spearman"] = weighted_pearson(weighted_ranks(labels, weights), weighted_ranks(predictions, weights), weights)
    return {name: out[name] for name in metrics}


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[R, n]``: each stay's average rank (1-based, ties averaged) within each weighting; with unit
    weights, ``scipy.stats.rankdata(values)``. A stay of zero weight gets its group's rank (unused)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1) if len(order) else weights[:, order]
    before = np.cumsum(group_weight, axis=1) - group_weight
    group_rank = before + (group_weight + 1) / 2
    sizes = np.diff(np.r_[starts, len(order)])
    ranks = np.empty_like(weights, dtype=float)
    ranks[:, order] = np.repeat(group_rank, sizes, axis=1)
    return ranks


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[R]``: Pearson's r of ``x`` and ``y`` (``[n]`` or ``[R, n]``) under each weighting; NaN
    when a weighting holds no weight or either side is constant over the stays it weighs."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        centred_x = x - ((weights * x).sum(axis=1) / total)[:, None]
        centred_y = y - ((weights * y).sum(axis=1) / total)[:, None]
        covariance = (weights * centred_x * centred_y).sum(axis=1)
        spread_x = (weights * centred_x**2).sum(axis=1)
        spread_y = (weights * centred_y**2).sum(axis=1)
        # A constant side leaves only rounding in its spread: undefined, as scipy's pearsonr says.
        varies = (spread_x > 1e-20 * (weights * x**2).sum(axis=1)) & (spread_y > 1e-20 * (weights * y**2).sum(axis=1))
        r = covariance / np.sqrt(spread_x * spread_y)
    return np.where((total > 0) & varies, np.clip(r, -1.0, 1.0), np.nan)
