"""Stays as Ray Data datasets, and the collate that turns their batches into torch tensors.

``split_dataset`` reads only the columns a (task, modality subset) needs. ``StaysCollate`` turns a
numpy batch into model inputs: one tensor (or tensor pair) per modality plus a ``present`` mask;
absent modalities carry zeros *and* a False in the mask, so models can tell them apart.

That is the ``tensors`` input kind; ``sweeper.data.inputs`` holds the others (``tokens``,
``aggregates``) and the registry a method family adds its own kind to.

The shards are read by the driver, where the stays folder is, and handed to Ray Data as Arrow
blocks in the object store: no Ray task on another node opens a file (a cluster need not share a
filesystem), and no read waits for a CPU that trial workers hold (a Ray Data read task
scheduled on a node whose CPUs trials hold would wait for them).
"""
from __future__ import annotations

import dataclasses
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweeper.data.schema import (
    TASK_LABELS,
    Manifest,
    StaysError,
    check_modalities,
    check_task,
    demo_column,
    modality_columns,
    presence_column,
    read_manifest,
)
from sweeper.data.inputs import input_kind
from sweeper.data.multitask import MULTITASK, label_names, los_over_7d, multitask_labels, task_columns
from sweeper.data.stays import check_shard_schema, shard_paths

TEXT_FEATURES = 2**12
UNKNOWN_ALLOWED = (MULTITASK, "los_gt_7d")
"""Tasks whose label may be unknown for a stay (NaN: left out of the loss and the metrics)."""
TEXT_MODALITIES = ("discharge", "radiology")


def needed_columns(manifest: Manifest, modalities, tasks) -> list[str]:
    """Id, the tasks' labels and the modalities' columns: all a reader of this subset needs."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    cols = ["stay_id"] + [c for t in tasks for c in task_columns(manifest, check_task(t))]
    for modality in modalities:
        cols += modality_columns(manifest, modality)
    return list(dict.fromkeys(cols))  # los and los_gt_7d (or ihm and multitask) share a label column


def check_subset(manifest: Manifest, modalities, where: str = "modality subset") -> tuple[str, ...]:
    modalities = check_modalities(modalities, where=where)
    if not modalities:
        raise StaysError(f"{where}: empty; name at least one modality")
    for modality in modalities:
        if modality not in manifest.modalities:
            raise StaysError(f"{where}: source {manifest.source!r} has no {modality!r} modality (it has {', '.join(manifest.modalities)})")
    return modalities


def check_labels(stays_dir: str | Path, split: str, task: str, manifest: Manifest | None = None) -> None:
    """Fail naming the shard and field when a stay of ``split`` lacks the ``task`` label."""
    manifest = manifest or read_manifest(stays_dir)
    if check_task(task) in UNKNOWN_ALLOWED:  # unknown labels are allowed: the loss and metrics leave them out
        for path in shard_paths(stays_dir, manifest, split):
            check_shard_schema(path, manifest, task_columns(manifest, task))
        return
    column = TASK_LABELS[task]
    if task == "phenotyping" and not manifest.phenotypes:
        raise StaysError(f"{Path(stays_dir) / 'manifest.json'}: source {manifest.source!r} has no phenotype labels; task 'phenotyping' is not available for it")
    for path in shard_paths(stays_dir, manifest, split):
        check_shard_schema(path, manifest, [column])
        labels = pq.read_table(path, columns=[column])[column]
        if labels.null_count:
            raise StaysError(f"{path}: field {column!r} is null for {labels.null_count} stays; task {task!r} needs it for every stay (drop those stays when preparing, or pick another task)")
        if column == "label_phenotypes":
            flat = pc.list_flatten(labels)
            if pc.any(pc.is_nan(flat)).as_py():
                raise StaysError(f"{path}: field {column!r} has NaN entries; task {task!r} needs every phenotype label")
        elif pc.any(pc.is_nan(labels)).as_py():
            raise StaysError(f"{path}: field {column!r} is NaN for some stays; task {task!r} needs it for every stay")


def _keep_present(batch: pa.Table, columns: list[str]) -> pa.Table:
    mask = batch[columns[0]]
    for column in columns[1:]:
        mask = pc.or_(mask, batch[column])
    return batch.filter(mask)


def split_dataset(stays_dir: str | Path, split: str, modalities, tasks, manifest: Manifest | None = None):
    """The stays of ``split`` that have at least one of ``modalities``, as a ``ray.data.Dataset``.

    Only the id, the tasks' labels and the modalities' columns are read, one Arrow block per
    shard. The engine materializes these once per run, before trials hold the CPUs.
    """
    import ray.data

    manifest = manifest or read_manifest(stays_dir)
    modalities = check_subset(manifest, modalities)
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for task in tasks:
        check_labels(stays_dir, split, task, manifest)
    columns = needed_columns(manifest, modalities, tasks)
    presence = [presence_column(m) for m in modalities]
    blocks = [_keep_present(pq.read_table(path, columns=columns), presence) for path in shard_paths(stays_dir, manifest, split)]
    return ray.data.from_arrow([b for b in blocks if b.num_rows] or blocks[:1])


class StaysCollate:
    """Numpy batch (from ``iter_batches(batch_format="numpy")``) → dict of torch tensors.

    Keys: ``stay_id`` (numpy str array), ``label`` (float [N] for ihm, [N, 25] for phenotyping,
    log1p hours [N] for los, 0/1/NaN [N] for los_gt_7d), ``present`` (bool [N, |subset|], subset in canonical order) and one
    entry per modality: ``discharge``/``radiology`` hashed bag-of-words [N, TEXT_FEATURES];
    ``cxr`` latest image [N, 1, S, S] in [0, 1]; ``timeseries`` [N, hours, 2·features] (z-scored
    values, carried forward then zero-filled, beside the observation mask); ``demographics``
    [N, width] (z-scored numerics + missing flags, one-hots + unknown slot).
    """

    def __init__(
        self, manifest: Manifest, modalities, task: str, carry_forward: bool = True, inputs: str = "tensors", window_hours: float = 2.0,
        features: dict | None = None, raw_text: bool = False, hidden_labels: float = 0.0,
    ):
        self.manifest = manifest
        # Precomputed per-stay embeddings that replace a modality's raw input: {modality: (ids, [n, dim])},
        # ids sorted (a frozen text encoder's cache, a pre-training stage's frozen encoders).
        self.features = dict(features or {})
        self.raw_text = raw_text  # notes as strings (a text model runs in the trial), not as features
        self.modalities = check_subset(manifest, modalities)
        self.task = check_task(task)
        self.hidden_labels = float(hidden_labels)  # multitask: share of labels hidden as unknown
        self.carry_forward = carry_forward
        self._hasher = None
        self.inputs = inputs
        self.kind = input_kind(inputs)
        self.window_hours = float(window_hours)
        self.kind.check(self)

    def input_shapes(self) -> dict:
        """What the model is built for: per modality the input shape of one stay for ``tensors``;
        whatever the input kind says otherwise (the vocabulary of ``tokens``, a width...)."""
        return self.kind.shapes(self)

    def tensor_shapes(self) -> dict:
        """The ``tensors`` input: per-modality input shape of one stay."""
        shapes: dict[str, tuple[int, ...]] = {}
        for modality in self.modalities:
            if modality in self.features:
                shapes[modality] = (self.features[modality][1].shape[1],)
            elif modality in TEXT_MODALITIES and self.raw_text:
                shapes[modality] = ()
            elif modality in TEXT_MODALITIES:
                shapes[modality] = (TEXT_FEATURES,)
            elif modality == "cxr":
                shapes[modality] = (1, self.manifest.cxr_size, self.manifest.cxr_size)
            elif modality == "timeseries":
                ts = self.manifest.timeseries
                shapes[modality] = (ts.hours, 2 * len(ts.features))
            elif modality == "demographics":
                shapes[modality] = (self.manifest.demographics.width,)
        return shapes

    def n_outputs(self) -> int:
        if self.task == MULTITASK:
            return len(label_names(self.manifest))
        return len(self.manifest.phenotypes) if self.task == "phenotyping" else 1

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        import torch

        present = np.stack([batch[presence_column(m)].astype(bool) for m in self.modalities], axis=1)
        out = {"stay_id": np.asarray(batch["stay_id"]).astype(str), "present": torch.from_numpy(present)}
        if self.task == MULTITASK:
            out["label"] = torch.from_numpy(multitask_labels(batch, self.manifest, self.hidden_labels))
        else:
            out["label"] = torch.from_numpy(self._labels(batch[TASK_LABELS[self.task]]))
        built = self.kind.build(self, batch, present)
        out.update({k: (torch.from_numpy(v) if isinstance(v, np.ndarray) and v.dtype != object else v) for k, v in built.items()})
        return out

    def tensors(self, batch: dict[str, np.ndarray], present: np.ndarray) -> dict[str, np.ndarray]:
        """The ``tensors`` input: one array per modality (notes as strings when a text model runs in the trial)."""
        stay_ids = np.asarray(batch["stay_id"]).astype(str)
        out = {}
        for index, modality in enumerate(self.modalities):
            rows = present[:, index]
            if modality in self.features:
                out[modality] = self._lookup(stay_ids, modality, rows)
            elif modality in TEXT_MODALITIES and self.raw_text:
                out[modality] = np.array([t if keep and t is not None else "" for t, keep in zip(batch[f"{modality}_text"], rows)], dtype=object)
            else:
                out[modality] = self.encode(modality, batch, rows)
        return out

    def rows(self, present: np.ndarray, modality: str) -> np.ndarray:
        """Which stays of the batch have ``modality`` (none when it is not in the subset)."""
        return present[:, self.modalities.index(modality)] if modality in self.modalities else np.zeros(len(present), bool)

    def encode(self, modality: str, batch: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        """One modality's raw columns as the ``tensors`` input has them (zeros where ``rows`` is False)."""
        encode = getattr(self, f"_{modality}") if modality not in TEXT_MODALITIES else self._text
        return encode(batch, modality, rows)

    def _labels(self, labels: np.ndarray) -> np.ndarray:
        if self.task == "phenotyping":
            return np.stack([np.asarray(row, dtype=np.float32) for row in labels]).astype(np.float32)
        if self.task == "los_gt_7d":
            return los_over_7d(labels)
        if self.task == "los":  # the regression target: log1p(hours)
            return np.log1p(np.array(labels, dtype=np.float32))
        return np.array(labels, dtype=np.float32)  # a writable copy: torch shares its memory

    def _lookup(self, stay_ids: np.ndarray, modality: str, rows: np.ndarray) -> np.ndarray:
        """The precomputed embedding of each present stay (zeros where absent: the mask says so)."""
        ids, matrix = self.features[modality]
        out = np.zeros((len(stay_ids), matrix.shape[1]), dtype=np.float32)
        if len(ids):
            where = np.clip(np.searchsorted(ids, stay_ids), 0, len(ids) - 1)
            found = rows & (ids[where] == stay_ids)
            if (rows & ~found).any():
                raise StaysError(f"{modality}: {int((rows & ~found).sum())} present stays have no precomputed embedding; the cache is stale, delete it")
            out[found] = matrix[where[found]]
        elif rows.any():
            raise StaysError(f"{modality}: no precomputed embeddings; the cache is empty, delete it")
        return out

    def _text(self, batch, modality, rows) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer

        if self._hasher is None:
            self._hasher = HashingVectorizer(n_features=TEXT_FEATURES, alternate_sign=False, ngram_range=(1, 2), norm="l2")
        texts = [t if keep and t is not None else "" for t, keep in zip(batch[f"{modality}_text"], rows)]
        return self._hasher.transform(texts).toarray().astype(np.float32)

    def _cxr(self, batch, modality, rows) -> np.ndarray:
        size = self.manifest.cxr_size
        images = np.zeros((len(rows), 1, size, size), dtype=np.float32)
        for i, (keep, stay, pngs, times) in enumerate(zip(rows, batch["stay_id"], batch["cxr_images"], batch["cxr_times"])):
            if keep and pngs is not None and len(pngs):
                images[i, 0] = _latest_image(self.manifest.content_hash, str(stay), pngs, times)
        return images

    def _timeseries(self, batch, modality, rows) -> np.ndarray:
        ts = self.manifest.timeseries
        hours, n_features = ts.hours, len(ts.features)
        values = np.full((len(rows), hours, n_features), np.nan, dtype=np.float32)
        mask = np.zeros((len(rows), hours, n_features), dtype=np.float32)
        for i, (keep, v, m) in enumerate(zip(rows, batch["ts_hourly_values"], batch["ts_hourly_mask"])):
            if keep and v is not None:
                values[i] = np.asarray(v, dtype=np.float32).reshape(hours, n_features)
                mask[i] = np.asarray(m, dtype=np.float32).reshape(hours, n_features)
        values = np.where(mask > 0, values, np.nan)
        values = (values - np.asarray(ts.mean, dtype=np.float32)) / np.asarray(ts.std, dtype=np.float32)
        if self.carry_forward:
            values = _carry_forward(values)
        return np.concatenate([np.nan_to_num(values, nan=0.0), mask], axis=2)

    def _demographics(self, batch, modality, rows) -> np.ndarray:
        demo = self.manifest.demographics
        parts = []
        for field in demo.numeric:
            raw = np.asarray(batch[demo_column(field)], dtype=np.float32)
            known = ~np.isnan(raw) & rows
            parts.append(np.where(known, (raw - demo.mean[field]) / demo.std[field], 0.0))
            parts.append((~known & rows).astype(np.float32))
        for field in demo.categorical:
            categories = demo.categories.get(field, [])
            onehot = np.zeros((len(rows), len(categories) + 1), dtype=np.float32)
            lookup = {c: j for j, c in enumerate(categories)}
            for i, (keep, value) in enumerate(zip(rows, batch[demo_column(field)])):
                if keep:
                    onehot[i, lookup.get(value, len(categories)) if value is not None else len(categories)] = 1.0
            parts.append(onehot)
        return np.column_stack(parts).astype(np.float32) if parts else np.zeros((len(rows), 0), np.float32)


_DECODED: OrderedDict = OrderedDict()
DECODED_BYTES = 256 * 2**20
"""Decoded images a process keeps (a reused trial actor decodes each stay's image once, not once per
trial); the least recently used go first past this many bytes."""
_decoded_bytes = 0


def _latest_image(data_hash: str, stay_id: str, pngs, times) -> np.ndarray:
    """The stay's latest image as float32 in [0, 1], decoded once per process and data snapshot."""
    global _decoded_bytes
    key = (data_hash, stay_id)
    if key in _DECODED:
        _DECODED.move_to_end(key)
        return _DECODED[key]
    from PIL import Image

    latest = int(np.argmax(times)) if times is not None and len(times) == len(pngs) else len(pngs) - 1
    image = np.asarray(Image.open(io.BytesIO(pngs[latest])).convert("L"), dtype=np.float32) / 255.0
    if data_hash:  # a snapshot without a content hash cannot be told from another: decode every time
        _DECODED[key] = image
        _decoded_bytes += image.nbytes
        while _decoded_bytes > DECODED_BYTES and _DECODED:
            _decoded_bytes -= _DECODED.popitem(last=False)[1].nbytes
    return image


def _carry_forward(values: np.ndarray) -> np.ndarray:
    """Last observation carried forward along the hours axis (NaN before the first one)."""
    n, hours, features = values.shape
    index = np.where(~np.isnan(values), np.arange(hours)[None, :, None], 0)
    np.maximum.accumulate(index, axis=1, out=index)
    return np.take_along_axis(values, index, axis=1)


def collate_all(batches, collate: StaysCollate) -> dict:
    """Collate every batch, concatenate, and keep the stays with a modality of the subset, in
    stay-id order (Ray Data may hand blocks over in any order; training must not depend on it)."""
    import torch

    parts = [collate(batch) for batch in batches]
    keep = np.concatenate([p["present"].any(dim=1).numpy() for p in parts]) if parts else np.zeros(0, bool)
    if not keep.any():
        raise StaysError(f"no stay has any of {', '.join(collate.modalities)}; choose another modality subset")
    ids = np.concatenate([p["stay_id"] for p in parts])
    order = np.flatnonzero(keep)
    order = order[np.argsort(ids[order], kind="stable")]
    out = {}
    for key in parts[0]:
        if key == "stay_id":
            out[key] = ids[order]
            continue
        if isinstance(parts[0][key], np.ndarray):  # raw notes
            out[key] = np.concatenate([p[key] for p in parts])[order]
            continue
        tensors = [p[key] for p in parts]
        if tensors[0].ndim == 2 and len({t.shape[1] for t in tensors}) > 1:  # token batches: pad to the longest
            width = max(t.shape[1] for t in tensors)
            tensors = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors]
        out[key] = torch.cat(tensors)[torch.from_numpy(order)]
    return out
