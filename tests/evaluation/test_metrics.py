"""compute_metrics agrees with sklearn and handles unknown labels and one-class labels."""
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    hamming_loss,
    roc_auc_score,
)

from sweeper.evaluation.metrics import METRICS, MetricsError, compute_metrics


def _predictions(rng, shape, rate=0.3):
    labels = (rng.random(shape) < rate).astype(float)
    scores = np.clip(0.35 * labels + 0.65 * rng.random(shape), 0, 1)
    return labels, scores


def test_binary_metrics_equal_sklearn():
    labels, scores = _predictions(np.random.default_rng(0), 400)
    got = compute_metrics(labels, scores, threshold=0.4)
    predicted = scores >= 0.4
    assert set(got) == set(METRICS)
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert got["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert got["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert got["brier"] == pytest.approx(brier_score_loss(labels, scores))


def test_multi_label_metrics_equal_sklearn_macro_averages():
    labels, scores = _predictions(np.random.default_rng(1), (300, 25), rate=0.2)
    got = compute_metrics(labels, scores)
    predicted = (scores >= 0.5).astype(int)
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores, average="macro"))
    assert got["auprc"] == pytest.approx(average_precision_score(labels, scores, average="macro"))
    assert got["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    # Without unknown labels, the mean of per-label accuracies is 1 - the Hamming loss.
    assert got["accuracy"] == pytest.approx(1 - hamming_loss(labels, predicted))
    per_label_brier = [brier_score_loss(labels[:, k], scores[:, k]) for k in range(25)]
    assert got["brier"] == pytest.approx(np.mean(per_label_brier))


def test_perfect_scores_give_auroc_one_and_brier_zero():
    labels = np.array([0, 1, 1, 0, 1, 0], dtype=float)
    got = compute_metrics(labels, labels.copy())
    assert got["auroc"] == 1.0
    assert got["auprc"] == 1.0
    assert got["brier"] == 0.0
    assert got["accuracy"] == 1.0
    assert got["macro_f1"] == 1.0


def test_unknown_labels_are_dropped_per_label():
    rng = np.random.default_rng(2)
    labels, scores = _predictions(rng, (200, 3))
    unknown = rng.random((200, 3)) < 0.25
    with_nan = np.where(unknown, np.nan, labels)
    got = compute_metrics(with_nan, scores)
    expected = [compute_metrics(labels[~unknown[:, k], k], scores[~unknown[:, k], k]) for k in range(3)]
    assert got["auroc"] == pytest.approx(np.mean([e["auroc"] for e in expected]))
    assert got["accuracy"] == pytest.approx(np.mean([e["accuracy"] for e in expected]))
    assert got["brier"] == pytest.approx(np.mean([e["brier"] for e in expected]))

    binary_nan = with_nan[:, 0]
    keep = ~np.isnan(binary_nan)
    assert compute_metrics(binary_nan, scores[:, 0]) == compute_metrics(labels[keep, 0], scores[keep, 0])


def test_one_class_label_is_skipped_in_macro_auroc():
    labels, scores = _predictions(np.random.default_rng(3), (150, 4))
    labels[:, 2] = 0.0  # no positives: AUROC undefined for this label
    got = compute_metrics(labels, scores)
    others = [0, 1, 3]
    assert got["auroc"] == pytest.approx(roc_auc_score(labels[:, others], scores[:, others]))
    assert got["auprc"] == pytest.approx(average_precision_score(labels[:, others], scores[:, others]))
    assert np.isfinite(got["brier"])


def test_no_label_with_both_classes_gives_nan_auroc():
    got = compute_metrics(np.zeros((10, 2)), np.full((10, 2), 0.3))
    assert np.isnan(got["auroc"]) and np.isnan(got["auprc"])
    assert got["accuracy"] == 1.0


def test_metrics_subset_is_returned_alone():
    labels, scores = _predictions(np.random.default_rng(4), 50)
    assert set(compute_metrics(labels, scores, metrics=("auroc",))) == {"auroc"}


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.zeros(5), np.zeros(4), "same shape"),
        (np.zeros(3), np.array([0.1, 1.5, 0.2]), "probabilities"),
        (np.array([0.0, 2.0, 1.0]), np.full(3, 0.5), "0, 1 or NaN"),
    ],
)
def test_bad_inputs_raise_readable_errors(labels, scores, message):
    with pytest.raises(MetricsError, match=message):
        compute_metrics(labels, scores)


def test_unknown_metric_name_raises():
    with pytest.raises(MetricsError, match="unknown metric"):
        compute_metrics(np.array([0.0, 1.0]), np.array([0.2, 0.8]), metrics=("auc",))
