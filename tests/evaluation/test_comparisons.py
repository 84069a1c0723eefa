"""Multiplicity-corrected p-values (Holm, Benjamini–Hochberg), joint resamples and P(best)."""
import math

import numpy as np
import pytest

from sweeper.evaluation.aggregate import SeedPredictions, compare_with_best
from sweeper.evaluation.comparisons import (
    JointResamples,
    add_adjusted_p_values,
    add_probability_best,
    adjust_p_values,
)
from sweeper.evaluation.metrics import MetricsError, compute_metrics

P = [0.01, 0.04, 0.03, 0.005]
# Holm by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running
# max 0.02, 0.03, 0.06, 0.06; back in input order:
HOLM = [0.03, 0.06, 0.06, 0.02]
# BH by hand: sorted p_(i) * m / i = 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4 = 0.02, 0.02, 0.04, 0.04;
# running min from the largest down leaves them; back in input order:
BH = [0.02, 0.04, 0.04, 0.02]


def test_holm_matches_the_hand_computed_values():
    assert adjust_p_values(P, "holm") == pytest.approx(HOLM, abs=1e-12)


def test_bh_matches_the_hand_computed_values():
    assert adjust_p_values(P, "bh") == pytest.approx(BH, abs=1e-12)


def test_holm_caps_at_one_and_bh_steps_down_from_the_largest():
    assert adjust_p_values([0.4, 0.6], "holm") == pytest.approx([0.8, 0.8])  # 0.4*2=0.8; max(0.8, 0.6*1)
    # BH: 0.01*3/1=0.03, 0.02*3/2=0.03, 0.9*3/3=0.9 -> unchanged; and 0.04*3/2=0.06 > 0.05*3/3=0.05 -> min 0.05
    assert adjust_p_values([0.01, 0.02, 0.9], "bh") == pytest.approx([0.03, 0.03, 0.9])
    assert adjust_p_values([0.01, 0.04, 0.05], "bh") == pytest.approx([0.03, 0.05, 0.05])


def test_nan_p_values_are_left_out_of_the_family():
    adjusted = adjust_p_values([math.nan, 0.01, 0.04, math.nan], "holm")
    assert math.isnan(adjusted[0]) and math.isnan(adjusted[3])
    assert adjusted[1:3] == pytest.approx([0.02, 0.04])  # a family of two
    assert np.isnan(adjust_p_values([math.nan], "bh")).all()


def test_unknown_correction_and_bad_p_values_are_refused():
    with pytest.raises(MetricsError, match="holm, bh"):
        adjust_p_values(P, "bonferroni")
    with pytest.raises(MetricsError, match=r"\[0, 1\]"):
        adjust_p_values([0.5, 1.5])


def test_adjusted_p_values_are_per_task_and_keep_the_raw_one():
    rows = [
        {"task": "ihm", "vs_best_p": math.nan},  # the top cell
        {"task": "ihm", "vs_best_p": 0.01},
        {"task": "ihm", "vs_best_p": 0.04},
        {"task": "phenotyping", "vs_best_p": 0.01},
    ]
    add_adjusted_p_values(rows, "holm")
    assert math.isnan(rows[0]["vs_best_p_adj"])
    assert [r["vs_best_p_adj"] for r in rows[1:]] == pytest.approx([0.02, 0.04, 0.01])
    assert [r["vs_best_p"] for r in rows[1:]] == [0.01, 0.04, 0.01]
    assert {r["vs_best_p_adjust"] for r in rows} == {"holm"}


def _cell(signal, labels, ids, rng, n_seeds=2):
    return [SeedPredictions(s, ids, labels, 1 / (1 + np.exp(-(signal * labels + rng.normal(size=labels.size)))))
            for s in range(n_seeds)]


def _task_cells(signals, n_stays=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_stays) < 0.3).astype(float)
    ids = np.array([f"s{i:04d}" for i in range(n_stays)])
    return {name: _cell(signal, labels, ids, rng) for name, signal in signals.items()}


def test_joint_resamples_score_each_cell_like_compute_metrics_and_pair_identical_cells():
    cells = _task_cells({"a": 1.0, "b": 2.0})
    cells["a_copy"] = cells["a"]
    joint = JointResamples(cells, n_resamples=200)
    point, values = joint.scored("a", "auroc")
    assert point == pytest.approx(np.mean([compute_metrics(s.labels, s.scores)["auroc"] for s in cells["a"]]))
    assert values.shape == (200,) and values.std() > 0
    # Same predictions, same resamples: the paired difference is exactly zero on every resample.
    assert np.array_equal(joint.scored("a_copy", "auroc")[1], values)


def test_joint_resamples_restrict_a_cell_to_some_stays():
    cells = _task_cells({"a": 1.5})
    joint = JointResamples(cells, n_resamples=50)
    half = joint.stays_of("a")[:100]
    point, _ = joint.scored("a", "auroc", half)
    seeds = cells["a"]
    expected = np.mean([compute_metrics(s.labels[:100], s.scores[:100])["auroc"] for s in seeds])
    assert point == pytest.approx(expected)


def test_joint_resamples_refuse_cells_that_disagree_on_a_label():
    cells = _task_cells({"a": 1.0})
    other = cells["a"][0]
    flipped = SeedPredictions(0, other.stay_ids, 1 - other.labels, other.scores)
    with pytest.raises(MetricsError, match="two different labels"):
        JointResamples({"a": cells["a"], "b": [flipped]}, n_resamples=10)


def test_probability_best_is_settled_for_a_clear_winner_and_split_between_twins():
    cells = _task_cells({"weak": 0.3, "strong": 3.0, "middle": 1.0}, n_stays=300)
    cells["strong_twin"] = cells["strong"]
    rows = [{"task": "ihm", "cell_id": c} for c in cells]
    add_probability_best(rows, cells, n_resamples=400)
    p_best = {r["cell_id"]: r["p_best"] for r in rows}
    assert sum(p_best.values()) == pytest.approx(1.0)
    assert p_best["strong"] == pytest.approx(0.5) and p_best["strong_twin"] == pytest.approx(0.5)  # ties split
    assert p_best["weak"] == p_best["middle"] == 0.0


def test_probability_best_reflects_a_close_race_and_lower_brier_wins():
    rng = np.random.default_rng(3)  # two models of equal skill that share most of their errors
    labels = (rng.random(150) < 0.3).astype(float)
    ids = np.array([f"s{i:04d}" for i in range(150)])
    shared = labels + rng.normal(size=150)
    cells = {name: [SeedPredictions(0, ids, labels, 1 / (1 + np.exp(-(shared + rng.normal(0, 0.3, 150)))))] for name in "ab"}
    rows = [{"task": "ihm", "cell_id": c} for c in cells]
    add_probability_best(rows, cells, n_resamples=400)
    assert all(0.1 < r["p_best"] < 0.9 for r in rows), rows  # the top rank is not settled
    cells = _task_cells({"bad": 0.0, "good": 3.0}, n_stays=300)
    rows = [{"task": "ihm", "cell_id": c} for c in cells]
    add_probability_best(rows, cells, metric="brier", n_resamples=200)
    assert {r["cell_id"]: r["p_best"] for r in rows} == {"bad": 0.0, "good": 1.0}


def test_leaderboard_rows_get_raw_and_adjusted_p_and_p_best_end_to_end():
    cells = _task_cells({"top": 2.5, "close": 2.3, "far": 0.5, "farther": 0.2}, n_stays=250)
    rows = []
    for cell_id, seeds in cells.items():
        auroc = np.mean([compute_metrics(s.labels, s.scores)["auroc"] for s in seeds])
        rows.append({"task": "ihm", "cell_id": cell_id, "auroc_mean": auroc, "n_test_stays": 250})
    compare_with_best(rows, cells, n_resamples=300)
    add_adjusted_p_values(rows, "holm")
    add_probability_best(rows, cells, n_resamples=300)
    by_id = {r["cell_id"]: r for r in rows}
    raw = [by_id[c]["vs_best_p"] for c in ("close", "far", "farther")]
    assert [by_id[c]["vs_best_p_adj"] for c in ("close", "far", "farther")] == pytest.approx(adjust_p_values(raw, "holm"))
    assert all(by_id[c]["vs_best_p_adj"] >= by_id[c]["vs_best_p"] for c in ("close", "far", "farther"))
    assert by_id["far"]["vs_best_p_adj"] < 0.05 and by_id["farther"]["p_best"] == 0.0
    assert by_id["top"]["p_best"] + by_id["close"]["p_best"] == pytest.approx(1.0)


def test_probability_best_is_nan_for_a_task_whose_cells_disagree_on_labels():
    cells = _task_cells({"a": 1.0, "b": 2.0})
    hidden = cells["b"][0]
    labels = hidden.labels.copy()
    labels[:20] = np.nan  # an axis that hides some labels for this cell only
    cells["b"] = [SeedPredictions(0, hidden.stay_ids, labels, hidden.scores)]
    rows = [{"task": "ihm", "cell_id": c} for c in cells] + [{"task": "los", "cell_id": "c"}]
    add_probability_best(rows, {**cells, "c": cells["a"]}, n_resamples=50)
    assert np.isnan([r["p_best"] for r in rows[:2]]).all() and rows[2]["p_best"] == 1.0
