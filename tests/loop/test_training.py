"""Pieces of the worker loop that need no cluster."""
import torch

from sweeper.loop.training import drop_modalities
from trainables.registry import task_loss


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


class _Checkpoint:
    def __init__(self, folder):
        self.folder = folder

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(str(self.folder))


def test_a_finished_trial_resumed_from_its_final_checkpoint_reports_it_again_without_training(synth_stays, in_memory_session, tmp_path):
    """Ctrl-C can land after a trial's final report reached Train but before Tune saw it; on
    --resume Train hands the trial that final checkpoint (predictions, no training state)."""
    import shutil

    import pyarrow.parquet as pq

    from sweeper.data.schema import read_manifest
    from sweeper.loop.outputs import FINAL_METRICS_FILE, PREDICTIONS_FILE
    from sweeper.loop.training import run_training
    from trainables import registry

    config = {**registry.get("picme.supervised").defaults, "method": "picme.supervised", "task": "ihm", "seed": 0, "final": True,
              "modalities": ["timeseries", "demographics"], "max_epochs": 3, "patience": 3, "d": 16, "lr": 2e-3, "batch_size": 64,
              "manifest": read_manifest(synth_stays)}
    first = in_memory_session(synth_stays)
    run_training(config, first)
    final = first.reports[-1]
    assert final["done"] and len(first.reports) == 3

    again = in_memory_session(synth_stays)
    again.checkpoint = lambda: _Checkpoint(first.artifact)
    run_training(config, again)
    # One report, the same result, no epoch trained (busy_s is the resumed trial's own time).
    without_busy = lambda report: {k: v for k, v in report.items() if k != "busy_s"}  # noqa: E731
    assert [without_busy(r) for r in again.reports] == [without_busy(final)] and again.reports[0]["busy_s"] < final["busy_s"]
    assert again.predictions.equals(pq.read_table(first.artifact / PREDICTIONS_FILE))

    # A final checkpoint without its metrics (written by an older sweeper) trains the trial again.
    old = tmp_path / "old"
    shutil.copytree(first.artifact, old)
    (old / FINAL_METRICS_FILE).unlink()
    retrained = in_memory_session(synth_stays)
    retrained.checkpoint = lambda: _Checkpoint(old)
    run_training(config, retrained)
    assert [r["epoch"] for r in retrained.reports] == [1, 2, 3] and retrained.reports[-1]["test_auroc"] == final["test_auroc"]
