"""Shared fixtures: a small synthetic cohort, a way to end a `sweeper run` and its local Ray, and an
in-memory session that runs the training loop without Ray (for fast unit tests of trainables)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def p12_dir() -> Path:
    """The real PhysioNet 2012 files (read-only; ``SWEEPER_P12_DIR`` overrides the location)."""
    path = Path(os.environ.get("SWEEPER_P12_DIR", SHARED_DATA / "physionet2012"))
    if not path.is_dir():
        pytest.fail(f"{path}: the PhysioNet 2012 files are missing (tests read them from ../shared/data)")
    return path


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

            from sweeper.loop.outputs import MODEL_FILE, PREDICTIONS_FILE

            path = Path(checkpoint_dir) / PREDICTIONS_FILE
            if path.exists():
                self.predictions = pq.read_table(path)
            model = Path(checkpoint_dir) / MODEL_FILE
            if model.exists():  # the checkpoint folder is temporary: keep the bytes
                self.model_bytes = model.read_bytes()
            import shutil
            import tempfile

            self.artifact = Path(tempfile.mkdtemp(prefix="artifact-"))  # a stage's whole checkpoint
            shutil.copytree(checkpoint_dir, self.artifact, dirs_exist_ok=True)

    def checkpoint(self):
        return None


@pytest.fixture
def in_memory_session():
    return InMemorySession


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


def edit_one(draw, raw, values):
    """For Hypothesis property tests: ``raw`` (a parsed JSON or YAML document, already a copy) with one
    value at any depth replaced by one drawn from ``values``, or one key removed."""
    from hypothesis import strategies as st

    node = raw
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return raw
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(values)
        return raw


def mutate_bytes(draw, valid: bytes, tokens: list[bytes]) -> bytes:
    """For Hypothesis property tests: ``valid`` with 1-4 edits, each a byte range deleted, duplicated, or
    replaced by one of ``tokens`` or by random bytes."""
    from hypothesis import strategies as st

    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        stop = draw(st.integers(start, min(len(data), start + 12)))
        kind = draw(st.sampled_from(["delete", "token", "bytes", "duplicate"]))
        if kind == "delete":
            data[start:stop] = b""
        elif kind == "token":
            data[start:stop] = draw(st.sampled_from(tokens))
        elif kind == "bytes":
            data[start:stop] = draw(st.binary(max_size=8))
        else:
            data[start:start] = data[start:stop]
    return bytes(data)
