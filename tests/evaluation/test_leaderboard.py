"""leaderboard.csv / leaderboard.md: sorted, readable, round-trippable, written atomically."""
import math
import os

import numpy as np
import pandas as pd
import pytest

from sweeper.evaluation import leaderboard
from sweeper.evaluation.leaderboard import write_leaderboard
from sweeper.evaluation.metrics import METRICS


def _row(task, method, subset, auroc, n_seeds=3, **extra):
    row = {"task": task, "method": method, "subset": subset, "n_modalities": len(subset.split("+")), **extra}
    for i, metric in enumerate(METRICS):
        mean = auroc if metric == "auroc" else 0.5 + i / 20
        row.update({
            f"{metric}_mean": mean,
            f"{metric}_std": 0.010 if n_seeds > 1 else math.nan,
            f"{metric}_ci_low": mean - 0.02,
            f"{metric}_ci_high": mean + 0.02,
            f"{metric}_boot_low": mean - 0.022,
            f"{metric}_boot_high": mean + 0.018,
        })
    row.update({"n_seeds": n_seeds, "n_test_stays": 300, "best_config": '{"lr": 0.001}'})
    return row


@pytest.fixture
def rows():
    return [
        _row("phenotyping", "mga", "discharge", 0.70),
        _row("ihm", "picme", "discharge", 0.74),
        _row("ihm", "medfuse", "discharge+radiology", 0.812),
        _row("phenotyping", "slm", "discharge+cxr", 0.78, n_seeds=1),
        _row("ihm", "classical", "timeseries", 0.79),
    ]


def test_rows_are_sorted_by_task_then_auroc_descending(rows, tmp_path):
    frame = write_leaderboard(rows, tmp_path)
    assert list(frame["task"]) == ["ihm", "ihm", "ihm", "phenotyping", "phenotyping"]
    assert list(frame["method"]) == ["medfuse", "classical", "picme", "slm", "mga"]


def test_csv_round_trips_with_pandas(rows, tmp_path):
    frame = write_leaderboard(rows, tmp_path)
    read_back = pd.read_csv(tmp_path / "leaderboard.csv")
    pd.testing.assert_frame_equal(read_back, frame, check_dtype=False)
    assert {"auroc_boot_low", "brier_ci_high", "best_config", "n_test_stays"} <= set(read_back.columns)


def test_markdown_has_a_ranked_table_per_task(rows, tmp_path):
    write_leaderboard(rows, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert text.index("## ihm") < text.index("## phenotyping")
    header = "| rank | method | subset | n_modalities | " + " | ".join(METRICS) + " | n_seeds |"
    assert text.count(header) == 2
    ihm_rows = [line for line in text.split("## phenotyping")[0].splitlines() if line.startswith("| 1 ")]
    assert ihm_rows == [
        "| 1 | medfuse | discharge+radiology | 2 | 0.812 ± 0.010 [0.79, 0.83] | 0.550 ± 0.010 [0.53, 0.57] "
        "| 0.600 ± 0.010 [0.58, 0.62] | 0.650 ± 0.010 [0.63, 0.67] | 0.700 ± 0.010 [0.68, 0.72] "
        "| 0.750 ± 0.010 [0.73, 0.77] | 0.800 ± 0.010 [0.78, 0.82] | 3 |"
    ]
    # One seed: no std to show, the bootstrap CI still is.
    assert "| 1 | slm | discharge+cxr | 2 | 0.780 [0.76, 0.80] |" in text


def test_extra_sweep_axes_get_their_own_column(tmp_path):
    rows = [
        _row("ihm", "mga", "discharge", 0.7, missingness=0.0),
        _row("ihm", "mga", "discharge", 0.6, missingness=0.5),
    ]
    write_leaderboard(rows, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| rank | method | subset | n_modalities | missingness | auroc |" in text
    assert "| 2 | mga | discharge | 1 | 0.5 | 0.600" in text


def test_empty_leaderboard_still_writes_both_files(tmp_path):
    frame = write_leaderboard([], tmp_path / "new")
    assert frame.empty
    assert "No cells" in (tmp_path / "new" / "leaderboard.md").read_text()
    assert (tmp_path / "new" / "leaderboard.csv").exists()


def test_failed_write_leaves_the_previous_leaderboard_and_no_temp_files(rows, tmp_path, monkeypatch):
    write_leaderboard(rows[:1], tmp_path)
    before = (tmp_path / "leaderboard.csv").read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(leaderboard.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_leaderboard(rows, tmp_path)
    assert (tmp_path / "leaderboard.csv").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["leaderboard.csv", "leaderboard.md"]


def test_nan_auroc_rows_sort_last(tmp_path):
    rows = [_row("ihm", "a", "discharge", np.nan), _row("ihm", "b", "discharge", 0.6)]
    assert list(write_leaderboard(rows, tmp_path)["method"]) == ["b", "a"]


def test_markdown_shows_each_cells_paired_difference_from_the_top_cell(tmp_path):
    comparison = {"vs_best_cell": "a", "vs_best_n_stays": 280}
    rows = [
        _row("ihm", "picme", "discharge", 0.74, vs_best=-0.0712, vs_best_ci_low=-0.11, vs_best_ci_high=-0.031, vs_best_p=0.002, **comparison),
        _row("ihm", "medfuse", "discharge+radiology", 0.812, vs_best=0.0, vs_best_ci_low=math.nan, vs_best_ci_high=math.nan, vs_best_p=math.nan, **comparison),
    ]
    write_leaderboard(rows, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Δ vs #1" in text and "paired bootstrap" in text
    assert "| n_modalities | " + " | ".join(METRICS) + " | Δ vs #1 | p | n_seeds |" in text  # not taken for sweep axes
    assert "| 0.800 ± 0.010 [0.78, 0.82] | #1 |  | 3 |" in text  # the last metric: bss
    assert "| -0.071 [-0.11, -0.03] | 0.002 | 3 |" in text


def test_markdown_shows_adjusted_p_and_p_best_and_keeps_delong_out_of_the_axes(tmp_path):
    comparison = {"vs_best_cell": "a", "vs_best_n_stays": 280, "vs_best_p_adjust": "holm", "auroc_delong_low": 0.7, "auroc_delong_high": 0.9}
    rows = [
        _row("ihm", "picme", "discharge", 0.74, vs_best=-0.0712, vs_best_ci_low=-0.11, vs_best_ci_high=-0.031, vs_best_p=0.002,
             vs_best_p_adj=0.004, p_best=0.013, **comparison),
        _row("ihm", "medfuse", "discharge+radiology", 0.812, vs_best=0.0, vs_best_ci_low=math.nan, vs_best_ci_high=math.nan,
             vs_best_p=math.nan, vs_best_p_adj=math.nan, p_best=0.987, **comparison),
    ]
    write_leaderboard(rows, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| n_modalities | " + " | ".join(METRICS) + " | Δ vs #1 | p | p Holm | P(best) | n_seeds |" in text
    assert "| #1 |  |  | 0.99 | 3 |" in text
    assert "| -0.071 [-0.11, -0.03] | 0.002 | 0.004 | 0.01 | 3 |" in text
    assert "family-wise error rate" in text and "P(best)" in text
    read_back = pd.read_csv(tmp_path / "leaderboard.csv")
    assert {"vs_best_p", "vs_best_p_adj", "vs_best_p_adjust", "p_best", "auroc_delong_low"} <= set(read_back.columns)
