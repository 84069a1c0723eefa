"""ACE (15 equal-mass bins) and the Brier skill score against hand computations."""
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from sweeper.evaluation.metrics import ACE_BINS, compute_metrics, weighted_metrics


def _ace_by_hand(labels, scores, n_bins=ACE_BINS):
    """Sort by score, cut with numpy.array_split, mean |mean label - mean score| over non-empty bins."""
    order = np.argsort(scores, kind="stable")
    bins = [b for b in np.array_split(order, n_bins) if len(b)]
    return float(np.mean([abs(labels[b].mean() - scores[b].mean()) for b in bins]))


def test_ace_of_a_small_example_worked_by_hand():
    # 30 stays, 15 bins of 2: scores 0.05, 0.10, ..., 1.50 / 1.5 (ascending); labels alternate
    # 0, 1 within each bin, so every bin's mean label is 0.5.
    scores = np.arange(1, 31) / 30.0
    labels = np.tile([0.0, 1.0], 15)
    bin_score_means = (scores[0::2] + scores[1::2]) / 2
    expected = np.mean(np.abs(0.5 - bin_score_means))
    assert compute_metrics(labels, scores, metrics=("ace",))["ace"] == pytest.approx(expected, abs=1e-12)
    # A perfectly calibrated constant score at the prevalence: ACE 0.
    assert compute_metrics(labels, np.full(30, 0.5), metrics=("ace",))["ace"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [7, 44, 301])  # fewer stays than bins (empty bins), uneven and larger
def test_ace_equals_array_split_bins_with_ties(n):
    rng = np.random.default_rng(n)
    labels = (rng.random(n) < 0.3).astype(float)
    scores = np.round(np.clip(0.3 * labels + 0.6 * rng.random(n), 0, 1), 1)  # many ties
    assert compute_metrics(labels, scores, metrics=("ace",))["ace"] == pytest.approx(_ace_by_hand(labels, scores), abs=1e-12)


def test_weighted_ace_equals_ace_of_the_resampled_arrays():
    rng = np.random.default_rng(3)
    labels = (rng.random(97) < 0.25).astype(float)
    scores = np.round(np.clip(0.4 * labels + 0.5 * rng.random(97), 0, 1), 2)
    draws = rng.integers(0, 97, size=(8, 97))
    weights = np.stack([np.bincount(d, minlength=97) for d in draws]).astype(float)
    got = weighted_metrics(labels, scores, weights, metrics=("ace", "bss"))
    for r, drawn in enumerate(draws):
        # The resampled array in index order: a stay's copies sit together, as the weights lay them out.
        drawn = np.sort(drawn)
        assert got["ace"][r] == pytest.approx(_ace_by_hand(labels[drawn], scores[drawn]), abs=1e-12)
        p = labels[drawn].mean()
        assert got["bss"][r] == pytest.approx(1 - brier_score_loss(labels[drawn], scores[drawn]) / (p * (1 - p)), abs=1e-12)


def test_brier_skill_score_by_hand():
    labels = np.array([1.0, 0.0, 0.0, 0.0])
    scores = np.array([0.8, 0.1, 0.3, 0.0])
    brier = (0.2**2 + 0.1**2 + 0.3**2 + 0.0) / 4  # 0.035
    reference = 0.25 * 0.75  # Brier of always predicting the prevalence 0.25
    got = compute_metrics(labels, scores)
    assert got["brier"] == pytest.approx(brier) and got["bss"] == pytest.approx(1 - brier / reference)
    assert compute_metrics(labels, np.full(4, 0.25))["bss"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(compute_metrics(np.zeros(4), scores)["bss"])  # one class: no reference to beat


def test_multi_label_calibration_is_the_mean_over_labels():
    rng = np.random.default_rng(4)
    labels = (rng.random((200, 3)) < 0.3).astype(float)
    scores = np.clip(0.3 * labels + 0.6 * rng.random((200, 3)), 0, 1)
    got = compute_metrics(labels, scores, metrics=("ace", "bss"))
    per_label = [compute_metrics(labels[:, k], scores[:, k], metrics=("ace", "bss")) for k in range(3)]
    assert got["ace"] == pytest.approx(np.mean([m["ace"] for m in per_label]))
    assert got["bss"] == pytest.approx(np.mean([m["bss"] for m in per_label]))
