"""The MedFuse comparison end to end on real PhysioNet 2012 files: prepare set A, then
`sweeper run medfuse-p12 --profile tiny` (its own local Ray), as a user runs it."""
from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

METHODS = {"medfuse:mufuse", "medfuse:add", "medfuse:concat", "medfuse:scane", "classical.xgboost", "classical.logreg"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, session_killer, p12_dir):
    root = tmp_path_factory.mktemp("p12")
    prepared = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "data", "prepare", "physionet2012", "--src", str(p12_dir), "--sets", "a", "--out", str(root / "stays")],
        capture_output=True, text=True,
    )
    assert prepared.returncode == 0, prepared.stderr
    run = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "run", "medfuse-p12", "--profile", "tiny", "--data", str(root / "stays"),
         "--results", str(root / "results"), "--run-name", "r", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        output, _ = run.communicate(timeout=900)
    finally:
        session_killer(run.pid)
    assert run.returncode == 0, output.decode()[-4000:]
    return root / "results" / "medfuse-p12" / "r"


def test_every_method_has_a_row_ranked_by_auprc_with_bootstrap_intervals(tiny_run):
    board = pd.read_csv(tiny_run / "leaderboard.csv")
    assert set(board["method"]) == METHODS and len(board) == 6
    assert (board["subset"] == "timeseries+demographics").all()
    assert list(board["auprc_mean"]) == sorted(board["auprc_mean"], reverse=True)
    for metric in ("auprc", "auroc", "accuracy"):
        assert all(math.isfinite(v) for v in board[f"{metric}_boot_low"]), metric
        assert (board[f"{metric}_boot_low"] <= board[f"{metric}_mean"] + 1e-9).all() and (board[f"{metric}_mean"] <= board[f"{metric}_boot_high"] + 1e-9).all()
    assert "Ranked by mean AUPRC" in (tiny_run / "leaderboard.md").read_text()


def test_every_method_learns_mortality_from_real_series(tiny_run):
    board = pd.read_csv(tiny_run / "leaderboard.csv").set_index("method")
    # A constant score: AUROC 0.5, AUPRC = the death rate (~0.14 in set A).
    assert board.loc["classical.xgboost", "auroc_mean"] > 0.75
    assert board.loc["classical.logreg", "auroc_mean"] > 0.75
    # The tiny profile gives each MedFuse variant 2 epochs of a 16-wide model: above chance, no more.
    for method in METHODS:
        assert board.loc[method, "auroc_mean"] > 0.55, method
        assert board.loc[method, "auprc_mean"] > 0.17, method
    assert board["n_test_stays"].nunique() == 1  # every method scored on the same test stays
