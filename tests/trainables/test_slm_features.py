"""Multitask labels with unknowns, the slm.sources features, the per-label XGBoost baseline and the
per-task metrics (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from sweeper.data.loading import StaysCollate
from sweeper.data.multitask import hidden_entries, label_names, multitask_labels
from sweeper.data.schema import read_manifest
from sweeper.evaluation.per_task import per_task_table
from trainables.slm.baseline import PerLabelXGBoost
from trainables.slm.features import STATISTICS, all_series_statistics, cxr_weights, series_statistics


def test_series_statistics_by_hand():
    values, times = [3.0, 1.0, 4.0, 1.0, 5.0], [0.0, 1.0, 2.0, 3.0, 4.0]
    stats = dict(zip(STATISTICS, series_statistics(values[::-1], times[::-1])))  # any order: sorted by time
    d = np.diff(values)  # -2, 3, -3, 4
    assert stats["mean"] == pytest.approx(2.8) and stats["variance"] == pytest.approx(np.var(values))
    assert (stats["min"], stats["max"]) == (1.0, 5.0)
    assert stats["mean_diff"] == pytest.approx(0.5) and stats["mean_abs_diff"] == pytest.approx(3.0)
    assert stats["max_diff"] == 4.0 and stats["sum_abs_diff"] == 12.0 and stats["last_minus_first"] == 2.0
    assert stats["peaks_above_median"] == 1  # 4.0 at t=2 (3.0 is not a peak: first point; median 3)
    assert stats["trend"] == pytest.approx(np.polyfit(times, values, 1)[0])
    assert d.sum() == stats["last_minus_first"]
    assert not series_statistics([], []).any() and series_statistics([2.0], [1.0])[STATISTICS.index("trend")] == 0


def test_all_series_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(3)
    n = 3000
    keys = rng.integers(0, 400, n) * 7  # some series with one observation, some with none
    values, times = rng.normal(size=n), rng.integers(0, 48, n).astype(float)  # tied times included
    values[::97] = np.nan
    found, stats = all_series_statistics(keys, values, times)
    for key, row in zip(found, stats):
        mine = (keys == key) & np.isfinite(values)
        np.testing.assert_allclose(row, series_statistics(values[mine], times[mine]), rtol=1e-9, atol=1e-9)
    assert set(found) == set(keys[np.isfinite(values)])


def test_cxr_weights_normalised_and_single_image_falls_back_to_it():
    assert cxr_weights([2.0, 4.0, 10.0]).tolist() == pytest.approx([0.0, 0.2, 0.8])  # (t - 2) / 10, already summing to 1
    assert cxr_weights([1.0, 3.0]).tolist() == pytest.approx([0.0, 1.0])
    assert cxr_weights([5.0]).tolist() == [1.0]
    assert sorted(cxr_weights([3.0, 3.0]).tolist()) == [0.0, 1.0]  # taken at once: one image, not the zero vector
    assert cxr_weights([-2.0, 4.0, 10.0]).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])  # (t + 2) / 10 = 0, 0.6, 1.2, normalised
    assert cxr_weights([10.0, 4.0, 7.0]).tolist() == pytest.approx([2 / 3, 0.0, 1 / 3])  # any order: (t - 4) / 10 = 0.6, 0, 0.3


def test_multitask_labels_known_unknown_and_hidden(synth_stays):
    manifest = read_manifest(synth_stays)
    batch = {
        "stay_id": np.array(["a", "b", "c"]), "label_ihm": np.array([1.0, 0.0, None], dtype=object),
        "label_los_hours": np.array([200.0, 100.0, np.nan]), "label_phenotypes": np.array([[1.0] * 25, None, [0.0] * 25], dtype=object),
    }
    labels = multitask_labels(batch, manifest)
    assert label_names(manifest)[:2] == ["ihm", "los_gt_7d"] and labels.shape == (3, 27)
    assert labels[0, :3].tolist() == [1.0, 1.0, 1.0] and labels[1, :2].tolist() == [0.0, 0.0]
    assert np.isnan(labels[1, 2:]).all() and np.isnan(labels[2, :2]).all() and (labels[2, 2:] == 0).all()
    ids = np.array([str(i) for i in range(2000)])
    hidden = hidden_entries(ids, 27, 0.3)
    assert abs(hidden.mean() - 0.3) < 0.01 and (hidden_entries(ids[::-1], 27, 0.3) == hidden[::-1]).all()  # by stay, not by position
    assert (hidden_entries(ids, 27, 0.3, seed=1) != hidden).any()


def test_sources_layout_and_hidden_share(synth_stays, in_memory_session):
    from sweeper.data.loading import collate_all

    manifest = read_manifest(synth_stays)
    collate = StaysCollate(manifest, ["cxr", "radiology", "timeseries", "demographics"], "multitask", inputs="slm.sources", hidden_labels=0.3)
    layout = collate.input_shapes()["sources"]
    assert list(layout) == ["chart", "lab", "cxr_latest", "cxr_mean", "radiology", "demographics"]
    assert layout["lab"][1] - layout["lab"][0] == 2 * len(STATISTICS)  # glucose and pH are the synthetic labs
    data = collate_all(in_memory_session(synth_stays).dataset("val").iter_batches(256), collate)
    assert data["features"].shape[1] == layout["demographics"][1] and np.isfinite(data["features"].numpy()).all()
    present = data["source_present"].numpy()
    assert (present[:, 2] == data["present"].numpy()[:, collate.modalities.index("cxr")]).all()  # cxr sources iff an image
    known = ~np.isnan(data["label"].numpy())
    assert 0.6 < known.mean() < 0.8  # ~30 % hidden (IHM and LOS are known for every synthetic stay)


def test_per_label_xgboost_ignores_unknown_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] > 0.3)], axis=1).astype(np.float32)
    y[::3, 0] = np.nan  # a third of label 0 unknown...
    x_noise = x.copy()
    x_noise[::3] = rng.normal(size=x[::3].shape) * 100  # ...with features that would change the trees if used
    config = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.3, "subsample": 1.0, "colsample_bytree": 1.0,
              "min_child_weight": 1.0, "reg_lambda": 1.0, "early_stopping_rounds": 5}
    a = PerLabelXGBoost(config, 2, 0).fit(x, y)
    b = PerLabelXGBoost(config, 2, 0).fit(x_noise, y)
    only_known = PerLabelXGBoost(config, 1, 0).fit(x[~np.isnan(y[:, 0])], y[~np.isnan(y[:, 0]), :1])
    probe = rng.normal(size=(50, 5)).astype(np.float32)
    assert a.fitted_rows == [200, 300]
    np.testing.assert_allclose(a.predict_proba(probe)[:, 0], b.predict_proba(probe)[:, 0])
    np.testing.assert_allclose(a.predict_proba(probe)[:, 0], only_known.predict_proba(probe)[:, 1])
    assert not np.allclose(a.predict_proba(probe)[:, 1], b.predict_proba(probe)[:, 1])  # label 1 uses every row


def test_per_task_table_matches_sklearn():
    from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(1)
    labels = (rng.random((200, 2)) < 0.3).astype(float)
    labels[rng.random((200, 2)) < 0.25] = np.nan
    scores = [np.clip(np.nan_to_num(labels, nan=0.5) * 0.4 + rng.random((200, 2)) * 0.6, 0, 1) for _ in range(2)]
    rows = per_task_table(labels, scores, ["ihm", "los_gt_7d"], threshold=0.45, n_resamples=200)
    for k, row in enumerate(rows):
        known = ~np.isnan(labels[:, k])
        y = labels[known, k]
        expect = {
            "precision": np.mean([precision_score(y, s[known, k] >= 0.45, zero_division=0) for s in scores]),
            "recall": np.mean([recall_score(y, s[known, k] >= 0.45) for s in scores]),
            "auroc": np.mean([roc_auc_score(y, s[known, k]) for s in scores]),
            "auprc": np.mean([average_precision_score(y, s[known, k]) for s in scores]),
        }
        assert row["n_known"] == known.sum()
        for metric, value in expect.items():
            assert row[metric] == pytest.approx(value, abs=1e-12)
            assert row[f"{metric}_low"] <= value <= row[f"{metric}_high"]


def test_per_task_analysis_of_a_multitask_cell(synth_stays):
    from sweeper.engine.analyses import per_task_analysis
    from sweeper.evaluation.aggregate import SeedPredictions
    from sweeper.plan.spec import Cell

    rng = np.random.default_rng(2)
    labels = (rng.random((60, 27)) < 0.3).astype(float)
    labels[rng.random((60, 27)) < 0.3] = np.nan
    ids = np.array([f"s{i}" for i in range(60)])
    seeds = [SeedPredictions(k, ids, labels, rng.random((60, 27))) for k in range(2)]
    cells = [Cell("multitask", "slm.xgboost", ("timeseries", "demographics"), (("hidden_labels", 0.3),)),
             Cell("ihm", "slm.xgboost", ("timeseries", "demographics"))]
    per_cell = {cells[0].cell_id: seeds, cells[1].cell_id: [SeedPredictions(0, ids, labels[:, 0], rng.random(60))]}
    [analysis] = per_task_analysis(cells, per_cell, synth_stays, {"slm.xgboost": 0.3}, n_resamples=100)
    table = analysis.table
    assert len(table) == 27 and set(table["cell_id"]) == {cells[0].cell_id}  # the ihm cell has no per-task table
    assert table["label"].tolist()[:2] == ["ihm", "los_gt_7d"] and (table["threshold"] == 0.3).all()
    assert (table["n_known"] == (~np.isnan(labels)).sum(axis=0)).all() and (table["hidden_labels"] == 0.3).all()
    assert list(analysis.summary.columns) == ["n_known", "n_positive", "precision", "recall", "auroc", "auprc"]


# ------------------------------------------------- the note and CXR embeddings the SLM features read

WORDS = "patient heart lung fever cough pain blood chest normal acute".split()  # one word piece each


def _long_note(n_pieces: int, offset: int = 0) -> str:
    return " ".join(WORDS[(i + offset) % len(WORDS)] for i in range(n_pieces))


@pytest.fixture(scope="module")
def minilm():
    from sweeper.encode.embeddings import _frozen_encoder
    from sweeper.encode.text import DEFAULT_TEXT_MODEL

    # Truncating at the chunk length: one chunk by hand is one pooled() call. The embedding cache's
    # own instance (text_embeddings(max_length=512) below loads no second copy).
    return _frozen_encoder(DEFAULT_TEXT_MODEL, 512)


@pytest.fixture(scope="module")
def media_stays(tmp_path_factory):
    """40 synthetic stays; two present discharge notes made longer than one 512-token chunk, and one
    stay with three chest X-rays (the cohort has at most two)."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    frame, manifest = generate(SynthConfig(n_stays=40, seed=4))
    long_rows = frame.index[frame["present_discharge"]][:2]
    frame.loc[long_rows[0], "discharge_text"] = _long_note(1100)  # 510 + 510 + 80 word pieces: three chunks
    frame.loc[long_rows[1], "discharge_text"] = _long_note(600, 3) + " " + str(frame.loc[long_rows[1], "discharge_text"])
    two = [r for r in frame.index if frame.loc[r, "present_cxr"] and len(frame.loc[r, "cxr_images"]) == 2]
    images, times = list(frame.loc[two[0], "cxr_images"]), list(frame.loc[two[0], "cxr_times"])
    frame.at[two[0], "cxr_images"] = [images[0], frame.loc[two[1], "cxr_images"][0], images[1]]  # another stay's image in between
    frame.at[two[0], "cxr_times"] = np.asarray([times[0], (times[0] + times[1]) / 2, times[1]], np.float32)
    out = tmp_path_factory.mktemp("slm-media") / "stays"
    write_stays(frame, manifest, out, split_seed=0)
    return out, [str(frame.loc[r, "stay_id"]) for r in long_rows]


def test_a_long_note_is_the_mean_of_its_chunks_and_a_short_one_is_unchanged(minilm):
    import torch

    assert minilm.chunk_length == 512 == minilm.tokenizer.model_max_length  # 510 word pieces + [CLS] and [SEP]
    first, second, short = _long_note(510), _long_note(510, 5), "mild left pleural effusion, no pneumothorax"
    assert len(minilm.tokenizer(first, add_special_tokens=False)["input_ids"]) == 510
    with torch.inference_mode():
        chunked = minilm.pooled_chunks([first + " " + second + " " + short, short, first + " " + short, ""], batch_size=2)
        by_hand = [minilm.pooled([text])[0] for text in (first, second, short, "")]
        truncated = minilm.pooled([first + " " + second + " " + short])[0]
    torch.testing.assert_close(chunked[0], (by_hand[0] + by_hand[1] + by_hand[2]) / 3, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked[2], (by_hand[0] + by_hand[2]) / 2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked[1], by_hand[2], atol=1e-5, rtol=1e-4)  # one chunk: what truncating gave
    torch.testing.assert_close(chunked[3], by_hand[3], atol=1e-5, rtol=1e-4)  # an empty note stays the empty embedding
    assert (chunked[0] - truncated).abs().max() > 0.05  # truncation reads the first chunk only


def test_chunked_note_embeddings_are_cached_under_their_own_key(media_stays, minilm, tmp_path):
    import torch

    from sweeper.data.stays import read_stays
    from sweeper.encode.embeddings import last_forward_passes, text_embeddings
    from sweeper.encode.text import DEFAULT_TEXT_MODEL, text_model_id

    stays, long_ids = media_stays
    chunked_id = text_model_id(DEFAULT_TEXT_MODEL, None, 128, chunks=True)
    assert chunked_id not in {text_model_id(DEFAULT_TEXT_MODEL, None, n) for n in (128, 256, 512)}
    assert chunked_id == text_model_id(DEFAULT_TEXT_MODEL, None, 32, chunks=True)  # the chunk length is the model's, not max_length
    ids, vectors = text_embeddings(stays, "discharge", max_length=512, cache_root=tmp_path, chunks=True)
    assert last_forward_passes() > 0
    again_ids, again = text_embeddings(stays, "discharge", max_length=64, cache_root=tmp_path, chunks=True)
    assert last_forward_passes() == 0 and (again_ids == ids).all() and np.array_equal(again, vectors)

    table, _ = read_stays(stays, columns=["stay_id", "discharge_text"])
    texts = dict(zip(table["stay_id"].to_pylist(), table["discharge_text"].to_pylist()))
    where = {stay: i for i, stay in enumerate(ids)}
    with torch.inference_mode():
        for stay in long_ids:  # longer than a chunk: the mean of its chunks, cut by hand from its word pieces
            pieces = minilm.tokenizer(texts[stay], add_special_tokens=False)["input_ids"]
            chunks = [minilm.tokenizer.decode(pieces[i:i + 510]) for i in range(0, len(pieces), 510)]
            assert len(chunks) >= 2
            by_hand = torch.stack([minilm.pooled([c])[0] for c in chunks]).mean(0).numpy()
            np.testing.assert_allclose(vectors[where[stay]], by_hand, atol=1e-4)
            assert np.abs(minilm.pooled([texts[stay]])[0].numpy() - vectors[where[stay]]).max() > 0.02  # truncating differs
        for stay in [s for s in ids if s not in long_ids][:3]:  # within one chunk: the whole note, as pooled() reads it
            np.testing.assert_allclose(vectors[where[stay]], minilm.pooled([texts[stay]])[0].numpy(), atol=1e-5)

    # Radiology notes fit in one chunk: the chunked entry is a separate cache entry with the same vectors.
    radiology_ids, chunked = text_embeddings(stays, "radiology", max_length=512, cache_root=tmp_path, chunks=True)
    truncated_ids, truncated = text_embeddings(stays, "radiology", max_length=512, cache_root=tmp_path)
    assert last_forward_passes() > 0 and (radiology_ids == truncated_ids).all()
    np.testing.assert_allclose(chunked, truncated, atol=1e-5)
    assert {p.name.rsplit("-", 1)[0] for p in tmp_path.iterdir()} == {chunked_id, text_model_id(DEFAULT_TEXT_MODEL, None, 512)}


def _effnet_by_hand(pngs) -> np.ndarray:
    """Images through EfficientNet-Lite0 as the MedMIX expert prepares them: grey [0, 1], 128 px, [-1, 1], 3 channels."""
    import io

    import torch
    import torch.nn.functional as F
    from PIL import Image

    from sweeper.encode.extractors import _effnet_model

    x = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("L"), np.float32) / 255.0 for p in pngs]))[:, None]
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False) * 2.0 - 1.0
    with torch.inference_mode():
        return _effnet_model("lite0").extract_features(x.expand(-1, 3, -1, -1)).mean(dim=(2, 3)).numpy()


def test_cxr_sources_from_pretrained_effnet_latest_and_time_weighted_mean(media_stays, tmp_path):
    from sweeper.data.loading import StaysCollate
    from sweeper.data.stays import read_stays
    from sweeper.encode.cxr_series import cxr_series_embeddings, feature_key
    from sweeper.encode.embeddings import last_forward_passes
    from sweeper.encode.experts import expert_embeddings

    stays, _ = media_stays
    ids, matrix = cxr_series_embeddings(stays, "effnet_lite0", cache_root=tmp_path)
    assert last_forward_passes() > 0 and matrix.shape == (len(ids), 2 * 1280)
    table, _ = read_stays(stays, columns=["stay_id", "present_cxr", "cxr_images", "cxr_times"])
    rows = {r["stay_id"]: r for r in table.to_pylist() if r["present_cxr"]}
    assert list(ids) == sorted(rows)
    counts = {stay: len(rows[stay]["cxr_images"]) for stay in ids}
    assert {1, 2, 3} <= set(counts.values())  # stays with one image and with several
    checked = [s for n in (1, 2, 3) for s in [s for s in ids if counts[s] == n][:3]]  # by hand: 3 stays of each count
    by_hand = _effnet_by_hand([p for stay in checked for p in rows[stay]["cxr_images"]])
    starts = np.cumsum([0] + [counts[stay] for stay in checked])
    for k, stay in enumerate(checked):
        i = list(ids).index(stay)
        pngs, times = rows[stay]["cxr_images"], np.asarray(rows[stay]["cxr_times"], np.float64)
        per_image = by_hand[starts[k]:starts[k + 1]]
        w = (times - times.min()) / times.max()  # METHODS.md §4, then normalised; one image: itself
        expect_mean = per_image[-1] if len(pngs) == 1 else (w / w.sum()) @ per_image
        np.testing.assert_allclose(matrix[i, :1280], per_image[int(np.argmax(times))], atol=1e-4)
        np.testing.assert_allclose(matrix[i, 1280:], expect_mean, atol=1e-4)
        # The earliest image always weighs 0, so two images give the latest; three or more do not.
        assert np.allclose(matrix[i, :1280], matrix[i, 1280:], atol=1e-4) == (len(pngs) <= 2)
    # One implementation: the latest-image half is the MedMIX expert's embedding of the stay.
    expert_ids, expert_matrix = expert_embeddings(stays, "cxr", "effnet_lite0", cache_root=tmp_path)
    assert (expert_ids == ids).all()
    np.testing.assert_allclose(matrix[:, :1280], expert_matrix, atol=1e-5)

    again_ids, again = cxr_series_embeddings(stays, "effnet_lite0", cache_root=tmp_path)
    assert last_forward_passes() == 0 and np.array_equal(again, matrix)

    # The slm.sources input reads them as its two CXR sources.
    manifest = read_manifest(stays)
    collate = StaysCollate(manifest, ["cxr", "timeseries"], "multitask", inputs="slm.sources", features={feature_key("effnet_lite0"): (ids, matrix)})
    layout = collate.input_shapes()["sources"]
    assert layout["cxr_latest"][1] - layout["cxr_latest"][0] == 1280 == layout["cxr_mean"][1] - layout["cxr_mean"][0]
    full, _ = read_stays(stays, "train")
    batch = {name: full[name].to_numpy(zero_copy_only=False) for name in full.column_names}
    built = collate(batch)
    features, present = built["features"].numpy(), built["present"].numpy()[:, 0]
    where = np.searchsorted(ids, built["stay_id"][present])
    np.testing.assert_array_equal(features[present, slice(*layout["cxr_latest"])], matrix[where, :1280])
    np.testing.assert_array_equal(features[present, slice(*layout["cxr_mean"])], matrix[where, 1280:])
    assert not features[~present, layout["cxr_latest"][0]:layout["cxr_mean"][1]].any()
    assert (built["source_present"].numpy()[:, list(layout).index("cxr_mean")] == present).all()


def test_pixel_cxr_sources_use_the_same_weights():
    """``cxr_encoder: pixels``: each image average-pooled, the same latest and time-weighted mean."""
    import io

    from PIL import Image

    from trainables.slm.features import _cxr_sources, image_embedding

    pngs = []
    for level in (30, 120, 240):
        buffer = io.BytesIO()
        Image.fromarray(np.full((16, 16), level, np.uint8), mode="L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    batch = {"cxr_images": np.array([pngs, pngs[:1], None], dtype=object), "cxr_times": np.array([[4.0, 10.0, 7.0], [3.0], None], dtype=object)}
    latest, mean = _cxr_sources(batch, np.array([True, True, False]))
    each = np.stack([image_embedding(p) for p in pngs])
    np.testing.assert_allclose(latest[0], each[1])  # taken at t = 10
    np.testing.assert_allclose(mean[0], (0.0 * each[0] + 0.6 * each[1] + 0.3 * each[2]) / 0.9, atol=1e-6)  # (t - 4) / 10
    np.testing.assert_allclose(mean[1], each[0])  # one image: itself
    np.testing.assert_allclose(latest[1], each[0])
    assert not latest[2].any() and not mean[2].any()


def test_engine_hands_slm_cells_their_cxr_expert_and_chunked_notes(media_stays, tmp_path, monkeypatch):
    import json
    import types

    import ray

    from sweeper.engine.stages import text_features
    from sweeper.plan.spec import Cell
    from trainables import registry

    monkeypatch.setattr(ray, "put", lambda value: value)  # no Ray: a reference is its value
    for method in ("slm.projector", "slm.xgboost"):  # the paper's encoders unless a spec says otherwise
        assert {k: registry.get(method).defaults[k] for k in ("cxr_encoder", "text_chunks")} == {"cxr_encoder": "effnet_lite0", "text_chunks": True}
    stays, _ = media_stays
    cnn, pixels = Cell("multitask", "slm.xgboost", ("cxr", "radiology", "timeseries")), Cell("multitask", "slm.projector", ("cxr", "radiology"))
    configs = {
        cnn.cell_id: {**registry.get("slm.xgboost").defaults, "text_encoder": "all-MiniLM-L6-v2", "cxr_encoder": "cnn"},
        pixels.cell_id: {**registry.get("slm.projector").defaults, "text_encoder": "all-MiniLM-L6-v2", "cxr_encoder": "pixels", "text_chunks": False},
    }
    out = text_features([cnn, pixels], configs, stays, tmp_path / "cache", types.SimpleNamespace(say=lambda text: None), tmp_path)
    assert set(out[cnn.cell_id]) == {"cxr_series:cnn", "radiology"} and set(out[pixels.cell_id]) == {"radiology"}
    ids, matrix = out[cnn.cell_id]["cxr_series:cnn"]
    assert matrix.shape == (len(ids), 2 * 8 * 16)  # the random CNN expert (width 16): mean and max of 64 maps, latest ‖ mean
    record = json.loads((tmp_path / "embeddings.json").read_text())
    assert [(r["encoder"], r.get("chunks")) for r in record] == [("cnn", None), ("all-MiniLM-L6-v2", True), ("all-MiniLM-L6-v2", False)]
    assert all(r["forward_passes"] > 0 for r in record)


def test_an_unknown_cxr_encoder_stops_the_run_before_it_starts():
    from sweeper.engine.stages import check_text_encoders
    from sweeper.errors import SweeperError
    from sweeper.plan.spec import load_spec

    spec, path = load_spec("slm", "paper")
    assert {options.fixed["cxr_encoder"] for options in spec.methods.values()} == {"effnet_lite0"}
    assert {options.fixed["text_chunks"] for options in spec.methods.values()} == {True}
    check_text_encoders(spec, path)
    spec.methods["slm.xgboost"].fixed["cxr_encoder"] = "densenet121"
    with pytest.raises(SweeperError, match=r"methods\.slm\.xgboost\.fixed\.cxr_encoder: 'densenet121' is not one of pixels, effnet_lite0, cnn"):
        check_text_encoders(spec, path)
