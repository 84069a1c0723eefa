"""What each modality adds: its marginal contribution across the modality subsets a sweep ran.

For one task and method (and value of any extra sweep axis), a modality m's contribution is
Shapley-style (Shapley 1953; the per-feature version of Lundberg & Lee 2017):

    φ_m = mean over sizes k of [ mean over the run subsets S of size k that lack m, with S ∪ {m}
          also run, of  metric(S ∪ {m}) − metric(S) ]

Weighting every size k equally, and the subsets of one size equally within it, is exactly the
Shapley weighting |S|!(n − |S| − 1)!/n! when every subset was run; here it is restricted to the
pairs the sweep ran (the empty subset never is: no model is trained on nothing). A modality added to
no run subset has no contribution (NaN).

The two cells of a pair are scored on the test stays both were tested on (a cell is tested on the
stays that have one of its modalities). Uncertainty: every cell of a group is scored on the same
stratified bootstrap resamples of the group's test stays (``JointResamples``), and φ_m is recomputed
on each, so its 95% percentile CI and two-sided p-value (``aggregate.bootstrap_p_value``) are
paired across cells and account for all pairs at once. ``metric_by_size`` gives the metric against the number of modalities, with the same
resamples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sweeper.evaluation.aggregate import SeedPredictions, bootstrap_p_value, percentile_interval
from sweeper.evaluation.comparisons import JointResamples
from sweeper.evaluation.metrics import is_regression, lower_is_better, metric_for

_NOT_AXES = frozenset({"cell_id", "task", "method", "subset", "n_modalities", "modalities"})


def modality_contributions(cells: list[dict], seeds_by_cell: dict[str, list[SeedPredictions]], metric="auroc",
                           n_resamples: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(contributions, by_size)`` for every group of cells that share task, method and extra axes.

    ``cells``: dicts with ``cell_id``, ``task``, ``method``, ``subset`` (``"a+b"`` or a list of
    modalities) and any extra sweep axes (e.g. ``missingness``); ``seeds_by_cell``: each cell's
    final-phase test predictions. ``contributions`` has one row per group and modality: ``contribution``
    (φ above), ``ci_low``, ``ci_high``, ``p_value``, ``n_pairs`` (subset pairs it rests on) and
    ``rank`` (1 = adds the most; for a lower-is-better metric such as ``brier`` or ``mae``, the most
    negative). ``metric``: one name or ``{task: metric}`` (``metrics.metric_for``).
    ``by_size`` has one row per group and number of modalities: the mean metric over the subsets of
    that size, its CI, and ``n_subsets``.
    """
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        cell = {**cell, "modalities": frozenset(_modalities(cell["subset"]))}
        axes = tuple(sorted((k, v) for k, v in cell.items() if k not in _NOT_AXES))
        groups.setdefault((cell["task"], cell["method"], axes), []).append(cell)
    contribution_rows, size_rows = [], []
    for (task, method, axes), members in groups.items():
        members = [c for c in members if c["cell_id"] in seeds_by_cell]
        if not members:
            continue
        task_metric = metric_for(metric, task)
        joint = JointResamples({c["cell_id"]: seeds_by_cell[c["cell_id"]] for c in members}, n_resamples, seed, is_regression((task_metric,)))
        keys = {"task": task, "method": method, **dict(axes)}
        contribution_rows += _group_contributions(members, joint, task_metric, keys)
        size_rows += _group_by_size(members, joint, task_metric, keys)
    return pd.DataFrame(contribution_rows), pd.DataFrame(size_rows)


def _group_contributions(members: list[dict], joint: JointResamples, metric: str, keys: dict) -> list[dict]:
    by_subset = {c["modalities"]: c["cell_id"] for c in members}
    modalities = sorted(set().union(*by_subset))
    rows = []
    for modality in modalities:
        per_size: dict[int, list[tuple[float, np.ndarray]]] = {}
        for subset, cell_id in by_subset.items():
            larger = by_subset.get(subset | {modality})
            if modality in subset or larger is None:
                continue
            shared = np.intersect1d(joint.stays_of(cell_id), joint.stays_of(larger))
            if shared.size == 0:
                continue
            with_point, with_values = joint.scored(larger, metric, shared)
            without_point, without_values = joint.scored(cell_id, metric, shared)
            per_size.setdefault(len(subset), []).append((with_point - without_point, with_values - without_values))
        n_pairs = sum(len(pairs) for pairs in per_size.values())
        row = {**keys, "modality": modality, "metric": metric, "contribution": np.nan, "ci_low": np.nan,
               "ci_high": np.nan, "p_value": np.nan, "n_pairs": n_pairs, "n_sizes": len(per_size)}
        if per_size:
            point = np.mean([np.mean([p for p, _ in pairs]) for pairs in per_size.values()])
            values = np.mean([np.mean([v for _, v in pairs], axis=0) for pairs in per_size.values()], axis=0)
            low, high = percentile_interval(values)
            row.update(contribution=float(point), ci_low=low, ci_high=high, p_value=bootstrap_p_value(point, values))
        rows.append(row)
    ordered = sorted((r for r in rows if r["contribution"] == r["contribution"]),
                     key=lambda r: r["contribution"] if lower_is_better(metric) else -r["contribution"])
    for rank, row in enumerate(ordered, start=1):
        row["rank"] = rank
    for row in rows:
        row.setdefault("rank", np.nan)
    return sorted(rows, key=lambda r: (r["rank"] != r["rank"], r["rank"]))


def _group_by_size(members: list[dict], joint: JointResamples, metric: str, keys: dict) -> list[dict]:
    by_size: dict[int, list[str]] = {}
    for cell in members:
        by_size.setdefault(len(cell["modalities"]), []).append(cell["cell_id"])
    rows = []
    for size in sorted(by_size):
        scored = [joint.scored(cell_id, metric) for cell_id in by_size[size]]
        values = np.nanmean(np.stack([v for _, v in scored]), axis=0) if scored else np.array([])
        low, high = percentile_interval(values)
        rows.append({**keys, "n_modalities": size, "metric": metric, "mean": float(np.nanmean([p for p, _ in scored])),
                     "ci_low": low, "ci_high": high, "n_subsets": len(scored)})
    return rows


def _modalities(subset) -> list[str]:
    return [m for m in subset.split("+") if m] if isinstance(subset, str) else list(subset)
