"""PiCME through the engine: `sweeper run picme-smoke` on a real local Ray.

One contrastive pre-training per modality subset feeds every dependent cell (frozen fine-tune and
Modality-Gated LSTM, both tasks); notes go through the offline all-MiniLM-L6-v2 once per stay into
the embedding cache, and a second sweep over the same data reads them back without a forward pass.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SUBSETS = {"discharge+demographics", "discharge+timeseries+demographics"}
SECOND = """
name: picme-again
seed: 0
data: {path: STAYS}
tasks: [ihm]
modality_subsets: {explicit: [[discharge]]}
methods:
  picme.supervised: {fixed: {d: 16, text_max_length: 32}}
budgets: {tune_trials: 0, max_epochs: 1, grace_period: 1, reduction_factor: 2, patience: 1}
final: {seeds: 1, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1}
"""


def _run(args, killer):
    process = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", *args, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=900)
    finally:
        killer(process.pid)
    assert process.returncode == 0, output.decode()[-4000:]


@pytest.fixture(scope="module")
def picme_runs(tmp_path_factory, session_killer):
    results = tmp_path_factory.mktemp("picme")
    _run(["picme-smoke", "--results", str(results), "--run-name", "r1"], session_killer)
    first = results / "picme-smoke" / "r1"
    spec = results / "picme-again.yaml"
    spec.write_text(SECOND.replace("STAYS", str(first / "data")))
    _run([str(spec), "--results", str(results), "--run-name", "r2"], session_killer)
    return {"first": first, "second": results / "picme-again" / "r2"}


def test_one_pretraining_per_subset_feeds_every_dependent(picme_runs):
    run = picme_runs["first"]
    index = json.loads((run / "artifacts" / "picme.pretrain" / "index.json").read_text())
    assert {"+".join(entry["subset"]) for entry in index.values()} == SUBSETS and len(index) == 2
    for entry in index.values():
        subset = "+".join(entry["subset"])
        assert sorted(entry["dependents"]) == sorted(f"{task}__{method}__{subset}" for task in ("ihm", "phenotyping") for method in ("picme.contrastive", "picme.mlstm"))
    events = [json.loads(line) for line in (run / "trial_events.jsonl").read_text().splitlines()]
    assert sum(e["phase"] == "pretrain" and e["event"] == "start" for e in events) == 2
    for key in index:
        lam = json.loads((run / "artifacts" / "picme.pretrain" / key / "lambda.json").read_text())
        assert abs(sum(lam["final"].values()) - 1) < 1e-5 and lam["history"]


def test_every_picme_cell_has_a_leaderboard_row(picme_runs):
    board = pd.read_csv(picme_runs["first"] / "leaderboard.csv")
    assert len(board) == 8 and set(board["method"]) == {"picme.contrastive", "picme.mlstm"}
    assert board["auroc_mean"].notna().all()


def test_second_sweep_over_the_same_data_encodes_no_note(picme_runs):
    first = json.loads((picme_runs["first"] / "embeddings.json").read_text())
    assert [e["modality"] for e in first] == ["discharge"] and first[0]["forward_passes"] > 0
    second = json.loads((picme_runs["second"] / "embeddings.json").read_text())
    assert second == [{**first[0], "forward_passes": 0}]


def test_analyses_are_written_and_summarised(picme_runs):
    run = picme_runs["first"]
    analyses = run / "analyses"
    lam = pd.read_csv(analyses / "lambda.csv")
    assert set(lam["subset"]) == SUBSETS
    assert lam.groupby("subset")["lambda"].sum().between(1 - 1e-5, 1 + 1e-5).all()
    alignment = pd.read_csv(analyses / "alignment.csv")
    assert set(alignment["subset"]) == SUBSETS and alignment["top5_alignment"].between(0, 1).all()
    retrieval = pd.read_csv(analyses / "picme_retrieval.csv")  # held-out cross-modal R@K, both directions of every pair
    assert set(retrieval["subset"]) == SUBSETS and len(retrieval) == sum(len(s.split("+")) * (len(s.split("+")) - 1) for s in SUBSETS)
    assert retrieval["r@5"].between(0, 1).all() and (retrieval["random@5"] > 0).all()
    shares = pd.read_csv(analyses / "attributions.csv")
    assert set(shares["method"]) == {"picme.contrastive", "picme.mlstm"}
    assert shares.groupby("cell_id")["ig_share"].sum().between(1 - 1e-4, 1 + 1e-4).all()
    assert shares["lambda"].notna().all()  # IG beside the λ of the same subset
    subgroups = pd.read_csv(analyses / "subgroups.csv")
    assert {"Gender", "Ethnicity", "Age Group"} <= set(subgroups["group"]) and len(set(subgroups["cell_id"])) == 8
    groups = pd.read_csv(analyses / "phenotype_groups.csv")
    assert len(groups) == 4 and {"acute", "chronic", "mixed"} <= set(groups.columns)
    markdown = (run / "leaderboard.md").read_text()
    for title in ("Integrated-Gradients share", "Final λ", "Top-5 alignment", "PiCME cross-modal retrieval", "Phenotype AUROC by group", "AUROC per subgroup"):
        assert title in markdown
