"""Stays folders: every bad input fails with one clear line (CLI) or a ``StaysError`` naming the file or
field (Python API), leaving nothing half-written; the writer round-trips rows, NaN and nulls and
hashes content stably. No Ray."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sweeper.cli import main
from sweeper.data.loading import check_labels
from sweeper.data.schema import MODALITY_COLUMNS, SPLITS, StaysError, check_modalities, presence_column
from sweeper.data.splits import assign_splits
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import SynthConfig, generate

N_STAYS = 200


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cohort():
    """A 200-stay synthetic cohort (frame without ``split``, manifest), generated once."""
    return generate(SynthConfig(n_stays=N_STAYS, seed=0))


@pytest.fixture(scope="module")
def written(tmp_path_factory, cohort):
    """The cohort written once as a stays folder; tests that damage it work on a copy."""
    frame, manifest = cohort
    out = tmp_path_factory.mktemp("written") / "stays"
    write_stays(frame, manifest, out, split_seed=0)
    return out


@pytest.fixture()
def stays(tmp_path, written):
    """A private copy of the written stays folder, free to damage."""
    copy = tmp_path / "stays"
    shutil.copytree(written, copy)
    return copy


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (to prove it was left unchanged)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_tmp_beside(path: Path) -> bool:
    return not [p for p in path.parent.iterdir() if ".tmp-" in p.name]


def fails_one_line(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one ``sweeper: error:`` line on stderr; return it."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {captured.err!r}"
    assert lines[0].startswith("sweeper: error: ")
    assert captured.out == ""
    return lines[0]


def describe_fails(capsys, stays: Path) -> str:
    """``sweeper data describe`` on a damaged folder: one error line, folder left exactly as it was."""
    before = snapshot(stays)
    line = fails_one_line(capsys, ["data", "describe", str(stays)])
    assert snapshot(stays) == before
    assert no_tmp_beside(stays)
    return line


def rehash(stays: Path) -> None:
    """Record the shards' current hashes in the manifest: a folder damaged by a tool that kept it consistent."""
    def change(raw):
        digest = hashlib.sha256()
        for split in SPLITS:
            for rel in raw["shards"][split]:
                data = (stays / rel).read_bytes()
                digest.update(data)
                raw["shard_hashes"][rel] = hashlib.sha256(data).hexdigest()
        raw["content_hash"] = digest.hexdigest()
    edit_manifest(stays, change)


def edit_manifest(stays: Path, change) -> None:
    path = stays / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def frame_with_splits(cohort) -> pd.DataFrame:
    frame, _ = cohort
    return frame.assign(split=assign_splits(frame, 0))


# ---------------------------------------------------------------------------- bad inputs, via CLI


def test_folder_without_manifest(capsys, stays):
    (stays / "manifest.json").unlink()
    line = describe_fails(capsys, stays)
    assert f"{stays / 'manifest.json'}: missing manifest.json" in line


def test_folder_that_does_not_exist(capsys, tmp_path):
    line = fails_one_line(capsys, ["data", "describe", str(tmp_path / "nowhere")])
    assert f"{tmp_path / 'nowhere'}: no such stays folder" in line
    assert not (tmp_path / "nowhere").exists()


def test_shard_with_wrong_dtype(capsys, stays):
    shard = stays / "shards" / "val-00000.parquet"
    table = pq.read_table(shard)
    index = table.schema.get_field_index("label_ihm")
    table = table.set_column(index, pa.field("label_ihm", pa.string()), pc.cast(table["label_ihm"], pa.string()))
    pq.write_table(table, shard)
    rehash(stays)
    line = describe_fails(capsys, stays)
    assert str(shard) in line
    assert "column 'label_ihm' has dtype string, expected float" in line


def test_manifest_with_unknown_modality(capsys, stays):
    edit_manifest(stays, lambda raw: raw["modalities"].append("ekg"))
    line = describe_fails(capsys, stays)
    assert str(stays / "manifest.json") in line
    assert "modalities: unknown modality 'ekg'" in line


def test_check_modalities_rejects_unknown_name():
    with pytest.raises(StaysError, match=r"^modalities: unknown modality 'ekg'; known: discharge, radiology"):
        check_modalities(["discharge", "ekg"])
    assert check_modalities(["cxr", "discharge"]) == ("discharge", "cxr"), "known names come back in canonical order"


def test_manifest_with_invalid_json(capsys, stays):
    path = stays / "manifest.json"
    path.write_text(path.read_text()[:-40])  # truncated
    line = describe_fails(capsys, stays)
    assert f"{path}: not valid JSON" in line


def test_manifest_with_wrong_schema_version(capsys, stays):
    edit_manifest(stays, lambda raw: raw.update(schema_version=99))
    line = describe_fails(capsys, stays)
    assert f"{stays / 'manifest.json'}: schema_version 99, this sweeper reads 1" in line


def test_manifest_with_unknown_field(capsys, stays):
    edit_manifest(stays, lambda raw: raw.update(colour="blue"))
    line = describe_fails(capsys, stays)
    assert f"{stays / 'manifest.json'}: unknown field 'colour'" in line


def test_shard_listed_but_deleted(capsys, stays):
    shard = stays / "shards" / "test-00000.parquet"
    shard.unlink()
    line = describe_fails(capsys, stays)
    assert f"{shard}: shard listed in manifest.json is missing" in line


def test_unwritable_out_under_a_regular_file(capsys, tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("not a folder")
    out = blocker / "sub"
    line = fails_one_line(capsys, ["data", "synth", "--out", str(out), "--n-stays", "50"])
    assert f"--out {out}: {blocker} is not a folder" in line
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_out_is_a_non_empty_foreign_folder(capsys, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = fails_one_line(capsys, ["data", "synth", "--out", str(out), "--n-stays", "50"])
    assert f"--out {out}: folder is not empty and is not a stays folder" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and no_tmp_beside(out)


# ---------------------------------------------------------------------- bad inputs, via Python API


def test_null_required_label_in_train(tmp_path, cohort):
    frame = frame_with_splits(cohort)
    row = frame.index[frame["split"] == "train"][3]
    frame.loc[row, "label_ihm"] = np.nan
    out = tmp_path / "stays"
    write_stays(frame, cohort[1], out)  # a null label is allowed in the folder ...
    check_labels(out, "val", "ihm")  # ... and other splits are fine
    with pytest.raises(StaysError) as err:  # ... but the ihm task cannot train on it
        check_labels(out, "train", "ihm")
    message = str(err.value)
    assert message.startswith(str(out.absolute() / "shards" / "train-00000.parquet") + ": ")
    assert "field 'label_ihm' is null for 1 stays" in message


def test_nan_required_label_in_a_shard(stays):
    """A NaN that is not null (written by some other tool) is caught as well."""
    shard = stays / "shards" / "train-00000.parquet"
    table = pq.read_table(shard)
    values = table["label_ihm"].to_numpy(zero_copy_only=False).copy()
    values[0] = np.nan
    table = table.set_column(table.schema.get_field_index("label_ihm"), "label_ihm", pa.array(values, type=pa.float32(), from_pandas=False))
    assert table["label_ihm"].null_count == 0
    pq.write_table(table, shard)
    rehash(stays)
    with pytest.raises(StaysError, match=r"train-00000\.parquet: field 'label_ihm' is NaN"):
        check_labels(stays, "train", "ihm")


def test_empty_split(tmp_path, cohort):
    frame, manifest = cohort
    out = tmp_path / "stays"
    with pytest.raises(StaysError, match=r"^stays: split 'val' is empty"):
        write_stays(frame.assign(split="train"), manifest, out)
    assert list(tmp_path.iterdir()) == []


def test_missing_required_column(tmp_path, cohort):
    frame, manifest = cohort
    out = tmp_path / "stays"
    with pytest.raises(StaysError, match=r"^cohort\.csv: missing required column 'label_los_hours'$"):
        write_stays(frame.drop(columns=["label_los_hours"]), manifest, out, where="cohort.csv")
    assert list(tmp_path.iterdir()) == []


def test_hourly_values_of_wrong_length(tmp_path, cohort):
    frame, manifest = cohort
    frame = frame.copy()
    row = frame.index[frame[presence_column("timeseries")]][0]
    frame.at[row, "ts_hourly_values"] = np.zeros(10, dtype=np.float32)
    out = tmp_path / "stays"
    with pytest.raises(StaysError, match=r"^stays: column 'ts_hourly_values' needs hours × features = 816 values per stay"):
        write_stays(frame, manifest, out)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_leaves_the_old_folder_unchanged(stays, cohort):
    frame, manifest = cohort
    before = snapshot(stays)
    with pytest.raises(StaysError, match=r"^stays: missing required column 'stay_id'$"):
        write_stays(frame.drop(columns=["stay_id"]), manifest, stays, overwrite=True)
    assert snapshot(stays) == before and no_tmp_beside(stays)


def test_wrong_dtype_in_frame_names_the_column(tmp_path, cohort):
    frame, manifest = cohort
    out = tmp_path / "stays"
    with pytest.raises(StaysError, match=r"^stays: column 'label_los_hours' does not hold float"):
        write_stays(frame.assign(label_los_hours="long"), manifest, out)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- round trip


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _same(a, b) -> bool:
    """Equal values; scalar missing values (None/NA/NaN) are equal, inside lists NaN must stay NaN."""
    if isinstance(a, np.ndarray):
        a = a.tolist()
    if isinstance(b, np.ndarray):
        b = b.tolist()
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return False
        return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, float) or isinstance(b, float):
        return np.float32(a) == np.float32(b)
    return a == b


def test_round_trip_gives_the_same_rows(cohort, written):
    frame, manifest = cohort
    table, read = read_stays(written)
    assert table.num_rows == N_STAYS
    back = {row["stay_id"]: row for row in table.to_pylist()}
    assert set(back) == set(frame["stay_id"])
    columns = [c for c in manifest.expected_columns() if c != "split"]
    assert set(columns) <= set(frame.columns)
    for record in frame.to_dict("records"):
        row = back[record["stay_id"]]
        for column in columns:
            assert _same(record[column], row[column]), (record["stay_id"], column)
    # The split recorded per row is the one the writer assigned and lists in the manifest.
    expected = dict(zip(frame["stay_id"], assign_splits(frame, 0)))
    assert all(row["split"] == expected[sid] for sid, row in back.items())
    assert sum(read.counts.values()) == N_STAYS and read.counts == {s: sum(r["split"] == s for r in back.values()) for s in SPLITS}


def test_same_input_same_hash_changed_value_other_hash(tmp_path, cohort, written):
    frame, manifest = cohort
    raw = json.loads((written / "manifest.json").read_text())
    first = raw["content_hash"]
    # The hash is sha256 over the shard bytes in split then file order.
    digest = hashlib.sha256()
    for split in SPLITS:
        for rel in raw["shards"][split]:
            digest.update((written / rel).read_bytes())
    assert digest.hexdigest() == first
    again = write_stays(frame, manifest, tmp_path / "again", split_seed=0)
    assert again.content_hash == first
    changed = frame.copy()
    changed.loc[5, "label_los_hours"] = changed.loc[5, "label_los_hours"] + 1.0
    other = write_stays(changed, manifest, tmp_path / "changed", split_seed=0)
    assert len(other.content_hash) == 64 and other.content_hash != first


def test_nan_inside_hourly_values_stays_nan(cohort, written):
    frame, _ = cohort
    table, _ = read_stays(written)
    flat = pc.list_flatten(table["ts_hourly_values"])
    assert flat.null_count == 0, "NaN (not observed) must not turn into null"
    expected = sum(int(np.isnan(v).sum()) for v in frame["ts_hourly_values"] if v is not None)
    assert expected > 0
    assert pc.sum(pc.is_nan(flat)).as_py() == expected
    # And the mask still says which entries were observed.
    mask = pc.list_flatten(table["ts_hourly_mask"]).to_numpy(zero_copy_only=False)
    assert np.array_equal(np.isnan(flat.to_numpy(zero_copy_only=False)), ~mask)


def test_absent_modalities_stay_null(cohort, written):
    frame, manifest = cohort
    table, _ = read_stays(written)
    for modality in ("discharge", "radiology", "cxr", "timeseries"):
        absent = pc.invert(table[presence_column(modality)])
        n_absent = pc.sum(absent).as_py()
        assert n_absent == int((~frame[presence_column(modality)]).sum()) > 0, modality
        for column in MODALITY_COLUMNS[modality]:
            values = table[column].filter(absent)
            assert values.null_count == n_absent, f"{column} must be null (not empty or zeros) where {modality} is absent"
        present = table[list(MODALITY_COLUMNS[modality])[0]].filter(table[presence_column(modality)])
        assert present.null_count == 0
