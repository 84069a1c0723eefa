"""Issue 18, item 4: ``medfuse`` scored AUROC 0.403 on the default cohort's timeseries+demographics
cell. These tests pin what the diagnosis found (no Ray: the in-memory session):

- the predictions the loop returns line up with the stays: every test stay once, its own label,
  and the reported AUROC is the one its (label, score) rows give — no misalignment or flipped sign;
- the demographics path is read: on the demographics-only cell medfuse ranks stays by age (the
  cohort's only demographic signal) and beats chance;
- on that split (80 test stays, 9 deaths) a scorer with no signal at all falls to 0.403 or below
  often, so the figure is what a model near chance gives there, not a defect in the pipeline.

What is weak is the model on that cell at the local budget (4 epochs): with ~300 time-series tokens
beside the one age token, its scores follow noise in the series (measured on 3 000 stays: test
AUROC 0.49-0.61 over 3 seeds vs 0.75 for logistic regression; it starts using age after ~10 epochs).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from sweeper.data.schema import read_manifest
from sweeper.data.stays import read_stays
from sweeper.loop.training import run_training


def _run(stays, session, modalities, seed=0, epochs=4):
    from trainables import registry

    config = {
        **registry.get("medfuse").defaults, "method": "medfuse", "task": "ihm", "modalities": modalities, "seed": seed, "final": True,
        "max_epochs": epochs, "patience": epochs, "manifest": read_manifest(stays), "d": 32, "heads": 2, "layers": 1, "lr": 1e-3, "batch_size": 64,
    }
    run_training(config, session)
    predictions = session.predictions.to_pandas()
    return predictions.assign(label=[float(x[0]) for x in predictions["label"]], score=[float(x[0]) for x in predictions["score"]])


@pytest.fixture(scope="module")
def split_stays(synth_stays):
    return read_stays(synth_stays, "test")[0].to_pandas().set_index("stay_id")


def test_predictions_line_up_with_the_test_stays_and_their_labels(synth_stays, in_memory_session, split_stays):
    session = in_memory_session(synth_stays)
    predictions = _run(synth_stays, session, ["timeseries", "demographics"], epochs=2)
    ids = predictions["stay_id"].astype(str)
    assert sorted(ids) == sorted(split_stays.index) and ids.is_unique
    assert np.array_equal(predictions["label"].to_numpy(), split_stays.loc[ids, "label_ihm"].to_numpy())
    assert session.reports[-1]["test_auroc"] == pytest.approx(roc_auc_score(predictions["label"], predictions["score"]))


def test_the_demographics_path_is_read_with_the_right_sign(synth_stays, in_memory_session, split_stays):
    predictions = _run(synth_stays, in_memory_session(synth_stays), ["demographics"])
    age = split_stays.loc[predictions["stay_id"].astype(str), "demo_age"].to_numpy()
    # Age carries the cohort's demographic signal (older: sicker); measured rho 0.66-0.70 over 3 seeds.
    assert spearmanr(predictions["score"], age).correlation > 0.4
    assert roc_auc_score(predictions["label"], predictions["score"]) > 0.55  # measured 0.62-0.70


def test_a_scorer_without_signal_often_scores_0403_or_less_on_this_split(split_stays):
    labels = split_stays["label_ihm"].to_numpy()
    assert len(labels) < 100 and labels.sum() < 15  # ~90 test stays, few deaths: a wide AUROC spread
    ranks = np.argsort(np.argsort(np.random.default_rng(0).random((4000, len(labels))), axis=1), axis=1) + 1
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    aurocs = (ranks[:, labels > 0].sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)  # Mann-Whitney
    assert 0.05 < (aurocs <= 0.403).mean() < 0.5  # measured 0.18 (sd 0.10 around 0.5): one no-signal run in five or six
