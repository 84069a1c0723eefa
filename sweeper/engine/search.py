"""Search and early stopping scoped to a cell, inside one Tune experiment.

One Tuner runs every cell's trials (of a wave: ``resources.trials_per_experiment``, ``phases.waves``)
so that no slot idles while a cell finishes; ``CellSearcher``
gives each cell its own Optuna study (TPE, seeded, in the run's Optuna journal file)
and ``CellScheduler`` its own ASHA, so a trial is only ever compared with trials of its cell.
"""
from __future__ import annotations

import hashlib
import pickle

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

CELL_KEY = "cell"


JOURNAL_FILE = "optuna-journal.log"  # optuna-dashboard reads it: ``optuna-dashboard <run>/optuna-journal.log``


def run_storage(run_dir) -> str:
    """Where a run's Optuna studies live: its journal file (an append-only log: an ask or a tell
    costs ~3 ms, against ~30 ms for SQLite, and it sits on the path between two trials of a slot);
    runs started before the journal keep their ``optuna.db``."""
    from pathlib import Path

    legacy = Path(run_dir) / "optuna.db"
    return f"sqlite:///{legacy}" if legacy.exists() else str(Path(run_dir) / JOURNAL_FILE)


def open_storage(location: str):
    """An Optuna storage: ``sqlite:///…`` (an RDB URL) or the path of a journal file."""
    import optuna

    if "://" in location:
        return optuna.storages.RDBStorage(location)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(location))


def _cell_seed(seed: int, cell_id: str) -> int:
    return (seed * 1_000_003 + int(hashlib.sha256(cell_id.encode()).hexdigest()[:8], 16)) % 2**31


class CellSearcher(Searcher):
    """Round-robin over cells with budget left; each cell's own Optuna study (TPE, seeded) proposes
    its configs through Optuna's ask-and-tell interface.

    All studies share one storage (the run's journal file, which optuna-dashboard reads). Tune saves
    the searcher at every controller step, so its state is small: how many trials each cell was
    given, which Optuna trial each Tune trial is, and each cell's sampler (pickled again only when it
    proposed since the last save).
    """

    def __init__(self, spaces: dict, budgets: dict[str, int], metric: str, mode: str, storage: str, seed: int, step_attr: str = "epoch"):
        super().__init__(metric=metric, mode=mode)
        self._spaces, self._budgets = spaces, budgets
        self._storage_location, self._seed, self._step_attr = storage, seed, step_attr
        self._issued = {cell: 0 for cell in budgets}
        self._trial_cell: dict[str, str] = {}
        self._trial_number: dict[str, int] = {}  # Tune trial id -> its Optuna trial's number in the cell's study
        self._finished: set[str] = set()
        self._samplers: dict[str, bytes] = {}  # cell -> pickled sampler, as of the last save
        self._studies: dict = {}
        self._live: dict = {}  # Tune trial id -> optuna.Trial of this driver (intermediate values go to it)
        self._storage = None

    def __getstate__(self):  # Tune pickles the searcher with the experiment: no open storage in it
        return {**self.__dict__, "_studies": {}, "_live": {}, "_storage": None}

    def _study(self, cell: str):
        if cell not in self._studies:
            import optuna

            if self._storage is None:
                optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per new study otherwise
                self._storage = open_storage(self._storage_location)
            saved = self._samplers.get(cell)
            sampler = pickle.loads(saved) if saved else optuna.samplers.TPESampler(seed=_cell_seed(self._seed, cell))
            direction = "maximize" if self.mode == "max" else "minimize"
            self._studies[cell] = optuna.create_study(storage=self._storage, sampler=sampler, study_name=cell, direction=direction, load_if_exists=True)
        return self._studies[cell]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        open_cells = [c for c in self._budgets if self._issued[c] < self._budgets[c]]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: (self._issued[c], list(self._budgets).index(c)))
        self._issued[cell] += 1
        self._trial_cell[trial_id] = cell
        if not self._spaces[cell]:  # nothing to search: the fixed config is the only candidate
            return {CELL_KEY: cell}
        study = self._study(cell)
        trial = study.ask(fixed_distributions=self._spaces[cell])
        self._trial_number[trial_id], self._live[trial_id] = trial.number, trial
        self._samplers.pop(cell, None)  # its sampler moved on: pickle it again at the next save
        return {**trial.params, CELL_KEY: cell}

    def _known(self, trial_id: str) -> bool:
        # A trial resumed after a driver restart may be unknown to the restored searcher: skip it.
        return trial_id in self._trial_number and trial_id not in self._finished

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Intermediate values are for optuna-dashboard's curves (ASHA, not Optuna, stops trials); a
        # trial resumed after a driver restart reports only its final value.
        if self._known(trial_id) and trial_id in self._live and self.metric in result and self._step_attr in result:
            self._live[trial_id].report(float(result[self.metric]), int(result[self._step_attr]))

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        import optuna

        if not self._known(trial_id):
            return
        self._finished.add(trial_id)
        study = self._study(self._trial_cell[trial_id])
        value = (result or {}).get(self.metric)
        try:
            if error or value is None:
                study.tell(self._trial_number[trial_id], state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(self._trial_number[trial_id], float(value))
        except (ValueError, RuntimeError):
            # The study recorded this trial as finished just before the driver died, the searcher
            # checkpoint did not; the resumed trial's result adds nothing to it.
            pass
        self._live.pop(trial_id, None)

    def save(self, checkpoint_path: str) -> None:
        for cell, study in self._studies.items():
            if cell not in self._samplers and self._spaces[cell]:
                self._samplers[cell] = pickle.dumps(study.sampler)
        state = {k: getattr(self, k) for k in ("_issued", "_trial_cell", "_trial_number", "_finished", "_samplers")}
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self._issued.update(state["_issued"])
        self._trial_cell, self._trial_number = state["_trial_cell"], state["_trial_number"]
        self._finished, self._samplers = state["_finished"], state["_samplers"]
        self._studies, self._live = {}, {}


class CellScheduler(FIFOScheduler):
    """One ``AsyncHyperBandScheduler`` per cell; trials meet only their own cell's rungs."""

    def __init__(self, metric: str, mode: str, time_attr: str, max_t: int, grace_period: int, reduction_factor: float):
        super().__init__()
        self._metric, self._mode = metric, mode
        self._options = dict(time_attr=time_attr, metric=metric, mode=mode, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
        self._cells: dict[str, AsyncHyperBandScheduler] = {}
        self._added: set[str] = set()

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _asha(self, controller, trial) -> AsyncHyperBandScheduler:
        cell = trial.config[CELL_KEY]
        if cell not in self._cells:
            self._cells[cell] = AsyncHyperBandScheduler(**self._options)
        asha = self._cells[cell]
        if trial.trial_id not in self._added:  # also covers trials restored after a restart
            self._added.add(trial.trial_id)
            asha.on_trial_add(controller, trial)
        return asha

    def on_trial_add(self, controller, trial) -> None:
        self._asha(controller, trial)

    def on_trial_result(self, controller, trial, result: dict) -> str:
        return self._asha(controller, trial).on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller, trial, result: dict) -> None:
        self._asha(controller, trial).on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial) -> None:
        self._asha(controller, trial).on_trial_remove(controller, trial)

    def on_trial_error(self, controller, trial) -> None:
        self._asha(controller, trial).on_trial_error(controller, trial)

    def debug_string(self) -> str:
        return f"CellScheduler: ASHA per cell over {len(self._cells)} cells"
