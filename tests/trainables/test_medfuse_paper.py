"""medfuse against the paper (issue 18, item 5): the MuFuse token computed by hand from Eqs. 2–7
(shared φ, per-feature affine, k-entry blocks of e_f each scaled by one sigmoid gate), and the loss
the paper implies (plain BCE, ``class_weight: none``: its accuracy at 0.5 is above the base rate),
which the spec's ``paper`` profile sets; the default stays the engine's weighted BCE. CPU only, no Ray."""
from __future__ import annotations

import math

import pytest
import torch

from trainables import registry
from trainables.medfuse import TokenEmbedding, medfuse_loss


def _hand_embedding(gate: str = "sigmoid") -> TokenEmbedding:
    """d = 4, k = 2 (d_v = 2), φ = Linear(1, 1) → GELU → Linear(1, 2) with weights set by hand."""
    embed = TokenEmbedding(n_features=2, n_classes=1, d=4, fusion="mufuse", partition_k=2, phi_hidden=1, gate=gate)
    with torch.no_grad():
        embed.feature.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 1.0, -1.0, 2.0]]))
        embed.phi[0].weight.fill_(2.0), embed.phi[0].bias.fill_(0.0)  # h = GELU(2x)
        embed.phi[2].weight.copy_(torch.tensor([[1.0], [-1.0]])), embed.phi[2].bias.copy_(torch.tensor([0.0, 0.5]))  # v = (h, 0.5 - h)
        embed.gamma.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0]]))
        embed.beta.copy_(torch.tensor([[0.0, 0.0], [-1.0, 0.25]]))
    return embed


def _gelu(z: float) -> float:
    return 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_mufuse_token_matches_a_hand_computation_of_eqs_2_to_7():
    embed = _hand_embedding()
    x = 0.75
    h = _gelu(2.0 * x)
    v = [h, 0.5 - h]  # Eq. 2: v = φ(x)
    v_tilde = [2.0 * v[0] - 1.0, -1.0 * v[1] + 0.25]  # Eq. 3 for feature 1: γ_1 ⊙ v + β_1
    gates = [_sigmoid(g) for g in v_tilde]  # Eq. 6: one gate per block
    e = [0.0, 1.0, -1.0, 2.0]
    expected = [e[0] * gates[0], e[1] * gates[0], e[2] * gates[1], e[3] * gates[1]]  # Eqs. 5, 7: contiguous blocks of k = 2
    token = embed.numeric(torch.tensor([[1]]), torch.tensor([[x]]))[0, 0]
    assert torch.allclose(token, torch.tensor(expected), atol=1e-6), (token, expected)
    # feature 0 (identity affine) with the same value gets other gates: the affine is per feature
    other = embed.numeric(torch.tensor([[0]]), torch.tensor([[x]]))[0, 0]
    expected_0 = [1.0 * _sigmoid(v[0]), -2.0 * _sigmoid(v[0]), 3.0 * _sigmoid(v[1]), 0.5 * _sigmoid(v[1])]
    assert torch.allclose(other, torch.tensor(expected_0), atol=1e-6)


def test_the_gate_is_bounded_and_cannot_flip_a_feature_embedding_entry():
    embed = _hand_embedding()
    x = torch.tensor([[-50.0, -1.0, 0.0, 1.0, 50.0]])  # abnormal values included (Eq. 6: σ "suppresses" them)
    feature = torch.ones_like(x, dtype=torch.long)
    ratio = embed.numeric(feature, x)[0, :, 1] / embed.feature.weight[1, 1]
    assert bool(((ratio >= 0) & (ratio <= 1)).all()), ratio


def test_the_tanh_gate_is_the_same_token_with_tanh_and_can_flip_an_entry():
    """``mufuse_gate: tanh`` (not the paper's): Eqs. 2–7 with tanh in place of σ, so the gate lies in
    (−1, 1) and a value can turn an entry of e_f around, as SCANE's e_f · x can."""
    embed = _hand_embedding("tanh")
    x = 0.75
    h = _gelu(2.0 * x)
    v_tilde = [2.0 * h - 1.0, -1.0 * (0.5 - h) + 0.25]
    gates = [math.tanh(g) for g in v_tilde]
    e = [0.0, 1.0, -1.0, 2.0]
    expected = [e[0] * gates[0], e[1] * gates[0], e[2] * gates[1], e[3] * gates[1]]
    token = embed.numeric(torch.tensor([[1]]), torch.tensor([[x]]))[0, 0]
    assert torch.allclose(token, torch.tensor(expected), atol=1e-6), (token, expected)
    values = torch.tensor([[-50.0, -1.0, 0.0, 1.0, 50.0]])
    ratio = embed.numeric(torch.ones_like(values, dtype=torch.long), values)[0, :, 1] / embed.feature.weight[1, 1]
    assert bool((ratio.abs() <= 1).all()) and bool((ratio < 0).any()) and bool((ratio > 0).any()), ratio


def test_an_unknown_gate_is_refused_in_one_line():
    with pytest.raises(ValueError, match="mufuse_gate 'relu': use one of sigmoid, tanh"):
        TokenEmbedding(n_features=2, n_classes=1, d=4, fusion="mufuse", partition_k=2, gate="relu")


def _labels() -> torch.Tensor:
    return torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # 2 positives, 6 negatives


def test_class_weight_none_is_plain_bce():
    trainable = registry.get("medfuse")
    config = {**trainable.defaults, "class_weight": "none"}
    loss = trainable.loss("ihm", _labels(), config)
    logits, target = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [1.0]])
    by_hand = -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-1.0))) / 2  # no pos_weight
    assert math.isclose(float(loss(logits, target)), by_hand, rel_tol=1e-6)


def test_the_default_is_the_engines_weighted_bce():
    defaults = registry.get("medfuse").defaults
    assert defaults["class_weight"] == "balanced"
    loss = medfuse_loss("ihm", _labels(), defaults)
    logits, target = torch.tensor([[2.0], [-1.0]]), torch.tensor([[1.0], [0.0]])
    pos_weight = 6 / 2  # n_neg / n_pos of the training labels
    by_hand = -(pos_weight * math.log(_sigmoid(2.0)) + math.log(1.0 - _sigmoid(-1.0))) / 2
    assert math.isclose(float(loss(logits, target)), by_hand, rel_tol=1e-6)


def test_the_paper_profile_trains_every_medfuse_variant_with_plain_bce():
    from sweeper.plan.spec import load_spec

    for profile, expected in (("paper", "none"), ("local", None), ("repro", None), ("repro-gate", None)):
        spec, _ = load_spec("medfuse-p12", profile)
        variants = [m for m in spec.methods if m.startswith("medfuse:")]
        assert variants and all(spec.methods[m].fixed.get("class_weight") == expected for m in variants), profile


def test_plain_bce_leaves_unknown_los_labels_out_and_other_tasks_keep_their_loss():
    loss = medfuse_loss("los_gt_7d", _labels(), {"class_weight": "none"})
    logits, target = torch.tensor([[2.0], [5.0]]), torch.tensor([[1.0], [float("nan")]])
    assert math.isclose(float(loss(logits, target)), -math.log(_sigmoid(2.0)), rel_tol=1e-6)
    assert isinstance(medfuse_loss("los", _labels(), {"class_weight": "none"}).loss, torch.nn.MSELoss)
    with pytest.raises(ValueError, match="class_weight 'inverse'"):
        medfuse_loss("ihm", _labels(), {"class_weight": "inverse"})


def test_the_repro_gate_profile_runs_both_gates_under_repros_settings():
    from sweeper.plan.spec import load_spec

    repro, _ = load_spec("medfuse-p12", "repro")
    gate, _ = load_spec("medfuse-p12", "repro-gate")
    assert sorted(gate.methods) == ["classical.xgboost", "medfuse:mufuse", "medfuse:mufuse-tanh"]
    paper, tanh = gate.methods["medfuse:mufuse"], gate.methods["medfuse:mufuse-tanh"]
    assert paper.fixed == repro.methods["medfuse:mufuse"].fixed and paper.search == repro.methods["medfuse:mufuse"].search
    assert tanh.fixed == {**paper.fixed, "fusion": "mufuse", "mufuse_gate": "tanh"}
    assert tanh.search == paper.search and "partition_k" not in tanh.search  # repro's null is dropped, not kept as a value
    assert (gate.budgets, gate.final, gate.resources) == (repro.budgets, repro.final, repro.resources)
