"""``sweeper plan NAME`` and ``sweeper run NAME``."""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from sweeper.tune.runner import DEFAULT_RESULTS, RunOptions, local_cluster_resources, pick_profile, trial_slots
from sweeper.tune.spec import expand_cells, load_spec


def plan_text(spec, profile: str | None, cluster: dict[str, float]) -> str:
    cells = expand_cells(spec)
    budgets = spec.budgets
    tune_trials = sum(min(budgets.tune_trials, 1 if not spec.methods[c.method].search else budgets.tune_trials) for c in cells)
    final_trials = len(cells) * spec.final.seeds
    slots = trial_slots(spec, cluster)
    by = lambda key: ", ".join(f"{k}: {n}" for k, n in Counter(key(c) for c in cells).items())  # noqa: E731
    lines = [
        f"spec {spec.name}" + (f" (profile {profile})" if profile else ""),
        f"cells: {len(cells)}  ({len(spec.tasks)} tasks × {len(spec.modality_subsets.expand())} modality subsets × {len(spec.methods)} methods"
        + "".join(f" × {len(v)} {k}" for k, v in spec.axes.items()) + ")" + _skipped(spec, cells),
        f"  by task: {by(lambda c: c.task)}",
        f"  by method: {by(lambda c: c.method)}",
        f"  by subset size: {by(lambda c: len(c.modalities))}",
        f"tune phase: {tune_trials} trials (≤ {budgets.tune_trials} per cell, Optuna TPE + ASHA grace {budgets.grace_period}, reduction {budgets.reduction_factor:g})"
        if budgets.tune_trials else "tune phase: skipped (tune_trials: 0, each cell runs its default config)",
        *_stages(spec, cells),
        f"final phase: {final_trials} trials ({spec.final.seeds} seeds per cell, early stop after {budgets.patience} epochs without gain)",
        f"worst-case trial-epochs: {(tune_trials + final_trials) * budgets.max_epochs} ({budgets.max_epochs} epochs max per trial)",
        f"resources per trial: {spec.resources.workers_per_trial} worker(s) × {spec.resources.cpus_per_trial:g} CPU"
        + (f" + {spec.resources.gpus_per_trial:g} GPU" if spec.resources.gpus_per_trial else ""),
        f"cluster: {cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU → " + (f"{slots} trials at once" if slots else "no trial fits (pick another --profile)"),
    ]
    return "\n".join(lines)


def _stages(spec, cells) -> list[str]:
    """One line per stage the cells depend on: how many runs (one per subset and stage config)."""
    from sweeper.tune.stages import stage_jobs

    jobs = stage_jobs(spec, cells, data_hash="")
    counts = Counter(job["stage"] for job in jobs.values())
    return [f"{name} phase: {n} runs (one per subset and config), read by {sum(len(j['dependents']) for j in jobs.values() if j['stage'] == name)} cells" for name, n in counts.items()]


def _skipped(spec, cells) -> str:
    full = len(spec.tasks) * len(spec.modality_subsets.expand()) * len(spec.methods)
    for values in spec.axes.values():
        full *= len(values)
    missing = full - len(cells)
    return f"; {missing} method × subset pairs left out (the method cannot read those modalities)" if missing else ""


def run_plan(args: argparse.Namespace) -> int:
    if args.address:
        import ray

        from sweeper.tune.runner import _ray_session

        with _ray_session(args.address):
            cluster = dict(ray.cluster_resources())
    else:
        cluster = local_cluster_resources()
    profile = pick_profile(args.spec, args.profile, cluster.get("GPU", 0) > 0)
    spec, _ = load_spec(args.spec, profile)
    print(plan_text(spec, profile, cluster))
    return 0


def run_run(args: argparse.Namespace) -> int:
    from sweeper.tune.runner import run

    run(RunOptions(
        spec=args.spec, profile=args.profile, data=args.data, address=args.address or os.environ.get("RAY_ADDRESS"),
        results=Path(args.results), resume=args.resume, run_name=args.run_name, quiet=args.quiet,
    ))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from sweeper.evaluation.html_report import write_html_report

    print(write_html_report(Path(args.run_dir)))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec name in search_spaces/ (e.g. all-combos, smoke) or a path to a .yaml file")
    parser.add_argument("--profile", help="named profile of the spec (default: 'local' when the cluster has no GPU)")
    parser.add_argument("--address", help="Ray cluster to attach to ('auto' for the running one; default: start a local Ray, or $RAY_ADDRESS)")


def add_commands(commands) -> None:
    plan = commands.add_parser("plan", help="validate a spec and print its cells, trials and cost — no training")
    _common(plan)
    plan.set_defaults(handler=run_plan)

    run = commands.add_parser("run", help="run a sweep: tune phase, final seeds, leaderboard")
    _common(run)
    run.add_argument("--data", help="stays folder to use instead of the spec's data")
    run.add_argument("--results", default=str(DEFAULT_RESULTS), help="results root (default: results/)")
    run.add_argument("--resume", action="store_true", help="finish the latest-started run of this spec (of --profile, or the --run-name run); finished trials are not re-run")
    run.add_argument("--run-name", help="run folder name (default: a timestamp)")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.set_defaults(handler=run_run)

    about = "(re)build a finished run's report.html from its leaderboard and analyses — no Ray"
    report = commands.add_parser("report", help=about, description=about)
    report.add_argument("run_dir", help="a run folder, e.g. results/all-combos/20261121-200303")
    report.set_defaults(handler=run_report)
