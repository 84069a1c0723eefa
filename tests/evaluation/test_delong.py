"""DeLong's AUROC variance (fast midrank algorithm): hand values, the O(m·n) definition, sklearn,
and agreement with the leaderboard's stratified bootstrap interval on a reference case."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from sweeper.evaluation.aggregate import SeedPredictions, aggregate_cell, bootstrap_ci
from sweeper.evaluation.delong import delong_components, delong_interval, delong_variance, midranks
from sweeper.evaluation.metrics import MetricsError


def _pairwise_delong(labels, scores):
    """DeLong et al. (1988) by their definition: ψ(x, y) = 1 if x > y, ½ if x = y, 0 otherwise,
    over all m·n (positive, negative) pairs."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    psi = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / positives.size + v01.var(ddof=1) / negatives.size


def test_tiny_example_matches_the_hand_computed_variance():
    # Positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1.
    # V10 (share of negatives each positive beats): 1, 1, 3/4 -> AUROC 11/12; squared deviations
    #   1/144, 1/144, 4/144 -> s² = (6/144)/2 = 1/48.
    # V01 (share of positives beating each negative): 2/3, 1, 1, 1 -> squared deviations 9/144 and
    #   3 × 1/144 -> s² = (12/144)/3 = 1/36.
    # Var = (1/48)/3 + (1/36)/4 = 1/144 + 1/144 = 1/72.
    labels = np.array([1, 1, 1, 0, 0, 0, 0], float)
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1])
    v10, v01 = delong_components(labels, scores)
    assert v10[0] == pytest.approx([1, 1, 0.75]) and v01[0] == pytest.approx([2 / 3, 1, 1, 1])
    auroc, variance = delong_variance(labels, scores)
    assert auroc == pytest.approx(11 / 12) and variance == pytest.approx(1 / 72, abs=1e-15)


def test_hanley_mcneil_rating_data_gives_the_published_auroc():
    """Hanley & McNeil (1982, Radiology 143:29), Table 1: 109 CT images rated 1-5; area 0.893."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    scores = np.repeat(np.tile(np.arange(1, 6) / 5, 2), normal + abnormal)
    labels = np.r_[np.zeros(sum(normal)), np.ones(sum(abnormal))]
    auroc, variance = delong_variance(labels, scores)
    assert round(auroc, 3) == 0.893
    assert (auroc, variance) == pytest.approx(_pairwise_delong(labels, scores), abs=1e-14)  # heavy ties


@pytest.mark.parametrize("seed", range(4))
def test_midrank_algorithm_equals_the_pairwise_definition_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(120) < 0.3).astype(float)
    scores = np.round(rng.random(120) * 0.6 + 0.4 * labels, 1)  # rounded: many ties
    auroc, variance = delong_variance(labels, scores)
    assert (auroc, variance) == pytest.approx(_pairwise_delong(labels, scores), abs=1e-14)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-14)


def test_midranks_average_ties():
    assert midranks(np.array([0.3, 0.1, 0.3, 0.2])) == pytest.approx([3.5, 1, 3.5, 2])


def test_seed_mean_variance_is_that_of_the_mean_of_the_seed_aurocs():
    """Var(mean of K AUROCs) = L·S·Lᵀ with S DeLong's K × K covariance matrix and L = 1/K."""
    rng = np.random.default_rng(5)
    labels = (rng.random(200) < 0.4).astype(float)
    scores = 1 / (1 + np.exp(-(labels + rng.normal(size=(3, 200)))))
    v10, v01 = delong_components(labels, scores)
    covariance = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    weights = np.full(3, 1 / 3)
    auroc, variance = delong_variance(labels, scores)
    assert variance == pytest.approx(weights @ covariance @ weights, rel=1e-12)
    assert auroc == pytest.approx(np.mean([roc_auc_score(labels, s) for s in scores]))


def test_unknown_labels_are_dropped_and_one_class_or_multi_label_gives_nan():
    labels = np.array([1, 0, np.nan, 1, 0])
    scores = np.array([0.9, 0.2, 0.5, 0.6, 0.7])
    assert delong_variance(labels, scores)[0] == pytest.approx(0.75)
    with pytest.raises(MetricsError, match="both classes"):
        delong_variance(np.ones(4), np.linspace(0, 1, 4))
    assert np.isnan(delong_interval(np.ones(4), np.linspace(0, 1, 4))).all()
    assert np.isnan(delong_interval(np.ones((4, 2)), np.full((1, 4, 2), 0.5))).all()


def _reference_case(n_positive=90, n_negative=210, n_seeds=1, seed=2026):
    """A binormal model (negatives N(0, 1), positives N(1.2, 1): true AUROC Φ(1.2/√2) = 0.802)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_positive), np.zeros(n_negative)]
    ids = np.array([f"s{i:04d}" for i in range(labels.size)])
    seeds = [SeedPredictions(k, ids, labels, 1 / (1 + np.exp(-(1.2 * labels + rng.normal(size=labels.size)))))
             for k in range(n_seeds)]
    return labels, seeds


def test_delong_interval_agrees_with_the_stratified_bootstrap_on_a_reference_case():
    """300 test stays (90 positive), AUROC ≈ 0.80: the leaderboard's bootstrap interval (1000
    resamples) and DeLong's agree to within 0.01 at each end, and their widths to within 10%
    (measured: [0.743, 0.845] and [0.745, 0.848]; widths 0.102 and 0.103). The bootstrap's own Monte-Carlo error at 1000 resamples is
    about 0.003 per end, so a tighter bound would test the resampling, not the two methods."""
    labels, seeds = _reference_case()
    boot_low, boot_high = bootstrap_ci(seeds, n_resamples=1000, metrics=("auroc",))["auroc"]
    delong_low, delong_high = delong_interval(labels, np.stack([s.scores for s in seeds]))
    assert abs(boot_low - delong_low) < 0.01 and abs(boot_high - delong_high) < 0.01
    assert (boot_high - boot_low) == pytest.approx(delong_high - delong_low, rel=0.10)


def test_leaderboard_rows_carry_the_delong_interval_of_the_seed_mean():
    labels, seeds = _reference_case(n_seeds=3)
    row = aggregate_cell({"task": "ihm", "method": "m", "subset": "discharge"}, seeds, n_resamples=1000)
    auroc, variance = delong_variance(labels, np.stack([s.scores for s in seeds]))
    half_width = stats.norm.ppf(0.975) * np.sqrt(variance)
    assert (row["auroc_delong_low"], row["auroc_delong_high"]) == pytest.approx((auroc - half_width, auroc + half_width))
    assert abs(row["auroc_delong_low"] - row["auroc_boot_low"]) < 0.01
    assert abs(row["auroc_delong_high"] - row["auroc_boot_high"]) < 0.01
