"""Per-trial overhead of a Ray Train trial (the engine's path) against a plain Tune function.

Runs N identical tiny trials of one cell two ways with the same training code
(``sweeper.loop.training.run_training``):
  (a) ``train``: the engine's Tune function that builds a ``TorchTrainer`` (Train V2);
  (b) ``plain``: a Tune function trainable that trains in its own process.
Prints median per-trial wall time (driver's view: trial start → finish), the overhead ratio and
the fraction of slot-time spent inside training steps. ``--knobs default`` runs Ray Train as it
comes; ``--knobs tuned`` applies the engine's settings (``sweeper.engine.sweep.ray_env_vars`` and
Tune actor reuse). Run by hand; it is a benchmark, not a test:

    python bench/engine_overhead.py --trials 8 --knobs default tuned
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray import tune  # noqa: E402

from sweeper.engine.session import ray_env_vars  # noqa: E402

TRAIN_KNOBS = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PRINT_PATCH", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")


def plain_trial(config, context):
    from sweeper.engine.trial import loop_config_of
    from sweeper.loop.outputs import TuneSession
    from sweeper.loop.training import run_training

    run_training({**loop_config_of(config, context), "torch_threads": 1}, TuneSession(context.datasets))


class Walls(tune.Callback):
    def __init__(self):
        self.started, self.walls = {}, []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.perf_counter()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.walls.append(time.perf_counter() - self.started[trial.trial_id])


def run_variant(variant: str, context, trials: int, concurrency: int, reuse: bool, storage: str):
    from sweeper.engine.trial import grid_of, trainable as train_trainable

    cell_id = next(iter(context.cells))
    runs = [{"cell": cell_id, "seed": s, "params": {}} for s in range(trials)]
    plain_resources = {"CPU": context.cpus_per_worker}
    trainable = train_trainable(context) if variant == "train" else tune.with_resources(tune.with_parameters(plain_trial, context=context), plain_resources)
    walls = Walls()
    started = time.perf_counter()
    results = tune.Tuner(
        trainable,
        param_space=grid_of(runs),
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=reuse),
        run_config=tune.RunConfig(name=f"{variant}-{time.time_ns()}", storage_path=storage, callbacks=[walls], verbose=0),
    ).fit()
    total = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{variant}: {len(errors)} trials failed: {errors[0]}")
    train_seconds = sum(float(r.metrics_dataframe["train_seconds"].sum()) for r in results)
    aurocs = sorted(round(float(r.metrics["val_auroc"]), 3) for r in results)
    return {"median_wall_s": statistics.median(walls.walls), "total_s": total, "train_fraction": train_seconds / sum(walls.walls), "aurocs": aurocs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per variant (default 8)")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--stays", type=int, default=400, help="synthetic stays (default 400)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each Train worker asks for (default 1)")
    parser.add_argument("--knobs", nargs="+", default=["default", "tuned"], choices=["default", "tuned"])
    args = parser.parse_args()

    import ray

    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.data.schema import read_manifest
    from sweeper.engine.sweep import trial_context
    from sweeper.plan.spec import Budgets, Cell, DataSpec, MethodSpec, Spec, Subsets

    workdir = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    frame, manifest = generate(SynthConfig(n_stays=args.stays))
    write_stays(frame, manifest, workdir / "stays")
    from sweeper.plan.spec import Resources

    spec = Spec(
        name="bench", resources=Resources(cpus_per_trial=args.cpus_per_trial), data=DataSpec(path=str(workdir / "stays")), tasks=["ihm"],
        modality_subsets=Subsets(explicit=[["timeseries", "demographics"]]),
        methods={"picme.supervised": MethodSpec(fixed={"d": 32})},
        budgets=Budgets(max_epochs=args.epochs, grace_period=1, patience=args.epochs),
    )
    cells = [Cell("ihm", "picme.supervised", ("timeseries", "demographics"))]
    print(f"{args.trials} trials × {args.epochs} epochs, {args.concurrency} at a time ({args.cpus_per_trial:g} CPU each), {args.stays} synthetic stays, {os.cpu_count()} cores")
    for knobs in args.knobs:
        env = ray_env_vars(local=True) if knobs == "tuned" else {}
        for key in TRAIN_KNOBS:
            os.environ.pop(key, None)
        os.environ.update(env)
        ray.init(num_cpus=(os.cpu_count() or 1) + 1, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR")
        try:
            context = trial_context(spec, cells, workdir / "stays", read_manifest(workdir / "stays"), workdir / knobs)
            for variant in ("train", "plain"):
                out = run_variant(variant, context, args.trials, args.concurrency, reuse=knobs == "tuned", storage=str(workdir / knobs))
                print(f"[{knobs:7}] {variant:5}  median wall/trial {out['median_wall_s']:6.1f} s   phase {out['total_s']:6.1f} s   "
                      f"in training steps {100 * out['train_fraction']:5.1f}%   val AUROC {out['aurocs'][0]}..{out['aurocs'][-1]}", flush=True)
                if variant == "train":
                    train_wall = out["median_wall_s"]
                else:
                    print(f"[{knobs:7}] overhead ratio train/plain: {train_wall / out['median_wall_s']:.1f}×", flush=True)
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
