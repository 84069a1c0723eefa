"""Experiment specs: shipped specs load, subsets and cells expand, profiles merge, bad specs fail
in one line naming the file and key, ``sweeper plan`` counts, and trial-config precedence.

No Ray: ``sweeper plan`` without ``--address`` only reads the spec and the (patched) local resources.
"""
from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import yaml

from sweeper.cli import main
from sweeper.data.schema import MODALITIES
from sweeper.engine import cli as tune_cli
from sweeper.plan.spec import SPEC_DIR, Cell, SpecError, expand_cells, load_spec, trial_config
from trainables import registry

CLUSTER = {"CPU": 4.0, "GPU": 0.0}
METHOD = "picme.supervised"

BASE = {
    "name": "t",
    "data": {"synthetic": {"n_stays": 100, "seed": 0}},
    "tasks": ["ihm"],
    "modality_subsets": {"explicit": [["discharge"], ["radiology", "cxr"]]},
    "methods": {METHOD: {"search": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}, "fixed": {"d": 32}}},
    "budgets": {"tune_trials": 4, "max_epochs": 7, "grace_period": 2, "reduction_factor": 2, "patience": 3},
    "final": {"seeds": 3, "bootstrap_resamples": 1000},
}


@pytest.fixture(autouse=True)
def fixed_cluster(monkeypatch):
    """A deterministic GPU-less local cluster, so plan output and profile choice do not depend on the host."""
    monkeypatch.setattr(tune_cli, "local_cluster_resources", lambda: dict(CLUSTER))


def write(tmp_path: Path, raw, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def spec_with(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    raw.update(copy.deepcopy(changes))
    return raw


def shipped() -> list[tuple[str, str | None]]:
    cases = []
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        cases += [(path.stem, None)] + [(path.stem, p) for p in (raw.get("profiles") or {})]
    return cases


# ---------------------------------------------------------------- shipped specs


def test_shipped_specs_exist():
    assert any(name == "smoke" for name, _ in shipped())


@pytest.mark.parametrize(("name", "profile"), shipped(), ids=lambda v: str(v))
def test_shipped_spec_loads(name, profile, capsys):
    spec, path = load_spec(name, profile)
    assert path == SPEC_DIR / f"{name}.yaml"
    assert spec.name == name
    cells = expand_cells(spec)
    assert cells and len({c.cell_id for c in cells}) == len(cells)
    argv = ["plan", name] + (["--profile", profile] if profile else [])
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"spec {name}")


# ---------------------------------------------------------------- subsets and cells


def load_raw(tmp_path, raw, profile=None):
    return load_spec(str(write(tmp_path, raw)), profile)[0]


@pytest.mark.parametrize(("sizes", "expected"), [((2, 5), 26), ((1, 5), 31), ((3, 3), 10)])
def test_sizes_expand_to_every_subset_in_canonical_order(tmp_path, sizes, expected):
    spec = load_raw(tmp_path, spec_with(modality_subsets={"sizes": list(sizes)}))
    subsets = spec.modality_subsets.expand()
    assert len(subsets) == expected == sum(math.comb(len(MODALITIES), k) for k in range(sizes[0], sizes[1] + 1))
    assert len(set(subsets)) == len(subsets)
    assert all(sizes[0] <= len(s) <= sizes[1] for s in subsets)
    for subset in subsets:
        assert list(subset) == [m for m in MODALITIES if m in subset]


def test_sizes_from_a_reordered_modality_pool_stay_canonical(tmp_path):
    pool = list(reversed(MODALITIES[:3]))
    spec = load_raw(tmp_path, spec_with(modality_subsets={"sizes": [1, 3], "modalities": pool}))
    subsets = spec.modality_subsets.expand()
    assert subsets == [c for k in (1, 2, 3) for c in itertools.combinations(MODALITIES[:3], k)]


def test_explicit_subsets_are_put_in_canonical_order(tmp_path):
    spec = load_raw(tmp_path, spec_with(modality_subsets={"explicit": [["demographics", "discharge"], ["cxr"]]}))
    assert spec.modality_subsets.expand() == [("discharge", "demographics"), ("cxr",)]


def test_cells_are_the_full_product_with_unique_ids(tmp_path):
    rates = [0.0, 0.25, 0.5]
    raw = spec_with(tasks=["ihm", "phenotyping"], modality_subsets={"sizes": [2, 5]}, axes={"train_missing_rate": rates})
    spec = load_raw(tmp_path, raw)
    cells = expand_cells(spec)
    subsets = spec.modality_subsets.expand()
    assert len(cells) == 2 * 1 * 26 * 3
    assert len({c.cell_id for c in cells}) == len(cells)
    assert len(set(cells)) == len(cells)
    expected = {(t, m, s, (("train_missing_rate", r),)) for t in ["ihm", "phenotyping"] for m in [METHOD] for s in subsets for r in rates}
    assert {(c.task, c.method, c.modalities, c.axes) for c in cells} == expected


def test_cells_without_axes(tmp_path):
    spec = load_raw(tmp_path, BASE)
    cells = expand_cells(spec)
    assert [c.cell_id for c in cells] == [f"ihm__{METHOD}__discharge", f"ihm__{METHOD}__radiology+cxr"]


# ---------------------------------------------------------------- profiles


def test_profile_deep_merges_over_the_base(tmp_path):
    raw = spec_with(profiles={"quick": {
        "budgets": {"tune_trials": 1},
        "methods": {METHOD: {"fixed": {"d": 16}}},
        "tasks": ["phenotyping"],
    }})
    base = load_raw(tmp_path, raw)
    quick = load_raw(tmp_path, raw, "quick")
    assert quick.budgets.tune_trials == 1
    # the other budget keys keep the base's (non-default) values
    for key in ("max_epochs", "grace_period", "reduction_factor", "patience"):
        assert getattr(quick.budgets, key) == BASE["budgets"][key] == getattr(base.budgets, key)
    assert quick.methods[METHOD].fixed == {"d": 16}
    assert set(quick.methods[METHOD].search) == {"lr"}  # sibling of the overridden key survives
    assert quick.tasks == ["phenotyping"]  # lists are replaced, not merged
    assert quick.final.seeds == base.final.seeds == 3
    assert base.budgets.tune_trials == 4 and base.methods[METHOD].fixed == {"d": 32}


def test_a_profile_adds_a_method_and_a_null_inside_it_means_absent(tmp_path):
    """A profile may add a method the base lacks; a null inside it (as an anchor shared with a method
    the base has would carry) leaves the key out rather than setting it to null."""
    raw = spec_with(profiles={"more": {"methods": {f"{METHOD}:b": {"search": {"lr": {"loguniform": [1e-4, 1e-2]}, "d": None}, "fixed": {"d": 8}}}}})
    more = load_raw(tmp_path, raw, "more")
    assert set(more.methods) == {METHOD, f"{METHOD}:b"}
    assert set(more.methods[f"{METHOD}:b"].search) == {"lr"} and more.methods[f"{METHOD}:b"].fixed == {"d": 8}


def test_plan_with_profile(tmp_path, capsys):
    path = write(tmp_path, spec_with(profiles={"quick": {"budgets": {"tune_trials": 1}}}))
    assert main(["plan", str(path), "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "spec t (profile quick)"
    assert "tune phase: 2 trials" in out


def test_local_profile_is_picked_on_a_gpu_less_cluster(tmp_path, capsys):
    path = write(tmp_path, spec_with(profiles={"local": {"final": {"seeds": 1}}}))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "spec t (profile local)"
    assert "final phase: 2 trials" in out


def test_unknown_profile(tmp_path, capsys):
    path = write(tmp_path, spec_with(profiles={"quick": {"budgets": {"tune_trials": 1}}}))
    with pytest.raises(SpecError, match=r"profiles\.nosuch: no such profile; defined: quick"):
        load_spec(str(path), "nosuch")
    assert main(["plan", str(path), "--profile", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"sweeper: error: {path}: profiles.nosuch: no such profile; defined: quick"]


# ---------------------------------------------------------------- malformed specs

def _set(raw: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split("/")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return raw


_LR = f"methods/{METHOD}/search/lr"
# id: (path/to/key set to value ..., key path the error must name, other text it must contain)
MALFORMED = {
    "unknown-top-level-key": ({"colour": "red"}, "colour", ["Extra inputs are not permitted"]),
    "unknown-budgets-key": ({"budgets/epochs": 3}, "budgets.epochs", ["Extra inputs are not permitted"]),
    "unknown-method": ({"methods": {"picme.nosuch": {}}}, "methods", ["'picme.nosuch'", "registered: " + ", ".join(registry.names())]),
    "unknown-modality": ({"modality_subsets": {"explicit": [["discharge"], ["ecg"]]}}, "modality_subsets", ["'ecg'", "known: " + ", ".join(MODALITIES)]),
    "unknown-task": ({"tasks": ["ihm", "mortality"]}, "tasks.1", ["'ihm'"]),
    "loguniform-low-zero": ({_LR: {"loguniform": [0, 1.0e-3]}}, f"methods.{METHOD}.search.lr", ["0 < low < high"]),
    "loguniform-low-negative": ({_LR: {"loguniform": [-1.0e-3, 1.0e-3]}}, f"methods.{METHOD}.search.lr", ["0 < low < high"]),
    "two-distribution-kinds": ({_LR: {"uniform": [0.1, 0.2], "choice": [1, 2]}}, f"methods.{METHOD}.search.lr", ["exactly one of"]),
    "data-path-and-synthetic": ({"data/path": "stays"}, "data", ["exactly one of 'path' or 'synthetic'"]),
    "data-neither": ({"data": {}}, "data", ["exactly one of 'path' or 'synthetic'"]),
    "wrong-type": ({"budgets/tune_trials": "many"}, "budgets.tune_trials", ["integer"]),
    "grace-over-max-epochs": ({"budgets/grace_period": 8}, "budgets", ["grace_period must not exceed max_epochs"]),
    "searched-and-fixed": ({f"methods/{METHOD}/fixed/lr": 1.0e-3}, f"methods.{METHOD}", ["'lr' is both searched and fixed"]),
    "unknown-axis": ({"axes": {"label_noise": [0.1]}}, "axes", ["'label_noise'", "known: train_missing_rate"]),
    "fractional-gpu-multi-worker": ({"resources": {"gpus_per_trial": 0.5, "workers_per_trial": 2}}, "resources", ["workers_per_trial: 1"]),
    "bootstrap-below-1000": ({"final/bootstrap_resamples": 999}, "final.bootstrap_resamples", ["1000"]),
    "subset-listed-twice": ({"modality_subsets": {"explicit": [["cxr", "discharge"], ["discharge", "cxr"]]}}, "modality_subsets", ["listed twice"]),
    "sizes-out-of-range": ({"modality_subsets": {"sizes": [0, 5]}}, "modality_subsets", ["1 <= min <= max <= 5"]),
    "missing-required-key": ({"tasks": None}, "tasks", []),
    "profiles-not-a-mapping": ({"profiles": ["local"]}, "profiles", []),
    "int-low-not-below-high": ({_LR: {"int": [3, 3]}}, f"methods.{METHOD}.search.lr", ["int needs low < high"]),
    "unknown-metric": ({"metric": "f1"}, "metric", ["'auroc' or 'auprc'"]),
    "method-reads-no-subset": ({"methods/medfuse": {}}, "methods.medfuse", ["timeseries and demographics only"]),
    "unknown-method-variant": ({"methods": {"medfusion:add": {}}}, "methods", ["'medfusion:add'"]),
    # a trainable's options (medfuse's fusion, mufuse_gate, class_weight) are checked before anything runs
    "fixed-value-outside-options": ({"methods/medfuse": {"fixed": {"mufuse_gate": "relu"}}}, "methods", ["medfuse.mufuse_gate: 'relu' is not one of sigmoid, tanh"]),
    "searched-choice-outside-options": ({"methods/medfuse:x": {"search": {"fusion": {"choice": ["add", "sum"]}}}}, "methods",
                                        ["medfuse:x.fusion: 'sum' is not one of mufuse, add, concat, scane"]),
}


def assert_one_line_error(capsys, rc: int, prefix: str, contains=()) -> str:
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    for text in contains:
        assert text in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_spec_is_one_line_naming_file_and_key(tmp_path, capsys, case):
    changes, key_path, contains = MALFORMED[case]
    raw = copy.deepcopy(BASE)
    for where, value in changes.items():
        if value is None:
            raw.pop(where)
        else:
            _set(raw, where, value)
    path = write(tmp_path, raw)
    rc = main(["plan", str(path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: {path}: {key_path}:", contains)


def test_the_malformed_base_is_valid(tmp_path, capsys):
    """Guards the table above: every error comes from its change, not from BASE."""
    assert main(["plan", str(write(tmp_path, BASE))]) == 0
    assert capsys.readouterr().err == ""


def test_invalid_yaml(tmp_path, capsys):
    path = write(tmp_path, "name: t\ndata: {synthetic: {}\ntasks: [ihm]\n")
    rc = main(["plan", str(path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: {path}: not valid YAML at line ", ["fix the syntax"])


def test_top_level_not_a_mapping(tmp_path, capsys):
    path = write(tmp_path, "- name\n- data\n")
    rc = main(["plan", str(path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: {path}: expected a mapping")


def test_missing_spec_file(tmp_path, capsys):
    path = tmp_path / "absent.yaml"
    rc = main(["plan", str(path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: {path}: no such spec file")


def test_unknown_spec_name(capsys):
    rc = main(["plan", "nosuchspec"])
    known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
    line = assert_one_line_error(capsys, rc, "sweeper: error: spec 'nosuchspec'", [str(SPEC_DIR / "nosuchspec.yaml")])
    assert line.endswith("known specs: " + ", ".join(known))
    assert "smoke" in known


# ---------------------------------------------------------------- sweeper plan


def test_plan_smoke_counts(capsys):
    raw = yaml.safe_load((SPEC_DIR / "smoke.yaml").read_text())
    n_subsets = len(raw["modality_subsets"]["explicit"])
    n_cells = len(raw["tasks"]) * len(raw["methods"]) * n_subsets
    budgets = raw["budgets"]
    tune = sum(budgets["tune_trials"] if m.get("search") else 1 for m in raw["methods"].values()) * len(raw["tasks"]) * n_subsets
    final = n_cells * raw["final"]["seeds"]
    worst = (tune + final) * budgets["max_epochs"]
    res = raw.get("resources", {})
    slots = max(1, int((CLUSTER["CPU"] - 0.5) // (res.get("cpus_per_trial", 1) * res.get("workers_per_trial", 1))))
    assert (n_cells, tune, final, worst, slots) == (2, 4, 4, 24, 3)  # the file says: 2 subsets, 2 trials, 2 seeds, 3 epochs

    assert main(["plan", "smoke"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "spec smoke"
    assert lines[1].startswith(f"cells: {n_cells}  ({len(raw['tasks'])} tasks × {n_subsets} modality subsets × {len(raw['methods'])} methods)")
    assert "  by subset size: 2: 2" in lines
    assert any(line.startswith(f"tune phase: {tune} trials (≤ {budgets['tune_trials']} per cell,") for line in lines)
    assert any(line.startswith(f"final phase: {final} trials ({raw['final']['seeds']} seeds per cell,") for line in lines)
    assert f"worst-case trial-epochs: {worst} ({budgets['max_epochs']} epochs max per trial)" in lines
    assert lines[-1] == f"cluster: {CLUSTER['CPU']:g} CPU, {CLUSTER['GPU']:g} GPU → {slots} trials at once"


def test_plan_counts_unsearched_methods_once_and_gpu_slots(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tune_cli, "local_cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    raw = spec_with(
        methods={METHOD: {"fixed": {"d": 16}}},
        modality_subsets={"sizes": [4, 5]},
        axes={"train_missing_rate": [0.0, 0.5]},
        resources={"cpus_per_trial": 2, "gpus_per_trial": 0.25},
    )
    assert main(["plan", str(write(tmp_path, raw))]) == 0
    out = capsys.readouterr().out
    cells = 1 * 1 * 6 * 2
    assert f"cells: {cells}  (1 tasks × 6 modality subsets × 1 methods × 2 train_missing_rate)" in out
    assert f"tune phase: {cells} trials" in out  # nothing searched: one trial per cell
    assert f"final phase: {cells * 3} trials" in out
    assert f"worst-case trial-epochs: {(cells + cells * 3) * 7} " in out
    assert "resources per trial: 1 worker(s) × 2 CPU + 0.25 GPU" in out
    assert out.splitlines()[-1] == "cluster: 16 CPU, 1 GPU → 4 trials at once"  # min(15.5 // 2, 1 // 0.25)


# ---------------------------------------------------------------- trial_config


def test_trial_config_precedence(tmp_path):
    defaults = registry.get(METHOD).defaults
    fixed = {"d": defaults["d"] * 2, "dropout": defaults["dropout"] + 0.2}
    raw = spec_with(axes={"train_missing_rate": [0.25]})
    raw["methods"][METHOD] = {"search": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}, "fixed": fixed}
    spec = load_raw(tmp_path, raw)
    cell = expand_cells(spec)[0]
    assert cell.axes == (("train_missing_rate", 0.25),)

    params = {"lr": defaults["lr"] / 2}
    config = trial_config(spec, cell, params)
    assert config == {**defaults, **fixed, **params, "train_missing_rate": 0.25, "select_metric": "auroc"}
    assert config["d"] == fixed["d"] != defaults["d"]  # fixed beats defaults
    assert config["lr"] == params["lr"] != defaults["lr"]  # searched beats defaults
    assert config["batch_size"] == defaults["batch_size"]  # untouched default kept
    assert trial_config(spec, cell, {"d": 8})["d"] == 8  # searched beats fixed
    assert trial_config(spec, cell, {}) == {**defaults, **fixed, "train_missing_rate": 0.25, "select_metric": "auroc"}
    assert defaults == registry.get(METHOD).defaults  # not mutated


def test_trial_config_without_axes_has_no_axis_keys(tmp_path):
    spec = load_raw(tmp_path, BASE)
    cell = Cell("ihm", METHOD, ("discharge",))
    assert "train_missing_rate" not in trial_config(spec, cell, {})


def test_los_and_los_gt_7d_are_tasks_ranked_by_their_own_metrics(tmp_path, capsys):
    from sweeper.engine.phases import objective
    from sweeper.evaluation.metrics import DEFAULT_REGRESSION_METRIC
    from sweeper.plan.ranking import rank_metrics

    spec = load_raw(tmp_path, spec_with(tasks=["ihm", "los", "los_gt_7d"]))
    assert sorted({c.task for c in expand_cells(spec)}) == ["ihm", "los", "los_gt_7d"]
    assert spec.regression_metric == "spearman" == DEFAULT_REGRESSION_METRIC  # the default
    assert rank_metrics(spec) == {"ihm": "auroc", "los": "spearman", "los_gt_7d": "auroc"}
    by_task = {c.task: trial_config(spec, c, {})["select_metric"] for c in expand_cells(spec)}
    assert by_task == {"ihm": "auroc", "los": "spearman", "los_gt_7d": "auroc"}
    assert objective(spec) == "val_objective"  # one key for cells ranked by different metrics

    mae = load_raw(tmp_path, spec_with(tasks=["los"], regression_metric="mae"))
    assert rank_metrics(mae) == {"los": "mae"} and trial_config(mae, expand_cells(mae)[0], {})["select_metric"] == "mae"
    assert objective(load_raw(tmp_path, spec_with(tasks=["ihm", "los_gt_7d"]))) == "val_auroc"  # unchanged without los

    path = write(tmp_path, spec_with(tasks=["ihm", "los"], regression_metric="mae"))
    assert main(["plan", str(path)]) == 0
    assert "  tuned and ranked by: ihm: validation AUROC, los: validation MAE" in capsys.readouterr().out.splitlines()


def test_a_regression_metric_that_is_not_one_is_refused_in_one_line(tmp_path, capsys):
    path = write(tmp_path, spec_with(tasks=["los"], regression_metric="auroc"))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "regression_metric" in err[0] and "spearman" in err[0]


# ---------------------------------------------------------------- method variants, input kinds, metric


def test_labelled_variants_of_one_trainable_are_separate_cells(tmp_path):
    raw = spec_with(
        modality_subsets={"explicit": [["timeseries", "demographics"], ["discharge"]]},
        methods={
            METHOD: {"fixed": {"d": 32}},
            "medfuse:add": {"search": {"layers": {"int": [1, 3]}}, "fixed": {"fusion": "add"}},
            "medfuse:scane": {"fixed": {"fusion": "scane"}},
        },
    )
    spec = load_raw(tmp_path, raw)
    cells = expand_cells(spec)
    # picme reads every subset; medfuse only the one built from time series and descriptors.
    assert sorted((c.method, "+".join(c.modalities)) for c in cells) == [
        ("medfuse:add", "timeseries+demographics"), ("medfuse:scane", "timeseries+demographics"),
        (METHOD, "discharge"), (METHOD, "timeseries+demographics"),
    ]
    add = next(c for c in cells if c.method == "medfuse:add")
    config = trial_config(spec, add, {"layers": 3})
    assert config["fusion"] == "add" and config["layers"] == 3 and config["partition_k"] == registry.get("medfuse").defaults["partition_k"]
    assert add.cell_id == "ihm__medfuse:add__timeseries+demographics"
    import optuna.distributions as od

    assert spec.methods["medfuse:add"].search["layers"].to_optuna() == od.IntDistribution(1, 3)


def test_plan_says_which_method_subset_pairs_are_left_out(tmp_path, capsys):
    raw = spec_with(modality_subsets={"explicit": [["timeseries", "demographics"], ["discharge"]]}, methods={METHOD: {}, "classical.logreg": {}})
    assert main(["plan", str(write(tmp_path, raw))]) == 0
    out = capsys.readouterr().out
    assert "cells: 3" in out and "1 method × subset pairs left out" in out


def test_metric_selects_and_reaches_the_trial(tmp_path):
    spec = load_raw(tmp_path, spec_with(metric="auprc"))
    assert trial_config(spec, expand_cells(spec)[0], {})["select_metric"] == "auprc"
    from sweeper.engine.phases import objective

    assert objective(spec) == "val_auprc"
    assert load_raw(tmp_path, spec_with()).metric == "auroc"


@pytest.mark.parametrize("problem", ["no-such-folder", "not-a-stays-folder"])
def test_run_with_bad_data_fails_before_writing_a_run_folder(tmp_path, capsys, problem):
    data = tmp_path / "stays"
    if problem == "not-a-stays-folder":
        data.mkdir()
    rc = main(["run", "smoke", "--data", str(data), "--results", str(tmp_path / "results")])
    line = assert_one_line_error(capsys, rc, f"sweeper: error: {data}")
    assert "sweeper data synth" in line
    assert not (tmp_path / "results").exists()  # nothing half-written


def test_run_folder_mistakes_are_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    rc = main(["run", "smoke", "--resume", "--results", str(results)])
    assert_one_line_error(capsys, rc, f"sweeper: error: --resume: no run of 'smoke' under {results / 'smoke'}", ["sweeper run smoke"])
    (results / "smoke" / "r").mkdir(parents=True)
    rc = main(["run", "smoke", "--resume", "--run-name", "r", "--results", str(results)])
    assert_one_line_error(capsys, rc, f"sweeper: error: --resume: {results / 'smoke' / 'r'} is not a sweeper run folder (no run.json)")
    rc = main(["run", "smoke", "--run-name", "r", "--results", str(results)])
    assert_one_line_error(capsys, rc, f"sweeper: error: {results / 'smoke' / 'r'}: run folder exists", ["--resume"])
    assert [p.name for p in (results / "smoke" / "r").iterdir()] == []  # nothing written into it


def test_resume_picks_the_latest_run_by_start_time_and_of_the_named_profile(tmp_path, capsys):
    from sweeper.engine.rundir import RunOptions, resolve_run_dir

    base = tmp_path / "smoke"
    for name, profile, started in [("local-check", "local", "2026-11-21T12:27:30"), ("20261121-200303", "big", "2026-11-21T20:03:03"),
                                   ("20261121-180000", "local", "2026-11-21T18:00:00")]:
        (base / name).mkdir(parents=True)
        (base / name / "run.json").write_text(f'{{"spec": "smoke", "profile": "{profile}", "started": "{started}"}}')
    # A --run-name folder ("local-check") sorts after the dated ones by name, not by start time.
    assert resolve_run_dir(RunOptions("smoke", results=tmp_path, resume=True), "smoke").name == "20261121-200303"
    assert resolve_run_dir(RunOptions("smoke", profile="local", results=tmp_path, resume=True), "smoke").name == "20261121-180000"
    rc = main(["run", "smoke", "--resume", "--profile", "other", "--results", str(tmp_path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: --resume: no run of 'smoke' with profile 'other' under {base}")
    rc = main(["run", "smoke", "--resume", "--profile", "local", "--run-name", "20261121-200303", "--results", str(tmp_path)])
    assert_one_line_error(capsys, rc, f"sweeper: error: --resume: {base / '20261121-200303'} was started with profile 'big', not 'local'")
    assert sorted(p.name for p in (base / "20261121-200303").iterdir()) == ["run.json"]  # nothing written


@pytest.mark.parametrize("encoder, says", [("some-org/no-such-model", "HF_HUB_OFFLINE is set"), ("/no/such/model", "no such model folder")])
def test_run_with_an_unloadable_text_model_fails_before_writing_a_run_folder(tmp_path, capsys, monkeypatch, encoder, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = tmp_path / "badtext.yaml"
    spec.write_text(
        "name: badtext\ndata: {synthetic: {n_stays: 100}}\ntasks: [ihm]\nmodality_subsets: {explicit: [[discharge]]}\n"
        f"methods:\n  picme.supervised: {{fixed: {{text_encoder: '{encoder}'}}}}\n"
    )
    rc = main(["run", str(spec), "--results", str(tmp_path / "results")])
    assert_one_line_error(capsys, rc, f"sweeper: error: {spec}: methods.picme.supervised.fixed.text_encoder: text model {encoder!r}", [says])
    assert not (tmp_path / "results").exists()
