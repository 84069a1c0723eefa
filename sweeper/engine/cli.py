"""``sweeper plan NAME``, ``sweeper run NAME`` and ``sweeper report RUN``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from sweeper.engine.rundir import DEFAULT_RESULTS, RunOptions, pick_profile
from sweeper.engine.session import local_cluster_resources
from sweeper.plan.plan import plan_text
from sweeper.plan.spec import load_spec


def run_plan(args: argparse.Namespace) -> int:
    if args.address:
        import ray

        from sweeper.engine.session import RaySession

        with RaySession(args.address):
            cluster = dict(ray.cluster_resources())
    else:
        cluster = local_cluster_resources()
    profile = pick_profile(args.spec, args.profile, cluster.get("GPU", 0) > 0)
    spec, _ = load_spec(args.spec, profile)
    print(plan_text(spec, profile, cluster, local=not args.address))
    return 0


def run_run(args: argparse.Namespace) -> int:
    from sweeper.engine.sweep import run

    run(RunOptions(
        spec=args.spec, profile=args.profile, data=args.data, address=args.address or os.environ.get("RAY_ADDRESS"),
        results=Path(args.results), resume=args.resume, run_name=args.run_name, quiet=args.quiet,
    ))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from sweeper.report.html import write_html_report

    print(write_html_report(Path(args.run_dir)))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec name (a shipped one, e.g. all-combos, smoke, or one in a $SWEEPER_SPEC_PATH folder) or a path to a .yaml file")
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
