"""The analyses of a finished run, written to ``<run>/analyses/`` (summarised in ``leaderboard.md``
and ``report.html``):

  attributions.csv      per cell, each modality's Integrated-Gradients share (mean over seeds), from
                        trainables that declare ``attributions``
  subgroups.csv         per cell, test AUROC per gender / ethnicity / age band (mean over seeds)
  phenotype_groups.csv  per phenotyping cell, mean AUROC of the acute / chronic / mixed phenotypes
  <stage tables>        whatever each stage's ``analyses`` returns (PiCME: lambda.csv, alignment.csv,
                        and the attributions beside λ)
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
        if not seeds:
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


def _stage_artifacts(run_dir: Path) -> dict[str, list[tuple[str, dict, Path]]]:
    out: dict[str, list] = {}
    for index in sorted((run_dir / "artifacts").glob("*/index.json")):
        out[index.parent.name] = [(key, entry, index.parent / key) for key, entry in json.loads(index.read_text()).items()]
    return out


def run_analyses(cells, per_cell: dict, final_results, run_dir: Path, stays_dir: Path) -> list[Analysis]:
    """Every analysis the run supports, in the order a person reads them (empty ones left out)."""
    attributions = attribution_table(final_results, cells)
    subgroups, phenotypes = subgroup_tables(per_cell, cells, stays_dir)
    found: dict[str, Analysis] = {}
    if len(attributions):
        found["attributions"] = Analysis("attributions", "Integrated-Gradients share per modality (mean over seeds)", attributions,
                                         attributions.pivot_table(index=["task", "method", "subset"], columns="modality", values="ig_share"))
    for stage_name, artifacts in _stage_artifacts(run_dir).items():
        stage = registry.stage(stage_name)
        if stage.analyses is not None:
            for analysis in stage.analyses(artifacts, attributions):
                found[analysis.name] = analysis  # a stage may extend a generic table (e.g. IG beside its λ)
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
