"""report.html: built from a run folder's files alone, one page with plots, tables and analyses."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.evaluation.aggregate import SeedPredictions, aggregate_cell, compare_with_best
from sweeper.report.html import write_html_report
from sweeper.engine.analyses import write_analyses
from sweeper.evaluation.leaderboard import write_leaderboard
from trainables.registry import Analysis

REPO = Path(__file__).resolve().parents[2]
SUBSETS = ["discharge", "discharge+radiology", "timeseries+demographics"]
METHODS = ["picme.supervised", "medfuse"]


def _seeds(signal, n_stays=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_stays) < 0.3).astype(float)
    ids = np.array([f"p{i:04d}" for i in range(n_stays)])
    return [SeedPredictions(s, ids, labels, 1 / (1 + np.exp(-(signal * labels + rng.normal(size=n_stays))))) for s in range(2)]


@pytest.fixture
def run_dir(tmp_path):
    """A finished run's folder as the engine leaves it: spec, run.json, leaderboard, one analysis."""
    run = tmp_path / "smoke" / "r1"
    run.mkdir(parents=True)
    shutil.copyfile(REPO / "sweeper" / "specs" / "smoke.yaml", run / "spec.yaml")
    (run / "run.json").write_text(json.dumps({"spec": "smoke", "profile": None, "started": "2026-11-21T10:00:00"}))
    rows, seeds = [], {}
    for task in ("ihm", "phenotyping"):
        for i, subset in enumerate(SUBSETS):
            for j, method in enumerate(METHODS):
                cell_id = f"{task}__{method}__{subset}"
                seeds[cell_id] = _seeds(0.5 + i + j, seed=i)
                row = aggregate_cell({"task": task, "method": method, "subset": subset}, seeds[cell_id], n_resamples=50)
                rows.append({**row, "cell_id": cell_id})
    compare_with_best(rows, seeds, n_resamples=50)
    write_leaderboard(rows, run)
    lam = pd.DataFrame({"subset": ["discharge+radiology"] * 2, "modality": ["discharge", "radiology"], "lambda": [0.7, 0.3], "artifact": ["k", "k"]})
    summary = lam.pivot_table(index="subset", columns="modality", values="lambda")
    write_analyses([Analysis("lambda", "Final λ of each pre-training run", lam, summary)], run)
    return run


def test_report_has_plots_tables_and_analyses_and_no_stay_ids(run_dir):
    page = write_html_report(run_dir).read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert len(re.findall(r'<img alt="plot" src="data:image/png;base64,', page)) == 4  # ranked + grid, per task
    assert page.count("<h2>ihm</h2>") == page.count("<h2>phenotyping</h2>") == 1
    assert page.count("<tbody>") == 3  # a leaderboard table per task and the λ table
    assert len(re.findall(r"<td>#1</td>", page)) == 2
    assert "Final λ of each pre-training run" in page and "0.7" in page
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"p\d{4}", text)


def test_report_command_rebuilds_it_without_ray_and_refuses_a_folder_without_leaderboard(run_dir, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sweeper.cli", "report", str(run_dir)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (run_dir / "report.html").stat().st_size > 10_000
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    bad = subprocess.run([sys.executable, "-m", "sweeper.cli", "report", str(empty)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "leaderboard.csv" in bad.stderr
    assert list(empty.iterdir()) == []


def test_report_and_leaderboard_show_what_each_modality_adds(tmp_path):
    """The engine's contribution analyses (sweeper.engine.analyses) end up as a table at the end of
    leaderboard.md and, per task, two more plots in report.html: contributions and metric by size."""
    from sweeper.engine.analyses import contribution_analyses
    from sweeper.plan.spec import Cell
    from sweeper.report.analyses import markdown_summary

    run = tmp_path / "smoke" / "r2"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"spec": "smoke", "profile": None, "started": "2026-12-03T10:00:00", "metric": "auroc"}))
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(float)
    ids = np.array([f"p{i:04d}" for i in range(200)])
    signal = {"discharge": 1.5, "radiology": 0.5, "demographics": 0.0}
    features = {m: s * labels + rng.normal(size=200) for m, s in signal.items()}
    cells, per_cell, rows = [], {}, []
    for subset in (("discharge",), ("radiology",), ("demographics",), ("discharge", "radiology"), ("discharge", "demographics"),
                   ("radiology", "demographics"), ("discharge", "radiology", "demographics")):
        cell = Cell("ihm", "medfuse", subset)
        logit = sum(signal[m] * features[m] for m in subset)
        per_cell[cell.cell_id] = [SeedPredictions(0, ids, labels, 1 / (1 + np.exp(-logit - rng.normal(0, 0.3, 200))))]
        rows.append({**aggregate_cell(cell.row(), per_cell[cell.cell_id], n_resamples=50), "cell_id": cell.cell_id})
        cells.append(cell)
    write_leaderboard(rows, run)
    analyses = contribution_analyses(cells, per_cell, "auroc", n_resamples=200)
    assert [a.name for a in analyses] == ["modality_contributions", "metric_by_size"]
    write_analyses(analyses, run)
    table = pd.read_csv(run / "analyses" / "modality_contributions.csv")
    assert table.sort_values("rank")["modality"].iloc[0] == "discharge"
    summary = markdown_summary(run)
    assert "What each modality adds" in summary and "| ihm | medfuse | +0." in summary
    page = write_html_report(run).read_text()
    assert len(re.findall(r'<img alt="plot" src="data:image/png;base64,', page)) == 3  # ranked, contributions, by size
