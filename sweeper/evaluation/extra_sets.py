"""A cell's results on the extra test sets its final models were scored on (external cohorts,
missing-modality protocols): a column group per set, with the same seed means and stratified
bootstrap CIs over the set's stays as the internal test columns (``sweeper.evaluation.aggregate``).

Columns of set ``S`` (``ext_<name>`` or ``miss_<name>``): ``S__<metric>_mean``,
``S__<metric>_boot_low``/``_high`` for every metric, ``S__n_stays``, and ``S__drop``: the internal
test mean of the ranking metric minus the set's (positive: worse on the set; for a
lower-is-better metric — Brier, ACE, MSE, MAE — the sign is the metric's own).
"""
from __future__ import annotations

import numpy as np

from sweeper.evaluation.aggregate import SeedPredictions, aligned_predictions, bootstrap_ci
from sweeper.evaluation.metrics import MetricsError, compute_metrics, metric_for, task_metrics

SEPARATOR = "__"


def is_extra_column(column: str) -> bool:
    """Whether a leaderboard column belongs to an extra set's group."""
    return SEPARATOR in column


def extra_set_names(columns) -> list[str]:
    """The extra sets a leaderboard holds, in column order."""
    return list(dict.fromkeys(c.split(SEPARATOR)[0] for c in columns if c.endswith(f"{SEPARATOR}n_stays")))


def add_extra_columns(row: dict, name: str, seeds: list[SeedPredictions] | None, n_seeds: int, metric,
                      n_resamples: int = 1000) -> None:
    """Add set ``name``'s column group to ``row`` (in place); NaN (0 stays) when not every one of the
    cell's ``n_seeds`` seeds was scored on it. The metrics are those of the row's task; ``metric``
    (one name or ``{task: metric}``) is the one ``drop`` is taken of."""
    prefix = f"{name}{SEPARATOR}"
    metrics, metric = task_metrics(row.get("task")), metric_for(metric, row.get("task"))
    values = {f"{prefix}{m}_{part}": float("nan") for m in metrics for part in ("mean", "boot_low", "boot_high")}
    row.update(values, **{f"{prefix}n_stays": 0, f"{prefix}drop": float("nan")})
    if not seeds or len(seeds) < n_seeds:
        return
    try:
        labels, scores = aligned_predictions(seeds)
        per_seed = [compute_metrics(labels, s, metrics=metrics) for s in scores]
        boot = bootstrap_ci(seeds, n_resamples=n_resamples, metrics=metrics)
    except MetricsError:  # e.g. one class only among the set's stays
        return
    for m in metrics:
        defined = [v[m] for v in per_seed if v[m] == v[m]]
        row[f"{prefix}{m}_mean"] = float(np.mean(defined)) if defined else float("nan")
        row[f"{prefix}{m}_boot_low"], row[f"{prefix}{m}_boot_high"] = boot[m]
    row[f"{prefix}n_stays"] = int(labels.shape[0])
    row[f"{prefix}drop"] = row.get(f"{metric}_mean", float("nan")) - row[f"{prefix}{metric}_mean"]


def robustness_rows(rows: list[dict], protocols: dict[str, dict], rank_by, axes: list[str]) -> list[dict]:
    """Metric against drop rate per cell: one row per (cell, protocol), plus each cell's internal
    test result at rate 0 for every kind of drop the protocols use. ``protocols``: ``{set: {drop,
    rate}}``; ``rank_by``: the metric, or ``{task: metric}``."""
    out = []
    for row in rows:
        metric = metric_for(rank_by, row.get("task"))
        keys = {k: row.get(k) for k in ("task", "method", "subset", "cell_id", *axes)}
        for drop in sorted({p["drop"] for p in protocols.values()}):
            out.append({**keys, "drop": drop, "rate": 0.0, "metric": metric, "mean": row[f"{metric}_mean"],
                        "boot_low": row[f"{metric}_boot_low"], "boot_high": row[f"{metric}_boot_high"]})
        for name, protocol in protocols.items():
            prefix = f"{name}{SEPARATOR}{metric}"
            out.append({**keys, "drop": protocol["drop"], "rate": float(protocol["rate"]), "metric": metric,
                        "mean": row.get(f"{prefix}_mean"), "boot_low": row.get(f"{prefix}_boot_low"), "boot_high": row.get(f"{prefix}_boot_high")})
    return out
