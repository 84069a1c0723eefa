"""MIMIC-IV (with MIMIC-IV-Note and MIMIC-CXR-JPG when given) → stays.

Input, as PhysioNet distributes it (docs/data-sources.md):

- ``SRC/hosp/``: ``patients``, ``admissions`` (required), ``diagnoses_icd`` and ``labevents``;
- ``SRC/icu/``: ``icustays`` (required) and ``chartevents``;
- MIMIC-IV-Note (``--note DIR``, default ``SRC/note`` when it exists): ``discharge`` and ``radiology``;
- MIMIC-CXR-JPG (``--cxr DIR``, default ``SRC/cxr`` when it exists): its root, read by
  :mod:`sweeper.data.mimic_media`.

every table as ``<name>.csv.gz`` or ``.csv``. Any table not marked required may be absent: its
part is then missing for every stay (absent time series come from the table that is there; an
absent note or image source leaves that modality out of the manifest), and the manifest's
``notes["absent"]`` lists what was not found. ``sweeper data describe`` prints it.

Output: one stay per ICU stay of the cohort (:mod:`sweeper.data.mimic_common`: adults, >= 48 h,
first 48 h), ``stay_id`` ``mimic-iv-<stay_id>``, ``subject_id`` the patient; demographics ``age``
(``anchor_age`` moved to the year of ICU admission) and ``gender``, ``race``, ``admission_type``,
``insurance``, ``first_careunit``; time series from :mod:`sweeper.data.variables`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweeper.data import mimic_common, tables
from sweeper.data.cohort import build_stays
from sweeper.data.mimic_media import find_cxr_root, read_cxr, read_notes
from sweeper.data.schema import Manifest, StaysError
from sweeper.data.variables import CHART_ITEMS

SOURCE = "mimic-iv"
CATEGORICAL = ["gender", "race", "admission_type", "insurance", "first_careunit"]


def _folder(src: Path, name: str) -> Path:
    folder = src / name
    if not folder.is_dir():
        raise StaysError(f"--src {src}: no {name}/ folder; point --src at the MIMIC-IV folder holding hosp/ and icu/")
    return folder


def read_cohort(src: Path) -> tuple[pd.DataFrame, Path]:
    """icustays + admissions + patients → the cohort frame :mod:`sweeper.data.mimic_common` expects."""
    hosp, icu = _folder(src, "hosp"), _folder(src, "icu")
    path = tables.require_table(icu, "icustays", "the ICU stays")
    raw = tables.read_table(path, ["subject_id", "hadm_id", "stay_id", "first_careunit", "intime", "outtime"])
    stays = pd.DataFrame({
        "key": tables.ids(raw, "stay_id", path).astype(str),
        "subject_id": tables.ids(raw, "subject_id", path),
        "hadm_id": tables.ids(raw, "hadm_id", path),
        "first_careunit": raw["first_careunit"],
        "intime": tables.times(raw, "intime", path),
        "outtime": tables.times(raw, "outtime", path),
    })
    if stays["key"].duplicated().any():
        raise StaysError(f"{path}: stay_id {stays['key'][stays['key'].duplicated()].iloc[0]} appears twice; use the table as distributed")
    apath = tables.require_table(hosp, "admissions", "hospital admissions: mortality, race, insurance")
    adm = tables.read_table(apath, ["hadm_id", "admission_type", "insurance", "race", "hospital_expire_flag"])
    adm["hadm_id"] = tables.ids(adm, "hadm_id", apath)
    flag = pd.to_numeric(adm["hospital_expire_flag"], errors="coerce")
    if not flag.isin([0, 1]).all():
        raise StaysError(f"{apath}: column 'hospital_expire_flag' must be 0 or 1; use the table as distributed")
    adm["ihm"] = flag.astype("float32")
    ppath = tables.require_table(hosp, "patients", "patients: age and gender")
    pat = tables.read_table(ppath, ["subject_id", "gender", "anchor_age", "anchor_year"])
    pat["subject_id"] = tables.ids(pat, "subject_id", ppath)
    anchor_age, anchor_year = tables.numbers(pat, "anchor_age"), tables.numbers(pat, "anchor_year")
    if anchor_age.isna().any() or anchor_year.isna().any():
        raise StaysError(f"{ppath}: columns 'anchor_age' and 'anchor_year' must be numbers; use the table as distributed")
    pat = pat.assign(anchor_age=anchor_age, anchor_year=anchor_year)
    cohort = stays.merge(adm.drop(columns="hospital_expire_flag"), on="hadm_id", how="left", indicator=True)
    if (cohort["_merge"] != "both").any():
        missing = cohort.loc[cohort["_merge"] != "both", "hadm_id"].iloc[0]
        raise StaysError(f"{apath}: no row for hadm_id {missing} (an ICU stay in {path}); use the complete admissions table")
    cohort = cohort.drop(columns="_merge").merge(pat, on="subject_id", how="left", indicator=True)
    if (cohort["_merge"] != "both").any():
        missing = cohort.loc[cohort["_merge"] != "both", "subject_id"].iloc[0]
        raise StaysError(f"{ppath}: no row for subject_id {missing} (an ICU stay in {path}); use the complete patients table")
    cohort["age"] = cohort["anchor_age"] + cohort["intime"].dt.year - cohort["anchor_year"]
    return cohort.drop(columns=["_merge", "anchor_age", "anchor_year"]), path


def read_events(src: Path, cohort: pd.DataFrame, absent: list[str], counts: dict) -> pd.DataFrame:
    """Chart and lab observations of the cohort's stays in the window (for :func:`~sweeper.data.cohort.build_stays`)."""
    parts = []
    path = tables.find_table(src / "icu", "chartevents")
    if path is None:
        absent.append("icu/chartevents")
    else:
        keys, items = set(cohort["key"]), {str(i) for i in CHART_ITEMS}
        parts.append(tables.read_table(path, ["stay_id", "itemid", "charttime", "valuenum"],
                                       keep=lambda c: c["itemid"].isin(items) & c["stay_id"].isin(keys),
                                       each=lambda c: mimic_common.chart_chunk(c, path, cohort, "stay_id", counts)))
    path = tables.find_table(src / "hosp", "labevents")
    if path is None:
        absent.append("hosp/labevents")
    else:
        parts.append(mimic_common.read_labs(path, cohort))
    return mimic_common.events_frame(parts)


def read_codes(src: Path, cohort: pd.DataFrame, absent: list[str]) -> pd.DataFrame | None:
    path = tables.find_table(src / "hosp", "diagnoses_icd")
    if path is None:
        absent.append("hosp/diagnoses_icd")
        return None
    raw = tables.read_table(path, ["hadm_id", "icd_code", "icd_version"])
    version = pd.to_numeric(raw["icd_version"], errors="coerce")
    if not version.isin([9, 10]).all():
        raise StaysError(f"{path}: column 'icd_version' must be 9 or 10; use the table as distributed")
    return pd.DataFrame({"key": tables.ids(raw, "hadm_id", path), "code": raw["icd_code"].fillna(""), "version": version})


def prepare(src: str | Path, note: str | Path | None = None, cxr: str | Path | None = None, cxr_size: int = 64) -> tuple[pd.DataFrame, Manifest]:
    """Read MIMIC-IV (+ Note, + CXR-JPG) from ``src`` into a stays frame and its manifest (no split yet)."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the MIMIC-IV folder holding hosp/ and icu/")
    if isinstance(cxr_size, bool) or not isinstance(cxr_size, int) or not 16 <= cxr_size <= 512:
        raise StaysError(f"--cxr-size: {cxr_size!r} must be an integer from 16 to 512")
    cohort, _ = read_cohort(src)
    n_icu = len(cohort)
    cohort, excluded = mimic_common.apply_cohort_rules(cohort)
    absent: list[str] = []
    counts: dict = {}
    events = read_events(src, cohort, absent, counts)
    codes = read_codes(src, cohort, absent)
    note_dir = Path(note) if note is not None else (src / "note" if (src / "note").is_dir() else None)
    discharge = radiology = None
    if note_dir is None:
        absent.append("note (MIMIC-IV-Note)")
    else:
        found = read_notes(note_dir, {"discharge": ["hadm_id", "charttime", "text"], "radiology": ["subject_id", "charttime", "text"]}, absent)
        if "discharge" in found:
            discharge = mimic_common.discharge_texts(found["discharge"], cohort, counts)
        if "radiology" in found:
            radiology = mimic_common.window_texts(found["radiology"], cohort)
    cxr_root = find_cxr_root(cxr, src)
    images = None
    if cxr_root is None:
        absent.append("cxr (MIMIC-CXR-JPG)")
    else:
        images = read_cxr(cxr_root, cohort, cxr_size, counts)
    if cohort.empty:
        raise StaysError(f"--src {src}: no ICU stay of at least 48 h of an adult among {n_icu}; use the complete icustays table")
    notes = {"icu_stays_read": n_icu, "absent": absent, **counts}
    return build_stays(SOURCE, cohort, excluded, events, codes, ["age"], CATEGORICAL, notes, discharge, radiology, images, cxr_size)
