"""A final trial scores its extra test sets (sweeper.loop.extra_sets) beside the test split: seeded
missing-modality protocols and external cohorts read by feature name. The training loop runs in
memory (tests/conftest.py's session), no Ray."""
from __future__ import annotations

import copy

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from sweeper.data.corrupt import EACH, Protocol, hide
from sweeper.data.external import read_external, remap_timeseries
from sweeper.data.schema import presence_column, read_manifest
from sweeper.data.stays import write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.loop.extra_sets import EXTRA_PREDICTIONS
from sweeper.loop.outputs import PREDICTIONS_FILE
from sweeper.loop.training import run_training
from trainables import registry


def _final(method: str, modalities, stays, extra_sets, **overrides) -> dict:
    return {**registry.get(method).defaults, "method": method, "task": "ihm", "seed": 0, "final": True, "modalities": list(modalities),
            "max_epochs": 4, "patience": 4, "d": 16, "lr": 2e-3, "batch_size": 64, "manifest": read_manifest(stays),
            "extra_sets": extra_sets, **overrides}


def _predictions(session, name=None):
    table = pq.read_table(session.artifact / (EXTRA_PREDICTIONS.format(name) if name else PREDICTIONS_FILE)).to_pandas()
    return table.assign(label=[float(v[0]) for v in table["label"]], score=[float(v[0]) for v in table["score"]]).set_index("stay_id")


def test_the_test_metric_falls_as_the_test_time_drop_rate_rises(synth_stays, in_memory_session):
    sets = {f"miss_d{int(r * 100)}": {"drop": "discharge", "rate": r, "seed": 0} for r in (0.3, 0.6, 1.0)}
    sets["miss_cxr"] = {"drop": "cxr", "rate": 1.0, "seed": 0}  # not in the cell: the test split itself
    session = in_memory_session(synth_stays)
    run_training(_final("picme.supervised", ["discharge", "demographics"], synth_stays, sets), session)
    test = _predictions(session)
    auroc = {"test": roc_auc_score(test["label"], test["score"])}
    for name in sets:
        scored = _predictions(session, name)
        assert list(scored.index) == list(test.index) and scored["label"].equals(test["label"])  # the same stays
        auroc[name] = roc_auc_score(scored["label"], scored["score"])
    np.testing.assert_allclose(_predictions(session, "miss_cxr")["score"], test["score"], rtol=1e-6)
    assert auroc["test"] > auroc["miss_d30"] > auroc["miss_d60"] > auroc["miss_d100"], auroc
    assert auroc["test"] - auroc["miss_d100"] > 0.05, auroc  # measured 0.094: discharge carries the strongest signal
    final = session.reports[-1]  # the deployed model's costs (sweeper.loop.costs)
    assert final["eff_params"] > 1000 and final["eff_flops_per_stay"] > 2 * 4096 * 16  # at least the notes' first projection
    assert final["eff_peak_mem_mb"] > 50 and final["eff_memory_measure"] == "cpu_process_peak_rss"


def test_an_estimator_scores_the_protocols_and_only_hidden_stays_change(synth_stays, in_memory_session):
    protocol = {"drop": EACH, "rate": 0.5, "seed": 7}
    session = in_memory_session(synth_stays)
    run_training(_final("classical.logreg", ["timeseries", "demographics"], synth_stays, {"miss_each50": protocol}), session)
    test, scored = _predictions(session), _predictions(session, "miss_each50")
    table = session.tables["test"].to_pandas().set_index("stay_id").loc[test.index]
    modalities = ["timeseries", "demographics"]
    present = table[[presence_column(m) for m in modalities]].to_numpy(bool)
    changed = (hide(present, test.index, modalities, Protocol(EACH, 0.5, 7)) != present).any(axis=1)
    assert changed.sum() > 10
    np.testing.assert_allclose(scored["score"][~changed], test["score"][~changed], rtol=1e-6)
    assert (np.abs(scored["score"][changed] - test["score"][changed]) > 1e-6).mean() > 0.9
    assert not any(k.startswith("eff_") for k in session.reports[-1])  # costs are measured for torch models only


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """A training cohort, and another cohort written twice: in its own feature order, and with its
    time-series features reversed and one of them removed (as another source would list them)."""
    root = tmp_path_factory.mktemp("external")
    frame, manifest = generate(SynthConfig(n_stays=400, seed=0))
    write_stays(frame, manifest, root / "train", split_seed=0)
    other, other_manifest = generate(SynthConfig(n_stays=300, seed=5))
    write_stays(other, other_manifest, root / "same", split_seed=0)
    reordered = copy.deepcopy(other_manifest)
    reordered.timeseries.features = other_manifest.timeseries.features[::-1]
    reordered.timeseries.units = dict(other_manifest.timeseries.units)
    write_stays(remap_timeseries(other, other_manifest, reordered)[0], reordered, root / "reordered", split_seed=0)
    fewer = copy.deepcopy(reordered)
    fewer.timeseries.features = reordered.timeseries.features[1:]
    write_stays(remap_timeseries(other, other_manifest, fewer)[0], fewer, root / "fewer", split_seed=0)
    return root


def test_an_external_cohort_is_read_by_feature_name_and_what_it_lacks_is_reported(cohorts):
    train = read_manifest(cohorts / "train")
    same, report_same = read_external(cohorts / "same", train, ["timeseries", "demographics"], ["ihm"])
    reordered, report = read_external(cohorts / "reordered", train, ["timeseries", "demographics"], ["ihm"])
    assert same.num_rows == reordered.num_rows == report["n_stays"] == 300  # every split of it
    ordered = lambda t: t.sort_by("stay_id")  # noqa: E731
    assert ordered(same)["ts_hourly_values"].equals(ordered(reordered)["ts_hourly_values"])
    assert report["features_absent"] == [] and report["events_dropped"] == 0
    fewer, report_fewer = read_external(cohorts / "fewer", train, ["timeseries", "demographics"], ["ihm"])
    lost = train.timeseries.features[-1]  # reversed, then the first removed
    assert report_fewer["features_absent"] == [lost]
    column = train.timeseries.features.index(lost)
    masks = np.stack([np.asarray(m).reshape(train.timeseries.hours, -1)[:, column] for m in fewer["ts_hourly_mask"].to_pylist() if m is not None])
    assert not masks.any()  # never observed, not a zero: the model reads it as missing


def test_a_final_trial_scores_an_external_cohort_as_it_scores_the_same_stays_in_the_training_order(cohorts, in_memory_session):
    train = read_manifest(cohorts / "train")
    session = in_memory_session(cohorts / "train")
    for name in ("same", "reordered"):
        session.tables[f"ext_{name}"] = read_external(cohorts / name, train, ["timeseries", "demographics"], ["ihm"])[0]
    sets = {"ext_same": {"external": True}, "ext_reordered": {"external": True}}
    run_training(_final("picme.supervised", ["timeseries", "demographics"], cohorts / "train", sets, max_epochs=2), session)
    same, reordered = _predictions(session, "ext_same"), _predictions(session, "ext_reordered")
    assert len(same) == 300
    np.testing.assert_allclose(reordered.loc[same.index, "score"], same["score"], rtol=1e-5)
    assert same["score"].std() > 0


def test_train_time_drop_of_one_modality_hides_only_that_one():
    import torch

    from sweeper.loop.training import drop_modalities

    present = torch.ones(2000, 3, dtype=torch.bool)
    kept = drop_modalities(present, 0.5, torch.Generator().manual_seed(0), only=1)
    assert kept[:, [0, 2]].all() and 0.45 < (~kept[:, 1]).float().mean() < 0.55


def test_a_note_reading_cell_scores_an_external_cohort_with_that_cohorts_own_embeddings(cohorts, in_memory_session, tmp_path, monkeypatch):
    """The cell reads the frozen MiniLM's cached embeddings of the discharge notes; each external set
    gets the embeddings of its own stays (``extra_features``), computed through the same cache. The
    other cohort shares the training cohort's stay ids (the synthetic ids do not depend on the seed):
    looking its stays up in the training cohort's matrix would score other patients' notes (measured:
    AUROC 0.50 that way, 0.94 with its own)."""
    from sweeper.encode.embeddings import text_embeddings
    from sweeper.encode.text import DEFAULT_TEXT_MODEL

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train = read_manifest(cohorts / "train")
    embed = lambda folder: text_embeddings(folder, "discharge", max_length=128, cache_root=tmp_path / "cache")  # noqa: E731
    modalities = ["discharge"]  # the notes alone: the planted signal is past the first 32 tokens
    session = in_memory_session(cohorts / "train")
    for name in ("train", "same"):
        session.tables[f"ext_{name}"] = read_external(cohorts / name, train, modalities, ["ihm"])[0]
    session.tables["ext_unfed"] = session.tables["ext_same"]
    sets = {name: {"external": True} for name in ("ext_train", "ext_same", "ext_unfed")}
    extra = {"ext_train": {"discharge": embed(cohorts / "train")}, "ext_same": {"discharge": embed(cohorts / "same")}}
    assert set(extra["ext_same"]["discharge"][0]) & set(extra["ext_train"]["discharge"][0])  # shared stay ids
    run_training(_final("picme.supervised", modalities, cohorts / "train", sets, text_encoder=DEFAULT_TEXT_MODEL, text_max_length=128,
                        features={"discharge": extra["ext_train"]["discharge"]}, extra_features=extra, max_epochs=6, patience=6), session)
    test, itself, other = _predictions(session), _predictions(session, "ext_train"), _predictions(session, "ext_same")
    np.testing.assert_allclose(itself.loc[test.index, "score"], test["score"], rtol=1e-5)  # the same stays, the same inputs
    assert list(other.index) == list(extra["ext_same"]["discharge"][0])  # every stay of it with a note
    auroc = roc_auc_score(other["label"], other["score"])
    assert auroc > 0.85, auroc
    assert not (session.artifact / EXTRA_PREDICTIONS.format("ext_unfed")).exists()  # no embeddings of its own: not scored
