"""The training loop every Ray Train worker runs, whatever the method.

Reads its split shards through Ray Data (``ray.train.get_dataset_shard``), builds the trainable's
model, trains with early stopping on the validation metric the spec selects by (AUROC by default), reports one result per epoch (ASHA's
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
MODEL_FILE = "model.pt"
STATE_FILE = "state.pt"
FINAL_METRICS_FILE = "final_metrics.json"  # beside the predictions: a resumed finished trial reports them again


def choose_device():
    """CUDA when this worker really has it; CPU otherwise (declared-but-absent GPUs included)."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _node_id() -> str | None:
    """The Ray node this worker runs on (None outside Ray, e.g. in unit tests)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def resolve_features(features: dict | None) -> dict:
    """``{modality: (ids, matrix)}`` from the engine's ``{modality: ObjectRef}`` (or plain tuples)."""
    if not features:
        return {}
    import ray

    return {m: (ray.get(v) if isinstance(v, ray.ObjectRef) else v) for m, v in features.items()}


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


def epoch_batches(n: int, batch_size: int, generator, lengths=None, pool: int = 50):
    """One epoch's mini-batches of row indices, in random order.

    With ``lengths`` (token inputs), rows are shuffled, cut into pools of ``pool`` batches, sorted
    by length within each pool and batched, so a batch pads to about its own length; the batch
    order is shuffled again.
    """
    import torch

    order = torch.randperm(n, generator=generator)
    if lengths is None:
        return [order[start : start + batch_size] for start in range(0, n, batch_size)]
    batches = []
    for start in range(0, n, batch_size * pool):
        chunk = order[start : start + batch_size * pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


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
    from trainables.encoders import lora_rank

    torch.set_num_threads(int(config.get("torch_threads", 1)))
    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = choose_device()
    where = {"node_id": _node_id(), "device": device.type}  # reported with every result
    checkpoint = session.checkpoint()
    saved = None
    if checkpoint is not None:  # a retried trial resumes where it stopped
        with checkpoint.as_directory() as folder:
            if os.path.isfile(os.path.join(folder, FINAL_METRICS_FILE)):
                # Its last report reached Train but not Tune (the driver was stopped right then):
                # the trial is finished, so report the same result again, before reading any data.
                return _report_final_again(folder, session, where)
            if os.path.isfile(os.path.join(folder, STATE_FILE)):
                saved = torch.load(os.path.join(folder, STATE_FILE), weights_only=False)
            # Otherwise a final checkpoint from an older run without its metrics: train again.

    manifest = Manifest.from_json(config["manifest_json"])
    task, final = config["task"], bool(config.get("final", False))
    trainable = registry.get(config["method"])
    collate = StaysCollate(
        manifest, config["modalities"], task, inputs=trainable.inputs, window_hours=float(config.get("window_hours", 2.0)),
        features=resolve_features(config.get("features")), raw_text=lora_rank(config) > 0,
    )
    splits = ("train", "val", "test") if final or config.get("stage") else ("train", "val")
    # Small cohorts fit in memory: read each shard once through Ray Data, then iterate tensors.
    data = {
        split: collate_all(session.dataset(split).iter_batches(batch_size=1024, batch_format="numpy"), collate)
        for split in splits
    }

    if config.get("stage"):  # a stage other trainables depend on (e.g. picme.pretrain)
        return registry.stage(config["stage"]).run(config, data, collate, session)
    if trainable.fit is not None:
        return _run_estimator(trainable, config, collate, data, session, final)
    model = trainable.build_model(config, collate.input_shapes(), collate.n_outputs()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)))
    loss_fn = task_loss(task, data["train"]["label"]).to(device)
    max_epochs, patience = int(config["max_epochs"]), int(config["patience"])
    batch_size = int(config["batch_size"])

    select = str(config.get("select_metric", "auroc"))  # early stopping and the kept weights follow it
    start_epoch, best_score, best_state, since_best = 0, -np.inf, None, 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start_epoch, best_score, best_state, since_best = saved["epoch"], saved["best_score"], saved["best_state"], saved["since_best"]

    generator = torch.Generator().manual_seed(seed)
    n_train = len(data["train"]["label"])
    lengths = data["train"]["tok_mask"].sum(dim=1) if "tok_mask" in data["train"] else None
    checkpoint_every = int(config.get("checkpoint_every", 0))
    missing_rate = float(config.get("train_missing_rate", 0.0))
    for epoch in range(start_epoch, max_epochs):
        started = time.perf_counter()
        if hasattr(model, "on_epoch_start"):  # e.g. medfuse's transfer warm-up
            model.on_epoch_start(epoch)
        model.train()
        total, seen = 0.0, 0
        for index in epoch_batches(n_train, batch_size, generator, lengths):
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
        improved = val[select] > best_score
        if improved:
            best_score, since_best = val[select], 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        stop = since_best >= patience or epoch + 1 == max_epochs
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "train_seconds": train_seconds,
            **where,
            f"best_val_{select}": best_score,
            **{f"val_{k}": v for k, v in val.items()},
        }
        save_state = checkpoint_every and (epoch + 1) % checkpoint_every == 0 and not stop
        if final and stop:
            model.load_state_dict(best_state)
            test_scores = predict(model, data["test"], device)
            test = compute_metrics(_labels_numpy(data["test"]), test_scores)
            metrics.update({f"test_{k}": v for k, v in test.items()}, done=True, epochs_trained=epoch + 1)
            metrics.update(modality_attributions(model, data["test"], device))
            with tempfile.TemporaryDirectory() as folder:
                _write_predictions(os.path.join(folder, PREDICTIONS_FILE), data["test"], test_scores)
                _write_final_metrics(folder, metrics)
                if config.get("save_model"):  # the best-epoch weights, for reuse (e.g. medfuse transfer_from)
                    torch.save(model.export() if hasattr(model, "export") else {"state_dict": model.state_dict()}, os.path.join(folder, MODEL_FILE))
                session.report(metrics, folder)
            return
        if save_state:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "best_score": best_score, "best_state": best_state, "since_best": since_best},
                    os.path.join(folder, STATE_FILE),
                )
                session.report(metrics, folder)
        else:
            session.report(metrics)
        if stop:
            return


def modality_attributions(model, data: dict, device, max_stays: int = 1000) -> dict:
    """``ig_<modality>``: each modality block's share of Integrated-Gradients attribution on the
    concatenated embeddings (models with ``embed`` and ``fuse``), over up to ``max_stays`` test stays
    that have every modality of the subset (an absent block is the learned missing vector, which
    says nothing about what the modality carries). Several outputs (phenotypes) are attributed
    through their mean logit."""
    if not (hasattr(model, "embed") and hasattr(model, "fuse")):
        return {}
    import torch

    from sweeper.evaluation.analyses import block_attributions

    complete = torch.nonzero(data["present"].all(dim=1)).flatten()[:max_stays]
    if len(complete) < 2:
        return {}
    model.eval()
    batch = _to_device(_select(data, complete), device)
    with torch.no_grad():
        z = model.embed(batch)
    modalities = list(model.modalities)

    def forward(x):
        logits = model.fuse(x)
        return logits.mean(dim=1) if logits.ndim == 2 and logits.shape[1] > 1 else logits

    # Baseline: the mean embedding, so a block's constant offset earns it no attribution.
    shares = block_attributions(forward, z, modalities, z.shape[1] // len(modalities), baseline=z.mean(dim=0))
    return {f"ig_{m}": float(v) for m, v in shares.items()}


def _run_estimator(trainable, config: dict, collate, data: dict, session, final: bool) -> None:
    """A non-torch method (sklearn-style estimator): fit once on train, report validation metrics
    as epoch 1 and, in the final phase, test metrics and predictions."""
    from sweeper.evaluation.metrics import compute_metrics

    started = time.perf_counter()
    estimator = trainable.build_model(config, collate.n_outputs(), int(config["seed"]))
    arrays = {split: (part["features"].numpy(), _labels_numpy(part)) for split, part in data.items()}
    trainable.fit(estimator, *arrays["train"], *arrays["val"])
    train_seconds = time.perf_counter() - started
    scores = {split: _estimator_scores(estimator, x, collate.n_outputs()) for split, (x, _) in arrays.items() if split != "train"}
    val = compute_metrics(arrays["val"][1], scores["val"])
    metrics = {"epoch": 1, "train_seconds": train_seconds, "node_id": _node_id(), "device": "cpu", f"best_val_{config.get('select_metric', 'auroc')}": val[config.get("select_metric", "auroc")], **{f"val_{k}": v for k, v in val.items()}}
    if not final:
        session.report(metrics)
        return
    test = compute_metrics(arrays["test"][1], scores["test"])
    metrics.update({f"test_{k}": v for k, v in test.items()}, done=True, epochs_trained=1)
    with tempfile.TemporaryDirectory() as folder:
        _write_predictions(os.path.join(folder, PREDICTIONS_FILE), data["test"], scores["test"])
        session.report(metrics, folder)


def _write_final_metrics(folder: str, metrics: dict) -> None:
    import json

    with open(os.path.join(folder, FINAL_METRICS_FILE), "w") as handle:
        json.dump({k: (v if isinstance(v, (str, bool, int, type(None))) else float(v)) for k, v in metrics.items()}, handle)


def _report_final_again(folder: str, session, where: dict) -> None:
    import json
    import shutil

    with open(os.path.join(folder, FINAL_METRICS_FILE)) as handle:
        metrics = {**json.load(handle), **where}  # this worker reports it (its node may be a new one)
    with tempfile.TemporaryDirectory() as copy:  # Train persists the report's folder as a new checkpoint
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        session.report(metrics, copy)


def _estimator_scores(estimator, x: np.ndarray, n_outputs: int) -> np.ndarray:
    """Positive-class probabilities: [N] for one label, [N, L] for several."""
    proba = estimator.predict_proba(x)
    if isinstance(proba, list):  # one [N, 2] array per label (sklearn multi-output)
        return np.stack([p[:, 1] for p in proba], axis=1)
    proba = np.asarray(proba)
    return proba[:, 1] if n_outputs == 1 else proba


def _write_predictions(path: str, data: dict, scores: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = _labels_numpy(data)
    as_lists = lambda a: pa.array([np.atleast_1d(row).astype(np.float32) for row in a], type=pa.list_(pa.float32()))  # noqa: E731
    pq.write_table(pa.table({"stay_id": pa.array(data["stay_id"]), "label": as_lists(labels), "score": as_lists(scores)}), path)
