"""PiCME's contrastive pre-training stage, the frozen fine-tune and the Modality-Gated LSTM train
and learn on the synthetic cohort (no Ray: the in-memory session runs the workers' loop)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sweeper.loop.training import run_training

SUBSET = ["discharge", "timeseries", "demographics"]


def _config(stays, method, modalities, **extra):
    from sweeper.data.schema import read_manifest
    from trainables import registry

    return {
        **registry.get(method).defaults, "method": method, "task": "ihm", "modalities": modalities, "seed": 0, "final": True,
        "max_epochs": 8, "patience": 8, "manifest": read_manifest(stays), "d": 32, "lr": 2e-3, "batch_size": 32, **extra,
    }


@pytest.fixture(scope="module")
def pretrained(synth_stays, tmp_path_factory):
    from tests.conftest import InMemorySession
    from trainables.picme.contrastive import read_artifact

    session = InMemorySession(synth_stays)
    run_training(_config(synth_stays, "picme.contrastive", SUBSET, stage="picme.pretrain", pretrain_epochs=6, pretrain_patience=6), session)
    return {"session": session, "artifact": read_artifact(str(session.artifact)), "folder": session.artifact}


def test_pretraining_logs_lambda_each_epoch_and_lowers_the_contrastive_loss(pretrained):
    reports = pretrained["session"].reports
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1)) and reports[-1]["done"]
    for report in reports:
        lam = [report[f"lambda_{m}"] for m in SUBSET]
        assert abs(sum(lam) - 1) < 1e-5 and all(0 < x < 1 for x in lam)
    saved = json.loads((pretrained["folder"] / "lambda.json").read_text())
    assert saved["modalities"] == SUBSET and len(saved["history"]) == len(reports)
    # chance level of a batch of N is about log N per term; the encoders must align the views
    assert saved["best_val_loss"] < saved["history"][0]["val_loss"]
    assert pretrained["artifact"]["config"]["lam"] == [saved["final"][m] for m in SUBSET]


def test_artifact_holds_every_stay_embedding_per_modality(pretrained, synth_stays):
    from sweeper.data.stays import read_stays

    features = pretrained["artifact"]["features"]
    assert set(features) == set(SUBSET)
    n = sum(len(read_stays(synth_stays, split)[0]) for split in ("train", "val", "test"))
    for ids, matrix in features.values():
        assert list(ids) == sorted(ids) and matrix.shape == (n, 32) and np.isfinite(matrix).all()


def test_contrastive_fine_tune_learns_from_frozen_embeddings(pretrained, synth_stays, in_memory_session):
    session = in_memory_session(synth_stays)
    run_training(_config(synth_stays, "picme.contrastive", SUBSET, features=pretrained["artifact"]["features"]), session)
    # a trivial (constant) score has AUROC 0.5; frozen task-agnostic embeddings trail end-to-end training
    assert session.reports[-1]["test_auroc"] > 0.65, session.reports[-1]


def test_mlstm_learns_with_the_pretrained_lambda(pretrained, synth_stays, in_memory_session):
    session = in_memory_session(synth_stays)
    run_training(_config(synth_stays, "picme.mlstm", SUBSET, **pretrained["artifact"]["config"]), session)
    assert session.reports[-1]["test_auroc"] > 0.75, session.reports[-1]


def test_mlstm_without_lambda_is_a_clear_error(synth_stays, in_memory_session):
    with pytest.raises(ValueError, match="needs lam"):
        run_training(_config(synth_stays, "picme.mlstm", SUBSET), in_memory_session(synth_stays))


def test_supervised_learns_from_frozen_minilm_note_embeddings(synth_stays, in_memory_session, tmp_path):
    from sweeper.encode.embeddings import text_embeddings

    ids, matrix = text_embeddings(synth_stays, "discharge", max_length=64, cache_root=tmp_path)
    assert matrix.shape[1] == 384
    session = in_memory_session(synth_stays)
    run_training(_config(synth_stays, "picme.supervised", ["discharge"], features={"discharge": (ids, matrix)}), session)
    assert session.reports[-1]["test_auroc"] > 0.75, session.reports[-1]


def test_lora_adapters_of_the_text_model_train_in_the_trial(synth_stays, in_memory_session):
    """``text_lora_r`` > 0: raw notes go to all-MiniLM-L6-v2 whose LoRA adapters train in the trial
    (LoRA starts its B matrices at zero; a trained adapter has moved them), the base stays frozen."""
    import io

    import torch

    session = in_memory_session(synth_stays)
    config = _config(synth_stays, "picme.supervised", ["discharge"], text_lora_r=4, text_max_length=16, max_epochs=1, patience=1, save_model=True)
    run_training(config, session)
    state = torch.load(io.BytesIO(session.model_bytes), weights_only=True)["state_dict"]
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert 0.0 <= session.reports[-1]["test_auroc"] <= 1.0
