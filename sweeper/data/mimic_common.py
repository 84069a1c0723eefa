"""What the MIMIC-IV and MIMIC-III adapters share: the cohort rules, the time series from chart and
lab events, the notes and images of a stay's window, and the stays rows.

An adapter reads its own tables into a **cohort** frame, one row per ICU stay, with the columns
``key`` (the ICU stay id, as text), ``subject_id``, ``hadm_id``, ``intime``, ``outtime``, ``age``,
``ihm`` and the categorical demographics it has; this module does the rest.

Decisions (docs/data-sources.md says the same for users)
---------
- **Cohort.** Adults (age >= 18 at ICU admission) whose ICU stay lasted at least 48 h
  (``outtime - intime``); the others are counted in the manifest's ``excluded``. Every such ICU stay
  is a stay (a patient may have several; the split keeps a patient's stays together).
- **Window.** Hours since ICU admission (``intime``); time series, radiology reports and chest
  X-rays are taken from the first 48 h only.
- **Labels.** ``label_ihm``: the admission's ``hospital_expire_flag``; ``label_los_hours``: the ICU
  stay's length in hours; ``label_phenotypes``: :mod:`sweeper.data.phenotype_codes` over every
  diagnosis code of the admission (null when the admission has none, or the table is absent).
- **Discharge summary.** The admission's discharge summary is written at hospital discharge, after
  the 48 h prediction time; the papers this engine reproduces use it anyway, and so does this
  adapter: it is kept with its real time (``discharge_time``, hours since ICU admission, usually
  > 48) and the number written after 48 h is counted in ``notes["discharge_after_prediction_time"]``.
  It may state the outcome (e.g. a death): leave ``discharge`` out of a spec's modalities for a
  strictly prospective model.
- **Radiology.** Every radiology report charted in the window, in time order, joined with a blank
  line; ``radiology_time`` is the time of the last one (when the text is complete).
"""
from __future__ import annotations

import pandas as pd

from sweeper.data import tables
from sweeper.data.cohort import in_window
from sweeper.data.variables import CHART_ITEMS, CONVERT, HOURS, LAB_ITEMS


MIN_AGE = 18
MIN_HOURS = 48


def apply_cohort_rules(cohort: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep adults with ICU stays >= 48 h; count the rest by reason."""
    hours = (cohort["outtime"] - cohort["intime"]).dt.total_seconds() / 3600.0
    cohort = cohort.assign(los_hours=hours)
    excluded = {"icu_stay_shorter_than_48h": int((hours < MIN_HOURS).sum())}
    kept = cohort[hours >= MIN_HOURS]
    young = kept["age"] < MIN_AGE
    excluded["age_under_18"] = int(young.sum())
    return kept[~young].reset_index(drop=True), excluded


def lab_events(labs: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """Lab rows (``subject_id``, ``charttime``, ``feature``, ``value``) of each stay's patient, placed in
    each of that patient's stays with hours since its admission; rows outside a stay's window are
    not that stay's (they are not counted as dropped)."""
    if labs.empty:
        return pd.DataFrame(columns=["key", "feature", "value", "hours"])
    merged = labs.merge(cohort[["subject_id", "key", "intime"]], on="subject_id")
    hours = (merged["charttime"] - merged["intime"]).dt.total_seconds() / 3600.0
    inside = (hours >= 0) & (hours <= HOURS)
    return pd.DataFrame({"key": merged["key"], "feature": merged["feature"], "value": merged["value"], "hours": hours})[inside]


def chart_chunk(raw: pd.DataFrame, path, cohort: pd.DataFrame, id_column: str, counts: dict) -> pd.DataFrame:
    """One chunk of a chart events table (``id_column``, ``itemid``, ``charttime``, ``valuenum``, and
    ``error`` for MIMIC-III) → the cohort stays' events of the window, typed (rows marked ``error``
    1 left out and counted)."""
    if "error" in raw.columns:
        error = raw["error"].fillna("0").str.strip().isin(["1", "1.0"]).to_numpy()
        counts["chart_rows_marked_error"] = counts.get("chart_rows_marked_error", 0) + int(error.sum())
        raw = raw[~error]
    item = tables.ids(raw, "itemid", path)
    charts = pd.DataFrame({
        "key": raw[id_column], "charttime": tables.times(raw, "charttime", path),
        "feature": item.map(CHART_ITEMS), "value": tables.numbers(raw, "valuenum"), "convert": item.map(CONVERT),
    })
    return in_window(chart_hours(charts, cohort), counts)


def lab_chunk(raw: pd.DataFrame, path, cohort: pd.DataFrame) -> pd.DataFrame:
    """One chunk of a lab events table (``subject_id``, ``itemid``, ``charttime``, ``valuenum``) → the
    window's events of each of the patient's cohort stays."""
    labs = pd.DataFrame({
        "subject_id": tables.ids(raw, "subject_id", path), "charttime": tables.times(raw, "charttime", path),
        "feature": tables.ids(raw, "itemid", path).map(LAB_ITEMS), "value": tables.numbers(raw, "valuenum"),
    })
    return lab_events(labs, cohort).assign(convert=None)


def read_labs(path, cohort: pd.DataFrame) -> pd.DataFrame:
    """The cohort's lab events of the fixed variable list from a LABEVENTS table, read in chunks."""
    subjects, items = set(cohort["subject_id"].astype(str)), {str(i) for i in LAB_ITEMS}
    return tables.read_table(path, ["subject_id", "itemid", "charttime", "valuenum"],
                             keep=lambda c: c["itemid"].isin(items) & c["subject_id"].isin(subjects),
                             each=lambda c: lab_chunk(c, path, cohort))


def events_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The event tables read, as one frame (an empty one with the event columns when none was)."""
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["key", "feature", "value", "hours", "convert"])


def chart_hours(charts: pd.DataFrame, cohort: pd.DataFrame) -> pd.DataFrame:
    """Chart rows (``key``, ``charttime``, ``feature``, ``value``, ``convert``) of cohort stays, with hours."""
    merged = charts.merge(cohort[["key", "intime"]], on="key")
    merged["hours"] = (merged["charttime"] - merged["intime"]).dt.total_seconds() / 3600.0
    return merged[["key", "feature", "value", "hours", "convert"]]


def window_texts(notes: pd.DataFrame, cohort: pd.DataFrame) -> dict:
    """Radiology reports (``subject_id``, ``charttime``, ``text``) → key → (joined text, hours of the last)."""
    out: dict = {}
    if notes.empty:
        return out
    merged = notes.merge(cohort[["subject_id", "key", "intime"]], on="subject_id")
    merged["hours"] = (merged["charttime"] - merged["intime"]).dt.total_seconds() / 3600.0
    merged = merged[(merged["hours"] >= 0) & (merged["hours"] <= HOURS)].sort_values(["key", "hours"], kind="stable")
    for key, group in merged.groupby("key", sort=False):
        out[key] = ("\n\n".join(group["text"].astype(str)), float(group["hours"].iloc[-1]))
    return out


def discharge_texts(notes: pd.DataFrame, cohort: pd.DataFrame, counts: dict) -> dict:
    """Discharge summaries (``hadm_id``, ``charttime``, ``text``, in order) → key → (text, hours)."""
    out: dict = {}
    counts["discharge_after_prediction_time"] = 0
    if notes.empty:
        return out
    merged = notes.merge(cohort[["hadm_id", "key", "intime"]], on="hadm_id")
    merged["hours"] = (merged["charttime"] - merged["intime"]).dt.total_seconds() / 3600.0
    for key, group in merged.groupby("key", sort=False):
        hours = float(group["hours"].max())
        out[key] = ("\n\n".join(group["text"].astype(str)), hours)
        counts["discharge_after_prediction_time"] += int(hours > HOURS)
    return out
