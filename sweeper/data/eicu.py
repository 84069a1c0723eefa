"""eICU Collaborative Research Database (v2.0) → stays.

Input, as PhysioNet distributes it: one folder ``SRC`` of ``<table>.csv.gz`` (or ``.csv``) files.
``patient`` is required; ``vitalPeriodic``, ``vitalAperiodic``, ``lab``, ``nurseCharting``,
``respiratoryCharting`` (time series) and ``diagnosis`` (phenotypes) are read when present, and
listed in the manifest's ``notes["absent"]`` when not (the open demo lacks ``lab``,
``nurseCharting`` and ``vitalPeriodic``).

Output: one stay per ICU unit stay (``patientunitstayid``) of an adult (``age`` >= 18; eICU writes
90 and older as ``> 89``, read as 90) that lasted at least 48 h (``unitdischargeoffset``), the
others counted in ``excluded``; ``stay_id`` ``eicu-<patientunitstayid>``, ``subject_id`` the
``uniquepid``. Times are eICU's offsets in minutes from unit admission, so the window is offsets
0 to 2880. Labels: ``label_ihm`` from ``hospitaldischargestatus`` (``Expired`` 1, ``Alive`` 0,
empty: unknown); ``label_los_hours`` ``unitdischargeoffset / 60``; ``label_phenotypes`` from
the ICD codes of the unit stay's ``diagnosis`` rows (eICU gives ICD-9 and ICD-10 codes together
in ``icd9code``, e.g. ``"401.9, I10"``; each is read with
:func:`~sweeper.data.phenotype_codes.guess_version`); a stay without any code has unknown phenotypes.
Demographics: ``age``, ``height`` (``admissionheight``, cm), ``weight`` (``admissionweight``, kg)
numeric; ``gender``, ``ethnicity``, ``unittype``, ``hospitalid`` categorical. Time series on the
shared list of :mod:`sweeper.data.variables`. eICU's ``note`` table holds structured fragments of
progress notes, not discharge summaries or radiology reports: it is not read, and the text and
image modalities are absent.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweeper.data import tables
from sweeper.data.cohort import build_stays, in_window
from sweeper.data.phenotype_codes import guess_version
from sweeper.data.schema import Manifest, StaysError
from sweeper.data.variables import EICU_APERIODIC, EICU_CONVERT, EICU_LABS, EICU_NURSE, EICU_PERIODIC, HOURS

SOURCE = "eicu"
NUMERIC = ["age", "height", "weight"]
CATEGORICAL = ["gender", "ethnicity", "unittype", "hospitalid"]
MIN_AGE = 18
_WINDOW = (0, HOURS * 60)


def read_cohort(src: Path) -> tuple[pd.DataFrame, dict, int]:
    path = tables.require_table(src, "patient", "the ICU unit stays")
    raw = tables.read_table(path, ["patientunitstayid", "uniquepid", "gender", "age", "ethnicity", "hospitalid", "unittype",
                                   "admissionheight", "admissionweight", "hospitaldischargestatus", "unitdischargeoffset"])
    key = tables.ids(raw, "patientunitstayid", path)
    if key.duplicated().any():
        raise StaysError(f"{path}: patientunitstayid {key[key.duplicated()].iloc[0]} appears twice; use the table as distributed")
    status = raw["hospitaldischargestatus"]
    if not status.isin(["Alive", "Expired"]).where(status.notna(), True).all():
        bad = status[status.notna() & ~status.isin(["Alive", "Expired"])].iloc[0]
        raise StaysError(f"{path}: column 'hospitaldischargestatus' holds {bad!r}; expected Alive, Expired or empty; use the table as distributed")
    offset = tables.numbers(raw, "unitdischargeoffset")
    if offset.isna().any():
        raise StaysError(f"{path}: column 'unitdischargeoffset' must be a number of minutes in every row; use the table as distributed")
    age = pd.to_numeric(raw["age"].replace("> 89", "90"), errors="coerce")
    cohort = pd.DataFrame({
        "key": key.astype(str), "subject_id": raw["uniquepid"], "hadm_id": key.astype(str),
        "ihm": status.map({"Alive": 0.0, "Expired": 1.0}).astype("float32"), "los_hours": offset / 60.0,
        "age": age, "height": tables.numbers(raw, "admissionheight"), "weight": tables.numbers(raw, "admissionweight"),
        "gender": raw["gender"], "ethnicity": raw["ethnicity"], "unittype": raw["unittype"], "hospitalid": raw["hospitalid"],
    })
    if cohort["subject_id"].isna().any():
        raise StaysError(f"{path}: column 'uniquepid' is empty in some rows; use the table as distributed")
    n = len(cohort)
    short = cohort["los_hours"] < HOURS
    young = ~short & (cohort["age"] < MIN_AGE)
    excluded = {"icu_stay_shorter_than_48h": int(short.sum()), "age_under_18": int(young.sum())}
    return cohort[~short & ~young].reset_index(drop=True), excluded, n


def _events(src: Path, name: str, columns: list[str], keys: set[str], absent: list[str], keep=None, each=None) -> pd.DataFrame | None:
    """The cohort stays' rows of table ``name`` (None when absent); ``each`` turns each chunk into
    windowed events as it streams (vitalPeriodic alone is ~150 M rows in the full database)."""
    path = tables.find_table(src, name)
    if path is None:
        absent.append(name)
        return None

    def typed(chunk: pd.DataFrame) -> pd.DataFrame:
        chunk = chunk.assign(patientunitstayid=tables.ids(chunk, "patientunitstayid", path).astype(str))
        return chunk if each is None else each(chunk)

    return tables.read_table(path, columns, keep=lambda c: c["patientunitstayid"].isin(keys) & (keep(c) if keep else True), each=typed)


def _long(raw: pd.DataFrame, offset: str, value: str, feature: pd.Series, counts: dict) -> pd.DataFrame:
    """Rows → events (``key``, ``feature``, ``value``, ``hours``, ``convert``) of the first 48 h."""
    events = pd.DataFrame({
        "key": raw["patientunitstayid"], "feature": feature, "value": tables.numbers(raw, value),
        "hours": tables.numbers(raw, offset) / 60.0, "convert": feature.map(EICU_CONVERT),
    }).dropna(subset=["value", "feature"])
    return in_window(events, counts)


def read_events(src: Path, keys: set[str], absent: list[str], counts: dict) -> pd.DataFrame:
    counts.update(observations_before_admission=0, observations_after_48h=0)
    parts = []
    for name, columns in (("vitalPeriodic", EICU_PERIODIC), ("vitalAperiodic", EICU_APERIODIC)):
        def wide_to_long(raw, columns=columns):
            return pd.concat([_long(raw, "observationoffset", c, pd.Series(f, index=raw.index), counts) for c, f in columns.items()], ignore_index=True)
        parts.append(_events(src, name, ["patientunitstayid", "observationoffset", *columns], keys, absent, each=wide_to_long))
    parts.append(_events(src, "lab", ["patientunitstayid", "labresultoffset", "labname", "labresult"], keys, absent,
                         keep=lambda c: c["labname"].isin(list(EICU_LABS)),
                         each=lambda raw: _long(raw, "labresultoffset", "labresult", raw["labname"].map(EICU_LABS), counts)))

    def nurse(raw):
        pairs = pd.Series(list(zip(raw["nursingchartcelltypevallabel"], raw["nursingchartcelltypevalname"])), index=raw.index, dtype=object)
        return _long(raw, "nursingchartoffset", "nursingchartvalue", pairs.map(EICU_NURSE), counts)
    columns = ["patientunitstayid", "nursingchartoffset", "nursingchartcelltypevallabel", "nursingchartcelltypevalname", "nursingchartvalue"]
    parts.append(_events(src, "nurseCharting", columns, keys, absent, keep=lambda c: c["nursingchartcelltypevallabel"].isin({k[0] for k in EICU_NURSE}), each=nurse))
    parts.append(_events(src, "respiratoryCharting", ["patientunitstayid", "respchartoffset", "respchartvaluelabel", "respchartvalue"], keys, absent,
                         keep=lambda c: c["respchartvaluelabel"] == "FiO2",
                         each=lambda raw: _long(raw, "respchartoffset", "respchartvalue", pd.Series("fio2", index=raw.index), counts)))
    parts = [p for p in parts if p is not None and not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["key", "feature", "value", "hours", "convert"])


def read_codes(src: Path, keys: set[str], absent: list[str]) -> pd.DataFrame | None:
    raw = _events(src, "diagnosis", ["patientunitstayid", "icd9code"], keys, absent)
    if raw is None:
        return None
    codes = raw.dropna(subset=["icd9code"]).assign(code=lambda f: f["icd9code"].str.split(",")).explode("code")
    codes["code"] = codes["code"].str.strip()
    codes = codes[codes["code"] != ""]
    return pd.DataFrame({"key": codes["patientunitstayid"], "code": codes["code"], "version": codes["code"].map(guess_version)})


def prepare(src: str | Path) -> tuple[pd.DataFrame, Manifest]:
    """Read eICU-CRD from ``src`` into a stays frame and its manifest (no split yet)."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the eICU-CRD folder holding patient.csv.gz")
    cohort, excluded, n = read_cohort(src)
    if cohort.empty:
        raise StaysError(f"--src {src}: no ICU stay of at least 48 h of an adult among {n}; use the complete patient table")
    keys = set(cohort["key"])
    absent: list[str] = []
    counts: dict = {}
    events = read_events(src, keys, absent, counts)
    codes = read_codes(src, keys, absent)
    notes = {"unit_stays_read": n, "absent": absent, "age_unknown": int(cohort["age"].isna().sum()), **counts}
    return build_stays(SOURCE, cohort, excluded, events, codes, NUMERIC, CATEGORICAL, notes)
