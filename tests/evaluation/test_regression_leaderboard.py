"""A regression task (los) through aggregation, comparisons and the leaderboard: its own metrics,
and rankings that follow each metric's direction (MAE: lower is better)."""
import numpy as np
import pandas as pd
import pytest

from sweeper.evaluation.aggregate import SeedPredictions, aggregate_cell, compare_with_best
from sweeper.evaluation.comparisons import add_adjusted_p_values, add_probability_best
from sweeper.evaluation.leaderboard import write_leaderboard
from sweeper.evaluation.regression import REGRESSION_METRICS


def _los_cell(noise: float, n_stays=200, n_seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(99)  # every cell is tested on the same stays and labels
    labels = np.log1p(truth.lognormal(np.log(60), 0.6, n_stays))
    ids = np.array([f"s{i:04d}" for i in range(n_stays)])
    return [SeedPredictions(seed=k, stay_ids=ids, labels=labels, scores=labels + rng.normal(0, noise, n_stays)) for k in range(n_seeds)]


@pytest.fixture(scope="module")
def cells():
    return {"good": _los_cell(0.2, seed=1), "fair": _los_cell(0.5, seed=2), "poor": _los_cell(1.0, seed=3)}


@pytest.fixture(scope="module")
def rows(cells):
    out = []
    for name, seeds in cells.items():
        row = aggregate_cell({"task": "los", "method": name, "subset": ["timeseries"]}, seeds, n_resamples=1000)
        row["cell_id"] = name
        out.append(row)
    return out


def test_a_los_row_has_the_regression_metrics_with_seed_and_bootstrap_cis(rows):
    row = rows[0]
    for metric in REGRESSION_METRICS:
        assert row[f"{metric}_ci_low"] <= row[f"{metric}_mean"] <= row[f"{metric}_ci_high"]
        assert row[f"{metric}_boot_low"] < row[f"{metric}_boot_high"]
    assert "auroc_mean" not in row and "auroc_delong_low" not in row
    assert row["spearman_mean"] > next(r for r in rows if r["method"] == "poor")["spearman_mean"]


def test_mae_ranks_lowest_first_and_the_comparisons_follow_it(rows, cells, tmp_path):
    rows = [dict(r) for r in rows]
    compare_with_best(rows, cells, metric={"los": "mae"}, n_resamples=500)
    add_adjusted_p_values(rows)
    add_probability_best(rows, cells, metric={"los": "mae"}, n_resamples=500)
    by_name = {r["method"]: r for r in rows}
    assert by_name["good"]["vs_best_cell"] == "good" and by_name["good"]["vs_best"] == 0.0
    for worse in ("fair", "poor"):  # this cell minus the best: a larger MAE, so positive
        assert by_name[worse]["vs_best"] > 0 and by_name[worse]["vs_best_ci_low"] > 0 and by_name[worse]["vs_best_p"] < 0.05
    assert by_name["good"]["p_best"] > 0.95

    board = write_leaderboard(rows, tmp_path, rank_by={"los": "mae"})
    assert board["method"].tolist() == ["good", "fair", "poor"]
    assert board["mae_mean"].is_monotonic_increasing
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Ranked by mean MAE (lower is better)" in text
    assert "| rank | method | subset | n_modalities | mse | mae | pearson | spearman |" in text
    assert "auroc" not in text.split("## los")[1]


def test_spearman_ranks_highest_first(rows, tmp_path):
    board = write_leaderboard([dict(r) for r in reversed(rows)], tmp_path, rank_by={"los": "spearman"})
    assert board["method"].tolist() == ["good", "fair", "poor"] and board["spearman_mean"].is_monotonic_decreasing


def test_a_board_with_both_kinds_shows_each_task_its_own_metrics(rows, tmp_path):
    ihm = {"task": "ihm", "method": "m", "subset": "timeseries", "n_modalities": 1, "cell_id": "ihm_m",
           **{f"{m}_mean": 0.5 for m in ("auroc", "auprc", "macro_f1", "accuracy", "brier", "ace", "bss")}}
    write_leaderboard([ihm, *[dict(r) for r in rows]], tmp_path, rank_by={"ihm": "auroc", "los": "mae"})
    text = (tmp_path / "leaderboard.md").read_text()
    ihm_part, los_part = text.split("## ihm")[1].split("## los")
    assert "| ace | bss |" in ihm_part and "mae" not in ihm_part.split("\n\n")[1]
    assert "| mse | mae | pearson | spearman |" in los_part and "auroc" not in los_part
    assert "ihm: AUROC; los: MAE (lower is better)" in text
    assert list(pd.read_csv(tmp_path / "leaderboard.csv")["task"]) == ["ihm", "los", "los", "los"]
