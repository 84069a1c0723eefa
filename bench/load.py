"""Load and chaos on a local Ray cluster (run by hand; numbers in the README and the issue note).

load:  one sweep of at least 2 000 tiny tune trials (26 modality subsets × picme.supervised, one
       epoch on a small synthetic cohort, inline runtime) against a `ray start --head` cluster.
       Reports lost trials (asked for, never finished), the driver's peak RSS and its slope over the
       sweep (a least-squares line through RSS samples taken every second), and what is left on the
       cluster afterwards (alive trial actors, placement groups not removed) and on the machine once
       the cluster is stopped (Ray processes).
chaos: a smaller sweep of the same shape during which a random trial actor process (`ray::ImplicitFunc`)
       is SIGKILLed every few seconds, at least 20 times; every cell must end complete (all its
       final seeds) and no finished trial may start again.

    python bench/load.py load  [--subsets 26 --trials-per-cell 80 --stays 200]
    python bench/load.py chaos [--kills 20 --trials-per-cell 12 --every-s 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

SPEC = """
name: {name}
seed: 0
data: {{path: {stays}}}
tasks: [ihm]
modality_subsets: {{sizes: [2, 5]}}
methods:
  picme.supervised:
    search:
      lr: {{loguniform: [3.0e-4, 3.0e-3]}}
      batch_size: {{choice: [32, 64]}}
    fixed: {{d: 8, text_encoder: bag}}
budgets: {{tune_trials: {trials}, max_epochs: {epochs}, grace_period: 1, reduction_factor: 2, patience: 2}}
final: {{seeds: {seeds}, bootstrap_resamples: 1000}}
resources: {{cpus_per_trial: 1, trial_runtime: inline}}
"""
RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor", "runtime_env_agent")


def ray_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(k in line for k in RAY_PROCESSES) and "bench/load.py" not in line:
            found.append(f"{proc.pid} {line[:80]}")
    return found


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "trial_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def reran(run_events: list[dict]) -> set[str]:
    """Trials that started again after they had finished."""
    finished, again = set(), set()
    for e in run_events:
        if e["event"] == "finished":
            finished.add(e["trial_id"])
        elif e["event"] == "start" and e["trial_id"] in finished:
            again.add(e["trial_id"])
    return again


def actor_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (proc.info["cmdline"] or [""])[0].startswith("ray::ImplicitFunc"):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["load", "chaos"])
    parser.add_argument("--stays", type=int, default=200, help="synthetic stays (default 200)")
    parser.add_argument("--trials-per-cell", type=int, help="tune trials per cell (default: 80 load, 12 chaos); 26 cells")
    parser.add_argument("--kills", type=int, default=20, help="chaos: trial processes to kill (default 20)")
    parser.add_argument("--every-s", type=float, default=3.0, help="chaos: seconds between kills (default 3)")
    args = parser.parse_args()
    trials = args.trials_per_cell or (80 if args.mode == "load" else 12)
    if ray_processes():
        print("Ray is running on this machine already; stop it first (`ray stop`)", file=sys.stderr)
        return 2

    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    root = Path(tempfile.mkdtemp(prefix=f"sweeper-bench-{args.mode}-"))
    frame, manifest = generate(SynthConfig(n_stays=args.stays, seed=0))
    write_stays(frame, manifest, root / "stays", split_seed=0)
    name = f"bench-{args.mode}"
    seeds = 1 if args.mode == "load" else 2
    (root / "spec.yaml").write_text(SPEC.format(name=name, stays=root / "stays", trials=trials, epochs=1 if args.mode == "load" else 3, seeds=seeds))
    port = 6390
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a cluster on loopback for this benchmark only (its driver inherits it)
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    "--disable-usage-stats"], check=True, capture_output=True)
    address = f"127.0.0.1:{port}"
    run_dir = root / "results" / name / "r"
    try:
        started = time.time()
        driver = subprocess.Popen([sys.executable, "-m", "sweeper.cli", "run", str(root / "spec.yaml"), "--address", address, "--results",
                                   str(root / "results"), "--run-name", "r", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        rss, kills, next_kill = [], 0, time.time() + 20
        proc = psutil.Process(driver.pid)
        while driver.poll() is None:
            try:
                rss.append((time.time() - started, proc.memory_info().rss / 2**20))
            except psutil.NoSuchProcess:
                break
            if args.mode == "chaos" and kills < args.kills and time.time() >= next_kill:
                pids = actor_pids()
                if pids:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    kills += 1
                next_kill = time.time() + args.every_s
            time.sleep(1)
        output = driver.communicate()[0].decode()
        wall = time.time() - started
        if driver.returncode != 0:
            print(output[-3000:], file=sys.stderr)
            return 1
        from ray.util.state import list_actors, list_placement_groups

        dashboard = "http://127.0.0.1:8265"
        alive = [a for a in list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
                 if a.class_name in ("ImplicitFunc", "RayTrainWorker")]
        groups = [g for g in list_placement_groups(address=dashboard, raise_on_missing_output=False) if g.state != "REMOVED"]
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
    time.sleep(3)
    left = ray_processes()
    run_events = events(run_dir)
    phases = {}
    for e in run_events:
        phases.setdefault(e["phase"], {"asked": set(), "finished": set()})
        if e["event"] == "start":
            phases[e["phase"]]["asked"].add(e["trial_id"])
        if e["event"] == "finished":
            phases[e["phase"]]["finished"].add(e["trial_id"])
    timings = [json.loads(line) for line in (run_dir / "timings.jsonl").read_text().splitlines()]
    retries = sum(1 for e in run_events if e["event"] == "retry")
    times, mem = np.array([t for t, _ in rss]), np.array([m for _, m in rss])
    (root / "driver_rss.csv").write_text("seconds,rss_mib\n" + "".join(f"{t:.1f},{m:.1f}\n" for t, m in rss))
    # The slope over the tune phase (its trials, not the start-up imports or the outputs at the end),
    # per minute and per finished trial.
    # The tune phase runs as waves of whole cells (tune, tune-2, ...; resources.trials_per_experiment):
    # from the first wave's start to the last wave's end.
    waves = [t for t in timings if t["phase"] == "tune" or t["phase"].startswith("tune-")]
    tune = {"started": waves[0]["started"], "wall_s": waves[-1]["started"] + waves[-1]["wall_s"] - waves[0]["started"],
            "trials": sum(t["trials"] for t in waves)}
    inside = (times >= tune["started"] - started) & (times <= tune["started"] - started + tune["wall_s"])
    slope = float(np.polyfit(times[inside] / 60, mem[inside], 1)[0]) if inside.sum() > 2 else float("nan")
    per_trial = slope * tune["wall_s"] / 60 / max(tune["trials"], 1)
    half = np.flatnonzero(inside)[inside.sum() // 2:]
    slope_late = float(np.polyfit(times[half] / 60, mem[half], 1)[0]) if len(half) > 2 else float("nan")
    import pandas as pd

    board = pd.read_csv(run_dir / "leaderboard.csv")
    print(f"{args.mode}: {root}")
    for phase, counts in phases.items():
        planned = tune["trials"] if phase == "tune" else next((t["trials"] for t in timings if t["phase"] == phase), "?")
        print(f"  {phase}: {len(counts['finished'])} trials finished of {planned} planned; lost {len(counts['asked'] - counts['finished'])}")
    print(f"  wall {wall:.0f} s; driver RSS peak {mem.max():.0f} MiB (at the tune phase's start {mem[inside][:5].mean():.0f} MiB, at its end "
          f"{mem[inside][-5:].mean():.0f} MiB); slope over the tune phase {slope:+.1f} MiB/min = {per_trial * 1024:+.0f} KiB per trial "
          f"(its second half {slope_late:+.1f} MiB/min); samples in {root / 'driver_rss.csv'}")
    print(f"  cells complete: {int((board['n_seeds'] == seeds).sum())}/{len(board)} with {seeds} seeds; retries {retries}; "
          f"finished trials started again: {len(reran(run_events))}")
    if args.mode == "chaos":
        print(f"  trial processes killed: {kills}")
    print(f"  after the sweep: alive trial actors {len(alive)}, placement groups not removed {len(groups)}; "
          f"Ray processes left after `ray stop`: {len(left)}")
    for line in left:
        print("    " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
