"""Multitask losses over labels with unknowns (docs/methods.md, "SLM projectors"; paper 003 Eqs. 1-4).

Both take logits ``[N, K]`` and targets ``[N, K]`` of 0, 1 and NaN (unknown); logits may also be
``[N, S, K]`` (one row per source, NaN where a stay lacks the source: ``slm.projector``'s isolated
training), each row scored against the stay's targets. An unknown entry is
left out: it adds nothing to the loss and no gradient (its term is selected away with ``where``,
not multiplied by zero, so a NaN can never leak into the gradient). Both are sums over the known
(stay, label) terms divided by the batch's stays, as in Eq. 1 averaged over a batch.

- ``WeightedBCE`` (L_avg, Eq. 2): class-averaged weighted binary cross-entropy,
  ``w_k^+ = n_k / (2 K n_k^+)`` and ``w_k^- = n_k / (2 K n_k^-)`` from the training labels, where
  ``n_k`` counts label k's known entries (the paper's n; with unknowns it is counted per label).
- ``AsymmetricLoss`` (L_asl, Eq. 3): ``L+ = (1 - p) log p``, ``L- = p_m^γ- log(1 - p_m)``,
  ``p_m = max(p - m, 0)``; m = 0.05, γ- = 4 in the paper. The paper's ``(1 - p)`` factor on positives
  is its γ+ = 1 and is kept as written. ``p_m`` is clamped below 1 so ``log(1 - p_m)`` stays finite.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def class_weights(train_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_pos [K], w_neg [K])`` of Eq. 2 from ``[N, K]`` training labels with NaN unknowns; a
    class with no known entry of a kind gets weight 0 for it (there is nothing to weigh)."""
    labels = train_labels.reshape(len(train_labels), -1).float()
    known = ~torch.isnan(labels)
    k = labels.shape[1]
    n = known.sum(dim=0).float()
    positives = ((labels == 1) & known).sum(dim=0).float()
    negatives = n - positives
    w_pos = torch.where(positives > 0, n / (2 * k * positives.clamp(min=1)), torch.zeros_like(n))
    w_neg = torch.where(negatives > 0, n / (2 * k * negatives.clamp(min=1)), torch.zeros_like(n))
    return w_pos, w_neg


def _aligned(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits with NaN entries zeroed, targets broadcast to them, and which entries count."""
    if logits.dim() == 3:
        target = target.reshape(len(target), 1, -1).expand_as(logits)
    else:
        logits, target = logits.reshape(len(logits), -1), target.reshape(len(target), -1)
    known = ~torch.isnan(target) & ~torch.isnan(logits)
    return torch.nan_to_num(logits), target, known


class WeightedBCE(nn.Module):
    def __init__(self, train_labels: torch.Tensor):
        super().__init__()
        w_pos, w_neg = class_weights(train_labels)
        self.register_buffer("w_pos", w_pos)
        self.register_buffer("w_neg", w_neg)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target, known = _aligned(logits, target)
        positive = known & (target == 1)
        terms = torch.where(positive, self.w_pos * F.logsigmoid(logits), self.w_neg * F.logsigmoid(-logits))
        return -torch.where(known, terms, torch.zeros_like(terms)).sum() / len(logits)


class AsymmetricLoss(nn.Module):
    def __init__(self, margin: float = 0.05, gamma_neg: float = 4.0, eps: float = 1e-6):
        super().__init__()
        self.margin, self.gamma_neg, self.eps = float(margin), float(gamma_neg), float(eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target, known = _aligned(logits, target)
        positive = known & (target == 1)
        p = torch.sigmoid(logits)
        p_m = (p - self.margin).clamp(min=0.0, max=1.0 - self.eps)
        loss_pos = (1 - p) * F.logsigmoid(logits)
        loss_neg = p_m.pow(self.gamma_neg) * torch.log1p(-p_m)
        terms = torch.where(positive, loss_pos, loss_neg)
        return -torch.where(known, terms, torch.zeros_like(terms)).sum() / len(logits)


class Weighted(nn.Module):
    """``beta`` times a task loss (β of the projector objective, reconstruction + β·task)."""

    def __init__(self, loss: nn.Module, beta: float):
        super().__init__()
        self.loss, self.beta = loss, float(beta)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.beta * self.loss(logits, target)


LOSSES = ("avg", "asl")


def multitask_loss(task: str, train_labels: torch.Tensor, config: dict) -> nn.Module:
    """The config's ``loss``: ``avg`` (WeightedBCE) or ``asl`` (AsymmetricLoss with ``asl_margin``,
    ``asl_gamma_neg``), times ``beta``, for any task (a single-label task is K = 1)."""
    from sweeper.errors import SweeperError

    kind, beta = str(config.get("loss", "asl")), float(config.get("beta", 1.0))
    if kind == "avg":
        return Weighted(WeightedBCE(train_labels), beta)
    if kind == "asl":
        return Weighted(AsymmetricLoss(float(config.get("asl_margin", 0.05)), float(config.get("asl_gamma_neg", 4.0))), beta)
    raise SweeperError(f"loss {kind!r}: unknown; use one of {', '.join(LOSSES)}")
