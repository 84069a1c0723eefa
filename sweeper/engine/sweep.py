"""``sweeper run``: data → tune phase (per-cell Optuna + ASHA) → final phase (K seeds) → leaderboard.

Run directory ``results/<spec>/<run>/``:
  spec.yaml, run.json         the spec and profile this run was started with (``--resume`` reads them)
  data/                       the generated synthetic stays (when the spec asks for them)
  optuna.db                   one Optuna study per cell (``optuna-dashboard sqlite:///.../optuna.db``)
  tune/, final/               Tune experiments (restorable); train/ holds the Train runs' checkpoints
  best_configs.json           each cell's best tune-phase config
  predictions/                each final trial's test predictions (stay id, label, score)
  models/                     each final trial's best weights, when the method config sets save_model: true
  trial_events.jsonl          every trial start/finish the driver saw (resume audits read it)
  leaderboard.csv/.md, tensorboard/, analyses/
  report.html                 the leaderboard with plots and the analyses, one page (``sweeper report`` rebuilds it)
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from sweeper.errors import Interrupted, SweeperError
from sweeper.tune.spec import Cell, Spec, expand_cells, load_spec, spec_path, trial_config

MODE, TIME_ATTR = "max", "epoch"


def objective(spec: Spec) -> str:
    """The reported metric the tune phase maximises (``metric`` in the spec, on validation)."""
    return f"val_{spec.metric}"
DEFAULT_RESULTS = Path("results")
# A trial's own actor only drives its Train job; the Train workers ask for the real resources. It
# holds no CPU: even 0.01 CPU on a node leaves less than a whole CPU there, and a worker asking for
# one whole CPU then never fits (seen on a multi-node cluster: the final phase waited forever).
# Memory is what the driver process really costs.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 256 * 2**20}


@dataclasses.dataclass
class RunOptions:
    spec: str
    profile: str | None = None
    data: str | None = None
    address: str | None = None
    results: Path = DEFAULT_RESULTS
    resume: bool = False
    run_name: str | None = None
    quiet: bool = False


def cluster_has_gpu(address: str | None) -> bool:
    """Whether the target cluster (or this machine, for a local run) offers GPUs."""
    if address:
        import ray

        with _ray_session(address):
            return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def pick_profile(spec_name: str, profile: str | None, has_gpu: bool) -> str | None:
    """``--profile`` wins; otherwise ``local`` on a GPU-less cluster when the spec defines it."""
    if profile is not None:
        return profile
    try:
        raw = yaml.safe_load(spec_path(spec_name).read_text())
        profiles = raw.get("profiles") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # an unreadable spec: load_spec reports it in one line
    return "local" if not has_gpu and isinstance(profiles, dict) and "local" in profiles else None


def ray_env_vars(local: bool) -> dict[str, str]:
    """Ray Train V2 settings every process of the run gets (measured in bench/engine_overhead.py).

    The controller polls worker health every 2 s by default and each ``ray.train.report`` waits
    for a poll, which dominated small trials; a local cluster is never preempted, so its
    preemption-watcher actor (one more process per trial) is skipped. A user's own settings win.
    """
    wanted = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if local:
        wanted["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


class _ray_session:
    def __init__(self, address: str | None, **kwargs):
        self.address, self.kwargs = address, kwargs

    def __enter__(self):
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            env = ray_env_vars(local=self.address is None)
            os.environ.update(env)  # the Tune trial actors read them from the driver's environment too
            context = ray.init(
                address=self.address, log_to_driver=False, configure_logging=True, logging_level="ERROR",
                runtime_env={"env_vars": env}, **self.kwargs,
            )
            if not context.dashboard_url:
                ray.shutdown()
                raise SweeperError(
                    f"--address {self.address}: this Ray cluster runs without its dashboard; Ray Train needs the dashboard's "
                    "State API to free the resources of stopped trials (without it the sweep hangs). "
                    "Start the head with `ray start --head --include-dashboard=true` (pip install 'ray[default]')"
                )
        return self

    def __exit__(self, *exc):
        import ray

        if self.started:
            ray.shutdown()


def resolve_run_dir(options: RunOptions, spec_name: str) -> Path:
    base = Path(options.results).absolute() / spec_name
    if options.resume:
        if options.run_name:
            run_dir = base / options.run_name
        else:
            runs = [(_run_info(p), p) for p in base.glob("*") if (p / "run.json").is_file()] if base.is_dir() else []
            if options.profile is not None:
                runs = [(info, p) for info, p in runs if info.get("profile") == options.profile]
            if not runs:
                which = f"run of {spec_name!r}" + (f" with profile {options.profile!r}" if options.profile is not None else "")
                raise SweeperError(f"--resume: no {which} under {base}; start one with `sweeper run {spec_name}`")
            # The latest by start time (a --run-name folder sorts anywhere by name).
            run_dir = max(runs, key=lambda run: (str(run[0].get("started", "")), run[1].name))[1]
        if not (run_dir / "run.json").is_file():
            raise SweeperError(f"--resume: {run_dir} is not a sweeper run folder (no run.json)")
        started_with = _run_info(run_dir).get("profile")
        if options.profile is not None and started_with != options.profile:
            raise SweeperError(
                f"--resume: {run_dir} was started with profile {started_with!r}, not {options.profile!r}; "
                "a run resumes with its own profile, so drop --profile or pick another --run-name"
            )
        return run_dir
    name = options.run_name or dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = base / name
    if run_dir.exists():
        raise SweeperError(f"{run_dir}: run folder exists; pass --resume to finish it or --run-name to start another")
    return run_dir


def _run_info(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as error:
        raise SweeperError(f"{run_dir / 'run.json'}: unreadable ({error}); remove that folder or pass --run-name") from None
    return info if isinstance(info, dict) else {}


def prepare_data(spec: Spec, run_dir: Path, data_override: str | None) -> Path:
    """The stays folder this run reads: ``--data``, the spec's path, or freshly generated stays."""
    from sweeper.data.schema import read_manifest

    if data_override:
        stays = Path(data_override).absolute()
    elif spec.data.path:
        stays = Path(spec.data.path)
    else:
        stays = run_dir / "data"
        if not (stays / "manifest.json").is_file():
            from sweeper.data.stays import write_stays
            from sweeper.data.synthetic import SynthConfig, generate

            options = spec.data.synthetic
            defaults = SynthConfig()
            config = SynthConfig(
                n_stays=options.n_stays,
                seed=options.seed,
                strengths={**defaults.strengths, **options.strengths},
                presence={**defaults.presence, **options.presence},
                mnar=options.mnar,
            )
            frame, manifest = generate(config)
            write_stays(frame, manifest, stays, split_seed=options.seed, where="synthetic cohort")
    read_manifest(stays)  # fails early, naming the folder, when it is not a stays folder
    return stays


def _save_run_files(run_dir: Path, spec_file: Path, options: RunOptions, profile: str | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(spec_file, run_dir / "spec.yaml")
    info = {"spec": options.spec, "profile": profile, "data": options.data, "started": dt.datetime.now().isoformat(timespec="seconds")}
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))


def local_cluster_resources() -> dict[str, float]:
    """What a local Ray declares: the cores plus one CPU of headroom for trial drivers and Ray Data."""
    import torch

    return {"CPU": float((os.cpu_count() or 1) + 1), "GPU": float(torch.cuda.device_count())}


def trial_slots(spec: Spec, cluster: dict[str, float]) -> int:
    """How many trials fit at once, leaving half a CPU for drivers and Ray Data (0: none fits)."""
    per_trial_cpu = spec.resources.cpus_per_trial * spec.resources.workers_per_trial
    slots = int((cluster.get("CPU", 0) - 0.5) // per_trial_cpu)
    if spec.resources.gpus_per_trial > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // (spec.resources.gpus_per_trial * spec.resources.workers_per_trial)))
    if spec.resources.max_concurrent_trials:
        slots = min(slots, spec.resources.max_concurrent_trials)
    return max(0, slots)


def _trial_context(spec: Spec, cells: list[Cell], stays: Path, run_dir: Path):
    from sweeper.data.loading import split_dataset
    from sweeper.data.schema import MODALITIES, read_manifest
    from sweeper.tune.trial import TrialContext

    manifest = read_manifest(stays)
    modalities = [m for m in MODALITIES if any(m in c.modalities for c in cells)]
    tasks = sorted({c.task for c in cells})
    return TrialContext(
        datasets=_materialize({split: split_dataset(stays, split, modalities, tasks) for split in ("train", "val", "test")}),
        manifest_json=manifest.to_json(),
        storage_path=str(run_dir / "train"),
        cells={c.cell_id: c for c in cells},
        base_configs={c.cell_id: trial_config(spec, c, {}) for c in cells},
        max_epochs=spec.budgets.max_epochs,
        patience=spec.budgets.patience,
        cpus_per_worker=spec.resources.cpus_per_trial,
        gpus_per_worker=spec.resources.gpus_per_trial,
        workers=spec.resources.workers_per_trial,
    )


def _materialize(datasets: dict) -> dict:
    """Read the splits into the object store once, without Ray Data's per-operator progress log
    (our status line reports the run; Ray Data's own log file under the session keeps the detail)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        return {split: dataset.materialize() for split, dataset in datasets.items()}
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)


def _trainable(context):
    from ray import tune

    from sweeper.tune.trial import run_trial

    return tune.with_resources(tune.with_parameters(run_trial, context=context), TRIAL_DRIVER_RESOURCES)


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

    from sweeper.tune.search import CellScheduler, CellSearcher

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
    results = run_phase("tune", run_dir, _trainable(context), tune_config, {}, [progress], resume)
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
    return run_phase("final", run_dir, _trainable(context), tune_config, {"run": tune.grid_search(runs)}, [progress], resume)


def run(options: RunOptions) -> Path:
    """Run (or resume) a sweep; returns the run directory."""
    if options.resume:
        run_dir = resolve_run_dir(options, Path(options.spec).stem)
        info = _run_info(run_dir)
        spec, spec_file = load_spec(str(run_dir / "spec.yaml"), info.get("profile"))
        profile, options.data = info.get("profile"), options.data or info.get("data")
    else:
        profile = pick_profile(options.spec, options.profile, cluster_has_gpu(options.address))
        spec, spec_file = load_spec(options.spec, profile)
        run_dir = resolve_run_dir(options, spec.name)
        if options.data or spec.data.path:  # a bad stays folder fails here, before the run folder exists
            from sweeper.data.schema import read_manifest

            read_manifest(Path(options.data or spec.data.path))
        from sweeper.tune.stages import check_text_encoders

        check_text_encoders(spec, spec_file)
        _save_run_files(run_dir, spec_file, options, profile)
    try:
        return _run_in(run_dir, spec, profile, options)
    except KeyboardInterrupt:  # Ctrl-C outside a phase (a phase turns it into Interrupted itself)
        raise Interrupted(f"`sweeper run {run_dir.parent.name} --resume --run-name {run_dir.name}` finishes it") from None


def _run_in(run_dir: Path, spec: Spec, profile: str | None, options: RunOptions) -> Path:
    from sweeper.tune.progress import Progress

    cells = expand_cells(spec)
    progress = Progress(run_dir, quiet=options.quiet, metric=objective(spec))
    progress.say(f"run {run_dir} — spec {spec.name}" + (f", profile {profile}" if profile else "") + f": {len(cells)} cells")
    stays = prepare_data(spec, run_dir, options.data)
    started = time.perf_counter()
    local = options.address is None
    ray_kwargs = {"num_cpus": int(local_cluster_resources()["CPU"]), "include_dashboard": True, "dashboard_host": "127.0.0.1"} if local else {}
    with _ray_session(options.address, **ray_kwargs):
        import ray

        slots = trial_slots(spec, ray.cluster_resources())
        if slots < 1:
            raise SweeperError(
                f"the cluster ({ray.cluster_resources().get('CPU', 0):g} CPU, {ray.cluster_resources().get('GPU', 0):g} GPU) cannot fit one trial "
                f"of {spec.name} (resources: {spec.resources.model_dump(exclude_none=True)}); pick another --profile or a larger cluster"
            )
        progress.say(f"{slots} trial slots; dashboard: http://127.0.0.1:8265" if local else f"{slots} trial slots")
        context = _trial_context(spec, cells, stays, run_dir)
        from sweeper.tune.stages import run_stages, text_features

        cache_root = Path(options.results).absolute() / ".cache" / "embeddings"
        context = dataclasses.replace(context, features=text_features(cells, context.base_configs, stays, cache_root, progress, run_dir))
        context = run_stages(spec, cells, context, run_dir, slots, options.resume, progress)
        best, tune_results = tune_phase(spec, cells, context, run_dir, slots, options.resume, progress)
        results = final_phase(spec, cells, best, context, run_dir, slots, options.resume, progress)
        from sweeper.tune.collect import write_outputs

        write_outputs(spec, cells, best, results, run_dir, tune_results=tune_results, stays_dir=stays)
    progress.say(f"done in {time.perf_counter() - started:.0f} s → {run_dir / 'leaderboard.csv'}")
    return run_dir

