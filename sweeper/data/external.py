"""A second cohort seen through the eyes of a model trained on the first (external validation).

A model reads features by position; a cohort prepared from another source may list other
features, in another order, or never observe some. :func:`compare` says what the external cohort
lacks of what the training cohort has (modalities, time-series features by name, units that
differ, demographic fields, categories unseen in training, phenotype labels) — what is absent is
reported, never silently zero-filled — and :func:`remap_timeseries` lays an external stay's time
series out in the training cohort's feature order, matching features **by name**: an external
feature the training cohort does not have is dropped (counted), a training feature the external
cohort does not have stays unobserved (NaN, mask False). ``sweeper data describe EXT --against
TRAIN`` prints the comparison.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sweeper.data.schema import Manifest


def observed_features(table: pa.Table, manifest: Manifest) -> set[str]:
    """Names of the time-series features with at least one event in ``table``."""
    if manifest.timeseries is None or "ts_event_feature" not in table.column_names:
        return set()
    indices = pc.unique(pc.list_flatten(table["ts_event_feature"])).to_pylist()
    return {manifest.timeseries.features[i] for i in indices if i is not None}


def compare(train: Manifest, external: Manifest, external_observed: set[str]) -> dict:
    """What ``external`` lacks of what a model trained on ``train`` reads (empty lists: nothing)."""
    train_ts = train.timeseries.features if train.timeseries else []
    ext_ts = external.timeseries.features if external.timeseries else []
    units = {}
    if train.timeseries and external.timeseries:
        for name in set(train_ts) & set(ext_ts):
            a, b = train.timeseries.units.get(name), external.timeseries.units.get(name)
            if a != b:
                units[name] = [a, b]
    categories = {}
    for field in set(train.demographics.categorical) & set(external.demographics.categorical):
        known = set(train.demographics.categories.get(field, []))
        unseen = sorted(set(external.demographics.categories.get(field, [])) - known)
        if unseen:
            categories[field] = unseen
    return {
        "modalities_absent": [m for m in train.modalities if m not in external.modalities],
        "features_absent": [f for f in train_ts if f not in ext_ts],
        "features_never_observed": [f for f in train_ts if f in ext_ts and f not in external_observed],
        "features_not_read": [f for f in ext_ts if f not in train_ts],
        "units_differ": dict(sorted(units.items())),
        "demographics_absent": [f for f in train.demographics.numeric + train.demographics.categorical
                                if f not in external.demographics.numeric + external.demographics.categorical],
        "categories_unseen_in_training": categories,
        "phenotypes_absent": [p for p in train.phenotypes if p not in external.phenotypes],
    }


def remap_timeseries(frame: pd.DataFrame, external: Manifest, train: Manifest) -> tuple[pd.DataFrame, int]:
    """``frame``'s ``ts_*`` columns laid out in ``train``'s feature order (by name); returns the new
    frame and the number of events of features ``train`` does not have (dropped)."""
    ext, to = external.timeseries.features, train.timeseries.features
    where = {name: i for i, name in enumerate(to)}
    index = np.array([where.get(name, -1) for name in ext], dtype=np.int64)
    hours, n_to, n_ext = min(train.timeseries.hours, external.timeseries.hours), len(to), len(ext)
    dropped = 0
    out = frame.copy()
    columns = {c: [] for c in ("ts_hourly_values", "ts_hourly_mask", "ts_event_feature", "ts_event_value", "ts_event_time")}
    for values, mask, feature, value, time in zip(*(frame[c] for c in columns)):
        if feature is None or (isinstance(feature, float) and np.isnan(feature)):
            for c in columns:
                columns[c].append(None)
            continue
        mapped = index[np.asarray(feature, dtype=np.int64)]
        kept = mapped >= 0
        dropped += int((~kept).sum())
        columns["ts_event_feature"].append(mapped[kept].astype(np.int16))
        columns["ts_event_value"].append(np.asarray(value, dtype=np.float32)[kept])
        columns["ts_event_time"].append(np.asarray(time, dtype=np.float32)[kept])
        new_values = np.full((train.timeseries.hours, n_to), np.nan, dtype=np.float32)
        new_mask = np.zeros((train.timeseries.hours, n_to), dtype=bool)
        old_values = np.asarray(values, dtype=np.float32).reshape(-1, n_ext)[:hours]
        old_mask = np.asarray(mask, dtype=bool).reshape(-1, n_ext)[:hours]
        shared = index >= 0
        new_values[:hours, index[shared]] = old_values[:, shared]
        new_mask[:hours, index[shared]] = old_mask[:, shared]
        columns["ts_hourly_values"].append(new_values.ravel())
        columns["ts_hourly_mask"].append(new_mask.ravel())
    for column, rows in columns.items():
        out[column] = rows
    return out, dropped


def compare_text(report: dict) -> str:
    """The comparison as lines for ``sweeper data describe --against``."""
    lines = ["against the training cohort (what a model trained there reads and this cohort lacks):"]
    for key, value in report.items():
        if isinstance(value, list):
            shown = ", ".join(value) if len(value) <= 10 else f"{len(value)}: {', '.join(value[:10])}, …"
        else:
            shown = "; ".join(f"{k}: {v}" for k, v in value.items())
        lines.append(f"  {key.replace('_', ' ')}: {shown or 'none'}")
    return "\n".join(lines)


def read_external(stays_dir, train: Manifest, modalities, tasks) -> tuple[pa.Table, dict]:
    """Every stay of an external cohort as a model trained on ``train`` reads it: the run's columns
    (``needed_columns`` of ``train``), time series remapped by name (:func:`remap_timeseries`), and
    what the cohort lacks left absent (a modality it lacks is not present; a demographic field it
    lacks is missing, the encoding's own missing flag), never zero-filled. Returns the table and
    :func:`compare`'s report with ``events_dropped`` and ``n_stays`` added."""
    import pyarrow.parquet as pq

    from sweeper.data.loading import needed_columns
    from sweeper.data.schema import StaysError, demo_column, presence_column, read_manifest
    from sweeper.data.stays import read_stays, shard_paths

    external = read_manifest(stays_dir)
    have = set(pq.read_schema(shard_paths(stays_dir, external)[0]).names)
    wanted = needed_columns(train, modalities, tasks)
    labels = [c for c in needed_columns(train, (), tasks)[1:] if c not in have]
    if labels:
        raise StaysError(f"{stays_dir}: external cohort has no {labels[0]!r} column; it cannot be scored on this run's tasks")
    usable = [m for m in modalities if m in external.modalities]
    extra = ["ts_event_feature"] if "timeseries" in usable else []
    table, _ = read_stays(stays_dir, columns=[c for c in dict.fromkeys(wanted + extra) if c in have])
    report = compare(train, external, observed_features(table, external))
    frame = table.to_pandas()
    dropped = 0
    if "timeseries" in usable and train.timeseries is not None:
        frame, dropped = remap_timeseries(frame, external, train)
    for modality in modalities:
        if modality not in usable:
            frame[presence_column(modality)] = False
    for column in wanted:
        if column not in frame.columns:  # a field of an absent modality, or a demographic field the cohort lacks
            numeric = column in {demo_column(f) for f in train.demographics.numeric}
            frame[column] = np.nan if numeric else None
    report.update(events_dropped=dropped, n_stays=len(frame))
    return pa.Table.from_pandas(frame[wanted], preserve_index=False), report
