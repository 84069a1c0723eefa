"""MIMIC-III v1.4 adapter against a small fixture written here from the documented schema (upper-case
file and column names, some tables gzipped and some plain CSV). No Ray."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.cli import main
from sweeper.data.mimic_iii import prepare
from sweeper.data.schema import PHENOTYPES, StaysError
from sweeper.data.stays import read_stays
from sweeper.data.variables import INDEX

T0 = pd.Timestamp("2140-01-01 08:00:00")
H = pd.Timedelta(hours=1)


def _write(src: Path, name: str, rows: list[dict], gz: bool) -> None:
    frame = pd.DataFrame(rows)
    frame.insert(0, "ROW_ID", range(1, len(frame) + 1))
    if gz:
        with gzip.open(src / f"{name}.csv.gz", "wt") as handle:
            frame.to_csv(handle, index=False)
    else:
        frame.to_csv(src / f"{name}.csv", index=False)


def _fmt(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


EXTRA = range(110, 126)  # 16 more adult patients with one 60 h ICU stay each and nothing else: enough to split


def build_fixture(src: Path, with_optional: bool = True) -> Path:
    src.mkdir(parents=True)
    extra_patients = [{"SUBJECT_ID": s, "GENDER": "M", "DOB": "2090-01-01 00:00:00", "DOD": "", "DOD_HOSP": "", "DOD_SSN": "", "EXPIRE_FLAG": 0} for s in EXTRA]
    _write(src, "PATIENTS", extra_patients + [
        {"SUBJECT_ID": 101, "GENDER": "F", "DOB": "2080-05-01 00:00:00", "DOD": "", "DOD_HOSP": "", "DOD_SSN": "", "EXPIRE_FLAG": 0},
        {"SUBJECT_ID": 102, "GENDER": "M", "DOB": "1840-01-01 00:00:00", "DOD": "", "DOD_HOSP": "", "DOD_SSN": "", "EXPIRE_FLAG": 0},  # over 89: shifted
        {"SUBJECT_ID": 103, "GENDER": "M", "DOB": "2135-01-01 00:00:00", "DOD": "", "DOD_HOSP": "", "DOD_SSN": "", "EXPIRE_FLAG": 0},  # a child
        {"SUBJECT_ID": 104, "GENDER": "F", "DOB": "2100-01-01 00:00:00", "DOD": "", "DOD_HOSP": "", "DOD_SSN": "", "EXPIRE_FLAG": 0},
    ], gz=True)
    adm = lambda hadm, subj, flag, eth: {"SUBJECT_ID": subj, "HADM_ID": hadm, "ADMITTIME": _fmt(T0 - 5 * H), "DISCHTIME": _fmt(T0 + 200 * H),
                                         "DEATHTIME": "", "ADMISSION_TYPE": "EMERGENCY", "ADMISSION_LOCATION": "EMERGENCY ROOM ADMIT",
                                         "DISCHARGE_LOCATION": "HOME", "INSURANCE": "Medicare", "LANGUAGE": "ENGL", "RELIGION": "",
                                         "MARITAL_STATUS": "", "ETHNICITY": eth, "EDREGTIME": "", "EDOUTTIME": "", "DIAGNOSIS": "SEPSIS",
                                         "HOSPITAL_EXPIRE_FLAG": flag, "HAS_CHARTEVENTS_DATA": 1}
    _write(src, "ADMISSIONS", [adm(10 * s, s, 0, "WHITE") for s in EXTRA] + [adm(1001, 101, 0, "WHITE"), adm(1002, 101, 1, "WHITE"), adm(1003, 102, 0, "ASIAN"),
                               adm(1004, 103, 0, "WHITE"), adm(1005, 104, 0, "BLACK/AFRICAN AMERICAN")], gz=False)
    icu = lambda stay, subj, hadm, hours, start=T0: {"SUBJECT_ID": subj, "HADM_ID": hadm, "ICUSTAY_ID": stay, "DBSOURCE": "carevue",
                                                     "FIRST_CAREUNIT": "MICU", "LAST_CAREUNIT": "MICU", "FIRST_WARDID": 12, "LAST_WARDID": 12,
                                                     "INTIME": _fmt(start), "OUTTIME": _fmt(start + hours * H), "LOS": hours / 24}
    _write(src, "ICUSTAYS", [icu(20 * s, s, 10 * s, 60) for s in EXTRA] + [icu(2001, 101, 1001, 72), icu(2002, 101, 1002, 100, T0 + 1000 * H), icu(2003, 102, 1003, 50),
                             icu(2004, 103, 1004, 60), icu(2005, 104, 1005, 24), icu(2006, 104, 1005, 49, T0 + 30 * H)], gz=True)
    if not with_optional:
        return src
    chart = lambda stay, item, hours, value, error="": {"SUBJECT_ID": 101, "HADM_ID": 1001, "ICUSTAY_ID": stay, "ITEMID": item,
                                                        "CHARTTIME": _fmt(T0 + hours * H), "STORETIME": "", "CGID": 1, "VALUE": str(value),
                                                        "VALUENUM": value, "VALUEUOM": "", "WARNING": "", "ERROR": error, "RESULTSTATUS": "", "STOPPED": ""}
    _write(src, "CHARTEVENTS", [
        chart(2001, 211, 1, 80), chart(2001, 211, 1.5, 90), chart(2001, 211, 50, 100),  # the last after 48 h
        chart(2001, 678, 2, 98.6), chart(2001, 223762, 2, 37.5),  # °F and °C
        chart(2001, 3420, 3, 50),  # FiO2 in %
        chart(2001, 220045, 4, 85, error=1),  # marked as an error
        chart(2001, 211, 5, 400),  # implausible
        chart(2001, 999999, 5, 1),  # not on the list
        chart(2003, 220045, 10, 70),
    ], gz=True)
    _write(src, "LABEVENTS", [
        {"SUBJECT_ID": 101, "HADM_ID": 1001, "ITEMID": 50931, "CHARTTIME": _fmt(T0 + 4 * H), "VALUE": "120", "VALUENUM": 120, "VALUEUOM": "mg/dL", "FLAG": ""},
        {"SUBJECT_ID": 101, "HADM_ID": 1001, "ITEMID": 50931, "CHARTTIME": _fmt(T0 - 5 * H), "VALUE": "140", "VALUENUM": 140, "VALUEUOM": "mg/dL", "FLAG": ""},
        {"SUBJECT_ID": 104, "HADM_ID": 1005, "ITEMID": 50912, "CHARTTIME": _fmt(T0 + 40 * H), "VALUE": "1.1", "VALUENUM": 1.1, "VALUEUOM": "mg/dL", "FLAG": ""},
    ], gz=False)
    _write(src, "DIAGNOSES_ICD", [
        {"SUBJECT_ID": 101, "HADM_ID": 1001, "SEQ_NUM": 1, "ICD9_CODE": "41071"},
        {"SUBJECT_ID": 101, "HADM_ID": 1001, "SEQ_NUM": 2, "ICD9_CODE": "4019"},
        {"SUBJECT_ID": 101, "HADM_ID": 1002, "SEQ_NUM": 1, "ICD9_CODE": "5849"},
        {"SUBJECT_ID": 102, "HADM_ID": 1003, "SEQ_NUM": 1, "ICD9_CODE": "486"},
    ], gz=True)
    note = lambda subj, hadm, date, time, category, text, error="": {"SUBJECT_ID": subj, "HADM_ID": hadm, "CHARTDATE": date, "CHARTTIME": time,
                                                                    "STORETIME": "", "CATEGORY": category, "DESCRIPTION": "Report", "CGID": "",
                                                                    "ISERROR": error, "TEXT": text}
    _write(src, "NOTEEVENTS", [
        note(101, 1001, (T0 + 200 * H).strftime("%Y-%m-%d"), "", "Discharge summary", "Summary of 1001."),
        note(101, 1001, (T0 + 5 * H).strftime("%Y-%m-%d"), _fmt(T0 + 5 * H), "Radiology", "CHEST PORT."),
        note(101, 1001, (T0 + 6 * H).strftime("%Y-%m-%d"), _fmt(T0 + 6 * H), "Radiology", "Wrong patient.", error=1),
        note(101, 1001, (T0 + 6 * H).strftime("%Y-%m-%d"), _fmt(T0 + 6 * H), "Nursing", "Not read."),
    ], gz=True)
    return src


def test_fixture_to_stays(tmp_path):
    frame, manifest = prepare(build_fixture(tmp_path / "src"))
    assert sorted(frame["stay_id"]) == sorted(["mimic-iii-2001", "mimic-iii-2002", "mimic-iii-2003", "mimic-iii-2006"] + [f"mimic-iii-{20 * s}" for s in EXTRA])
    assert manifest.excluded == {"icu_stay_shorter_than_48h": 1, "age_under_18": 1}
    assert manifest.notes["absent"] == [] and manifest.notes["chart_rows_marked_error"] == 1
    assert manifest.notes["implausible_values_dropped"] == {"heart_rate": 1} and manifest.notes["observations_after_48h"] == 1
    assert manifest.modalities == ["discharge", "radiology", "timeseries", "demographics"]
    rows = frame.set_index("stay_id")
    s1 = rows.loc["mimic-iii-2001"]
    assert s1["subject_id"] == "101" and s1["label_ihm"] == 0 and rows.loc["mimic-iii-2002", "label_ihm"] == 1
    assert s1["label_los_hours"] == pytest.approx(72) and s1["demo_age"] == 59 and rows.loc["mimic-iii-2003", "demo_age"] == 90
    assert s1["demo_ethnicity"] == "WHITE" and s1["demo_gender"] == "female"
    features, values, times = (np.asarray(s1[c]) for c in ("ts_event_feature", "ts_event_value", "ts_event_time"))
    by = lambda name: list(values[features == INDEX[name]])
    assert by("heart_rate") == [80, 90] and by("temperature") == pytest.approx([37.0, 37.5], abs=1e-4)
    assert by("fio2") == pytest.approx([0.5]) and by("glucose") == [120]  # the lab before ICU admission is not this stay's
    hourly = np.asarray(s1["ts_hourly_values"]).reshape(48, -1)
    assert hourly[1, INDEX["heart_rate"]] == pytest.approx(85)  # mean of 80 and 90
    assert rows.loc["mimic-iii-2006", "present_timeseries"]  # creatinine 10 h into stay 2006 of patient 104
    assert not rows.loc["mimic-iii-2002", "present_timeseries"]
    ami, aki = PHENOTYPES.index("Acute myocardial infarction"), PHENOTYPES.index("Acute and unspecified renal failure")
    assert s1["label_phenotypes"][ami] == 1 and s1["label_phenotypes"][PHENOTYPES.index("Essential hypertension")] == 1
    assert rows.loc["mimic-iii-2002", "label_phenotypes"][aki] == 1 and rows.loc["mimic-iii-2006", "label_phenotypes"] is None
    assert s1["discharge_text"] == "Summary of 1001." and s1["discharge_time"] > 48 and manifest.notes["discharge_after_prediction_time"] == 1
    assert s1["radiology_text"] == "CHEST PORT." and s1["radiology_time"] == pytest.approx(5)
    assert frame["present_radiology"].sum() == 1 and frame["present_discharge"].sum() == 1
    assert not rows.loc[f"mimic-iii-{20 * EXTRA[0]}", ["present_timeseries", "present_discharge"]].any()


def test_optional_tables_absent(tmp_path, capsys):
    src = build_fixture(tmp_path / "src", with_optional=False)
    frame, manifest = prepare(src)
    assert manifest.notes["absent"] == ["CHARTEVENTS", "LABEVENTS", "DIAGNOSES_ICD", "NOTEEVENTS"]
    assert manifest.modalities == ["timeseries", "demographics"] and not frame["present_timeseries"].any()
    assert frame["label_phenotypes"].isna().all()
    out = tmp_path / "out"
    assert main(["data", "prepare", "mimic-iii", "--src", str(src), "--out", str(out)]) == 0
    assert "prepared 20 mimic-iii stays" in capsys.readouterr().out and len(read_stays(out)[0]) == 20


def test_bad_inputs(tmp_path, capsys):
    src = build_fixture(tmp_path / "src")
    (src / "PATIENTS.csv.gz").unlink()
    assert main(["data", "prepare", "mimic-iii", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"sweeper: error: {src}/PATIENTS.csv.gz: missing (patients: birth date and gender); use the folder as distributed (.csv.gz or .csv)\n"
    assert not (tmp_path / "out").exists()
    pd.DataFrame({"ROW_ID": [1], "SUBJECT_ID": [101], "GENDER": ["F"]}).to_csv(src / "PATIENTS.csv", index=False)
    with pytest.raises(StaysError, match=r"PATIENTS\.csv: missing column 'dob' \(header has row_id, subject_id, gender\)"):
        prepare(src)
    pd.DataFrame({"ROW_ID": [1], "SUBJECT_ID": [101], "GENDER": ["F"], "DOB": ["2080-05-01"]}).to_csv(src / "PATIENTS.csv", index=False)
    with pytest.raises(StaysError, match=r"PATIENTS\.csv: no row for SUBJECT_ID 110 \(an ICU stay in .*ICUSTAYS\.csv\.gz\); use the complete PATIENTS table"):
        prepare(src)


def test_a_bad_value_in_a_streamed_table_names_its_column(tmp_path):
    src = build_fixture(tmp_path / "src")
    chart = pd.read_csv(src / "CHARTEVENTS.csv.gz")
    chart["CHARTTIME"] = chart["CHARTTIME"].astype(object)
    chart.loc[0, "CHARTTIME"] = "soon"
    _write(src, "CHARTEVENTS", chart.drop(columns="ROW_ID").to_dict("records"), gz=True)
    with pytest.raises(StaysError, match=r"CHARTEVENTS\.csv\.gz: column 'charttime' holds 'soon', which is not a date and time; use the table as distributed"):
        prepare(src)
