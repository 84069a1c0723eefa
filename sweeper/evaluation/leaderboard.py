"""``leaderboard.csv`` (every column, for analysis) and ``leaderboard.md`` (for people) from cell rows.

Rows come from ``sweeper.evaluation.aggregate.aggregate_cell``. Within a task, cells are ranked by
the mean test value over seeds of the task's ranking metric (``rank_by``: the spec's ``metric`` for
a classification task, its ``regression_metric`` for ``los``), best first: highest, or lowest for a
lower-is-better metric (Brier, ACE, MSE, MAE). A task's table shows the metrics its rows have. Both files are written to a temporary file and moved into place, so a
reader never sees a half-written leaderboard.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from sweeper.evaluation.extra_sets import SEPARATOR, extra_set_names, is_extra_column
from sweeper.evaluation.metrics import ALL_METRICS, lower_is_better, metric_for

# Columns every row has that are not an extra sweep axis (e.g. a missingness rate).
_FIXED_COLUMNS = {"task", "method", "subset", "n_modalities", "n_seeds", "n_test_stays", "best_config", "cell_id", "p_best"}
_METRIC_SUFFIXES = ("_mean", "_std", "_ci_low", "_ci_high", "_boot_low", "_boot_high", "_delong_low", "_delong_high")
_COST_TITLES = {"eff_params": "params", "eff_flops_per_stay": "MFLOPs/stay", "eff_peak_mem_mb": "peak MB", "eff_score": "EffScore"}
_COST_FORMATS = {"eff_params": lambda v: f"{v:,.0f}", "eff_flops_per_stay": lambda v: f"{v / 1e6:.3g}",
                 "eff_peak_mem_mb": lambda v: f"{v:.0f}", "eff_score": lambda v: f"{v:.3f}"}
_CORRECTION_NAMES = {"holm": "Holm", "bh": "BH"}


def write_leaderboard(rows: list[dict], out_dir: Path, rank_by="auroc") -> pd.DataFrame:
    """Sort rows (task, then the task's ranking metric, best first), write both files to ``out_dir``,
    return the frame. ``rank_by``: one metric name or ``{task: metric}`` (``metrics.metric_for``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.assign(_rank_key=[_rank_key(row, rank_by) for _, row in frame.iterrows()]).sort_values(
            ["task", "_rank_key"], ascending=[True, True], na_position="last", kind="stable"
        ).drop(columns="_rank_key").reset_index(drop=True)
    write_atomically(out_dir / "leaderboard.csv", frame.to_csv(index=False))
    write_atomically(out_dir / "leaderboard.md", leaderboard_markdown(frame, rank_by))
    return frame


def _rank_key(row: pd.Series, rank_by) -> float:
    """Smaller is better: the task's ranking metric, negated unless lower is better."""
    metric = metric_for(rank_by, row["task"])
    value = row.get(f"{metric}_mean", math.nan)
    return value if lower_is_better(metric) else -value


def ranking_phrase(frame: pd.DataFrame, rank_by) -> str:
    """``AUROC``, or per task when tasks differ: ``ihm: AUROC; los: SPEARMAN``; lower-is-better marked."""
    names = {str(task): metric_for(rank_by, str(task)) for task in sorted(frame["task"].unique())} if "task" in frame else {}
    shown = {task: metric.upper() + (" (lower is better)" if lower_is_better(metric) else "") for task, metric in names.items()}
    if len(set(shown.values())) <= 1:
        return next(iter(shown.values()), metric_for(rank_by, "").upper() if isinstance(rank_by, str) else "AUROC")
    return "; ".join(f"{task}: {text}" for task, text in shown.items())


def leaderboard_markdown(frame: pd.DataFrame, rank_by="auroc") -> str:
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


def leaderboard_legend(frame: pd.DataFrame, rank_by="auroc") -> list[str]:
    """The paragraphs that say how to read ``display_tables``."""
    shown_rank = ranking_phrase(frame, rank_by)
    legend = [
        "Each metric: mean ± std over seeds [95% bootstrap CI over test stays]. "
        f"Ranked by mean {shown_rank} within each task."
    ]
    if any(f"{m}_mean" in frame.columns for m in ("ace", "bss")):
        legend.append("ace: adaptive calibration error (15 equal-mass bins of the test stays sorted by score; mean |mean label − "
                      "mean score|; lower is better); bss: Brier skill score, 1 − Brier / Brier of predicting the prevalence.")
    if any(f"{m}_mean" in frame.columns for m in ("mse", "mae")):
        legend.append("Length of stay (los): the model predicts log1p(hours); mse (hours²), mae (hours) and pearson compare "
                      "predicted and actual hours, spearman their ranks.")
    if "vs_best" in frame.columns:
        legend.append(
            f"Δ vs #1: this cell's mean {shown_rank} minus the task's top cell's, on the test stays "
            "both were scored on [95% paired bootstrap CI], and the two-sided p-value of that difference (the difference "
            "over its bootstrap standard deviation, against a standard normal)."
        )
    correction = _correction(frame)
    if correction:
        legend.append(
            f"p {correction}: that p-value adjusted for the task's number of comparisons with its top cell ("
            + ("Holm: family-wise error rate" if correction == "Holm" else "Benjamini–Hochberg: false discovery rate")
            + "); read this one when asking whether any cell is worse than #1."
        )
    if extra_set_names(frame.columns):
        legend.append(
            f"ext_*: an external cohort; miss_*: the test split with modalities hidden by a seeded protocol. Each: the "
            f"seed-mean {shown_rank} on that set [95% bootstrap CI over its stays] (its change from the internal test mean: negative where the set scores lower)."
        )
    if "eff_params" in frame.columns:
        legend.append(
            "Costs (torch methods; mean over seeds): params deployed (teachers excluded), MFLOPs per stay of one evaluation "
            "forward pass (torch.utils.flop_counter), peak MB of the test pass (CUDA: max allocated; CPU: the process's peak "
            "resident memory, sampled every ms; eff_memory_measure says which); EffScore: (Perf / Perf of the reference row) / "
            "geomean of the three cost ratios to it, Perf the mean of AUROC, AUPRC, macro-F1 and accuracy."
        )
    if "p_best" in frame.columns:
        legend.append(
            f"P(best): the share of joint bootstrap resamples of the task's test stays in which the cell has the "
            f"task's best mean {shown_rank}; how settled the ranking is."
        )
    return legend


def display_tables(frame: pd.DataFrame, rank_by="auroc") -> dict[str, pd.DataFrame]:
    """Per task, the leaderboard as text cells a person reads (rows already ranked by ``write_leaderboard``)."""
    compared = "vs_best" in frame.columns
    extra_axes = [
        c for c in frame.columns
        if c not in _FIXED_COLUMNS and not c.startswith("vs_best") and not _is_metric_column(c)  # compare_with_best's
        and not is_extra_column(c) and not c.startswith("eff_")
    ]
    costs = [(c, title) for c, title in _COST_TITLES.items() if c in frame.columns]
    extra_sets = extra_set_names(frame.columns)
    correction = _correction(frame)
    probability_best = "p_best" in frame.columns
    tables = {}
    for task, rows in frame.groupby("task", sort=True):
        # The metrics of this task's kind: a classification task has no MSE, los no AUROC.
        metrics = [m for m in ALL_METRICS if f"{m}_mean" in rows.columns and rows[f"{m}_mean"].notna().any()]
        header = ["rank", "method", "subset", "n_modalities", *extra_axes, *metrics,
                  *(["Δ vs #1", "p"] if compared else []), *([f"p {correction}"] if correction else []),
                  *(["P(best)"] if probability_best else []), *extra_sets, *(title for _, title in costs), "n_seeds"]
        task_metric = metric_for(rank_by, str(task))
        body = []
        for rank, (_, row) in enumerate(rows.iterrows(), start=1):
            cells = [rank, row["method"], row["subset"], row["n_modalities"], *(row[a] for a in extra_axes)]
            cells += [_metric_cell(row, m) for m in metrics]
            if compared:
                cells += _comparison_cells(row, rank)
            if correction:
                cells.append("" if _missing(row.get("vs_best_p_adj")) else f"{row['vs_best_p_adj']:.3f}")
            if probability_best:
                cells.append("" if _missing(row.get("p_best")) else f"{row['p_best']:.2f}")
            cells += [_extra_cell(row, name, task_metric) for name in extra_sets]
            cells += ["–" if _missing(row.get(c)) else _COST_FORMATS[c](row[c]) for c, _ in costs]
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


def _extra_cell(row: pd.Series, name: str, metric: str) -> str:
    """``0.774 [0.74, 0.81] (−0.038)``: an extra set's seed mean, bootstrap CI and drop from internal test."""
    prefix = f"{name}{SEPARATOR}{metric}"
    mean, low, high = (row.get(f"{prefix}{part}") for part in ("_mean", "_boot_low", "_boot_high"))
    drop = row.get(f"{name}{SEPARATOR}drop")
    if _missing(mean):
        return "–"
    text = f"{mean:.3f}" + ("" if _missing(low) or _missing(high) else f" [{low:.2f}, {high:.2f}]")
    return text + ("" if _missing(drop) else f" ({-drop:+.3f})")


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


def _correction(frame: pd.DataFrame) -> str:
    """The display name of the p-value correction the leaderboard holds ("" when none)."""
    if "vs_best_p_adj" not in frame.columns or "vs_best_p_adjust" not in frame.columns:
        return ""
    names = frame["vs_best_p_adjust"].dropna().astype(str).unique()
    return _CORRECTION_NAMES.get(names[0], names[0]) if len(names) else ""


def _table_row(cells) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _is_metric_column(column: str) -> bool:
    return any(column == f"{m}{suffix}" for m in ALL_METRICS for suffix in _METRIC_SUFFIXES)


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
