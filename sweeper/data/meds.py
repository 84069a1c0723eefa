"""A MEDS dataset (Medical Event Data Standard) → stays.

Input, as the MEDS schema lays it out: ``SRC/data/**/*.parquet`` with one row per event
(``subject_id`` int64, ``time`` timestamp, null for static events, ``code`` string,
``numeric_value`` float, optional ``text_value`` string), and ``SRC/metadata/`` with, when there,
``subject_splits.parquet`` (``subject_id``, ``split``: ``train``, ``tuning``, ``held_out``) and
``codes.parquet`` (not needed). MEDS has no notion of an ICU stay or a label: which codes start and
end a stay, mean death, carry diagnoses, demographics, notes or time-series values is said by a
small YAML file of code prefixes (:data:`DEFAULT_CODES`, shipped as ``meds_codes.yaml`` for the
MIMIC-IV MEDS extraction; copy, edit and pass it with ``--codes``).

- **Stays**: an event matching ``stay.start`` starts one, the subject's next ``stay.end`` event ends
  it (a start without an end is excluded, counted); adults (when ``birth`` is known) with stays of
  at least 48 h are kept, the first 48 h read (:mod:`sweeper.data.mimic_common`'s rules).
- **Labels**: ``label_ihm`` 1 when a ``death`` event falls between the stay's start and the first
  ``admission_end`` event after it, else 0; without such an event it is 1 only for a death before
  the stay's end, and unknown otherwise. ``label_los_hours``: end - start. Phenotypes: the
  ``diagnoses`` codes (ICD-9 / ICD-10, the code following the prefix) timed from the stay's start
  to the admission's end (MEDS extractions time diagnoses at discharge), through
  :mod:`sweeper.data.phenotype_codes`; none: unknown.
- **Time series**: events of the ``timeseries`` codes with a ``numeric_value``, converted where
  ``convert`` says so, on the shared variable list.
- **Demographics**: ``age`` from ``birth``; each ``demographics`` field is the code's remainder after
  its prefix, from a static event or the latest one before the stay.
- **Notes**: the ``text_value`` of ``notes.discharge`` events up to the admission's end (the
  discharge summary, kept and counted as for MIMIC-IV) and of ``notes.radiology`` events in the
  window. A modality no event gives is absent.
- **Splits**: ``metadata/subject_splits.parquet`` is kept when present (``tuning`` is val,
  ``held_out`` test); otherwise the engine's patient-level split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sweeper.data import mimic_common
from sweeper.data.cohort import build_stays
from sweeper.data.schema import Manifest, StaysError
from sweeper.data.variables import FEATURES, HOURS

SOURCE = "meds"
DEFAULT_CODES = Path(__file__).with_name("meds_codes.yaml")
SPLIT_NAMES = {"train": "train", "tuning": "val", "held_out": "test"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Stay(_Strict):
    start: str
    end: str


class Codes(_Strict):
    stay: _Stay
    admission_end: str | None = None
    death: str | None = None
    birth: str | None = None
    diagnoses: dict[str, str] = {}
    demographics: dict[str, str] = {}
    notes: dict[str, str] = {}
    convert: dict[str, list[str]] = {}
    timeseries: dict[str, list[str]] = {}


def read_codes(path: Path) -> Codes:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        codes = Codes.model_validate(raw)
    except FileNotFoundError:
        raise StaysError(f"--codes {path}: does not exist; copy the shipped meds_codes.yaml and edit it") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise StaysError(f"--codes {path}: cannot read ({str(err).strip().splitlines()[0]}); fix the YAML") from None
    except ValidationError as err:
        first = err.errors()[0]
        raise StaysError(f"--codes {path}: {'.'.join(map(str, first['loc'])) or 'top level'}: {first['msg']}; fix the file") from None
    for name, what in (("diagnoses", {"icd9", "icd10"}), ("notes", {"discharge", "radiology"}), ("timeseries", set(FEATURES)),
                       ("convert", {"fahrenheit", "pounds", "inches", "percent_or_fraction"})):
        unknown = sorted(set(getattr(codes, name)) - what)
        if unknown:
            raise StaysError(f"--codes {path}: {name}: unknown key {unknown[0]!r}; known: {', '.join(sorted(what))}")
    return codes


def _prefixes(codes: Codes) -> list[str]:
    found = [codes.stay.start, codes.stay.end, codes.admission_end, codes.death, codes.birth]
    found += [*codes.diagnoses.values(), *codes.demographics.values(), *codes.notes.values()]
    found += [p for prefixes in codes.timeseries.values() for p in prefixes]
    return [p for p in found if p]


def read_events(src: Path, codes: Codes) -> pd.DataFrame:
    """The events whose code matches a configured prefix, as a pandas frame sorted by subject and time."""
    files = sorted((src / "data").rglob("*.parquet"))
    if not files:
        raise StaysError(f"--src {src}: no data/**/*.parquet; point it at the MEDS dataset's root (holding data/ and metadata/)")
    tables = []
    for file in files:
        try:
            schema = pq.read_schema(file)
            names = set(schema.names)
            for column in ("subject_id", "time", "code", "numeric_value"):
                if column not in names:
                    raise StaysError(f"{file}: missing column {column!r} (MEDS data needs subject_id, time, code, numeric_value); use the MEDS files as written")
            columns = ["subject_id", "time", "code", "numeric_value"] + (["text_value"] if "text_value" in names else [])
            table = ds.dataset(file).to_table(columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise StaysError(f"{file}: not a readable parquet file ({str(err).splitlines()[0]}); use the MEDS files as written") from None
        if not pa.types.is_integer(table["subject_id"].type) or not pa.types.is_timestamp(table["time"].type) or not pa.types.is_string(table["code"].type):
            raise StaysError(f"{file}: subject_id must be integers, time timestamps, code strings (found {table['subject_id'].type}, {table['time'].type}, {table['code'].type}); use the MEDS files as written")
        keep = None
        for prefix in dict.fromkeys(_prefixes(codes)):
            match = pc.starts_with(table["code"], prefix)
            keep = match if keep is None else pc.or_(keep, match)
        table = table.filter(keep) if keep is not None else table
        if "text_value" not in table.column_names:
            table = table.append_column("text_value", pa.nulls(len(table), pa.string()))
        tables.append(table.cast(pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                                             ("numeric_value", pa.float64()), ("text_value", pa.string())])))
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values(["subject_id", "time"], kind="stable", na_position="first").reset_index(drop=True)


def _match(events: pd.DataFrame, prefix: str | None) -> pd.DataFrame:
    return events.iloc[0:0] if not prefix else events[events["code"].str.startswith(prefix)]


def _next_after(starts: pd.DataFrame, marks: pd.DataFrame, column: str) -> pd.Series:
    """For each stay (subject_id, intime), the time of the subject's first ``marks`` event at or after intime."""
    if marks.empty:
        return pd.Series(pd.NaT, index=starts.index)
    left = starts[["subject_id", "intime"]].reset_index().sort_values("intime")
    right = marks[["subject_id", "time"]].dropna().rename(columns={"time": column}).sort_values(column)
    merged = pd.merge_asof(left, right, left_on="intime", right_on=column, by="subject_id", direction="forward")
    return merged.set_index("index")[column].reindex(starts.index)


def build_cohort(events: pd.DataFrame, codes: Codes) -> tuple[pd.DataFrame, dict]:
    starts = _match(events, codes.stay.start).dropna(subset=["time"])[["subject_id", "time"]].rename(columns={"time": "intime"}).reset_index(drop=True)
    starts["outtime"] = _next_after(starts, _match(events, codes.stay.end), "outtime")
    no_end = int(starts["outtime"].isna().sum())
    starts = starts.dropna(subset=["outtime"]).reset_index(drop=True)
    starts["key"] = starts["subject_id"].astype(str) + "-" + starts.groupby("subject_id").cumcount().add(1).astype(str)
    starts["hadm_id"] = starts["key"]
    starts["admission_end"] = _next_after(starts, _match(events, codes.admission_end), "admission_end")
    birth = _match(events, codes.birth).dropna(subset=["time"]).drop_duplicates("subject_id").set_index("subject_id")["time"]
    starts["age"] = (starts["intime"] - starts["subject_id"].map(birth)).dt.days / 365.25
    death = _match(events, codes.death).dropna(subset=["time"]).drop_duplicates("subject_id").set_index("subject_id")["time"]
    died = starts["subject_id"].map(death)
    until = starts["admission_end"].fillna(starts["outtime"])
    ihm = ((died >= starts["intime"]) & (died <= until)).astype("float32")
    ihm[starts["admission_end"].isna() & ~(ihm == 1)] = np.nan
    starts["ihm"] = ihm
    for field, prefix in codes.demographics.items():
        found = _match(events, prefix)
        static = found[found["time"].isna()].drop_duplicates("subject_id", keep="last").set_index("subject_id")["code"]
        timed = found.dropna(subset=["time"])
        value = starts["subject_id"].map(static).astype(object)
        if not timed.empty:
            latest = pd.merge_asof(starts[["subject_id", "intime"]].reset_index().sort_values("intime"), timed[["subject_id", "time", "code"]].sort_values("time"),
                                   left_on="intime", right_on="time", by="subject_id", direction="backward").set_index("index")["code"]
            value = value.fillna(latest.reindex(starts.index))
        starts[field] = value.str.slice(len(prefix)).where(value.notna(), None)
    cohort, excluded = mimic_common.apply_cohort_rules(starts)
    excluded = {"stay_start_without_end": no_end, **excluded}
    return cohort, excluded


def _in_stay(found: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """``found`` events of each stay's subject from its start to its admission's end (or the stay's end)."""
    merged = found.merge(cohort[["subject_id", "key", "intime", "outtime", "admission_end"]], on="subject_id")
    end = merged["admission_end"].fillna(merged["outtime"])
    return merged[(merged["time"] >= merged["intime"]) & (merged["time"] <= end)]


def prepare(src: str | Path, codes: str | Path | None = None) -> tuple[pd.DataFrame, Manifest]:
    """Read a MEDS dataset from ``src`` into a stays frame (split kept when given) and its manifest."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the MEDS dataset's root (holding data/ and metadata/)")
    config_path = Path(codes) if codes is not None else DEFAULT_CODES
    config = read_codes(config_path)
    events = read_events(src, config)
    cohort, excluded = build_cohort(events, config)
    if cohort.empty:
        raise StaysError(f"--src {src}: no ICU stay of at least 48 h (codes {config.stay.start} ... {config.stay.end}); check --codes against the dataset's codes")
    cohort["admission_end"] = cohort["admission_end"].astype("datetime64[us]")
    parts = []
    for feature, prefixes in config.timeseries.items():
        for prefix in prefixes:
            found = _match(events, prefix).dropna(subset=["time", "numeric_value"])
            how = next((h for h, ps in config.convert.items() if prefix in ps), None)
            parts.append(found.assign(feature=feature, value=found["numeric_value"], convert=how))
    found = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["subject_id", "time", "feature", "value", "convert"])
    # Each stay takes its subject's observations of its own window (another stay's are not counted as dropped).
    found = found.merge(cohort[["subject_id", "key", "intime"]], on="subject_id")
    found["hours"] = (found["time"] - found["intime"]).dt.total_seconds() / 3600.0
    series = found[(found["hours"] >= 0) & (found["hours"] <= HOURS)][["key", "feature", "value", "hours", "convert"]]
    diagnosis_parts = []
    for version, prefix in config.diagnoses.items():
        found = _in_stay(_match(events, prefix), cohort)
        diagnosis_parts.append(pd.DataFrame({"key": found["key"], "code": found["code"].str.slice(len(prefix)), "version": 9 if version == "icd9" else 10}))
    diagnoses = pd.concat(diagnosis_parts, ignore_index=True) if diagnosis_parts else None
    counts: dict = {}
    texts: dict[str, dict | None] = {"discharge": None, "radiology": None}
    for kind, prefix in config.notes.items():
        found = _match(events, prefix).dropna(subset=["time", "text_value"]).rename(columns={"time": "charttime", "text_value": "text"})
        if found.empty:
            continue
        if kind == "discharge":
            found = _in_stay(found.rename(columns={"charttime": "time"}), cohort).rename(columns={"time": "charttime"})
            texts[kind] = mimic_common.discharge_texts(found[["key", "charttime", "text"]].rename(columns={"key": "hadm_id"}), cohort, counts)
        else:
            texts[kind] = mimic_common.window_texts(found[["subject_id", "charttime", "text"]], cohort)
    notes: dict[str, Any] = {"codes": config_path.name, "events_matched": len(events), **counts}
    frame, manifest = build_stays(SOURCE, cohort, excluded, series, diagnoses, ["age"], list(config.demographics), notes,
                                  texts["discharge"], texts["radiology"])
    return _keep_splits(src, frame, manifest)


def _keep_splits(src: Path, frame: pd.DataFrame, manifest: Manifest) -> tuple[pd.DataFrame, Manifest]:
    path = src / "metadata" / "subject_splits.parquet"
    if not path.is_file():
        return frame, manifest
    try:
        splits = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as err:
        raise StaysError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]}); use the MEDS files as written") from None
    if not {"subject_id", "split"} <= set(splits.columns):
        raise StaysError(f"{path}: needs columns subject_id and split (has {', '.join(splits.columns)}); use the MEDS files as written")
    unknown = sorted(set(splits["split"]) - set(SPLIT_NAMES))
    if unknown:
        raise StaysError(f"{path}: split {unknown[0]!r} is not one of {', '.join(SPLIT_NAMES)}; use the MEDS splits")
    split = frame["subject_id"].map(dict(zip(splits["subject_id"].astype(str), splits["split"].map(SPLIT_NAMES))))
    if split.isna().any():
        raise StaysError(f"{path}: no split for subject_id {frame['subject_id'][split.isna()].iloc[0]}; use the splits that belong to the data")
    manifest.split = {"method": "the MEDS dataset's subject splits (tuning is val, held_out test)"}
    return frame.assign(split=split.to_numpy()), manifest
