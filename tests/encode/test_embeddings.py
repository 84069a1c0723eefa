"""The text-embedding cache: one encoder pass per stay and data snapshot, atomic entries."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sweeper.encode.embeddings import _frozen_encoder, entry_dir, last_forward_passes, text_embeddings
from sweeper.data.schema import StaysError, read_manifest
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.encode.text import DEFAULT_TEXT_MODEL, HFTextEncoder, text_model_id

MAX_LENGTH = 32


def _stays(path, seed):
    frame, manifest = generate(SynthConfig(n_stays=60, seed=seed))
    write_stays(frame, manifest, path, split_seed=0)
    return path


@pytest.fixture(scope="module")
def stays(tmp_path_factory):
    return _stays(tmp_path_factory.mktemp("emb") / "stays", seed=0)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _present(stays_dir, modality):
    table, _ = read_stays(stays_dir, columns=["stay_id", f"present_{modality}", f"{modality}_text"])
    frame = table.to_pandas()
    frame = frame[frame[f"present_{modality}"]].sort_values("stay_id")
    return frame["stay_id"].tolist(), frame[f"{modality}_text"].tolist()


def test_miss_encodes_then_hit_reads_with_zero_passes(stays, tmp_path):
    ids_expected, _ = _present(stays, "discharge")
    ids, vectors = text_embeddings(stays, "discharge", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=16)
    passes = last_forward_passes()
    assert passes == math.ceil(len(ids_expected) / 16) > 0
    assert list(ids) == ids_expected and vectors.shape == (len(ids_expected), 384) and vectors.dtype == np.float32

    _frozen_encoder.cache_clear()  # a fresh process state: nothing loaded, only the files on disk
    again_ids, again = text_embeddings(stays, "discharge", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=16)
    assert last_forward_passes() == 0
    np.testing.assert_array_equal(again_ids, ids)
    np.testing.assert_array_equal(again, vectors)

    folder = entry_dir(tmp_path, text_model_id(DEFAULT_TEXT_MODEL, None, MAX_LENGTH), read_manifest(stays).content_hash, "discharge")
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["n_stays"], meta["dim"], meta["forward_passes"]) == (len(ids), 384, passes)
    assert meta["data_hash"] == read_manifest(stays).content_hash
    assert pq.read_table(folder / "discharge.parquet").column_names == ["stay_id", "embedding"]


def test_other_max_length_or_other_data_is_a_miss(stays, tmp_path):
    text_embeddings(stays, "radiology", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    text_embeddings(stays, "radiology", max_length=16, cache_root=tmp_path, batch_size=64)
    assert last_forward_passes() > 0
    other = _stays(tmp_path / "other", seed=1)
    assert read_manifest(other).content_hash != read_manifest(stays).content_hash
    text_embeddings(other, "radiology", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    assert last_forward_passes() > 0


def test_stale_temp_folder_is_ignored(stays, tmp_path):
    folder = entry_dir(tmp_path, text_model_id(DEFAULT_TEXT_MODEL, None, MAX_LENGTH), read_manifest(stays).content_hash, "radiology")
    stale = folder.parent / ".radiology.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "radiology.parquet").write_bytes(b"half written")
    ids, vectors = text_embeddings(stays, "radiology", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    assert last_forward_passes() > 0 and len(ids) == len(vectors)
    assert folder.is_dir() and stale.is_dir()  # the stale one is neither read nor mistaken for an entry


def test_damaged_entry_is_recomputed(stays, tmp_path):
    first = text_embeddings(stays, "radiology", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    folder = entry_dir(tmp_path, text_model_id(DEFAULT_TEXT_MODEL, None, MAX_LENGTH), read_manifest(stays).content_hash, "radiology")
    (folder / "radiology.parquet").write_bytes(b"garbage")
    second = text_embeddings(stays, "radiology", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    assert last_forward_passes() > 0
    np.testing.assert_allclose(second[1], first[1], atol=1e-5)


def test_embedding_equals_encoder_pooled(stays, tmp_path):
    ids, vectors = text_embeddings(stays, "discharge", max_length=MAX_LENGTH, cache_root=tmp_path, batch_size=64)
    _, texts = _present(stays, "discharge")
    encoder = HFTextEncoder(DEFAULT_TEXT_MODEL, max_length=MAX_LENGTH)
    with torch.inference_mode():
        single = encoder.pooled([texts[5]]).numpy()[0]
    np.testing.assert_allclose(vectors[5], single, atol=1e-5)


def test_non_text_modality_is_refused(stays, tmp_path):
    with pytest.raises(StaysError, match="'cxr'"):
        text_embeddings(stays, "cxr", cache_root=tmp_path)
