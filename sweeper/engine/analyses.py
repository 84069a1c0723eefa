"""The analyses of a finished run, written to ``<run>/analyses/`` (summarised in ``leaderboard.md``
and ``report.html``):

  modality_contributions.csv  per task, method and modality, what adding the modality to a subset
                        changes the metric by (Shapley-style over the subsets run), with a paired
                        bootstrap CI over test stays (sweeper.evaluation.contributions)
  metric_by_size.csv    per task and method, the mean metric over the subsets of each size
  attributions.csv      per cell, each modality's Integrated-Gradients share (mean over seeds), from
                        trainables that declare ``attributions``
  subgroups.csv         per cell, test AUROC per gender / ethnicity / age band (mean over seeds)
  phenotype_groups.csv  per phenotyping cell, mean AUROC of the acute / chronic / mixed phenotypes
  per_task.csv          per multitask cell and label, precision / recall at the method's threshold,
                        AUROC and AUPRC with bootstrap CIs (sweeper.evaluation.per_task)
  <stage tables>        whatever each stage's ``analyses`` returns (PiCME: lambda.csv, alignment.csv,
                        and the attributions beside λ)
  <method tables>       whatever a trainable's ``analyses`` makes of its ``summaries`` (MedMIX:
                        router_experts.csv, router_modalities.csv)
  summary/<name>.csv, index.json   what a person reads: each table's title and its summary

Each file is written only when the run has what it needs. No stay id or note text is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.engine.trial import trial_run
from sweeper.evaluation.analyses import phenotype_group_auroc, subgroup_auroc
from sweeper.data.schema import REGRESSION_TASKS
from sweeper.evaluation.contributions import modality_contributions
from sweeper.evaluation.metrics import lower_is_better
from trainables import registry
from trainables.registry import Analysis


def attribution_table(final_results, cells) -> pd.DataFrame:
    shares: dict[str, list[dict]] = {}
    for result in final_results:
        run, metrics = trial_run(result.config or {}), result.metrics or {}
        if run.get("cell") and metrics.get("done"):
            found = {k[3:]: v for k, v in metrics.items() if k.startswith("ig_") and v == v}
            if found:
                shares.setdefault(run["cell"], []).append(found)
    rows = []
    for cell in cells:
        for modality in cell.modalities if cell.cell_id in shares else ():
            values = [s[modality] for s in shares[cell.cell_id] if modality in s]
            rows.append({"cell_id": cell.cell_id, "task": cell.task, "method": cell.method, "subset": "+".join(cell.modalities),
                         "modality": modality, "ig_share": float(np.mean(values)), "n_seeds": len(values)})
    return pd.DataFrame(rows)


def subgroup_tables(per_cell: dict, cells, stays_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sweeper.data.stays import read_stays

    table, manifest = read_stays(stays_dir, "test")
    wanted = [c for c in ("demo_gender", "demo_ethnicity", "demo_age") if c in table.column_names]
    demographics = table.select(["stay_id", *wanted]).to_pandas().set_index("stay_id") if len(wanted) == 3 else None
    subgroup_rows, phenotype_rows = [], []
    for cell in cells:
        seeds = per_cell.get(cell.cell_id, [])
        if not seeds or cell.task in REGRESSION_TASKS:  # AUROC per subgroup: classification cells only
            continue
        if demographics is not None:
            frames = [subgroup_auroc(s.labels, s.scores, demographics.reindex(s.stay_ids).reset_index(drop=True)) for s in seeds]
            merged = pd.concat(frames).groupby(["group", "subgroup"], sort=False).agg(n=("n", "first"), n_positive=("n_positive", "first"), auroc=("auroc", "mean"))
            subgroup_rows.append(merged.reset_index().assign(cell_id=cell.cell_id, task=cell.task, method=cell.method, subset="+".join(cell.modalities)))
        if cell.task == "phenotyping" and seeds[0].labels.ndim == 2 and seeds[0].labels.shape[1] == len(manifest.phenotypes):
            groups = [phenotype_group_auroc(s.labels, s.scores) for s in seeds]
            phenotype_rows.append({"cell_id": cell.cell_id, "method": cell.method, "subset": "+".join(cell.modalities),
                                   **{g: float(np.nanmean([x[g] for x in groups])) for g in groups[0]}})
    subgroups = pd.concat(subgroup_rows, ignore_index=True) if subgroup_rows else pd.DataFrame()
    return subgroups, pd.DataFrame(phenotype_rows)


def contribution_analyses(cells, per_cell: dict, metric="auroc", n_resamples: int = 1000) -> list[Analysis]:
    """What each modality adds and the metric by number of modalities, when the sweep ran subsets
    that differ by one modality (else nothing). ``metric``: one name or ``{task: metric}``."""
    rows = [{**cell.row(), "cell_id": cell.cell_id} for cell in cells if cell.cell_id in per_cell]
    if not rows:
        return []
    contributions, by_size = modality_contributions(rows, per_cell, metric, n_resamples)
    names = sorted(set(contributions.get("metric", pd.Series(dtype=str))) | set(by_size.get("metric", pd.Series(dtype=str))))
    metric = names[0] if len(names) == 1 else "auroc"
    shown_metric = metric.upper() if len(names) <= 1 else "metric (each task's: column metric)"
    found = []
    index = ["task", "method", *[c for c in contributions.columns if c not in _CONTRIBUTION_COLUMNS]]
    if len(contributions) and contributions["contribution"].notna().any():
        shown = contributions.dropna(subset=["contribution"]).assign(text=lambda f: [
            f"{r.contribution:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" for r in f.itertuples()])
        order = shown.groupby("modality")["contribution"].mean().sort_values(ascending=lower_is_better(metric)).index
        summary = shown.pivot(index=index, columns="modality", values="text")[list(order)]
        found.append(Analysis("modality_contributions", f"What each modality adds: mean change in test {shown_metric} when it "
                              "joins a subset that lacks it (Shapley-style over the subsets run) [95% paired bootstrap CI "
                              "over test stays]", contributions, summary))
    if len(by_size) and (by_size.groupby(index)["n_modalities"].nunique() > 1).any():
        shown = by_size.assign(text=[f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in by_size.itertuples()])
        found.append(Analysis("metric_by_size", f"Test {shown_metric} by number of modalities: mean over the subsets of "
                              "each size [95% bootstrap CI over test stays]", by_size,
                              shown.pivot(index=index, columns="n_modalities", values="text")))
    return found


_CONTRIBUTION_COLUMNS = {"task", "method", "modality", "metric", "contribution", "ci_low", "ci_high", "p_value", "n_pairs", "n_sizes", "rank"}


def summary_table(final_results, cells) -> pd.DataFrame:
    """Per cell, each ``summary:<name>`` metric of its final trials, mean over seeds."""
    found: dict[str, list[dict]] = {}
    for result in final_results:
        run, metrics = trial_run(result.config or {}), result.metrics or {}
        if run.get("cell") and metrics.get("done"):
            values = {k.split(":", 1)[1]: v for k, v in metrics.items() if k.startswith("summary:") and v == v}
            if values:
                found.setdefault(run["cell"], []).append(values)
    rows = []
    for cell in cells:
        for name in sorted({n for seed in found.get(cell.cell_id, []) for n in seed}):
            values = [seed[name] for seed in found[cell.cell_id] if name in seed]
            rows.append({"cell_id": cell.cell_id, "task": cell.task, "method": cell.method, "subset": "+".join(cell.modalities),
                         "name": name, "value": float(np.mean(values)), "n_seeds": len(values)})
    return pd.DataFrame(rows, columns=["cell_id", "task", "method", "subset", "name", "value", "n_seeds"])


def _stage_artifacts(run_dir: Path) -> dict[str, list[tuple[str, dict, Path]]]:
    out: dict[str, list] = {}
    for index in sorted((run_dir / "artifacts").glob("*/index.json")):
        out[index.parent.name] = [(key, entry, index.parent / key) for key, entry in json.loads(index.read_text()).items()]
    return out


def per_task_analysis(cells, per_cell: dict, stays_dir: Path, thresholds: dict, n_resamples: int = 1000) -> list[Analysis]:
    """Per label of every ``multitask`` cell: precision, recall, AUROC, AUPRC [95% bootstrap CI]."""
    from sweeper.data.multitask import MULTITASK, label_names
    from sweeper.data.schema import read_manifest
    from sweeper.evaluation.aggregate import aligned_predictions
    from sweeper.evaluation.per_task import PER_TASK_METRICS, per_task_table

    rows = []
    for cell in (c for c in cells if c.task == MULTITASK and per_cell.get(c.cell_id)):
        labels, scores = aligned_predictions(per_cell[cell.cell_id])
        table = per_task_table(labels, list(scores), label_names(read_manifest(stays_dir)), float(thresholds.get(cell.method, 0.5)), n_resamples)
        rows += [{"cell_id": cell.cell_id, "method": cell.method, "subset": "+".join(cell.modalities), **dict(cell.axes), **row} for row in table]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    shown = frame.assign(**{m: [f"{r[m]:.3f} [{r[m + '_low']:.3f}, {r[m + '_high']:.3f}]" for _, r in frame.iterrows()] for m in PER_TASK_METRICS})
    summary = shown.set_index(["label", "method", "subset"])[["n_known", "n_positive", *PER_TASK_METRICS]]
    return [Analysis("per_task", "Per task: precision and recall at the threshold, AUROC, AUPRC on its known test labels "
                     "(mean over seeds [95% bootstrap CI over test stays])", frame, summary)]


def run_analyses(cells, per_cell: dict, final_results, run_dir: Path, stays_dir: Path, metric="auroc",
                 n_resamples: int = 1000, thresholds: dict | None = None) -> list[Analysis]:
    """Every analysis the run supports, in the order a person reads them (empty ones left out)."""
    attributions = attribution_table(final_results, cells)
    subgroups, phenotypes = subgroup_tables(per_cell, cells, stays_dir)
    found: dict[str, Analysis] = {a.name: a for a in contribution_analyses(cells, per_cell, metric, n_resamples)}
    found.update({a.name: a for a in per_task_analysis(cells, per_cell, stays_dir, thresholds or {}, n_resamples)})
    if len(attributions):
        found["attributions"] = Analysis("attributions", "Integrated-Gradients share per modality (mean over seeds)", attributions,
                                         attributions.pivot_table(index=["task", "method", "subset"], columns="modality", values="ig_share"))
    for stage_name, artifacts in _stage_artifacts(run_dir).items():
        stage = registry.stage(stage_name)
        if stage.analyses is not None:
            for analysis in stage.analyses(artifacts, attributions):
                found[analysis.name] = analysis  # a stage may extend a generic table (e.g. IG beside its λ)
    summaries = summary_table(final_results, cells)
    for trainable in {id(c.trainable): c.trainable for c in cells}.values():
        mine = summaries[summaries["method"].map(lambda m: registry.get(m) is trainable)] if len(summaries) else summaries
        if trainable.analyses is not None and len(mine):
            found.update({a.name: a for a in trainable.analyses(mine.reset_index(drop=True))})
    if len(phenotypes):
        found["phenotype_groups"] = Analysis("phenotype_groups", "Phenotype AUROC by group", phenotypes)
    if len(subgroups):
        found["subgroups"] = Analysis("subgroups", "Test AUROC per subgroup (counts in analyses/subgroups.csv)", subgroups,
                                      subgroups.pivot_table(index=["group", "subgroup"], columns="cell_id", values="auroc", sort=False))
    return [a for a in found.values() if len(a.table)]


def write_analyses(analyses: list[Analysis], run_dir: Path) -> None:
    """``analyses/<name>.csv`` per table, ``analyses/summary/<name>.csv`` and ``analyses/index.json``
    (titles and summary layout) for the report."""
    out = run_dir / "analyses"
    (out / "summary").mkdir(parents=True, exist_ok=True)
    index = []
    for analysis in analyses:
        analysis.table.to_csv(out / f"{analysis.name}.csv", index=False)
        summary = analysis.summary if analysis.summary is not None else analysis.table
        pivoted = analysis.summary is not None and not isinstance(summary.index, pd.RangeIndex)
        summary.to_csv(out / "summary" / f"{analysis.name}.csv", index=pivoted)
        index.append({"name": analysis.name, "title": analysis.title, "index_columns": summary.index.nlevels if pivoted else 0})
    (out / "index.json").write_text(json.dumps(index, indent=2))
