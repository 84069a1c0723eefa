"""``mga.seq`` through the engine: a tiny ``sweeper run`` of an MGA spec on a real local Ray.

One ``mga.pretrain`` artifact feeds both the static MLP head and the sequential decoder (a tiny
random Llama here; the shipped spec names SmolLM2-135M); the decoder's attention export and the
modality-removal protocol land in ``analyses/`` and ``leaderboard.md``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray]

SUBSET = ["radiology", "timeseries", "demographics"]
SPEC = """
name: mga-seq-tiny
seed: 0
data: {synthetic: {n_stays: 240, seed: 0}}
tasks: [ihm]
modality_subsets: {explicit: [[radiology, timeseries, demographics]]}
methods:
  mga.static:mlp:
    fixed: {head: mlp, d: 16, batch_size: 64, pretrain_epochs: 2, pretrain_patience: 2, pretrain_batch_size: 64, text_encoder: bag}
  mga.seq:
    fixed: {lm: "tiny:32", lora_r: 4, window_hours: 6, batch_size: 64, removal_protocol: true, attention_stays: 2,
            d: 16, pretrain_epochs: 2, pretrain_patience: 2, pretrain_batch_size: 64, text_encoder: bag}
budgets: {tune_trials: 0, max_epochs: 2, grace_period: 1, reduction_factor: 2, patience: 2}
final: {seeds: 1, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1}
"""


def test_a_tiny_mga_sweep_runs_the_sequential_decoder_and_its_analyses(tmp_path, session_killer):
    spec = tmp_path / "mga-seq-tiny.yaml"
    spec.write_text(SPEC)
    process = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results", str(tmp_path / "results"), "--run-name", "r",
                                "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        session_killer(process.pid)
    assert process.returncode == 0, output.decode()[-4000:]
    run = tmp_path / "results" / "mga-seq-tiny" / "r"
    index = json.loads((run / "artifacts" / "mga.pretrain" / "index.json").read_text())
    assert len(index) == 1 and sorted(next(iter(index.values()))["dependents"]) == sorted(f"ihm__{m}__{'+'.join(SUBSET)}" for m in ("mga.seq", "mga.static:mlp"))
    board = pd.read_csv(run / "leaderboard.csv")
    assert set(board["method"]) == {"mga.seq", "mga.static:mlp"} and board["auroc_mean"].notna().all()
    attention = pd.read_csv(run / "analyses" / "mga_seq_attention.csv")
    assert sorted(attention["stay"].unique()) == [0, 1]
    assert attention.groupby("stay")["attention"].sum().round(4).eq(1.0).all()
    removal = pd.read_csv(run / "analyses" / "mga_seq_removal.csv")
    assert set(removal["removed"]) == {"none", *SUBSET} and removal["auroc_removed"].notna().all()
    own = removal[removal["removed"] == removal["token"]]
    assert len(own) == len(SUBSET) and (own["attention_removed"] == 0).all()
    assert "modality removal" in (run / "leaderboard.md").read_text()
