"""Hostile inputs that are not errors: what the data commands keep, drop, count and report instead.
No Ray."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from sweeper.cli import main
from sweeper.data.physionet2012 import prepare
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import MAX_STAYS, MIN_STAYS, SynthConfig, generate
from sweeper.plan.spec import SynthOptions

from test_bad_inputs import p12_record, p12_source  # tests/data is on sys.path (pytest prepend import mode)


def test_p12_values_beyond_float32_and_implausible_descriptors_are_dropped_and_counted(tmp_path, capsys):
    src = p12_source(tmp_path / "src", **{
        "1001": p12_record(1001, "00:30,HR,1e39", "01:30,HR,85", "02:00,Temp,-17.8"),
        "1002": p12_record(1002, age="-5"),
        "1003": p12_record(1003).replace(b"Height,170", b"Height,4620"),
    })
    frame, manifest = prepare(src)
    assert manifest.notes["implausible_values_dropped"] == {"HR": 1, "Temp": 1, "Age": 1, "Height": 1}
    row = frame.set_index("subject_id").loc["1001"]
    assert list(row["ts_event_value"]) == [85.0], "the 1e39 and -17.8 lines are dropped, the rest kept"
    assert math.isnan(frame.set_index("subject_id").loc["1002", "demo_age"])
    assert math.isnan(frame.set_index("subject_id").loc["1003", "demo_height"])
    out = tmp_path / "out"
    assert main(["data", "prepare", "physionet2012", "--src", str(src), "--out", str(out)]) == 0
    assert "implausible_values_dropped: {'HR': 1, 'Temp': 1, 'Age': 1, 'Height': 1}" in capsys.readouterr().out
    text = (out / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"manifest holds {name}"))  # every statistic finite
    assert all(math.isfinite(v) for v in read_stays(out)[1].timeseries.mean)


def test_byte_order_marks_are_accepted(tmp_path):
    plain = p12_source(tmp_path / "plain")
    marked = p12_source(tmp_path / "marked", **{"1000": b"\xef\xbb\xbf" + p12_record(1000)})
    (marked / "Outcomes-a.txt").write_bytes(b"\xef\xbb\xbf" + (plain / "Outcomes-a.txt").read_bytes())
    want, _ = prepare(plain)
    got, _ = prepare(marked)
    assert got["stay_id"].tolist() == want["stay_id"].tolist() and got["label_ihm"].tolist() == want["label_ihm"].tolist()


def test_overwrite_replaces_a_stays_folder_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "stays"
    assert main(["data", "synth", "--out", str(out), "--n-stays", "40", "--seed", "1"]) == 0
    first = read_stays(out)[1].content_hash
    assert main(["data", "synth", "--out", str(out), "--n-stays", "50", "--seed", "2", "--overwrite"]) == 0
    table, manifest = read_stays(out)
    assert table.num_rows == 50 and manifest.content_hash != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stays"], "no old or temporary folder left beside it"
    capsys.readouterr()
    # An empty folder (e.g. made by the user beforehand) is fine without --overwrite.
    (tmp_path / "empty").mkdir()
    assert main(["data", "synth", "--out", str(tmp_path / "empty"), "--n-stays", "40"]) == 0


def test_a_shard_changed_after_reading_is_caught_on_the_next_read(tmp_path):
    frame, manifest = generate(SynthConfig(n_stays=40, seed=0))
    out = tmp_path / "stays"
    write_stays(frame, manifest, out)
    read_stays(out, "train")  # verified once, then remembered for this file state
    shard = out / "shards" / "val-00000.parquet"
    shutil.copy(out / "shards" / "test-00000.parquet", shard)
    with pytest.raises(Exception, match=r"val-00000\.parquet: does not match manifest\.json"):
        read_stays(out, "train")  # any read checks every shard: the content hash covers them all


def test_spec_bounds_of_the_synthetic_cohort_are_the_generators():
    field = SynthOptions.model_fields["n_stays"]
    bounds = {type(m).__name__: getattr(m, "ge", getattr(m, "le", None)) for m in field.metadata}
    assert bounds == {"Ge": MIN_STAYS, "Le": MAX_STAYS}
    with pytest.raises(Exception, match="too many"):
        SynthConfig(n_stays=MAX_STAYS + 1).validate()
