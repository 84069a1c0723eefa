"""End to end on a real local Ray cluster: `sweeper run smoke`, killed mid-sweep and resumed.

One smoke run per trial runtime serves several tests (module fixture). As a user runs it, `sweeper run` starts its
own local Ray. It is stopped twice once a few trials have finished: by a stop signal to the driver
(SIGTERM, as `timeout`, SLURM or a preemption sends it, under ``inline``; Ctrl-C's SIGINT under ``train``),
then, resumed, by a SIGKILL of the whole driver (its Ray included); a second
`sweeper run smoke --resume` finishes the sweep on a fresh local Ray. No other Ray instance
may run meanwhile (Train's placement-group cleaner fails when it finds two on one machine), and the
pytest process itself never connects to these clusters.
"""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMOKE_CELLS = {
    "ihm__picme.supervised__discharge+radiology",
    "ihm__picme.supervised__timeseries+demographics",
}


def _sweeper(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "sweeper.cli", *args], start_new_session=True, **kwargs)


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "trial_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for_finished(run_dir: Path, process, count: int, running: bool = False) -> None:
    """Until `count` trials finished (and, with `running`, another one is in flight)."""
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        events = _events(run_dir)
        finished = {e["trial_id"] for e in events if e["event"] == "finished"}
        if len(finished) >= count and (not running or {e["trial_id"] for e in events if e["event"] == "start"} - finished):
            return
        time.sleep(1)
    assert process.poll() is None, f"the run ended before it could be stopped:\n{process.stdout.read().decode()[-3000:]}"


@pytest.fixture(scope="module", params=["inline", "train"])
def resumed_smoke(request, tmp_path_factory, session_killer):
    """The same smoke sweep stopped and resumed under each trial runtime (a profile of smoke.yaml)."""
    kill_session = session_killer
    results = tmp_path_factory.mktemp("results")
    run_dir = results / "smoke" / "r1"
    common = ["run", "smoke", "--profile", request.param, "--results", str(results), "--run-name", "r1", "--quiet"]
    # 1. A stop signal: Tune saves its state, the driver says how to go on.
    stop_signal = signal.SIGTERM if request.param == "inline" else signal.SIGINT
    first = _sweeper(common, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_finished(run_dir, first, 1, running=True)
    first.send_signal(stop_signal)
    try:
        interrupted_output, _ = first.communicate(timeout=300)
    finally:
        kill_session(first.pid)
    at_interrupt = _events(run_dir)
    leaderboard_at_interrupt = (run_dir / "leaderboard.csv").exists()
    # 2. --resume, then SIGKILL of the driver and its Ray (a crash) once one more trial finished.
    second = _sweeper(common + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_finished(run_dir, second, len({e["trial_id"] for e in at_interrupt if e["event"] == "finished"}) + 1)
    killed_at = time.time()
    kill_session(second.pid)
    second.wait()
    before = _events(run_dir)
    finished_before = {e["trial_id"] for e in before if e["event"] == "finished"}
    # 3. --resume finishes the sweep.
    started = time.time()
    third = _sweeper(common + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = third.communicate(timeout=1200)
    finally:
        kill_session(third.pid)
    assert third.returncode == 0, output.decode()[-4000:]
    after = _events(run_dir)[len(before):]
    finished_at = {e["trial_id"]: e["time"] for e in before if e["event"] == "finished"}
    return {"runtime": request.param, "run_dir": run_dir, "finished_before": finished_before, "finished_at": finished_at, "killed_at": killed_at,
            "after": after, "resume_wall_s": time.time() - started,
            "interrupt": {"signal": stop_signal, "returncode": first.returncode, "output": interrupted_output.decode(), "leaderboard": leaderboard_at_interrupt}}


def test_a_stop_signal_stops_with_one_line_saying_how_to_go_on_and_writes_no_outputs(resumed_smoke):
    interrupt = resumed_smoke["interrupt"]
    assert interrupt["returncode"] == 128 + interrupt["signal"], interrupt["output"][-3000:]
    last = interrupt["output"].strip().splitlines()[-1]
    assert last.startswith("sweeper: interrupted: ") and "--resume --run-name r1" in last, last
    assert f"({interrupt['signal'].name})" in last, last
    # No Python traceback and no native stack trace from Ray's own SIGTERM handler.
    assert "Traceback" not in interrupt["output"] and "Stack trace" not in interrupt["output"] and "*** " not in interrupt["output"], interrupt["output"][-3000:]
    assert not interrupt["leaderboard"]  # no leaderboard from a part of the trials


def test_leaderboard_has_one_row_per_cell_with_filled_intervals(resumed_smoke):
    board = pd.read_csv(resumed_smoke["run_dir"] / "leaderboard.csv")
    assert set(board["cell_id"]) == SMOKE_CELLS and len(board) == 2
    assert (board["n_seeds"] == 2).all()
    for metric in ("auroc", "auprc", "macro_f1", "accuracy", "brier"):
        for suffix in ("mean", "std", "ci_low", "ci_high", "boot_low", "boot_high"):
            values = board[f"{metric}_{suffix}"]
            assert values.notna().all() and all(math.isfinite(v) for v in values), f"{metric}_{suffix}"
        assert (board[f"{metric}_boot_low"] <= board[f"{metric}_boot_high"]).all()
    assert (board["auroc_mean"] > 0.5).any()  # something was learned
    markdown = (resumed_smoke["run_dir"] / "leaderboard.md").read_text()
    assert "discharge+radiology" in markdown and "Δ vs #1" in markdown
    top, other = board.iloc[0], board.iloc[1]  # each cell against the top one, on the stays both saw
    assert top["vs_best"] == 0 and other["vs_best_cell"] == top["cell_id"]
    shared = _seed_aurocs_on_shared_stays(resumed_smoke["run_dir"] / "predictions", other["cell_id"], top["cell_id"])
    assert other["vs_best_n_stays"] == shared["n"] <= min(board["n_test_stays"])
    assert other["vs_best"] == pytest.approx(shared["difference"])
    assert other["vs_best_ci_low"] <= other["vs_best"] <= other["vs_best_ci_high"] and 0 < other["vs_best_p"] <= 1
    report = (resumed_smoke["run_dir"] / "report.html").read_text()
    assert report.count('<img alt="plot"') == 1 and "discharge+radiology" in report


def _seed_aurocs_on_shared_stays(predictions: Path, cell_a: str, cell_b: str) -> dict:
    """Seed-mean AUROC of a minus that of b, both on the test stays both cells predicted (sklearn)."""
    from sklearn.metrics import roc_auc_score

    frames = {c: [pd.read_parquet(f) for f in sorted((predictions / c).glob("seed-*.parquet"))] for c in (cell_a, cell_b)}
    shared = set(frames[cell_a][0]["stay_id"]) & set(frames[cell_b][0]["stay_id"])

    def mean_auroc(cell):
        kept = [f[f["stay_id"].isin(shared)] for f in frames[cell]]
        return sum(roc_auc_score(np.concatenate(k["label"].to_list()), np.concatenate(k["score"].to_list())) for k in kept) / len(kept)

    return {"n": len(shared), "difference": mean_auroc(cell_a) - mean_auroc(cell_b)}


def test_resume_reran_no_finished_trial(resumed_smoke):
    """Train-job trials: none that finished before the kill runs again (Tune saves its state at every
    step). Inline trials: Tune saves every 5 s (phases.checkpoint_period), so only a trial that
    finished in the last 5 s before the crash may run again."""
    restarted = {e["trial_id"] for e in resumed_smoke["after"] if e["event"] == "start"}
    again = restarted & resumed_smoke["finished_before"]
    if resumed_smoke["runtime"] == "train":
        assert not again
    else:
        assert all(resumed_smoke["killed_at"] - resumed_smoke["finished_at"][t] < 5 + 2 for t in again), again
    print(f"\nresume: {len(resumed_smoke['finished_before'])} trials finished before the kill, "
          f"{len(restarted & resumed_smoke['finished_before'])} of them re-run; {len(restarted)} started on resume")


def test_every_cell_has_all_its_seeds_and_predictions(resumed_smoke):
    predictions = resumed_smoke["run_dir"] / "predictions"
    for cell in SMOKE_CELLS:
        files = sorted((predictions / cell).glob("seed-*.parquet"))
        assert [f.name for f in files] == ["seed-0.parquet", "seed-1.parquet"]
        table = pd.read_parquet(files[0])
        assert list(table.columns) == ["stay_id", "label", "score"] and len(table) > 10


def test_the_inline_profile_tuned_in_waves_of_whole_cells(resumed_smoke):
    """The inline profile caps a tune experiment at 2 trials: two experiments, one cell each, both
    stopped or killed and resumed on the way, every trial of a cell in its wave's folder."""
    if resumed_smoke["runtime"] != "inline":
        pytest.skip("the train profile runs its tune phase as one experiment")
    cells = {}
    for wave in ("tune", "tune-2"):
        configs = [json.loads(line)["config"] for f in (resumed_smoke["run_dir"] / wave).glob("*/result.json")
                   for line in f.read_text().splitlines()[:1] if line.strip()]
        assert len(configs) == 2, wave
        cells[wave] = {c["cell"] for c in configs}
    assert all(len(c) == 1 for c in cells.values()) and cells["tune"] | cells["tune-2"] == SMOKE_CELLS
    assert not (resumed_smoke["run_dir"] / "tune-3").exists()


def test_one_optuna_study_per_cell(resumed_smoke):
    import optuna

    from sweeper.engine.search import JOURNAL_FILE, open_storage

    storage = open_storage(str(resumed_smoke["run_dir"] / JOURNAL_FILE))
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(studies) == SMOKE_CELLS
    assert all(s.n_trials >= 1 for s in studies.values())


def test_tensorboard_event_files(resumed_smoke):
    board = resumed_smoke["run_dir"] / "tensorboard"
    for part in ("tune", "final", "hparams"):
        assert list((board / part).rglob("events.out.tfevents.*")), part
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seed_dir = next((board / "final").glob("*/seed-0"))
    events = EventAccumulator(str(seed_dir))
    events.Reload()
    assert "val_auroc" in events.Tags()["scalars"]


ASHA_SPEC = """
name: asha
seed: 0
data: {path: STAYS}
tasks: [ihm]
modality_subsets:
  explicit: [[discharge], [timeseries]]
methods:
  picme.supervised:
    search: {lr: {loguniform: [3.0e-4, 3.0e-3]}}
    fixed: {d: 16, text_encoder: bag}
budgets: {tune_trials: 4, max_epochs: 4, grace_period: 1, reduction_factor: 2, patience: 4}
final: {seeds: 1}
resources: {cpus_per_trial: 1}
"""
MARKER = b"zqxmarker"


@pytest.fixture(scope="module")
def asha_run(tmp_path_factory, session_killer):
    """A sweep with a pure-noise time series cell beside a discharge-note cell whose notes each carry
    a marker word; runs after the resume tests, as its own `sweeper run` (its own local Ray)."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("asha")
    frame, manifest = generate(SynthConfig(n_stays=400, seed=1, strengths={**SynthConfig().strengths, "timeseries": 0.0}))
    has_note = frame["discharge_text"].notna()
    frame.loc[has_note, "discharge_text"] = [f"{text} {MARKER.decode()}{i:05d}" for i, text in enumerate(frame.loc[has_note, "discharge_text"])]
    write_stays(frame, manifest, root / "stays")
    spec = root / "asha.yaml"
    spec.write_text(ASHA_SPEC.replace("STAYS", str(root / "stays")))
    run = _sweeper(["run", str(spec), "--results", str(root), "--run-name", "r"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = run.communicate(timeout=900)
    finally:
        session_killer(run.pid)
    assert run.returncode == 0, output.decode()[-4000:]
    return {"run_dir": root / "asha" / "r", "output": output, "ray_logs": Path("/tmp/ray/session_latest/logs").resolve()}


def test_asha_does_not_starve_a_weak_cell(asha_run):
    """A cell of one pure-noise modality gets the rungs its own ASHA gives, whatever the strong cell does."""
    run_dir = asha_run["run_dir"]
    epochs: dict[str, list[int]] = {}
    for result_file in (run_dir / "tune").glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if rows:
            epochs.setdefault(rows[-1]["config"]["cell"], []).append(max(int(r["epoch"]) for r in rows))
    weak = epochs["ihm__picme.supervised__timeseries"]
    assert len(weak) == 4 and min(weak) >= 1  # the whole budget ran, each trial to at least the grace period
    assert max(weak) >= 2  # at least the top of its own first rung went on
    assert len(epochs["ihm__picme.supervised__discharge"]) == 4
    best = json.loads((run_dir / "best_configs.json").read_text())
    assert set(best) == set(epochs)


def test_no_note_text_in_any_output_log_or_study(asha_run):
    """Notes are read by the trials (the discharge cell learns from them), yet no marker word reaches
    the console, a result file, TensorBoard, the Optuna study, or any log of the Ray session."""
    board = pd.read_csv(asha_run["run_dir"] / "leaderboard.csv").set_index("subset")
    assert board.loc["discharge", "auroc_mean"] > 0.7  # the notes were really used
    assert MARKER not in asha_run["output"]
    searched = 0
    for folder in (asha_run["run_dir"], asha_run["ray_logs"]):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                searched += 1
                assert MARKER not in path.read_bytes(), path
    assert searched > 20
