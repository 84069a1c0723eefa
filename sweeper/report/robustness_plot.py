"""The report's robustness plot, from the run's ``analyses/robustness.csv`` (written by the engine
from ``sweeper.evaluation.extra_sets.robustness_rows``): per task and kind of drop (one modality,
or each modality independently), the test metric against the test-time drop rate, one line per
method (and modality subset and extra axis values), with its 95% bootstrap band. Rate 0 is the
internal test split itself.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

ROBUSTNESS_FILE = "robustness.csv"
_KEYS = {"task", "method", "subset", "cell_id", "drop", "rate", "metric", "mean", "boot_low", "boot_high"}


def robustness_figures(run_dir: Path, task: str) -> list:
    """One figure per kind of drop of ``task`` that has a protocol with a rate above 0."""
    path = Path(run_dir) / "analyses" / ROBUSTNESS_FILE
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    frame = frame[frame["task"].astype(str) == task]
    return [_plot(rows, task, str(drop)) for drop, rows in frame.groupby("drop", sort=True) if (rows["rate"] > 0).any()]


def _plot(frame: pd.DataFrame, task: str, drop: str):
    from matplotlib.figure import Figure

    axes_columns = [c for c in frame.columns if c not in _KEYS]
    figure = Figure(figsize=(6.4, 4.0))
    ax = figure.subplots()
    for cell, rows in frame.groupby("cell_id", sort=True):
        rows = rows.sort_values("rate")
        first = rows.iloc[0]
        label = f"{first['method']} · {first['subset']}" + "".join(f", {a}={first[a]}" for a in axes_columns)
        line = ax.plot(rows["rate"], rows["mean"], marker="o", label=label)[0]
        ax.fill_between(rows["rate"], rows["boot_low"], rows["boot_high"], color=line.get_color(), alpha=0.15, linewidth=0)
    metric = str(frame["metric"].iloc[0]).upper()
    ax.set_xlabel(f"test-time drop rate ({'each modality independently' if drop == 'each' else drop})")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{task}: {metric} as modalities go missing at test time")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure
