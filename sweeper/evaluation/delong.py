"""DeLong's AUROC variance and confidence interval, by the fast midrank algorithm.

DeLong, DeLong & Clarke-Pearson (1988, Biometrics 44:837) estimate the variance of the empirical
AUROC from its structural components: for each positive i, V10_i = the share of negatives it
outscores (a tie counts one half); for each negative j, V01_j = the share of positives that outscore
it. Then AUROC = mean V10 = mean V01 and

    Var(AUROC) = s²(V10) / m + s²(V01) / n      (m positives, n negatives; s² with ddof = 1).

Sun & Xu (2014, IEEE Signal Processing Letters 21:1389) compute the components from midranks in
O((m + n) log(m + n)) instead of comparing all m·n pairs: V10_i = (R_i − R⁺_i) / n, with R_i the
midrank of positive i among all scores and R⁺_i its midrank among the positives (and likewise for
the negatives). The interval is pROC's (Robin et al. 2011): AUROC ± z·√Var, clipped to [0, 1].

A cell's leaderboard AUROC is the mean over K seeds of each seed's AUROC; that is a linear
combination of the seeds' AUROCs, so its variance is that of the seed-mean components (DeLong's
contrast L·S·Lᵀ with L = (1/K, …, 1/K)). Binary tasks only: ``delong_interval`` is NaN for a
multi-label task, whose macro AUROC averages labels with different positive sets.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from sweeper.evaluation.metrics import MetricsError


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given the mean of the ranks they span (``scipy.stats.rankdata``)."""
    return stats.rankdata(values, method="average")


def delong_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V10 [K, m], V01 [K, n])``: the structural components of each of K score rows.

    ``labels``: ``[N]`` of 0/1 (NaN entries are dropped); ``scores``: ``[N]`` or ``[K, N]``.
    """
    labels = np.asarray(labels, dtype=float)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape[1] != labels.shape[0] or labels.ndim != 1:
        raise MetricsError(f"DeLong needs [N] labels and [N] or [K, N] scores; got {labels.shape} and {scores.shape}")
    known = ~np.isnan(labels)
    positive = labels[known] == 1
    scores = scores[:, known]
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise MetricsError(f"DeLong needs both classes among the known labels; got {m} positive, {n} negative")
    v10 = np.empty((len(scores), m))
    v01 = np.empty((len(scores), n))
    for k, row in enumerate(scores):
        overall = midranks(row)
        v10[k] = (overall[positive] - midranks(row[positive])) / n
        v01[k] = 1.0 - (overall[~positive] - midranks(row[~positive])) / m
    return v10, v01


def delong_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """``(auroc, variance)`` of the mean AUROC over the score rows (one row: the plain DeLong variance)."""
    v10, v01 = delong_components(labels, scores)
    v10, v01 = v10.mean(axis=0), v01.mean(axis=0)
    m, n = v10.size, v01.size
    # With one positive (or negative) there is no spread to estimate: that term is 0, as in pROC.
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    return float(v10.mean()), float(s10 / m + s01 / n)


def delong_interval(labels: np.ndarray, scores: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """DeLong CI of the seed-mean AUROC: ``labels`` ``[N]``, ``scores`` ``[K, N]`` (one row per seed) or ``[N]``.

    NaN for a multi-label task (``[N, L]`` labels) or when the known labels hold one class only.
    """
    labels = np.asarray(labels, dtype=float)
    if labels.ndim != 1:
        return float("nan"), float("nan")
    try:
        auroc, variance = delong_variance(labels, scores)
    except MetricsError:
        return float("nan"), float("nan")
    half_width = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(variance)
    return float(max(0.0, auroc - half_width)), float(min(1.0, auroc + half_width))
