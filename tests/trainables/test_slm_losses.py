"""The SLM projectors' multitask losses (trainables/slm/losses.py) against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from trainables.slm.losses import AsymmetricLoss, WeightedBCE, class_weights, multitask_loss

NAN = float("nan")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_class_weights_count_known_labels_only():
    train = torch.tensor([[1.0, 0.0], [0.0, NAN], [0.0, 1.0], [NAN, 1.0]])
    w_pos, w_neg = class_weights(train)
    # label 0: 3 known (1 positive, 2 negative); label 1: 3 known (2 positive, 1 negative); K = 2
    assert w_pos.tolist() == pytest.approx([3 / (2 * 2 * 1), 3 / (2 * 2 * 2)])
    assert w_neg.tolist() == pytest.approx([3 / (2 * 2 * 2), 3 / (2 * 2 * 1)])


def test_weighted_bce_equals_hand_computation():
    train = torch.tensor([[1.0, 0.0], [0.0, NAN], [0.0, 1.0], [NAN, 1.0]])
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    target = torch.tensor([[1.0, NAN], [0.0, 0.0]])
    w_pos, w_neg = [0.75, 0.375], [0.375, 0.75]
    by_hand = -(
        w_pos[0] * math.log(_sigmoid(0.5))            # stay 0, label 0: positive
        + w_neg[0] * math.log(1 - _sigmoid(2.0))      # stay 1, label 0: negative
        + w_neg[1] * math.log(1 - _sigmoid(0.3))      # stay 1, label 1: negative (stay 0's is unknown)
    ) / 2
    assert float(WeightedBCE(train)(logits, target)) == pytest.approx(by_hand, rel=1e-6)


def test_asymmetric_loss_equals_hand_computation():
    logits = torch.tensor([[0.5, -3.5], [2.0, 0.3]])
    target = torch.tensor([[1.0, 0.0], [0.0, NAN]])
    m, gamma = 0.05, 4.0

    def negative(x):
        p_m = max(_sigmoid(x) - m, 0.0)
        return p_m**gamma * math.log(1 - p_m)

    p0 = _sigmoid(0.5)
    by_hand = -((1 - p0) * math.log(p0) + negative(-3.5) + negative(2.0)) / 2
    assert _sigmoid(-3.5) < m  # an easy negative: p_m = 0, no loss at all
    assert float(AsymmetricLoss(m, gamma)(logits, target)) == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("kind", ["avg", "asl"])
def test_unknown_label_contributes_exactly_zero_gradient(kind):
    train = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    loss_fn = multitask_loss("multitask", train, {"loss": kind, "beta": 10.0})
    logits = torch.tensor([[0.7, -0.2, 1.5], [-1.0, 2.0, 0.4]], requires_grad=True)
    target = torch.tensor([[1.0, NAN, 0.0], [NAN, 1.0, NAN]])
    loss_fn(logits, target).backward()
    unknown = torch.isnan(target)
    assert (logits.grad[unknown] == 0).all() and not torch.isnan(logits.grad).any()
    assert (logits.grad[~unknown] != 0).all()
    # the value does not depend on an unknown entry's logit either
    moved = logits.detach().clone()
    moved[unknown] += 5.0
    assert float(loss_fn(moved, target)) == pytest.approx(float(loss_fn(logits.detach(), target)))


def test_per_source_logits_score_each_present_source():
    target = torch.tensor([[1.0, 0.0], [0.0, NAN]])
    per_source = torch.tensor([[[0.5, -1.0], [NAN, NAN]], [[0.2, 0.1], [1.0, 3.0]]])  # stay 0 lacks source 1
    loss = AsymmetricLoss()
    by_rows = sum(float(loss(per_source[i, s : s + 1], target[i : i + 1])) for i, s in [(0, 0), (1, 0), (1, 1)])
    assert float(loss(per_source, target)) == pytest.approx(by_rows / 2, rel=1e-6)


def test_beta_scales_and_unknown_loss_name_fails():
    from sweeper.errors import SweeperError

    train = torch.tensor([[1.0], [0.0]])
    logits, target = torch.tensor([[0.3], [-0.4]]), torch.tensor([[1.0], [0.0]])
    one = float(multitask_loss("ihm", train, {"loss": "avg", "beta": 1.0})(logits, target))
    assert float(multitask_loss("ihm", train, {"loss": "avg", "beta": 10.0})(logits, target)) == pytest.approx(10 * one)
    with pytest.raises(SweeperError, match="loss 'focal': unknown"):
        multitask_loss("ihm", train, {"loss": "focal"})
