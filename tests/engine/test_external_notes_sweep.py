"""End to end on a local Ray cluster (``sweeper run`` starts its own): a cell that reads the frozen
all-MiniLM-L6-v2's embeddings of the discharge notes, trained on one synthetic cohort, is scored on
a second synthetic cohort that has notes (issue 14, item 7). The driver runs the same encoder over
the second cohort's notes through the embedding cache, so the cell gets filled ``ext_*`` columns.
The two cohorts share stay ids (the synthetic ids do not depend on the seed): scoring them through
the training cohort's embeddings would read other patients' notes (AUROC near 0.5). No other Ray
instance may run meanwhile (see tests/engine/test_sweep.py); pytest itself never connects."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from sweeper.data.schema import read_manifest
from sweeper.data.stays import shard_paths

pytestmark = [pytest.mark.ray]

CELL = "ihm__picme.supervised__discharge"


def _cli(*args, timeout):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, session_killer):
    root = tmp_path_factory.mktemp("extnotes")
    for name, n, seed in (("train", 400, 0), ("other", 300, 5)):
        done = _cli("data", "synth", "--out", str(root / name), "--n-stays", str(n), "--seed", str(seed), timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    spec = {
        "name": "extnotes", "data": {"path": "train", "external": {"other": "other"}}, "tasks": ["ihm"],
        "modality_subsets": {"explicit": [["discharge"]]},
        "methods": {"picme.supervised": {"fixed": {"d": 16, "batch_size": 64, "lr": 2e-3, "text_max_length": 128}}},
        "budgets": {"tune_trials": 0, "max_epochs": 6, "grace_period": 1, "patience": 6},
        "final": {"seeds": 1, "bootstrap_resamples": 1000},
        "resources": {"cpus_per_trial": 1},
    }
    (root / "extnotes.yaml").write_text(yaml.safe_dump(spec))
    process = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", str(root / "extnotes.yaml"), "--results", str(root / "results"),
                                "--run-name", "r1", "--quiet"], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        session_killer(process.pid)
    assert process.returncode == 0, output.decode()[-4000:]
    return root / "results" / "extnotes" / "r1", root


def test_a_note_reading_cell_gets_filled_external_columns(run_dir):
    run, root = run_dir
    board = pd.read_csv(run / "leaderboard.csv").set_index("cell_id")
    row = board.loc[CELL]
    with_notes = sum(pq.read_table(p, columns=["present_discharge"])["present_discharge"].to_numpy().sum()
                     for p in shard_paths(root / "other", read_manifest(root / "other")))
    assert row["ext_other__n_stays"] == with_notes  # every stay of the other cohort with a note
    assert row["ext_other__auroc_mean"] > 0.85  # measured 0.94 in memory; 0.50 through the training cohort's embeddings
    assert row["ext_other__auroc_boot_low"] < row["ext_other__auroc_mean"] < row["ext_other__auroc_boot_high"]
    assert (run / "predictions" / CELL / "ext_other" / "seed-0.parquet").is_file()
    record = json.loads((run / "embeddings.json").read_text())
    assert sorted((r.get("cohort") or "", r["modality"], r["stays"] > 0) for r in record) == [("", "discharge", True), ("ext_other", "discharge", True)]
