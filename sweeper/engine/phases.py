"""The phases of a sweep as Tune experiments: the tune phase (per-cell Optuna + ASHA) and the
final phase (each cell's best config on K seeds), restorable, stopped cleanly by Ctrl-C, SIGTERM or
SIGHUP (``signals``)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from sweeper.errors import Interrupted, SweeperError
from sweeper.engine.collect import write_trial_scalars
from sweeper.engine.signals import StopOnSignal, signal_name
from sweeper.engine.trial import grid_of, reuse_actors, trainable
from sweeper.plan.spec import Cell, Spec

MODE, TIME_ATTR = "max", "epoch"


def objective(spec: Spec) -> str:
    """The reported metric the tune phase maximises: ``metric`` in the spec, on validation; when a
    task is ranked by another metric (``regression_metric`` for ``los``), ``val_objective``, which
    every trial reports: its own task's metric on validation, negated where lower is better
    (``sweeper.loop.training.selection``), so one maximised key serves every cell."""
    from sweeper.plan.ranking import rank_metrics

    if set(rank_metrics(spec).values()) == {spec.metric}:
        return f"val_{spec.metric}"
    return "val_objective"


def run_phase(name: str, run_dir: Path, trainable, tune_config, param_space: dict, callbacks, resume: bool, checkpoint_period_s: float = 0):
    """Run (or, with ``resume``, finish) one phase as a Tune experiment under ``run_dir/name``.

    Tune saves the experiment state at most every ``checkpoint_period_s`` seconds: 0 (every
    controller step) means a driver killed right after a trial finished never runs that trial
    again on --resume; a few seconds bounds what a crash can make run again, and keeps a driver
    with hundreds of short trials from spending its core on rewriting the state file
    (``checkpoint_period``).
    """
    from ray import tune

    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = os.environ.get("SWEEPER_TUNE_CHECKPOINT_S", str(checkpoint_period_s))
    # The status line reports the run: Tune's own console reporter (its configuration box and its
    # hint at a TensorBoard folder under /tmp/ray) stays out of the output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A reused inline actor waits for the finished trial's thread; it is parked in its last report.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
    path = run_dir / name
    if path.exists() and tune.Tuner.can_restore(str(path)) and not any(path.glob("experiment_state-*.json")):
        # The driver died after Tune wrote the phase's tuner.pkl and before its first state save:
        # no trial of it was ever recorded, and restoring would lose its trials' configs. Start it anew.
        shutil.rmtree(path)
    if path.exists() and tune.Tuner.can_restore(str(path)):
        if not resume:
            raise SweeperError(f"{path}: a phase already ran here; pass --resume to finish it")
        # Tune itself re-runs only what did not finish: errored trials, trials interrupted (a
        # killed driver, Ctrl-C) and trials never started; a finished phase runs nothing.
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(run_dir),
                callbacks=callbacks,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=2),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    started = time.time()
    with StopOnSignal() as stop:
        results = tuner.fit()
    _record_wall(run_dir, name, started, len(results), stop.pressed)
    if stop.pressed:  # Tune saved its state and returned: no outputs from a part of the trials
        raise Interrupted(
            f"{name} phase stopped ({signal_name(stop.signum)}); `sweeper run {run_dir.parent.name} --resume --run-name {run_dir.name}` finishes it",
            signum=stop.signum,
        )
    return results

def checkpoint_period(context) -> float:
    """Seconds between saves of a phase's state: every step for Train-job trials (each costs its
    start-up to run again); every 5 s for inline trials, which take seconds and are many."""
    return 5.0 if context.runtime == "inline" else 0.0


def _record_wall(run_dir: Path, phase: str, started: float, trials: int, interrupted: bool) -> None:
    """``timings.jsonl``: each phase's wall time (one line per invocation; a resumed phase adds one)."""
    record = {"phase": phase, "started": started, "wall_s": round(time.time() - started, 3), "trials": trials, "interrupted": interrupted}
    with (run_dir / "timings.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def waves(cells: list[Cell], budgets: dict[str, int], limit: int) -> list[list[Cell]]:
    """``cells`` in order, grouped into consecutive waves of whole cells whose trials add up to at
    most ``limit`` (a cell with more trials than that is a wave of its own)."""
    groups: list[list[Cell]] = []
    total = 0
    for cell in cells:
        if groups and total + budgets[cell.cell_id] <= limit:
            groups[-1].append(cell)
            total += budgets[cell.cell_id]
        else:
            groups.append([cell])
            total = budgets[cell.cell_id]
    return groups


def wave_name(index: int) -> str:
    """The Tune experiment of the tune phase's wave ``index``: ``tune``, then ``tune-2``, ``tune-3``, ..."""
    return "tune" if index == 0 else f"tune-{index + 1}"


def tune_phase(spec: Spec, cells: list[Cell], context, run_dir: Path, slots: int, resume: bool, progress):
    """Per cell: Optuna (TPE) proposes, ASHA stops early; returns each cell's best params.

    Each cell's search and early stopping are its own, so the cells can run in waves, one Tune
    experiment each (``resources.trials_per_experiment``): Tune keeps every trial of an experiment
    (its last result and running statistics of every reported number) until the experiment ends,
    and a wave's trials are let go once its best configs and TensorBoard curves are written. This
    is what keeps the driver's memory flat over a sweep of thousands of trials (bench/load.py).
    """
    from ray import tune

    from sweeper.engine.search import CellScheduler, CellSearcher, run_storage

    if spec.budgets.tune_trials == 0:
        progress.say("[tune] skipped (tune_trials: 0): every cell runs its default config")
        (run_dir / "best_configs.json").write_text(json.dumps({c.cell_id: {"params": {}} for c in cells}, indent=2, sort_keys=True))
        return {c.cell_id: {} for c in cells}
    metric = objective(spec)
    spaces = {c.cell_id: {k: d.to_optuna() for k, d in spec.methods[c.method].search.items()} for c in cells}
    budgets = {c.cell_id: spec.budgets.tune_trials if spaces[c.cell_id] else 1 for c in cells}
    progress.start_phase("tune", total_trials=sum(budgets.values()), cells=budgets)
    best: dict[str, tuple[float, dict]] = {}
    for index, wave in enumerate(waves(cells, budgets, spec.resources.trials_per_experiment)):
        ids = [c.cell_id for c in wave]
        searcher = CellSearcher({i: spaces[i] for i in ids}, {i: budgets[i] for i in ids}, metric, MODE, storage=run_storage(run_dir), seed=spec.seed)
        scheduler = CellScheduler(metric, MODE, TIME_ATTR, spec.budgets.max_epochs, spec.budgets.grace_period, spec.budgets.reduction_factor)
        tune_config = tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=sum(budgets[i] for i in ids), max_concurrent_trials=slots, reuse_actors=reuse_actors(context)
        )
        results = run_phase(wave_name(index), run_dir, trainable(context), tune_config, {}, [progress], resume, checkpoint_period(context))
        best.update(best_of_wave(results, metric))
        write_trial_scalars("tune", results, run_dir)
        del results, searcher, scheduler
    missing = [c.cell_id for c in cells if c.cell_id not in best]
    if missing:
        raise SweeperError(f"tune phase: no trial of cell {missing[0]!r} reported a result; see {run_dir / 'tune'} for the errors, then --resume")
    best_params = {cell: params for cell, (_, params) in best.items()}
    (run_dir / "best_configs.json").write_text(
        json.dumps({cell: {metric: best[cell][0], "params": best_params[cell]} for cell in best}, indent=2, sort_keys=True)
    )
    return best_params


def best_of_wave(results, metric: str) -> dict[str, tuple[float, dict]]:
    """``{cell: (best validation score over its trials' epochs, that trial's params)}``."""
    best: dict[str, tuple[float, dict]] = {}
    for result in results:
        if result.metrics is None or result.config is None or "cell" not in result.config:
            continue
        cell = result.config["cell"]
        history = result.metrics_dataframe
        score = float(history[metric].max()) if history is not None and metric in history else float("-inf")
        if cell not in best or score > best[cell][0]:
            best[cell] = (score, {k: v for k, v in result.config.items() if k != "cell"})
    return best


def final_phase(spec: Spec, cells: list[Cell], best: dict[str, dict], context, run_dir: Path, slots: int, resume: bool, progress):
    from ray import tune

    runs = [{"cell": c.cell_id, "seed": seed, "final": True, "params": best[c.cell_id]} for c in cells for seed in range(spec.final.seeds)]
    progress.start_phase("final", total_trials=len(runs), cells={c.cell_id: spec.final.seeds for c in cells})
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=slots, reuse_actors=reuse_actors(context))
    return run_phase("final", run_dir, trainable(context), tune_config, grid_of(runs), [progress], resume, checkpoint_period(context))
