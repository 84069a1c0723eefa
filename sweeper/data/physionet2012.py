"""PhysioNet/CinC Challenge 2012 → stays.

Input (as PhysioNet distributes it), in one folder ``src``:

- ``set-<x>.tar.gz`` (read with :mod:`tarfile`, never extracted to disk) or an extracted
  ``set-<x>/`` folder, holding one ``<RecordID>.txt`` per ICU stay with ``Time,Parameter,Value``
  lines (``Time`` is ``HH:MM`` since ICU admission, first 48 h);
- ``Outcomes-<x>.txt``: ``RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death``.

When both the tarball and the folder of a set exist, the tarball is read.

Output: one stay per record (P12 has one stay per patient), ``stay_id`` ``p12-<x>-<RecordID>``,
``subject_id`` the RecordID, no split (the engine assigns one). Modalities: ``timeseries`` and
``demographics``; every other modality is absent.

Decisions
---------
- **Descriptors.** The challenge's six general descriptors (``RecordID``, ``Age``, ``Gender``,
  ``Height``, ``ICUType``, ``Weight``) are the ``Parameter`` lines at ``00:00`` with those names
  (not always the first six lines: 00:00 lines are sometimes sorted alphabetically together with
  measurements). ``-1`` means unknown and becomes null. They feed the demographics
  (``age``, ``height``, ``weight`` numeric; ``gender`` and ``icu_type`` categorical, see
  :data:`GENDERS` and :data:`ICU_TYPES`).
- **Weight.** PhysioNet lists 42 variables: six general descriptors and the remaining 36 time
  series (:data:`UNITS`, in the documentation's order). Weight is a descriptor (admission weight,
  ``demo_weight``) and is *not* one of the 36 time-series features; the later ``Weight`` lines
  (re-weighings: ~32 a record on average; in about half of the records that have them they
  differ from the admission weight)
  are not kept and are counted in ``manifest.notes["weight_observations_not_kept"]``. Adding
  ``"Weight": "kg"`` to :data:`UNITS` would turn them into time-series events instead.
- **Time series.** Every other line is an observation: an event (feature index into
  :data:`FEATURES`, value, time in hours), in time order (stable, so same-time lines keep file
  order). Values are kept as recorded (e.g. ``MechVent`` 1) within their feature's limits; the
  ``-1`` missing marker is dropped (counted in ``notes["missing_markers"]``; none in sets A/B),
  as are observations after 48:00 (``notes["observations_after_48h"]``; none in A/B).
- **Empty parameter.** Set C as PhysioNet distributes it has lines with an empty parameter field
  (``HH:MM,,value``, a repeat of the preceding lab value with its name lost). With a valid time
  and a numeric value such a line is skipped and counted in ``notes["empty_parameter_lines"]``
  (none in A/B); any other malformed line is still an error naming it.
- **Implausible values.** A value outside the limits of its parameter
  (:data:`~sweeper.data.physionet2012_records.LIMITS`: what a living patient's value can be at all,
  e.g. ``Temp`` 10-50 °C, ``pH`` 6-8.5, ``Height`` 50-250 cm, ``Age`` 0-120; every limit is
  within float32, so nothing is stored as infinity) is dropped: an observation is not kept, a
  descriptor becomes unknown. Each is counted by parameter in ``notes["implausible_values_dropped"]``
  (printed by ``sweeper data describe``); sets A and B have a few hundred (Temp -17.8, pH 735,
  Height 1.8 cm, ...).
- **Hourly bins.** Bin ``h`` holds observations with ``h <= time < h+1`` hours; an observation at
  exactly 48:00 goes to the last bin (47). The bin value is the **mean** of its observations
  (``notes["hourly_aggregate"]``), NaN where none, with the mask True where observed; no carry
  forward. Flattened ``hours × features``, row-major.
- **Descriptors only.** Records with no time-series observation (3 in A, 7 in B) are kept with
  ``present_timeseries`` False and null time-series columns, counted in
  ``notes["descriptors_only"]``.
- **Labels.** ``label_ihm`` from ``In-hospital_death``; ``label_los_hours`` is
  ``Length_of_stay`` (days) × 24, null when ``-1``; ``label_phenotypes`` null (P12 has none).

Every problem with the input is a :class:`~sweeper.data.schema.StaysError` naming the file (and
line or column) and saying what to do. Reading the record and Outcomes files is in
:mod:`sweeper.data.physionet2012_records`.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.data.physionet2012_records import (  # HEADER, DESCRIPTORS, OUTCOME_COLUMNS: re-exported
    DESCRIPTORS,
    HEADER,
    HOURS,
    MISSING,
    OUTCOME_COLUMNS,
    iter_record_files,
    parse_record,
    read_outcomes,
)
from sweeper.data.schema import (
    MODALITIES,
    MODALITY_COLUMNS,
    DemographicsInfo,
    Manifest,
    StaysError,
    TimeseriesInfo,
    demo_column,
    presence_column,
)

SOURCE = "physionet2012"
MODALITIES_P12 = ["timeseries", "demographics"]

# The 36 time-series variables with their units, as in the challenge documentation
# (https://physionet.org/content/challenge-2012/), in its (case-insensitive alphabetical) order.
UNITS: dict[str, str] = {
    "Albumin": "g/dL",
    "ALP": "IU/L",  # alkaline phosphatase
    "ALT": "IU/L",  # alanine transaminase
    "AST": "IU/L",  # aspartate transaminase
    "Bilirubin": "mg/dL",
    "BUN": "mg/dL",  # blood urea nitrogen
    "Cholesterol": "mg/dL",
    "Creatinine": "mg/dL",  # serum creatinine
    "DiasABP": "mmHg",  # invasive diastolic arterial blood pressure
    "FiO2": "0-1",  # fractional inspired O2
    "GCS": "3-15",  # Glasgow Coma Score
    "Glucose": "mg/dL",  # serum glucose
    "HCO3": "mmol/L",  # serum bicarbonate
    "HCT": "%",  # hematocrit
    "HR": "bpm",  # heart rate
    "K": "mEq/L",  # serum potassium
    "Lactate": "mmol/L",
    "Mg": "mmol/L",  # serum magnesium
    "MAP": "mmHg",  # invasive mean arterial blood pressure
    "MechVent": "0/1",  # mechanical ventilation respiration (0: false, 1: true)
    "Na": "mEq/L",  # serum sodium
    "NIDiasABP": "mmHg",  # non-invasive diastolic arterial blood pressure
    "NIMAP": "mmHg",  # non-invasive mean arterial blood pressure
    "NISysABP": "mmHg",  # non-invasive systolic arterial blood pressure
    "PaCO2": "mmHg",  # partial pressure of arterial CO2
    "PaO2": "mmHg",  # partial pressure of arterial O2
    "pH": "0-14",  # arterial pH
    "Platelets": "cells/nL",
    "RespRate": "bpm",  # respiration rate
    "SaO2": "%",  # O2 saturation in hemoglobin
    "SysABP": "mmHg",  # invasive systolic arterial blood pressure
    "Temp": "°C",
    "TroponinI": "μg/L",
    "TroponinT": "μg/L",
    "Urine": "mL",  # urine output
    "WBC": "cells/nL",  # white blood cell count
}
FEATURES: list[str] = list(UNITS)

GENDERS: dict[int, str] = {0: "female", 1: "male"}
ICU_TYPES: dict[int, str] = {
    1: "Coronary Care Unit",
    2: "Cardiac Surgery Recovery Unit",
    3: "Medical ICU",
    4: "Surgical ICU",
}
DEMO_NUMERIC: dict[str, str] = {"age": "Age", "height": "Height", "weight": "Weight"}  # field -> descriptor
DEMO_CATEGORICAL: dict[str, str] = {"gender": "Gender", "icu_type": "ICUType"}

_SET_TARBALL = re.compile(r"set-([A-Za-z0-9]+)\.tar\.gz")
_SET_FOLDER = re.compile(r"set-([A-Za-z0-9]+)")


def find_sets(src: str | Path) -> dict[str, Path]:
    """Every set in ``src``: name (``a``, ``b``, ...) → its tarball, or its folder if no tarball."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the folder holding set-*.tar.gz and Outcomes-*.txt")
    found: dict[str, Path] = {}
    for entry in sorted(src.iterdir()):
        tarball = _SET_TARBALL.fullmatch(entry.name)
        folder = _SET_FOLDER.fullmatch(entry.name)
        if tarball and entry.is_file():
            found[tarball.group(1)] = entry
        elif folder and entry.is_dir() and folder.group(1) not in found:
            found[folder.group(1)] = entry
    # A tarball wins over the folder it was extracted to.
    for name in list(found):
        if found[name].is_dir() and (src / f"set-{name}.tar.gz").is_file():
            found[name] = src / f"set-{name}.tar.gz"
    return dict(sorted(found.items()))


def prepare(src: str | Path, sets: list[str] | None = None) -> tuple[pd.DataFrame, Manifest]:
    """Read PhysioNet 2012 sets from ``src`` into a stays frame and its manifest (no split yet)."""
    src = Path(src)
    available = find_sets(src)
    if sets is None:
        if not available:
            raise StaysError(f"--src {src}: no set-<x>.tar.gz or set-<x>/ found; point it at the folder holding the PhysioNet 2012 files")
        chosen = list(available)
    else:
        chosen = []
        for name in sets:
            name = name.removeprefix("set-").removesuffix(".tar.gz")
            if name not in available:
                have = ", ".join(available) or "none"
                raise StaysError(f"--src {src}: set {name!r} not found (no set-{name}.tar.gz or set-{name}/; sets found: {have})")
            if name not in chosen:
                chosen.append(name)

    feature_index = {name: i for i, name in enumerate(FEATURES)}
    counts = {"missing_markers": 0, "empty_parameter_lines": 0, "observations_after_48h": 0, "weight_observations_not_kept": 0, "ignored_files": 0, "implausible_values_dropped": {}}
    descriptors_only: dict[str, int] = {}
    rows: list[dict] = []
    for name in chosen:
        outcomes_path = src / f"Outcomes-{name}.txt"
        outcomes = read_outcomes(outcomes_path, name)
        records = []
        seen: dict[int, str] = {}
        for where, filename, data in iter_record_files(available[name], counts):
            record = parse_record(where, filename, data, feature_index, counts)
            if record["record_id"] in seen:
                raise StaysError(f"{where}: RecordID {record['record_id']} also in {seen[record['record_id']]}; keep one file per record")
            seen[record["record_id"]] = where
            records.append(record)
        if not records:
            raise StaysError(f"{available[name]}: no record files (<RecordID>.txt) in set {name}; use the complete set as distributed")
        for record_id, where in seen.items():
            if record_id not in outcomes:
                raise StaysError(f"{outcomes_path}: no row for RecordID {record_id} (record {where}); use the Outcomes file that belongs to set-{name}")
        for record_id, (line, _, _) in outcomes.items():
            if record_id not in seen:
                raise StaysError(f"{outcomes_path} line {line}: RecordID {record_id} has no record file in {available[name]}; use the complete set")
        records.sort(key=lambda r: r["record_id"])
        descriptors_only[name] = 0
        for record in records:
            _, ihm, los_days = outcomes[record["record_id"]]
            row = _stay_row(name, record, ihm, los_days)
            descriptors_only[name] += not row[presence_column("timeseries")]
            rows.append(row)

    frame = pd.DataFrame(rows, columns=_columns())
    frame["label_ihm"] = frame["label_ihm"].astype("float32")
    frame["label_los_hours"] = frame["label_los_hours"].astype("float32")
    for field in DEMO_NUMERIC:
        frame[demo_column(field)] = frame[demo_column(field)].astype("float32")
    manifest = Manifest(
        source=SOURCE,
        modalities=list(MODALITIES_P12),
        timeseries=TimeseriesInfo(features=list(FEATURES), units=dict(UNITS), hours=HOURS),
        demographics=DemographicsInfo(numeric=list(DEMO_NUMERIC), categorical=list(DEMO_CATEGORICAL)),
        phenotypes=[],  # P12 has no phenotype labels: the phenotyping task is not available
        notes={
            "sets": chosen,
            "inputs": {name: available[name].name for name in chosen},
            "descriptors_only": sum(descriptors_only.values()),
            "descriptors_only_by_set": descriptors_only,
            **counts,
            "hourly_aggregate": "mean",
        },
    )
    return frame, manifest


def _columns() -> list[str]:
    cols = ["stay_id", "subject_id", "source", "label_ihm", "label_phenotypes", "label_los_hours"]
    cols += [presence_column(m) for m in MODALITIES]
    cols += list(MODALITY_COLUMNS["timeseries"])
    cols += [demo_column(f) for f in [*DEMO_NUMERIC, *DEMO_CATEGORICAL]]
    return cols


def _stay_row(set_name: str, record: dict, ihm: float, los_days: float | None) -> dict:
    row: dict = {
        "stay_id": f"p12-{set_name}-{record['record_id']}",
        "subject_id": str(record["record_id"]),
        "source": SOURCE,
        "label_ihm": ihm,
        "label_phenotypes": None,
        "label_los_hours": None if los_days is None else los_days * 24.0,
    }
    row.update({presence_column(m): False for m in MODALITIES})
    if record["features"]:
        minutes = np.asarray(record["minutes"], dtype=np.int64)
        order = np.argsort(minutes, kind="stable")
        minutes = minutes[order]
        features = np.asarray(record["features"], dtype=np.int16)[order]
        values = np.asarray(record["values"], dtype=np.float64)[order]
        n_features = len(FEATURES)
        cell = np.minimum(minutes // 60, HOURS - 1) * n_features + features
        sums = np.bincount(cell, weights=values, minlength=HOURS * n_features)
        seen = np.bincount(cell, minlength=HOURS * n_features)
        mask = seen > 0
        hourly = np.full(HOURS * n_features, np.nan, dtype=np.float32)
        hourly[mask] = sums[mask] / seen[mask]
        row[presence_column("timeseries")] = True
        row["ts_hourly_values"] = hourly
        row["ts_hourly_mask"] = mask
        row["ts_event_feature"] = features
        row["ts_event_value"] = values.astype(np.float32)
        row["ts_event_time"] = (minutes / 60.0).astype(np.float32)
    else:
        row.update({name: None for name in MODALITY_COLUMNS["timeseries"]})
    demo = _demographics(record)
    row.update(demo)
    row[presence_column("demographics")] = any(v is not None for v in demo.values())
    return row


def _demographics(record: dict) -> dict:
    where, descriptors = record["where"], record["descriptors"]

    def known(name: str) -> float | None:
        value = descriptors.get(name)
        return None if value is None or value == MISSING else value

    out: dict = {demo_column(field): known(name) for field, name in DEMO_NUMERIC.items()}
    for field, name, names in (("gender", "Gender", GENDERS), ("icu_type", "ICUType", ICU_TYPES)):
        value = known(name)
        if value is not None and value not in names:
            raise StaysError(f"{where}: {name} {value:g} is not one of {', '.join(str(k) for k in names)} or -1; fix the {name} line")
        out[demo_column(field)] = None if value is None else names[int(value)]
    return out
