"""After the final phase, without Ray: the final trials' checkpoints (written by the training loop
in memory) become the leaderboard's extra column groups, analyses/robustness.csv, the external
cohort's gaps and report.html's robustness plot (sweeper.engine.collect.write_outputs, fed the
shape of Tune results)."""
from __future__ import annotations

import json
import types

import pandas as pd
import pytest
import yaml

from sweeper.data.schema import read_manifest
from sweeper.data.stays import write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.engine.collect import write_outputs
from sweeper.engine.sweep import external_tables, missing_sets
from sweeper.loop.training import run_training
from sweeper.plan.spec import expand_cells, load_spec, trial_config


def test_final_checkpoints_become_column_groups_a_robustness_table_and_plot(synth_stays, in_memory_session, tmp_path):
    other, manifest = generate(SynthConfig(n_stays=200, seed=3))
    write_stays(other, manifest, tmp_path / "other", split_seed=0)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "x", "data": {"path": str(synth_stays), "external": {"other": "other"}}, "tasks": ["ihm"],
        "modality_subsets": {"explicit": [["discharge", "demographics"]]},
        "methods": {"picme.supervised": {"fixed": {"d": 16, "lr": 2e-3, "batch_size": 64}}},
        "budgets": {"tune_trials": 0, "max_epochs": 2, "grace_period": 1, "patience": 2},
        "final": {"seeds": 2, "test_missing": {"d100": {"drop": "discharge", "rate": 1.0}}, "efficiency_reference": "picme.supervised"},
    }))
    spec, _ = load_spec(str(spec_file))
    (cell,) = expand_cells(spec)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"spec": "x", "metric": "auroc"}))
    tables = external_tables(spec, read_manifest(synth_stays), list(cell.modalities), ["ihm"], run_dir)
    extra_sets = {**{name: {"external": True} for name in tables}, **missing_sets(spec)}
    results = []
    for seed in range(2):
        session = in_memory_session(synth_stays)
        session.tables.update(tables)
        config = {**trial_config(spec, cell, {}), "method": cell.method, "task": cell.task, "modalities": list(cell.modalities), "seed": seed,
                  "final": True, "max_epochs": 2, "patience": 2, "manifest": read_manifest(synth_stays), "extra_sets": extra_sets}
        run_training(config, session)
        results.append(types.SimpleNamespace(config={"run": {"cell": cell.cell_id, "seed": seed, "final": True, "params": {}}},
                                             metrics={**session.reports[-1], "checkpoint_path": str(session.artifact)},
                                             metrics_dataframe=None, path=str(session.artifact)))
    board = write_outputs(spec, [cell], {cell.cell_id: {}}, results, run_dir, stays_dir=synth_stays)
    row = board.iloc[0]
    assert row["ext_other__n_stays"] == 200 and row["miss_d100__n_stays"] == row["n_test_stays"]
    assert row["miss_d100__auroc_boot_low"] < row["miss_d100__auroc_mean"] < row["miss_d100__auroc_boot_high"]
    assert row["miss_d100__drop"] == pytest.approx(row["auroc_mean"] - row["miss_d100__auroc_mean"]) and row["miss_d100__drop"] > 0
    assert sorted(p.name for p in (run_dir / "predictions" / cell.cell_id / "ext_other").iterdir()) == ["seed-0.parquet", "seed-1.parquet"]
    robustness = pd.read_csv(run_dir / "analyses" / "robustness.csv")
    assert list(robustness["rate"]) == [0.0, 1.0] and list(robustness["mean"]) == pytest.approx([row["auroc_mean"], row["miss_d100__auroc_mean"]])
    markdown = (run_dir / "leaderboard.md").read_text()
    assert "| ext_other | miss_d100 | params | MFLOPs/stay | peak MB | EffScore |" in markdown and "External cohorts" in markdown
    assert row["eff_score"] == pytest.approx(1.0) and row["eff_reference"] == cell.cell_id  # the reference row itself
    assert row["eff_params"] == results[0].metrics["eff_params"] and row["eff_memory_measure"] == "cpu_process_peak_rss"
    page = (run_dir / "report.html").read_text()
    assert page.count('<img alt="plot"') == 2 and "ext_other" in page  # the ranked plot and the robustness plot
