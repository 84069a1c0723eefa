"""Live status of a phase: one line (cells done / in flight, trials, best so far, ETA).

A Tune callback, so it runs in the driver. It also appends every trial start / finish / error to
``trial_events.jsonl`` in the run folder: what resume checks and post-mortems read. A finish
names the node and device the trial's Train worker ran on; ``retry`` marks a trial Tune restarts
after a failure (e.g. its node was lost) and ``restart`` a trial whose Train job started its
epochs again (Train replaced its worker group).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ray.tune import Callback

from sweeper.engine.trial import trial_run

class Progress(Callback):
    def __init__(self, run_dir: Path, quiet: bool = False, every_s: float = 10.0, metric: str = "val_auroc"):
        self.run_dir, self.quiet, self.every_s, self.metric = Path(run_dir), quiet, every_s, metric
        self.events = self.run_dir / "trial_events.jsonl"
        self.phase, self.total, self.cells = "", 0, {}
        self._reset()

    def __setstate__(self, state: dict) -> None:
        # On --resume Tune restores this callback as pickled when the phase began: count the
        # trials that finished before from the events file, and time the ETA from now.
        self.__dict__.update(state)
        self._reset()
        for record in self._read_events():
            if record.get("phase") == self.phase and record.get("event") == "finished" and record["trial_id"] not in self.finished:
                self.finished[record["trial_id"]] = "finished"
                self.cell_done[record.get("cell")] = self.cell_done.get(record.get("cell"), 0) + 1
        self.finished_before = len(self.finished)

    def _read_events(self) -> list[dict]:
        if not self.events.exists():
            return []
        records = []
        for line in self.events.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line cut short by a killed driver
                continue
        return records

    def _reset(self):
        self.started = time.time()
        self.finished_before = 0
        self.finished: dict[str, str] = {}
        self.running: dict[str, str] = {}  # trial id → cell
        self.last: dict[str, dict] = {}  # trial id → its latest result's epoch, node and device
        self.cell_done: dict[str, int] = {}
        self.best = (float("-inf"), "")
        self._last_print = 0.0

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def start_phase(self, phase: str, total_trials: int, cells: dict[str, int]) -> None:
        self.phase, self.total, self.cells = phase, total_trials, cells
        self._reset()
        self.say(f"[{phase}] {len(cells)} cells, {total_trials} trials")

    def _log(self, kind: str, trial, **extra) -> None:
        config = trial_run(trial.config)
        record = {"time": time.time(), "phase": self.phase, "event": kind, "trial_id": trial.trial_id, "cell": config.get("cell"), **extra}
        with self.events.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _cell(self, trial) -> str:
        return trial_run(trial.config).get("cell", "?")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = self._cell(trial)
        self._log("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        previous = self.last.get(trial.trial_id)
        epoch = result.get("epoch")
        if previous and epoch is not None and previous.get("epoch") is not None and epoch <= previous["epoch"]:
            self._log("restart", trial, epoch=epoch, node=result.get("node_id"))
        self.last[trial.trial_id] = {"epoch": epoch, "node": result.get("node_id"), "device": result.get("device")}
        value = result.get(self.metric)
        if value is not None and value == value and value > self.best[0]:
            self.best = (float(value), self._cell(trial))
        self._maybe_print()

    def _finish(self, trial, status: str) -> None:
        self.running.pop(trial.trial_id, None)
        if trial.trial_id not in self.finished:
            self.finished[trial.trial_id] = status
            cell = self._cell(trial)
            self.cell_done[cell] = self.cell_done.get(cell, 0) + 1
        last = self.last.get(trial.trial_id, {})
        self._log(status, trial, node=last.get("node"), device=last.get("device"))
        self._maybe_print(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "error")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._log("retry", trial, node=self.last.get(trial.trial_id, {}).get("node"))

    def status_line(self) -> str:
        done_cells = sum(1 for c, n in self.cells.items() if self.cell_done.get(c, 0) >= n)
        started = set(self.running.values()) | {c for c in self.cells if self.cell_done.get(c, 0) > 0}
        in_flight = sum(1 for c in started if c in self.cells and self.cell_done.get(c, 0) < self.cells[c])
        elapsed = time.time() - self.started
        done = len(self.finished)
        done_now = done - self.finished_before
        eta = f"{elapsed / done_now * (self.total - done) / 60:.1f} min" if done_now > 0 else "?"
        best = f"{self.best[0]:.3f} ({self.best[1]})" if self.best[1] else "-"
        return (
            f"[{self.phase}] cells {done_cells}/{len(self.cells)} done, {in_flight} in flight | "
            f"trials {done}/{self.total} done, {len(self.running)} running | best {self.metric.replace('_', ' ')} {best} | "
            f"elapsed {elapsed / 60:.1f} min, ETA {eta}"
        )

    def _maybe_print(self, force: bool = False) -> None:
        now = time.time()
        if not self.quiet and (force or now - self._last_print >= self.every_s):
            self._last_print = now
            print(self.status_line(), file=sys.stdout, flush=True)
