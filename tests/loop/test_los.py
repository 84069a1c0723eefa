"""Length of stay through the training loop without Ray: ``los`` (regression on log1p(hours)) and
``los_gt_7d`` (binary, unknown where the length of stay is)."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from sweeper.data.schema import read_manifest
from sweeper.loop.selection import selection
from sweeper.loop.training import run_training
from trainables import registry
from trainables.registry import task_loss


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """2 000 synthetic stays (~300 test stays: a Spearman estimate good to about ±0.05)."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("los") / "stays"
    frame, manifest = generate(SynthConfig(n_stays=2000, seed=0))
    write_stays(frame, manifest, out, split_seed=0)
    return out


def _config(stays, method, task, modalities, **extra):
    return {**registry.get(method).defaults, "method": method, "task": task, "seed": 0, "final": True, "modalities": modalities,
            "max_epochs": 8, "patience": 3, "batch_size": 64, "select_metric": "spearman", "manifest": read_manifest(stays), **extra}


def test_los_regression_reaches_spearman_above_0_3_on_test(cohort, in_memory_session):
    session = in_memory_session(cohort)
    run_training(_config(cohort, "picme.supervised", "los", ["discharge", "timeseries", "demographics"], d=32, lr=2e-3), session)
    final = session.reports[-1]
    assert final["done"] and {"test_mse", "test_mae", "test_pearson", "test_spearman"} <= set(final)
    assert "test_auroc" not in final and "val_objective" in final
    assert final["test_spearman"] > 0.3, final["test_spearman"]
    # The predictions file holds log1p(hours) on both sides; the scores are the model's outputs, no sigmoid.
    labels = np.array([row[0] for row in session.predictions["label"].to_pylist()])
    scores = np.array([row[0] for row in session.predictions["score"].to_pylist()])
    test = session.tables["test"].to_pandas().set_index("stay_id").loc[session.predictions["stay_id"].to_pylist()]
    np.testing.assert_allclose(labels, np.log1p(test["label_los_hours"].to_numpy()), rtol=1e-6)
    assert scores.max() > 1.0  # a log1p(hours) of stays of two days and more, not a probability
    assert spearmanr(labels, scores)[0] == pytest.approx(final["test_spearman"], abs=1e-5)


@pytest.mark.parametrize("method", ["classical.logreg", "classical.xgboost"])
def test_classical_baselines_regress_los(cohort, in_memory_session, method):
    session = in_memory_session(cohort)
    run_training(_config(cohort, method, "los", ["timeseries", "demographics"], select_metric="mae"), session)
    final = session.reports[-1]
    assert final["best_val_mae"] == final["val_mae"] and final["val_objective"] == -final["val_mae"]
    assert final["test_spearman"] > 0.2 and final["test_mae"] > 0


def test_los_gt_7d_trains_as_a_binary_task(cohort, in_memory_session):
    session = in_memory_session(cohort)
    run_training(_config(cohort, "picme.supervised", "los_gt_7d", ["discharge", "timeseries", "demographics"], d=32, lr=2e-3,
                         select_metric="auroc"), session)
    final = session.reports[-1]
    labels = np.array([row[0] for row in session.predictions["label"].to_pylist()])
    test = session.tables["test"].to_pandas().set_index("stay_id").loc[session.predictions["stay_id"].to_pylist()]
    np.testing.assert_array_equal(labels, (test["label_los_hours"].to_numpy() > 168).astype(float))
    assert final["test_auroc"] > 0.65 and {"test_ace", "test_bss"} <= set(final)


def test_los_labels_and_unknown_lengths_of_stay(cohort):
    from sweeper.data.loading import StaysCollate
    from sweeper.data.stays import read_stays

    table, _ = read_stays(cohort, "val")
    batch = {name: table[name].to_numpy(zero_copy_only=False)[:4] for name in table.column_names}
    batch["label_los_hours"] = np.array([100.0, 200.0, np.nan, 168.0])
    manifest = read_manifest(cohort)
    over = StaysCollate(manifest, ["demographics"], "los_gt_7d")(batch)["label"].numpy()
    np.testing.assert_array_equal(over, [0.0, 1.0, np.nan, 0.0])  # > 168 h; unknown stays unknown
    hours = StaysCollate(manifest, ["demographics"], "los")(batch)["label"].numpy()
    np.testing.assert_allclose(hours, np.log1p([100.0, 200.0, np.nan, 168.0]), rtol=1e-6)


def test_default_losses_leave_unknown_targets_out():
    mse = task_loss("los", torch.tensor([1.0, 2.0]))
    prediction, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, float("nan"), 5.0])
    assert mse(prediction, target).item() == pytest.approx(((1 - 2) ** 2 + (3 - 5) ** 2) / 2)
    labels = torch.tensor([1.0, 0.0, 0.0, float("nan")])
    weighted = task_loss("los_gt_7d", labels)
    assert weighted.loss.pos_weight.item() == pytest.approx(2.0)  # n_neg / n_pos over the known labels
    logits = torch.tensor([0.3, -0.2, 0.1, 5.0])
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0))(logits[:3], labels[:3])
    assert weighted(logits, labels).item() == pytest.approx(expected.item())
    assert weighted(logits[3:], labels[3:]).item() == 0.0  # nothing known in the batch


def test_selection_follows_the_metric_direction():
    assert selection({"select_metric": "mae"}) == ("mae", -1.0)
    assert selection({"select_metric": "spearman"}) == ("spearman", 1.0)
    assert selection({"select_metric": "auroc"}, by_loss=True) == ("loss", -1.0)
