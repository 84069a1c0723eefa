"""``sweeper run``, top to bottom: spec → stays → encode once → stages → tune phase → final phase
→ outputs.

Run directory ``results/<spec>/<run>/``:
  spec.yaml, run.json         the spec and profile this run was started with (``--resume`` reads them)
  data/                       the generated synthetic stays (when the spec asks for them)
  optuna-journal.log          one Optuna study per cell (``optuna-dashboard .../optuna-journal.log``)
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
import signal
import time
from pathlib import Path

from sweeper.data.schema import MODALITIES, Manifest, read_manifest
from sweeper.engine.phases import final_phase, objective, tune_phase
from sweeper.engine.rundir import RunOptions, pick_profile, resolve_run_dir, run_info, save_run_files
from sweeper.engine.signals import signal_name, signals_interrupt
from sweeper.engine.session import RaySession, cluster_has_gpu, local_cluster_resources, materialize
from sweeper.engine.stages import check_text_encoders, external_features, run_stages, text_features
from sweeper.engine.trial import TrialContext
from sweeper.errors import Interrupted, SweeperError
from sweeper.plan.plan import trial_slots
from sweeper.plan.ranking import rank_metrics
from sweeper.plan.spec import Cell, Spec, expand_cells, load_spec, trial_config


def run(options: RunOptions) -> Path:
    """Run (or resume) a sweep; returns the run directory."""
    if options.resume:
        run_dir = resolve_run_dir(options, Path(options.spec).stem)
        info = run_info(run_dir)
        spec, _ = load_spec(str(run_dir / "spec.yaml"), info.get("profile"))
        profile, options.data = info.get("profile"), options.data or info.get("data")
        # A run resumes under the runtime it started with: its checkpoints are that runtime's.
        runtime = info.get("runtime", "train")  # runs from before the inline runtime are train runs
    else:
        profile = pick_profile(options.spec, options.profile, cluster_has_gpu(options.address))
        spec, spec_file = load_spec(options.spec, profile)
        run_dir = resolve_run_dir(options, spec.name)
        if options.data or spec.data.path:  # a bad stays folder fails here, before the run folder exists
            read_manifest(Path(options.data or spec.data.path))
        for folder in spec.data.external.values():
            read_manifest(Path(folder))
        check_text_encoders(spec, spec_file)
        runtime = spec.resources.runtime(local=options.address is None)
        save_run_files(run_dir, spec_file, options, profile, spec.metric, runtime, rank_metrics(spec))
    try:
        with signals_interrupt():
            return _sweep(run_dir, spec, profile, options, runtime)
    except KeyboardInterrupt as stop:  # a stop signal outside a phase (a phase raises Interrupted itself)
        signum = getattr(stop, "signum", signal.SIGINT)
        raise Interrupted(f"stopped ({signal_name(signum)}); `sweeper run {run_dir.parent.name} --resume --run-name {run_dir.name}` finishes it",
                          signum=signum) from None


def _sweep(run_dir: Path, spec: Spec, profile: str | None, options: RunOptions, runtime: str) -> Path:
    from sweeper.engine.collect import write_outputs
    from sweeper.engine.progress import Progress

    cells = expand_cells(spec)
    progress = Progress(run_dir, quiet=options.quiet, metric=objective(spec))
    progress.say(f"run {run_dir} — spec {spec.name}" + (f", profile {profile}" if profile else "") + f": {len(cells)} cells")
    stays = prepare_data(spec, run_dir, options.data)
    manifest = read_manifest(stays)  # the one read of this run: trials get it through the object store
    started = time.perf_counter()
    local = options.address is None
    ray_kwargs = {"num_cpus": int(local_cluster_resources()["CPU"]), "include_dashboard": True, "dashboard_host": "127.0.0.1"} if local else {}
    with RaySession(options.address, **ray_kwargs), signals_interrupt():  # after ray.init: its SIGTERM handler is replaced
        slots = _slots(spec, local, progress)
        progress.say(f"trial runtime: {runtime}" + (" (one Ray Train job per trial)" if runtime == "train" else " (the loop in reused Tune trial actors)"))
        context = dataclasses.replace(trial_context(spec, cells, stays, manifest, run_dir), runtime=runtime)
        cache_root = Path(options.results).absolute() / ".cache" / "embeddings"
        own = text_features(cells, context.base_configs, stays, cache_root, progress, run_dir)
        context = run_stages(spec, cells, dataclasses.replace(context, features=own), run_dir, slots, options.resume, progress)
        extra = external_features(cells, context, own, spec.data.external, cache_root, progress, run_dir)
        context = dataclasses.replace(context, extra_features=extra)
        best = tune_phase(spec, cells, context, run_dir, slots, options.resume, progress)
        results = final_phase(spec, cells, best, context, run_dir, slots, options.resume, progress)
        write_outputs(spec, cells, best, results, run_dir, stays_dir=stays)
    progress.say(f"done in {time.perf_counter() - started:.0f} s → {run_dir / 'leaderboard.csv'}")
    return run_dir


def prepare_data(spec: Spec, run_dir: Path, data_override: str | None) -> Path:
    """The stays folder this run reads: ``--data``, the spec's path, or freshly generated stays."""
    if data_override:
        return Path(data_override).absolute()
    if spec.data.path:
        return Path(spec.data.path)
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
    return stays


def _slots(spec: Spec, local: bool, progress) -> int:
    import ray

    cluster = ray.cluster_resources()
    slots = trial_slots(spec, cluster)
    if slots < 1:
        raise SweeperError(
            f"the cluster ({cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU) cannot fit one trial "
            f"of {spec.name} (resources: {spec.resources.model_dump(exclude_none=True)}); pick another --profile or a larger cluster"
        )
    progress.say(f"{slots} trial slots; dashboard: http://127.0.0.1:8265" if local else f"{slots} trial slots")
    return slots


def external_tables(spec: Spec, manifest: Manifest, modalities: list[str], tasks: list[str], run_dir: Path) -> dict:
    """``{ext_<name>: Arrow table}`` of the spec's external cohorts, each read as the training
    cohort's model reads it; what each lacks is written to ``external/<name>.json``."""
    import json

    from sweeper.data.external import read_external
    from sweeper.loop.extra_sets import EXTERNAL_PREFIX

    out = {}
    for name, folder in spec.data.external.items():
        table, report = read_external(folder, manifest, modalities, tasks)
        (run_dir / "external").mkdir(exist_ok=True)
        (run_dir / "external" / f"{name}.json").write_text(json.dumps({"stays": folder, **report}, indent=2))
        out[EXTERNAL_PREFIX + name] = table
    return out


def missing_sets(spec: Spec) -> dict:
    """``{miss_<name>: {drop, rate, seed}}``: the spec's test-time missing-modality protocols."""
    from sweeper.loop.extra_sets import MISSING_PREFIX

    return {MISSING_PREFIX + name: protocol.model_dump() for name, protocol in spec.final.test_missing.items()}


def trial_context(spec: Spec, cells: list[Cell], stays: Path, manifest: Manifest, run_dir: Path) -> TrialContext:
    """What every trial of the run shares: the splits (read once into the object store), the
    manifest, each cell's base config and the budgets."""
    import ray
    import ray.data

    from sweeper.data.loading import split_dataset

    modalities = [m for m in MODALITIES if any(m in c.modalities for c in cells)]
    tasks = sorted({c.task for c in cells})
    datasets = {split: split_dataset(stays, split, modalities, tasks, manifest) for split in ("train", "val", "test")}
    external = {name: ray.data.from_arrow(table) for name, table in external_tables(spec, manifest, modalities, tasks, run_dir).items()}
    extra_sets = {**{name: {"external": True} for name in external}, **missing_sets(spec)}
    return TrialContext(
        datasets=materialize({**datasets, **external}),
        extra_sets=extra_sets,
        manifest=ray.put(manifest),
        data_hash=manifest.content_hash,
        storage_path=str(run_dir / "train"),
        cells={c.cell_id: c for c in cells},
        base_configs={c.cell_id: trial_config(spec, c, {}) for c in cells},
        max_epochs=spec.budgets.max_epochs,
        patience=spec.budgets.patience,
        cpus_per_worker=spec.resources.cpus_per_trial,
        gpus_per_worker=spec.resources.gpus_per_trial,
        workers=spec.resources.workers_per_trial,
    )
