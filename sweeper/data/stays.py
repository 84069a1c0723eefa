"""Write and read stays folders (parquet shards + ``manifest.json``), validating as they go.

Writing is atomic: shards and manifest go to a hidden temporary folder beside ``out`` that is
renamed into place only when everything succeeded, so a failure leaves no half-written output; an
existing stays folder is replaced only with ``overwrite`` (:mod:`sweeper.data.folders`).
Reading checks every shard against the sha256 the manifest stored for it (and the folder's
``content_hash``) once per process and file state, so a shard changed or swapped after writing is
an error, never data read under the wrong hash.
"""
from __future__ import annotations

import copy
import hashlib
import math
import numbers
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from sweeper.data.folders import check_writable, make_temporary, put_in_place
from sweeper.data.schema import (
    MODALITIES,
    NOT_NULL,
    SHARD_PATH,
    SPLITS,
    Manifest,
    StaysError,
    demo_column,
    presence_column,
    read_manifest,
)
from sweeper.data.splits import DEFAULT_FRACTIONS, assign_splits

ROWS_PER_SHARD = 1000


def to_table(frame: pd.DataFrame, manifest: Manifest, where: str) -> pa.Table:
    """Convert ``frame`` to the manifest's Arrow schema, naming the first column that does not fit."""
    schema = manifest.arrow_schema()
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise StaysError(f"{where}: missing required column {missing[0]!r}")
    arrays = []
    for field in schema:
        try:
            # from_pandas turns NaN into null; inside lists NaN means "not observed" and must stay NaN.
            arrays.append(pa.array(frame[field.name], type=field.type, from_pandas=not pa.types.is_list(field.type)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as err:
            raise StaysError(f"{where}: column {field.name!r} does not hold {field.type} ({str(err).splitlines()[0]})") from None
    return pa.Table.from_arrays(arrays, schema=schema)


def validate_table(table: pa.Table, manifest: Manifest, where: str, require_splits: bool = True) -> None:
    """Row-level checks shared by the writer and the reader."""
    for name in NOT_NULL:
        if name in table.column_names and table[name].null_count:
            raise StaysError(f"{where}: column {name!r} has {table[name].null_count} null values; it is required")
    if "label_ihm" in table.column_names:
        ihm = table["label_ihm"].to_numpy(zero_copy_only=False)
        bad = ~np.isnan(ihm) & (ihm != 0) & (ihm != 1)
        if bad.any():
            raise StaysError(f"{where}: column 'label_ihm' must be 0, 1 or null; found {ihm[bad][0]!r}")
    if "label_phenotypes" in table.column_names:
        lengths = pa.compute.list_value_length(table["label_phenotypes"]).to_numpy(zero_copy_only=False)
        ok = np.isnan(lengths.astype(float)) | (lengths == len(manifest.phenotypes))
        if not ok.all():
            raise StaysError(f"{where}: column 'label_phenotypes' needs {len(manifest.phenotypes)} values per stay")
    if manifest.timeseries is not None and "ts_hourly_values" in table.column_names:
        expected = manifest.timeseries.hours * len(manifest.timeseries.features)
        for column in ("ts_hourly_values", "ts_hourly_mask"):
            lengths = pa.compute.list_value_length(table[column]).drop_null().to_numpy(zero_copy_only=False)
            if (lengths != expected).any():
                raise StaysError(f"{where}: column {column!r} needs hours × features = {expected} values per stay")
        events = [pa.compute.list_value_length(table[c]).fill_null(0).to_numpy(zero_copy_only=False) for c in ("ts_event_feature", "ts_event_value", "ts_event_time")]
        if (events[0] != events[1]).any() or (events[0] != events[2]).any():
            raise StaysError(f"{where}: columns 'ts_event_feature', 'ts_event_value', 'ts_event_time' need equal lengths per stay")
    splits = set(table["split"].to_pylist()) if "split" in table.column_names else set()
    unknown = splits - set(SPLITS)
    if unknown:
        raise StaysError(f"{where}: column 'split' has unknown value {sorted(unknown)[0]!r}; use train, val or test")
    for modality in MODALITIES:
        column = presence_column(modality)
        if modality not in manifest.modalities and column in table.column_names and pa.compute.any(table[column]).as_py():
            raise StaysError(f"{where}: column {column!r} marks stays present for a modality the manifest does not list")
    if require_splits:
        for split in SPLITS:
            if split not in splits:
                raise StaysError(f"{where}: split {split!r} is empty; use more stays or other split fractions")


def check_finite(table: pa.Table, where: str) -> None:
    """No float column may hold ±inf (NaN means unknown or not observed): sources drop such values."""
    for field in table.schema:
        dtype = field.type.value_type if pa.types.is_list(field.type) else field.type
        if not pa.types.is_floating(dtype):
            continue
        column = table[field.name]
        values = pa.compute.list_flatten(column) if pa.types.is_list(field.type) else column
        n = pa.compute.sum(pa.compute.is_inf(values)).as_py() or 0
        if n:
            raise StaysError(f"{where}: column {field.name!r} holds {n} infinite values; drop them (or make them null) before writing")


def fill_statistics(table: pa.Table, manifest: Manifest) -> None:
    """Normalisation statistics from the training split, stored in the manifest for every reader."""
    train = table.filter(pa.compute.equal(table["split"], "train"))
    if manifest.timeseries is not None and "ts_hourly_values" in train.column_names:
        n_features = len(manifest.timeseries.features)
        values = train["ts_hourly_values"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        mask = train["ts_hourly_mask"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        values = values.reshape(-1, n_features).astype(np.float64)
        mask = mask.reshape(-1, n_features).astype(bool)
        observed = np.where(mask, values, np.nan)
        with warnings.catch_warnings():  # all-NaN features (never observed) are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(observed, axis=0)
            std = np.nanstd(observed, axis=0)
        manifest.timeseries.mean = [0.0 if math.isnan(v) else float(v) for v in mean]
        manifest.timeseries.std = [1.0 if math.isnan(v) or v < 1e-6 else float(v) for v in std]
    demo = manifest.demographics
    if "demographics" in manifest.modalities:
        for field in demo.numeric:
            values = train[demo_column(field)].to_numpy(zero_copy_only=False).astype(np.float64)
            values = values[~np.isnan(values)]
            demo.mean[field] = float(values.mean()) if values.size else 0.0
            std = float(values.std()) if values.size else 1.0
            demo.std[field] = std if std > 1e-6 else 1.0
        for field in demo.categorical:
            values = train[demo_column(field)].drop_null().unique().to_pylist()
            demo.categories[field] = sorted(str(v) for v in values)


def summarise(table: pa.Table, manifest: Manifest) -> None:
    """Counts, label rates and presence rates per split, into the manifest."""
    frame = table.select(["split", "label_ihm", "label_los_hours"] + [presence_column(m) for m in MODALITIES]).to_pandas()
    manifest.counts, manifest.label_rates, manifest.presence_rates = {}, {}, {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        manifest.counts[split] = int(len(part))
        rates = {
            "ihm": _rate(part["label_ihm"]),
            "ihm_known": float(part["label_ihm"].notna().mean()) if len(part) else 0.0,
            "los_hours_median": float(part["label_los_hours"].median()) if part["label_los_hours"].notna().any() else None,
        }
        pheno = table.filter(pa.compute.equal(table["split"], split))["label_phenotypes"].drop_null()
        if len(pheno):
            matrix = np.asarray(pheno.to_pylist(), dtype=np.float64)
            rates["phenotypes_mean"] = float(np.nanmean(matrix))
        manifest.label_rates[split] = rates
        manifest.presence_rates[split] = {m: _rate(part[presence_column(m)].astype(float)) for m in MODALITIES}


def _rate(series: pd.Series) -> float | None:
    known = series.dropna()
    return float(known.mean()) if len(known) else None


def write_stays(
    frame: pd.DataFrame,
    manifest: Manifest,
    out: str | Path,
    split_seed: int = 0,
    split_fractions=DEFAULT_FRACTIONS,
    rows_per_shard: int = ROWS_PER_SHARD,
    where: str = "stays",
    overwrite: bool = False,
) -> Manifest:
    """Validate ``frame`` against ``manifest`` and write a stays folder at ``out``.

    When ``frame`` has no ``split`` values the engine assigns a patient-level split stratified by
    modality-presence pattern with ``split_seed`` and records how in the manifest. An existing
    stays folder at ``out`` is replaced only when ``overwrite`` is true.
    """
    out = check_writable(out, overwrite)
    if isinstance(split_seed, bool) or not isinstance(split_seed, numbers.Integral) or split_seed < 0:
        raise StaysError(f"--seed: {split_seed!r} must be a non-negative integer")
    if len(frame) == 0:
        raise StaysError(f"{where}: no stays to write; check that the source holds records")
    manifest = copy.deepcopy(manifest)  # the written manifest gets split, statistics and hash
    frame = frame.reset_index(drop=True)
    missing = [name for name in manifest.arrow_schema().names if name != "split" and name not in frame.columns]
    if missing:  # before assigning splits, which needs ids and presence columns
        raise StaysError(f"{where}: missing required column {missing[0]!r}")
    if "split" not in frame.columns or frame["split"].isna().all():
        frame = frame.assign(split=assign_splits(frame, split_seed, split_fractions))
        manifest.split = {
            "method": "patient-level, stratified by first-stay modality-presence pattern",
            "seed": split_seed,
            "fractions": list(split_fractions),
        }
    elif not manifest.split:
        manifest.split = {"method": "given by the source"}
    table = to_table(frame, manifest, where)
    check_finite(table, where)
    validate_table(table, manifest, where)
    fill_statistics(table, manifest)
    summarise(table, manifest)
    text = manifest.to_json()  # fails here, before anything is written, on a non-finite statistic

    tmp = make_temporary(out)
    try:
        (tmp / "shards").mkdir()
        digest = hashlib.sha256()
        manifest.shards, manifest.shard_hashes = {}, {}
        for split in SPLITS:
            part = table.filter(pa.compute.equal(table["split"], split))
            manifest.shards[split] = []
            for index, start in enumerate(range(0, len(part), rows_per_shard)):
                rel = f"shards/{split}-{index:05d}.parquet"
                pq.write_table(part.slice(start, rows_per_shard), tmp / rel)
                data = (tmp / rel).read_bytes()
                digest.update(data)
                manifest.shards[split].append(rel)
                manifest.shard_hashes[rel] = hashlib.sha256(data).hexdigest()
        manifest.content_hash = digest.hexdigest()
        text = manifest.to_json()
        (tmp / "manifest.json").write_text(text)
        put_in_place(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StaysError(f"--out {out}: cannot write ({err.strerror or err}); choose another path") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def shard_paths(stays_dir: str | Path, manifest: Manifest, split: str | None = None) -> list[Path]:
    """Absolute paths of the shards of ``split`` (all splits when None), checked to exist."""
    splits = SPLITS if split is None else (split,)
    paths = []
    for name in splits:
        if name not in SPLITS:
            raise StaysError(f"split {name!r}: unknown; use train, val or test")
        files = manifest.shards.get(name, [])
        if not files:
            raise StaysError(f"{Path(stays_dir) / 'manifest.json'}: split {name!r} is empty; re-run the prepare step with more stays")
        for rel in files:
            path = Path(stays_dir).absolute() / rel
            if not SHARD_PATH.fullmatch(rel):
                raise StaysError(f"{Path(stays_dir) / 'manifest.json'}: shards: {rel!r} is not a file under shards/ of the stays folder; re-run the prepare step")
            if not path.is_file():
                raise StaysError(f"{path}: shard listed in manifest.json is missing; re-run the prepare step")
            paths.append(path)
    verify_shards(stays_dir, manifest)
    return paths


_VERIFIED: dict[tuple[str, str], tuple] = {}  # (folder, content_hash) -> the shards' stat keys when last verified


def verify_shards(stays_dir: str | Path, manifest: Manifest) -> None:
    """Check every shard against ``manifest.shard_hashes`` and ``content_hash`` (once per file state)."""
    root = Path(stays_dir).absolute()
    listed = [rel for split in SPLITS for rel in manifest.shards.get(split, [])]
    try:
        stats = tuple((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev) for s in ((root / rel).stat() for rel in listed))
    except OSError as err:
        raise StaysError(f"{err.filename}: shard listed in manifest.json cannot be read ({err.strerror}); re-run the prepare step") from None
    key = (str(root), manifest.content_hash)
    if _VERIFIED.get(key) == stats:
        return
    digest = hashlib.sha256()
    for rel in listed:
        data = (root / rel).read_bytes()
        digest.update(data)
        expected = manifest.shard_hashes.get(rel)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise StaysError(f"{root / rel}: does not match manifest.json (changed or replaced after it was written); re-run the prepare step")
    if digest.hexdigest() != manifest.content_hash:
        raise StaysError(f"{root}: the shards do not match manifest.json's content_hash (a shard was changed or replaced after writing); re-run the prepare step")
    _VERIFIED[key] = stats


def check_shard_schema(path: Path, manifest: Manifest, columns: list[str] | None = None) -> None:
    """Compare a shard's Arrow schema with the manifest's, naming the first mismatching field."""
    try:
        actual = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise StaysError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]}); re-run the prepare step") from None
    for name, dtype in manifest.expected_columns().items():
        if columns is not None and name not in columns:
            continue
        index = actual.get_field_index(name)
        if index < 0:
            raise StaysError(f"{path}: missing required column {name!r}; re-run the prepare step")
        if not actual.field(index).type.equals(dtype):
            raise StaysError(f"{path}: column {name!r} has dtype {actual.field(index).type}, expected {dtype}; re-run the prepare step (or `sweeper data synth`) that wrote it")


def read_stays(stays_dir: str | Path, split: str | None = None, columns: list[str] | None = None) -> tuple[pa.Table, Manifest]:
    """Read a stays folder (or one split of it), validating manifest, shards and dtypes."""
    manifest = read_manifest(stays_dir)
    paths = shard_paths(stays_dir, manifest, split)
    for path in paths:
        check_shard_schema(path, manifest, columns)
    listed_under = {Path(stays_dir).absolute() / rel: name for name in SPLITS for rel in manifest.shards.get(name, [])}
    tables = []
    for path in paths:
        table = pq.read_table(path, columns=columns)
        found = set(table["split"].unique().to_pylist()) if "split" in table.column_names else {listed_under[path]}
        if found - {listed_under[path]}:
            raise StaysError(f"{path}: holds stays of split {sorted(map(str, found - {listed_under[path]}))[0]!r} but is listed under {listed_under[path]!r}; re-run the prepare step")
        tables.append(table)
    table = pa.concat_tables(tables)
    validate_table(table, manifest, where=str(stays_dir), require_splits=split is None and columns is None)
    return table, manifest
