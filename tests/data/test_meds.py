"""MEDS adapter against a small MEDS dataset written here by hand in the MEDS schema (data/*.parquet
shards of subject events, metadata/subject_splits.parquet), with the shipped code mapping. No Ray."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeper.cli import main
from sweeper.data.meds import DEFAULT_CODES, prepare, read_codes
from sweeper.data.schema import PHENOTYPES, StaysError
from sweeper.data.stays import read_stays
from sweeper.data.variables import INDEX

T0 = datetime(2150, 3, 1, 8, 0)
SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                    ("numeric_value", pa.float32()), ("text_value", pa.string())])


def _subject(subject: int, hours: float, died: bool = False, start: datetime = T0) -> list[tuple]:
    h = lambda x: start + timedelta(hours=x)
    rows = [
        (subject, None, "GENDER//F" if subject % 2 else "GENDER//M", None, None),
        (subject, datetime(2090, 1, 1), "MEDS_BIRTH", None, None),
        (subject, h(-3), "HOSPITAL_ADMISSION//EW EMER.", None, None),
        (subject, h(-3), "INSURANCE//Medicare", None, None),
        (subject, h(0), "ICU_ADMISSION//MICU", None, None),
        (subject, h(1), "LAB//220045//bpm", 80.0, None),
        (subject, h(1.5), "LAB//220045//bpm", 90.0, None),
        (subject, h(2), "LAB//223761//°F", 98.6, None),
        (subject, h(3), "LAB//50931//mg/dL", 120.0, None),
        (subject, h(3), "LAB//99999//x", 5.0, None),  # not mapped
        (subject, h(6), "NOTE//RADIOLOGY", None, "Portable chest film."),
        (subject, h(60), "LAB//220045//bpm", 100.0, None),  # after 48 h
        (subject, h(hours), "ICU_DISCHARGE//MICU", None, None),
    ]
    end = h(hours + 20)
    if died:
        rows.append((subject, end - timedelta(hours=1), "MEDS_DEATH", None, None))
    rows += [(subject, end, "DIAGNOSIS//ICD//9//4019", None, None), (subject, end, "DIAGNOSIS//ICD//10//J96.01", None, None),
             (subject, end, "NOTE//DISCHARGE", None, "Discharge summary."), (subject, end, "HOSPITAL_DISCHARGE//HOME", None, None)]
    return rows


def build(src: Path, with_splits: bool = True) -> Path:
    (src / "data" / "train").mkdir(parents=True)
    (src / "metadata").mkdir()
    subjects = list(range(1, 21))
    for shard, group in enumerate((subjects[:10], subjects[10:])):
        rows = [row for s in group for row in _subject(s, hours=30 if s == 4 else 72, died=s % 5 == 0)]
        if group[0] == 1:  # subject 1 has a second, later stay in the same shard
            rows += _subject(1, hours=50, start=T0 + timedelta(days=30))
        pq.write_table(pa.Table.from_pylist([dict(zip(SCHEMA.names, r)) for r in rows], schema=SCHEMA), src / "data" / "train" / f"{shard}.parquet")
    if with_splits:
        split = ["train"] * 14 + ["tuning"] * 3 + ["held_out"] * 3
        pq.write_table(pa.table({"subject_id": pa.array(subjects, pa.int64()), "split": split}), src / "metadata" / "subject_splits.parquet")
    return src


def test_meds_to_stays(tmp_path):
    frame, manifest = prepare(build(tmp_path / "src"))
    assert len(frame) == 20 and manifest.excluded == {"stay_start_without_end": 0, "icu_stay_shorter_than_48h": 1, "age_under_18": 0}
    assert manifest.modalities == ["discharge", "radiology", "timeseries", "demographics"]
    rows = frame.set_index("stay_id")
    assert {"meds-1-1", "meds-1-2"} <= set(rows.index) and "meds-4-1" not in rows.index
    s = rows.loc["meds-5-1"]
    assert s["subject_id"] == "5" and s["label_ihm"] == 1 and rows.loc["meds-6-1", "label_ihm"] == 0
    assert s["label_los_hours"] == pytest.approx(72) and s["demo_age"] == pytest.approx(60.16, abs=0.01)
    assert s["demo_gender"] == "female" and s["demo_insurance"] == "Medicare" and rows.loc["meds-6-1", "demo_gender"] == "male"
    features, values = np.asarray(s["ts_event_feature"]), np.asarray(s["ts_event_value"])
    assert list(values[features == INDEX["heart_rate"]]) == [80, 90] and list(values[features == INDEX["glucose"]]) == [120]
    assert values[features == INDEX["temperature"]] == pytest.approx([37.0], abs=1e-4)
    labels = s["label_phenotypes"]
    assert labels[PHENOTYPES.index("Essential hypertension")] == 1 and labels[PHENOTYPES.index("Respiratory failure; insufficiency; arrest (adult)")] == 1
    assert labels.sum() == 2
    assert s["radiology_text"] == "Portable chest film." and s["radiology_time"] == pytest.approx(6)
    assert s["discharge_text"] == "Discharge summary." and s["discharge_time"] == pytest.approx(92)
    assert manifest.notes["discharge_after_prediction_time"] == 20
    # the MEDS subject splits are kept: tuning is val, held_out test
    assert dict(zip(frame["subject_id"], frame["split"]))["14"] == "train" and dict(zip(frame["subject_id"], frame["split"]))["15"] == "val" and set(frame.loc[frame["subject_id"].isin(["18", "19", "20"]), "split"]) == {"test"}
    assert manifest.split["method"].startswith("the MEDS dataset's subject splits")


def test_cli_without_splits_uses_the_engines_split(tmp_path, capsys):
    src = build(tmp_path / "src", with_splits=False)
    assert main(["data", "prepare", "meds", "--src", str(src), "--out", str(tmp_path / "out"), "--codes", str(DEFAULT_CODES)]) == 0
    assert "prepared 20 meds stays" in capsys.readouterr().out
    _, manifest = read_stays(tmp_path / "out")
    assert manifest.split["method"].startswith("patient-level")


def test_codes_file_and_bad_inputs(tmp_path, capsys):
    assert read_codes(DEFAULT_CODES).stay.start == "ICU_ADMISSION"
    (tmp_path / "codes.yaml").write_text("stay: {start: ICU_ADMISSION, end: ICU_DISCHARGE}\ntimeseries: {pulse: [LAB//211//]}\n")
    with pytest.raises(StaysError, match=r"codes\.yaml: timeseries: unknown key 'pulse'; known: albumin, bicarbonate"):
        read_codes(tmp_path / "codes.yaml")
    (tmp_path / "codes.yaml").write_text("stay: {start: ICU_ADMISSION}\n")
    with pytest.raises(StaysError, match=r"codes\.yaml: stay\.end: Field required; fix the file"):
        read_codes(tmp_path / "codes.yaml")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    assert main(["data", "prepare", "meds", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"sweeper: error: --src {tmp_path}/empty: no data/**/*.parquet; point it at the MEDS dataset's root (holding data/ and metadata/)\n"
    src = build(tmp_path / "src")
    pq.write_table(pa.table({"subject_id": pa.array([1], pa.int64()), "code": ["X"]}), src / "data" / "train" / "bad.parquet")
    with pytest.raises(StaysError, match=r"bad\.parquet: missing column 'time' \(MEDS data needs subject_id, time, code, numeric_value\)"):
        prepare(src)
