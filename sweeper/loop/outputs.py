"""What a trial hands back besides its metrics (test predictions, the final metrics a resumed trial
reports again) and the sessions the loop reports through: a Ray Train worker's (``train`` runtime)
or a Tune trial actor's (``inline`` runtime)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

PREDICTIONS_FILE = "predictions.parquet"
MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
FINAL_METRICS_FILE = "final_metrics.json"  # beside the predictions: a resumed finished trial reports them again


class TrainSession:
    """Where the loop gets data and sends results inside a Ray Train worker."""

    def __init__(self, entered: float | None = None):
        self.entered = entered  # when the worker entered its training function (perf_counter)

    def dataset(self, split: str):
        import ray.train

        return ray.train.get_dataset_shard(split)

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()


class TuneSession:
    """Where the loop gets data and sends results inside a Tune trial actor (the ``inline`` runtime):
    the run's materialized splits, ``tune.report`` and ``tune.get_checkpoint``."""

    reused = True  # Tune reuses the actor for the next trial: collated splits may be kept

    def __init__(self, datasets: dict, entered: float | None = None):
        self.datasets = datasets
        self.entered = entered  # when the trial entered its training function (perf_counter)

    def dataset(self, split: str):
        return self.datasets[split].iterator()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        from ray import tune

        return tune.get_checkpoint()


def labels_numpy(data: dict) -> np.ndarray:
    return data["label"].numpy()


def write_predictions(path: str, data: dict, scores: np.ndarray) -> None:
    """Test predictions of a final trial: stay id, label and score, one row per stay."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = labels_numpy(data)
    as_lists = lambda a: pa.array([np.atleast_1d(row).astype(np.float32) for row in a], type=pa.list_(pa.float32()))  # noqa: E731
    pq.write_table(pa.table({"stay_id": pa.array(data["stay_id"]), "label": as_lists(labels), "score": as_lists(scores)}), path)


def write_final_metrics(folder: str, metrics: dict) -> None:
    with open(os.path.join(folder, FINAL_METRICS_FILE), "w") as handle:
        json.dump({k: (v if isinstance(v, (str, bool, int, type(None))) else float(v)) for k, v in metrics.items()}, handle)


def report_final_again(folder: str, session, where: dict) -> None:
    """A trial resumed from its final checkpoint (its last report reached Train, not Tune): report
    the same result again, from this worker (its node may be a new one)."""
    with open(os.path.join(folder, FINAL_METRICS_FILE)) as handle:
        metrics = {**json.load(handle), **where}
    with tempfile.TemporaryDirectory() as copy:  # Train persists the report's folder as a new checkpoint
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        session.report(metrics, copy)


def report_final(session, metrics: dict, data: dict, scores: np.ndarray, model_export: dict | None = None, extras: dict | None = None) -> None:
    """The final report: metrics, with the test predictions (and the exported model) as its checkpoint;
    ``extras`` (``{set: (data, scores)}``, ``sweeper.loop.extra_sets``) are saved beside them."""
    import torch

    from sweeper.loop.extra_sets import EXTRA_PREDICTIONS

    with tempfile.TemporaryDirectory() as folder:
        write_predictions(os.path.join(folder, PREDICTIONS_FILE), data, scores)
        for name, (extra_data, extra_scores) in (extras or {}).items():
            write_predictions(os.path.join(folder, EXTRA_PREDICTIONS.format(name)), extra_data, extra_scores)
        write_final_metrics(folder, metrics)
        if model_export is not None:
            torch.save(model_export, os.path.join(folder, MODEL_FILE))
        session.report(metrics, folder)
