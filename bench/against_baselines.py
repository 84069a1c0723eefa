"""sweeper against what a researcher would otherwise write, on the same workload (run by hand;
numbers in the README).

The workload: in-hospital mortality on one synthetic cohort, picme.supervised (notes through the
frozen all-MiniLM-L6-v2, every other modality through its small encoder) over several modality
subsets, each cell's default config on K seeds, the same epochs and patience. Three ways to run it:

  sweeper     `sweeper run` of the workload's spec (local Ray, the inline runtime, notes encoded once
              into the embedding cache and shared by every trial)
  sequential  (a) a PiCME-style script: one process, for each subset and seed: encode the notes,
              train, evaluate (torch on every core)
  naive-tune  (b) Ray Tune over Ray Train, one cell at a time: a Tuner per cell over its seeds, each
              trial a TorchTrainer whose worker encodes the notes itself, then trains

All three call the same training loop on the same stays and seeds, so their test AUROCs must agree
per cell (the script prints the largest difference); only the orchestration differs.

    python bench/against_baselines.py [--stays 1000] [--seeds 3] [--epochs 4] [--only sweeper sequential naive-tune]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUBSETS = [["discharge", "radiology"], ["discharge", "timeseries"], ["radiology", "demographics"], ["discharge", "cxr"],
           ["timeseries", "demographics"], ["discharge", "radiology", "timeseries", "demographics"]]
TEXT = ("discharge", "radiology")


def spec_text(stays: Path, seeds: int, epochs: int) -> str:
    subsets = "\n".join(f"    - [{', '.join(s)}]" for s in SUBSETS)
    return f"""
name: bench-baselines
seed: 0
data: {{path: {stays}}}
tasks: [ihm]
modality_subsets:
  explicit:
{subsets}
methods:
  picme.supervised:
    fixed: {{d: 32, cnn_width: 8, lr: 1.0e-3, batch_size: 64}}
budgets: {{tune_trials: 0, max_epochs: {epochs}, grace_period: 1, patience: {epochs}}}
final: {{seeds: {seeds}, bootstrap_resamples: 1000}}
resources: {{cpus_per_trial: 1}}
"""


def loop_config(spec, cell, seed: int, manifest, features: dict, threads: int) -> dict:
    from sweeper.plan.spec import trial_config

    return {**trial_config(spec, cell, {}), "method": cell.method, "task": cell.task, "modalities": list(cell.modalities), "seed": seed,
            "final": True, "max_epochs": spec.budgets.max_epochs, "patience": spec.budgets.patience, "manifest": manifest,
            "features": features, "torch_threads": threads}


def encode_notes(stays: Path, cell, config: dict) -> dict:
    """Every text modality of the cell encoded now, into a fresh cache (nothing shared)."""
    from sweeper.encode.embeddings import text_embeddings

    with tempfile.TemporaryDirectory() as cache:
        return {m: text_embeddings(stays, m, encoder=config["text_encoder"], max_length=int(config["text_max_length"]), cache_root=cache)
                for m in cell.modalities if m in TEXT}


class TableSession:
    """The loop's session over stays read with pyarrow, in this process (the sequential script)."""

    def __init__(self, stays: Path):
        from sweeper.data.stays import read_stays

        self.tables = {split: read_stays(stays, split)[0] for split in ("train", "val", "test")}
        self.last: dict = {}

    def dataset(self, split):
        table = self.tables[split]

        class Batches:
            def iter_batches(self, batch_size, batch_format="numpy"):
                for start in range(0, len(table), batch_size):
                    part = table.slice(start, batch_size)
                    yield {name: part[name].to_numpy(zero_copy_only=False) for name in part.column_names}

        return Batches()

    def report(self, metrics, checkpoint_dir=None):
        self.last = dict(metrics)

    def checkpoint(self):
        return None


def run_sequential(stays: Path, spec, cells) -> dict[str, list[float]]:
    from sweeper.data.schema import read_manifest
    from sweeper.loop.training import run_training

    manifest, out = read_manifest(stays), {}
    for cell in cells:
        for seed in range(spec.final.seeds):
            config = loop_config(spec, cell, seed, manifest, {}, threads=os.cpu_count() or 1)
            config["features"] = encode_notes(stays, cell, config)
            session = TableSession(stays)
            run_training(config, session)
            out.setdefault(cell.cell_id, []).append(session.last["test_auroc"])
    return out


def encode_then_train(config: dict) -> None:
    """(b)'s Train worker: encode this trial's notes, then the same loop."""
    from sweeper.loop.outputs import TrainSession
    from sweeper.loop.training import run_training
    from sweeper.plan.spec import Cell

    cell = Cell(config["task"], config["method"], tuple(config["modalities"]))
    config = {**config, "features": encode_notes(Path(config["stays"]), cell, config)}
    run_training(config, TrainSession())


def naive_trial(config: dict, spec_path: str, stays: str, datasets: dict) -> None:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from sweeper.data.schema import read_manifest
    from sweeper.plan.spec import Cell, load_spec

    spec, _ = load_spec(spec_path)
    run = config["run"]
    cell = Cell("ihm", "picme.supervised", tuple(run["modalities"]))
    loop = {**loop_config(spec, cell, run["seed"], read_manifest(stays), {}, threads=1), "stays": stays}
    TorchTrainer(
        encode_then_train, train_loop_config=loop, datasets=datasets,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name=f"naive-{run['cell']}-{run['seed']}-{time.time_ns()}", storage_path=run["storage"], callbacks=[TuneReportCallback()]),
    ).fit()


def run_naive_tune(stays: Path, spec, spec_path: Path, cells, root: Path) -> dict[str, list[float]]:
    import ray
    from ray import tune

    from sweeper.data.loading import split_dataset
    from sweeper.engine.session import ray_env_vars

    out = {}
    env = ray_env_vars(local=True)
    ray.init(num_cpus=(os.cpu_count() or 1) + 1, runtime_env={"env_vars": env}, log_to_driver=False, logging_level="ERROR")
    try:
        for cell in cells:  # one cell at a time, as a Tune script per experiment would
            datasets = {s: split_dataset(stays, s, cell.modalities, ["ihm"]).materialize() for s in ("train", "val", "test")}
            runs = [{"cell": cell.cell_id, "modalities": list(cell.modalities), "seed": seed, "storage": str(root / "naive-train")} for seed in range(spec.final.seeds)]
            trainable = tune.with_resources(tune.with_parameters(naive_trial, spec_path=str(spec_path), stays=str(stays), datasets=datasets), {"CPU": 0, "memory": 256 * 2**20})
            results = tune.Tuner(
                trainable, param_space={"run": tune.grid_search(runs)}, tune_config=tune.TuneConfig(max_concurrent_trials=2),
                run_config=tune.RunConfig(name=f"naive-{time.time_ns()}", storage_path=str(root / "naive"), verbose=0),
            ).fit()
            out[cell.cell_id] = [r.metrics["test_auroc"] for r in results]
    finally:
        ray.shutdown()
    return out


def run_sweeper(spec_path: Path, root: Path) -> dict[str, list[float]]:
    import pandas as pd

    out = subprocess.run([sys.executable, "-m", "sweeper.cli", "run", str(spec_path), "--results", str(root / "results"), "--run-name", "r", "--quiet"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    from sklearn.metrics import roc_auc_score

    aurocs = {}
    for path in sorted((root / "results" / "bench-baselines" / "r" / "predictions").glob("*/seed-*.parquet")):
        frame = pd.read_parquet(path)
        import numpy as np

        aurocs.setdefault(path.parent.name, []).append(roc_auc_score(np.concatenate(frame["label"].to_list()), np.concatenate(frame["score"].to_list())))
    return aurocs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=int, default=1000, help="synthetic stays (default 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument("--only", nargs="+", default=["sweeper", "sequential", "naive-tune"], choices=["sweeper", "sequential", "naive-tune"])
    args = parser.parse_args()

    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.plan.spec import expand_cells, load_spec

    root = Path(tempfile.mkdtemp(prefix="sweeper-bench-baselines-"))
    frame, manifest = generate(SynthConfig(n_stays=args.stays, seed=0))
    write_stays(frame, manifest, root / "stays", split_seed=0)
    spec_path = root / "bench-baselines.yaml"
    spec_path.write_text(spec_text(root / "stays", args.seeds, args.epochs))
    spec, _ = load_spec(str(spec_path))
    cells = expand_cells(spec)
    print(f"{len(cells)} cells × {args.seeds} seeds = {len(cells) * args.seeds} trials, {args.epochs} epochs, {args.stays} stays, {os.cpu_count()} cores; {root}", flush=True)
    walls, aurocs = {}, {}
    for way in args.only:
        started = time.perf_counter()
        if way == "sweeper":
            aurocs[way] = run_sweeper(spec_path, root)
        elif way == "sequential":
            aurocs[way] = run_sequential(root / "stays", spec, cells)
        else:
            aurocs[way] = run_naive_tune(root / "stays", spec, spec_path, cells, root)
        walls[way] = time.perf_counter() - started
        print(f"{way:11} wall {walls[way]:7.1f} s   mean test AUROC {statistics.mean(v for vs in aurocs[way].values() for v in vs):.4f}", flush=True)
    if "sweeper" in walls:
        for way in walls:
            if way != "sweeper":
                gap = max(abs(statistics.mean(aurocs[way][c]) - statistics.mean(aurocs["sweeper"][c])) for c in aurocs["sweeper"])
                print(f"sweeper is {walls[way] / walls['sweeper']:.1f}× faster than {way}; largest per-cell difference of seed-mean test AUROC {gap:.4f}")
    (root / "bench.json").write_text(json.dumps({"walls": walls, "aurocs": aurocs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
