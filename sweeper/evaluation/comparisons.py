"""Comparing many cells at once: multiplicity-corrected p-values, and each cell's chance of being best.

``compare_with_best`` (``sweeper.evaluation.aggregate``) tests every cell of a task against its top
cell, so a task of C cells makes C − 1 tests; read alone, about one in twenty of them is
"significant" at 0.05 by chance. ``add_adjusted_p_values`` corrects them per task:

* ``holm`` (default) — Holm's step-down correction (Holm 1979), which controls the family-wise
  error rate (the chance of any false "this cell is worse") for any dependence between the tests;
  uniformly more powerful than Bonferroni.
* ``bh`` — Benjamini–Hochberg (1995), which controls the false discovery rate (the expected share of
  false ones among the cells called worse); scipy's ``false_discovery_control``.

The raw p-value stays beside the adjusted one (``vs_best_p``, ``vs_best_p_adj``).

``JointResamples`` draws bootstrap resamples of a task's test stays once and scores every cell on the
same draws, restricted to the stays each cell (or pair of cells) was tested on; a statistic of
several cells computed per resample is therefore paired. ``add_probability_best`` uses it for
``p_best``: the share of resamples in which a cell has the highest metric of its task, so a reader
sees how settled the top rank is. ``sweeper.evaluation.contributions`` uses it for what each
modality adds.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from sweeper.evaluation.aggregate import (
    SeedPredictions,
    aligned_predictions,
    nanmean_over_seeds,
    resample_weights,
    stratified_resamples,
)
from sweeper.evaluation.metrics import MetricsError, is_regression, lower_is_better, metric_for, weighted_metrics

CORRECTIONS: tuple[str, ...] = ("holm", "bh")
_MAX_WEIGHT_ENTRIES = 1 << 22
"""Resamples are turned into weights in blocks of at most this many (resample, stay) entries."""


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values, in the input order; NaN entries are left out of the family.

    ``holm``: sort the m p-values ascending, multiply the i-th smallest (1-based) by m − i + 1, take
    the running maximum and cap at 1. ``bh``: Benjamini–Hochberg (``scipy.stats.false_discovery_control``).
    """
    if method not in CORRECTIONS:
        raise MetricsError(f"unknown p-value correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    p_values = np.asarray(p_values, dtype=float)
    adjusted = np.full(p_values.shape, np.nan)
    tested = ~np.isnan(p_values)
    values = p_values[tested]
    if values.size == 0:
        return adjusted
    if ((values < 0) | (values > 1)).any():
        raise MetricsError(f"p-values must lie in [0, 1]; got {values[(values < 0) | (values > 1)][:3].tolist()}")
    if method == "bh":
        adjusted[tested] = stats.false_discovery_control(values, method="bh")
        return adjusted
    order = np.argsort(values, kind="stable")
    factors = values.size - np.arange(values.size)
    stepped = np.minimum(1.0, np.maximum.accumulate(values[order] * factors))
    holm = np.empty_like(values)
    holm[order] = stepped
    adjusted[tested] = holm
    return adjusted


def add_adjusted_p_values(rows: list[dict], method: str = "holm") -> None:
    """Per task, adjust every row's ``vs_best_p`` for the task's number of comparisons, in place.

    Adds ``vs_best_p_adj`` (NaN where there is no raw p-value, e.g. the top cell) and
    ``vs_best_p_adjust`` (the correction's name, so the CSV says what it holds).
    """
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    for task_rows in by_task.values():
        adjusted = adjust_p_values([row.get("vs_best_p", np.nan) for row in task_rows], method)
        for row, value in zip(task_rows, adjusted):
            row.update(vs_best_p_adj=float(value), vs_best_p_adjust=method)


class JointResamples:
    """One set of stratified bootstrap resamples of the union of some cells' test stays.

    ``seeds_by_cell``: cell id → its seeds' predictions; the cells must agree on the label of every
    stay they share (cells of one task do). Resamples are drawn over the union of the cells' test
    stays, stratified by label as in ``aggregate.stratified_resamples``; a cell is scored on each
    resample restricted to its own stays (or to fewer, ``stays``), so every cell and every pair of
    cells sees the same draws. Scores are cached per (cell, stays). ``regression``: the cells are of a
    regression task (``los``), scored by regression metrics; strata are then known / unknown label.
    """

    def __init__(self, seeds_by_cell: dict[str, list[SeedPredictions]], n_resamples: int = 1000, seed: int = 0,
                 regression: bool = False):
        self._cells: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        labels_by_id: dict[str, np.ndarray] = {}
        for cell_id, seeds in seeds_by_cell.items():
            labels, scores = aligned_predictions(seeds)
            ids = np.sort(np.asarray(seeds[0].stay_ids).astype(str))
            self._cells[cell_id] = (ids, labels, scores)
            for stay, label in zip(ids, labels):
                known = labels_by_id.setdefault(stay, label)
                if not np.array_equal(known, label, equal_nan=True):
                    raise MetricsError(f"cells {sorted(seeds_by_cell)[:3]}...: stay {stay!r} has two different labels")
        if not self._cells:
            raise MetricsError("JointResamples needs at least one cell's predictions")
        self.stay_ids = np.array(sorted(labels_by_id))
        self.labels = np.stack([labels_by_id[s] for s in self.stay_ids])
        self.n_resamples = n_resamples
        self._resamples = stratified_resamples(self.labels, n_resamples, np.random.default_rng(seed), regression)
        self._cache: dict[tuple, tuple[float, np.ndarray]] = {}

    def stays_of(self, cell_id: str) -> np.ndarray:
        """The sorted test stay ids a cell was scored on."""
        return self._cells[cell_id][0]

    def scored(self, cell_id: str, metric: str, stays: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """``(point, [n_resamples])``: the cell's seed-mean ``metric`` on ``stays`` (default: all of
        its own), on the test set as it is and on each joint resample."""
        ids, labels, scores = self._cells[cell_id]
        keep = np.ones(ids.size, bool) if stays is None else np.isin(ids, np.asarray(stays).astype(str))
        key = (cell_id, metric, np.packbits(keep).tobytes())
        if key not in self._cache:
            self._cache[key] = self._score(ids[keep], labels[keep], scores[:, keep], metric)
        return self._cache[key]

    def _score(self, ids, labels, scores, metric) -> tuple[float, np.ndarray]:
        positions = np.searchsorted(self.stay_ids, ids)
        unit = np.ones((1, ids.size))
        points = np.array([weighted_metrics(labels, s, unit, metrics=(metric,))[metric][0] for s in scores])
        per_seed = np.empty((len(scores), self.n_resamples))
        block = max(1, _MAX_WEIGHT_ENTRIES // max(self.stay_ids.size, 1))
        for start in range(0, self.n_resamples, block):
            weights = resample_weights(self._resamples[start : start + block], self.stay_ids.size)[:, positions]
            for i, seed_scores in enumerate(scores):
                per_seed[i, start : start + block] = weighted_metrics(labels, seed_scores, weights, metrics=(metric,))[metric]
        return _nanmean(points), nanmean_over_seeds(per_seed)


def add_probability_best(rows: list[dict], seeds_by_cell: dict[str, list[SeedPredictions]], metric="auroc",
                         n_resamples: int = 1000, seed: int = 0) -> None:
    """Per task, add ``p_best`` to every row: the share of joint bootstrap resamples of the task's
    test stays in which this cell has the task's best seed-mean ranking metric (``metric``: one name
    or ``{task: metric}``, ``metrics.metric_for``; each cell on its own test stays, as the
    leaderboard ranks them; the lowest is best for Brier, ACE, MSE and MAE). A tie splits the
    resample between the tied cells; a resample where a cell's metric is undefined counts against
    it. The task's ``p_best`` sum to 1. A task whose cells disagree on a stay's label (e.g. an axis
    that hides labels) has no joint resample and gets NaN. Rows are updated in place."""
    rank_by = metric
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    for task, task_rows in by_task.items():
        metric = metric_for(rank_by, task)
        cells = [row["cell_id"] for row in task_rows]
        try:
            joint = JointResamples({c: seeds_by_cell[c] for c in cells}, n_resamples, seed, is_regression((metric,)))
        except MetricsError:
            for row in task_rows:
                row["p_best"] = float("nan")
            continue
        values = np.stack([joint.scored(c, metric)[1] for c in cells])
        values = -values if lower_is_better(metric) else values
        values = np.where(np.isnan(values), -np.inf, values)
        top = values == values.max(axis=0)
        defined = np.isfinite(values.max(axis=0))
        shares = (top / top.sum(axis=0))[:, defined].sum(axis=1) / max(int(defined.sum()), 1)
        for row, share in zip(task_rows, shares):
            row["p_best"] = float(share)


def _nanmean(values: np.ndarray) -> float:
    return float("nan") if np.isnan(values).all() else float(np.nanmean(values))

