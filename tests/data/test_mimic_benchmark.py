"""MIMIC-III benchmark task folders (in-hospital-mortality/, phenotyping/, length-of-stay/) against a
fixture written here in the layout the benchmark's scripts produce. No Ray."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.cli import main
from sweeper.data.mimic_benchmark import prepare
from sweeper.data.schema import PHENOTYPES, StaysError
from sweeper.data.stays import read_stays
from sweeper.data.variables import INDEX

HEADER = ["Hours", "Capillary refill rate", "Diastolic blood pressure", "Fraction inspired oxygen", "Glascow coma scale eye opening",
          "Glascow coma scale motor response", "Glascow coma scale total", "Glascow coma scale verbal response", "Glucose", "Heart Rate",
          "Height", "Mean blood pressure", "Oxygen saturation", "Respiratory rate", "Systolic blood pressure", "Temperature", "Weight", "pH"]
TRAIN = [f"{100 + i}_episode1_timeseries.csv" for i in range(20)] + ["100_episode2_timeseries.csv"]
TEST = [f"{200 + i}_episode1_timeseries.csv" for i in range(6)]


def _series(path: Path, i: int) -> None:
    rows = [
        {"Hours": 0.5, "Heart Rate": 80 + i, "Glascow coma scale eye opening": "4 Spontaneously", "Capillary refill rate": 0.0},
        {"Hours": 0.75, "Heart Rate": 90 + i, "Glascow coma scale motor response": "Obeys Commands", "Glascow coma scale total": 15},
        {"Hours": 3.2, "Temperature": 37.2, "Fraction inspired oxygen": 0.5, "Glascow coma scale verbal response": "1.0 ET/Trach"},
        {"Hours": 60.0, "Heart Rate": 120},  # after the first 48 h
    ]
    pd.DataFrame(rows, columns=HEADER).to_csv(path, index=False)


def build(src: Path, with_val: bool = False) -> Path:
    for task in ("in-hospital-mortality", "phenotyping", "length-of-stay"):
        for folder, stays in (("train", TRAIN), ("test", TEST)):
            (src / task / folder).mkdir(parents=True)
            for i, stay in enumerate(stays):
                _series(src / task / folder / stay, i)
            if task == "in-hospital-mortality":
                listed = [s for s in stays if s != "100_episode2_timeseries.csv"]  # a stay shorter than 48 h: not in IHM
                frame = pd.DataFrame({"stay": listed, "y_true": [i % 3 == 0 for i in range(len(listed))]}).astype({"y_true": int})
            elif task == "phenotyping":
                frame = pd.DataFrame({"stay": stays, "period_length": [50.0 + i for i in range(len(stays))]})
                for j, name in enumerate(PHENOTYPES):
                    frame[name] = [int((i + j) % 4 == 0) for i in range(len(stays))]
            else:
                frame = pd.DataFrame({"stay": [s for s in stays for _ in (0, 1)], "period_length": [5.0, 6.0] * len(stays), "y_true": [45.0, 44.0] * len(stays)})
            frame.to_csv(src / task / folder / "listfile.csv", index=False)
        if with_val:
            train = pd.read_csv(src / task / "train" / "listfile.csv")
            val = train["stay"].str.startswith(("118_", "119_"))
            train[~val].to_csv(src / task / "train_listfile.csv", index=False)
            train[val].to_csv(src / task / "val_listfile.csv", index=False)
            pd.read_csv(src / task / "test" / "listfile.csv").to_csv(src / task / "test_listfile.csv", index=False)
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture written once per layout; tests work on copies."""
    root = tmp_path_factory.mktemp("benchmark")
    return {with_val: build(root / f"val{int(with_val)}", with_val=with_val) for with_val in (False, True)}


def _copy(built, tmp_path, with_val: bool = False) -> Path:
    return Path(shutil.copytree(built[with_val], tmp_path / "src"))


def test_task_folders_to_stays(built):
    frame, manifest = prepare(built[False])
    assert len(frame) == 27 and manifest.modalities == ["timeseries"] and manifest.notes["tasks"] == ["in-hospital-mortality", "phenotyping", "length-of-stay"]
    rows = frame.set_index("stay_id")
    assert set(rows.loc[[f"mimic-benchmark-{s.removesuffix('_timeseries.csv')}" for s in TEST], "split"]) == {"test"}
    assert set(frame["split"]) == {"train", "val", "test"} and manifest.split["method"].startswith("the benchmark's train/test split")
    assert rows.loc["mimic-benchmark-100_episode1", "split"] == rows.loc["mimic-benchmark-100_episode2", "split"]  # one patient, one split
    s = rows.loc["mimic-benchmark-103_episode1"]
    assert s["subject_id"] == "103" and s["label_ihm"] == 1 and s["label_los_hours"] == 53
    assert list(s["label_phenotypes"]) == [float((3 + j) % 4 == 0) for j in range(25)]
    assert np.isnan(rows.loc["mimic-benchmark-100_episode2", "label_ihm"])  # not in the IHM task
    features, values, times = (np.asarray(s[c]) for c in ("ts_event_feature", "ts_event_value", "ts_event_time"))
    by = lambda name: list(values[features == INDEX[name]])
    assert by("heart_rate") == [83, 93] and by("gcs_eye") == [4] and by("gcs_motor") == [6] and by("gcs_verbal") == [1]
    assert by("temperature") == pytest.approx([37.2]) and by("fio2") == [0.5] and times.max() < 48
    assert np.asarray(s["ts_hourly_values"]).reshape(48, -1)[0, INDEX["heart_rate"]] == pytest.approx(88)
    assert manifest.notes["values_not_on_the_variable_list"] == 2 * 27 and manifest.notes["observations_after_48h"] == 27


def test_the_benchmarks_val_listfile_is_kept(built, tmp_path, capsys):
    src = built[True]
    out = tmp_path / "out"
    assert main(["data", "prepare", "mimic-benchmark", "--src", str(src), "--out", str(out)]) == 0
    assert "prepared 27 mimic-benchmark stays" in capsys.readouterr().out
    stays, manifest = read_stays(out)
    stays = stays.to_pandas()
    val = set(stays.loc[stays["split"] == "val", "subject_id"])
    assert val == {"118", "119"} and manifest.split == {"method": "the benchmark's train/val/test listfiles"}
    assert manifest.counts == {"train": 19, "val": 2, "test": 6}


def test_one_task_alone(built, tmp_path):
    src = _copy(built, tmp_path)
    for task in ("phenotyping", "length-of-stay"):
        for file in sorted((src / task).rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        (src / task).rmdir()
    frame, manifest = prepare(src)
    assert len(frame) == 26 and frame["label_phenotypes"].isna().all() and frame["label_los_hours"].isna().all()


def test_bad_inputs(built, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "prepare", "mimic-benchmark", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"sweeper: error: --src {tmp_path}/empty: none of in-hospital-mortality/, phenotyping/, length-of-stay/ found; point it at the benchmark's data folder\n"
    src = _copy(built, tmp_path)
    (src / "in-hospital-mortality" / "train" / "105_episode1_timeseries.csv").unlink()
    with pytest.raises(StaysError, match=r"in-hospital-mortality/train/105_episode1_timeseries\.csv: missing, but listed by its task's listfile"):
        prepare(src)
    listfile = src / "phenotyping" / "test" / "listfile.csv"
    pd.read_csv(listfile).drop(columns="Shock").to_csv(listfile, index=False)
    with pytest.raises(StaysError, match=r"phenotyping/test/listfile\.csv: missing column 'Shock' \(header has stay, period_length, "):
        prepare(src)
