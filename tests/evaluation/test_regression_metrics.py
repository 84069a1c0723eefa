"""The los task's regression metrics (sweeper/evaluation/regression.py) equal sklearn's and scipy's,
on the predictions as given (weights 1) and on bootstrap resamples (weights = draw counts)."""
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error

from sweeper.evaluation.metrics import MetricsError, compute_metrics, task_metrics, weighted_metrics
from sweeper.evaluation.regression import REGRESSION_METRICS


def _los(rng, n, ties=False):
    hours = rng.lognormal(np.log(60), 0.6, n)
    if ties:  # whole hours and a coarse prediction: many tied values on both sides
        hours = np.round(hours / 12) * 12
    labels = np.log1p(hours)
    predictions = labels + rng.normal(0, 0.4, n)
    if ties:
        predictions = np.round(predictions, 1)
    return labels, predictions


def _reference(labels, predictions):
    hours, predicted = np.expm1(labels), np.expm1(predictions)
    return {"mse": mean_squared_error(hours, predicted), "mae": mean_absolute_error(hours, predicted),
            "pearson": pearsonr(hours, predicted)[0], "spearman": spearmanr(labels, predictions)[0]}


@pytest.mark.parametrize("ties", [False, True])
def test_regression_metrics_equal_sklearn_and_scipy(ties):
    labels, predictions = _los(np.random.default_rng(0), 300, ties)
    got = compute_metrics(labels, predictions, metrics=task_metrics("los"))
    assert set(got) == set(REGRESSION_METRICS) and task_metrics("los") == REGRESSION_METRICS
    for name, value in _reference(labels, predictions).items():
        assert got[name] == pytest.approx(value, rel=1e-10), name


def test_weighted_resamples_equal_the_metrics_of_the_resampled_arrays():
    rng = np.random.default_rng(1)
    labels, predictions = _los(rng, 120, ties=True)
    draws = rng.integers(0, 120, size=(6, 120))
    weights = np.stack([np.bincount(d, minlength=120) for d in draws]).astype(float)
    got = weighted_metrics(labels, predictions, weights, metrics=REGRESSION_METRICS)
    for r, drawn in enumerate(draws):
        expected = _reference(labels[drawn], predictions[drawn])
        for name in REGRESSION_METRICS:
            assert got[name][r] == pytest.approx(expected[name], rel=1e-10), (name, r)


def test_unknown_lengths_of_stay_are_dropped():
    labels, predictions = _los(np.random.default_rng(2), 100)
    with_unknown = labels.copy()
    with_unknown[::7] = np.nan
    got = compute_metrics(with_unknown, predictions, metrics=REGRESSION_METRICS)
    keep = ~np.isnan(with_unknown)
    expected = compute_metrics(labels[keep], predictions[keep], metrics=REGRESSION_METRICS)
    assert got == pytest.approx(expected)


def test_constant_predictions_have_no_correlation_and_bad_inputs_raise():
    labels = np.log1p(np.array([50.0, 60.0, 70.0, 80.0]))
    got = compute_metrics(labels, np.full(4, np.log1p(65.0)), metrics=REGRESSION_METRICS)
    assert np.isnan(got["pearson"]) and np.isnan(got["spearman"]) and got["mae"] == pytest.approx(10.0)
    with pytest.raises(MetricsError, match="finite"):
        compute_metrics(labels, np.array([1.0, np.nan, 1.0, 1.0]), metrics=REGRESSION_METRICS)
    with pytest.raises(MetricsError, match=r"\[n\]"):
        compute_metrics(labels[:, None], labels[:, None], metrics=REGRESSION_METRICS)
    with pytest.raises(MetricsError, match="mix"):
        compute_metrics(labels, labels, metrics=("mae", "auroc"))
