"""Embedding cache: a frozen extractor (a text encoder, any expert) runs once per stay, config and data snapshot.

Layout: ``<cache_root>/<encoder id>-<data hash[:16]>/<modality>/`` holds ``<modality>.parquet``
(``stay_id`` str, ``embedding`` fixed_size_list<float32>, sorted by ``stay_id``, present notes only)
and ``meta.json`` (encoder id, config, full data hash, n stays, dim, created time, forward passes).
The encoder id (``sweeper.encode.text.text_model_id``, ``sweeper.encode.experts.expert_id``) already
hashes what changes the extractor's output; the data hash is the stays manifest's ``content_hash``, so new data or another config is a miss.

Each entry is written to a hidden temporary folder beside it and renamed into place, so a killed
run leaves only a ``.<modality>.tmp-*`` folder that readers never look at. Counts only are logged:
never note text or stay ids. ``last_forward_passes()`` tells how many encoder forward passes the
latest ``text_embeddings`` call in this thread made (0 on a cache hit).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.data.schema import MODALITY_COLUMNS, StaysError, presence_column, read_manifest
from sweeper.data.stays import shard_paths
from sweeper.encode.text import DEFAULT_TEXT_MODEL, text_model_id

log = logging.getLogger(__name__)

DEFAULT_CACHE_ROOT = Path("results") / ".cache" / "embeddings"
META_FILE = "meta.json"
_last = threading.local()


def last_forward_passes() -> int:
    """Encoder forward passes of this thread's latest ``text_embeddings`` call (0 on a cache hit)."""
    return getattr(_last, "forward_passes", 0)


def text_column(modality: str) -> str:
    column = f"{modality}_text"
    if column not in MODALITY_COLUMNS.get(modality, {}):
        texts = [m for m, cols in MODALITY_COLUMNS.items() if f"{m}_text" in cols]
        raise StaysError(f"modality {modality!r}: has no note text to embed; use one of {', '.join(texts)}")
    return column


def entry_dir(cache_root: str | Path, encoder_id: str, data_hash: str, modality: str) -> Path:
    return Path(cache_root) / f"{encoder_id}-{data_hash[:16]}" / modality


def _read_entry(folder: Path, modality: str, expected: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (ids, vectors), or None when the entry is missing, partial or for another key."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if any(meta.get(k) != v for k, v in expected.items()):
            return None
        table = pq.read_table(folder / f"{modality}.parquet")
    except (OSError, ValueError, pa.ArrowException):
        return None
    ids = np.asarray(table["stay_id"].to_pylist(), dtype=object)
    flat = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(len(ids), int(meta["dim"]))
    return (ids, vectors) if len(ids) == meta["n_stays"] else None


def _write_entry(folder: Path, modality: str, ids: np.ndarray, vectors: np.ndarray, meta: dict) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        dim = vectors.shape[1]
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
        table = pa.table({"stay_id": pa.array(list(ids), type=pa.string()), "embedding": embedding})
        pq.write_table(table, tmp / f"{modality}.parquet")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if folder.exists():  # an entry for another key or a damaged one: replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process put an entry here first; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@lru_cache(maxsize=2)
def _frozen_encoder(name: str, max_length: int):
    """One frozen encoder per process and config: embedding several modalities loads the model once."""
    from sweeper.encode.text import HFTextEncoder

    return HFTextEncoder(name, d=None, max_length=max_length).eval()


def _present_notes(stays_dir: str | Path, manifest, modality: str) -> tuple[np.ndarray, list]:
    """Ids and texts of the stays whose note is present, across every split, sorted by ``stay_id``."""
    text, present = text_column(modality), presence_column(modality)
    if modality not in manifest.modalities:
        return np.asarray([], dtype=object), []
    tables = [pq.read_table(p, columns=["stay_id", present, text]) for p in shard_paths(stays_dir, manifest)]
    table = pa.concat_tables(tables)
    table = table.filter(table[present])
    ids = np.asarray(table["stay_id"].to_pylist(), dtype=object)
    order = np.argsort(ids, kind="stable")
    texts = table[text].to_pylist()
    return ids[order], [texts[i] for i in order]


def cached_embeddings(
    stays_dir: str | Path,
    modality: str,
    encoder_id: str,
    config: dict,
    compute: Callable[[object], tuple[np.ndarray, np.ndarray, int]],
    cache_root: str | Path = DEFAULT_CACHE_ROOT,
    what: str = "stays",
) -> tuple[np.ndarray, np.ndarray]:
    """The cache itself, for any frozen extractor: (stay ids [n] str, vectors [n, dim] float32).

    The key is (``encoder_id``, ``config``, the manifest's data hash, ``modality``); a hit runs
    nothing, a miss calls ``compute(manifest)`` → (ids sorted, vectors, forward passes) and stores it.
    ``sweeper.encode.experts`` keys every expert of every modality through here, the text encoders
    below included.
    """
    manifest = read_manifest(stays_dir)
    if not manifest.content_hash:
        raise StaysError(f"{Path(stays_dir) / 'manifest.json'}: no content_hash; re-run the prepare step that wrote it")
    key = {"encoder_id": encoder_id, "config": config, "data_hash": manifest.content_hash, "modality": modality}
    folder = entry_dir(cache_root, encoder_id, manifest.content_hash, modality)
    _last.forward_passes = 0
    cached = _read_entry(folder, modality, json.loads(json.dumps(key)))
    if cached is not None:
        log.info("embeddings: cache hit for %s %s (%d %s)", encoder_id, modality, len(cached[0]), what)
        return cached
    start = time.perf_counter()
    ids, vectors, passes = compute(manifest)
    _last.forward_passes = passes
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    seconds = time.perf_counter() - start
    meta = {**key, "n_stays": len(ids), "dim": int(vectors.shape[1]), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "forward_passes": passes, "seconds": round(seconds, 3)}
    _write_entry(folder, modality, ids, vectors, meta)
    log.info("embeddings: %s: %d %s %s in %.1f s (%d batches)", encoder_id, len(ids), modality, what, seconds, passes)
    return ids, vectors


def text_embeddings(
    stays_dir: str | Path,
    modality: str,
    encoder: str = DEFAULT_TEXT_MODEL,
    max_length: int = 128,
    cache_root: str | Path = DEFAULT_CACHE_ROOT,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    chunks: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(stay ids [n] str, pooled embeddings [n, hidden] float32) of the stays with a present note.

    Rows are sorted by ``stay_id``. A cache hit runs no encoder; a miss encodes the notes with a
    frozen ``HFTextEncoder`` in batches of ``batch_size`` and stores them. ``progress(done, total)``
    is called after each batch. ``encoder``: a name ``sweeper.encode.text.resolve_text_model`` accepts.
    ``chunks``: read each note whole, as the mean of its chunks' embeddings (``HFTextEncoder.pooled_chunks``,
    ``max_length`` unused) instead of truncating at ``max_length``; its own cache key.
    """
    text_column(modality)
    config = {"model": encoder, "max_length": int(max_length), "pooling": "mean", "lora": None}
    if chunks:
        config.update(max_length=None, chunks="mean")

    def compute(manifest):
        import torch

        ids, texts = _present_notes(stays_dir, manifest, modality)
        model = _frozen_encoder(encoder, int(max_length))
        passes_before, parts = model.forward_passes, []
        with torch.inference_mode():
            for begin in range(0, len(texts), batch_size):
                part = texts[begin:begin + batch_size]
                pooled = model.pooled_chunks(part, batch_size) if chunks else model.pooled(part)
                parts.append(pooled.float().cpu().numpy())
                if progress is not None:
                    progress(min(begin + batch_size, len(texts)), len(texts))
        dim = model.model.config.hidden_size
        vectors = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
        return ids, vectors, model.forward_passes - passes_before

    identity = text_model_id(encoder, None, max_length, chunks=chunks)
    return cached_embeddings(stays_dir, modality, identity, config, compute, cache_root, what="notes")
