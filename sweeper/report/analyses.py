"""The PiCME paper's analyses of a finished run, written to ``<run>/analyses/`` and summarised in
``leaderboard.md``:

  lambda.csv            final λ per modality of every pre-training run (subset)
  alignment.csv         top-5 alignment per subset, on the pre-trained frozen embeddings of the
                        stays that have every modality of the subset
  attributions.csv      per cell, each modality's Integrated-Gradients share (mean over seeds)
                        beside the λ of the cell's subset, where there is one
  subgroups.csv         per cell, test AUROC per gender / ethnicity / age band (mean over seeds)
  phenotype_groups.csv  per phenotyping cell, mean AUROC of the acute / chronic / mixed phenotypes

Each file is written only when the run has what it needs (a pre-training stage, a final model
with IG, demographics in the stays, a phenotyping cell). No stay id or note text is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

ALIGNMENT_STAYS = 2000


def _artifacts(run_dir: Path) -> list[tuple[str, dict, Path]]:
    out = []
    for index in sorted((run_dir / "artifacts").glob("*/index.json")):
        for key, entry in json.loads(index.read_text()).items():
            out.append((key, entry, index.parent / key))
    return out


def lambda_and_alignment(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sweeper.evaluation.analyses import top_k_alignment

    lambdas, alignments = [], []
    for key, entry, folder in _artifacts(run_dir):
        subset = "+".join(entry["subset"])
        lam = json.loads((folder / "lambda.json").read_text())
        lambdas += [{"subset": subset, "modality": m, "lambda": v, "artifact": key} for m, v in lam["final"].items()]
        with np.load(folder / "embeddings.npz", allow_pickle=False) as saved:
            present = saved["present"].astype(bool) if "present" in saved.files else None
            if present is None:
                continue
            complete = np.flatnonzero(present.all(axis=1))[:ALIGNMENT_STAYS]
            if len(complete) < 7:
                continue
            score = top_k_alignment({m: saved[m][complete] for m in entry["subset"]}, k=5)
        alignments.append({"subset": subset, "n_stays": len(complete), "top5_alignment": score["overall"],
                           **{f"top5_{m}": v for m, v in score["per_modality"].items()}})
    return pd.DataFrame(lambdas), pd.DataFrame(alignments)


def attributions(final_results, cells, lambdas: pd.DataFrame) -> pd.DataFrame:
    lam = {(r.subset, r.modality): r["lambda"] for _, r in lambdas.iterrows()} if len(lambdas) else {}
    shares: dict[str, list[dict]] = {}
    for result in final_results:
        run, metrics = (result.config or {}).get("run"), result.metrics or {}
        if run and metrics.get("done"):
            found = {k[3:]: v for k, v in metrics.items() if k.startswith("ig_") and v == v}
            if found:
                shares.setdefault(run["cell"], []).append(found)
    rows = []
    for cell in cells:
        subset = "+".join(cell.modalities)
        for modality in cell.modalities if cell.cell_id in shares else ():
            values = [s[modality] for s in shares[cell.cell_id] if modality in s]
            rows.append({"cell_id": cell.cell_id, "task": cell.task, "method": cell.method, "subset": subset, "modality": modality,
                         "ig_share": float(np.mean(values)), "n_seeds": len(values), "lambda": lam.get((subset, modality), np.nan)})
    return pd.DataFrame(rows)


def subgroups_and_phenotypes(per_cell: dict, cells, stays_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sweeper.data.stays import read_stays
    from sweeper.evaluation.analyses import phenotype_group_auroc, subgroup_auroc

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


def write_analyses(cells, per_cell: dict, final_results, run_dir: Path, stays_dir: Path) -> dict[str, pd.DataFrame]:
    """Write every analysis the run supports; returns them by file stem (empty ones left out)."""
    lambdas, alignment = lambda_and_alignment(run_dir)
    subgroups, phenotypes = subgroups_and_phenotypes(per_cell, cells, stays_dir)
    tables = {"lambda": lambdas, "alignment": alignment, "attributions": attributions(final_results, cells, lambdas),
              "subgroups": subgroups, "phenotype_groups": phenotypes}
    tables = {name: frame for name, frame in tables.items() if len(frame)}
    out = run_dir / "analyses"
    out.mkdir(exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    return tables


def read_analyses(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The analyses a finished run wrote, by file stem (those it did not write are left out)."""
    folder = Path(run_dir) / "analyses"
    return {path.stem: pd.read_csv(path) for path in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}


def summary_tables(tables: dict[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame]]:
    """``(title, table)`` per analysis, shaped for a person; the full tables are in analyses/."""
    sections = []
    if "attributions" in tables:
        frame = tables["attributions"].pivot_table(index=["task", "method", "subset"], columns="modality", values="ig_share")
        sections.append(("Integrated-Gradients share per modality (mean over seeds)", frame))
    if "lambda" in tables:
        sections.append(("Final λ of each pre-training run", tables["lambda"].pivot_table(index="subset", columns="modality", values="lambda")))
    if "alignment" in tables:
        sections.append(("Top-5 alignment of the pre-trained embeddings", tables["alignment"][["subset", "n_stays", "top5_alignment"]]))
    if "phenotype_groups" in tables:
        sections.append(("Phenotype AUROC by group", tables["phenotype_groups"]))
    if "subgroups" in tables:
        frame = tables["subgroups"].pivot_table(index=["group", "subgroup"], columns="cell_id", values="auroc", sort=False)
        sections.append(("Test AUROC per subgroup (counts in analyses/subgroups.csv)", frame))
    return sections


def markdown_summary(tables: dict[str, pd.DataFrame]) -> str:
    """A short section per analysis for ``leaderboard.md``."""
    from sweeper.evaluation.leaderboard import frame_markdown

    return "\n\n".join(f"## {title}\n\n{frame_markdown(frame)}" for title, frame in summary_tables(tables))
