"""Experts: several frozen extractors per modality, each run once per stay into the embedding cache.

An expert is a named frozen extractor of one modality (``EXPERTS``); ``expert_embeddings`` runs it
once per (modality, expert, config, data hash) through ``sweeper.encode.embeddings.cached_embeddings``
(the same cache, layout and atomic writes as the text encoder), so every trial of every cell that
names it reads the same matrix. Teachers are experts too (``teacher=True``): larger frozen
extractors that MedMIX reads at training time only.

| modality | expert | what | family |
|---|---|---|---|
| notes | ``minilm`` | all-MiniLM-L6-v2, mean-pooled (``sweeper.encode.text``) | pretrained |
| notes | ``tfidf`` | hashed uni+bigram TF-IDF (idf from training notes) → fixed sparse random projection | handcrafted |
| notes | ``lsa`` | TF-IDF vocabulary of the training notes → truncated SVD (latent semantic analysis) | handcrafted |
| notes | ``minilm_long`` (teacher) | all-MiniLM-L6-v2 over 4× the tokens the student reads | pretrained |
| cxr | ``effnet_lite0`` | EfficientNet-Lite0, ImageNet weights, global-average-pooled head | pretrained |
| cxr | ``cnn`` | a small CNN, randomly initialised with a fixed seed and frozen | random |
| cxr | ``effnet_lite2`` (teacher) | EfficientNet-Lite2, ImageNet weights, at 260 px | pretrained |
| timeseries | ``stats`` | per series: mean, min, max, last, standard deviation, observed fraction | handcrafted |
| timeseries | ``gru`` | a GRU over the hourly bins, randomly initialised with a fixed seed and frozen | random |
| demographics | ``tabular`` | the ``tensors`` encoding: z-scored numerics, missing flags, one-hots | handcrafted |

A teacher probe (``teacher_probe: true``, the paper's "-Large" rows) is the one config where a
teacher is a model input, under its own key (``teacher-probe:<modality>:<name>``): the row
evaluates the teacher itself. Everywhere else a teacher is handed over as ``teacher:`` only.

Notes experts apply to ``discharge`` and ``radiology`` alike. Fitted parts (idf, SVD) see the
training split's notes only, never a label. The extractors themselves are in
``sweeper.encode.extractors``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.data.schema import StaysError, modality_columns, presence_column
from sweeper.data.stays import shard_paths
from sweeper.encode import extractors
from sweeper.encode.embeddings import DEFAULT_CACHE_ROOT, cached_embeddings, text_embeddings

NOTES = ("discharge", "radiology")


@dataclasses.dataclass(frozen=True)
class Expert:
    name: str
    kind: str
    """``notes``, ``cxr``, ``timeseries`` or ``demographics``: the modalities it reads."""
    family: str
    """``pretrained``, ``handcrafted`` or ``random``: what "drop one expert family" drops."""
    defaults: dict
    extract: Callable[..., tuple[np.ndarray, int]] | None
    """``extract(rows, train, manifest, modality, config) -> (vectors [n, dim], forward passes)``."""
    teacher: bool = False


EXPERTS: dict[str, Expert] = {e.name: e for e in (
    Expert("minilm", "notes", "pretrained", {"max_length": 128}, None),
    Expert("minilm_long", "notes", "pretrained", {"max_length": 512}, None, teacher=True),
    Expert("tfidf", "notes", "handcrafted", {"n_features": 2**18, "dim": 256, "seed": 0}, extractors.tfidf_projection),
    Expert("lsa", "notes", "handcrafted", {"dim": 64, "max_features": 20000, "seed": 0}, extractors.lsa),
    Expert("effnet_lite0", "cxr", "pretrained", {"image_size": 128, "batch_size": 64}, extractors.effnet("lite0")),
    Expert("effnet_lite2", "cxr", "pretrained", {"image_size": 260, "batch_size": 32}, extractors.effnet("lite2"), teacher=True),
    Expert("cnn", "cxr", "random", {"width": 16, "seed": 0}, extractors.random_cnn),
    Expert("stats", "timeseries", "handcrafted", {}, extractors.series_stats),
    Expert("gru", "timeseries", "random", {"hidden": 64, "seed": 0}, extractors.random_gru),
    Expert("tabular", "demographics", "handcrafted", {}, extractors.tabular),
)}


def kind_of(modality: str) -> str:
    return "notes" if modality in NOTES else modality


def experts_for(modality: str, teacher: bool = False) -> list[str]:
    """The experts (or teachers) registered for ``modality``, in registry order."""
    return [e.name for e in EXPERTS.values() if e.kind == kind_of(modality) and e.teacher == teacher]


def expert(modality: str, name: str) -> Expert:
    found = EXPERTS.get(name)
    if found is None or found.kind != kind_of(modality):
        raise StaysError(f"expert {name!r} for {modality}: unknown; use one of {', '.join(experts_for(modality) + experts_for(modality, True))}")
    return found


def expert_id(modality: str, name: str, config: dict | None = None) -> tuple[str, dict]:
    """(folder-safe id hashing the expert and its full config, the full config)."""
    found = expert(modality, name)
    full = {**found.defaults, **(config or {})}
    unknown = set(full) - set(found.defaults)
    if unknown:
        raise StaysError(f"expert {name!r}: unknown option {sorted(unknown)[0]!r}; it takes {', '.join(found.defaults) or 'none'}")
    digest = hashlib.sha256(json.dumps({"expert": name, **full}, sort_keys=True).encode()).hexdigest()[:10]
    return f"expert-{name}-{digest}", full


def present_rows(stays_dir: str | Path, manifest, modality: str) -> tuple[dict, np.ndarray]:
    """The modality's columns of every stay that has it, across the splits, sorted by ``stay_id``,
    as a numpy batch (as Ray Data yields one); and which of those rows are training stays."""
    columns = ["stay_id"] + modality_columns(manifest, modality)
    tables, train = [], []
    for split in ("train", "val", "test"):
        for path in shard_paths(stays_dir, manifest, split):
            table = pq.read_table(path, columns=columns)
            table = table.filter(table[presence_column(modality)])
            tables.append(table)
            train.append(np.full(table.num_rows, split == "train"))
    table = pa.concat_tables(tables)
    ids = np.asarray(table["stay_id"].to_pylist(), dtype=object)
    order = np.argsort(ids, kind="stable")
    rows = {name: table[name].to_numpy(zero_copy_only=False)[order] for name in table.column_names}
    rows["stay_id"] = ids[order]
    return rows, np.concatenate(train)[order] if train else np.zeros(0, bool)


def expert_embeddings(
    stays_dir: str | Path, modality: str, name: str, config: dict | None = None, cache_root: str | Path = DEFAULT_CACHE_ROOT,
) -> tuple[np.ndarray, np.ndarray]:
    """(stay ids sorted, vectors [n, dim] float32) of ``name`` on the stays that have ``modality``;
    from the cache when this expert, config and data were seen before."""
    found = expert(modality, name)
    identity, full = expert_id(modality, name, config)
    if found.extract is None:  # a text encoder: its own cache key (shared with the methods reading it directly)
        return text_embeddings(stays_dir, modality, max_length=int(full["max_length"]), cache_root=cache_root)

    def compute(manifest):
        if modality not in manifest.modalities:
            return np.asarray([], dtype=object), np.zeros((0, 1), np.float32), 0
        rows, train = present_rows(stays_dir, manifest, modality)
        vectors, passes = found.extract(rows, train, manifest, modality, full)
        return rows["stay_id"], vectors, passes

    return cached_embeddings(stays_dir, modality, identity, {"expert": name, **full}, compute, cache_root, what="stays")


PROBE = "teacher-probe"


def feature_key(modality: str, name: str, teacher: bool = False, probe: bool = False) -> str:
    """How an expert's matrix is named among a trial's precomputed features: ``expert:`` (a
    deployed expert), ``teacher:`` (read in training only) or ``teacher-probe:`` (a teacher that is
    the model's input: the teacher probe)."""
    return f"{PROBE if probe else 'teacher' if teacher else 'expert'}:{modality}:{name}"


def chosen_experts(config: dict, modality: str) -> tuple[list[str], str | None]:
    """The experts a method config reads for ``modality`` and its teacher (or None).

    ``experts``: {modality: [names]} (a modality left out: every registered expert of it);
    ``drop_family``: leave out the experts of one family (where the modality has others);
    ``teachers``: {modality: name}.
    """
    wanted = list((config.get("experts") or {}).get(modality) or experts_for(modality))
    for name in wanted:
        if expert(modality, name).teacher:
            raise StaysError(f"experts.{modality}: {name!r} is a teacher; name it under teachers, where evaluation never reads it")
    # A modality whose experts all belong to the dropped family keeps them (demographics has one
    # expert): the ablation removes a family, not a modality.
    names = [n for n in wanted if expert(modality, n).family != config.get("drop_family")] or wanted
    teacher = (config.get("teachers") or {}).get(modality)
    if teacher is not None and not expert(modality, teacher).teacher:
        raise StaysError(f"teachers.{modality}: {teacher!r} is a deployed expert, not a teacher; use one of {', '.join(experts_for(modality, True))}")
    return names, teacher


def cell_experts(config: dict, modalities) -> list[tuple[str, str, str, dict]]:
    """(feature key, modality, expert, its options) of every expert and teacher a cell reads;
    ``expert_options``: {expert: {option: value}} (e.g. a smaller ``image_size``).

    ``teacher_probe: true``: the teachers named for the subset's modalities, as the inputs
    (``teacher-probe:`` keys) and nothing else; the modalities without a teacher are not read."""
    options = config.get("expert_options") or {}
    out = []
    if config.get("teacher_probe"):
        for modality in modalities:
            teacher = (config.get("teachers") or {}).get(modality)
            if teacher is not None:
                if not expert(modality, teacher).teacher:
                    raise StaysError(f"teachers.{modality}: {teacher!r} is a deployed expert, not a teacher; use one of {', '.join(experts_for(modality, True))}")
                out.append((feature_key(modality, teacher, probe=True), modality, teacher, dict(options.get(teacher) or {})))
        if not out:
            raise StaysError(f"teacher_probe: no modality of {'+'.join(modalities)} has a teacher under teachers; name one (e.g. teachers: {{cxr: effnet_lite2}})")
    else:
        for modality in modalities:
            names, teacher = chosen_experts(config, modality)
            out += [(feature_key(modality, n), modality, n, dict(options.get(n) or {})) for n in names]
            if teacher is not None:
                out.append((feature_key(modality, teacher, True), modality, teacher, dict(options.get(teacher) or {})))
    for _, modality, name, chosen in out:
        expert_id(modality, name, chosen)  # unknown options fail here, before anything runs
    return out


def cell_expert_features(stays_dir, config: dict, modalities, cache_root=DEFAULT_CACHE_ROOT) -> dict:
    """{feature key: (ids, matrix)} of every expert and teacher a cell reads (``cell_experts``)."""
    return {key: expert_embeddings(stays_dir, modality, name, options, cache_root) for key, modality, name, options in cell_experts(config, modalities)}
