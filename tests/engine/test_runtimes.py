"""The two trial runtimes run one training loop: the same seeded trials give the same metrics and
predictions whether each is a Ray Train job (``train``) or runs in a reused Tune actor (``inline``)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """
name: runtimes
seed: 0
data: {path: STAYS}
tasks: [ihm]
modality_subsets:
  explicit: [[timeseries, demographics], [discharge, demographics]]
methods:
  picme.supervised:
    fixed: {d: 16, text_encoder: bag}
  classical.logreg: {}
budgets: {tune_trials: 0, max_epochs: 3, grace_period: 1, patience: 3}
final: {seeds: 2, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1, trial_runtime: RUNTIME}
"""


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("runtimes")
    frame, manifest = generate(SynthConfig(n_stays=300, seed=1))
    write_stays(frame, manifest, root / "stays", split_seed=1)
    runs = {}
    for runtime in ("inline", "train"):
        spec = root / f"{runtime}.yaml"
        spec.write_text(SPEC.replace("STAYS", str(root / "stays")).replace("RUNTIME", runtime))
        out = subprocess.run([sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results", str(root / "results"), "--run-name", runtime],
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        runs[runtime] = {"dir": root / "results" / "runtimes" / runtime, "output": out.stdout + out.stderr}
    return runs


def test_the_run_says_and_records_its_runtime_and_nothing_of_tunes_own_console(both_runs):
    for runtime, run in both_runs.items():
        assert json.loads((run["dir"] / "run.json").read_text())["runtime"] == runtime
        assert f"trial runtime: {runtime}" in run["output"]
        for noise in ("Configuration for experiment", "tensorboard --logdir", "View detailed results", "A new study created", "Loading weights"):
            assert noise not in run["output"], noise
    # Only the train runtime starts Train jobs (their checkpoints live under train/).
    assert any((both_runs["train"]["dir"] / "train").glob("train-*"))
    assert not (both_runs["inline"]["dir"] / "train").exists()


def test_seeded_trials_give_identical_metrics_and_predictions_under_both(both_runs):
    boards = {r: pd.read_csv(run["dir"] / "leaderboard.csv").set_index("cell_id").sort_index() for r, run in both_runs.items()}
    assert len(boards["inline"]) == 3
    for column in ("auroc_mean", "auprc_mean", "brier_mean", "auroc_std"):
        assert boards["inline"][column].tolist() == boards["train"][column].tolist(), column
    inline_predictions = sorted((both_runs["inline"]["dir"] / "predictions").rglob("seed-*.parquet"))
    assert len(inline_predictions) == 6
    for path in inline_predictions:
        other = both_runs["train"]["dir"] / "predictions" / path.relative_to(both_runs["inline"]["dir"] / "predictions")
        pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(other))
