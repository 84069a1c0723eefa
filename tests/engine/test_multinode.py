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
  synthetic: {n_stays: 300, seed: 0}
tasks: [ihm]
modality_subsets:
  explicit: [[discharge], [timeseries, demographics]]
methods:
  picme.supervised:
    fixed: {d: 16, lr: 2.0e-3, text_encoder: bag}
# Each cell's config as given (no tuning), 2 seeds: two runs of this spec must agree exactly.
# Five epochs: an inline trial (no Train start-up) must still be training when its node is killed.
budgets: {tune_trials: 0, max_epochs: 5, grace_period: 1, reduction_factor: 2, patience: 5}
final: {seeds: 2, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, trial_runtime: RUNTIME}
"""
CELLS = {"ihm__picme.supervised__discharge", "ihm__picme.supervised__timeseries+demographics"}
TRIALS_PER_RUN = 2 * 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "trial_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _alive_training_actors(dashboard: str, runtime: str) -> list[str]:
    """Node ids of the actors that train now (State API over HTTP; no Ray driver here): Ray Train
    workers under ``train``, Tune's function-trainable actors under ``inline``."""
    from ray.util.state import list_actors

    name = "RayTrainWorker" if runtime == "train" else "ImplicitFunc"
    actors = list_actors(address=dashboard, filters=[("class_name", "=", name), ("state", "=", "ALIVE")], raise_on_missing_output=False)
    return [a.node_id for a in actors]


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
    """The same sweep under each runtime; a worker node that hosts a training trial is killed once a
    trial has finished."""
    runtime = request.param
    run_dir = cluster["root"] / f"multinode-{runtime}" / "b"
    head = cluster["cluster"].head_node.node_id
    started = time.time()
    process = _sweeper(cluster, "b", runtime)
    killed, finished_at_kill = None, set()
    deadline = time.time() + 600
    while killed is None and process.poll() is None and time.time() < deadline:
        events = _events(run_dir)
        finished = {e["trial_id"] for e in events if e["event"] == "finished"}
        if finished:
            # Train: a node whose trial has just finished may still hold that trial's Train worker
            # while it tears down; killing it would interrupt nothing, so pick a node with no recent
            # finish. Inline: actors are reused, a node that just finished is training the next trial.
            just_done = {e.get("node") for e in events if e["event"] == "finished" and time.time() - e["time"] < 20} if runtime == "train" else set()
            busy = set(_alive_training_actors(cluster["dashboard"], runtime)) - {head} - just_done
            victim = next((n for n in cluster["workers"] if n.node_id in busy), None)
            if victim is not None:
                finished_at_kill = finished
                cluster["cluster"].remove_node(victim, allow_graceful=False)
                killed = victim.node_id
                cluster["workers"].remove(victim)
                cluster["workers"].append(cluster["cluster"].add_node(num_cpus=1, num_gpus=1))
                break
        time.sleep(0.5)
    output, _ = process.communicate(timeout=900)
    assert killed is not None, "no worker node was busy while the sweep ran: nothing was killed"
    assert process.returncode == 0, output.decode()[-4000:]
    events = _events(run_dir)
    return {"runtime": runtime, "run_dir": run_dir, "killed": killed, "finished_at_kill": finished_at_kill, "events": events, "wall_s": time.time() - started}


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
    assert retried, "the node kill interrupted no trial"
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
