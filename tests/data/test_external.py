"""A second cohort through a model's eyes: what it lacks (``sweeper data describe EXT --against TRAIN``)
and its time series laid out in the training cohort's feature order by name. The real MIMIC-IV demo
and a small PhysioNet 2012 layout written here. No Ray."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest

from sweeper.cli import main
from sweeper.data.external import compare, observed_features, remap_timeseries
from sweeper.data.mimic_iv import prepare
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.variables import FEATURES

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("SWEEPER_MIMIC_IV_DEMO", ROOT.parent / "shared" / "data" / "mimic-iv-demo-2.2"))


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    frame, manifest = prepare(DEMO)
    out = tmp_path_factory.mktemp("ext") / "mimic"
    return frame, write_stays(frame, manifest, out), out


def _p12(src: Path) -> Path:
    (src / "set-a").mkdir(parents=True)
    rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
    for i in range(40):
        lines = ["Time,Parameter,Value", f"00:00,RecordID,{1000 + i}", "00:00,Age,60", "00:00,Gender,1", "00:00,Height,-1",
                 "00:00,ICUType,2", "00:00,Weight,70", "00:40,HR,77"]
        (src / "set-a" / f"{1000 + i}.txt").write_text("\n".join(lines) + "\n")
        rows.append(f"{1000 + i},10,2,4,-1,{int(i % 5 == 0)}")
    (src / "Outcomes-a.txt").write_text("\n".join(rows) + "\n")
    return src


def test_what_another_source_lacks(mimic, tmp_path, capsys):
    _, manifest, out = mimic
    _p12(tmp_path / "src")
    assert main(["data", "prepare", "physionet2012", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "p12")]) == 0
    capsys.readouterr()
    table, p12 = read_stays(tmp_path / "p12")
    report = compare(manifest, p12, observed_features(table, p12))
    assert report["features_absent"] == FEATURES  # P12's names (HR, ...) are not the shared list's (heart_rate, ...)
    assert "HR" in report["features_not_read"] and len(report["phenotypes_absent"]) == 25
    assert report["demographics_absent"] == ["race", "admission_type", "insurance", "first_careunit"]
    assert report["modalities_absent"] == []
    assert main(["data", "describe", str(tmp_path / "p12"), "--against", str(out)]) == 0
    text = capsys.readouterr().out
    assert "features absent: 30: heart_rate, sbp," in text and "demographics absent: race, admission_type, insurance, first_careunit" in text


def test_a_cohort_against_itself_lacks_nothing_it_observes(mimic):
    frame, manifest, out = mimic
    table, again = read_stays(out)
    observed = observed_features(table, again)
    report = compare(manifest, again, observed)
    assert {k: v for k, v in report.items() if k != "features_never_observed"} == {
        "modalities_absent": [], "features_absent": [], "features_not_read": [], "units_differ": {}, "demographics_absent": [],
        "categories_unseen_in_training": {}, "phenotypes_absent": []}
    # the demo has no chartevents: the vital signs are never observed, the labs are
    assert "heart_rate" in report["features_never_observed"] and "glucose" in observed


def test_remap_by_name(mimic):
    frame, manifest, _ = mimic
    train = copy.deepcopy(manifest)
    train.timeseries.features = ["creatinine", "heart_rate", "glucose"]  # another order, a subset
    remapped, dropped = remap_timeseries(frame, manifest, train)
    row, new = frame.iloc[0], remapped.iloc[0]
    old_hourly = np.asarray(row["ts_hourly_values"]).reshape(48, -1)
    new_hourly = np.asarray(new["ts_hourly_values"]).reshape(48, 3)
    np.testing.assert_array_equal(new_hourly[:, 0], old_hourly[:, FEATURES.index("creatinine")])
    np.testing.assert_array_equal(new_hourly[:, 2], old_hourly[:, FEATURES.index("glucose")])
    assert np.isnan(new_hourly[:, 1]).all() and not np.asarray(new["ts_hourly_mask"]).reshape(48, 3)[:, 1].any()
    kept = np.isin(np.asarray(row["ts_event_feature"]), [FEATURES.index("creatinine"), FEATURES.index("glucose")])
    assert list(np.asarray(new["ts_event_value"])) == list(np.asarray(row["ts_event_value"])[kept])
    assert dropped == sum(len(f) for f in frame["ts_event_feature"] if f is not None) - sum(len(f) for f in remapped["ts_event_feature"] if f is not None)
