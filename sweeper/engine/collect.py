"""After the final phase: gather predictions, aggregate cells, write leaderboard, TensorBoard and the HTML report."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.errors import SweeperError
from sweeper.evaluation.aggregate import SeedPredictions, aggregate_cell, compare_with_best
from sweeper.evaluation.comparisons import add_adjusted_p_values, add_probability_best
from sweeper.engine.analyses import run_analyses, write_analyses
from sweeper.engine.trial import checkpoint_path, trial_run
from sweeper.evaluation.leaderboard import write_atomically, write_leaderboard
from sweeper.evaluation.metrics import ALL_METRICS
from sweeper.evaluation.efficiency import add_eff_scores, cell_costs
from sweeper.evaluation.extra_sets import add_extra_columns, robustness_rows
from sweeper.loop.extra_sets import EXTERNAL_PREFIX, EXTRA_PREDICTIONS, MISSING_PREFIX
from sweeper.loop.outputs import MODEL_FILE, PREDICTIONS_FILE
from sweeper.plan.ranking import rank_metrics
from sweeper.plan.spec import Cell, Spec
from sweeper.report.analyses import markdown_summary
from sweeper.report.html import write_html_report
from sweeper.report.robustness_plot import ROBUSTNESS_FILE


def _filesystem(checkpoint_path: str):
    return pafs.FileSystem.from_uri(checkpoint_path) if "://" in checkpoint_path else (pafs.LocalFileSystem(), checkpoint_path)


def read_predictions(checkpoint_path: str, name: str = PREDICTIONS_FILE) -> "pa.Table | None":  # noqa: F821
    """Read a final trial's predictions from its Train checkpoint (local path or storage URI); None
    when an extra set's (``name``) is not there (the trial could not score that set)."""
    filesystem, path = _filesystem(checkpoint_path)
    if name != PREDICTIONS_FILE and filesystem.get_file_info(f"{path}/{name}").type != pafs.FileType.File:
        return None
    return pq.read_table(f"{path}/{name}", filesystem=filesystem)


def copy_model(checkpoint_path: str, out: Path) -> bool:
    """Copy a final trial's saved weights (``save_model: true``) out of its checkpoint, if any."""
    filesystem, path = _filesystem(checkpoint_path)
    source = f"{path}/{MODEL_FILE}"
    if filesystem.get_file_info(source).type != pafs.FileType.File:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(source, str(out), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    return True


def copy_checkpoint(checkpoint_path: str, out: Path) -> None:
    """Copy a whole checkpoint folder (a stage's artifact) to ``out`` on this machine."""
    filesystem, path = _filesystem(checkpoint_path)
    out.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(out), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())


def _seed_predictions(table, seed: int) -> SeedPredictions:
    labels = np.asarray(table["label"].to_pylist(), dtype=np.float64)
    scores = np.asarray(table["score"].to_pylist(), dtype=np.float64)
    if labels.shape[1] == 1:
        labels, scores = labels[:, 0], scores[:, 0]
    return SeedPredictions(seed=seed, stay_ids=np.asarray(table["stay_id"].to_pylist()), labels=labels, scores=scores)


def gather_final(results, run_dir: Path, extra_sets=(), extras: dict | None = None, costs: dict | None = None) -> dict[str, list[SeedPredictions]]:
    """Per cell, every finished seed's predictions (also copied to ``predictions/``); with
    ``extras``, each seed's predictions on the ``extra_sets`` too, as ``extras[cell][set]`` (copied
    to ``predictions/<cell>/<set>/``); with ``costs``, each seed's final metrics as ``costs[cell]``."""
    per_cell: dict[str, list[SeedPredictions]] = {}
    for result in results:
        run = trial_run(result.config or {})
        metrics = result.metrics or {}
        checkpoint = checkpoint_path(result)
        if "seed" not in run or not metrics.get("done") or checkpoint is None:
            continue
        if costs is not None:
            costs.setdefault(run["cell"], []).append(metrics)
        table = read_predictions(checkpoint)
        out = run_dir / "predictions" / run["cell"] / f"seed-{run['seed']}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out)
        copy_model(checkpoint, run_dir / "models" / run["cell"] / f"seed-{run['seed']}.pt")
        per_cell.setdefault(run["cell"], []).append(_seed_predictions(table, run["seed"]))
        for name in extra_sets:
            extra = read_predictions(checkpoint, EXTRA_PREDICTIONS.format(name))
            if extra is None:
                continue
            out = run_dir / "predictions" / run["cell"] / name / f"seed-{run['seed']}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(extra, out)
            extras.setdefault(run["cell"], {}).setdefault(name, []).append(_seed_predictions(extra, run["seed"]))
    return per_cell


def write_trial_scalars(phase: str, results, run_dir: Path) -> None:
    """TensorBoard curves of each trial of ``results`` (a phase's, or a tune wave's) under
    ``tensorboard/<phase>/<cell>/<trial>``."""
    from torch.utils.tensorboard import SummaryWriter

    root = run_dir / "tensorboard"
    for result in results:
        history = result.metrics_dataframe
        config = trial_run(result.config or {})
        if history is None or "epoch" not in history or not config.get("cell"):
            continue
        name = f"seed-{config['seed']}" if phase == "final" else Path(result.path).name
        with SummaryWriter(str(root / phase / config["cell"] / name)) as writer:
            for _, row in history.iterrows():
                for column in ("train_loss", "val_auroc", "val_auprc", "val_brier", "val_mae", "val_spearman"):
                    if column in row and row[column] == row[column]:
                        writer.add_scalar(column, float(row[column]), int(row["epoch"]))


def write_tensorboard(final_results, rows: list[dict], run_dir: Path) -> None:
    """The final phase's per-trial curves (the tune phase wrote its own, wave by wave), and an
    HParams summary of the final phase per cell."""
    from torch.utils.tensorboard import SummaryWriter

    write_trial_scalars("final", final_results, run_dir)
    root = run_dir / "tensorboard"
    with SummaryWriter(str(root / "hparams")) as writer:
        for row in rows:
            hparams = {k: row[k] for k in ("task", "method", "subset", "n_modalities")}
            hparams.update({k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in json.loads(row["best_config"]).items()})
            metrics = {f"hparam/test_{m}": row.get(f"{m}_mean") for m in ALL_METRICS}
            metrics = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v)}
            writer.add_hparams(hparams, metrics, run_name=row["cell_id"])


def write_outputs(spec: Spec, cells: list[Cell], best: dict, final_results, run_dir: Path, stays_dir: Path | None = None):
    protocols = {MISSING_PREFIX + name: p.model_dump() for name, p in spec.final.test_missing.items()}
    rank_by = rank_metrics(spec)  # per task: the spec's metric, or regression_metric for los
    extra_sets, extras = [EXTERNAL_PREFIX + name for name in spec.data.external] + list(protocols), {}
    costs: dict[str, list[dict]] = {}
    per_cell = gather_final(final_results, run_dir, extra_sets, extras, costs)
    rows = []
    for cell in cells:
        seeds = sorted(per_cell.get(cell.cell_id, []), key=lambda s: s.seed)
        if len(seeds) < spec.final.seeds:
            raise SweeperError(
                f"final phase: cell {cell.cell_id!r} finished {len(seeds)} of its {spec.final.seeds} seeds; "
                f"see the errors under {run_dir / 'final'}, then --resume"
            )
        info = {**cell.row(), "best_config": best[cell.cell_id]}
        row = aggregate_cell(info, seeds, n_resamples=spec.final.bootstrap_resamples)
        row["cell_id"] = cell.cell_id
        if any(m.get("eff_params") is not None for m in costs.get(cell.cell_id, [])):
            row.update(cell_costs(costs[cell.cell_id]))
        for name in extra_sets:
            add_extra_columns(row, name, extras.get(cell.cell_id, {}).get(name), spec.final.seeds, rank_by, spec.final.bootstrap_resamples)
        rows.append(row)
    if spec.final.efficiency_reference:
        add_eff_scores(rows, spec.final.efficiency_reference, sorted(spec.axes))
    compare_with_best(rows, per_cell, metric=rank_by, n_resamples=spec.final.bootstrap_resamples)
    add_adjusted_p_values(rows, spec.final.correction)
    add_probability_best(rows, per_cell, metric=rank_by, n_resamples=spec.final.bootstrap_resamples)
    board = write_leaderboard(rows, run_dir, rank_by=rank_by)
    if protocols:
        (run_dir / "analyses").mkdir(exist_ok=True)
        robustness = robustness_rows(rows, protocols, rank_by, sorted(spec.axes))
        write_atomically(run_dir / "analyses" / ROBUSTNESS_FILE, pd.DataFrame(robustness).to_csv(index=False))
    if stays_dir is not None:
        thresholds = {name: method.fixed.get("threshold", 0.5) for name, method in spec.methods.items()}
        analyses = run_analyses(cells, per_cell, final_results, run_dir, stays_dir, rank_by, spec.final.bootstrap_resamples, thresholds)
        write_analyses(analyses, run_dir)
        summary = markdown_summary(run_dir)
        if summary:
            markdown = run_dir / "leaderboard.md"
            write_atomically(markdown, markdown.read_text() + "\n" + summary + "\n")
    write_tensorboard(final_results, rows, run_dir)
    write_html_report(run_dir, rank_by=rank_by)
    return board
