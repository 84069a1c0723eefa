"""``leaderboard.csv`` (every column, for analysis) and ``leaderboard.md`` (for people) from cell rows.

Rows come from ``sweeper.evaluation.aggregate.aggregate_cell``. Within a task, cells are ranked by
mean test AUROC over seeds (or the spec's ``metric``). Both files are written to a temporary file and moved into place, so a
reader never sees a half-written leaderboard.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from sweeper.evaluation.metrics import METRICS

# Columns every row has that are not an extra sweep axis (e.g. a missingness rate).
_FIXED_COLUMNS = {"task", "method", "subset", "n_modalities", "n_seeds", "n_test_stays", "best_config", "cell_id"}
_METRIC_SUFFIXES = ("_mean", "_std", "_ci_low", "_ci_high", "_boot_low", "_boot_high")


def write_leaderboard(rows: list[dict], out_dir: Path, rank_by: str = "auroc") -> pd.DataFrame:
    """Sort rows (task, then ``rank_by`` mean descending), write both files to ``out_dir``, return the frame."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(
            ["task", f"{rank_by}_mean"], ascending=[True, False], na_position="last", kind="stable"
        ).reset_index(drop=True)
    write_atomically(out_dir / "leaderboard.csv", frame.to_csv(index=False))
    write_atomically(out_dir / "leaderboard.md", leaderboard_markdown(frame, rank_by))
    return frame


def leaderboard_markdown(frame: pd.DataFrame, rank_by: str = "auroc") -> str:
    """One table per task: rank, method, subset, extra axes, each metric as mean ± std [bootstrap CI]."""
    lines = ["# Leaderboard", ""]
    if frame.empty:
        return "\n".join(lines + ["No cells were evaluated.", ""])
    for paragraph in leaderboard_legend(frame, rank_by):
        lines += [paragraph, ""]
    for task, table in display_tables(frame, rank_by).items():
        lines += [f"## {task}", "", _table_row(table.columns), _table_row(["---"] * len(table.columns))]
        lines += [_table_row(row) for row in table.itertuples(index=False)]
        lines.append("")
    return "\n".join(lines)


def leaderboard_legend(frame: pd.DataFrame, rank_by: str = "auroc") -> list[str]:
    """The paragraphs that say how to read ``display_tables``."""
    legend = [
        "Each metric: mean ± std over seeds [95% bootstrap CI over test stays]. "
        f"Ranked by mean {rank_by.upper()} within each task."
    ]
    if "vs_best" in frame.columns:
        legend.append(
            f"Δ vs #1: this cell's mean {rank_by.upper()} minus the task's top cell's, on the test stays "
            "both were scored on [95% paired bootstrap CI], and the two-sided p-value of that difference."
        )
    return legend


def display_tables(frame: pd.DataFrame, rank_by: str = "auroc") -> dict[str, pd.DataFrame]:
    """Per task, the leaderboard as text cells a person reads (rows already ranked by ``write_leaderboard``)."""
    compared = "vs_best" in frame.columns
    extra_axes = [
        c for c in frame.columns
        if c not in _FIXED_COLUMNS and not c.startswith("vs_best") and not _is_metric_column(c)  # compare_with_best's
    ]
    metrics = [m for m in METRICS if f"{m}_mean" in frame.columns]
    header = ["rank", "method", "subset", "n_modalities", *extra_axes, *metrics,
              *(["Δ vs #1", "p"] if compared else []), "n_seeds"]
    tables = {}
    for task, rows in frame.groupby("task", sort=True):
        body = []
        for rank, (_, row) in enumerate(rows.iterrows(), start=1):
            cells = [rank, row["method"], row["subset"], row["n_modalities"], *(row[a] for a in extra_axes)]
            cells += [_metric_cell(row, m) for m in metrics]
            if compared:
                cells += _comparison_cells(row, rank)
            cells.append(row.get("n_seeds", ""))
            body.append([str(cell) for cell in cells])
        tables[str(task)] = pd.DataFrame(body, columns=header)
    return tables


def _metric_cell(row: pd.Series, metric: str) -> str:
    """``0.812 ± 0.010 [0.79, 0.83]``; parts that are undefined (one seed, no bootstrap) are left out."""
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    low, high = row.get(f"{metric}_boot_low"), row.get(f"{metric}_boot_high")
    if _missing(mean):
        return "–"
    text = f"{mean:.3f}"
    if not _missing(std):
        text += f" ± {std:.3f}"
    if not (_missing(low) or _missing(high)):
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def _comparison_cells(row: pd.Series, rank: int) -> list[str]:
    """``["-0.021 [-0.04, -0.00]", "0.012"]``; the top cell reads ``["#1", ""]``."""
    if rank == 1:
        return ["#1", ""]
    difference, low, high, p = (row.get(c) for c in ("vs_best", "vs_best_ci_low", "vs_best_ci_high", "vs_best_p"))
    if _missing(difference):
        return ["–", ""]
    text = f"{difference:+.3f}"
    if not (_missing(low) or _missing(high)):
        text += f" [{low:+.2f}, {high:+.2f}]"
    return [text, "" if _missing(p) else f"{p:.3f}"]


def _table_row(cells) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _is_metric_column(column: str) -> bool:
    return any(column == f"{m}{suffix}" for m in METRICS for suffix in _METRIC_SUFFIXES)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename over it (atomic on POSIX)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def frame_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A small data frame as a markdown table (its index too, when it is not a plain range)."""
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    rounded = frame.round(digits)
    lines = [_table_row([str(c) for c in rounded.columns]), _table_row(["---"] * len(rounded.columns))]
    lines += [_table_row(["" if v != v else v for v in row]) for row in rounded.itertuples(index=False)]
    return "\n".join(lines)
