"""An external cohort's notes through the run's frozen text encoder (issue 14, item 7):
``sweeper.engine.stages.external_features`` runs ``text_features`` over the cohort's stays with the
encoder each cell reads, through the same encode-once cache keyed by the cohort's content hash.
The real all-MiniLM-L6-v2 (offline); ``ray.put`` is replaced by the identity so no Ray starts."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from sweeper.data.schema import read_manifest
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.encode.embeddings import _frozen_encoder, entry_dir, last_forward_passes, text_embeddings
from sweeper.encode.text import DEFAULT_TEXT_MODEL, text_model_id
from sweeper.engine.stages import external_features, text_features
from sweeper.plan.spec import Cell

MAX_LENGTH = 32


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import ray

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(ray, "put", lambda value: value)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("extfeat")
    for name, n, seed in (("train", 80, 0), ("other", 50, 4)):
        frame, manifest = generate(SynthConfig(n_stays=n, seed=seed))
        write_stays(frame, manifest, root / name, split_seed=0)
    return root


class Lines:
    def __init__(self):
        self.lines = []

    def say(self, line):
        self.lines.append(line)


def _cells():
    notes = Cell("ihm", "picme.supervised", ("discharge", "demographics"))
    staged = Cell("ihm", "picme.contrastive", ("discharge", "timeseries"))  # a stage replaces its embeddings
    bag = Cell("ihm", "picme.supervised", ("radiology",), (("text_encoder", "bag"),))
    frozen = {"text_encoder": DEFAULT_TEXT_MODEL, "text_max_length": MAX_LENGTH}
    configs = {notes.cell_id: frozen, staged.cell_id: frozen, bag.cell_id: {"text_encoder": "bag"}}
    return [notes, staged, bag], configs


def test_an_external_cohorts_notes_go_through_the_same_encoder_and_cache(cohorts, tmp_path):
    cells, configs = _cells()
    notes, staged, bag = cells
    cache, run_dir, progress = tmp_path / "cache", tmp_path / "run", Lines()
    run_dir.mkdir()
    own = text_features(cells, configs, cohorts / "train", cache, progress, run_dir)
    assert set(own) == {notes.cell_id, staged.cell_id} and own[notes.cell_id]["discharge"] is own[staged.cell_id]["discharge"]
    after_stages = {**own, staged.cell_id: {**own[staged.cell_id], "discharge": (np.array(["x"], dtype=object), np.zeros((1, 8), np.float32))}}
    context = types.SimpleNamespace(base_configs=configs, features=after_stages)

    extra = external_features(cells, context, own, {"other": str(cohorts / "other")}, cache, progress, run_dir)
    assert set(extra) == {notes.cell_id}  # the staged cell reads its stage's embeddings: nothing to swap in
    ids, matrix = extra[notes.cell_id]["ext_other"]["discharge"]
    table, manifest = read_stays(cohorts / "other", columns=["stay_id", "present_discharge", "discharge_text"])
    frame = table.to_pandas().query("present_discharge").sort_values("stay_id")
    assert list(ids) == frame["stay_id"].tolist() and matrix.shape == (len(frame), 384)
    with torch.inference_mode():  # the same frozen encoder, run here on three of the cohort's notes
        direct = _frozen_encoder(DEFAULT_TEXT_MODEL, MAX_LENGTH).pooled(frame["discharge_text"].tolist()[:3]).numpy()
    np.testing.assert_allclose(matrix[:3], direct, rtol=1e-4, atol=1e-5)
    assert not np.allclose(matrix[:3], own[notes.cell_id]["discharge"][1][:3])  # not the training cohort's (same stay ids)

    entry = entry_dir(cache, text_model_id(DEFAULT_TEXT_MODEL, None, MAX_LENGTH), manifest.content_hash, "discharge")
    assert json.loads((entry / "meta.json").read_text())["data_hash"] == manifest.content_hash
    record = json.loads((run_dir / "embeddings.json").read_text())
    assert [(r.get("cohort"), r["modality"]) for r in record] == [(None, "discharge"), ("ext_other", "discharge")]
    assert record[1]["forward_passes"] > 0 and record[1]["stays"] == len(frame)
    assert any(line.startswith("[embed ext_other] discharge notes") for line in progress.lines)

    _frozen_encoder.cache_clear()  # a later run: only the files on disk
    again = external_features(cells, context, own, {"other": str(cohorts / "other")}, cache, progress, run_dir)
    np.testing.assert_array_equal(again[notes.cell_id]["ext_other"]["discharge"][1], matrix)
    record = json.loads((run_dir / "embeddings.json").read_text())
    assert [(r.get("cohort"), r["forward_passes"] > 0) for r in record] == [(None, True), ("ext_other", False)]  # read from the cache
    text_embeddings(cohorts / "other", "discharge", max_length=MAX_LENGTH, cache_root=cache)
    assert last_forward_passes() == 0


def test_a_cohort_without_notes_gets_an_empty_matrix_and_experts_are_not_run_for_it(cohorts, tmp_path):
    import pyarrow.parquet as pq

    from sweeper.data.stays import shard_paths

    cells, configs = _cells()
    notes = cells[0]
    medmix = Cell("ihm", "medmix", ("discharge",))
    configs = {**configs, medmix.cell_id: {"experts": {"discharge": ["tfidf"]}}}
    frame, manifest = generate(SynthConfig(n_stays=40, seed=6, presence={**SynthConfig().presence, "discharge": 0.0}))
    write_stays(frame, manifest, tmp_path / "nonotes", split_seed=0)
    present = sum(pq.read_table(p, columns=["present_discharge"])["present_discharge"].to_numpy().sum()
                  for p in shard_paths(tmp_path / "nonotes", read_manifest(tmp_path / "nonotes")))
    assert present == 0
    own = {notes.cell_id: {"discharge": ("ids", "matrix")}, medmix.cell_id: {"expert:discharge:tfidf": ("ids", "matrix")}}
    context = types.SimpleNamespace(base_configs=configs, features=own)
    extra = external_features([notes, medmix], context, own, {"nonotes": str(tmp_path / "nonotes")}, tmp_path / "cache", Lines(), tmp_path)
    assert set(extra) == {notes.cell_id}  # medmix's experts are fitted on a training split: not run on the cohort
    ids, matrix = extra[notes.cell_id]["ext_nonotes"]["discharge"]
    assert len(ids) == 0 and matrix.shape == (0, 384)


def test_only_a_final_trial_of_the_cell_gets_its_external_embeddings():
    from sweeper.engine.trial import TrialContext, loop_config_of

    cells, configs = _cells()
    notes, staged, _ = cells
    theirs = {"ext_other": {"discharge": ("ids", "matrix")}}
    context = TrialContext(datasets={}, manifest=None, data_hash="h", storage_path="s", cells={c.cell_id: c for c in cells},
                           base_configs=configs, max_epochs=1, patience=1, cpus_per_worker=1, gpus_per_worker=0, workers=1,
                           extra_sets={"ext_other": {"external": True}}, extra_features={notes.cell_id: theirs})
    final = loop_config_of({"run": {"cell": notes.cell_id, "seed": 1, "final": True, "params": {}}}, context)
    assert final["extra_features"] == theirs and final["extra_sets"] == {"ext_other": {"external": True}}
    assert loop_config_of({"cell": notes.cell_id, "seed": 0}, context)["extra_features"] == {}  # a tune trial scores no extra set
    assert loop_config_of({"run": {"cell": staged.cell_id, "seed": 1, "final": True, "params": {}}}, context)["extra_features"] == {}
