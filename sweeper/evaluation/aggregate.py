"""From one cell's K seeds of test predictions to a leaderboard row with its uncertainty.

Two kinds of uncertainty are reported side by side (README, "What a run produces"):

* over seeds — how much the method's result moves with training randomness: mean, sample std and
  a Student-t 95% CI over the K seed-level metrics (``seed_ci``);
* over test stays — how much it would move on another test set of the same size: a stratified
  percentile bootstrap of the seed-mean metric (``bootstrap_ci``), and the paired version for the
  difference between two cells on the stays both were tested on (``paired_comparison``), which
  ``compare_with_best`` applies to every cell against its task's top cell; for binary tasks also
  DeLong's interval of the seed-mean AUROC (``auroc_delong_low``/``_high``, ``sweeper.evaluation.delong``).
  Multiplicity-adjusted p-values and each cell's chance of being best: ``sweeper.evaluation.comparisons``.

Metrics themselves come only from ``sweeper.evaluation.metrics``. A bootstrap resample is held as
draw counts, one weight per test stay, so every resample of a seed is scored in one vectorised
``weighted_metrics`` call instead of one call per resample.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
from scipy import stats

from sweeper.evaluation.delong import delong_interval
from sweeper.evaluation.metrics import (
    METRICS,
    MetricsError,
    compute_metrics,
    is_regression,
    lower_is_better,
    metric_for,
    task_metrics,
    weighted_metrics,
)

CONFIDENCE = 0.95
_MAX_WEIGHT_ENTRIES = 1 << 22
"""Resamples are scored in blocks of at most this many (resample, stay) weights (32 MiB)."""
_CELL_KEYS = ("task", "method", "subset", "n_modalities")


@dataclasses.dataclass(frozen=True)
class SeedPredictions:
    """One final-phase seed's predictions on a cell's test stays."""

    seed: int
    """The training seed of this run."""
    stay_ids: np.ndarray
    """``[n]`` str: which test stays the rows are; seeds are aligned on these."""
    labels: np.ndarray
    """``[n]`` (binary) or ``[n, K]`` (multi-label) of 0/1, NaN where the outcome is unknown; for
    ``los``, ``[n]`` log1p(hours)."""
    scores: np.ndarray
    """Same shape as ``labels``: predicted probability of the positive class (``los``: predicted log1p(hours))."""


def seed_ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """``(mean, std, low, high)`` over seeds: sample std (ddof=1) and a Student-t 95% CI.

    With one seed there is no spread to estimate, so std and the CI are NaN.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, df=values.size - 1) * std / np.sqrt(values.size)
    return mean, std, float(mean - half_width), float(mean + half_width)


def bootstrap_ci(
    seeds: list[SeedPredictions],
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap CI over test stays of each seed-mean metric.

    Every resample draws stays with replacement within strata (binary: positives, negatives and
    unknowns separately; multi-label: stays with any positive label vs none), so each resample
    keeps the test set's class balance and AUROC stays defined for rare outcomes (regression
    metrics: stays with a known and an unknown label). The same resampled stays are scored for every
    seed, then the metric is averaged over seeds.
    """
    labels, scores = aligned_predictions(seeds)
    resamples = stratified_resamples(labels, n_resamples, np.random.default_rng(seed), regression=is_regression(metrics))
    values = _resampled_seed_means(labels, scores, resamples, metrics)
    return {name: percentile_interval(values[name]) for name in metrics}


def paired_comparison(
    a: list[SeedPredictions],
    b: list[SeedPredictions],
    metric: str = "auroc",
    n_resamples: int = 1000,
    seed: int = 0,
    shared_stays: bool = False,
) -> dict[str, float]:
    """Difference ``a − b`` of the seed-mean ``metric`` on the same test stays, with uncertainty.

    Both methods are scored on the same stratified resamples (a paired bootstrap), so the CI and
    the two-sided p-value reflect only how the difference varies over test stays. The p-value is
    the bootstrap test of pROC's ``roc.test`` (Robin et al. 2011): the difference over the standard
    deviation of its resampled values, against a standard normal (``bootstrap_p_value``).
    With ``shared_stays`` both are first cut to the test stays they share (cells of different
    modality subsets are tested on the stays that have one of their modalities); otherwise they
    must have been tested on the same stays.
    Returns ``difference, ci_low, ci_high, p_value, n_resamples, n_stays``.
    """
    if shared_stays:
        shared = np.intersect1d(_sorted_ids(a[0]), _sorted_ids(b[0]))
        if shared.size == 0:
            raise MetricsError("paired_comparison: the two cells share no test stay")
        a, b = restrict_to_stays(a, shared), restrict_to_stays(b, shared)
    labels_a, scores_a = aligned_predictions(a)
    labels_b, scores_b = aligned_predictions(b)
    ids_a, ids_b = _sorted_ids(a[0]), _sorted_ids(b[0])
    if not np.array_equal(ids_a, ids_b):
        raise MetricsError(
            "paired_comparison: the two methods were scored on different test stays; compare "
            "only cells that share a test split"
        )
    if not _same_labels(labels_a, labels_b):
        raise MetricsError("paired_comparison: the two methods disagree on the test labels")
    point = _seed_mean(labels_a, scores_a, metric) - _seed_mean(labels_b, scores_b, metric)
    resamples = stratified_resamples(labels_a, n_resamples, np.random.default_rng(seed), regression=is_regression((metric,)))
    diffs = (
        _resampled_seed_means(labels_a, scores_a, resamples, (metric,))[metric]
        - _resampled_seed_means(labels_b, scores_b, resamples, (metric,))[metric]
    )
    diffs = diffs[~np.isnan(diffs)]
    low, high = percentile_interval(diffs)
    p_value = bootstrap_p_value(point, diffs)
    return {
        "difference": float(point),
        "ci_low": low,
        "ci_high": high,
        "p_value": float(p_value),
        "n_resamples": int(diffs.size),
        "n_stays": int(labels_a.shape[0]),
    }


def restrict_to_stays(seeds: list[SeedPredictions], stay_ids) -> list[SeedPredictions]:
    """Each seed's predictions on only the given stays (ids it lacks are ignored)."""
    wanted = np.asarray(stay_ids).astype(str)
    out = []
    for predictions in seeds:
        keep = np.isin(np.asarray(predictions.stay_ids).astype(str), wanted)
        out.append(dataclasses.replace(
            predictions, stay_ids=np.asarray(predictions.stay_ids)[keep],
            labels=np.asarray(predictions.labels)[keep], scores=np.asarray(predictions.scores)[keep],
        ))
    return out


def compare_with_best(rows: list[dict], seeds_by_cell: dict[str, list[SeedPredictions]], metric="auroc",
                      n_resamples: int = 1000) -> None:
    """Add to every leaderboard row its paired difference in its task's ranking metric from the task's top cell.

    ``metric``: one name or ``{task: metric}`` (``metrics.metric_for``). The top cell of a task is
    the one with the best seed-mean metric (the highest; the lowest for MSE, MAE, Brier, ACE, where
    the differences of the other cells are then ≥ 0 at the point estimate). Each other cell is
    compared with it on the test stays both were scored on (``paired_comparison`` with
    ``shared_stays``): ``vs_best`` (this cell − top cell, so ≤ 0 at the point estimate), its 95%
    bootstrap CI, a two-sided p-value and the number of shared stays. The top cell's own row gets
    a difference of 0 and no CI or p-value. Rows are updated in place.
    """
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    rank_by = metric
    for task, task_rows in by_task.items():
        metric = metric_for(rank_by, task)
        ranked = [r for r in task_rows if r.get(f"{metric}_mean") == r.get(f"{metric}_mean")]
        if not ranked:
            continue
        best = (min if lower_is_better(metric) else max)(ranked, key=lambda r: r[f"{metric}_mean"])
        for row in task_rows:
            row.update(vs_best_cell=best["cell_id"], vs_best=float("nan"), vs_best_ci_low=float("nan"),
                       vs_best_ci_high=float("nan"), vs_best_p=float("nan"), vs_best_n_stays=0)
            if row is best:
                row.update(vs_best=0.0, vs_best_n_stays=row["n_test_stays"])
                continue
            try:
                result = paired_comparison(seeds_by_cell[row["cell_id"]], seeds_by_cell[best["cell_id"]], metric,
                                           n_resamples=n_resamples, shared_stays=True)
            except MetricsError:  # no shared stay: the two cells cannot be compared
                continue
            row.update(vs_best=result["difference"], vs_best_ci_low=result["ci_low"], vs_best_ci_high=result["ci_high"],
                       vs_best_p=result["p_value"], vs_best_n_stays=result["n_stays"])


def aggregate_cell(cell: dict, seeds: list[SeedPredictions], n_resamples: int = 1000) -> dict:
    """One leaderboard row: the cell's keys, seed and bootstrap CIs per metric, counts, best config."""
    subset = cell.get("subset", ())
    modalities = subset.split("+") if isinstance(subset, str) else list(subset)
    row: dict = {
        "task": cell.get("task"),
        "method": cell.get("method"),
        "subset": "+".join(modalities),
        "n_modalities": len(modalities),
    }
    row.update({k: v for k, v in cell.items() if k not in _CELL_KEYS and k != "best_config"})
    labels, scores = aligned_predictions(seeds)
    metrics = task_metrics(row["task"])
    per_seed = [compute_metrics(labels, seed_scores, metrics=metrics) for seed_scores in scores]
    boot = bootstrap_ci(seeds, n_resamples=n_resamples, metrics=metrics)
    for name in metrics:
        mean, std, low, high = seed_ci([values[name] for values in per_seed])
        row.update({
            f"{name}_mean": mean,
            f"{name}_std": std,
            f"{name}_ci_low": low,
            f"{name}_ci_high": high,
            f"{name}_boot_low": boot[name][0],
            f"{name}_boot_high": boot[name][1],
        })
    if metrics == METRICS:  # a classification task
        row["auroc_delong_low"], row["auroc_delong_high"] = delong_interval(labels, scores, CONFIDENCE)
    row["n_seeds"] = len(seeds)
    row["n_test_stays"] = int(labels.shape[0])
    row["best_config"] = json.dumps(cell.get("best_config", {}), sort_keys=True, default=str)
    return row


def stratified_resamples(labels: np.ndarray, n_resamples: int, rng: np.random.Generator, regression: bool = False) -> np.ndarray:
    """``[n_resamples, n]`` stay indices drawn with replacement within each stratum.

    Strata: binary — positive, negative, unknown label; multi-label — any positive label or not;
    ``regression`` (a ``los`` label) — known or unknown label.
    Each resample therefore holds exactly as many stays of each stratum as the test set.
    """
    if regression:
        strata = np.isnan(labels).astype(int)
    elif labels.ndim == 1:
        strata = np.where(np.isnan(labels), 2, labels).astype(int)
    else:
        strata = (labels == 1).any(axis=1).astype(int)
    draws = []
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        draws.append(members[rng.integers(0, members.size, size=(n_resamples, members.size))])
    return np.concatenate(draws, axis=1)


def resample_weights(resamples: np.ndarray, n_stays: int) -> np.ndarray:
    """``[n_resamples, n_stays]`` float draw counts: how often each stay occurs in each resample."""
    resamples = np.asarray(resamples)
    offsets = n_stays * np.arange(len(resamples))[:, None]
    counts = np.bincount((resamples + offsets).ravel(), minlength=len(resamples) * n_stays)
    return counts.reshape(len(resamples), n_stays).astype(float)


def _resampled_seed_means(
    labels: np.ndarray, scores: np.ndarray, resamples: np.ndarray, metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """``{metric: [n_resamples]}``: the seed-mean metric on each resample of stays.

    Each seed is scored on all resamples in one ``weighted_metrics`` call (one per block of
    resamples for very large test sets, to bound memory).
    """
    n_stays = labels.shape[0]
    per_seed = {name: np.empty((len(scores), len(resamples))) for name in metrics}
    block = max(1, _MAX_WEIGHT_ENTRIES // max(n_stays, 1))
    for start in range(0, len(resamples), block):
        weights = resample_weights(resamples[start : start + block], n_stays)
        for i, seed_scores in enumerate(scores):
            values = weighted_metrics(labels, seed_scores, weights, metrics=metrics)
            for name in metrics:
                per_seed[name][i, start : start + block] = values[name]
    return {name: nanmean_over_seeds(values) for name, values in per_seed.items()}


def nanmean_over_seeds(values: np.ndarray) -> np.ndarray:
    """``[n_seeds, R]`` -> ``[R]``: mean over seeds where the metric is defined; NaN if none."""
    defined = ~np.isnan(values)
    n_defined = defined.sum(axis=0)
    total = np.where(defined, values, 0.0).sum(axis=0)
    return np.where(n_defined > 0, total / np.maximum(n_defined, 1), np.nan)


def _seed_mean(labels: np.ndarray, scores: np.ndarray, metric: str) -> float:
    return _nanmean([compute_metrics(labels, s, metrics=(metric,))[metric] for s in scores])


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """Central 95% percentile interval, ignoring resamples where the metric was undefined."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_p_value(difference: float, resampled: np.ndarray) -> float:
    """Two-sided p-value of an observed ``difference`` from its bootstrap resamples: ``2·Φ(−|D|)``
    with ``D = difference / sd(resampled)`` (pROC's bootstrap test, Robin et al. 2011); NaN
    resamples are ignored. Unlike the share of resamples beyond zero, which can be no smaller than
    2/(R + 1), it keeps its resolution when a multiplicity correction multiplies it by the number
    of comparisons (with 1000 resamples and 80 cells, Holm could otherwise never reach 0.05)."""
    resampled = np.asarray(resampled, dtype=float)
    resampled = resampled[~np.isnan(resampled)]
    if resampled.size < 2 or np.isnan(difference):
        return float("nan")
    spread = resampled.std(ddof=1)
    if spread == 0:  # every resample gives the same difference: none (p 1) or a certain one (p 0)
        return float(difference == 0)
    return float(2 * stats.norm.sf(abs(difference) / spread))


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=float)
    return float("nan") if np.isnan(array).all() else float(np.nanmean(array))


def _sorted_ids(predictions: SeedPredictions) -> np.ndarray:
    return np.sort(np.asarray(predictions.stay_ids).astype(str))


def aligned_predictions(seeds: list[SeedPredictions]) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [n, ...], scores [n_seeds, n, ...])`` with every seed's rows in stay_id order.

    Raises when seeds cover different stays or disagree on a label: a seed mean over different test
    sets would not be one cell's result.
    """
    if not seeds:
        raise MetricsError("no seed predictions given; a cell needs at least one final-phase seed")
    reference_ids = None
    labels = None
    scores = []
    for predictions in seeds:
        ids = np.asarray(predictions.stay_ids).astype(str)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if np.unique(ids).size != ids.size:
            raise MetricsError(f"seed {predictions.seed}: duplicate stay_ids in its test predictions")
        seed_labels = np.asarray(predictions.labels, dtype=float)[order]
        if reference_ids is None:
            reference_ids, labels = ids, seed_labels
        elif not np.array_equal(ids, reference_ids):
            missing = np.setdiff1d(reference_ids, ids)[:3].tolist()
            extra = np.setdiff1d(ids, reference_ids)[:3].tolist()
            raise MetricsError(
                f"seed {predictions.seed} was tested on different stays than seed {seeds[0].seed} "
                f"(missing e.g. {missing}, extra e.g. {extra}); every seed of a cell must predict "
                "the same test split"
            )
        elif not _same_labels(seed_labels, labels):
            raise MetricsError(f"seed {predictions.seed} disagrees with seed {seeds[0].seed} on test labels")
        scores.append(np.asarray(predictions.scores, dtype=float)[order])
    return labels, np.stack(scores)


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
