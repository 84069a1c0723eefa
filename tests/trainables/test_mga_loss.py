"""Masked Global Alignment loss and modality dropout (METHODS.md §2) against hand computations in
plain Python, on a small batch with missing modalities."""
from __future__ import annotations

import math

import pytest
import torch

from trainables.mga.loss import MaskedGlobalAlignment, modality_dropout

TAU = 0.07
# N = 5 stays, M = 3 modalities, d = 2. Rows: stay; the token of modality m sits where it is absent.
Z = [
    [[1.0, 0.2], [0.5, 1.0], [-0.3, 0.8]],
    [[0.1, -1.0], [2.0, 0.3], [0.9, 0.9]],
    [[-1.0, 0.4], [0.2, 0.1], [1.5, -0.5]],
    [[0.7, 0.7], [-0.6, 1.2], [0.3, -1.1]],
    [[0.4, -0.2], [1.1, -0.9], [-0.8, -0.3]],
]
PRESENT = [
    [1, 1, 1],  # complete
    [1, 0, 1],  # radiology-like gap
    [0, 1, 0],  # a single modality: never an anchor, a negative through its global representation
    [1, 1, 0],
    [0, 1, 1],
]


def _unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _sum(vectors, d=2):
    return [sum(v[c] for v in vectors) for c in range(d)]


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def hand_loss(z, present, tau=TAU, tokens_in_centroid=False):
    """The loss of METHODS.md §2 by explicit loops over stays and modalities."""
    n, m_count = len(z), len(z[0])
    zhat = [[_unit(z[i][m]) for m in range(m_count)] for i in range(n)]
    used = lambda i, k: tokens_in_centroid or present[i][k]  # noqa: E731  (enters the centroids)
    terms = []
    for m in range(m_count):
        targets = []
        for l in range(n):
            others = [zhat[l][k] for k in range(m_count) if k != m and used(l, k)]
            everything = [zhat[l][k] for k in range(m_count) if used(l, k)]
            targets.append(_unit(_sum(others)) if others else _unit(_sum(everything)))
        anchors = [i for i in range(n) if present[i][m] and sum(present[i]) >= 2]
        if not anchors:
            continue
        total = 0.0
        for i in anchors:
            scores = [math.exp(_dot(zhat[i][m], targets[l]) / tau) for l in range(n)]
            total += -math.log(scores[i] / sum(scores))
        terms.append(total / len(anchors))
    return sum(terms) / len(terms)


def _module(tokens_in_centroid=False):
    module = MaskedGlobalAlignment(TAU, tokens_in_centroid).double()
    with torch.no_grad():
        module.log_tau.fill_(math.log(TAU))  # exactly, not the float32 value cast up
    return module


def _z():
    return torch.tensor(Z, dtype=torch.float64)


def _present(rows=PRESENT):
    return torch.tensor(rows, dtype=torch.bool)


@pytest.mark.parametrize("tokens_in_centroid", [False, True])
def test_loss_matches_hand_computation_with_missing_modalities(tokens_in_centroid):
    out = _module(tokens_in_centroid)(_z(), _present())
    assert out["loss"].item() == pytest.approx(hand_loss(Z, PRESENT, tokens_in_centroid=tokens_in_centroid), abs=1e-9)
    assert out["anchors"].tolist() == [3, 3, 3]


def test_absent_slots_change_the_loss_only_with_tokens_in_centroid():
    moved = _z().clone()
    moved[2, 0] = torch.tensor([5.0, -3.0])  # stay 2 lacks modality 0: its slot holds the token
    assert _module()(moved, _present())["loss"].item() == pytest.approx(_module()(_z(), _present())["loss"].item(), abs=1e-12)
    assert _module(True)(moved, _present())["loss"].item() != pytest.approx(_module(True)(_z(), _present())["loss"].item(), abs=1e-6)


def test_tokens_get_gradient_only_with_tokens_in_centroid():
    for flag, expected in ((False, False), (True, True)):
        z = _z().requires_grad_(True)
        _module(flag)(z, _present())["loss"].backward()
        assert bool(z.grad[2, 0].abs().sum() > 0) is expected
        assert z.grad[0].abs().sum() > 0  # a complete stay's embeddings always learn


def test_temperature_is_learnable_and_starts_at_007():
    module = MaskedGlobalAlignment()
    assert module.tau == pytest.approx(0.07)
    module(torch.randn(6, 3, 4), torch.ones(6, 3, dtype=torch.bool))["loss"].backward()
    assert module.log_tau.grad is not None and module.log_tau.grad.abs() > 0


def _hand_dropout(present, p, mode, seed):
    """The dropout rule in plain Python, fed the same draws (in the documented order) the function uses."""
    g = torch.Generator().manual_seed(seed)
    n, m = len(present), len(present[0])
    if mode == "one":
        hide, scores = torch.rand(n, generator=g).tolist(), torch.rand(n, m, generator=g).tolist()
        out = [list(row) for row in present]
        for i in range(n):
            if hide[i] < p and sum(present[i]) >= 2:
                target = max((k for k in range(m) if present[i][k]), key=lambda k: scores[i][k])
                out[i][target] = 0
        return out
    drop, scores = torch.rand(n, m, generator=g).tolist(), torch.rand(n, m, generator=g).tolist()
    out = [[int(present[i][k] and not drop[i][k] < p) for k in range(m)] for i in range(n)]
    for i in range(n):
        if not any(out[i]) and any(present[i]):
            out[i][max((k for k in range(m) if present[i][k]), key=lambda k: scores[i][k])] = 1
    return out


@pytest.mark.parametrize("mode", ["one", "each"])
def test_loss_after_dropout_matches_hand_computation(mode):
    p, seed = 0.4, 1
    kept = modality_dropout(_present(), p, mode, torch.Generator().manual_seed(seed))
    hand = _hand_dropout(PRESENT, p, mode, seed)
    assert kept.int().tolist() == hand
    # the draws hid something, and left anchors: the loss below is neither the undropped one nor empty
    assert hand != PRESENT and sum(sum(row) >= 2 for row in hand) >= 2
    assert _module()(_z(), kept)["loss"].item() == pytest.approx(hand_loss(Z, hand), abs=1e-9)


@pytest.mark.parametrize("mode", ["one", "each"])
def test_dropout_never_hides_a_stays_last_modality(mode):
    present = torch.rand(400, 5, generator=torch.Generator().manual_seed(0)) < 0.6
    present[:, 0] |= ~present.any(dim=1)
    kept = modality_dropout(present, 1.0, mode, torch.Generator().manual_seed(1))
    assert (kept <= present).all() and (kept.sum(dim=1) >= 1).all()
    hidden = (present.int() - kept.int()).sum(dim=1)
    if mode == "one":  # p = 1: exactly one hidden per stay that had two or more
        assert hidden.tolist() == (present.sum(dim=1) >= 2).int().tolist()
    else:  # p = 1: everything but one
        assert (kept.sum(dim=1) == 1).all()


def test_dropout_rate_in_one_mode_is_p_per_eligible_stay():
    present = torch.ones(4000, 4, dtype=torch.bool)
    kept = modality_dropout(present, 0.3, "one", torch.Generator().manual_seed(0))
    assert abs(float((kept.sum(dim=1) == 3).float().mean()) - 0.3) < 0.03
    assert modality_dropout(present, 0.0, "one").equal(present)
    with pytest.raises(ValueError, match="drop_mode"):
        modality_dropout(present, 0.3, "some")
