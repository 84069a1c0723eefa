"""A trial, under either runtime: what Tune schedules, and the training loop's config of it.

- ``train``: ``run_train_trial`` builds a ``TorchTrainer`` (Train V2) for the trial's cell and
  config, hands it the run's Ray Data splits, and lets ``TuneReportCallback`` forward every
  ``ray.train.report`` to Tune. Required for several workers per trial (DDP); each trial pays Train's
  start-up (a controller, a worker group, a process group).
- ``inline``: ``run_inline_trial`` runs the same loop in the Tune trial actor itself (``tune.report``,
  ``tune.get_checkpoint``), and Tune reuses the actor for the next trial.

Either way ASHA and Optuna see each epoch, checkpoints live in Tune/Train storage, and retries and
``--resume`` go through the same ``run_training``.
"""
from __future__ import annotations

import dataclasses

# A trial's own actor only drives its Train job; the Train workers ask for the real resources. It
# holds no CPU: even 0.01 CPU on a node leaves less than a whole CPU there, and a worker asking for
# one whole CPU then never fits (seen on a multi-node cluster: the final phase waited forever).
# Memory is what the driver process really costs.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial of a run shares (passed once through ``tune.with_parameters``)."""

    datasets: dict  # split -> materialized ray.data.Dataset with every cell's columns
    manifest: object  # ObjectRef of the run's Manifest (read once by the driver)
    data_hash: str  # the manifest's content hash (stage artifacts and caches are keyed on it)
    storage_path: str
    cells: dict  # cell_id -> Cell
    base_configs: dict  # cell_id -> method defaults + fixed values + axis values
    max_epochs: int
    patience: int
    cpus_per_worker: float
    gpus_per_worker: float
    workers: int
    # A failed Train job fails its trial; Tune's FailureConfig retries it, and the retry's Train job
    # resumes from the same run's last checkpoint. One retry layer, so every retry is logged.
    train_max_failures: int = 0
    controller_failure_limit: int = 5  # worker-group start attempts of 60 s each
    checkpoint_every: int = 0
    runtime: str = "train"  # or "inline" (``Resources.runtime``)
    features: dict = dataclasses.field(default_factory=dict)  # cell_id -> {modality: ObjectRef of (ids, matrix)}
    # Extra test sets of the final trials (sweeper.loop.extra_sets): set -> {"external": True} (its
    # dataset in ``datasets`` under the set's name) or a missing-modality protocol {drop, rate, seed}.
    extra_sets: dict = dataclasses.field(default_factory=dict)
    # cell_id -> {external set: {key: ObjectRef of (ids, matrix)}}: the external cohort's own
    # embeddings of what the cell reads precomputed (``stages.external_features``).
    extra_features: dict = dataclasses.field(default_factory=dict)


def trial_run(config: dict) -> dict:
    """A trial's own run description: the tune phase's config itself, or what a grid-searched phase
    (final, stages) wraps under ``run``."""
    return config.get("run", config)


def grid_of(runs: list[dict]) -> dict:
    """The param space of a phase that runs a fixed list of trials (final seeds, stage runs): a
    grid over them under ``run``, which ``trial_run`` unwraps."""
    from ray import tune

    return {"run": tune.grid_search(runs)}


def loop_config_of(config: dict, context: TrialContext) -> dict:
    """The training loop's config of one trial: the cell's base config, the trial's params, and
    what the run fixes (budgets, seed, the manifest's object reference)."""
    config = trial_run(config)
    cell = context.cells[config["cell"]]
    final = bool(config.get("final", False))
    params = config.get("params", {k: v for k, v in config.items() if k not in ("cell", "seed", "final")})
    loop_config = {
        **context.base_configs[cell.cell_id],
        **params,
        "method": cell.method,
        "task": cell.task,
        "modalities": list(cell.modalities),
        "seed": int(config.get("seed", 0)),
        "final": final,
        "max_epochs": context.max_epochs,
        "patience": context.patience,
        "checkpoint_every": context.checkpoint_every,
        "manifest": context.manifest,
        "torch_threads": max(1, int(context.cpus_per_worker)),
        "features": context.features.get(cell.cell_id, {}),
        "extra_sets": context.extra_sets if final else {},
        "extra_features": context.extra_features.get(cell.cell_id, {}) if final else {},
    }
    if config.get("stage"):
        loop_config["stage"] = config["stage"]
    return loop_config


def build_trainer(config: dict, context: TrialContext, trial_name: str):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from sweeper.loop.extra_sets import extra_splits
    from sweeper.loop.training import reads_splits, train_loop_per_worker

    loop_config = loop_config_of(config, context)
    datasets = {split: context.datasets[split] for split in reads_splits(loop_config) + extra_splits(loop_config)}
    use_gpu = context.gpus_per_worker > 0
    resources = {"CPU": context.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = context.gpus_per_worker
    # NCCL only when several workers really share CUDA tensors; gloo everywhere else (a node
    # that declares GPUs without CUDA would otherwise fail to start the process group).
    backend = "nccl" if use_gpu and context.workers > 1 and _cuda_here() else "gloo"
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=context.workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend=backend),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=[]) if context.workers == 1 else None,
        run_config=ray.train.RunConfig(
            name=trial_name,
            storage_path=context.storage_path,
            callbacks=[TuneReportCallback()],
            # Bounded: on a fixed-size cluster a worker group that cannot start would otherwise
            # wait forever; Tune's own FailureConfig then retries the trial.
            failure_config=ray.train.FailureConfig(max_failures=context.train_max_failures, controller_failure_limit=context.controller_failure_limit),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )


def _cuda_here() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run_train_trial(config: dict, context: TrialContext) -> None:
    """Tune function trainable of the ``train`` runtime: one Train job for ``config``."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    build_trainer(config, context, trial_name=f"train-{trial_id}").fit()


def run_inline_trial(config: dict, context: TrialContext) -> None:
    """Tune function trainable of the ``inline`` runtime: the loop in this actor."""
    import time

    entered = time.perf_counter()  # the trial's busy time counts from here (busy_s)
    from sweeper.loop.extra_sets import extra_splits
    from sweeper.loop.outputs import TuneSession
    from sweeper.loop.training import reads_splits, run_training

    loop_config = loop_config_of(config, context)
    splits = reads_splits(loop_config) + extra_splits(loop_config)
    run_training(loop_config, TuneSession({split: context.datasets[split] for split in splits}, entered))


def trainable(context: TrialContext):
    """The Tune trainable of every phase, for the run's runtime, with the run's shared context."""
    from ray import tune

    if context.runtime == "inline":
        resources = {"CPU": context.cpus_per_worker, **({"GPU": context.gpus_per_worker} if context.gpus_per_worker else {})}
        return tune.with_resources(tune.with_parameters(run_inline_trial, context=context), resources)
    return tune.with_resources(tune.with_parameters(run_train_trial, context=context), TRIAL_DRIVER_RESOURCES)


def reuse_actors(context: TrialContext) -> bool:
    """Tune reuses a trial actor only under ``inline``: there the actor is the trial, and its imports,
    threads and CUDA context carry over. A ``train`` trial's actor only drives its Train job, and
    reusing it kept a stopped job's workers (and their CPUs) alive."""
    return context.runtime == "inline"


def checkpoint_path(result) -> str | None:
    """Where a finished trial's last checkpoint is (its predictions or a stage's artifact): Train
    names it in the reported metrics, Tune keeps it as the result's checkpoint."""
    metrics = result.metrics or {}
    if metrics.get("checkpoint_path"):
        return metrics["checkpoint_path"]
    return result.checkpoint.path if getattr(result, "checkpoint", None) is not None else None
