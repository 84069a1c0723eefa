"""Top-k alignment on hand-placed embeddings, IG block shares of known linear heads, subgroup and
phenotype-group AUROCs computed by hand or with sklearn on the subset."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sweeper.data.schema import PHENOTYPE_GROUPS, PHENOTYPES
from sweeper.evaluation.analyses import (
    AGE_BANDS,
    AnalysisError,
    block_attributions,
    ethnicity_group,
    phenotype_group_auroc,
    subgroup_auroc,
    top_k_alignment,
)


# --- top-k alignment -------------------------------------------------------------------------


def _on_circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def _circle_embeddings():
    """Cosine distance is monotone in angle, so neighbours can be read off the angles.

    Modality a of stays 0..5 at 0, 2, ..., 10 degrees; modality b of stay 0 at 0.8 degrees (next to
    a0), of stays 1..5 at 92, 94, ..., 100 degrees. For k=1 only a0 and b0 (each other's nearest)
    are aligned. For k=5 also b5: its 5th neighbour, after b4..b1, is a5 (90 degrees away).
    """
    return {"a": _on_circle([0, 2, 4, 6, 8, 10]), "b": _on_circle([0.8, 92, 94, 96, 98, 100])}


def test_alignment_k1_on_hand_placed_embeddings():
    result = top_k_alignment(_circle_embeddings(), k=1)
    assert result["per_modality"] == pytest.approx({"a": 1 / 6, "b": 1 / 6})
    assert result["overall"] == pytest.approx(2 / 12)


def test_alignment_k5_on_hand_placed_embeddings():
    result = top_k_alignment(_circle_embeddings(), k=5)
    assert result["per_modality"] == pytest.approx({"a": 1 / 6, "b": 2 / 6})
    assert result["overall"] == pytest.approx(3 / 12)


@pytest.mark.parametrize("k", [1, 5])
def test_identical_embeddings_across_modalities_are_fully_aligned(k):
    stays = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    result = top_k_alignment({"text": stays, "image": stays.copy(), "series": 3 * stays}, k=k)
    assert result["overall"] == 1.0
    assert result["per_modality"] == {"text": 1.0, "image": 1.0, "series": 1.0}


def test_random_high_dimensional_embeddings_are_rarely_aligned():
    rng = np.random.default_rng(1)
    embeddings = {m: rng.normal(size=(300, 256)) for m in ("a", "b", "c")}
    result = top_k_alignment(embeddings, k=5)
    # By chance: about 5 neighbours x 2 same-stay candidates out of 899, i.e. ~1%.
    assert result["overall"] < 0.05
    assert set(result["per_modality"]) == {"a", "b", "c"}


def test_alignment_rejects_mismatched_shapes_and_too_large_k():
    with pytest.raises(AnalysisError, match="one shape"):
        top_k_alignment({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(AnalysisError, match="k=6"):
        top_k_alignment({"a": np.eye(3), "b": np.eye(3)}, k=6)


# --- Integrated Gradients block shares ---------------------------------------------------------

_WEIGHTS = [1.0, -2.0, 0.5, 0.5, 3.0, 0.0]
_INPUTS = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 0.0, -2.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
# IG with a zero baseline on w·x + b is x·w (completeness): |x·w| per stay is
# [1, 2, .5, .5, 3, 0] and [2, 0, 1, 0, 3, 0], so blocks of 2 columns sum to a=5, b=2, c=6 of 13.
_SHARES = {"a": 5 / 13, "b": 2 / 13, "c": 6 / 13}


def _linear_head(rows):
    head = torch.nn.Linear(6, len(rows), dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(rows, dtype=torch.float64))
        head.bias.fill_(0.7)  # the bias cancels in F(x) - F(baseline)
    return head


@pytest.mark.parametrize("squeeze", [False, True], ids=["N_by_1", "N"])
def test_linear_head_shares_equal_input_times_weight(squeeze):
    head = _linear_head([_WEIGHTS])
    forward = (lambda x: head(x).squeeze(-1)) if squeeze else head
    shares = block_attributions(forward, _INPUTS, ["a", "b", "c"], block_size=2)
    assert list(shares) == ["a", "b", "c"]
    assert shares == pytest.approx(_SHARES, abs=1e-9)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_target_picks_the_output_column():
    head = _linear_head([[1.0] * 6, _WEIGHTS])
    assert block_attributions(head, _INPUTS, ["a", "b", "c"], 2, target=1) == pytest.approx(_SHARES, abs=1e-9)
    # Column 0 (all weights 1): |x| per block is a=1+1+2+0=4, b=1+1+2+0=4, c=1+1+1+1=4.
    assert block_attributions(head, _INPUTS, ["a", "b", "c"], 2, target=0) == pytest.approx(
        {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=1e-9
    )


def test_a_block_the_head_ignores_gets_share_zero():
    def forward(x):
        return torch.tanh(x[:, :2]).sum(dim=1) + (x[:, 4:] ** 2).sum(dim=1)

    inputs = torch.randn(20, 6, generator=torch.Generator().manual_seed(0))
    shares = block_attributions(forward, inputs, ["text", "image", "series"], block_size=2)
    assert shares["image"] == 0.0
    assert shares["text"] > 0 and shares["series"] > 0
    assert sum(shares.values()) == pytest.approx(1.0)


def test_block_attributions_reject_bad_layout_and_missing_target():
    head = _linear_head([[1.0] * 6, _WEIGHTS])
    with pytest.raises(AnalysisError, match="block_size"):
        block_attributions(head, _INPUTS, ["a", "b"], block_size=2)
    with pytest.raises(AnalysisError, match="target="):
        block_attributions(head, _INPUTS, ["a", "b", "c"], block_size=2)
    with pytest.raises(AnalysisError, match="outside"):
        block_attributions(head, _INPUTS, ["a", "b", "c"], block_size=2, target=2)


# --- subgroup AUROC ----------------------------------------------------------------------------

_ROWS = [  # gender, ethnicity, age, label, score
    ("F", "WHITE", 24.9, 1, 0.9),
    ("F", "WHITE", 25.0, 0, 0.1),
    ("F", "BLACK/AFRICAN AMERICAN", 85.0, 1, 0.4),
    ("F", "ASIAN", 40.0, 0, 0.6),
    ("M", "WHITE - RUSSIAN", 30.0, 1, 0.8),
    ("M", "HISPANIC/LATINO", 50.0, 0, 0.2),
    ("M", "OTHER", 60.0, 0, 0.3),
    (None, "UNABLE TO OBTAIN", float("nan"), 1, 0.7),
    (None, None, 70.0, 0, 0.5),
    ("M", "AMERICAN INDIAN/ALASKA NATIVE", 90.0, 1, 0.35),
]


def _frame(rows):
    return pd.DataFrame(
        [r[:3] for r in rows], columns=["demo_gender", "demo_ethnicity", "demo_age"]
    ).astype({"demo_age": float})


def test_subgroup_auroc_by_hand():
    labels = np.array([r[3] for r in _ROWS], dtype=float)
    scores = np.array([r[4] for r in _ROWS])
    table = subgroup_auroc(labels, scores, _frame(_ROWS))
    assert list(table.columns) == ["group", "subgroup", "n", "n_positive", "auroc"]
    nan = float("nan")
    expected = [  # group, subgroup, n, n_positive, auroc (positive-vs-negative pairs ranked right)
        ("Gender", "Female", 4, 2, 0.75),  # .9 > .1, .6; .4 > .1 only
        ("Gender", "Male", 4, 2, 1.0),
        ("Ethnicity", "Asian", 1, 0, nan),
        ("Ethnicity", "Black / African American", 1, 1, nan),
        ("Ethnicity", "Hispanic / Latino", 1, 0, nan),
        ("Ethnicity", "White", 3, 2, 1.0),  # "WHITE - RUSSIAN" is White
        ("Ethnicity", "Unknown", 4, 2, 0.75),  # OTHER, UNABLE TO OBTAIN, null, AMERICAN INDIAN
        ("Age Group", "Under 25", 1, 1, nan),  # 24.9
        ("Age Group", "25–34", 2, 1, 1.0),  # 25 and 30
        ("Age Group", "35–44", 1, 0, nan),
        ("Age Group", "45–54", 1, 0, nan),
        ("Age Group", "55–64", 1, 0, nan),
        ("Age Group", "65–74", 1, 0, nan),
        ("Age Group", "75–84", 0, 0, nan),
        ("Age Group", "85+", 2, 2, nan),  # 85 and 90: one class only
    ]
    assert list(zip(table.group, table.subgroup)) == [row[:2] for row in expected]
    assert table.n.tolist() == [row[2] for row in expected]
    assert table.n_positive.tolist() == [row[3] for row in expected]
    np.testing.assert_allclose(table.auroc.to_numpy(), [row[4] for row in expected])


def test_ethnicity_mapping():
    assert ethnicity_group("BLACK/CAPE VERDEAN") == "Black / African American"
    assert ethnicity_group("HISPANIC OR LATINO") == "Hispanic / Latino"
    assert ethnicity_group("ASIAN - CHINESE") == "Asian"
    for other in ("OTHER", "UNKNOWN", "UNABLE TO OBTAIN", "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER", None, np.nan):
        assert ethnicity_group(other) == "Unknown"


def test_multi_label_subgroup_auroc_is_macro_over_labels_with_both_classes():
    rng = np.random.default_rng(2)
    n = 200
    demographics = pd.DataFrame({
        "demo_gender": rng.choice(["M", "F", None], n),
        "demo_ethnicity": rng.choice(["WHITE", "ASIAN", "OTHER", None], n),
        "demo_age": rng.uniform(18, 95, n),
    })
    labels = (rng.random((n, 3)) < 0.4).astype(float)
    labels[demographics.demo_gender.to_numpy() == "F", 2] = 0  # label 2 is one-class among women
    scores = np.clip(0.3 * labels + 0.7 * rng.random((n, 3)), 0, 1)
    table = subgroup_auroc(labels, scores, demographics).set_index(["group", "subgroup"])

    women = demographics.demo_gender.to_numpy() == "F"
    expected = np.mean([roc_auc_score(labels[women, j], scores[women, j]) for j in (0, 1)])
    assert table.loc[("Gender", "Female"), "auroc"] == pytest.approx(expected)
    band = (demographics.demo_age >= 45) & (demographics.demo_age < 55)
    expected = np.mean([roc_auc_score(labels[band, j], scores[band, j]) for j in range(3)])
    assert table.loc[("Age Group", "45–54"), "auroc"] == pytest.approx(expected)
    assert table.loc[("Age Group", "45–54"), "n"] == band.sum()
    assert table.xs("Age Group").n.sum() == n
    assert table.xs("Gender").n.sum() == (demographics.demo_gender.notna()).sum()
    assert list(table.xs("Age Group").index) == list(AGE_BANDS)


def test_subgroup_auroc_rejects_missing_columns_and_length_mismatch():
    frame = _frame(_ROWS)
    with pytest.raises(AnalysisError, match="demo_age"):
        subgroup_auroc(np.zeros(10), np.zeros(10), frame.drop(columns="demo_age"))
    with pytest.raises(AnalysisError, match="must match"):
        subgroup_auroc(np.zeros(9), np.zeros(9), frame)


# --- phenotype groups --------------------------------------------------------------------------


def _phenotype_labels(rng, n=60):
    labels = (rng.random((n, len(PHENOTYPES))) < 0.3).astype(float)
    labels[0], labels[1] = 1.0, 0.0  # every label has both classes
    return labels


def test_phenotype_groups_perfect_acute_reversed_chronic():
    labels = _phenotype_labels(np.random.default_rng(3))
    groups = np.array([PHENOTYPE_GROUPS[name] for name in PHENOTYPES])
    scores = np.full(labels.shape, 0.5)
    scores[:, groups == "acute"] = 0.1 + 0.8 * labels[:, groups == "acute"]
    scores[:, groups == "chronic"] = 0.9 - 0.8 * labels[:, groups == "chronic"]
    result = phenotype_group_auroc(labels, scores)
    assert result == {"acute": 1.0, "chronic": 0.0, "mixed": 0.5}


def test_phenotype_group_skips_one_class_labels_and_is_nan_when_none_left():
    rng = np.random.default_rng(4)
    labels = _phenotype_labels(rng)
    groups = np.array([PHENOTYPE_GROUPS[name] for name in PHENOTYPES])
    scores = rng.random(labels.shape)
    labels[:, groups == "mixed"] = 0.0
    acute = np.flatnonzero(groups == "acute")
    labels[:, acute[0]] = 1.0  # one-class: skipped
    result = phenotype_group_auroc(labels, scores)
    assert math.isnan(result["mixed"])
    expected = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in acute[1:]])
    assert result["acute"] == pytest.approx(expected)
    with pytest.raises(AnalysisError, match="25"):
        phenotype_group_auroc(labels[:, :24], scores[:, :24])
