"""The phases of a sweep as Tune experiments: the tune phase (per-cell Optuna + ASHA) and the
final phase (each cell's best config on K seeds), restorable, stopped cleanly by Ctrl-C."""
from __future__ import annotations

import json
import os
from pathlib import Path

from sweeper.errors import Interrupted, SweeperError
from sweeper.engine.trial import grid_of, trainable
from sweeper.plan.spec import Cell, Spec

MODE, TIME_ATTR = "max", "epoch"


def objective(spec: Spec) -> str:
    """The reported metric the tune phase maximises (``metric`` in the spec, on validation)."""
    return f"val_{spec.metric}"

def run_phase(name: str, run_dir: Path, trainable, tune_config, param_space: dict, callbacks, resume: bool):
    from ray import tune

    # Save the experiment state at every controller step (default: every >= 10 s), so a driver
    # killed right after a trial finished does not run that trial again on --resume.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = os.environ.get("SWEEPER_TUNE_CHECKPOINT_S", "0")
    path = run_dir / name
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
            ),
        )
    with _StopOnCtrlC() as ctrl_c:
        results = tuner.fit()
    if ctrl_c.pressed:  # Tune saved its state and returned: no outputs from a part of the trials
        raise Interrupted(f"{name} phase stopped; `sweeper run {run_dir.parent.name} --resume --run-name {run_dir.name}` finishes it")
    return results

class _StopOnCtrlC:
    """Ctrl-C during a phase: remember it and ask Tune for its graceful stop (SIGUSR1: Tune saves
    its experiment state and returns). Tune's own SIGINT handler is off because after it returns
    nothing tells the caller that it was interrupted: the stopped trials read as terminated.
    A second Ctrl-C gets Python's default (KeyboardInterrupt)."""

    def __enter__(self):
        import signal
        import threading

        self.pressed, self.active = False, threading.current_thread() is threading.main_thread()
        if self.active:
            self.saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):  # until Tune installs its own
                signal.signal(signal.SIGUSR1, lambda *_: None)
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        self.pressed = True
        signal.signal(signal.SIGINT, self.previous)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __exit__(self, *exc):
        import signal

        if self.active:
            if signal.getsignal(signal.SIGINT) == self._handle:
                signal.signal(signal.SIGINT, self.previous)
            if self.saved_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.saved_env
        return False

def tune_phase(spec: Spec, cells: list[Cell], context, run_dir: Path, slots: int, resume: bool, progress):
    """Per cell: Optuna (TPE) proposes, ASHA stops early; returns each cell's best params and the results."""
    from ray import tune

    from sweeper.engine.search import CellScheduler, CellSearcher

    if spec.budgets.tune_trials == 0:
        progress.say("[tune] skipped (tune_trials: 0): every cell runs its default config")
        (run_dir / "best_configs.json").write_text(json.dumps({c.cell_id: {"params": {}} for c in cells}, indent=2, sort_keys=True))
        return {c.cell_id: {} for c in cells}, None
    metric = objective(spec)
    spaces = {c.cell_id: {k: d.to_optuna() for k, d in spec.methods[c.method].search.items()} for c in cells}
    budgets = {c.cell_id: spec.budgets.tune_trials if spaces[c.cell_id] else 1 for c in cells}
    searcher = CellSearcher(spaces, budgets, metric, MODE, storage_url=f"sqlite:///{run_dir / 'optuna.db'}", seed=spec.seed)
    scheduler = CellScheduler(metric, MODE, TIME_ATTR, spec.budgets.max_epochs, spec.budgets.grace_period, spec.budgets.reduction_factor)
    progress.start_phase("tune", total_trials=sum(budgets.values()), cells=budgets)
    # No actor reuse here: a trial that ASHA stops must take its Train job down with its actor;
    # a reused actor would keep the stopped job's workers, and their CPUs, alive.
    tune_config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=sum(budgets.values()), max_concurrent_trials=slots, reuse_actors=False
    )
    results = run_phase("tune", run_dir, trainable(context), tune_config, {}, [progress], resume)
    best: dict[str, tuple[float, dict]] = {}
    for result in results:
        if result.metrics is None or result.config is None or "cell" not in result.config:
            continue
        cell = result.config["cell"]
        history = result.metrics_dataframe
        score = float(history[metric].max()) if history is not None and metric in history else float("-inf")
        if cell not in best or score > best[cell][0]:
            best[cell] = (score, {k: v for k, v in result.config.items() if k != "cell"})
    missing = [c.cell_id for c in cells if c.cell_id not in best]
    if missing:
        raise SweeperError(f"tune phase: no trial of cell {missing[0]!r} reported a result; see {run_dir / 'tune'} for the errors, then --resume")
    best_params = {cell: params for cell, (_, params) in best.items()}
    (run_dir / "best_configs.json").write_text(
        json.dumps({cell: {metric: best[cell][0], "params": best_params[cell]} for cell in best}, indent=2, sort_keys=True)
    )
    return best_params, results

def final_phase(spec: Spec, cells: list[Cell], best: dict[str, dict], context, run_dir: Path, slots: int, resume: bool, progress):
    from ray import tune

    runs = [{"cell": c.cell_id, "seed": seed, "final": True, "params": best[c.cell_id]} for c in cells for seed in range(spec.final.seeds)]
    progress.start_phase("final", total_trials=len(runs), cells={c.cell_id: spec.final.seeds for c in cells})
    # No actor reuse: after a trial failed (a lost node), Tune could not reuse a function
    # trainable's actor ("reuse requires reset_config()") and a pending seed never ran.
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=slots, reuse_actors=False)
    return run_phase("final", run_dir, trainable(context), tune_config, grid_of(runs), [progress], resume)
