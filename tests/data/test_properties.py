"""Property tests (Hypothesis): the PhysioNet 2012 record parser, the Outcomes reader and the manifest
reader, fed arbitrary bytes and mutated valid files, either give a valid result or raise one
``SweeperError`` whose message is one line — never another exception. No Ray."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import edit_one, mutate_bytes

from sweeper.data.cli import describe_text
from sweeper.data.physionet2012 import FEATURES
from sweeper.data.physionet2012_records import parse_record, read_outcomes
from sweeper.data.schema import Manifest
from sweeper.data.stays import write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.errors import SweeperError

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}

RECORD = b"""Time,Parameter,Value
00:00,RecordID,132539
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,-1
00:07,GCS,15
00:07,HR,73
00:37,HR,77
01:37,Temp,35.1
02:37,Weight,80
47:59,pH,7.4
"""
OUTCOMES = b"""RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
132539,6,1,5,-1,0
132540,16,8,8,-1,0
132541,21,11,19,-1,1
"""
# Pieces a mutation splices in: the parser's separators and the values at its edges.
TOKENS = [b",", b"\n", b"\r\n", b":", b"-1", b"00:00", b"48:00", b"99:99", b"1e39", b"nan", b"inf", b"-0", b"\xef\xbb\xbf",
          b"RecordID", b"Age", b"Height", b"Gender", b"ICUType", b"HR", b"Weight", b"\xff", b"\x00", b"\xd9\xa3", b"   "]


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    return mutate_bytes(draw, valid, TOKENS)


def one_line_error_or(call):
    """Run ``call``: a result, or a ``SweeperError`` with a one-line message; anything else fails the test."""
    try:
        return call()
    except SweeperError as err:
        assert str(err) and "\n" not in str(err), repr(str(err))
        return None


def check_record(data: bytes) -> None:
    counts = {"missing_markers": 0, "observations_after_48h": 0, "weight_observations_not_kept": 0}
    record = one_line_error_or(lambda: parse_record("SRC/set-a/132539.txt", "132539.txt", data, FEATURE_INDEX, counts))
    if record is not None:
        assert record["record_id"] == 132539
        assert len(record["features"]) == len(record["values"]) == len(record["minutes"])
        assert all(abs(v) < 3.4e38 for v in record["values"]), "a kept value must fit in float32"
        assert all(0 <= m <= 48 * 60 for m in record["minutes"])


def test_the_valid_record_parses():
    counts = {"missing_markers": 0, "observations_after_48h": 0, "weight_observations_not_kept": 0}
    record = parse_record("r", "132539.txt", RECORD, FEATURE_INDEX, counts)
    assert record["descriptors"]["Age"] == 54 and len(record["values"]) == 5 and counts["weight_observations_not_kept"] == 1


@SETTINGS
@given(st.binary(max_size=400))
def test_record_parser_on_arbitrary_bytes(data):
    check_record(data)


@SETTINGS
@given(mutated(RECORD))
def test_record_parser_on_mutated_records(data):
    check_record(data)


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="sweeper-properties-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def check_outcomes(scratch: Path, data: bytes) -> None:
    path = scratch / "Outcomes-a.txt"
    path.write_bytes(data)
    outcomes = one_line_error_or(lambda: read_outcomes(path, "a"))
    if outcomes is not None:
        for record_id, (line, ihm, los) in outcomes.items():
            assert isinstance(record_id, int) and line >= 2 and ihm in (0.0, 1.0) and (los is None or los >= 0)


def test_the_valid_outcomes_file_reads(scratch):
    path = scratch / "valid.txt"
    path.write_bytes(OUTCOMES)
    assert read_outcomes(path, "a")[132541] == (4, 1.0, 19.0)


@SETTINGS
@given(st.binary(max_size=300))
def test_outcomes_reader_on_arbitrary_bytes(scratch, data):
    check_outcomes(scratch, data)


@SETTINGS
@given(mutated(OUTCOMES))
def test_outcomes_reader_on_mutated_files(scratch, data):
    check_outcomes(scratch, data)


# ------------------------------------------------------------------------------------------ manifest


@pytest.fixture(scope="module")
def stays(tmp_path_factory):
    frame, manifest = generate(SynthConfig(n_stays=60, seed=1))
    out = tmp_path_factory.mktemp("properties") / "stays"
    write_stays(frame, manifest, out, split_seed=1)
    return out


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@st.composite
def json_edit(draw, raw):
    """``raw`` (parsed JSON) with one value replaced by an arbitrary one, or one key removed."""
    return edit_one(draw, json.loads(json.dumps(raw)), JSON_VALUES)


def check_manifest(folder: Path, text: bytes) -> None:
    """The manifest text alone, then (when it is valid) the folder it describes, through ``describe``."""
    try:
        if one_line_error_or(lambda: Manifest.from_json(text.decode("utf-8"))) is None:
            return
    except UnicodeDecodeError:  # read_manifest's to catch: the folder read below must say so in one line
        pass
    (folder / "manifest.json").write_bytes(text)
    summary = one_line_error_or(lambda: describe_text(folder))
    if summary is not None:
        assert summary.startswith(f"stays folder {folder}")


@pytest.fixture(scope="module")
def stays_copy(stays, scratch):
    """A copy of the stays folder whose manifest the property tests overwrite."""
    folder = scratch / "stays"
    shutil.copytree(stays, folder)
    return folder


@SETTINGS
@given(data=st.data())
def test_manifest_reader_on_edited_manifests(stays, stays_copy, data):
    folder = stays_copy
    raw = json.loads((stays / "manifest.json").read_text())
    check_manifest(folder, json.dumps(data.draw(json_edit(raw))).encode())


@SETTINGS
@given(data=st.data())
def test_manifest_reader_on_mutated_bytes(stays, stays_copy, data):
    folder = stays_copy
    valid = (stays / "manifest.json").read_bytes()
    check_manifest(folder, data.draw(st.binary(max_size=200) | mutated(valid)))


def test_a_manifest_key_with_a_newline_is_written_escaped_on_one_line(stays, stays_copy):
    """Found by Hypothesis in CI: a manifest key holding a newline made the field path in the
    message two lines (every ``SweeperError`` now escapes control characters)."""
    raw = json.loads((stays / "manifest.json").read_text())
    raw["label_rates"] = {"\n": 1}
    (stays_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(SweeperError) as caught:
        describe_text(stays_copy)
    assert "\n" not in str(caught.value) and "\\n" in str(caught.value), repr(str(caught.value))
