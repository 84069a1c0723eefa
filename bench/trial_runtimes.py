"""Distance to the floor, per trial runtime: how close a phase comes to the time its trials really
compute (run by hand; numbers in the README).

Runs one sweep per runtime (``train``, ``inline``) of the same spec on the same synthetic stays: the
all-combos local trial shape (in-hospital mortality, picme.supervised over several modality subsets,
Optuna + ASHA, 4 epochs), at least 24 tune trials. Each trial reports its own busy seconds
(``busy_s``: from entering the training loop to its last report). For the tune phase of N trials on
P slots:

  R            = phase wall ÷ max(Σ busy ÷ P, longest trial)     (1.0: no overhead at all)
  overhead     = (P × phase wall − Σ busy) ÷ N                    (seconds a trial costs beyond its work)
  slots busy % = Σ busy ÷ (P × phase wall)

    python bench/trial_runtimes.py [--stays 600] [--trials-per-cell 6] [--runtimes inline train]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
name: bench-runtimes
seed: 0
data: {{path: {stays}}}
tasks: [ihm]
modality_subsets:
  explicit: [[timeseries, demographics], [discharge, radiology], [discharge, timeseries], [radiology, demographics]]
methods:
  picme.supervised:
    search:
      lr: {{loguniform: [3.0e-4, 3.0e-3]}}
      batch_size: {{choice: [32, 64]}}
    fixed: {{d: 32}}
budgets: {{tune_trials: {trials}, max_epochs: 4, grace_period: 1, reduction_factor: 2, patience: 2}}
final: {{seeds: 1}}
resources: {{cpus_per_trial: 1, trial_runtime: {runtime}}}
"""


def phase_numbers(run_dir: Path, phase: str, slots: int) -> dict:
    walls = [json.loads(line) for line in (run_dir / "timings.jsonl").read_text().splitlines()]
    wall = sum(w["wall_s"] for w in walls if w["phase"] == phase)
    busy = []
    for result in (run_dir / phase).glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows and "busy_s" in rows[-1]:
            busy.append(float(rows[-1]["busy_s"]))
    total = sum(busy)
    floor = max(total / slots, max(busy))
    return {"trials": len(busy), "wall_s": wall, "busy_s": total, "R": wall / floor, "overhead_s": (slots * wall - total) / len(busy),
            "slots_busy_pct": 100 * total / (slots * wall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=int, default=600, help="synthetic stays (default 600)")
    parser.add_argument("--trials-per-cell", type=int, default=6, help="tune trials per cell; 4 cells (default 6: 24 trials)")
    parser.add_argument("--runtimes", nargs="+", default=["inline", "train"], choices=["inline", "train"])
    parser.add_argument("--slots", type=int, default=2, help="trial slots of the local Ray (what `sweeper run` prints; default 2 on 2 cores)")
    args = parser.parse_args()

    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    root = Path(tempfile.mkdtemp(prefix="sweeper-bench-runtimes-"))
    frame, manifest = generate(SynthConfig(n_stays=args.stays, seed=0))
    write_stays(frame, manifest, root / "stays", split_seed=0)
    print(f"{4 * args.trials_per_cell} tune trials (4 cells × {args.trials_per_cell}), {args.stays} synthetic stays, {args.slots} slots; {root}")
    print(f"{'runtime':8} {'trials':>6} {'wall s':>8} {'Σ busy s':>9} {'R':>6} {'overhead s/trial':>17} {'slots busy %':>13} {'sweep wall s':>13}")
    for runtime in args.runtimes:
        spec = root / f"{runtime}.yaml"
        spec.write_text(SPEC.format(stays=root / "stays", trials=args.trials_per_cell, runtime=runtime))
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "sweeper.cli", "run", str(spec), "--results", str(root / "results"), "--run-name", runtime, "--quiet"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        sweep_wall = time.perf_counter() - started
        n = phase_numbers(root / "results" / "bench-runtimes" / runtime, "tune", args.slots)
        print(f"{runtime:8} {n['trials']:>6} {n['wall_s']:>8.1f} {n['busy_s']:>9.1f} {n['R']:>6.2f} {n['overhead_s']:>17.2f} {n['slots_busy_pct']:>13.1f} {sweep_wall:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
