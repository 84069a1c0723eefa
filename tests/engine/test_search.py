"""ASHA and Optuna scoped to a cell (unit level: the schedulers' decisions, no cluster needed)."""
from __future__ import annotations

import dataclasses

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from sweeper.engine.search import JOURNAL_FILE, CellScheduler, CellSearcher, open_storage, run_storage

OPTIONS = dict(time_attr="epoch", max_t=8, grace_period=1, reduction_factor=2)


@dataclasses.dataclass
class Trial:  # the two fields schedulers read from a Tune trial
    trial_id: str
    config: dict


def _feed(scheduler, trials_and_scores):
    decisions = {}
    for trial, score in trials_and_scores:
        scheduler.on_trial_add(None, trial)
    for trial, score in trials_and_scores:
        decisions[trial.trial_id] = scheduler.on_trial_result(None, trial, {"epoch": 1, "val_auroc": score})
    return decisions


def _trials():
    strong = [(Trial(f"s{i}", {"cell": "strong"}), 0.90 + 0.01 * i) for i in range(4)]
    weak = [(Trial(f"w{i}", {"cell": "weak"}), 0.52 + 0.01 * i) for i in range(4)]
    return strong + weak


def test_weak_cell_is_judged_only_against_itself():
    decisions = _feed(CellScheduler("val_auroc", "max", **OPTIONS), _trials())
    weak_alone = _feed(AsyncHyperBandScheduler(metric="val_auroc", mode="max", **OPTIONS), [t for t in _trials() if t[0].config["cell"] == "weak"])
    # Scoped: the weak cell's trials get exactly the decisions an ASHA of that cell alone gives,
    # although every strong trial beats every weak one.
    assert {k: v for k, v in decisions.items() if k.startswith("w")} == weak_alone
    assert decisions["w3"] == TrialScheduler.CONTINUE


def test_a_single_global_asha_would_starve_the_weak_cell():
    # The control: without scoping, every weak trial is stopped at the first rung.
    decisions = _feed(AsyncHyperBandScheduler(metric="val_auroc", mode="max", **OPTIONS), _trials())
    assert all(decisions[f"w{i}"] == TrialScheduler.STOP for i in range(4))


def test_searcher_round_robins_cells_within_budget(tmp_path):
    import optuna.distributions as od

    space = {"lr": od.FloatDistribution(1e-4, 1e-2, log=True)}
    searcher = CellSearcher({"a": space, "b": space, "c": {}}, {"a": 2, "b": 2, "c": 1}, "val_auroc", "max",
                            storage=str(tmp_path / "journal.log"), seed=0)
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert configs[-1] == searcher.FINISHED
    cells = [c["cell"] for c in configs[:5]]
    assert sorted(cells) == ["a", "a", "b", "b", "c"]
    assert cells[:3] == ["a", "b", "c"]  # every cell starts before any gets a second trial
    assert configs[2] == {"cell": "c"}  # nothing to search: the fixed config
    assert all(1e-4 <= c["lr"] <= 1e-2 for c in configs[:5] if c["cell"] != "c")
    for i, config in enumerate(configs[:5]):
        searcher.on_trial_complete(f"t{i}", {"val_auroc": 0.6 + 0.01 * i, "training_iteration": 1})
    import optuna

    studies = {s.study_name: s for s in optuna.get_all_study_summaries(open_storage(str(tmp_path / "journal.log")))}
    assert set(studies) == {"a", "b"}  # one study per searched cell
    assert all(s.n_trials == 2 for s in studies.values())


def test_searcher_is_seeded(tmp_path):
    import optuna.distributions as od

    space = {"lr": od.FloatDistribution(1e-4, 1e-2, log=True)}
    runs = []
    for attempt in range(2):
        searcher = CellSearcher({"a": space}, {"a": 3}, "val_auroc", "max", storage=str(tmp_path / f"{attempt}.log"), seed=7)
        runs.append([searcher.suggest(f"t{i}")["lr"] for i in range(3)])
    assert runs[0] == runs[1]


def test_searcher_state_survives_a_driver_restart(tmp_path):
    """Tune saves the searcher at every step and restores it on --resume: budgets already given are
    not given again, and a trial that was running when the driver died is still told to its study."""
    import optuna
    import optuna.distributions as od

    space = {"lr": od.FloatDistribution(1e-4, 1e-2, log=True)}
    url = str(tmp_path / "journal.log")
    first = CellSearcher({"a": space, "b": space}, {"a": 2, "b": 2}, "val_auroc", "max", storage=url, seed=0)
    for i in range(3):
        first.suggest(f"t{i}")
    first.on_trial_result("t0", {"val_auroc": 0.6, "epoch": 1})
    first.on_trial_complete("t0", {"val_auroc": 0.7, "epoch": 2})
    first.save(str(tmp_path / "searcher.pkl"))

    again = CellSearcher({"a": space, "b": space}, {"a": 2, "b": 2}, "val_auroc", "max", storage=url, seed=0)
    again.restore(str(tmp_path / "searcher.pkl"))
    again.on_trial_complete("t0", {"val_auroc": 0.1})  # already told before the restart: ignored
    again.on_trial_complete("t1", {"val_auroc": 0.65, "epoch": 2})  # was running: told now
    last = again.suggest("t3")
    assert last["cell"] == "b" and again.suggest("t4") == again.FINISHED
    values = {s.study_name: sorted(t.value for t in optuna.load_study(study_name=s.study_name, storage=open_storage(url)).trials if t.value is not None)
              for s in optuna.get_all_study_summaries(open_storage(url))}
    assert values == {"a": [0.7], "b": [0.65]}


def test_a_run_from_before_the_journal_keeps_its_sqlite_studies(tmp_path):
    """New runs keep their studies in a journal file; a run started with ``optuna.db`` resumes in it."""
    import optuna
    import optuna.distributions as od

    assert run_storage(tmp_path) == str(tmp_path / JOURNAL_FILE)
    (tmp_path / "old").mkdir()
    url = f"sqlite:///{tmp_path / 'old' / 'optuna.db'}"
    optuna.create_study(storage=url, study_name="a")
    assert run_storage(tmp_path / "old") == url
    searcher = CellSearcher({"a": {"lr": od.FloatDistribution(1e-4, 1e-2, log=True)}}, {"a": 1}, "val_auroc", "max", storage=run_storage(tmp_path / "old"), seed=0)
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"val_auroc": 0.7, "epoch": 1})
    assert [t.value for t in optuna.load_study(study_name="a", storage=open_storage(url)).trials] == [0.7]
