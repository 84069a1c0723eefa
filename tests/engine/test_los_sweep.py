"""End to end on a local Ray: a tiny `sweeper run` of the length-of-stay tasks (los, ranked by MAE,
and los_gt_7d), its leaderboard, comparisons, report and tuning objective."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.ray

SPEC = {
    "name": "los-tiny",
    "data": {"synthetic": {"n_stays": 300, "seed": 0}},
    "tasks": ["los", "los_gt_7d"],
    "regression_metric": "mae",
    "modality_subsets": {"explicit": [["timeseries", "demographics"]]},
    "methods": {
        "picme.supervised": {"search": {"lr": {"loguniform": [1.0e-3, 3.0e-3]}}, "fixed": {"d": 16}},
        "classical.logreg": {},
    },
    "budgets": {"tune_trials": 2, "max_epochs": 2, "grace_period": 1, "patience": 2},
    "final": {"seeds": 2, "bootstrap_resamples": 1000},
    "resources": {"cpus_per_trial": 1, "trial_runtime": "inline"},
}


def test_a_tiny_los_sweep_ranks_los_by_mae_and_los_gt_7d_by_auroc(tmp_path, session_killer):
    spec = tmp_path / "los-tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    command = [sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results", str(tmp_path / "results"), "--run-name", "r1", "--quiet"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        session_killer(process.pid)
    assert process.returncode == 0, output.decode()[-3000:]
    run_dir = tmp_path / "results" / "los-tiny" / "r1"
    board = pd.read_csv(run_dir / "leaderboard.csv")
    los, over = board[board["task"] == "los"], board[board["task"] == "los_gt_7d"]
    assert len(los) == 2 and len(over) == 2
    assert los["mae_mean"].is_monotonic_increasing and los["mae_boot_low"].le(los["mae_mean"]).all()
    assert los["auroc_mean"].isna().all() and los["spearman_mean"].notna().all()
    assert los.iloc[0]["vs_best"] == 0 and los.iloc[1]["vs_best"] >= 0  # MAE of a worse cell is higher
    assert over["auroc_mean"].is_monotonic_decreasing and over[["ace_mean", "bss_mean"]].notna().all().all()
    assert over["mae_mean"].isna().all()
    assert json.loads((run_dir / "run.json").read_text())["rank_metrics"] == {"los": "mae", "los_gt_7d": "auroc"}
    best = json.loads((run_dir / "best_configs.json").read_text())
    assert all("val_objective" in entry for entry in best.values())
    text = (run_dir / "leaderboard.md").read_text()
    assert "los: MAE (lower is better)" in text and "los_gt_7d: AUROC" in text
    assert (run_dir / "report.html").stat().st_size > 0
