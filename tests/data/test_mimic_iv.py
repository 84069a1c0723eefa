"""MIMIC-IV adapter on the real MIMIC-IV demo 2.2 (``../shared/data/mimic-iv-demo-2.2``, read-only;
its ``icu/chartevents`` is absent), with small MIMIC-IV-Note and MIMIC-CXR-JPG fixtures built here in
their official layouts (no open data of either exists). No Ray."""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sweeper.cli import main
from sweeper.data.mimic_iv import prepare
from sweeper.data.phenotype_codes import DEFINITIONS, guess_version, phenotype_labels
from sweeper.data.schema import PHENOTYPES, StaysError
from sweeper.data.stays import read_stays
from sweeper.data.variables import FEATURES, INDEX

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("SWEEPER_MIMIC_IV_DEMO", ROOT.parent / "shared" / "data" / "mimic-iv-demo-2.2"))


@pytest.fixture(scope="module")
def demo():
    assert (DEMO / "icu" / "icustays.csv.gz").is_file(), f"real MIMIC-IV demo missing at {DEMO}"
    return prepare(DEMO)


@pytest.fixture(scope="module")
def icustays():
    return pd.read_csv(DEMO / "icu" / "icustays.csv.gz", parse_dates=["intime", "outtime"])


def test_demo_cohort_labels_and_counts(demo, icustays):
    frame, manifest = demo
    hours = (icustays["outtime"] - icustays["intime"]).dt.total_seconds() / 3600
    long = icustays[hours >= 48]
    assert len(icustays) == 140 and len(frame) == len(long) == 74
    assert manifest.excluded == {"icu_stay_shorter_than_48h": 66, "age_under_18": 0}
    assert manifest.notes["absent"] == ["icu/chartevents", "note (MIMIC-IV-Note)", "cxr (MIMIC-CXR-JPG)"]
    assert manifest.modalities == ["timeseries", "demographics"]
    assert sorted(frame["stay_id"]) == sorted(f"mimic-iv-{s}" for s in long["stay_id"])
    # IHM is the admission's hospital_expire_flag; LOS the ICU stay in hours.
    adm = pd.read_csv(DEMO / "hosp" / "admissions.csv.gz").set_index("hadm_id")
    expected = long.set_index("stay_id")
    by_stay = frame.set_index(frame["stay_id"].str.removeprefix("mimic-iv-").astype(int))
    np.testing.assert_array_equal(by_stay.loc[expected.index, "label_ihm"], adm.loc[expected["hadm_id"], "hospital_expire_flag"].to_numpy())
    np.testing.assert_allclose(by_stay.loc[expected.index, "label_los_hours"], hours[hours >= 48].to_numpy(), rtol=1e-5)
    assert frame["label_ihm"].sum() == 12


def test_demo_timeseries_match_labevents(demo, icustays):
    """Every glucose lab of one stay's first 48 h is an event of that stay, in mg/dL, in time order."""
    frame, manifest = demo
    assert manifest.timeseries.features == FEATURES and frame["present_timeseries"].all()
    stay = icustays[(icustays["outtime"] - icustays["intime"]).dt.total_seconds() >= 48 * 3600].iloc[0]
    labs = pd.read_csv(DEMO / "hosp" / "labevents.csv.gz", usecols=["subject_id", "itemid", "charttime", "valuenum"], parse_dates=["charttime"])
    labs = labs[(labs["subject_id"] == stay["subject_id"]) & labs["itemid"].isin([50931, 50809]) & labs["valuenum"].notna()]
    hours = (labs["charttime"] - stay["intime"]).dt.total_seconds() / 3600
    expected = labs[(hours >= 0) & (hours <= 48)].assign(hours=hours).sort_values("hours", kind="stable")
    row = frame.set_index("stay_id").loc[f"mimic-iv-{stay['stay_id']}"]
    glucose = np.asarray(row["ts_event_feature"]) == INDEX["glucose"]
    np.testing.assert_allclose(np.asarray(row["ts_event_value"])[glucose], expected["valuenum"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(row["ts_event_time"])[glucose], expected["hours"], rtol=1e-5)
    assert len(expected) > 0
    hourly = np.asarray(row["ts_hourly_values"]).reshape(48, len(FEATURES))
    first = expected.iloc[0]
    same_hour = expected[expected["hours"].astype(int) == int(first["hours"])]
    assert hourly[int(first["hours"]), INDEX["glucose"]] == pytest.approx(same_hour["valuenum"].mean(), rel=1e-5)


def test_demo_phenotypes_from_icd_codes(demo):
    frame, _ = demo
    diagnoses = pd.read_csv(DEMO / "hosp" / "diagnoses_icd.csv.gz", dtype={"icd_code": str})
    icu = pd.read_csv(DEMO / "icu" / "icustays.csv.gz")
    by_stay = frame.set_index(frame["stay_id"].str.removeprefix("mimic-iv-").astype(int))
    hypertension = PHENOTYPES.index("Essential hypertension")
    for stay_id, row in by_stay.iterrows():
        hadm = icu.loc[icu["stay_id"] == stay_id, "hadm_id"].iloc[0]
        codes = diagnoses[diagnoses["hadm_id"] == hadm]
        has = ((codes["icd_version"] == 9) & codes["icd_code"].str.startswith("401")) | ((codes["icd_version"] == 10) & codes["icd_code"].str.startswith("I10"))
        assert row["label_phenotypes"][hypertension] == float(has.any())
    rates = np.mean(np.stack(frame["label_phenotypes"]), axis=0)
    assert 0 < rates.min() and rates.max() < 1  # every phenotype occurs and none is universal in the demo


def test_phenotype_codes_both_icd_versions():
    codes = pd.DataFrame({"key": [1, 1, 2, 3], "code": ["410.71", "I50.9", "E11.9", "E878.8"], "version": [9, 10, 10, 9]})
    labels = phenotype_labels(codes)
    assert labels[1][PHENOTYPES.index("Acute myocardial infarction")] == 1
    assert labels[1][PHENOTYPES.index("Congestive heart failure; nonhypertensive")] == 1
    assert labels[2][PHENOTYPES.index("Diabetes mellitus without complication")] == 1
    assert labels[2][PHENOTYPES.index("Diabetes mellitus with complications")] == 0
    assert labels[3][PHENOTYPES.index("Complications of surgical procedures or medical care")] == 1
    assert [guess_version(c) for c in ("410.71", "V45.81", "E878.8", "E11.9", "I21.4")] == [9, 9, 9, 10, 10]
    assert list(DEFINITIONS) == list(PHENOTYPES)


# ---------------------------------------------------------------- MIMIC-IV-Note and MIMIC-CXR-JPG fixtures


def _csv_gz(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)


def _jpg(shape=(40, 30), level=128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, level, dtype=np.uint8), mode="L").convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture()
def full_src(tmp_path, icustays):
    """The demo's hosp/ and icu/ (linked, not copied) plus note/ and cxr/ for two long stays."""
    src = tmp_path / "mimic"
    src.mkdir()
    for part in ("hosp", "icu"):
        (src / part).symlink_to(DEMO / part)
    long = icustays[(icustays["outtime"] - icustays["intime"]).dt.total_seconds() >= 48 * 3600].iloc[:2]
    a, b = long.iloc[0], long.iloc[1]
    hour = pd.Timedelta(hours=1)
    note = lambda rows: pd.DataFrame(rows, columns=["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"])
    _csv_gz(src / "note" / "discharge.csv.gz", note([
        [f"{a.subject_id}-DS-1", a.subject_id, a.hadm_id, "DS", 1, a.outtime + 24 * hour, a.outtime + 25 * hour, "Discharge summary A."],
    ]))
    _csv_gz(src / "note" / "radiology.csv.gz", note([
        [f"{a.subject_id}-RR-2", a.subject_id, a.hadm_id, "RR", 2, a.intime + 30 * hour, None, "Second report."],
        [f"{a.subject_id}-RR-1", a.subject_id, a.hadm_id, "RR", 1, a.intime + 2 * hour, None, "First report."],
        [f"{a.subject_id}-RR-3", a.subject_id, a.hadm_id, "RR", 3, a.intime + 60 * hour, None, "After the window."],
    ]))
    stamp = lambda t: (t.strftime("%Y%m%d"), t.strftime("%H%M%S") + ".000")
    rows = [  # dicom_id, subject, study, view, time
        ("d1", b.subject_id, 50000001, "AP", b.intime + 3 * hour),
        ("d2", b.subject_id, 50000001, "LATERAL", b.intime + 3 * hour),
        ("d3", b.subject_id, 50000002, "PA", b.intime + 70 * hour),
        ("d4", b.subject_id, 50000003, "PA", b.intime + 10 * hour),
    ]
    meta = pd.DataFrame([{"dicom_id": d, "subject_id": s, "study_id": st, "PerformedProcedureStepDescription": "CHEST (PORTABLE AP)",
                          "ViewPosition": v, "Rows": 40, "Columns": 30, "StudyDate": stamp(t)[0], "StudyTime": stamp(t)[1],
                          "ProcedureCodeSequence_CodeMeaning": "CHEST", "ViewCodeSequence_CodeMeaning": "antero-posterior",
                          "PatientOrientationCodeSequence_CodeMeaning": "Erect"} for d, s, st, v, t in rows])
    cxr = src / "cxr"
    _csv_gz(cxr / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    _csv_gz(cxr / "mimic-cxr-2.0.0-split.csv.gz", meta[["dicom_id", "study_id", "subject_id"]].assign(split="train"))
    _csv_gz(cxr / "mimic-cxr-2.0.0-chexpert.csv.gz", meta[["subject_id", "study_id"]].drop_duplicates().assign(**{"No Finding": 1.0}))
    for i, (dicom, subject, study, _, _) in enumerate(rows):
        folder = cxr / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{dicom}.jpg").write_bytes(_jpg(level=40 + 50 * i))
    return src, a, b


def test_notes_and_images_from_the_official_layouts(full_src):
    src, a, b = full_src
    frame, manifest = prepare(src, cxr_size=32)
    assert manifest.modalities == ["discharge", "radiology", "cxr", "timeseries", "demographics"]
    assert manifest.notes["absent"] == ["icu/chartevents"] and manifest.cxr_size == 32
    rows = frame.set_index("stay_id")
    ra, rb = rows.loc[f"mimic-iv-{a.stay_id}"], rows.loc[f"mimic-iv-{b.stay_id}"]
    assert ra["present_discharge"] and ra["discharge_text"] == "Discharge summary A."
    assert ra["discharge_time"] > 48 and manifest.notes["discharge_after_prediction_time"] == 1
    assert ra["radiology_text"] == "First report.\n\nSecond report." and ra["radiology_time"] == pytest.approx(30)
    assert frame["present_discharge"].sum() == 1 and frame["present_radiology"].sum() == 1
    assert not ra["present_cxr"] and rb["present_cxr"] and frame["present_cxr"].sum() == 1
    # Frontal views in the window, in time order: d1 (3 h) and d4 (10 h); the lateral d2 and d3 at 70 h are not.
    assert list(rb["cxr_times"]) == pytest.approx([3, 10]) and manifest.notes["cxr_not_frontal"] == 1
    images = [np.asarray(Image.open(io.BytesIO(png))) for png in rb["cxr_images"]]
    assert [im.shape for im in images] == [(32, 32), (32, 32)]
    assert abs(int(images[0].mean()) - 40) <= 3 and abs(int(images[1].mean()) - 190) <= 3


def test_a_missing_optional_source_leaves_its_modality_absent(full_src, tmp_path):
    src, a, b = full_src
    (src / "note" / "radiology.csv.gz").unlink()
    next((src / "cxr" / "files").rglob("d4.jpg")).unlink()
    frame, manifest = prepare(src)
    assert manifest.modalities == ["discharge", "cxr", "timeseries", "demographics"]
    assert manifest.notes["absent"] == ["icu/chartevents", "note/radiology"]
    assert manifest.notes["cxr_image_files_missing"] == 1 and not frame["present_radiology"].any()
    out = tmp_path / "out"
    assert main(["data", "prepare", "mimic-iv", "--src", str(src), "--out", str(out), "--note", str(src / "note"), "--cxr", str(src / "cxr")]) == 0
    stays, written = read_stays(out)
    assert written.modalities == manifest.modalities and len(stays) == len(frame)


def test_cli_prepare_and_describe_on_the_demo(tmp_path, capsys):
    out = tmp_path / "iv"
    assert main(["data", "prepare", "mimic-iv", "--src", str(DEMO), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "prepared 74 mimic-iv stays" in text and "absent: ['icu/chartevents'" in text
    assert main(["data", "describe", str(out)]) == 0
    assert "source: mimic-iv" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- bad inputs


def _fails(capsys, argv, expected: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert expected in captured.err, captured.err
    return captured.err


def _copy(tmp_path, drop: str | None = None) -> Path:
    src = tmp_path / "src"
    for part in ("hosp", "icu"):
        (src / part).mkdir(parents=True)
        for file in (DEMO / part).iterdir():
            if f"{part}/{file.name}" != drop:
                (src / part / file.name).symlink_to(file)
    return src


def test_missing_required_table(tmp_path, capsys):
    src = _copy(tmp_path, drop="icu/icustays.csv.gz")
    _fails(capsys, ["data", "prepare", "mimic-iv", "--src", str(src), "--out", str(tmp_path / "out")],
           f"{src}/icu/icustays.csv.gz: missing (the ICU stays); use the folder as distributed (.csv.gz or .csv)")
    assert not (tmp_path / "out").exists()


def test_src_without_hosp(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    _fails(capsys, ["data", "prepare", "mimic-iv", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
           "no hosp/ folder; point --src at the MIMIC-IV folder holding hosp/ and icu/")


def test_table_missing_a_column(tmp_path, capsys):
    src = _copy(tmp_path, drop="hosp/admissions.csv.gz")
    adm = pd.read_csv(DEMO / "hosp" / "admissions.csv.gz").drop(columns="hospital_expire_flag")
    _csv_gz(src / "hosp" / "admissions.csv.gz", adm)
    _fails(capsys, ["data", "prepare", "mimic-iv", "--src", str(src), "--out", str(tmp_path / "out")],
           f"{src}/hosp/admissions.csv.gz: missing column 'hospital_expire_flag' (header has subject_id, hadm_id,")


def test_truncated_table(tmp_path, capsys):
    src = _copy(tmp_path, drop="hosp/labevents.csv.gz")
    data = (DEMO / "hosp" / "labevents.csv.gz").read_bytes()
    (src / "hosp" / "labevents.csv.gz").write_bytes(data[: len(data) // 2])
    _fails(capsys, ["data", "prepare", "mimic-iv", "--src", str(src), "--out", str(tmp_path / "out")],
           f"{src}/hosp/labevents.csv.gz: cannot read (")


def test_bad_time_and_unreadable_image(full_src, tmp_path, capsys):
    src, a, b = full_src
    next((src / "cxr" / "files").rglob("d1.jpg")).write_bytes(b"not a jpeg")
    with pytest.raises(StaysError, match=r"d1\.jpg: not a readable image \(.*\); download it again"):
        prepare(src)
    rad = pd.read_csv(src / "note" / "radiology.csv.gz")
    rad.loc[0, "charttime"] = "yesterday"
    _csv_gz(src / "note" / "radiology.csv.gz", rad)
    _fails(capsys, ["data", "prepare", "mimic-iv", "--src", str(src), "--out", str(tmp_path / "out")],
           "radiology.csv.gz: column 'charttime' holds 'yesterday', which is not a date and time; use the table as distributed")


def test_reading_in_small_chunks_gives_the_same_stays(demo, monkeypatch):
    """Tables stream in chunks (full MIMIC-IV's chartevents does not fit in memory as text): a chunk
    boundary changes nothing."""
    from sweeper.data import tables

    monkeypatch.setattr(tables, "CHUNK_ROWS", 5000)
    frame, manifest = prepare(DEMO)
    expected, expected_manifest = demo
    assert manifest.notes == expected_manifest.notes
    for column in ("ts_event_feature", "ts_event_value", "ts_event_time"):
        assert all(np.array_equal(a, b) for a, b in zip(frame[column], expected[column]))


def test_chartevents_when_present(tmp_path, icustays):
    """The demo lacks icu/chartevents; a few rows in its official columns give vital signs, converted."""
    src = _copy(tmp_path)
    stay = icustays[(icustays["outtime"] - icustays["intime"]).dt.total_seconds() >= 48 * 3600].iloc[0]
    at = lambda hours: (stay["intime"] + pd.Timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")
    rows = [(220045, 1, 80), (220045, 1.5, 90), (223761, 2, 98.6), (223835, 3, 50), (226707, 3, 70), (220045, 50, 100), (220045, 4, 900)]
    _csv_gz(src / "icu" / "chartevents.csv.gz", pd.DataFrame([{
        "subject_id": stay["subject_id"], "hadm_id": stay["hadm_id"], "stay_id": stay["stay_id"], "caregiver_id": 1, "charttime": at(h),
        "storetime": at(h), "itemid": item, "value": str(v), "valuenum": v, "valueuom": "", "warning": 0} for item, h, v in rows]))
    frame, manifest = prepare(src)
    assert "icu/chartevents" not in manifest.notes["absent"]
    assert manifest.notes["observations_after_48h"] == 1 and manifest.notes["implausible_values_dropped"] == {"heart_rate": 1}
    row = frame.set_index("stay_id").loc[f"mimic-iv-{stay['stay_id']}"]
    features, values = np.asarray(row["ts_event_feature"]), np.asarray(row["ts_event_value"])
    by = lambda name: list(values[features == INDEX[name]])
    assert by("heart_rate") == [80, 90] and by("temperature") == pytest.approx([37.0], abs=1e-4)
    assert by("fio2") == pytest.approx([0.5]) and by("height") == pytest.approx([177.8])
