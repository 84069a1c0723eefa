"""Efficiency columns of the leaderboard (issue 16, item 5): what each torch cell's final models
cost to deploy, averaged over seeds, and the MedMIX paper's EffScore against a reference row.

``EffScore = (Perf / Perf_ref) / geomean(params / params_ref, FLOPs / FLOPs_ref, memory / memory_ref)``
with ``Perf`` the mean of the test AUROC, AUPRC, macro-F1 and accuracy (seed means); the
reference row is the spec's ``final.efficiency_reference`` method's cell of the same task,
modality subset and axis values (its own EffScore is 1). A cell without costs (a non-torch
method) or without a reference row gets none.
"""
from __future__ import annotations

import math

import numpy as np

COST_COLUMNS = ("eff_params", "eff_flops_per_stay", "eff_peak_mem_mb")
PERF_METRICS = ("auroc", "auprc", "macro_f1", "accuracy")


def cell_costs(metrics_per_seed: list[dict]) -> dict:
    """A cell's cost columns: the mean over its seeds of what each final trial measured."""
    out = {}
    for column in COST_COLUMNS:
        values = [float(m[column]) for m in metrics_per_seed if m.get(column) is not None]
        out[column] = float(np.mean(values)) if values else float("nan")
    measures = sorted({str(m["eff_memory_measure"]) for m in metrics_per_seed if m.get("eff_memory_measure")})
    out["eff_memory_measure"] = "+".join(measures)
    return out


def performance(row: dict) -> float:
    """The mean of AUROC, AUPRC, macro-F1 and accuracy; NaN for a regression (``los``) row, which has none."""
    return float(np.mean([row.get(f"{m}_mean", np.nan) for m in PERF_METRICS]))


def add_eff_scores(rows: list[dict], reference_method: str | None, axes: list[str]) -> None:
    """``eff_score`` and ``eff_reference`` (the reference row's cell id) on every row, in place."""
    key = lambda row: (row["task"], row["subset"], *(str(row.get(a)) for a in axes))  # noqa: E731
    references = {key(r): r for r in rows if r["method"] == reference_method}
    for row in rows:
        row["eff_score"], row["eff_reference"] = float("nan"), ""
        reference = references.get(key(row))
        if reference is None:
            continue
        ratios = [row.get(c, math.nan) / reference.get(c, math.nan) for c in COST_COLUMNS]
        if not all(r > 0 and math.isfinite(r) for r in ratios):
            continue
        row["eff_score"] = (performance(row) / performance(reference)) / float(np.exp(np.mean(np.log(ratios))))
        row["eff_reference"] = reference["cell_id"]
