"""PhysioNet 2012 adapter: real sets A and B from ``../shared/data/physionet2012`` (read-only),
small layouts and bad inputs built in ``tmp_path`` from slices of the real files. No Ray."""
from __future__ import annotations

import copy
import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sweeper.cli import main
from sweeper.data.physionet2012 import FEATURES, UNITS, prepare
from sweeper.data.physionet2012_records import LIMITS
from sweeper.data.schema import MODALITIES, MODALITY_COLUMNS, StaysError, demo_column, presence_column
from sweeper.data.stays import read_stays, write_stays

ROOT = Path(__file__).resolve().parents[2]
P12 = Path(os.environ.get("SWEEPER_P12_DIR", ROOT.parent / "shared" / "data" / "physionet2012"))

# The 36 time-series parameters of the challenge (42 variables minus the 6 general descriptors).
EXPECTED_FEATURES = {
    "ALP", "ALT", "AST", "Albumin", "BUN", "Bilirubin", "Cholesterol", "Creatinine", "DiasABP",
    "FiO2", "GCS", "Glucose", "HCO3", "HCT", "HR", "K", "Lactate", "MAP", "MechVent", "Mg",
    "NIDiasABP", "NIMAP", "NISysABP", "Na", "PaCO2", "PaO2", "Platelets", "RespRate", "SaO2",
    "SysABP", "Temp", "TroponinI", "TroponinT", "Urine", "WBC", "pH",
}
DESCRIPTORS = {"RecordID", "Age", "Gender", "Height", "ICUType", "Weight"}
HOURS = 48


# ---------------------------------------------------------------- fixtures (real data, parsed once)


@pytest.fixture(scope="module")
def raw_a() -> dict[str, bytes]:
    """Every record of set A as raw bytes, keyed by file name (``132539.txt``), independent of the adapter."""
    assert (P12 / "set-a.tar.gz").is_file(), f"real PhysioNet 2012 data missing at {P12}"
    out = {}
    with tarfile.open(P12 / "set-a.tar.gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                out[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read()
    return out


@pytest.fixture(scope="module")
def set_a():
    return prepare(P12, sets=["a"])


@pytest.fixture(scope="module")
def set_ab():
    return prepare(P12)  # every set found: a and b


def _raw_lines(data: bytes) -> list[tuple[int, str, float]]:
    """(minutes, parameter, value) of a record's lines, header skipped."""
    rows = []
    for line in data.decode().splitlines()[1:]:
        time, name, value = line.split(",")
        hh, mm = time.split(":")
        rows.append((int(hh) * 60 + int(mm), name, float(value)))
    return rows


def _is_descriptor_line(minutes: int, name: str, seen: set) -> bool:
    if minutes == 0 and name in DESCRIPTORS and name not in seen:
        seen.add(name)
        return True
    return False


def _ts_lines(data: bytes, implausible: bool = False) -> list[tuple[int, str, float]]:
    """The lines that should become events: not a descriptor line, not Weight, within the feature's limits
    (with ``implausible``: the lines outside them instead)."""
    seen: set = set()
    lines = [(m, n, v) for m, n, v in _raw_lines(data) if not _is_descriptor_line(m, n, seen) and n != "Weight"]
    return [(m, n, v) for m, n, v in lines if (LIMITS[n][0] <= v <= LIMITS[n][1]) != implausible]


def _row(frame, record_id: int):
    rows = frame[frame["subject_id"] == str(record_id)]
    assert len(rows) == 1
    return rows.iloc[0]


def _hourly_from_events(feature, value, time, n_features):
    cell = np.minimum(np.floor(np.asarray(time, dtype=np.float64) + 1e-6).astype(int), HOURS - 1) * n_features + np.asarray(feature, dtype=int)
    sums = np.bincount(cell, weights=np.asarray(value, dtype=np.float64), minlength=HOURS * n_features)
    counts = np.bincount(cell, minlength=HOURS * n_features)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan), counts > 0


# ---------------------------------------------------------------- real sets


def test_set_a_counts_and_labels(set_a):
    frame, manifest = set_a
    assert len(frame) == 4000
    assert frame["label_ihm"].sum() == 554
    assert frame["label_ihm"].notna().all()
    assert frame["stay_id"].is_unique
    assert (frame["source"] == "physionet2012").all()
    assert frame["stay_id"].str.startswith("p12-a-").all()
    assert frame["label_phenotypes"].isna().all()
    # Length_of_stay -1 (60 rows in Outcomes-a.txt) -> null; days -> hours.
    assert frame["label_los_hours"].isna().sum() == 60
    assert _row(frame, 132539)["label_los_hours"] == pytest.approx(5 * 24)
    assert manifest.source == "physionet2012"
    assert manifest.modalities == ["timeseries", "demographics"]
    assert manifest.notes["sets"] == ["a"]


def test_sets_a_and_b(set_ab):
    frame, manifest = set_ab
    assert len(frame) == 8000
    assert frame["label_ihm"].sum() == 1122
    assert frame["stay_id"].is_unique
    assert manifest.notes["sets"] == ["a", "b"]
    assert (frame["stay_id"].str.startswith("p12-b-")).sum() == 4000


def test_the_36_timeseries_names_are_recovered(set_a, raw_a):
    frame, manifest = set_a
    assert set(manifest.timeseries.features) == EXPECTED_FEATURES
    assert len(manifest.timeseries.features) == 36
    assert manifest.timeseries.features == FEATURES
    assert set(manifest.timeseries.units) == EXPECTED_FEATURES and all(manifest.timeseries.units.values())
    assert manifest.timeseries.hours == 48
    # Every one of them is observed in set A, and they are exactly the non-descriptor names in the files.
    used = np.unique(np.concatenate([f for f in frame["ts_event_feature"] if f is not None]))
    assert {FEATURES[i] for i in used} == EXPECTED_FEATURES
    in_files = {name for data in raw_a.values() for _, name, _ in _raw_lines(data)}
    assert in_files - DESCRIPTORS == EXPECTED_FEATURES


def test_every_observation_becomes_one_event(set_a, raw_a):
    frame, manifest = set_a
    expected = sum(len(_ts_lines(data)) for data in raw_a.values())
    got = sum(len(f) for f in frame["ts_event_feature"] if f is not None)
    assert got == expected
    weight_lines = sum(data.count(b",Weight,") for data in raw_a.values())
    assert manifest.notes["weight_observations_not_kept"] == weight_lines - 4000  # one descriptor each
    # Values outside their feature's limits (artefacts such as Temp -17.8) are dropped and counted by feature.
    dropped: dict[str, int] = {}
    for data in raw_a.values():
        for _, name, _ in _ts_lines(data, implausible=True):
            dropped[name] = dropped.get(name, 0) + 1
    assert dropped["Temp"] > 0 and dropped["pH"] > 0
    heights = sum(not 50 <= v <= 250 for data in raw_a.values() for m, n, v in _raw_lines(data) if m == 0 and n == "Height" and v != -1)
    assert manifest.notes["implausible_values_dropped"] == {**dropped, "Height": heights}


def test_descriptors_only_stays_are_kept_and_counted(set_a, set_ab, raw_a):
    frame, manifest = set_a
    only = [name for name, data in raw_a.items() if not _ts_lines(data)]
    assert len(only) == 3
    assert manifest.notes["descriptors_only"] == 3
    absent = frame[~frame[presence_column("timeseries")]]
    assert sorted(absent["subject_id"] + ".txt") == sorted(only)
    for column in MODALITY_COLUMNS["timeseries"]:
        assert absent[column].isna().all(), column
    assert absent[presence_column("demographics")].all()
    present = frame[frame[presence_column("timeseries")]]
    assert present["ts_hourly_values"].notna().all()
    _, manifest_ab = set_ab
    assert manifest_ab.notes["descriptors_only"] == 10
    assert manifest_ab.notes["descriptors_only_by_set"] == {"a": 3, "b": 7}


def test_other_modalities_absent(set_ab):
    frame, _ = set_ab
    for modality in MODALITIES:
        if modality not in ("timeseries", "demographics"):
            assert not frame[presence_column(modality)].any(), modality


def test_minus_one_descriptors_become_null(set_a, raw_a):
    frame, manifest = set_a
    assert manifest.demographics.numeric == ["age", "height", "weight"]
    assert manifest.demographics.categorical == ["gender", "icu_type"]
    n_height = sum(data.count(b"00:00,Height,-1\n") for data in raw_a.values())
    n_gender = sum(data.count(b"00:00,Gender,-1\n") for data in raw_a.values())
    assert n_height > 1000 and n_gender == 3
    n_height += manifest.notes["implausible_values_dropped"]["Height"]  # 1.8 cm, 462.3 cm, ...: unknown as well
    assert frame[demo_column("height")].between(50, 250).sum() == frame[demo_column("height")].notna().sum()
    assert frame[demo_column("height")].isna().sum() == n_height
    assert frame[demo_column("gender")].isna().sum() == n_gender
    assert not (frame[demo_column("height")] == -1).any()
    assert not (frame[demo_column("weight")] == -1).any()
    row = _row(frame, 132539)  # Age 54, Gender 0, Height -1, ICUType 4, Weight -1
    assert row[demo_column("age")] == 54
    assert row[demo_column("gender")] == "female"
    assert row[demo_column("icu_type")] == "Surgical ICU"
    assert np.isnan(row[demo_column("height")]) and np.isnan(row[demo_column("weight")])
    assert set(frame[demo_column("icu_type")].dropna()) == {
        "Coronary Care Unit", "Cardiac Surgery Recovery Unit", "Medical ICU", "Surgical ICU"}
    assert set(frame[demo_column("gender")].dropna()) == {"female", "male"}


def test_known_record_events_and_bins(set_a, raw_a):
    frame, _ = set_a
    row = _row(frame, 132539)
    hr = FEATURES.index("HR")
    feature, value, time = row["ts_event_feature"], row["ts_event_value"], row["ts_event_time"]
    # Events are the record's lines, in file (= time) order.
    lines = _ts_lines(raw_a["132539.txt"])
    assert [FEATURES[f] for f in feature] == [n for _, n, _ in lines]
    np.testing.assert_allclose(value, [v for _, _, v in lines], rtol=1e-6)
    np.testing.assert_allclose(time, [m / 60 for m, _, _ in lines], rtol=1e-6)
    assert FEATURES[feature[1]] == "HR" and value[1] == 73 and time[1] == pytest.approx(7 / 60)
    # HR at 00:07 = 73 lands in bin 0, averaged with the other first-hour HR lines.
    first_hour_hr = [v for m, n, v in lines if n == "HR" and m < 60]
    assert 73 in first_hour_hr
    values = np.asarray(row["ts_hourly_values"]).reshape(HOURS, len(FEATURES))
    mask = np.asarray(row["ts_hourly_mask"]).reshape(HOURS, len(FEATURES))
    assert mask[0, hr] and values[0, hr] == pytest.approx(np.mean(first_hour_hr))
    assert not mask[0, FEATURES.index("Lactate")] and np.isnan(values[0, FEATURES.index("Lactate")])


def test_hourly_bins_agree_with_events_everywhere(set_a):
    frame, _ = set_a
    n_features = len(FEATURES)
    for _, row in frame[frame[presence_column("timeseries")]].iterrows():
        time = row["ts_event_time"]
        assert (np.diff(time) >= 0).all() and time.min() >= 0 and time.max() <= HOURS
        values, mask = _hourly_from_events(row["ts_event_feature"], row["ts_event_value"], time, n_features)
        assert len(row["ts_hourly_values"]) == HOURS * n_features
        np.testing.assert_array_equal(row["ts_hourly_mask"], mask, err_msg=row["stay_id"])
        np.testing.assert_allclose(row["ts_hourly_values"], values.astype(np.float32), rtol=1e-5, equal_nan=True, err_msg=row["stay_id"])


def test_prepare_write_read_round_trip(set_a, tmp_path):
    frame, manifest = set_a
    out = tmp_path / "stays"
    written = write_stays(frame, copy.deepcopy(manifest), out, split_seed=0)
    table, read = read_stays(out)
    assert table.num_rows == 4000
    assert read.timeseries.features == FEATURES and read.timeseries.units == UNITS
    assert read.notes["descriptors_only"] == 3
    assert read.content_hash == written.content_hash
    back = table.to_pandas().set_index("stay_id")
    assert back["label_ihm"].sum() == 554
    for stay_id in frame["stay_id"].iloc[::400].tolist() + ["p12-a-132539"]:
        want = frame[frame["stay_id"] == stay_id].iloc[0]
        got = back.loc[stay_id]
        assert got["subject_id"] == want["subject_id"]
        for column in ("ts_event_feature", "ts_event_value", "ts_event_time", "ts_hourly_mask"):
            np.testing.assert_array_equal(np.asarray(got[column]), np.asarray(want[column]), err_msg=column)
        observed = np.asarray(want["ts_hourly_mask"])
        np.testing.assert_array_equal(np.asarray(got["ts_hourly_values"], dtype=np.float32)[observed], want["ts_hourly_values"][observed])
        assert got[demo_column("icu_type")] == want[demo_column("icu_type")]
    absent = back[~back[presence_column("timeseries")]]
    assert len(absent) == 3 and absent["ts_event_value"].isna().all()


# ---------------------------------------------------------------- small layouts built from real records


@pytest.fixture(scope="module")
def sample(raw_a):
    """21+ real set-A records (132539, a descriptors-only one, the first 20 others) and their Outcomes lines."""
    names = sorted(raw_a)[:20]
    names += ["132539.txt", next(n for n, d in sorted(raw_a.items()) if not _ts_lines(d))]
    names = sorted(set(names))
    outcome_lines = (P12 / "Outcomes-a.txt").read_text().splitlines()
    header, rows = outcome_lines[0], {line.split(",")[0]: line for line in outcome_lines[1:]}
    return {n: raw_a[n] for n in names}, header, [rows[n.removesuffix(".txt")] for n in names]


def _write_layout(folder: Path, records: dict[str, bytes], header: str, rows: list[str], layout: str = "tar", outcomes: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "tar":
        with tarfile.open(folder / "set-a.tar.gz", "w:gz") as tar:
            for name, data in records.items():
                info = tarfile.TarInfo(f"set-a/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        (folder / "set-a").mkdir()
        for name, data in records.items():
            (folder / "set-a" / name).write_bytes(data)
    if outcomes:
        (folder / "Outcomes-a.txt").write_text("\n".join([header, *rows]) + "\n")
    return folder


def test_extracted_folder_layout_matches_tarball(sample, set_a, tmp_path):
    records, header, rows = sample
    folder_frame, folder_manifest = prepare(_write_layout(tmp_path / "folder", records, header, rows, layout="folder"))
    tar_frame, _ = prepare(_write_layout(tmp_path / "tar", records, header, rows, layout="tar"))
    assert len(folder_frame) == len(records) == len(tar_frame)
    assert folder_manifest.notes["inputs"] == {"a": "set-a"}
    assert folder_manifest.notes["descriptors_only"] == 1
    full, _ = set_a
    for frame in (folder_frame, tar_frame):
        assert list(frame["stay_id"]) == sorted(frame["stay_id"], key=lambda s: int(s.rsplit("-", 1)[1]))
        for _, got in frame.iterrows():
            want = full[full["stay_id"] == got["stay_id"]].iloc[0]
            assert got["label_ihm"] == want["label_ihm"]
            assert got[presence_column("timeseries")] == want[presence_column("timeseries")]
            if want[presence_column("timeseries")]:
                np.testing.assert_array_equal(got["ts_event_value"], want["ts_event_value"])
                np.testing.assert_array_equal(got["ts_hourly_values"], want["ts_hourly_values"])


def test_cli_prepares_a_small_folder_layout(sample, tmp_path, capsys):
    records, header, rows = sample
    src = _write_layout(tmp_path / "src", records, header, rows, layout="folder")
    out = tmp_path / "out"
    assert main(["data", "prepare", "physionet2012", "--src", str(src), "--out", str(out), "--sets", "a"]) == 0
    table, manifest = read_stays(out)
    assert table.num_rows == len(records)
    assert f"prepared {len(records)} physionet2012 stays" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input: exit 2, one line naming the file, no --out


def _fails(capsys, argv: list[str], out: Path, *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("sweeper: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")] if out.parent.is_dir() else True
    return err


def _prepare_argv(src: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "physionet2012", "--src", str(src), "--out", str(out), *extra]


def test_missing_outcomes_file(sample, tmp_path, capsys):
    records, header, rows = sample
    src = _write_layout(tmp_path / "src", records, header, rows, outcomes=False)
    out = tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(src / "Outcomes-a.txt"), "missing Outcomes")


@pytest.mark.parametrize(
    "bad_line, what",
    [("05:00,HR", "3 fields"), ("5h00,HR,80", "not HH:MM"), ("05:00,HR,eighty", "not a number"), ("05:00,Pulse,80", "unknown parameter")],
)
def test_record_with_a_bad_line(sample, tmp_path, capsys, bad_line, what):
    records, header, rows = sample
    records = dict(records)
    lines = records["132539.txt"].decode().splitlines()
    lines.insert(9, bad_line)  # becomes line 10 of the file
    records["132539.txt"] = ("\n".join(lines) + "\n").encode()
    src = _write_layout(tmp_path / "src", records, header, rows)
    out = tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, "set-a.tar.gz:set-a/132539.txt", "line 10", what)


@pytest.mark.parametrize("damage", ["cut in half", "bytes overwritten mid-file"])
def test_truncated_tarball(tmp_path, capsys, damage):
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray((P12 / "set-a.tar.gz").read_bytes())
    if damage == "cut in half":
        data = data[: len(data) // 2]
    else:  # may inflate to garbage: must still be blamed on the tarball, not on a record line
        data[len(data) // 2: len(data) // 2 + 100] = b"x" * 100
    (src / "set-a.tar.gz").write_bytes(bytes(data))
    shutil.copy(P12 / "Outcomes-a.txt", src / "Outcomes-a.txt")
    out = tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(src / "set-a.tar.gz"), "truncated or corrupt")


def test_non_existent_src(tmp_path, capsys):
    src, out = tmp_path / "nowhere", tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(src), "does not exist")


def test_src_without_any_set(tmp_path, capsys):
    src, out = tmp_path / "empty", tmp_path / "out"
    src.mkdir()
    _fails(capsys, _prepare_argv(src, out), out, str(src), "no set-")
    with pytest.raises(StaysError, match="set 'c' not found"):
        prepare(P12, sets=["a", "c"])


def test_unwritable_out(sample, tmp_path, capsys):
    # Tests may run as root, where chmod does not block writes: make --out's parent an existing file.
    records, header, rows = sample
    src = _write_layout(tmp_path / "src", records, header, rows)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(out))
    assert blocker.read_text() == "not a folder"


def test_outcomes_missing_a_column(sample, tmp_path, capsys):
    records, header, rows = sample
    cols = header.split(",")
    drop = cols.index("In-hospital_death")
    keep = lambda line: ",".join(p for i, p in enumerate(line.split(",")) if i != drop)  # noqa: E731
    src = _write_layout(tmp_path / "src", records, keep(header), [keep(r) for r in rows])
    out = tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(src / "Outcomes-a.txt"), "'In-hospital_death'")


def test_record_and_outcomes_must_match(sample, tmp_path, capsys):
    records, header, rows = sample
    src = _write_layout(tmp_path / "src", records, header, [r for r in rows if not r.startswith("132539,")])
    out = tmp_path / "out"
    _fails(capsys, _prepare_argv(src, out), out, str(src / "Outcomes-a.txt"), "132539")
    src2 = _write_layout(tmp_path / "src2", {k: v for k, v in records.items() if k != "132539.txt"}, header, rows)
    _fails(capsys, _prepare_argv(src2, out), out, str(src2 / "Outcomes-a.txt"), "RecordID 132539")
