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
