"""``sweeper plan``: what a spec will run and cost, before anything runs — its cells, the trials of
each phase, the stage runs its methods need, and how many trials fit on the cluster at once."""
from __future__ import annotations

import hashlib
import json
from collections import Counter

from sweeper.plan.ranking import rank_metrics
from sweeper.plan.spec import Cell, Spec, expand_cells, trial_config
from trainables import registry


def plan_text(spec, profile: str | None, cluster: dict[str, float], local: bool = True) -> str:
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
        "  tuned and ranked by: " + ", ".join(f"{task}: validation {metric.upper()}" for task, metric in rank_metrics(spec).items()),
        f"  by method: {by(lambda c: c.method)}",
        f"  by subset size: {by(lambda c: len(c.modalities))}",
        f"tune phase: {tune_trials} trials (≤ {budgets.tune_trials} per cell, Optuna TPE + ASHA grace {budgets.grace_period}, reduction {budgets.reduction_factor:g})"
        if budgets.tune_trials else "tune phase: skipped (tune_trials: 0, each cell runs its default config)",
        *_stages(spec, cells),
        f"final phase: {final_trials} trials ({spec.final.seeds} seeds per cell, early stop after {budgets.patience} epochs without gain)",
        f"worst-case trial-epochs: {(tune_trials + final_trials) * budgets.max_epochs} ({budgets.max_epochs} epochs max per trial)",
        f"resources per trial: {spec.resources.workers_per_trial} worker(s) × {spec.resources.cpus_per_trial:g} CPU"
        + (f" + {spec.resources.gpus_per_trial:g} GPU" if spec.resources.gpus_per_trial else "")
        + f"; trial runtime: {spec.resources.runtime(local)}" + (" (auto)" if spec.resources.trial_runtime == "auto" else ""),
        f"cluster: {cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU → " + (f"{slots} trials at once" if slots else "no trial fits (pick another --profile)"),
    ]
    return "\n".join(lines)


def _stages(spec, cells) -> list[str]:
    """One line per stage the cells depend on: how many runs (one per subset and stage config)."""
    jobs = stage_jobs(spec, cells, data_hash="")
    counts = Counter(job["stage"] for job in jobs.values())
    return [f"{name} phase: {n} runs (one per subset and config), read by {sum(len(j['dependents']) for j in jobs.values() if j['stage'] == name)} cells" for name, n in counts.items()]


def _skipped(spec, cells) -> str:
    full = len(spec.tasks) * len(spec.modality_subsets.expand()) * len(spec.methods)
    for values in spec.axes.values():
        full *= len(values)
    missing = full - len(cells)
    return f"; {missing} method × subset pairs left out (the method cannot read those modalities)" if missing else ""


def trial_slots(spec: Spec, cluster: dict[str, float]) -> int:
    """How many trials fit at once, leaving half a CPU for drivers and Ray Data (0: none fits)."""
    per_trial_cpu = spec.resources.cpus_per_trial * spec.resources.workers_per_trial
    slots = int((cluster.get("CPU", 0) - 0.5) // per_trial_cpu)
    if spec.resources.gpus_per_trial > 0:
        slots = min(slots, int(cluster.get("GPU", 0) // (spec.resources.gpus_per_trial * spec.resources.workers_per_trial)))
    if spec.resources.max_concurrent_trials:
        slots = min(slots, spec.resources.max_concurrent_trials)
    return max(0, slots)


def stage_jobs(spec: Spec, cells: list[Cell], data_hash: str) -> dict[str, dict]:
    """Artifact key → the stage run that makes it and the cells that read it."""
    jobs: dict[str, dict] = {}
    for cell in cells:
        needs = cell.trainable.needs
        if not needs:
            continue
        stage = registry.stage(needs)
        base = trial_config(spec, cell, {})
        config = {k: base.get(k, stage.defaults.get(k)) for k in stage.config_keys}
        config = {k: v for k, v in config.items() if v is not None}
        identity = json.dumps({"stage": stage.name, "subset": list(cell.modalities), "config": config, "data": data_hash, "seed": spec.seed}, sort_keys=True)
        key = f"{'+'.join(cell.modalities)}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"
        job = jobs.setdefault(key, {"stage": stage.name, "subset": list(cell.modalities), "config": config, "cell": cell.cell_id, "dependents": []})
        job["dependents"].append(cell.cell_id)
    return jobs
