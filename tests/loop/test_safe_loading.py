"""Torch files that may come from someone else load with ``weights_only=True``: a trial checkpoint
and a ``transfer_from`` model.pt. A crafted pickle is refused in one line, before its code runs;
everything sweeper saves itself still loads."""
from __future__ import annotations

import pathlib
import pickle

import pytest
import torch

from sweeper.data.schema import read_manifest
from sweeper.loop.outputs import STATE_FILE
from sweeper.loop.training import run_training
from sweeper.safeload import UnsafeFileError, load_weights
from trainables import registry


class _Payload:
    """What an attacker's pickle does on load: here, create a file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _Checkpoint:
    def __init__(self, folder):
        self.folder = folder

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(str(self.folder))


def _assert_refused(err, path, what, marker):
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{what} {path}: refused") and "(Unsupported " in message
    assert not marker.exists()  # its code never ran


def test_a_crafted_pickle_is_refused_in_one_line_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    for name, write in (("torch.pt", lambda p: torch.save({"state_dict": {}, "x": _Payload(marker)}, p)),
                        ("plain.pkl", lambda p: p.write_bytes(pickle.dumps({"x": _Payload(marker)})))):
        path = tmp_path / name
        write(path)
        with pytest.raises(UnsafeFileError) as err:
            load_weights(path, "some file")
        _assert_refused(err, path, "some file", marker)
    for name, content, says in (("junk.pt", b"not a torch file", "refused"), ("empty.pt", b"", "not a readable torch file")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnsafeFileError, match=f"some file .*{name}: {says}") as err:
            load_weights(tmp_path / name, "some file")
        assert "\n" not in str(err.value)


def _config(stays, **extra):
    return {**registry.get("picme.supervised").defaults, "method": "picme.supervised", "task": "ihm", "seed": 0,
            "modalities": ["timeseries", "demographics"], "max_epochs": 3, "patience": 3, "d": 16, "lr": 2e-3, "batch_size": 64,
            "manifest": read_manifest(stays), "checkpoint_every": 1, "warmup_steps": 5, **extra}


def test_a_trial_checkpoint_is_weights_only_and_a_crafted_one_is_refused(synth_stays, in_memory_session, tmp_path):
    first = in_memory_session(synth_stays)
    run_training(_config(synth_stays), first)
    state = torch.load(first.artifact / STATE_FILE, weights_only=True)  # what sweeper saved loads as weights only
    assert state["epoch"] == 2 and isinstance(state["best_score"], float) and state["scheduler"] is not None

    resumed = in_memory_session(synth_stays)
    resumed.checkpoint = lambda: _Checkpoint(first.artifact)
    run_training(_config(synth_stays), resumed)
    assert [r["epoch"] for r in resumed.reports] == [3]

    marker, crafted = tmp_path / "pwned", tmp_path / "crafted"
    crafted.mkdir()
    torch.save({**state, "best_state": _Payload(marker)}, crafted / STATE_FILE)
    attacked = in_memory_session(synth_stays)
    attacked.checkpoint = lambda: _Checkpoint(crafted)
    with pytest.raises(UnsafeFileError) as err:
        run_training(_config(synth_stays), attacked)
    _assert_refused(err, crafted / STATE_FILE, "trial checkpoint", marker)
    assert attacked.reports == []


def test_transfer_from_refuses_a_crafted_model_file(synth_stays, tmp_path):
    from sweeper.data.inputs import token_vocab
    from sweeper.data.loading import StaysCollate
    from trainables.medfuse import MedFuse

    manifest = read_manifest(synth_stays)
    vocab = token_vocab(StaysCollate(manifest, ["timeseries", "demographics"], "ihm", inputs="tokens"))
    config = {**registry.get("medfuse").defaults, "d": 16, "heads": 1, "layers": 1}
    export = MedFuse(config, {"tokens": vocab}, 1).export()
    torch.save(export, tmp_path / "model.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["feature_names"] == list(vocab.features)
    MedFuse({**config, "transfer_from": str(tmp_path / "model.pt")}, {"tokens": vocab}, 1)  # its own export loads

    marker = tmp_path / "pwned"
    torch.save({**export, "feature_names": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError) as err:
        MedFuse({**config, "transfer_from": str(tmp_path / "evil.pt")}, {"tokens": vocab}, 1)
    _assert_refused(err, tmp_path / "evil.pt", "transfer_from", marker)
