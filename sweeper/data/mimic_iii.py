"""MIMIC-III v1.4 → stays, sharing the MIMIC-IV adapter's rules (:mod:`sweeper.data.mimic_common`).

Input, as PhysioNet distributes it: one folder ``SRC`` of upper-case tables, each
``<NAME>.csv.gz`` or ``<NAME>.csv`` (column names upper case too; read case-insensitively):
``ICUSTAYS``, ``ADMISSIONS``, ``PATIENTS`` (required), ``CHARTEVENTS`` and ``LABEVENTS`` (time
series), ``DIAGNOSES_ICD`` (phenotypes) and ``NOTEEVENTS`` (notes), each optional (listed in the
manifest's ``notes["absent"]`` when missing).

What differs from MIMIC-IV:

- **Age** is the years from ``DOB`` to the ICU admission; MIMIC-III shifts the birth date of
  patients older than 89 by 300 years, so any age over 89 is read as 90.
- **Chart events** both from CareVue (item ids below 10 000) and MetaVision (22xxxx), mapped by
  :data:`~sweeper.data.variables.CHART_ITEMS`; rows with ``ERROR`` 1 are left out and counted in
  ``notes["chart_rows_marked_error"]``.
- **Diagnoses** are all ICD-9 (``ICD9_CODE``).
- **Notes** come from ``NOTEEVENTS``: ``CATEGORY`` ``Discharge summary`` (its ``CHARTDATE``, a day
  without time, is the note's time) and ``Radiology`` (``CHARTTIME``, or ``CHARTDATE`` when it has
  none); rows with ``ISERROR`` 1 are left out. There are no images (MIMIC-CXR links to MIMIC-IV).
- **Demographics**: ``age``; ``gender``, ``ethnicity``, ``admission_type``, ``insurance``,
  ``first_careunit``.

Stays are named ``mimic-iii-<ICUSTAY_ID>``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweeper.data import mimic_common, tables
from sweeper.data.cohort import build_stays
from sweeper.data.schema import Manifest, StaysError
from sweeper.data.variables import CHART_ITEMS

SOURCE = "mimic-iii"
CATEGORICAL = ["gender", "ethnicity", "admission_type", "insurance", "first_careunit"]
OLDEST = 90.0


def read_cohort(src: Path) -> pd.DataFrame:
    path = tables.require_table(src, "ICUSTAYS", "the ICU stays")
    raw = tables.read_table(path, ["subject_id", "hadm_id", "icustay_id", "first_careunit", "intime", "outtime"])
    stays = pd.DataFrame({
        "key": tables.ids(raw, "icustay_id", path).astype(str), "subject_id": tables.ids(raw, "subject_id", path),
        "hadm_id": tables.ids(raw, "hadm_id", path), "first_careunit": raw["first_careunit"],
        "intime": tables.times(raw, "intime", path), "outtime": tables.times(raw, "outtime", path),
    })
    if stays["key"].duplicated().any():
        raise StaysError(f"{path}: ICUSTAY_ID {stays['key'][stays['key'].duplicated()].iloc[0]} appears twice; use the table as distributed")
    apath = tables.require_table(src, "ADMISSIONS", "hospital admissions: mortality, ethnicity, insurance")
    adm = tables.read_table(apath, ["hadm_id", "admission_type", "insurance", "ethnicity", "hospital_expire_flag"])
    flag = pd.to_numeric(adm["hospital_expire_flag"], errors="coerce")
    if not flag.isin([0, 1]).all():
        raise StaysError(f"{apath}: column 'HOSPITAL_EXPIRE_FLAG' must be 0 or 1; use the table as distributed")
    adm = adm.assign(hadm_id=tables.ids(adm, "hadm_id", apath), ihm=flag.astype("float32")).drop(columns="hospital_expire_flag")
    ppath = tables.require_table(src, "PATIENTS", "patients: birth date and gender")
    pat = tables.read_table(ppath, ["subject_id", "gender", "dob"])
    pat = pat.assign(subject_id=tables.ids(pat, "subject_id", ppath), dob=tables.times(pat, "dob", ppath))
    cohort = stays.merge(adm, on="hadm_id", how="left", indicator=True)
    if (cohort["_merge"] != "both").any():
        raise StaysError(f"{apath}: no row for HADM_ID {cohort.loc[cohort['_merge'] != 'both', 'hadm_id'].iloc[0]} (an ICU stay in {path}); use the complete ADMISSIONS table")
    cohort = cohort.drop(columns="_merge").merge(pat, on="subject_id", how="left", indicator=True)
    if (cohort["_merge"] != "both").any():
        raise StaysError(f"{ppath}: no row for SUBJECT_ID {cohort.loc[cohort['_merge'] != 'both', 'subject_id'].iloc[0]} (an ICU stay in {path}); use the complete PATIENTS table")
    # Whole years between birth date and ICU admission (dates shifted 300 years for patients over 89).
    years = cohort["intime"].dt.year - cohort["dob"].dt.year
    before_birthday = (cohort["intime"].dt.month < cohort["dob"].dt.month) | (
        (cohort["intime"].dt.month == cohort["dob"].dt.month) & (cohort["intime"].dt.day < cohort["dob"].dt.day))
    cohort["age"] = (years - before_birthday.astype(int)).astype("float64").clip(upper=OLDEST)
    return cohort.drop(columns=["_merge", "dob"])


def read_events(src: Path, cohort: pd.DataFrame, absent: list[str], counts: dict) -> pd.DataFrame:
    parts = []
    path = tables.find_table(src, "CHARTEVENTS")
    if path is None:
        absent.append("CHARTEVENTS")
    else:
        keys, items = set(cohort["key"]), {str(i) for i in CHART_ITEMS}
        counts["chart_rows_marked_error"] = 0
        parts.append(tables.read_table(path, ["icustay_id", "itemid", "charttime", "valuenum", "error"], optional=("error",),
                                       keep=lambda c: c["itemid"].isin(items) & c["icustay_id"].isin(keys),
                                       each=lambda c: mimic_common.chart_chunk(c, path, cohort, "icustay_id", counts)))
    path = tables.find_table(src, "LABEVENTS")
    if path is None:
        absent.append("LABEVENTS")
    else:
        parts.append(mimic_common.read_labs(path, cohort))
    return mimic_common.events_frame(parts)


def read_codes(src: Path, absent: list[str]) -> pd.DataFrame | None:
    path = tables.find_table(src, "DIAGNOSES_ICD")
    if path is None:
        absent.append("DIAGNOSES_ICD")
        return None
    raw = tables.read_table(path, ["hadm_id", "icd9_code"]).dropna(subset=["icd9_code"])
    return pd.DataFrame({"key": tables.ids(raw, "hadm_id", path), "code": raw["icd9_code"], "version": 9})


def read_notes(src: Path, cohort: pd.DataFrame, absent: list[str], counts: dict) -> tuple[dict | None, dict | None]:
    path = tables.find_table(src, "NOTEEVENTS")
    if path is None:
        absent.append("NOTEEVENTS")
        return None, None
    raw = tables.read_table(path, ["subject_id", "hadm_id", "chartdate", "charttime", "category", "iserror", "text"], optional=("iserror",),
                            keep=lambda c: c["category"].str.strip().isin(["Discharge summary", "Radiology"]))
    raw = raw[~raw["iserror"].fillna("").str.strip().isin(["1", "1.0"]).to_numpy()]
    when = tables.times(raw, "charttime", path, required=False).fillna(tables.times(raw, "chartdate", path))
    notes = pd.DataFrame({"subject_id": tables.ids(raw, "subject_id", path), "hadm_id": tables.ids(raw, "hadm_id", path, required=False),
                          "charttime": when, "text": raw["text"].fillna(""), "category": raw["category"].str.strip()})
    discharge = notes[notes["category"] == "Discharge summary"].sort_values("charttime", kind="stable")
    radiology = notes[notes["category"] == "Radiology"]
    return mimic_common.discharge_texts(discharge, cohort, counts), mimic_common.window_texts(radiology, cohort)


def prepare(src: str | Path) -> tuple[pd.DataFrame, Manifest]:
    """Read MIMIC-III v1.4 from ``src`` into a stays frame and its manifest (no split yet)."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the MIMIC-III folder holding ICUSTAYS.csv.gz")
    cohort = read_cohort(src)
    n_icu = len(cohort)
    cohort, excluded = mimic_common.apply_cohort_rules(cohort)
    if cohort.empty:
        raise StaysError(f"--src {src}: no ICU stay of at least 48 h of an adult among {n_icu}; use the complete ICUSTAYS table")
    absent: list[str] = []
    counts: dict = {}
    events = read_events(src, cohort, absent, counts)
    codes = read_codes(src, absent)
    discharge, radiology = read_notes(src, cohort, absent, counts)
    notes = {"icu_stays_read": n_icu, "absent": absent, **counts}
    return build_stays(SOURCE, cohort, excluded, events, codes, ["age"], CATEGORICAL, notes, discharge, radiology)
