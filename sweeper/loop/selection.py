"""What keeps a trial's best weights and early-stops it, and the sign that makes it higher-is-better."""
from __future__ import annotations

from sweeper.evaluation.metrics import lower_is_better


def selection(config: dict, by_loss: bool = False) -> tuple[str, float]:
    """``(name, sign)``: the validation loss (``by_loss``), or the spec's metric for the trial's task
    (``select_metric``), and −1 where lower is better (the loss, MSE, MAE, Brier, ACE), else +1.
    ``val_objective`` (sign × value), which every trial reports, is what the tune phase maximises
    when its cells' metrics differ in name or direction (``sweeper.engine.phases.objective``)."""
    name = "loss" if by_loss else str(config.get("select_metric", "auroc"))
    return name, -1.0 if by_loss or lower_is_better(name) else 1.0
