"""eICU-CRD adapter on the real eICU demo 2.0.1 (``../shared/data/eicu-...-demo-2.0.1``, read-only;
``lab``, ``intakeOutput``, ``nurseCharting`` and ``vitalPeriodic`` are absent there), plus small
tables written in tmp_path for the ones the demo lacks and for bad inputs. No Ray."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.cli import main
from sweeper.data.eicu import prepare
from sweeper.data.schema import PHENOTYPES
from sweeper.data.stays import read_stays
from sweeper.data.variables import FEATURES, INDEX

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("SWEEPER_EICU_DEMO", ROOT.parent / "shared" / "data" / "eicu-collaborative-research-database-demo-2.0.1"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The demo prepared once, through the CLI (its printed summary kept)."""
    assert (DEMO / "patient.csv.gz").is_file(), f"real eICU demo missing at {DEMO}"
    out = tmp_path_factory.mktemp("eicu") / "stays"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["data", "prepare", "eicu", "--src", str(DEMO), "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def demo(prepared):
    table, manifest = read_stays(prepared[0])
    frame = table.to_pandas()
    frame["label_phenotypes"] = frame["label_phenotypes"].map(lambda v: None if v is None else np.asarray(v))
    return frame, manifest


@pytest.fixture(scope="module")
def patient():
    return pd.read_csv(DEMO / "patient.csv.gz")


def test_demo_cohort_and_labels(demo, patient):
    frame, manifest = demo
    age = pd.to_numeric(patient["age"].replace("> 89", "90"), errors="coerce")
    long = patient[(patient["unitdischargeoffset"] >= 48 * 60) & ~(age < 18)]
    assert len(patient) == 2520 and len(frame) == len(long) == 932
    assert manifest.excluded == {"icu_stay_shorter_than_48h": 1588, "age_under_18": 0}
    assert manifest.notes["absent"] == ["vitalPeriodic", "lab", "nurseCharting"]
    assert manifest.modalities == ["timeseries", "demographics"]
    rows = frame.set_index(frame["stay_id"].str.removeprefix("eicu-").astype(int)).loc[long["patientunitstayid"]]
    expected_ihm = long["hospitaldischargestatus"].map({"Alive": 0.0, "Expired": 1.0}).to_numpy()
    np.testing.assert_array_equal(rows["label_ihm"].to_numpy(), expected_ihm.astype(np.float32))
    np.testing.assert_allclose(rows["label_los_hours"], long["unitdischargeoffset"] / 60, rtol=1e-6)
    assert (rows["subject_id"].to_numpy() == long["uniquepid"].to_numpy()).all()
    assert rows["demo_age"].max() == 90  # "> 89"


def test_demo_timeseries_match_vital_aperiodic(demo):
    frame, _ = demo
    vitals = pd.read_csv(DEMO / "vitalAperiodic.csv.gz")
    row = frame[frame["present_timeseries"]].iloc[0]
    stay = int(row["stay_id"].removeprefix("eicu-"))
    mine = vitals[(vitals["patientunitstayid"] == stay) & vitals["noninvasivesystolic"].notna()]
    mine = mine[(mine["observationoffset"] >= 0) & (mine["observationoffset"] <= 2880) & (mine["noninvasivesystolic"] <= 375)]
    sbp = np.asarray(row["ts_event_feature"]) == INDEX["sbp"]
    assert sbp.sum() == len(mine) > 0
    np.testing.assert_allclose(np.sort(np.asarray(row["ts_event_value"])[sbp]), np.sort(mine["noninvasivesystolic"].to_numpy()), rtol=1e-6)
    assert len(row["ts_hourly_values"]) == 48 * len(FEATURES)


def test_demo_phenotypes_from_mixed_icd_codes(demo):
    frame, manifest = demo
    diagnosis = pd.read_csv(DEMO / "diagnosis.csv.gz")
    with_codes = set(diagnosis.dropna(subset=["icd9code"])["patientunitstayid"])
    keyed = frame.set_index(frame["stay_id"].str.removeprefix("eicu-").astype(int))
    known = keyed["label_phenotypes"].notna()
    assert set(keyed.index[known]) == with_codes & set(keyed.index) and manifest.notes["phenotypes_known"] == known.sum()
    hypertension = PHENOTYPES.index("Essential hypertension")
    has = set(diagnosis[diagnosis["icd9code"].fillna("").str.contains(r"(?:^|, )(?:401|I10)")]["patientunitstayid"])
    for stay, labels in keyed.loc[known, "label_phenotypes"].items():
        assert labels[hypertension] == float(stay in has)


def _gz(path: Path, frame: pd.DataFrame) -> None:
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)


@pytest.fixture()
def small(tmp_path, patient):
    """Three long demo stays with the demo's patient rows, plus lab and nurseCharting tables written here."""
    src = tmp_path / "src"
    src.mkdir()
    rows = patient[patient["unitdischargeoffset"] >= 2880].iloc[:3]
    _gz(src / "patient.csv.gz", rows)
    a = int(rows["patientunitstayid"].iloc[0])
    _gz(src / "lab.csv.gz", pd.DataFrame({
        "labid": [1, 2, 3, 4], "patientunitstayid": [a] * 4, "labresultoffset": [30, 90, 3000, 60],
        "labtypeid": 1, "labname": ["glucose", "glucose", "glucose", "FiO2"], "labresult": [110, 130, 150, 40],
        "labresulttext": "", "labmeasurenamesystem": "mg/dL", "labmeasurenameinterface": "", "labresultrevisedoffset": 0}))
    _gz(src / "nurseCharting.csv.gz", pd.DataFrame({
        "nursingchartid": [1, 2], "patientunitstayid": [a, a], "nursingchartoffset": [120, 120], "nursingchartentryoffset": [120, 120],
        "nursingchartcelltypecat": "Scores", "nursingchartcelltypevallabel": ["Glasgow coma score", "Temperature"],
        "nursingchartcelltypevalname": ["Eyes", "Temperature (F)"], "nursingchartvalue": ["3", "99"]}))
    return src, a


def test_tables_the_demo_lacks_are_read_when_present(small):
    src, a = small
    frame, manifest = prepare(src)
    assert len(frame) == 3 and "lab" not in manifest.notes["absent"] and "nurseCharting" not in manifest.notes["absent"]
    row = frame.set_index("stay_id").loc[f"eicu-{a}"]
    features, values, times = (np.asarray(row[c]) for c in ("ts_event_feature", "ts_event_value", "ts_event_time"))
    glucose = features == INDEX["glucose"]
    assert list(values[glucose]) == [110, 130] and list(times[glucose]) == pytest.approx([0.5, 1.5])  # 3000 min is after 48 h
    assert values[features == INDEX["fio2"]] == pytest.approx([0.4])  # 40 % → 0.4
    assert values[features == INDEX["gcs_eye"]] == [3] and not (features == INDEX["temperature"]).any()  # °F cells not mapped
    assert manifest.notes["observations_after_48h"] == 1
    assert not frame.set_index("stay_id").drop(index=f"eicu-{a}")["present_timeseries"].any()


def test_cli_prepare_and_describe_on_the_demo(prepared, capsys):
    out, text = prepared
    assert "prepared 932 eicu stays" in text and "absent: ['vitalPeriodic', 'lab', 'nurseCharting']" in text
    stays, manifest = read_stays(out)
    assert len(stays) == 932 and sum(manifest.counts.values()) == 932
    assert main(["data", "describe", str(out)]) == 0 and "source: eicu" in capsys.readouterr().out


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and expected in captured.err, captured


def test_missing_patient_table(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    _fails(capsys, ["data", "prepare", "eicu", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
           f"{tmp_path}/src/patient.csv.gz: missing (the ICU unit stays); use the folder as distributed (.csv.gz or .csv)")
    assert not (tmp_path / "out").exists()


def test_bad_discharge_status(small, tmp_path, capsys):
    src, _ = small
    rows = pd.read_csv(src / "patient.csv.gz")
    rows.loc[1, "hospitaldischargestatus"] = "Dead"
    _gz(src / "patient.csv.gz", rows)
    _fails(capsys, ["data", "prepare", "eicu", "--src", str(src), "--out", str(tmp_path / "out")],
           f"{src}/patient.csv.gz: column 'hospitaldischargestatus' holds 'Dead'; expected Alive, Expired or empty; use the table as distributed")


def test_reading_in_tiny_chunks_gives_the_same_stays(small, monkeypatch):
    from sweeper.data import tables

    src, _ = small
    expected, expected_manifest = prepare(src)
    monkeypatch.setattr(tables, "CHUNK_ROWS", 1)
    frame, manifest = prepare(src)
    assert manifest.notes == expected_manifest.notes
    for column in ("ts_event_feature", "ts_event_value", "ts_event_time"):
        assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(frame[column], expected[column]))
