"""Pieces of the worker loop that need no cluster."""
import torch

from sweeper.tune.worker import drop_modalities, task_loss


def test_drop_modalities_hides_at_the_rate_and_never_the_last_one():
    generator = torch.Generator().manual_seed(0)
    present = torch.rand((20000, 5), generator=generator) < 0.7
    kept = drop_modalities(present, 0.3, generator)
    assert not (kept & ~present).any()  # never invents a modality
    assert (kept.any(dim=1) == present.any(dim=1)).all()  # a stay keeps at least one
    rate = 1 - kept.sum().item() / present.sum().item()
    assert 0.25 < rate < 0.32  # ~0.3, slightly less: last modalities are given back
    single = present.sum(dim=1) == 1
    assert (kept[single] == present[single]).all()


def test_drop_modalities_zero_rate_is_identity():
    present = torch.tensor([[True, False], [True, True]])
    assert torch.equal(drop_modalities(present, 0.0, torch.Generator()), present)


def test_ihm_loss_weights_positives_by_the_class_ratio():
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss = task_loss("ihm", labels)
    assert torch.isclose(loss.pos_weight, torch.tensor(3.0))
