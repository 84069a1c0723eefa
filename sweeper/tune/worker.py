"""The training loop every Ray Train worker runs, whatever the method.

Reads its split shards through Ray Data (``ray.train.get_dataset_shard``), builds the trainable's
model, trains with early stopping on validation AUROC, reports one result per epoch (ASHA's
``epoch`` counter, validation metrics) and, in the final phase, stores test predictions in the
last report's checkpoint so the driver gets them through Train's storage, shared FS or not.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time

import numpy as np

PREDICTIONS_FILE = "predictions.parquet"
STATE_FILE = "state.pt"


def choose_device():
    """CUDA when this worker really has it; CPU otherwise (declared-but-absent GPUs included)."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def task_loss(task: str, labels):
    """The task's loss: weighted BCE (pos_weight = n_neg / n_pos) for ihm, BCE for phenotyping."""
    import torch

    if task == "ihm":
        positives = labels.sum().clamp(min=1.0)
        return torch.nn.BCEWithLogitsLoss(pos_weight=(len(labels) - positives) / positives)
    if task == "phenotyping":
        return torch.nn.BCEWithLogitsLoss()
    return torch.nn.MSELoss()


def drop_modalities(present, rate: float, generator):
    """Training-time missingness (the ``train_missing_rate`` axis): hide each present modality of a
    stay with probability ``rate``, never the stay's last present one."""
    import torch

    if rate <= 0:
        return present
    hidden = (torch.rand(present.shape, generator=generator) < rate) & present
    kept = present & ~hidden
    lost_all = ~kept.any(dim=1) & present.any(dim=1)
    if lost_all.any():  # give back one of the stay's own modalities, chosen at random
        scores = torch.rand(present.shape, generator=generator).masked_fill(~present, -1.0)
        restore = torch.zeros_like(present).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        kept = kept | (restore & lost_all.unsqueeze(1))
    return kept


def _to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def _select(data: dict, index) -> dict:
    return {k: v[index] for k, v in data.items()}


def predict(model, data: dict, device, batch_size: int = 512) -> np.ndarray:
    import torch

    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(data["label"]), batch_size):
            batch = _to_device(_select(data, slice(start, start + batch_size)), device)
            scores.append(torch.sigmoid(model(batch)["logits"]).float().cpu())
    out = torch.cat(scores).numpy()
    return out[:, 0] if out.shape[1] == 1 else out


def _labels_numpy(data: dict) -> np.ndarray:
    return data["label"].numpy()


class TrainSession:
    """Where the loop gets data and sends results inside a Ray Train worker."""

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


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker."""
    run_training(config, TrainSession())


def run_training(config: dict, session) -> None:
    """Train one config; ``session`` supplies datasets, reports and the resume checkpoint."""
    import torch

    from sweeper.data.loading import StaysCollate, collate_all
    from sweeper.data.schema import Manifest
    from sweeper.evaluation.metrics import compute_metrics
    from trainables import registry

    torch.set_num_threads(int(config.get("torch_threads", 1)))
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = choose_device()

    manifest = Manifest.from_json(config["manifest_json"])
    task, final = config["task"], bool(config.get("final", False))
    collate = StaysCollate(manifest, config["modalities"], task)
    splits = ("train", "val", "test") if final else ("train", "val")
    # Small cohorts fit in memory: read each shard once through Ray Data, then iterate tensors.
    data = {
        split: collate_all(session.dataset(split).iter_batches(batch_size=1024, batch_format="numpy"), collate)
        for split in splits
    }

    trainable = registry.get(config["method"])
    model = trainable.build_model(config, collate.input_shapes(), collate.n_outputs()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)))
    loss_fn = task_loss(task, data["train"]["label"]).to(device)
    max_epochs, patience = int(config["max_epochs"]), int(config["patience"])
    batch_size = int(config["batch_size"])

    start_epoch, best_auroc, best_state, since_best = 0, -np.inf, None, 0
    checkpoint = session.checkpoint()
    if checkpoint is not None:  # a retried trial resumes where it stopped
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, STATE_FILE), weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch, best_auroc, best_state, since_best = saved["epoch"], saved["best_auroc"], saved["best_state"], saved["since_best"]

    generator = torch.Generator().manual_seed(seed)
    n_train = len(data["train"]["label"])
    checkpoint_every = int(config.get("checkpoint_every", 0))
    missing_rate = float(config.get("train_missing_rate", 0.0))
    for epoch in range(start_epoch, max_epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator)
        total, seen = 0.0, 0
        for start in range(0, n_train, batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            batch = _select(data["train"], index)
            batch["present"] = drop_modalities(batch["present"], missing_rate, generator)
            batch = _to_device(batch, device)
            output = model(batch)
            logits = output["logits"]
            target = batch["label"].reshape(logits.shape)
            loss = loss_fn(logits, target) + output.get("aux_loss", 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        train_seconds = time.perf_counter() - started

        val_scores = predict(model, data["val"], device)
        val = compute_metrics(_labels_numpy(data["val"]), val_scores)
        improved = val["auroc"] > best_auroc
        if improved:
            best_auroc, since_best = val["auroc"], 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        stop = since_best >= patience or epoch + 1 == max_epochs
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "train_seconds": train_seconds,
            "best_val_auroc": best_auroc,
            **{f"val_{k}": v for k, v in val.items()},
        }
        save_state = checkpoint_every and (epoch + 1) % checkpoint_every == 0 and not stop
        if final and stop:
            model.load_state_dict(best_state)
            test_scores = predict(model, data["test"], device)
            test = compute_metrics(_labels_numpy(data["test"]), test_scores)
            metrics.update({f"test_{k}": v for k, v in test.items()}, done=True, epochs_trained=epoch + 1)
            with tempfile.TemporaryDirectory() as folder:
                _write_predictions(os.path.join(folder, PREDICTIONS_FILE), data["test"], test_scores)
                session.report(metrics, folder)
            return
        if save_state:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "best_auroc": best_auroc, "best_state": best_state, "since_best": since_best},
                    os.path.join(folder, STATE_FILE),
                )
                session.report(metrics, folder)
        else:
            session.report(metrics)
        if stop:
            return


def _write_predictions(path: str, data: dict, scores: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = _labels_numpy(data)
    as_lists = lambda a: pa.array([np.atleast_1d(row).astype(np.float32) for row in a], type=pa.list_(pa.float32()))  # noqa: E731
    pq.write_table(pa.table({"stay_id": pa.array(data["stay_id"]), "label": as_lists(labels), "score": as_lists(scores)}), path)
