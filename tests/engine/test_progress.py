"""The live status line and the trial-event log (a Tune callback, driven here by hand)."""
from __future__ import annotations

import dataclasses
import json

from sweeper.engine.progress import Progress


@dataclasses.dataclass
class Trial:  # the fields the callback reads from a Tune trial
    trial_id: str
    config: dict


def test_status_line_counts_cells_trials_and_best(tmp_path):
    progress = Progress(tmp_path, quiet=True, metric="val_auprc")
    progress.start_phase("tune", total_trials=3, cells={"a": 2, "b": 1})
    a1, a2, b1 = Trial("a1", {"cell": "a"}), Trial("a2", {"cell": "a"}), Trial("b1", {"run": {"cell": "b", "seed": 0}})
    progress.on_trial_start(0, [], a1)
    progress.on_trial_start(0, [], a2)
    assert "cells 0/2 done, 1 in flight | trials 0/3 done, 2 running" in progress.status_line()
    progress.on_trial_result(0, [], a1, {"val_auprc": 0.4, "val_auroc": 0.9})
    progress.on_trial_complete(0, [], a1)
    progress.on_trial_start(0, [], b1)
    assert "cells 0/2 done, 2 in flight | trials 1/3 done, 2 running" in progress.status_line()
    assert "best val auprc 0.400 (a)" in progress.status_line()
    progress.on_trial_error(0, [], a2)
    progress.on_trial_complete(0, [], b1)
    line = progress.status_line()
    assert "cells 2/2 done, 0 in flight | trials 3/3 done, 0 running" in line and "ETA 0.0 min" in line
    events = [json.loads(x) for x in (tmp_path / "trial_events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["trial_id"], e["cell"]) for e in events] == [
        ("start", "a1", "a"), ("start", "a2", "a"), ("finished", "a1", "a"), ("start", "b1", "b"), ("error", "a2", "a"), ("finished", "b1", "b"),
    ]


def test_a_restored_callback_counts_the_trials_finished_before_the_resume(tmp_path):
    """Tune.restore hands back the callback pickled when the phase began: on --resume the status
    line must count what finished before (from the events) and time its ETA from the resume."""
    import pickle

    progress = Progress(tmp_path, quiet=True)
    progress.start_phase("final", total_trials=4, cells={"a": 2, "b": 2})
    pickled = pickle.dumps(progress)  # what Tune saved when the phase began
    a1, a2, b1 = Trial("a1", {"cell": "a"}), Trial("a2", {"cell": "a"}), Trial("b1", {"cell": "b"})
    for trial in (a1, a2, b1):
        progress.on_trial_start(0, [], trial)
    progress.on_trial_complete(0, [], a1)
    progress.on_trial_complete(0, [], a2)
    progress.on_trial_error(0, [], b1)  # re-run on resume
    progress.started -= 3600  # the first run took an hour

    restored = pickle.loads(pickled)
    assert "cells 1/2 done, 0 in flight | trials 2/4 done, 0 running" in restored.status_line()
    assert "ETA ?" in restored.status_line()  # nothing finished since the resume yet
    restored.started -= 60
    restored.on_trial_start(0, [], b1)
    restored.on_trial_complete(0, [], b1)
    line = restored.status_line()
    assert "cells 1/2 done, 1 in flight | trials 3/4 done" in line
    assert "elapsed 1.0 min, ETA 1.0 min" in line  # one trial a minute since the resume, one left
