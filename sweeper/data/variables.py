"""The fixed time-series variable list of the MIMIC-IV, MIMIC-III and eICU adapters, with units.

One list for the three databases, so a model trained on one cohort reads the same features (same
names, same units, same order) on another (external validation). It is the MIMIC-III benchmark's
vital signs (Harutyunyan et al. 2019) plus the common blood gas and chemistry labs; capillary refill
(a text field) is left out. :data:`UNITS` is the list, in order, with the unit every value is
converted to. Each database's names or item ids for a variable are below; an item whose source unit
differs is converted (:data:`CONVERT`: °F → °C, lb → kg, inch → cm, FiO2 in % → fraction). A value
outside :data:`LIMITS` (what a living patient can have at all, in the converted unit) is dropped
and counted per variable in the manifest's ``notes["implausible_values_dropped"]``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

HOURS = 48

UNITS: dict[str, str] = {
    "heart_rate": "bpm",
    "sbp": "mmHg",  # systolic blood pressure (invasive or non-invasive)
    "dbp": "mmHg",  # diastolic
    "map": "mmHg",  # mean arterial pressure
    "resp_rate": "breaths/min",
    "spo2": "%",  # peripheral O2 saturation
    "temperature": "°C",
    "fio2": "fraction 0-1",  # fraction of inspired O2
    "gcs_eye": "1-4",
    "gcs_verbal": "1-5",
    "gcs_motor": "1-6",
    "weight": "kg",
    "height": "cm",
    "glucose": "mg/dL",
    "ph": "pH units",
    "lactate": "mmol/L",
    "creatinine": "mg/dL",
    "bun": "mg/dL",  # blood urea nitrogen
    "sodium": "mEq/L",
    "potassium": "mEq/L",
    "bicarbonate": "mEq/L",
    "chloride": "mEq/L",
    "hemoglobin": "g/dL",
    "hematocrit": "%",
    "wbc": "K/uL",  # white blood cells, 10^9/L
    "platelets": "K/uL",
    "bilirubin": "mg/dL",  # total
    "albumin": "g/dL",
    "pao2": "mmHg",
    "paco2": "mmHg",
}
FEATURES: list[str] = list(UNITS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURES)}

LIMITS: dict[str, tuple[float, float]] = {
    "heart_rate": (0, 350), "sbp": (0, 375), "dbp": (0, 375), "map": (0, 375), "resp_rate": (0, 300),
    "spo2": (0, 100), "temperature": (14.2, 47), "fio2": (0.21, 1), "gcs_eye": (1, 4), "gcs_verbal": (1, 5),
    "gcs_motor": (1, 6), "weight": (0.5, 500), "height": (30, 275), "glucose": (1, 2200), "ph": (6.3, 8.4),
    "lactate": (0, 50), "creatinine": (0, 80), "bun": (0, 300), "sodium": (50, 225), "potassium": (0.5, 15),
    "bicarbonate": (0, 70), "chloride": (40, 200), "hemoglobin": (0, 30), "hematocrit": (0, 100),
    "wbc": (0, 1100), "platelets": (0, 3000), "bilirubin": (0, 80), "albumin": (0, 10), "pao2": (0, 800),
    "paco2": (0, 250),
}

# MIMIC item ids (MIMIC-IV, and MIMIC-III's MetaVision items, share the 22xxxx chart ids; the
# 2xx-8xxx ids are MIMIC-III's CareVue items; lab ids are the same in both databases).
CHART_ITEMS: dict[int, str] = {
    220045: "heart_rate", 211: "heart_rate",
    220050: "sbp", 220179: "sbp", 51: "sbp", 455: "sbp", 6701: "sbp",
    220051: "dbp", 220180: "dbp", 8368: "dbp", 8441: "dbp", 8555: "dbp",
    220052: "map", 220181: "map", 225312: "map", 52: "map", 456: "map", 6702: "map",
    220210: "resp_rate", 224690: "resp_rate", 618: "resp_rate", 615: "resp_rate",
    220277: "spo2", 646: "spo2",
    223762: "temperature", 676: "temperature", 223761: "temperature", 678: "temperature",
    223835: "fio2", 3420: "fio2", 190: "fio2",
    220739: "gcs_eye", 184: "gcs_eye",
    223900: "gcs_verbal", 723: "gcs_verbal",
    223901: "gcs_motor", 454: "gcs_motor",
    226512: "weight", 224639: "weight", 763: "weight", 226531: "weight",
    226730: "height", 226707: "height", 920: "height", 1394: "height",
}
LAB_ITEMS: dict[int, str] = {
    50931: "glucose", 50809: "glucose",
    50820: "ph",
    50813: "lactate",
    50912: "creatinine",
    51006: "bun",
    50983: "sodium", 50824: "sodium",
    50971: "potassium", 50822: "potassium",
    50882: "bicarbonate",
    50902: "chloride", 50806: "chloride",
    51222: "hemoglobin", 50811: "hemoglobin",
    51221: "hematocrit", 50810: "hematocrit",
    51301: "wbc", 51300: "wbc",
    51265: "platelets",
    50885: "bilirubin",
    50862: "albumin",
    50821: "pao2",
    50818: "paco2",
}
# Items recorded in another unit than the feature's: value -> converted value.
CONVERT = {
    223761: "fahrenheit", 678: "fahrenheit",
    226531: "pounds",
    226707: "inches", 920: "inches", 1394: "inches",
    223835: "percent_or_fraction", 3420: "percent_or_fraction", 190: "percent_or_fraction",
}

# eICU-CRD: table -> {column or label: feature}.
EICU_PERIODIC = {  # vitalPeriodic columns
    "heartrate": "heart_rate", "respiration": "resp_rate", "sao2": "spo2", "temperature": "temperature",
    "systemicsystolic": "sbp", "systemicdiastolic": "dbp", "systemicmean": "map",
}
EICU_APERIODIC = {"noninvasivesystolic": "sbp", "noninvasivediastolic": "dbp", "noninvasivemean": "map"}
EICU_LABS = {  # lab.labname
    "glucose": "glucose", "bedside glucose": "glucose", "pH": "ph", "lactate": "lactate",
    "creatinine": "creatinine", "BUN": "bun", "sodium": "sodium", "potassium": "potassium",
    "bicarbonate": "bicarbonate", "HCO3": "bicarbonate", "chloride": "chloride", "Hgb": "hemoglobin",
    "Hct": "hematocrit", "WBC x 1000": "wbc", "platelets x 1000": "platelets", "total bilirubin": "bilirubin",
    "albumin": "albumin", "paO2": "pao2", "paCO2": "paco2", "FiO2": "fio2",
}
EICU_NURSE = {  # nurseCharting (nursingchartcelltypevallabel, nursingchartcelltypevalname)
    ("Heart Rate", "Heart Rate"): "heart_rate",
    ("Respiratory Rate", "Respiratory Rate"): "resp_rate",
    ("O2 Saturation", "O2 Saturation"): "spo2",
    ("Temperature", "Temperature (C)"): "temperature",
    ("Non-Invasive BP", "Non-Invasive BP Systolic"): "sbp",
    ("Non-Invasive BP", "Non-Invasive BP Diastolic"): "dbp",
    ("Non-Invasive BP", "Non-Invasive BP Mean"): "map",
    ("Glasgow coma score", "Eyes"): "gcs_eye",
    ("Glasgow coma score", "Verbal"): "gcs_verbal",
    ("Glasgow coma score", "Motor"): "gcs_motor",
}
EICU_CONVERT = {"fio2": "percent_or_fraction"}  # eICU charts FiO2 in %


def convert(values: pd.Series, how: pd.Series) -> pd.Series:
    """Apply the conversions named in ``how`` (None: as recorded) to ``values``."""
    out = values.astype("float64").copy()
    fahrenheit = (how == "fahrenheit").to_numpy()
    out[fahrenheit] = (out[fahrenheit] - 32.0) * 5.0 / 9.0
    out[(how == "pounds").to_numpy()] *= 0.45359237
    out[(how == "inches").to_numpy()] *= 2.54
    percent = ((how == "percent_or_fraction") & (out > 1.0)).to_numpy()
    out[percent] /= 100.0
    return out


def plausible(features: pd.Series, values: pd.Series) -> np.ndarray:
    """True where ``values`` lie within their feature's :data:`LIMITS` (False for unknown features)."""
    codes = pd.Categorical(features, categories=FEATURES).codes
    low = np.append(_LOW, np.nan)[codes]  # code -1 (not a feature) → NaN → False
    high = np.append(_HIGH, np.nan)[codes]
    v = values.to_numpy(dtype="float64")
    return np.isfinite(v) & (v >= low) & (v <= high)


_LOW = np.array([LIMITS[f][0] for f in FEATURES], dtype="float64")
_HIGH = np.array([LIMITS[f][1] for f in FEATURES], dtype="float64")
