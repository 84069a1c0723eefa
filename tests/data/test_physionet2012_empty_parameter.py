"""PhysioNet 2012 set C as distributed: lines with an empty parameter field (``HH:MM,,value``) are
skipped and counted in the manifest's notes; other bad lines stay one-line errors. No Ray."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.data.physionet2012 import prepare
from sweeper.data.stays import read_stays

HEAD = ["Time,Parameter,Value", "00:00,RecordID,{id}", "00:00,Age,54", "00:00,Gender,1", "00:00,Height,170", "00:00,ICUType,3", "00:00,Weight,80"]


def _layout(src: Path, extra: dict[int, list[str]], n: int = 30) -> Path:
    (src / "set-c").mkdir(parents=True)
    rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
    for i in range(n):
        record = 140000 + i
        lines = [line.format(id=record) for line in HEAD] + ["00:30,HR,80", "01:00,Glucose,120"] + extra.get(record, []) + ["02:00,HR,85"]
        (src / "set-c" / f"{record}.txt").write_text("\n".join(lines) + "\n")
        rows.append(f"{record},10,2,{3 + i % 5},-1,{int(i % 4 == 0)}")
    (src / "Outcomes-c.txt").write_text("\n".join(rows) + "\n")
    return src


def test_empty_parameter_lines_are_skipped_and_counted(tmp_path, capsys):
    src = _layout(tmp_path / "src", {140001: ["01:00,,120"], 140002: ["01:10,,7.4", "01:20,,33"]})
    frame, manifest = prepare(src)
    assert manifest.notes["empty_parameter_lines"] == 3
    # the skipped lines add no event: every record has its three events (HR, Glucose, HR)
    assert frame["ts_event_feature"].map(len).tolist() == [3] * 30
    out = tmp_path / "out"
    assert main(["data", "prepare", "physionet2012", "--src", str(src), "--out", str(out)]) == 0
    assert "empty_parameter_lines: 3" in capsys.readouterr().out
    assert read_stays(out)[1].notes["empty_parameter_lines"] == 3


@pytest.mark.parametrize(
    "bad_line, what",
    [("01:00,,high", "value 'high' of '' is not a number"), ("1h00,,120", "time '1h00' is not HH:MM"), ("01:00,,", "value '' of '' is not a number"),
     ("01:00,,120,4", "expected 3 fields Time,Parameter,Value, got 4")],
)
def test_other_bad_lines_stay_one_line_errors(tmp_path, capsys, bad_line, what):
    src = _layout(tmp_path / "src", {140003: [bad_line]})
    out = tmp_path / "out"
    assert main(["data", "prepare", "physionet2012", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"set-c/140003.txt line 10: {what}; fix or remove the line" in err, err
    assert not out.exists()
