"""The report's plots of what each modality adds, from the run's ``analyses/modality_contributions.csv``
and ``analyses/metric_by_size.csv`` (written by the engine from ``sweeper.evaluation.contributions``).

Per task: each modality's contribution per method with its 95% paired bootstrap CI (a dot right of
the zero line adds to the metric), and the metric against the number of modalities per method.
Drawn by matplotlib without a display; the caller embeds the figures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.evaluation.metrics import lower_is_better

CONTRIBUTIONS_FILE = "modality_contributions.csv"
BY_SIZE_FILE = "metric_by_size.csv"


def modality_figures(run_dir: Path, task: str) -> list:
    """The task's contribution plot and metric-by-size plot, those the run has data for."""
    folder = Path(run_dir) / "analyses"
    figures = []
    contributions = _read(folder / CONTRIBUTIONS_FILE, task)
    if contributions is not None and contributions["contribution"].notna().any():
        figures.append(_contribution_plot(contributions.dropna(subset=["contribution"]), task))
    by_size = _read(folder / BY_SIZE_FILE, task)
    if by_size is not None and by_size["n_modalities"].nunique() > 1:
        figures.append(_size_plot(by_size, task))
    return figures


def _read(path: Path, task: str) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    rows = frame[frame["task"].astype(str) == task] if "task" in frame.columns else frame.iloc[:0]
    return rows if len(rows) else None


def _series(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One series per method (and value of any extra sweep axis), labelled for the legend."""
    known = {"task", "method", "modality", "metric", "contribution", "ci_low", "ci_high", "p_value", "n_pairs",
             "n_sizes", "rank", "n_modalities", "mean", "n_subsets"}
    axes = [c for c in frame.columns if c not in known]
    keys = ["method", *axes]
    out = []
    for values, rows in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        label = str(values[0]) + "".join(f", {axis}={value}" for axis, value in zip(axes, values[1:]))
        out.append((label, rows))
    return out


def _contribution_plot(frame: pd.DataFrame, task: str):
    from matplotlib.figure import Figure

    metric = str(frame["metric"].iloc[0])
    order = frame.groupby("modality")["contribution"].mean().sort_values(ascending=not lower_is_better(metric)).index
    position = {modality: i for i, modality in enumerate(order)}  # best at the top
    series = _series(frame)
    figure = Figure(figsize=(9, 0.45 * len(order) * max(1, len(series)) ** 0.5 + 1.6))
    axes = figure.subplots()
    step = 0.7 / max(len(series), 1)
    for i, (label, rows) in enumerate(series):
        y = np.array([position[m] for m in rows["modality"]]) + (i - (len(series) - 1) / 2) * step
        mean = rows["contribution"].to_numpy(float)
        errors = np.vstack([np.nan_to_num(mean - rows["ci_low"].to_numpy(float)),
                            np.nan_to_num(rows["ci_high"].to_numpy(float) - mean)])
        axes.errorbar(mean, y, xerr=errors, fmt="o", color=f"C{i % 10}", label=label, capsize=2, markersize=4)
    axes.axvline(0, color="#888", linewidth=1)
    axes.set_yticks(range(len(order)), list(order), fontsize=8)
    axes.set_xlabel(f"change in test {metric.upper()} when the modality joins a subset that lacks it "
                    "(Shapley-style mean, 95% paired bootstrap CI)")
    axes.set_title(f"{task}: what each modality adds")
    axes.legend(fontsize=7, loc="best")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def _size_plot(frame: pd.DataFrame, task: str):
    from matplotlib.figure import Figure

    metric = str(frame["metric"].iloc[0])
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for i, (label, rows) in enumerate(_series(frame)):
        rows = rows.sort_values("n_modalities")
        size = rows["n_modalities"].to_numpy(float) + (i - 1) * 0.04
        mean = rows["mean"].to_numpy(float)
        errors = np.vstack([np.nan_to_num(mean - rows["ci_low"].to_numpy(float)),
                            np.nan_to_num(rows["ci_high"].to_numpy(float) - mean)])
        axes.errorbar(size, mean, yerr=errors, fmt="o-", color=f"C{i % 10}", label=label, capsize=2, markersize=4)
    axes.set_xticks(sorted(frame["n_modalities"].unique()))
    axes.set_xlabel("number of modalities in the subset")
    axes.set_ylabel(f"test {metric.upper()} (mean over subsets)")
    axes.set_title(f"{task}: {metric.upper()} against the number of modalities (95% bootstrap CI)")
    axes.legend(fontsize=7, loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
