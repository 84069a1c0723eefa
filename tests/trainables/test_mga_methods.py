"""``mga.pretrain`` aligns the modalities of a synthetic cohort and the static heads learn on it
(no Ray: the in-memory session runs the workers' loop).

The cohort's modalities share what the generator plants in all of them (gender, severity and the
conditions a note or a finding mentions); at the default strengths notes and demographics share
little beyond gender, so this cohort turns every modality's strength up (0.9–0.95): what a stay's
discharge note says then predicts its radiology report and demographics well enough to retrieve it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.loop.training import run_training

SUBSET = ["discharge", "radiology", "demographics"]
PRETRAIN = {"d": 32, "pretrain_batch_size": 64, "pretrain_lr": 3e-3, "pretrain_epochs": 30, "pretrain_patience": 4, "dropout": 0.3, "text_encoder": "bag"}


@pytest.fixture(scope="module")
def aligned_stays(tmp_path_factory):
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("mga") / "stays"
    strengths = {"discharge": 0.95, "radiology": 0.95, "demographics": 0.9, "cxr": 0.9, "timeseries": 0.9}
    frame, manifest = generate(SynthConfig(n_stays=1000, seed=0, strengths=strengths))
    write_stays(frame, manifest, out, split_seed=0)
    return out


def _config(stays, method, **extra):
    from sweeper.data.schema import read_manifest
    from trainables import registry

    return {
        **registry.get(method).defaults, **PRETRAIN, "method": method, "task": "ihm", "modalities": SUBSET, "seed": 0, "final": True,
        "max_epochs": 8, "patience": 8, "manifest": read_manifest(stays), "lr": 3e-3, "batch_size": 64, **extra,
    }


@pytest.fixture(scope="module")
def pretrained(aligned_stays):
    from tests.conftest import InMemorySession
    from trainables.mga.pretrain import read_artifact

    session = InMemorySession(aligned_stays)
    run_training(_config(aligned_stays, "mga.static", stage="mga.pretrain"), session)
    return {"session": session, "artifact": read_artifact(str(session.artifact)), "folder": session.artifact}


def test_pretraining_lowers_validation_loss_and_stops_early(pretrained):
    import json

    reports = pretrained["session"].reports
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1)) and reports[-1]["done"]
    history = json.loads((pretrained["folder"] / "history.json").read_text())
    losses = [h["val_loss"] for h in history["history"]]
    assert history["best_val_loss"] == min(losses) < losses[0] < history["initial_val_loss"]
    # it stopped on patience, not on the epoch budget, and kept the best epoch's weights
    assert len(losses) < PRETRAIN["pretrain_epochs"] and losses.index(min(losses)) == len(losses) - 1 - PRETRAIN["pretrain_patience"]
    assert all(h["tau"] != history["history"][0]["tau"] for h in history["history"][1:])  # τ learns


def test_aligned_embeddings_retrieve_their_own_stay_well_above_chance(pretrained):
    from trainables import registry

    entry = {"subset": SUBSET, "config": PRETRAIN, "dependents": []}
    analyses = {a.name: a for a in registry.stage("mga.pretrain").analyses([("key", entry, pretrained["folder"])], None)}
    retrieval = analyses["mga_retrieval"].table
    assert len(retrieval) == 6  # every ordered pair
    assert (retrieval["random@1"] == 1 / retrieval["n_candidates"]).all()
    assert np.allclose(retrieval["improvement@5"], retrieval["r@5"] / retrieval["random@5"])
    assert retrieval["improvement@1"].mean() >= 3.0, retrieval[["pair", "r@1", "random@1", "improvement@1"]]
    silhouette = analyses["mga_silhouette"].table.iloc[0]
    assert -1 <= silhouette["silhouette"] <= 1 and all(math.isfinite(silhouette[f"silhouette_{m}"]) for m in SUBSET)


def test_artifact_holds_every_stays_aligned_embedding_and_the_tokens(pretrained, aligned_stays):
    from sweeper.data.stays import read_stays

    features, tokens = pretrained["artifact"]["features"], pretrained["artifact"]["config"]["mga_tokens"]
    n = sum(len(read_stays(aligned_stays, split)[0]) for split in ("train", "val", "test"))
    with np.load(pretrained["folder"] / "embeddings.npz") as saved:
        present, split = saved["present"], saved["split"]
    assert set(features) == set(SUBSET) and set(split) == {"train", "val", "test"}
    assert not present.all()  # notes are missing for some stays (demographics never are)
    for j, m in enumerate(SUBSET):
        ids, matrix = features[m]
        assert list(ids) == sorted(ids) and matrix.shape == (n, 32)
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
        absent = ~present[:, j].astype(bool)
        assert np.allclose(matrix[absent], np.asarray(tokens[m], dtype=np.float32), atol=1e-6)


@pytest.mark.parametrize("method,head", [("mga.static", "mlp"), ("mga.static", "lstm"), ("mga.static_scratch", "mlp")])
def test_static_heads_beat_a_constant_score(pretrained, aligned_stays, in_memory_session, method, head):
    extra = {"features": pretrained["artifact"]["features"], **pretrained["artifact"]["config"]} if method == "mga.static" else {}
    session = in_memory_session(aligned_stays)
    run_training(_config(aligned_stays, method, head=head, **extra), session)
    # a constant score has AUROC 0.5
    assert session.reports[-1]["test_auroc"] > 0.75, session.reports[-1]


def test_aligned_head_without_the_stage_is_a_clear_error(pretrained, aligned_stays, in_memory_session):
    with pytest.raises(ValueError, match="mga_tokens"):
        run_training(_config(aligned_stays, "mga.static", features=pretrained["artifact"]["features"]), in_memory_session(aligned_stays))


@pytest.mark.parametrize("profile", ["local", "paper"])
def test_the_spec_runs_one_pretraining_for_both_aligned_heads_and_every_task(profile):
    from sweeper.plan.plan import stage_jobs
    from sweeper.plan.spec import expand_cells, load_spec

    spec, _ = load_spec("mga", profile)
    assert set(spec.tasks) == ({"ihm", "los"} if profile == "local" else {"ihm", "phenotyping", "los"})
    jobs = stage_jobs(spec, expand_cells(spec), data_hash="")
    assert [job["stage"] for job in jobs.values()] == ["mga.pretrain"]
    dependents = next(iter(jobs.values()))["dependents"]
    # the aligned static heads (mlp, lstm) and the sequential decoder, on every task of the profile
    assert len(dependents) == 3 * len(spec.tasks) and all(":mlp" in c or ":lstm" in c or "mga.seq" in c for c in dependents), dependents
    assert sum("mga.seq" in c for c in dependents) == len(spec.tasks)
