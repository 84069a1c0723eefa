"""The training loop every trial runs, whatever the method and the runtime.

Reads its split shards through the session (``ray.train.get_dataset_shard`` in a Train worker),
builds the trainable's model and asks the trainable for everything method-specific: its loss, its
optimizer and parameter groups, what checkpoints are selected by, its epoch hook, its export and
its attributions. Trains with early stopping, reports one result per epoch (ASHA's ``epoch``
counter, validation metrics) and, in the final phase, stores test predictions in the last
report's checkpoint so the driver gets them through Train's storage, shared FS or not.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
import tempfile
import time

import numpy as np

from sweeper.loop.outputs import FINAL_METRICS_FILE, STATE_FILE, labels_numpy, report_final, report_final_again
from sweeper.loop.selection import selection


def choose_device():
    """CUDA when this worker really has it; CPU otherwise (declared-but-absent GPUs included)."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def reads_splits(config: dict) -> tuple[str, ...]:
    """The splits a trial reads: test only in the final phase and in stages (their artifacts cover
    every stay)."""
    return ("train", "val", "test") if config.get("final") or config.get("stage") else ("train", "val")


def _node_id() -> str | None:
    """The Ray node this worker runs on (None outside Ray, e.g. in unit tests)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _resolve(value):
    """A value the engine put in the object store once (the manifest, embeddings), or the value."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def resolve_features(features: dict | None) -> dict:
    """``{modality: (ids, matrix)}`` from the engine's ``{modality: ObjectRef}`` (or plain tuples)."""
    return {m: _resolve(v) for m, v in (features or {}).items()}


def drop_modalities(present, rate: float, generator, only: int | None = None):
    """Training-time missingness (the ``train_missing_rate`` axis): hide each present modality of a
    stay with probability ``rate`` (only column ``only`` when given: the ``train_drop`` axis naming
    one modality), never the stay's last present one."""
    import torch

    if rate <= 0:
        return present
    hidden = (torch.rand(present.shape, generator=generator) < rate) & present
    if only is not None:
        hidden[:, [j != only for j in range(present.shape[1])]] = False
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


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def select_rows(data: dict, index) -> dict:
    return {k: v[index] for k, v in data.items()}


def predict(model, data: dict, device, batch_size: int = 512, regression: bool = False) -> np.ndarray:
    """Probabilities (the sigmoid of the model's logits), or with ``regression`` (``los``) the
    model's outputs themselves: its predictions of log1p(hours)."""
    import torch

    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(data["label"]), batch_size):
            batch = to_device(select_rows(data, slice(start, start + batch_size)), device)
            logits = model(batch)["logits"]
            scores.append((logits if regression else torch.sigmoid(logits)).float().cpu())
    out = torch.cat(scores).numpy()
    return out[:, 0] if out.shape[1] == 1 else out


def validation_loss(model, data: dict, loss_fn, device, batch_size: int = 512) -> float:
    """Mean loss over the validation stays (what ``select: loss`` follows)."""
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data["label"]), batch_size):
            batch = to_device(select_rows(data, slice(start, start + batch_size)), device)
            output = model(batch)
            total += float(loss_fn(output["logits"], batch["label"].reshape(output["logits"].shape))) * len(batch["label"])
    return total / max(len(data["label"]), 1)


_COLLATED: OrderedDict = OrderedDict()
COLLATED_KEPT = 6
"""Collated splits a reused trial actor keeps (``inline``): the next trial of the same cell, task and
inputs skips decoding the images and hashing the notes again."""


def _collated(session, split: str, collate, config: dict) -> dict:
    """One split, collated; kept in this process when the session's process is reused across trials."""
    from sweeper.data.loading import collate_all

    read = lambda: collate_all(session.dataset(split).iter_batches(batch_size=1024, batch_format="numpy"), collate)  # noqa: E731
    if not getattr(session, "reused", False):
        return read()
    features = tuple(sorted((m, v.hex() if hasattr(v, "hex") else id(v)) for m, v in (config.get("features") or {}).items()))
    key = (collate.manifest.content_hash, split, collate.modalities, collate.task, collate.hidden_labels, collate.inputs, collate.window_hours, collate.raw_text, features)
    if key in _COLLATED:
        _COLLATED.move_to_end(key)
    else:
        _COLLATED[key] = read()
        while len(_COLLATED) > COLLATED_KEPT:
            _COLLATED.popitem(last=False)
    return _COLLATED[key]


class BusyClock:
    """The session, with ``busy_s`` (seconds since the trial entered the loop) added to every
    report: what a trial really costs, against the wall time its phase spent on it."""

    def __init__(self, session):
        # From the runtime's training function entry (imports included) when the session knows it.
        self.session, self.entered = session, getattr(session, "entered", None) or time.perf_counter()
        self.reused = getattr(session, "reused", False)

    def dataset(self, split: str):
        return self.session.dataset(split)

    def checkpoint(self):
        return self.session.checkpoint()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.session.report({**metrics, "busy_s": time.perf_counter() - self.entered}, checkpoint_dir)


def _config_if_asked(loss, config: dict) -> tuple:
    """``(config,)`` when a trainable's ``loss`` takes a third argument (a loss chosen or weighted
    by its config, e.g. ``slm.projector``'s), else ``()``."""
    import inspect

    try:
        return (config,) if len(inspect.signature(loss).parameters) >= 3 else ()
    except (TypeError, ValueError):
        return ()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker."""
    entered = time.perf_counter()
    from sweeper.loop.outputs import TrainSession

    run_training(config, TrainSession(entered))


def run_training(config: dict, session) -> None:
    """Train one config; ``session`` supplies datasets, reports and the resume checkpoint."""
    import torch

    from sweeper.data.loading import StaysCollate
    from sweeper.encode.text import lora_rank
    from sweeper.loop.estimator import run_estimator
    from sweeper.safeload import load_weights
    from trainables import registry

    session = BusyClock(session)
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
                return report_final_again(folder, session, where)
            if os.path.isfile(os.path.join(folder, STATE_FILE)):
                saved = load_weights(os.path.join(folder, STATE_FILE), "trial checkpoint")
            # Otherwise a final checkpoint from an older run without its metrics: train again.

    final = bool(config.get("final", False))
    trainable = registry.get(config["method"])
    collate = StaysCollate(
        _resolve(config["manifest"]), config["modalities"], config["task"], inputs=trainable.inputs,
        window_hours=float(config.get("window_hours", 2.0)), features=resolve_features(config.get("features")), raw_text=lora_rank(config) > 0,
        hidden_labels=float(config.get("hidden_labels", 0.0)),
    )
    # Small cohorts fit in memory: read each shard once through Ray Data, then iterate tensors.
    data = {split: _collated(session, split, collate, config) for split in reads_splits(config)}
    if config.get("stage"):  # a stage other trainables depend on (e.g. picme.pretrain)
        return registry.stage(config["stage"]).run(config, data, collate, session)
    if trainable.fit is not None:
        return run_estimator(trainable, config, collate, data, session, final, where)
    return _train_torch(trainable, config, collate, data, session, saved, device, where)


def _train_torch(trainable, config: dict, collate, data: dict, session, saved, device, where: dict) -> None:
    import torch

    from sweeper.data.schema import REGRESSION_TASKS
    from sweeper.evaluation.metrics import compute_metrics, task_metrics
    from sweeper.loop.costs import inference_costs
    from sweeper.loop.extra_sets import score_extra_sets

    seed, final = int(config["seed"]), bool(config.get("final", False))
    regression, metrics_of_task = config["task"] in REGRESSION_TASKS, task_metrics(config["task"])
    if trainable.prepare is not None:  # from train and val only: the test split is never handed over
        config = {**config, **trainable.prepare(config, {split: data[split] for split in ("train", "val")})}
    model = trainable.build_model(config, collate.input_shapes(), collate.n_outputs()).to(device)
    optimizer = trainable.optimizer(model, config)
    warmup = int(config.get("warmup_steps", 0) or 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup)) if warmup > 0 else None
    grad_clip = float(config.get("grad_clip") or 0.0)
    loss_fn = trainable.loss(config["task"], data["train"]["label"], *_config_if_asked(trainable.loss, config)).to(device)
    max_epochs, patience, batch_size = int(config["max_epochs"]), int(config["patience"]), int(config["batch_size"])

    by_loss = trainable.select == "loss"  # otherwise the spec's metric on validation
    select, sign = selection(config, by_loss)
    start_epoch, best_score, best_state, since_best = 0, -np.inf, None, 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        start_epoch, best_score, best_state, since_best = saved["epoch"], saved["best_score"], saved["best_state"], saved["since_best"]

    generator = torch.Generator().manual_seed(seed)
    n_train = len(data["train"]["label"])
    lengths = data["train"]["tok_mask"].sum(dim=1) if "tok_mask" in data["train"] else None
    checkpoint_every = int(config.get("checkpoint_every", 0))
    missing_rate = float(config.get("train_missing_rate", 0.0))
    drop = str(config.get("train_drop", "each"))  # the train_drop axis: each modality, or one
    only = list(config["modalities"]).index(drop) if drop in config["modalities"] else None
    if drop != "each" and only is None:  # a cell without that modality trains on what it has
        missing_rate = 0.0
    for epoch in range(start_epoch, max_epochs):
        started = time.perf_counter()
        if trainable.on_epoch_start is not None:
            trainable.on_epoch_start(model, epoch)
        model.train()
        total, seen = 0.0, 0
        for index in epoch_batches(n_train, batch_size, generator, lengths):
            if len(index) < 2:  # BatchNorm needs two samples
                continue
            batch = select_rows(data["train"], index)
            batch["present"] = drop_modalities(batch["present"], missing_rate, generator, only)
            batch = to_device(batch, device)
            output = model(batch)
            logits = output["logits"]
            target = batch["label"].reshape(logits.shape) if batch["label"].numel() == logits.numel() else batch["label"]  # [N, S, K]: per-source rows
            loss = loss_fn(logits, target) + output.get("aux_loss", 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        train_seconds = time.perf_counter() - started

        val = compute_metrics(labels_numpy(data["val"]), predict(model, data["val"], device, regression=regression), metrics=metrics_of_task)
        val_loss = validation_loss(model, data["val"], loss_fn, device) if by_loss else None
        score = sign * (val_loss if by_loss else val[select])
        if score > best_score:
            best_score, since_best = score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        stop = since_best >= patience or epoch + 1 == max_epochs
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "train_seconds": train_seconds,
            **where,
            f"best_val_{select}": sign * best_score,
            "val_objective": score,
            **({"val_loss": val_loss} if by_loss else {}),
            **{f"val_{k}": v for k, v in val.items()},
        }
        if final and stop:
            model.load_state_dict(best_state)
            scored = []  # the test pass is the one whose peak memory is measured
            metrics.update(inference_costs(model, to_device(select_rows(data["test"], slice(0, 256)), device),
                                           lambda: scored.append(predict(model, data["test"], device, regression=regression)), device))
            test_scores = scored[0]
            test = compute_metrics(labels_numpy(data["test"]), test_scores, metrics=metrics_of_task)
            metrics.update({f"test_{k}": v for k, v in test.items()}, done=True, epochs_trained=epoch + 1)
            if trainable.attributions is not None:
                metrics.update({f"ig_{m}": float(v) for m, v in trainable.attributions(model, data["test"], device).items()})
            if trainable.summaries is not None:
                metrics.update({f"summary:{k}": float(v) for k, v in trainable.summaries(model, data["test"], device).items()})
            extras = score_extra_sets(config, session, collate, lambda part: predict(model, part, device, regression=regression))
            report_final(session, metrics, data["test"], test_scores, trainable.export(model) if config.get("save_model") else None, extras)
            return
        if checkpoint_every and (epoch + 1) % checkpoint_every == 0 and not stop:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                     "epoch": epoch + 1, "best_score": float(best_score), "best_state": best_state, "since_best": since_best},
                    os.path.join(folder, STATE_FILE),
                )
                session.report(metrics, folder)
        elif stop:
            # ``done`` on the last report: Tune stops the trial on it instead of asking the finished
            # function for one more result (a round trip per trial through the driver).
            session.report({**metrics, "done": True})
            return
        else:
            session.report(metrics)
