"""``sweeper report`` on a damaged run folder: one line naming the file and what to do, exit 2."""
from __future__ import annotations

import json

import pytest

from sweeper.cli import main

HEADER = "task,method,subset,auroc_mean\n"


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "smoke" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"spec": "smoke", "profile": None, "metric": "auroc", "started": "2026-11-21T10:00:00"}))
    return run


def _one_line(capsys, rc: int) -> str:
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(("content", "says"), [
    (b"", "leaderboard.csv: empty file (0 bytes); rewrite it with `sweeper run smoke --resume --run-name r1`"),
    (b"task,method\n\"unclosed,x\n", "leaderboard.csv: not a readable CSV"),
    (b"a,b\n1,2\n", "leaderboard.csv: no task, method, subset column, not a sweeper leaderboard"),
], ids=["empty", "not-csv", "not-a-leaderboard"])
def test_a_bad_leaderboard_is_one_line(run_dir, capsys, content, says):
    (run_dir / "leaderboard.csv").write_bytes(content)
    line = _one_line(capsys, main(["report", str(run_dir)]))
    assert line.startswith(f"sweeper: error: {run_dir / 'leaderboard.csv'}: ") and says in line
    assert not (run_dir / "report.html").exists()


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "run.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); restore it"),
    ("[1, 2]", "run.json: expected a JSON object, got list; restore it"),
    ("", "run.json: not valid JSON"),
], ids=["not-json", "a-list", "empty"])
def test_a_bad_run_json_is_one_line(run_dir, capsys, content, says):
    (run_dir / "leaderboard.csv").write_text(HEADER)
    (run_dir / "run.json").write_text(content)
    line = _one_line(capsys, main(["report", str(run_dir)]))
    assert line.startswith(f"sweeper: error: {run_dir / 'run.json'}: ") and says in line


def test_a_run_that_evaluated_no_cell_still_gets_its_page(run_dir, capsys):
    (run_dir / "leaderboard.csv").write_text("\n")  # what write_leaderboard writes for no rows
    assert main(["report", str(run_dir)]) == 0
    assert "No cells were evaluated." in (run_dir / "report.html").read_text()
