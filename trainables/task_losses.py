"""Default task losses that need a module of their own (``trainables.registry.task_loss``)."""
from __future__ import annotations

import torch
from torch import nn


class KnownTargetsLoss(nn.Module):
    """``loss`` over the entries whose target is known: a NaN target (``los_gt_7d`` where the length
    of stay is unknown) is left out; a batch with none known gives 0 (with the graph kept)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(target)
        if not bool(known.any()):
            return prediction.sum() * 0.0
        return self.loss(prediction[known], target[known])
