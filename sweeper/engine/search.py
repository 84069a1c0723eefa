"""Search and early stopping scoped to a cell, inside one Tune experiment.

One Tuner runs every cell's trials so that no slot idles while a cell finishes; ``CellSearcher``
gives each cell its own Ray ``OptunaSearch`` (TPE, seeded, its study in the run's SQLite storage)
and ``CellScheduler`` its own ASHA, so a trial is only ever compared with trials of its cell.
"""
from __future__ import annotations

import hashlib
import pickle

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

CELL_KEY = "cell"


def _cell_seed(seed: int, cell_id: str) -> int:
    return (seed * 1_000_003 + int(hashlib.sha256(cell_id.encode()).hexdigest()[:8], 16)) % 2**31


class CellSearcher(Searcher):
    """Round-robin over cells with budget left; each cell's own OptunaSearch proposes its configs."""

    def __init__(self, spaces: dict, budgets: dict[str, int], metric: str, mode: str, storage_url: str, seed: int):
        super().__init__(metric=metric, mode=mode)
        self._spaces, self._budgets = spaces, budgets
        self._storage_url, self._seed = storage_url, seed
        self._searchers: dict[str, OptunaSearch] = {}
        self._issued = {cell: 0 for cell in budgets}
        self._trial_cell: dict[str, str] = {}

    def _searcher(self, cell: str) -> OptunaSearch:
        if cell not in self._searchers:
            import optuna

            if not self._spaces[cell]:  # nothing to search: the fixed config is the only candidate
                self._searchers[cell] = None
                return None
            storage = optuna.storages.RDBStorage(self._storage_url)
            sampler = optuna.samplers.TPESampler(seed=_cell_seed(self._seed, cell))
            self._searchers[cell] = OptunaSearch(
                space=self._spaces[cell], metric=self.metric, mode=self.mode, sampler=sampler, study_name=cell, storage=storage
            )
        return self._searchers[cell]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        open_cells = [c for c in self._budgets if self._issued[c] < self._budgets[c]]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: (self._issued[c], list(self._budgets).index(c)))
        searcher = self._searcher(cell)
        params = searcher.suggest(trial_id) if searcher is not None else {}
        self._issued[cell] += 1
        self._trial_cell[trial_id] = cell
        return {**params, CELL_KEY: cell}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        import optuna

        searcher = self._searchers.get(self._trial_cell.get(trial_id))
        if searcher is not None and trial_id in searcher._ot_trials and self.metric in result:
            try:
                searcher.on_trial_result(trial_id, result)
            except optuna.exceptions.UpdateFinishedTrialError:
                # The study recorded this trial as finished just before the driver died, the
                # searcher checkpoint did not; the resumed trial's results add nothing to it.
                pass

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        searcher = self._searchers.get(self._trial_cell.get(trial_id))
        # A trial resumed after a driver restart may be unknown to the restored study: skip it.
        if searcher is not None and trial_id in searcher._ot_trials:
            searcher.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {
            "issued": self._issued,
            "trial_cell": self._trial_cell,
            "searchers": {c: (s.__dict__ if s is not None else None) for c, s in self._searchers.items()},
        }
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self._issued.update(state["issued"])
        self._trial_cell = state["trial_cell"]
        for cell, saved in state["searchers"].items():
            searcher = self._searcher(cell)
            if searcher is not None and saved is not None:
                searcher.__dict__.update(saved)


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
