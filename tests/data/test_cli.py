"""``sweeper data synth | prepare | describe`` and ``sweeper --help``: readable summaries, helpful help,
a valid folder from ``synth``. No Ray."""
from __future__ import annotations

import pytest

from sweeper.cli import main
from sweeper.data.cli import describe_text
from sweeper.data.schema import MODALITIES, SPLITS, presence_column
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 200-stay synthetic cohort written once (split seed 5); the frame as read back."""
    frame, manifest = generate(SynthConfig(n_stays=200, seed=0))
    out = tmp_path_factory.mktemp("cli") / "stays"
    write_stays(frame, manifest, out, split_seed=5)
    table, _ = read_stays(out)
    return out, table.to_pandas()


def row(lines: list[str], label: str) -> list[str]:
    """The cells after ``label`` on the one table line that starts with it (leading spaces ignored)."""
    found = [line.strip() for line in lines[1:] if line.strip().startswith(label + " ")]
    assert len(found) == 1, (label, lines)
    return found[0][len(label):].split()


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def test_describe_prints_counts_mortality_and_presence(capsys, written):
    out, back = written
    assert main(["data", "describe", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"stays folder {out}  (source: synthetic, schema v1, hash ")
    assert lines[1].split() == list(SPLITS)
    parts = {s: back[back["split"] == s] for s in SPLITS}
    assert row(lines, "stays") == [str(len(parts[s])) for s in SPLITS]
    assert sum(int(c) for c in row(lines, "stays")) == 200
    assert row(lines, "mortality") == [pct(parts[s]["label_ihm"].mean()) for s in SPLITS]
    assert row(lines, "LOS median h") == [f"{parts[s]['label_los_hours'].median():.0f}" for s in SPLITS]
    assert "presence" in [line.strip() for line in lines]
    for modality in MODALITIES:
        assert row(lines, modality) == [pct(parts[s][presence_column(modality)].mean()) for s in SPLITS], modality
    assert row(lines, "demographics") == ["100.0%"] * 3
    assert any(line.startswith("notes: subjects: ") for line in lines)
    assert lines[-1] == "split: method=patient-level, stratified by first-stay modality-presence pattern, seed=5, fractions=[0.7, 0.15, 0.15]"
    assert describe_text(out) == captured.out.rstrip("\n")


def test_describe_percentages_are_readable(capsys, written):
    out, _ = written
    main(["data", "describe", str(out)])
    lines = capsys.readouterr().out.splitlines()
    for label in ("mortality",) + MODALITIES:
        for cell in row(lines, label):
            assert cell.endswith("%") and 0.0 <= float(cell[:-1]) <= 100.0 and len(cell.split(".")[1]) == 2, cell


@pytest.mark.parametrize("argv, options", [
    (["--help"], ["data", "plan", "run", "report"]),
    (["report", "--help"], ["run_dir", "report.html"]),
    (["data", "--help"], ["synth", "prepare", "describe"]),
    (["data", "synth", "--help"], ["--out", "--overwrite", "--n-stays", "--seed", "--strength", "--presence", "--mnar", "default 2000", "1000000"]),
    (["data", "prepare", "--help"], ["physionet2012", "--src", "--out", "--overwrite", "--sets", "--seed"]),
    (["data", "describe", "--help"], ["stays", "stays folder"]),
])
def test_help_exits_0_and_names_the_options(capsys, argv, options):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("usage: sweeper") and captured.err == ""
    for option in options:
        assert option in captured.out, (argv, option)


@pytest.mark.parametrize(("argv", "text"), [
    (["data", "shuffle"], "sweeper data: argument DATA_COMMAND: invalid choice: 'shuffle'"),
    (["data", "synth", "--n-stays", "many", "--out", "x"], "sweeper data synth: argument --n-stays: invalid int value: 'many'"),
    (["run"], "sweeper run: the following arguments are required: spec"),
    (["plan", "smoke", "--colour"], "sweeper: unrecognized arguments: --colour"),
])
def test_usage_mistakes_are_one_line(capsys, argv, text):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sweeper: error: {text}") and "--help`" in err, err


def test_synth_creates_a_valid_folder(capsys, tmp_path):
    out = tmp_path / "stays"
    assert main(["data", "synth", "--out", str(out), "--n-stays", "60", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith(f"wrote 60 synthetic stays to {out} in ")
    table, manifest = read_stays(out)
    assert table.num_rows == 60 and sorted(p.name for p in out.iterdir()) == ["manifest.json", "shards"]
    assert [p.name for p in tmp_path.iterdir()] == ["stays"], "no temporary folder left beside it"
    assert manifest.source == "synthetic" and manifest.ground_truth["seed"] == 3 and manifest.ground_truth["n_stays"] == 60
    assert manifest.split["seed"] == 3 and sum(manifest.counts.values()) == 60
    assert all(manifest.counts[s] > 0 for s in SPLITS) and len(manifest.content_hash) == 64
    assert set(table.column_names) == set(manifest.expected_columns())
    # The summary printed after writing is the describe text.
    assert describe_text(out) in captured.out
    # Same seed again over the existing folder: refused without --overwrite, same content with it.
    first_hash = manifest.content_hash
    assert main(["data", "synth", "--out", str(out), "--n-stays", "60", "--seed", "3"]) == 2
    assert "already holds a stays folder; pass --overwrite" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(out), "--n-stays", "60", "--seed", "3", "--overwrite"]) == 0
    assert read_stays(out)[1].content_hash == first_hash
    assert [p.name for p in tmp_path.iterdir()] == ["stays"], "the old folder is gone once the new one is in place"
