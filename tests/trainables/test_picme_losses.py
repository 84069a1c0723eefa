"""PiCME contrastive losses (METHODS.md §1) against values computed by hand with plain Python math."""
from __future__ import annotations

import math

import pytest
import torch

from trainables.picme.losses import ContrastiveLoss, info_nce, ovo_terms

TAU = 0.5
# Tiny explicit batch: N = 3 stays, d = 2, three modalities.
X1 = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
X2 = [[0.8, 0.6], [-1.0, 1.0], [2.0, 0.5]]
X3 = [[3.0, -1.0], [0.5, 0.5], [-1.0, 2.0]]


def _cosine(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def _one_way(queries: list[list[float]], keys: list[list[float]], tau: float) -> float:
    """-1/N Σ_k log( exp(sim(q_k, key_k)/τ) / Σ_m exp(sim(q_k, key_m)/τ) ), by explicit loops."""
    total = 0.0
    for k, q in enumerate(queries):
        scores = [math.exp(_cosine(q, key) / tau) for key in keys]
        total += -math.log(scores[k] / sum(scores))
    return total / len(queries)


def _mean_of(rows_per_modality: list[list[list[float]]]) -> list[list[float]]:
    n, d = len(rows_per_modality[0]), len(rows_per_modality[0][0])
    return [[sum(rows[k][c] for rows in rows_per_modality) / len(rows_per_modality) for c in range(d)] for k in range(n)]


def _hand_ovo(modalities: list[list[list[float]]], tau: float) -> list[float]:
    return [_one_way(x, _mean_of(modalities[:i] + modalities[i + 1 :]), tau) for i, x in enumerate(modalities)]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _log_tau(tau: float = TAU) -> torch.Tensor:
    return torch.tensor(math.log(tau), dtype=torch.float64)


def test_info_nce_matches_hand_computation():
    expected = _one_way(X1, X2, TAU) + _one_way(X2, X1, TAU)
    assert info_nce(_t(X1), _t(X2), _log_tau()).item() == pytest.approx(expected, abs=1e-5)


def test_ovo_terms_match_hand_computation():
    terms = ovo_terms([_t(X1), _t(X2), _t(X3)], _log_tau())
    assert terms.tolist() == pytest.approx(_hand_ovo([X1, X2, X3], TAU), abs=1e-5)


def test_contrastive_loss_two_modalities_is_symmetric_info_nce():
    module = ContrastiveLoss(2).double()
    assert module.tau == pytest.approx(0.07)
    out = module([_t(X1), _t(X2)])
    directions = [_one_way(X1, X2, 0.07), _one_way(X2, X1, 0.07)]
    assert out["terms"].tolist() == pytest.approx(directions, abs=1e-5)
    assert out["loss"].item() == pytest.approx(sum(directions), abs=1e-5)
    assert out["lam"].tolist() == pytest.approx([0.5, 0.5])  # w is unused for M == 2


def test_weighted_ovo_with_uniform_lambda_is_plain_ovo():
    module = ContrastiveLoss(3).double()
    with torch.no_grad():
        module.log_tau.fill_(math.log(TAU))
    out = module([_t(X1), _t(X2), _t(X3)])
    hand = _hand_ovo([X1, X2, X3], TAU)
    assert out["lam"].tolist() == pytest.approx([1 / 3] * 3)
    assert out["loss"].item() == pytest.approx(sum(hand) / 3, abs=1e-5)


def test_weighted_ovo_with_nonuniform_lambda_and_gradients():
    module = ContrastiveLoss(3).double()
    w = [0.3, -1.2, 2.0]
    with torch.no_grad():
        module.w.copy_(torch.tensor(w, dtype=torch.float64))
        module.log_tau.fill_(math.log(TAU))
    out = module([_t(X1), _t(X2), _t(X3)])
    lam = [math.exp(v) / sum(math.exp(u) for u in w) for v in w]
    hand = _hand_ovo([X1, X2, X3], TAU)
    assert out["lam"].tolist() == pytest.approx(lam, abs=1e-9)
    assert out["loss"].item() == pytest.approx(sum(a * b for a, b in zip(lam, hand)), abs=1e-5)
    out["loss"].backward()
    assert module.w.grad is not None and module.w.grad.abs().sum() > 0
    assert module.log_tau.grad is not None and module.log_tau.grad.abs() > 0


def test_rejects_incomplete_or_mismatched_inputs():
    module = ContrastiveLoss(3)
    with pytest.raises(ValueError, match="complete rows"):
        module([torch.randn(4, 2), torch.randn(3, 2), torch.randn(4, 2)])
    with pytest.raises(ValueError, match="built for 3"):
        module([torch.randn(4, 2), torch.randn(4, 2)])
    with pytest.raises(ValueError, match="at least 3"):
        ovo_terms([torch.randn(4, 2), torch.randn(4, 2)], torch.tensor(0.0))


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy CPU the thread handoffs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("n_modalities", [2, 3])
def test_learning_aligns_noisy_views(n_modalities, one_thread):
    torch.manual_seed(0)
    n, d = 32, 8
    points = torch.randn(n, d)
    views = [points + 0.3 * torch.randn(n, d) for _ in range(n_modalities)]
    projections = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(n_modalities))
    criterion = ContrastiveLoss(n_modalities)
    optimizer = torch.optim.Adam([*projections.parameters(), *criterion.parameters()], lr=3e-2)

    def step() -> torch.Tensor:
        return criterion([proj(view) for proj, view in zip(projections, views)])["loss"]

    start = step().item()
    for _ in range(100):  # ends near 1% of chance
        optimizer.zero_grad()
        loss = step()
        loss.backward()
        optimizer.step()
    end = step().item()
    chance = math.log(n) * (2 if n_modalities == 2 else 1)  # InfoNCE sums two directions
    assert start > 0.5 * chance  # τ = 0.07 makes random projections start above chance
    assert end < 0.1 * chance, (start, end)
