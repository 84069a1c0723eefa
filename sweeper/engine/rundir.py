"""The run folder and its bookkeeping: which profile a run takes, where its folder is, what
``--resume`` finishes, and the ``spec.yaml`` / ``run.json`` a run is started with."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import yaml

from sweeper.errors import SweeperError
from sweeper.plan.spec import spec_path

DEFAULT_RESULTS = Path("results")

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

def pick_profile(spec_name: str, profile: str | None, has_gpu: bool) -> str | None:
    """``--profile`` wins; otherwise ``local`` on a GPU-less cluster when the spec defines it."""
    if profile is not None:
        return profile
    try:
        raw = yaml.safe_load(spec_path(spec_name).read_text())
        profiles = raw.get("profiles") or {}
    except (OSError, ValueError, RecursionError, yaml.YAMLError, AttributeError):
        return None  # an unreadable spec: load_spec reports it in one line
    return "local" if not has_gpu and isinstance(profiles, dict) and "local" in profiles else None

def resolve_run_dir(options: RunOptions, spec_name: str) -> Path:
    base = Path(options.results).absolute() / spec_name
    if options.resume:
        if options.run_name:
            run_dir = base / options.run_name
        else:
            runs = [(run_info(p), p) for p in base.glob("*") if (p / "run.json").is_file()] if base.is_dir() else []
            if options.profile is not None:
                runs = [(info, p) for info, p in runs if info.get("profile") == options.profile]
            if not runs:
                which = f"run of {spec_name!r}" + (f" with profile {options.profile!r}" if options.profile is not None else "")
                raise SweeperError(f"--resume: no {which} under {base}; start one with `sweeper run {spec_name}`")
            # The latest by start time (a --run-name folder sorts anywhere by name).
            run_dir = max(runs, key=lambda run: (str(run[0].get("started", "")), run[1].name))[1]
        if not (run_dir / "run.json").is_file():
            raise SweeperError(f"--resume: {run_dir} is not a sweeper run folder (no run.json)")
        started_with = run_info(run_dir).get("profile")
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

def run_info(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as error:
        raise SweeperError(f"{run_dir / 'run.json'}: unreadable ({error}); remove that folder or pass --run-name") from None
    return info if isinstance(info, dict) else {}

def save_run_files(run_dir: Path, spec_file: Path, options: RunOptions, profile: str | None, metric: str, runtime: str,
                   rank_metrics: dict[str, str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(spec_file, run_dir / "spec.yaml")
    info = {"spec": options.spec, "profile": profile, "metric": metric, "runtime": runtime, "data": options.data, "started": dt.datetime.now().isoformat(timespec="seconds")}
    if rank_metrics:  # what each task is ranked by (the report reads it back)
        info["rank_metrics"] = rank_metrics
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
