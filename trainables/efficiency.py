"""What a trained torch model costs to deploy: FLOPs per stay and deployed parameters.

``flops_per_stay`` counts with ``torch.utils.flop_counter.FlopCounterMode`` over one evaluation
forward pass (no gradients) and divides by the batch's stays; the counter counts a multiply-add as
two FLOPs (a ``Linear(i, o)`` on N rows: 2·N·i·o). ``deployed_parameters`` leaves out the
training-only parts a method names (e.g. MedMIX's teacher projections).
"""
from __future__ import annotations


def flops_per_stay(model, batch: dict) -> float:
    """FLOPs of one evaluation forward pass over ``batch``, per stay (teachers are never read in eval)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / max(len(batch["present"]), 1)


def deployed_parameters(model, training_only: tuple[str, ...] = ("teacher_proj.",)) -> int:
    """Parameters of the deployed model: every parameter but those under ``training_only`` prefixes."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(training_only))
