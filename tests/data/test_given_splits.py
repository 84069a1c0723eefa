"""Splits the user owns: ``--test-sets`` (PhysioNet 2012 by set) and ``--split-file`` (any source), on
small PhysioNet 2012 layouts written here. No Ray."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sweeper.cli import main
from sweeper.data.stays import read_stays


def _layout(src: Path, sets: dict[str, int]) -> Path:
    for name, n in sets.items():
        (src / f"set-{name}").mkdir(parents=True)
        rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
        for i in range(n):
            record = {"a": 130000, "b": 140000, "c": 150000}[name] + i
            lines = ["Time,Parameter,Value", f"00:00,RecordID,{record}", "00:00,Age,60", "00:00,Gender,0", "00:00,Height,-1",
                     "00:00,ICUType,2", "00:00,Weight,70", "00:40,HR,77", "03:10,Glucose,130"]
            (src / f"set-{name}" / f"{record}.txt").write_text("\n".join(lines) + "\n")
            rows.append(f"{record},10,2,{4 + i % 3},-1,{int(i % 5 == 0)}")
        (src / f"Outcomes-{name}.txt").write_text("\n".join(rows) + "\n")
    return src


def _prepare(tmp_path, *extra) -> list[str]:
    return ["data", "prepare", "physionet2012", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"), *extra]


def test_test_sets_train_on_a_and_b_test_on_c(tmp_path, capsys):
    _layout(tmp_path / "src", {"a": 40, "b": 40, "c": 30})
    assert main(_prepare(tmp_path, "--test-sets", "c", "--seed", "3")) == 0
    stays, manifest = read_stays(tmp_path / "out")
    stays = stays.to_pandas()
    of_set = stays["stay_id"].str.split("-").str[1]
    assert set(of_set[stays["split"] == "test"]) == {"c"} and (stays["split"] == "test").sum() == 30
    assert set(of_set[stays["split"] != "test"]) == {"a", "b"}
    assert manifest.counts == {"train": 68, "val": 12, "test": 30}
    assert manifest.split["train_sets"] == ["a", "b"] and manifest.split["test_sets"] == ["c"] and manifest.split["seed"] == 3
    assert "split: method=by set" in capsys.readouterr().out


def test_split_file_by_stay_or_subject(tmp_path):
    _layout(tmp_path / "src", {"a": 40})
    ids = [f"p12-a-{130000 + i}" for i in range(40)]
    splits = ["train"] * 30 + ["val"] * 5 + ["test"] * 5
    pd.DataFrame({"stay_id": ids, "split": splits}).to_csv(tmp_path / "mine.csv", index=False)
    assert main(_prepare(tmp_path, "--split-file", str(tmp_path / "mine.csv"))) == 0
    stays, manifest = read_stays(tmp_path / "out")
    got = dict(zip(stays["stay_id"].to_pylist(), stays["split"].to_pylist()))
    assert got == dict(zip(ids, splits)) and manifest.split == {"method": "given by the user (--split-file, by stay_id)", "file": "mine.csv"}
    pd.DataFrame({"subject_id": [str(130000 + i) for i in range(40)], "split": splits[::-1]}).to_csv(tmp_path / "subjects.csv", index=False)
    assert main(_prepare(tmp_path, "--split-file", str(tmp_path / "subjects.csv"), "--overwrite")) == 0
    stays, _ = read_stays(tmp_path / "out")
    assert dict(zip(stays["stay_id"].to_pylist(), stays["split"].to_pylist())) == dict(zip(ids, splits[::-1]))


@pytest.mark.parametrize("rows, extra, message", [
    (None, ["--test-sets", "d"], "--test-sets: set 'd' is not among the sets read (a, b); name one of them"),
    (None, ["--test-sets", "a", "b"], "--test-sets: every set read (a, b) would be test; leave at least one set to train on"),
    ({"stay_id": ["p12-a-130000"], "split": ["train"]}, [], "no row for stay_id 'p12-a-130001' (one of 79 stays without a split); give every stay a split"),
    ({"stay_id": ["p12-a-130000"], "split": ["dev"]}, [], "split 'dev' is not one of train, val, test; fix the file"),
    ({"patient": ["1"], "split": ["train"]}, [], "needs a split column and a stay_id or subject_id column (header has patient, split)"),
])
def test_bad_split_options_are_one_line_errors(tmp_path, capsys, rows, extra, message):
    _layout(tmp_path / "src", {"a": 40, "b": 40})
    if rows is not None:
        pd.DataFrame(rows).to_csv(tmp_path / "mine.csv", index=False)
        extra = ["--split-file", str(tmp_path / "mine.csv")]
    assert main(_prepare(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()
