"""Every metric equals sklearn (ties, sample weights, binary, multi-label); unknown, one-class labels."""
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

from sweeper.evaluation.metrics import METRICS, MetricsError, compute_metrics, weighted_metrics


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


# --- Pinned to sklearn, to 1e-12: tied scores, sample weights, binary and multi-label ----------------

TOLERANCE = 1e-12
SKLEARN_METRICS = ("auroc", "auprc", "macro_f1", "accuracy", "brier")  # ace, bss: test_calibration_metrics.py


def _tied_predictions(rng, shape, rate=0.3):
    """Scores on a 0.05 grid, so most scores are shared by several stays of both classes."""
    labels, scores = _predictions(rng, shape, rate)
    return labels, np.round(scores * 20) / 20


def _sklearn_binary(labels, scores, threshold=0.5, sample_weight=None):
    predicted = (scores >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    weighted = {"sample_weight": sample_weight}
    return {
        "auroc": roc_auc_score(labels, scores, **weighted) if both_classes else np.nan,
        "auprc": average_precision_score(labels, scores, **weighted) if both_classes else np.nan,
        "macro_f1": f1_score(labels, predicted, average="macro", zero_division=0, **weighted),
        "accuracy": accuracy_score(labels, predicted, sample_weight=sample_weight),
        "brier": brier_score_loss(labels, scores, sample_weight=sample_weight, pos_label=1),
    }


def _sklearn_multi_label(labels, scores, threshold=0.5, sample_weight=None):
    """Per label on its known stays (positive-class F1), then the mean over defined labels."""
    per_label = []
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        y, s = labels[known, k], scores[known, k]
        w = None if sample_weight is None else sample_weight[known]
        row = _sklearn_binary(y, s, threshold, w)
        row["macro_f1"] = f1_score(y, (s >= threshold).astype(int), sample_weight=w, zero_division=0)
        per_label.append(row)
    return {name: np.nanmean([row[name] for row in per_label]) for name in SKLEARN_METRICS}


def _assert_equal_to_sklearn(got: dict, expected: dict):
    for name in SKLEARN_METRICS:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("threshold", [0.5, 0.35])
def test_binary_metrics_with_ties_equal_sklearn(threshold):
    labels, scores = _tied_predictions(np.random.default_rng(10), 500)
    assert np.unique(scores).size < 25  # heavy ties
    expected = _sklearn_binary(labels, scores, threshold)
    _assert_equal_to_sklearn(compute_metrics(labels, scores, threshold), expected)


def test_multi_label_metrics_with_ties_and_unknowns_equal_sklearn():
    rng = np.random.default_rng(11)
    labels, scores = _tied_predictions(rng, (300, 25), rate=0.2)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    _assert_equal_to_sklearn(compute_metrics(labels, scores), _sklearn_multi_label(labels, scores))


def test_weighted_binary_metrics_equal_sklearn_sample_weight():
    rng = np.random.default_rng(12)
    labels, scores = _tied_predictions(rng, 400)
    weights = rng.gamma(0.7, size=(20, 400)) + 1e-3  # positive real weights, very unequal
    got = weighted_metrics(labels, scores, weights, threshold=0.45)
    assert all(got[name].shape == (20,) for name in METRICS)
    for r in range(20):
        expected = _sklearn_binary(labels, scores, 0.45, sample_weight=weights[r])
        _assert_equal_to_sklearn({name: got[name][r] for name in SKLEARN_METRICS}, expected)


def test_weighted_multi_label_metrics_equal_sklearn_sample_weight():
    rng = np.random.default_rng(13)
    labels, scores = _tied_predictions(rng, (250, 6), rate=0.25)
    labels[rng.random(labels.shape) < 0.15] = np.nan
    labels[:, 4] = np.where(np.isnan(labels[:, 4]), np.nan, 0.0)  # one-class label: skipped in AUROC
    weights = rng.gamma(0.7, size=(10, 250)) + 1e-3
    got = weighted_metrics(labels, scores, weights)
    for r in range(10):
        expected = _sklearn_multi_label(labels, scores, sample_weight=weights[r])
        _assert_equal_to_sklearn({name: got[name][r] for name in SKLEARN_METRICS}, expected)


def test_binary_macro_f1_with_one_class_present_matches_sklearn():
    labels, scores = np.zeros(8), np.full(8, 0.2)  # only class 0, in labels and predictions
    got = compute_metrics(labels, scores)
    assert got["macro_f1"] == f1_score(labels, scores >= 0.5, average="macro") == 1.0
    assert np.isnan(got["auroc"]) and got["accuracy"] == 1.0


def test_zero_weight_everywhere_gives_nan_and_bad_weights_raise():
    labels, scores = _predictions(np.random.default_rng(14), 20)
    got = weighted_metrics(labels, scores, np.zeros((2, 20)))
    assert all(np.isnan(got[name]).all() for name in METRICS)
    with pytest.raises(MetricsError, match="weights"):
        weighted_metrics(labels, scores, np.ones((2, 19)))
    with pytest.raises(MetricsError, match="non-negative"):
        weighted_metrics(labels, scores, -np.ones((1, 20)))
