"""End to end on a local Ray cluster (``sweeper run`` starts its own, as a user runs it): a model
trained on PhysioNet 2012 set A is externally validated on set B through a spec (issue 14, item 7),
and the final models are scored on two missing-modality protocols (issue 16, item 4). Both sets
come from ../shared/data/physionet2012 through ``sweeper data prepare physionet2012 --sets``. No other
Ray instance may run meanwhile (see tests/engine/test_sweep.py); pytest itself never connects."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CELLS = ["ihm__classical.logreg__timeseries+demographics", "ihm__picme.supervised__timeseries+demographics"]


def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "sweeper.cli", *args], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, p12_dir, session_killer):
    root = tmp_path_factory.mktemp("p12ext")
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-m", "sweeper.cli", "data", "prepare", "physionet2012", "--src", str(p12_dir), "--sets", name,
                               "--out", str(root / f"set-{name}")], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    spec = {
        "name": "p12ext", "data": {"path": "set-a", "external": {"setb": "set-b"}}, "tasks": ["ihm"],
        "modality_subsets": {"explicit": [["timeseries", "demographics"]]},
        "methods": {"classical.logreg": {}, "picme.supervised": {"fixed": {"d": 16, "batch_size": 128, "lr": 2e-3}}},
        "budgets": {"tune_trials": 0, "max_epochs": 3, "grace_period": 1, "patience": 3},
        "final": {"seeds": 2, "bootstrap_resamples": 1000,
                  "test_missing": {"ts50": {"drop": "timeseries", "rate": 0.5}, "ts100": {"drop": "timeseries", "rate": 1.0}},
                  "efficiency_reference": "picme.supervised"},
        "resources": {"cpus_per_trial": 1},
    }
    (root / "p12ext.yaml").write_text(yaml.safe_dump(spec))
    process = _cli("run", str(root / "p12ext.yaml"), "--results", str(root / "results"), "--run-name", "r1", "--quiet")
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        session_killer(process.pid)
    assert process.returncode == 0, output.decode()[-4000:]
    return root / "results" / "p12ext" / "r1"


def test_a_model_trained_on_set_a_is_validated_on_set_b_with_bootstrap_cis(run_dir):
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("cell_id")
    assert sorted(board.index) == CELLS
    for cell, row in board.iterrows():
        assert row["ext_setb__n_stays"] == 4000  # every stay of set B (each has its demographics)
        assert 0.65 < row["ext_setb__auroc_mean"] < 0.95, cell
        assert row["ext_setb__auroc_boot_low"] < row["ext_setb__auroc_mean"] < row["ext_setb__auroc_boot_high"]
        assert row["ext_setb__drop"] == pytest.approx(row["auroc_mean"] - row["ext_setb__auroc_mean"])
        assert (run_dir / "predictions" / cell / "ext_setb" / "seed-1.parquet").is_file()
    gaps = json.loads((run_dir / "external" / "setb.json").read_text())
    assert gaps["features_absent"] == [] and gaps["modalities_absent"] == [] and gaps["n_stays"] == 4000
    assert "ext_setb" in (run_dir / "leaderboard.md").read_text() and "External cohorts" in (run_dir / "report.html").read_text()


def test_the_test_metric_falls_as_the_time_series_go_missing(run_dir):
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("cell_id")
    for cell, row in board.iterrows():
        assert row["auroc_mean"] > row["miss_ts50__auroc_mean"] > row["miss_ts100__auroc_mean"], cell
        assert row["miss_ts100__n_stays"] == row["n_test_stays"]
    robustness = pd.read_csv(run_dir / "analyses" / "robustness.csv")
    assert sorted(robustness["rate"].unique()) == [0.0, 0.5, 1.0] and set(robustness["drop"]) == {"timeseries"}
    assert (run_dir / "report.html").read_text().count('<img alt="plot"') >= 2  # the ranked plot and the robustness plot


def test_the_torch_method_gets_cost_columns_and_the_reference_an_eff_score_of_one(run_dir):
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("cell_id")
    torch_row, estimator = board.loc[CELLS[1]], board.loc[CELLS[0]]
    assert torch_row["eff_params"] > 0 and torch_row["eff_flops_per_stay"] > 0 and torch_row["eff_peak_mem_mb"] > 0
    assert torch_row["eff_score"] == pytest.approx(1.0) and pd.isna(estimator["eff_score"]) and pd.isna(estimator["eff_params"])
