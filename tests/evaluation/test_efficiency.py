"""EffScore (sweeper.evaluation.efficiency): performance ratio over the geometric mean of the cost
ratios to the spec's reference row of the same task, subset and axes."""
from __future__ import annotations

import math

import pytest

from sweeper.evaluation.efficiency import add_eff_scores, cell_costs


def _row(method, perf, params, flops, mem, task="ihm", subset="a+b", rate=0.0):
    metrics = {f"{m}_mean": perf for m in ("auroc", "auprc", "macro_f1", "accuracy")}
    return {"task": task, "method": method, "subset": subset, "train_missing_rate": rate, "cell_id": f"{task}__{method}__{subset}__{rate}",
            **metrics, "eff_params": params, "eff_flops_per_stay": flops, "eff_peak_mem_mb": mem}


def test_eff_score_matches_the_papers_worked_example_and_is_one_for_the_reference():
    ratio = 1.506  # Table E6: AdaCoMed vs MedMIX on OpenI, 0.788 / 0.851 / 1.506 = 0.615
    rows = [_row("medmix", 0.851, 100.0, 10.0, 5.0), _row("adacomed", 0.788, 100.0 * ratio, 10.0 * ratio, 5.0 * ratio),
            _row("adacomed", 0.9, 1.0, 1.0, 1.0, task="phenotyping"), _row("medmix", 0.851, 100.0, 10.0, 5.0, rate=0.3),
            _row("other", 0.8, math.nan, math.nan, math.nan)]
    add_eff_scores(rows, "medmix", ["train_missing_rate"])
    assert rows[0]["eff_score"] == pytest.approx(1.0) and rows[1]["eff_score"] == pytest.approx(0.615, abs=5e-4)
    assert rows[1]["eff_reference"] == rows[0]["cell_id"]
    assert math.isnan(rows[2]["eff_score"]) and rows[2]["eff_reference"] == ""  # no reference row for that task
    assert rows[3]["eff_reference"] == rows[3]["cell_id"]  # the reference of its own axis value
    assert math.isnan(rows[4]["eff_score"])  # a method without costs


def test_a_cells_costs_are_its_seeds_mean():
    costs = cell_costs([{"eff_params": 10, "eff_flops_per_stay": 4.0, "eff_peak_mem_mb": 100.0, "eff_memory_measure": "cpu_process_peak_rss"},
                        {"eff_params": 10, "eff_flops_per_stay": 4.0, "eff_peak_mem_mb": 120.0, "eff_memory_measure": "cpu_process_peak_rss"}])
    assert costs == {"eff_params": 10.0, "eff_flops_per_stay": 4.0, "eff_peak_mem_mb": 110.0, "eff_memory_measure": "cpu_process_peak_rss"}
