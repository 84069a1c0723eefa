"""``report.html``: one self-contained page a person opens to read a finished run.

Built only from what the run folder already holds (``run.json``, ``leaderboard.csv``,
``analyses/*.csv``), so ``sweeper report RUN`` rebuilds it at any time, on any machine, without
Ray. Per task it shows each cell's mean test metric with its 95% bootstrap CI (the top cells),
a modality subset × method map of the same metric, the leaderboard table with each cell's
paired difference from the top cell (raw and multiplicity-adjusted p) and its chance of being best,
and what each modality adds with the metric against the number of modalities
(``sweeper.report.modality_plots``); then the run's analyses. Plots are PNGs embedded in the page,
drawn by matplotlib without a display. No stay id or note text is read.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.errors import SweeperError
from sweeper.evaluation.leaderboard import write_atomically, display_tables, leaderboard_legend, ranking_phrase
from sweeper.evaluation.metrics import lower_is_better, metric_for
from sweeper.report.analyses import summary_tables
from sweeper.report.modality_plots import modality_figures
from sweeper.report.robustness_plot import robustness_figures

REPORT_FILE = "report.html"
MAX_PLOTTED_CELLS = 30
"""The ranked CI plot shows at most this many cells per task (the table has them all)."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td:nth-child(2), td:nth-child(3) { text-align: left; }
img { max-width: 100%; }
.legend { color: #555; font-size: 0.9em; }
"""


def write_html_report(run_dir: Path, rank_by=None) -> Path:
    """Write ``<run>/report.html`` from the run's leaderboard and analyses; return its path.

    ``rank_by`` is what the leaderboard ranks each task by: ``{task: metric}`` (``sweeper.plan.ranking.rank_metrics``)
    or the spec's ``metric``; when not given it is read from the run's ``run.json`` or spec.
    """
    run_dir = Path(run_dir)
    board_path = run_dir / "leaderboard.csv"
    if not board_path.is_file():
        raise SweeperError(f"{board_path}: no leaderboard; a report needs a run whose final phase finished")
    board = _read_board(board_path)
    info = _read_run_info(run_dir / "run.json")
    rank_by = rank_by or _rank_metric(run_dir, info)
    parts = [_header(run_dir, info, board, rank_by)]
    if board.empty:
        parts.append("<p>No cells were evaluated.</p>")
    else:
        parts += [f'<p class="legend">{html.escape(p)}</p>' for p in leaderboard_legend(board, rank_by)]
        tables = display_tables(board, rank_by)
        for task, rows in board.groupby("task", sort=True):
            parts.append(f"<h2>{html.escape(str(task))}</h2>")
            task_metric = metric_for(rank_by, str(task))
            parts.append(_image(_ranked_plot(rows, task_metric, str(task))))
            grid = _subset_method_grid(rows, task_metric)
            if grid is not None:
                parts.append(_image(_grid_plot(grid, task_metric, str(task))))
            parts.append(tables[str(task)].to_html(index=False, border=0))
            parts += [_image(figure) for figure in modality_figures(run_dir, str(task))]
            parts += [_image(figure) for figure in robustness_figures(run_dir, str(task))]
    for title, frame in summary_tables(run_dir):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(frame.round(3).to_html(border=0, na_rep=""))
    page = (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    out = run_dir / REPORT_FILE
    write_atomically(out, page)
    return out


def _read_board(path: Path) -> pd.DataFrame:
    """``leaderboard.csv``, or one line saying why it cannot be read and what to do."""
    run = path.resolve().parent
    redo = (f"rewrite it with `sweeper run {run.parent.name} --resume --run-name {run.name}` "
            "(finished trials are not re-run) or restore it from a copy")
    raw = path.read_bytes()
    if not raw:
        raise SweeperError(f"{path}: empty file (0 bytes); {redo}")
    if not raw.strip():  # what the engine writes when it evaluated no cell: the page says so
        return pd.DataFrame()
    try:
        board = pd.read_csv(io.BytesIO(raw))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SweeperError(f"{path}: not a readable CSV ({str(err).strip().splitlines()[0][:120]}); {redo}") from None
    missing = [c for c in ("task", "method", "subset") if c not in board.columns]
    if missing:
        raise SweeperError(f"{path}: no {', '.join(missing)} column, not a sweeper leaderboard; {redo}")
    return board


def _read_run_info(path: Path) -> dict:
    """``run.json`` (absent in very old runs: then nothing), or one line saying why it cannot be read."""
    if not path.is_file():
        return {}
    fix = "restore it from a copy, or fix it: sweeper wrote it as a JSON object of the run's spec, profile and start"
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SweeperError(f"{path}: not valid JSON ({err}); {fix}") from None
    if not isinstance(info, dict):
        raise SweeperError(f"{path}: expected a JSON object, got {type(info).__name__}; {fix}")
    return info


def _rank_metric(run_dir: Path, info: dict):
    """What the leaderboard is ranked by: ``run.json``'s ``rank_metrics`` (per task) or ``metric``,
    or, for a run started before it was recorded there, the run's own ``spec.yaml`` and profile."""
    if isinstance(info.get("rank_metrics"), dict):
        return {str(k): str(v) for k, v in info["rank_metrics"].items()}
    if info.get("metric"):
        return str(info["metric"])
    import yaml

    try:
        raw = yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    profile = (raw.get("profiles") or {}).get(info.get("profile")) or {} if isinstance(raw, dict) else {}
    return str(profile.get("metric") or (raw.get("metric") if isinstance(raw, dict) else None) or "auroc")


def _header(run_dir: Path, info: dict, board: pd.DataFrame, rank_by) -> str:
    facts = {
        "spec": info.get("spec", "?"),
        "profile": info.get("profile") or "default",
        "started": info.get("started", "?"),
        "cells": len(board),
        "tasks": ", ".join(sorted(board["task"].astype(str).unique())) if len(board) else "",
        "ranked by": f"test {ranking_phrase(board, rank_by)} (mean over seeds)",
    }
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in facts.items())
    return f"<h1>Run {html.escape(run_dir.name)}</h1><ul>{items}</ul>"


def _ranked_plot(rows: pd.DataFrame, metric: str, task: str):
    """Top cells' mean test metric with the 95% bootstrap CI over test stays, best at the top."""
    from matplotlib.figure import Figure

    top = rows.sort_values(f"{metric}_mean", ascending=lower_is_better(metric), na_position="last").head(MAX_PLOTTED_CELLS)
    top = top.iloc[::-1]  # matplotlib draws the first row at the bottom
    mean = top[f"{metric}_mean"].to_numpy(float)
    low = top.get(f"{metric}_boot_low", pd.Series(np.nan, index=top.index)).to_numpy(float)
    high = top.get(f"{metric}_boot_high", pd.Series(np.nan, index=top.index)).to_numpy(float)
    errors = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
    methods = sorted(top["method"].astype(str).unique())
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    figure = Figure(figsize=(9, 0.28 * len(top) + 1.4))
    axes = figure.subplots()
    y = np.arange(len(top))
    for method in methods:
        mask = (top["method"].astype(str) == method).to_numpy()
        axes.errorbar(mean[mask], y[mask], xerr=errors[:, mask], fmt="o", color=colours[method], label=method, capsize=2)
    axes.set_yticks(y, [f"{s}" for s in top["subset"].astype(str)], fontsize=7)
    axes.set_xlabel(f"test {metric.upper()}: mean over seeds, 95% bootstrap CI over test stays")
    shown = f"top {len(top)} of {len(rows)} cells" if len(rows) > len(top) else f"{len(rows)} cells"
    axes.set_title(f"{task}: {shown}")
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def _subset_method_grid(rows: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Mean metric per (subset, method), or None when a pair has several cells (an extra axis) or
    fewer than two subsets were run by two methods or more (the ranked plot already says it all)."""
    if rows.duplicated(["subset", "method"]).any() or (rows.groupby("subset")["method"].nunique() >= 2).sum() < 2:
        return None
    grid = rows.pivot(index="subset", columns="method", values=f"{metric}_mean")
    return grid.loc[grid.mean(axis=1).sort_values(ascending=False).index]


def _grid_plot(grid: pd.DataFrame, metric: str, task: str):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.2 + 1.3 * grid.shape[1], 0.28 * grid.shape[0] + 1.6))
    axes = figure.subplots()
    image = axes.imshow(grid.to_numpy(float), aspect="auto", cmap="viridis")
    axes.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
    for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
        if value == value:
            axes.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=6, color="white" if value < np.nanmean(grid.to_numpy(float)) else "black")
    figure.colorbar(image, ax=axes, label=f"test {metric.upper()}")
    axes.set_title(f"{task}: mean test {metric.upper()} over seeds, modality subset × method")
    figure.tight_layout()
    return figure


def _image(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
