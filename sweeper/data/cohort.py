"""Building stays rows from database tables, shared by the MIMIC-IV, MIMIC-III and eICU adapters.

Adapters collect observations as one long frame (stay key, feature name, value, hours since ICU
admission) and hand it here: values are converted to the feature's unit, implausible ones dropped
and counted (:mod:`sweeper.data.variables`), the window kept (``0 <= hours <= 48``; earlier and later
observations counted), and each stay's events and hourly bins built exactly as the PhysioNet 2012
adapter does (bin ``h`` holds ``h <= time < h+1``; a value at exactly 48 h goes to bin 47; the bin is
the mean of its observations, NaN and mask False where none; no carry-forward).
:func:`build_stays` then assembles the stays frame and its manifest from a cohort frame, those
events, diagnosis codes (phenotypes, :mod:`sweeper.data.phenotype_codes`) and any notes or images.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sweeper.data.phenotype_codes import phenotype_labels
from sweeper.data.schema import (
    MODALITIES,
    MODALITY_COLUMNS,
    PHENOTYPES,
    DemographicsInfo,
    Manifest,
    TimeseriesInfo,
    demo_column,
    presence_column,
)
from sweeper.data.variables import FEATURES, HOURS, INDEX, UNITS, convert, plausible


# One spelling of gender across sources (MIMIC's F/M, eICU's Female/Male, PhysioNet 2012's female/male),
# so a model trained on one cohort reads the same category on another.
GENDERS = {"f": "female", "female": "female", "m": "male", "male": "male"}


def clean_events(events: pd.DataFrame, counts: dict) -> pd.DataFrame:
    """``events`` (``key``, ``feature``, ``value``, ``hours``, optional ``convert``) → in-window,
    plausible, converted events with ``feature`` as its index in :data:`FEATURES`; what is dropped is
    counted in ``counts``."""
    if events.empty:
        return pd.DataFrame({"key": [], "feature": np.array([], dtype=np.int16), "value": [], "hours": []})
    values = events["value"].astype("float64")
    counts["non_numeric_values"] = counts.get("non_numeric_values", 0) + int(values.isna().sum())
    if "convert" in events.columns:
        values = convert(values, events["convert"])
    ok = plausible(events["feature"], values) | values.isna()
    dropped = events.loc[~ok, "feature"].value_counts()
    implausible = counts.setdefault("implausible_values_dropped", {})
    for name, n in dropped.items():
        implausible[name] = implausible.get(name, 0) + int(n)
    hours = events["hours"].astype("float64")
    counts["observations_before_admission"] = counts.get("observations_before_admission", 0) + int((ok & values.notna() & (hours < 0)).sum())
    counts["observations_after_48h"] = counts.get("observations_after_48h", 0) + int((ok & values.notna() & (hours > HOURS)).sum())
    keep = (ok & values.notna() & (hours >= 0) & (hours <= HOURS)).to_numpy()
    return pd.DataFrame({
        "key": events["key"].to_numpy()[keep],
        "feature": events["feature"].map(INDEX).to_numpy()[keep].astype(np.int16),
        "value": values.to_numpy()[keep],
        "hours": hours.to_numpy()[keep],
    })


def in_window(events: pd.DataFrame, counts: dict) -> pd.DataFrame:
    """Events (with ``hours``) of the first 48 h; those before ICU admission or after 48 h counted."""
    hours = events["hours"]
    counts["observations_before_admission"] = counts.get("observations_before_admission", 0) + int((hours < 0).sum())
    counts["observations_after_48h"] = counts.get("observations_after_48h", 0) + int((hours > HOURS).sum())
    return events[(hours >= 0) & (hours <= HOURS)]


def timeseries_columns(events: pd.DataFrame) -> dict:
    """Cleaned events → key → the five ``ts_*`` values of that stay (stays without events absent)."""
    out: dict = {}
    if events.empty:
        return out
    n = len(FEATURES)
    events = events.sort_values(["key", "hours"], kind="stable")
    for key, group in events.groupby("key", sort=False):
        hours = group["hours"].to_numpy(dtype=np.float64)
        features = group["feature"].to_numpy(dtype=np.int16)
        values = group["value"].to_numpy(dtype=np.float64)
        cell = np.minimum(hours.astype(np.int64), HOURS - 1) * n + features
        sums = np.bincount(cell, weights=values, minlength=HOURS * n)
        seen = np.bincount(cell, minlength=HOURS * n)
        mask = seen > 0
        hourly = np.full(HOURS * n, np.nan, dtype=np.float32)
        hourly[mask] = sums[mask] / seen[mask]
        out[key] = {
            "ts_hourly_values": hourly,
            "ts_hourly_mask": mask,
            "ts_event_feature": features,
            "ts_event_value": values.astype(np.float32),
            "ts_event_time": hours.astype(np.float32),
        }
    return out


def columns(numeric: list[str], categorical: list[str]) -> list[str]:
    cols = ["stay_id", "subject_id", "source", "label_ihm", "label_phenotypes", "label_los_hours"]
    cols += [presence_column(m) for m in MODALITIES]
    for modality in MODALITIES:
        cols += list(MODALITY_COLUMNS[modality])
    return cols + [demo_column(f) for f in [*numeric, *categorical]]


def stays_frame(rows: list[dict], numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Rows (each with whatever modality columns it has) → a frame with every column, typed."""
    frame = pd.DataFrame(rows, columns=columns(numeric, categorical))
    for modality in MODALITIES:
        present = frame[presence_column(modality)].fillna(False).astype(bool)
        frame[presence_column(modality)] = present
        for column in MODALITY_COLUMNS[modality]:  # object dtype: a column no stay has is all None, not NaN
            frame[column] = frame[column].astype(object).where(present, None)
    frame["label_phenotypes"] = frame["label_phenotypes"].astype(object).where(frame["label_phenotypes"].notna(), None)
    for column in ("label_ihm", "label_los_hours", "discharge_time", "radiology_time", *(demo_column(f) for f in numeric)):
        frame[column] = frame[column].astype("float32")
    for field in categorical:
        frame[demo_column(field)] = frame[demo_column(field)].astype(object).where(frame[demo_column(field)].notna(), None)
    frame[presence_column("demographics")] = frame[[demo_column(f) for f in [*numeric, *categorical]]].notna().any(axis=1)
    return frame


def manifest(source: str, modalities: list[str], numeric: list[str], categorical: list[str], notes: dict, excluded: dict, cxr_size: int | None = None) -> Manifest:
    return Manifest(
        source=source,
        modalities=[m for m in MODALITIES if m in modalities],
        timeseries=TimeseriesInfo(features=list(FEATURES), units=dict(UNITS), hours=HOURS),
        demographics=DemographicsInfo(numeric=list(numeric), categorical=list(categorical)),
        phenotypes=list(PHENOTYPES),
        cxr_size=cxr_size if "cxr" in modalities else None,
        excluded=dict(excluded),
        notes=dict(notes),
    )


def build_stays(
    source: str,
    cohort: pd.DataFrame,
    excluded: dict,
    events: pd.DataFrame,
    codes: pd.DataFrame | None,
    numeric: list[str],
    categorical: list[str],
    notes: dict,
    discharge: dict | None = None,
    radiology: dict | None = None,
    cxr: dict | None = None,
    cxr_size: int | None = None,
) -> tuple[pd.DataFrame, Manifest]:
    """The stays frame and manifest from a cohort frame and its parts.

    ``cohort`` has one row per stay: ``key`` (the source's stay id, as text), ``subject_id``,
    ``hadm_id`` (the key of ``codes``), ``ihm``, ``los_hours`` and the ``numeric`` and
    ``categorical`` demographic fields.

    ``events`` is raw (``key``, ``feature`` name, ``value``, ``hours``, ``convert``); ``codes`` the
    diagnosis codes (``key`` = hadm_id, ``code``, ``version``) or None when the table is absent;
    ``discharge``/``radiology`` key → (text, hours); ``cxr`` key → (PNG bytes list, hours list).
    None for a modality means its source is absent (the modality is not in the manifest)."""
    counts: dict = dict(notes)  # the adapter's counts, added to by cleaning
    series = timeseries_columns(clean_events(events, counts))
    labels = phenotype_labels(codes) if codes is not None else {}
    rows = []
    for stay in cohort.itertuples(index=False):
        row = {
            "stay_id": f"{source}-{stay.key}",
            "subject_id": str(stay.subject_id),
            "source": source,
            "label_ihm": stay.ihm,
            "label_phenotypes": labels.get(stay.hadm_id),
            "label_los_hours": stay.los_hours,
        }
        for field in numeric:
            value = getattr(stay, field)
            row[demo_column(field)] = None if pd.isna(value) else float(value)
        for field in categorical:
            value = getattr(stay, field)
            value = None if pd.isna(value) or str(value).strip() == "" else str(value)
            row[demo_column(field)] = GENDERS.get(value.strip().lower(), value) if field == "gender" and value else value
        ts = series.get(stay.key)
        row[presence_column("timeseries")] = ts is not None
        row.update(ts or {})
        for modality, found in (("discharge", discharge), ("radiology", radiology)):
            text = (found or {}).get(stay.key)
            row[presence_column(modality)] = text is not None
            if text is not None:
                row[f"{modality}_text"], row[f"{modality}_time"] = text
        images = (cxr or {}).get(stay.key)
        row[presence_column("cxr")] = images is not None
        if images is not None:
            row["cxr_images"], row["cxr_times"] = images[0], np.asarray(images[1], dtype=np.float32)
        rows.append(row)
    frame = stays_frame(rows, numeric, categorical)
    modalities = ["timeseries", "demographics"]
    modalities += [name for name, found in (("discharge", discharge), ("radiology", radiology), ("cxr", cxr)) if found is not None]
    phenotype_rows = sum(v is not None for v in frame["label_phenotypes"])
    notes = {**counts, "phenotypes_known": int(phenotype_rows), "hourly_aggregate": "mean"}
    return frame, manifest(source, modalities, numeric, categorical, notes, excluded, cxr_size)
