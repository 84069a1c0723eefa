"""Per-label metrics of a multi-label cell (the ``multitask`` task): precision and recall at a
threshold, AUROC and AUPRC, each on the label's known test entries, with a bootstrap CI.

Precision is TP / (TP + FP) (0 when nothing is predicted positive, as sklearn's
``zero_division=0``), recall TP / (TP + FN), a stay predicted positive when its score is at least
``threshold`` (0.5 unless the method's config sets ``threshold``). AUROC and AUPRC come from
``sweeper.evaluation.metrics``. Each value is the mean over seeds of the seed's metric; its CI is the
2.5-97.5 % percentile interval of that seed mean over bootstrap resamples of the label's known test
stays (the same resample for every seed).
"""
from __future__ import annotations

import numpy as np

from sweeper.evaluation.metrics import weighted_metrics

PER_TASK_METRICS = ("precision", "recall", "auroc", "auprc")


def threshold_metrics(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """``{precision, recall: [R]}`` under each of R weightings of the stays."""
    predicted = scores >= threshold
    true_pos = weights @ (positive & predicted).astype(float)
    predicted_pos = weights @ predicted.astype(float)
    actual_pos = weights @ positive.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_pos > 0, true_pos / predicted_pos, 0.0)
        recall = np.where(actual_pos > 0, true_pos / actual_pos, np.nan)
    return {"precision": precision, "recall": recall}


def label_metrics(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """``{metric: [R]}`` for one label's known entries (``labels`` of 0/1 only) under R weightings."""
    out = threshold_metrics(labels == 1, scores, weights, threshold)
    out.update(weighted_metrics(labels, scores, weights, threshold, metrics=("auroc", "auprc")))
    return out


def per_task_table(labels: np.ndarray, seed_scores: list[np.ndarray], names: list[str], threshold: float = 0.5,
                   n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One row per label: n known, n positive, and per metric the seed mean with its bootstrap CI.

    ``labels``: ``[n, K]`` of 0/1/NaN (the same test stays for every seed); ``seed_scores``: one
    ``[n, K]`` array per seed.
    """
    labels = np.asarray(labels, float).reshape(len(labels), -1)
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(names):
        known = np.flatnonzero(~np.isnan(labels[:, k]))
        row = {"label": name, "n_known": int(known.size), "n_positive": int((labels[known, k] == 1).sum()), "threshold": threshold}
        if known.size == 0:
            rows.append(row | {m: np.nan for m in PER_TASK_METRICS})
            continue
        draws = rng.integers(0, known.size, size=(n_resamples, known.size))
        weights = np.vstack([np.ones(known.size), np.stack([np.bincount(d, minlength=known.size) for d in draws])])
        per_seed = [label_metrics(labels[known, k], np.asarray(s, float).reshape(len(labels), -1)[known, k], weights, threshold) for s in seed_scores]
        for metric in PER_TASK_METRICS:
            values = np.stack([p[metric] for p in per_seed])  # [seeds, 1 + R]
            with np.errstate(invalid="ignore"):
                means = np.nanmean(np.where(np.isnan(values).all(axis=0), 0.0, values), axis=0)
            means[np.isnan(values).all(axis=0)] = np.nan
            boot = means[1:][~np.isnan(means[1:])]
            low, high = (np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan))
            row.update({metric: float(means[0]), f"{metric}_low": float(low), f"{metric}_high": float(high)})
        rows.append(row)
    return rows
