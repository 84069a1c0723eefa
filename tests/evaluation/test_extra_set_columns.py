"""Extra test sets in the leaderboard (sweeper.evaluation.extra_sets): a column group per set with
seed means, bootstrap CIs and the drop from internal test; the robustness plot of report.html."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from sweeper.evaluation.aggregate import SeedPredictions, aggregate_cell
from sweeper.evaluation.extra_sets import add_extra_columns, robustness_rows
from sweeper.evaluation.leaderboard import write_leaderboard
from sweeper.evaluation.metrics import compute_metrics
from sweeper.report.html import write_html_report
from sweeper.report.robustness_plot import ROBUSTNESS_FILE, robustness_figures


def _seeds(signal, n=200, seed=0, prefix="t"):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    ids = np.array([f"{prefix}{i:04d}" for i in range(n)])
    return [SeedPredictions(s, ids, labels, 1 / (1 + np.exp(-(signal * labels + rng.normal(size=n))))) for s in range(3)]


PROTOCOLS = {"miss_d50": {"drop": "discharge", "rate": 0.5}, "miss_d100": {"drop": "discharge", "rate": 1.0},
             "miss_each50": {"drop": "each", "rate": 0.5}}


def _rows():
    rows = []
    for method, strength in (("picme.supervised", 2.0), ("medfuse", 1.5)):
        row = {**aggregate_cell({"task": "ihm", "method": method, "subset": "discharge+demographics"}, _seeds(strength), n_resamples=100),
               "cell_id": f"ihm__{method}__discharge+demographics"}
        add_extra_columns(row, "ext_b", _seeds(strength / 2, n=150, seed=1, prefix="b"), 3, "auroc", n_resamples=100)
        for k, name in enumerate(PROTOCOLS):
            add_extra_columns(row, name, _seeds(strength / (2 + k), seed=0), 3, "auroc", n_resamples=100)
        rows.append(row)
    return rows


def test_a_set_gets_seed_means_bootstrap_cis_and_its_drop_from_internal_test():
    row = aggregate_cell({"task": "ihm", "method": "m", "subset": "discharge"}, _seeds(2.0), n_resamples=100)
    external = _seeds(0.8, n=150, seed=1, prefix="b")
    add_extra_columns(row, "ext_b", external, 3, "auroc", n_resamples=100)
    means = [compute_metrics(s.labels, s.scores)["auroc"] for s in external]
    assert row["ext_b__auroc_mean"] == pytest.approx(np.mean(means))
    assert row["ext_b__auroc_boot_low"] < row["ext_b__auroc_mean"] < row["ext_b__auroc_boot_high"]
    assert row["ext_b__n_stays"] == 150 and row["ext_b__drop"] == pytest.approx(row["auroc_mean"] - np.mean(means)) and row["ext_b__drop"] > 0.1
    add_extra_columns(row, "ext_c", external[:2], 3, "auroc")  # a seed did not score it: no result, not a partial one
    assert row["ext_c__n_stays"] == 0 and np.isnan(row["ext_c__auroc_mean"])


def test_the_leaderboard_shows_a_column_per_set_and_no_set_column_as_an_axis(tmp_path):
    board = write_leaderboard(_rows(), tmp_path)
    markdown = (tmp_path / "leaderboard.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| rank"))
    assert [c.strip() for c in header.split("|")[-6:-1]] == ["ext_b", "miss_d50", "miss_d100", "miss_each50", "n_seeds"]
    assert "__" not in header and "ext_*: an external cohort" in markdown
    top = board.iloc[0]
    cell = f"{top['ext_b__auroc_mean']:.3f} [{top['ext_b__auroc_boot_low']:.2f}, {top['ext_b__auroc_boot_high']:.2f}] ({-top['ext_b__drop']:+.3f})"
    assert cell in markdown


def test_the_report_plots_the_metric_against_the_drop_rate_per_method(tmp_path):
    rows = _rows()
    run = tmp_path / "run"
    write_leaderboard(rows, run)
    (run / "run.json").write_text(json.dumps({"spec": "x", "metric": "auroc"}))
    (run / "analyses").mkdir()
    pd.DataFrame(robustness_rows(rows, PROTOCOLS, "auroc", [])).to_csv(run / "analyses" / ROBUSTNESS_FILE, index=False)
    figures = robustness_figures(run, "ihm")
    assert len(figures) == 2  # one per kind of drop: discharge, each
    discharge = figures[0].axes[0]
    assert "discharge" in discharge.get_xlabel() and len(discharge.lines) == 2  # a line per method
    line = next(l for l in discharge.lines if l.get_label().startswith("picme.supervised"))
    row = rows[0]
    np.testing.assert_allclose(line.get_xdata(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(line.get_ydata(), [row["auroc_mean"], row["miss_d50__auroc_mean"], row["miss_d100__auroc_mean"]])
    assert np.all(np.diff(line.get_ydata()) < 0)  # these made-up predictions lose signal with the rate
    page = write_html_report(run, rank_by="auroc").read_text()
    assert len(re.findall(r'<img alt="plot" src="data:image/png;base64,', page)) == 1 + 2  # ranked plot + two robustness plots
