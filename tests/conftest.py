"""Shared fixtures: a small synthetic cohort, one real local Ray cluster per session, and an
in-memory session that runs the training loop without Ray (for fast unit tests of trainables)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synth_stays(tmp_path_factory) -> Path:
    """600 synthetic stays with the default planted signal, written once per session."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "stays"
    frame, manifest = generate(SynthConfig(n_stays=600, seed=0))
    write_stays(frame, manifest, out, split_seed=0)
    return out


class _TableBatches:
    def __init__(self, table):
        self.table = table

    def iter_batches(self, batch_size: int, batch_format: str = "numpy"):
        for start in range(0, len(self.table), batch_size):
            part = self.table.slice(start, batch_size)
            yield {name: part[name].to_numpy(zero_copy_only=False) for name in part.column_names}


class InMemorySession:
    """``run_training``'s session over stays read with pyarrow: no Ray, results kept in a list."""

    def __init__(self, stays_dir: Path):
        from sweeper.data.stays import read_stays

        self.tables = {split: read_stays(stays_dir, split)[0] for split in ("train", "val", "test")}
        self.reports: list[dict] = []
        self.checkpoints: list[str] = []

    def dataset(self, split):
        return _TableBatches(self.tables[split])

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            import pyarrow.parquet as pq

            from sweeper.tune.worker import PREDICTIONS_FILE

            path = Path(checkpoint_dir) / PREDICTIONS_FILE
            if path.exists():
                self.predictions = pq.read_table(path)

    def checkpoint(self):
        return None


@pytest.fixture
def in_memory_session():
    return InMemorySession


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """One real local Ray head for the whole session (3 logical CPUs: 2 trial slots + headroom).

    Started as its own process group so teardown ends exactly this cluster's processes.
    """
    from sweeper.tune.runner import ray_env_vars

    port, dashboard_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    # RAY_ADDRESS in every cluster process: Train's placement-group cleaner asks the State API
    # for "the" cluster and dies when it finds more than one Ray on the machine.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": address, **ray_env_vars(local=True)}
    temp_dir = f"/tmp/ray-sweeper-tests-{os.getpid()}"
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}", "--num-cpus=3",
         # The dashboard's State API is how Train's placement-group cleaner sees that a stopped
         # trial's controller died; without it the PGs of ASHA-stopped trials leak.
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(ray.cluster_resources().get('CPU'))"],
            env=env, capture_output=True, text=True,
        )
        if probe.returncode == 0:
            break
        time.sleep(2)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        raise RuntimeError("local Ray head did not start")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    kill_session(head.pid)


def kill_session(session_id: int) -> None:
    """SIGKILL every process of a session: Ray workers leave the process group, not the session."""
    subprocess.run(["pkill", "-9", "-s", str(session_id)], check=False)


@pytest.fixture(scope="session")
def session_killer():
    return kill_session


def assert_auroc_beats(scores, labels, floor: float):
    from sklearn.metrics import roc_auc_score

    auroc = roc_auc_score(np.asarray(labels), np.asarray(scores))
    assert auroc > floor, f"AUROC {auroc:.3f} not above {floor}"
    return auroc
