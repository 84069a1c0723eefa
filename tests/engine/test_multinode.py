"""A real multi-node Ray cluster on this machine: a head and two worker nodes (separate raylets on
loopback, started with ``ray.cluster_utils.Cluster``), the workers declaring one fake GPU each.

`sweeper run --address` attaches to it twice with the same spec and seed:
- run ``a`` runs undisturbed: its GPU-requesting trials land on both worker nodes and train on
  CPU there (no CUDA behind the declared GPUs);
- run ``b`` loses a worker node mid-sweep (SIGKILL of all its processes, the way a preempted
  instance goes); a replacement node joins, as an autoscaler would add one. The sweep completes,
  the interrupted trials are retried (Tune's FailureConfig) and no finished trial runs again.
  Run ``b`` runs once per trial runtime: ``train`` (a Ray Train job per trial, as run ``a``) and
  ``inline`` (the loop in the Tune trial actor).
Every run must give identical final metrics: determinism across nodes, retries and runtimes.

No shared filesystem is assumed: the driver reads the stays and hands them to Ray Data as blocks in
the object store, and trials send predictions back through Train's storage. The pytest process never
connects to the cluster as a Ray driver; it reads the cluster's state over the dashboard's HTTP API.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPEC = """
name: multinode-RUNTIME
seed: 0
data:
  synthetic: {n_stays: 1500, seed: 0}
tasks: [ihm]
modality_subsets:
  explicit: [[discharge], [timeseries, demographics]]
methods:
  picme.supervised:
    fixed: {d: 16, lr: 2.0e-3, batch_size: 4, text_encoder: bag}
# Each cell's config as given (no tuning), 2 seeds: two runs of this spec must agree exactly.
# 32 epochs of small batches (about 0.5 s each here), no early stop: a node is killed while a trial
# on it still has at least 16 epochs to go, under either runtime. The driver sees results in bursts a
# few seconds apart, so a trial must last well beyond that (with 300 stays it lasted about 1 s and
# was often done before any of its results reached the driver).
budgets: {tune_trials: 0, max_epochs: 32, grace_period: 1, reduction_factor: 2, patience: 32}
final: {seeds: 2, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, trial_runtime: RUNTIME}
"""
CELLS = {"ihm__picme.supervised__discharge", "ihm__picme.supervised__timeseries+demographics"}
TRIALS_PER_RUN = 2 * 2
MAX_EPOCHS, EPOCHS_LEFT_AT_KILL = 32, 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "trial_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _training_mid_epochs(run_dir: Path, finished: set[str]) -> dict[str, str]:
    """Trials that have reported and still have at least EPOCHS_LEFT_AT_KILL epochs to go: trial id ->
    the node its loop runs on (Tune's result files of the final phase, written by the driver)."""
    mid = {}
    for result in (run_dir / "final").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if rows and rows[-1]["trial_id"] not in finished and not rows[-1].get("done") and rows[-1]["epoch"] <= MAX_EPOCHS - EPOCHS_LEFT_AT_KILL:
            mid[rows[-1]["trial_id"]] = rows[-1]["node_id"]
    return mid


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    saved = dict(os.environ)
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the sweeper subprocesses inherit it
    port = _free_port()
    started = time.time()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port},
    )
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    root = tmp_path_factory.mktemp("multinode")
    for runtime in ("train", "inline"):
        (root / f"multinode-{runtime}.yaml").write_text(SPEC.replace("RUNTIME", runtime))
    try:
        yield {
            "cluster": cluster, "workers": workers, "dashboard": f"http://127.0.0.1:{port}", "root": root,
            "start_s": time.time() - started,
        }
    finally:
        cluster.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _sweeper(cluster: dict, run_name: str, runtime: str) -> subprocess.Popen:
    args = ["run", str(cluster["root"] / f"multinode-{runtime}.yaml"), "--address", cluster["cluster"].address, "--results", str(cluster["root"]), "--run-name", run_name, "--quiet"]
    return subprocess.Popen([sys.executable, "-m", "sweeper.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def run_a(cluster):
    started = time.time()
    process = _sweeper(cluster, "a", "train")
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output.decode()[-4000:]
    return {"run_dir": cluster["root"] / "multinode-train" / "a", "wall_s": time.time() - started}


@pytest.fixture(scope="module", params=["train", "inline"])
def run_b(request, cluster, run_a):
    """The same sweep under each runtime. A worker node is killed once a trial on it has reported and
    still has epochs to go; the replacement node joins only after Tune has seen the failure."""
    runtime = request.param
    run_dir = cluster["root"] / f"multinode-{runtime}" / "b"
    started = time.time()
    process = _sweeper(cluster, "b", runtime)
    killed, finished_at_kill, interrupted = None, set(), set()
    deadline = time.time() + 600
    while killed is None and process.poll() is None and time.time() < deadline:
        finished = {e["trial_id"] for e in _events(run_dir) if e["event"] == "finished"}
        mid = _training_mid_epochs(run_dir, finished)
        victim = next((n for n in cluster["workers"] if n.node_id in mid.values()), None)
        if victim is not None:
            finished_at_kill, interrupted = finished, {t for t, node in mid.items() if node == victim.node_id}
            cluster["cluster"].remove_node(victim, allow_graceful=False)
            killed = victim.node_id
            cluster["workers"].remove(victim)
            break
        time.sleep(0.1)
    assert killed is not None, f"no trial was seen training on a worker node:\n{process.communicate(timeout=900)[0].decode()[-3000:]}"
    seen = time.time() + 300  # Tune sees the failure: the interrupted trial is retried (or Train restarts its epochs)
    while time.time() < seen and process.poll() is None and not {e["trial_id"] for e in _events(run_dir) if e["event"] in ("retry", "restart")} & interrupted:
        time.sleep(0.2)
    cluster["workers"].append(cluster["cluster"].add_node(num_cpus=1, num_gpus=1))  # as an autoscaler would add one
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output.decode()[-4000:]
    events = _events(run_dir)
    return {"runtime": runtime, "run_dir": run_dir, "killed": killed, "interrupted": interrupted, "finished_at_kill": finished_at_kill, "events": events,
            "wall_s": time.time() - started}


def _final_metrics(run_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((run_dir / "predictions").glob("*/seed-*.parquet")):
        table = pd.read_parquet(path).sort_values("stay_id")
        rows.append({"cell": path.parent.name, "seed": path.stem, "stays": table["stay_id"].tolist(), "scores": np.round(np.stack(table["score"]), 6).tolist()})
    return pd.DataFrame(rows)


def test_trials_spread_over_worker_nodes_and_gpu_trials_train_on_cpu(cluster, run_a):
    finished = [e for e in _events(run_a["run_dir"]) if e["event"] == "finished"]
    assert len(finished) == TRIALS_PER_RUN
    nodes = {e["node"] for e in finished}
    worker_ids = {n.node_id for n in cluster["workers"]}
    # GPU-requesting trials can only be placed where GPUs are declared: the two worker nodes.
    assert nodes == worker_ids, f"trials ran on {nodes}, worker nodes are {worker_ids}"
    # torch.cuda.is_available() is false there, so they trained on CPU.
    assert {e["device"] for e in finished} == {"cpu"}
    board = pd.read_csv(run_a["run_dir"] / "leaderboard.csv")
    assert set(board["cell_id"]) == CELLS and (board["n_seeds"] == 2).all()
    print(f"\nmulti-node: cluster start {cluster['start_s']:.0f} s, sweep a {run_a['wall_s']:.0f} s ({len(finished)} trials)")


def test_no_task_on_another_node_opens_the_stays(cluster, run_a):
    """The driver reads the shards; other nodes only ever get Arrow blocks through the object store."""
    from ray.util.state import list_tasks

    head = cluster["cluster"].head_node.node_id
    tasks = list_tasks(address=cluster["dashboard"], limit=10000, raise_on_missing_output=False)
    assert any(t.node_id != head for t in tasks), "the State API recorded no task on a worker node"
    readers = [t.name for t in tasks if t.node_id != head and any(k in t.name for k in ("Read", "FooterReader", "ListFiles", "Parquet"))]
    assert not readers, f"file reads ran on worker nodes: {sorted(set(readers))}"


def test_node_kill_retries_the_interrupted_trials_and_completes(run_b):
    events = run_b["events"]
    finished = [e for e in events if e["event"] == "finished"]
    assert len({e["trial_id"] for e in finished}) == TRIALS_PER_RUN
    retried = {e["trial_id"] for e in events if e["event"] in ("retry", "restart")}
    assert run_b["interrupted"] <= retried, f"the trials training on the killed node ({run_b['interrupted']}) were not retried ({retried})"
    assert run_b["killed"] not in {e["node"] for e in finished if e["trial_id"] in retried}
    board = pd.read_csv(run_b["run_dir"] / "leaderboard.csv")
    assert set(board["cell_id"]) == CELLS and (board["n_seeds"] == 2).all()
    for cell in CELLS:
        assert sorted(p.name for p in (run_b["run_dir"] / "predictions" / cell).glob("*.parquet")) == ["seed-0.parquet", "seed-1.parquet"]
    print(f"\nnode kill ({run_b['runtime']}): {len(retried)} trial(s) retried; sweep b {run_b['wall_s']:.0f} s")


def test_no_finished_trial_ran_again_after_the_kill(run_b):
    kill_index = next((i for i, e in enumerate(run_b["events"]) if e["event"] in ("retry", "restart")), None)
    assert kill_index is not None, "the node kill interrupted no trial"
    started_after = {e["trial_id"] for e in run_b["events"][kill_index:] if e["event"] == "start"}
    assert not started_after & run_b["finished_at_kill"]


def test_same_spec_and_seed_give_identical_final_metrics(run_a, run_b):
    """Across nodes, and with a retried trial: every seed's test scores and the leaderboard agree."""
    pd.testing.assert_frame_equal(_final_metrics(run_a["run_dir"]), _final_metrics(run_b["run_dir"]))
    columns = [c for c in pd.read_csv(run_a["run_dir"] / "leaderboard.csv").columns if c.startswith(("auroc_", "auprc_", "brier_"))]
    board_a = pd.read_csv(run_a["run_dir"] / "leaderboard.csv").set_index("cell_id").sort_index()[columns]
    board_b = pd.read_csv(run_b["run_dir"] / "leaderboard.csv").set_index("cell_id").sort_index()[columns]
    pd.testing.assert_frame_equal(board_a, board_b)
