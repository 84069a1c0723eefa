"""The bad-input catalogue (docs/errors.md) kept true: each case here builds one bad input in a
scratch folder, runs the command (or calls the function) and checks the one line it gives against
the catalogue row that cites the case, with paths replaced by the catalogue's placeholders; a CLI
case must exit 2, print nothing on stdout and leave the scratch folder exactly as it was. A second
test checks that every catalogue row cites a test that exists and every case here is cited. No Ray."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sweeper.cli import main
from sweeper.data import folders
from sweeper.data.schema import SPLITS
from sweeper.data.stays import write_stays
from sweeper.data.synthetic import SynthConfig, generate
from sweeper.errors import SweeperError

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "errors.md"
HERE = "tests/data/test_bad_inputs.py::test_bad_input"
CASES: dict[str, callable] = {}
BAD_NAME = os.fsdecode(b"bad\xffname")


def case(name: str):
    def register(build):
        CASES[name] = build
        return build
    return register


# ------------------------------------------------------------------------------------ building blocks


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """Two 60-stay synthetic stays folders written once (seeds 0 and 1): cases work on copies."""
    root = tmp_path_factory.mktemp("cohorts")
    for seed in (0, 1):
        frame, manifest = generate(SynthConfig(n_stays=60, seed=seed))
        write_stays(frame, manifest, root / f"seed{seed}", split_seed=seed)
    return root


def edit_manifest(stays: Path, change) -> None:
    raw = json.loads((stays / "manifest.json").read_text())
    change(raw)
    (stays / "manifest.json").write_text(json.dumps(raw))


def rehash(stays: Path) -> None:
    """Record the shards' current hashes: a folder damaged by a tool that kept its manifest consistent."""
    def change(raw):
        digest = hashlib.sha256()
        for rel in (rel for split in SPLITS for rel in raw["shards"][split]):
            data = (stays / rel).read_bytes()
            digest.update(data)
            raw["shard_hashes"][rel] = hashlib.sha256(data).hexdigest()
        raw["content_hash"] = digest.hexdigest()
    edit_manifest(stays, change)


def p12_record(record_id: int, *lines: str, age: str = "54") -> bytes:
    head = ["Time,Parameter,Value", f"00:00,RecordID,{record_id}", f"00:00,Age,{age}", "00:00,Gender,1", "00:00,Height,170",
            "00:00,ICUType,3", "00:00,Weight,80"]
    return ("\n".join(head + list(lines or ["00:30,HR,80", "01:30,HR,85"])) + "\n").encode()


def p12_source(src: Path, n: int = 40, outcomes: bytes | None = None, **records: bytes) -> Path:
    """A PhysioNet 2012 folder layout of ``n`` small records (RecordIDs 1000...), ``records`` replacing some."""
    (src / "set-a").mkdir(parents=True)
    rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
    for i in range(n):
        record_id = 1000 + i
        (src / "set-a" / f"{record_id}.txt").write_bytes(records.get(str(record_id), p12_record(record_id)))
        rows.append(f"{record_id},10,2,{3 + i % 5},-1,{int(i % 4 == 0)}")
    (src / "Outcomes-a.txt").write_bytes(outcomes if outcomes is not None else ("\n".join(rows) + "\n").encode())
    return src


def describe(tmp: Path) -> list[str]:
    return ["data", "describe", str(tmp / "stays")]


def prepare(tmp: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "physionet2012", "--src", str(tmp / "src"), "--out", str(tmp / "out"), *extra]


def synth(tmp: Path, *extra: str) -> list[str]:
    return ["data", "synth", "--out", str(tmp / "stays"), "--n-stays", "40", *extra]


# -------------------------------------------------------------------- cases: describe (stays folders)


@case("manifest-not-utf8")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    path = tmp / "stays" / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"synthetic"', b'"synth\xffetic"', 1))
    return describe(tmp)


@case("manifest-label-rates-empty")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw.update(label_rates={}))
    return describe(tmp)


@case("manifest-hours-a-string")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw["timeseries"].update(hours="48"))
    return describe(tmp)


@case("manifest-infinity")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    path = tmp / "stays" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["demographics"]["mean"]["age"] = float("inf")
    path.write_text(json.dumps(raw))  # json writes Infinity, which is not JSON
    return describe(tmp)


@case("manifest-shard-outside-the-folder")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shutil.copytree(cohorts / "seed1", tmp / "other")
    edit_manifest(tmp / "stays", lambda raw: raw["shards"].update(test=["../other/shards/test-00000.parquet"]))
    return describe(tmp)


@case("shard-swapped-for-another-prepares")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shutil.copy(cohorts / "seed1" / "shards" / "test-00000.parquet", tmp / "stays" / "shards" / "test-00000.parquet")
    return describe(tmp)


@case("test-shard-overwritten-by-the-train-shard")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shutil.copy(tmp / "stays" / "shards" / "train-00000.parquet", tmp / "stays" / "shards" / "test-00000.parquet")
    return describe(tmp)


@case("test-shard-overwritten-by-the-train-shard-and-rehashed")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shutil.copy(tmp / "stays" / "shards" / "train-00000.parquet", tmp / "stays" / "shards" / "test-00000.parquet")
    rehash(tmp / "stays")
    return describe(tmp)


@case("old-manifest-content-hash-mismatch")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw.update(shard_hashes={}, content_hash="0" * 64))
    return describe(tmp)


@case("manifest-a-json-array")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    (tmp / "stays" / "manifest.json").write_text("[1, 2]")
    return describe(tmp)


@case("manifest-counts-without-shards")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw["counts"].update(val=0))
    return describe(tmp)


@case("manifest-presence-rate-above-1")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw["presence_rates"]["train"].update(cxr=2))
    return describe(tmp)


@case("manifest-schema-version-a-string")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    edit_manifest(tmp / "stays", lambda raw: raw.update(schema_version="1"))
    return describe(tmp)


@case("shard-not-parquet")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shard = tmp / "stays" / "shards" / "train-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:500])
    rehash(tmp / "stays")
    return describe(tmp)


@case("shard-missing-a-column")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    shard = tmp / "stays" / "shards" / "val-00000.parquet"
    pq.write_table(pq.read_table(shard).drop_columns(["label_ihm"]), shard)
    rehash(tmp / "stays")
    return describe(tmp)


@case("describe-a-path-that-is-not-utf8")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays" / BAD_NAME)
    return ["data", "describe", str(tmp / "stays" / BAD_NAME)]


# ------------------------------------------------------------------------------------- cases: synth


@case("synth-out-not-utf8")
def _(tmp, cohorts):
    return ["data", "synth", "--out", str(tmp / BAD_NAME), "--n-stays", "40"]


@case("synth-n-stays-a-trillion")
def _(tmp, cohorts):
    return ["data", "synth", "--out", str(tmp / "stays"), "--n-stays", "1000000000000"]


@case("synth-over-a-stays-folder-without-overwrite")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    return synth(tmp)


@case("synth-overwrite-a-stays-folder-holding-other-files")
def _(tmp, cohorts):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    (tmp / "stays" / "notes.txt").write_text("the user's own notes")
    return synth(tmp, "--overwrite")


@case("synth-overwrite-when-the-new-folder-cannot-be-put-in-place")
def _(tmp, cohorts, monkeypatch):
    shutil.copytree(cohorts / "seed0", tmp / "stays")
    real = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the finished new folder: moving it into place fails
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(folders.os, "rename", rename)
    return synth(tmp, "--overwrite")


@case("synth-seed-negative")
def _(tmp, cohorts):
    return synth(tmp, "--seed", "-1")


@case("synth-out-a-regular-file")
def _(tmp, cohorts):
    (tmp / "FILE").write_text("not a folder")
    return ["data", "synth", "--out", str(tmp / "FILE"), "--n-stays", "40"]


@case("synth-strength-not-a-number")
def _(tmp, cohorts):
    return synth(tmp, "--strength", "cxr=high")


@case("synth-strength-without-equals")
def _(tmp, cohorts):
    return synth(tmp, "--strength", "cxr")


@case("synth-without-out")
def _(tmp, cohorts):
    return ["data", "synth"]


@case("synth-unknown-flag")
def _(tmp, cohorts):
    return ["data", "synth", "--out", str(tmp / "stays"), "--stays", "60"]


# ----------------------------------------------------------------------------------- cases: prepare


@case("prepare-seed-negative")
def _(tmp, cohorts):
    p12_source(tmp / "src")
    return prepare(tmp, "--seed", "-5")


@case("prepare-empty-set-folder")
def _(tmp, cohorts):
    p12_source(tmp / "src", n=0)
    return prepare(tmp)


@case("prepare-src-a-regular-file")
def _(tmp, cohorts):
    (tmp / "FILE").write_text("not a folder")
    return ["data", "prepare", "physionet2012", "--src", str(tmp / "FILE"), "--out", str(tmp / "out")]


@case("prepare-src-not-utf8")
def _(tmp, cohorts):
    return ["data", "prepare", "physionet2012", "--src", str(tmp / BAD_NAME), "--out", str(tmp / "out")]


@case("prepare-unknown-source")
def _(tmp, cohorts):
    return ["data", "prepare", "mimic4", "--src", str(tmp / "src"), "--out", str(tmp / "out")]


@case("record-not-utf8")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003).replace(b"HR,80", b"HR,8\xe9")})
    return prepare(tmp)


@case("record-header-wrong")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003).replace(b"Time,Parameter,Value", b"time;parameter;value")})
    return prepare(tmp)


@case("record-without-recordid")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003).replace(b"00:00,RecordID,1003\n", b"")})
    return prepare(tmp)


@case("record-id-differs-from-file-name")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1004)})
    return prepare(tmp)


@case("record-descriptor-repeated")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003, "00:00,Age,60")})
    return prepare(tmp)


@case("record-gender-3")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003).replace(b"Gender,1", b"Gender,3")})
    return prepare(tmp)


@case("record-time-minutes-60")
def _(tmp, cohorts):
    p12_source(tmp / "src", **{"1003": p12_record(1003, "05:60,HR,80")})
    return prepare(tmp)


def _outcomes(tmp: Path, change) -> list[str]:
    src = p12_source(tmp / "src")
    lines = (src / "Outcomes-a.txt").read_text().splitlines()
    (src / "Outcomes-a.txt").write_bytes(change(lines))
    return prepare(tmp)


@case("outcomes-line-with-a-missing-field")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: ("\n".join(lines[:3] + ["1002,10,2,3,-1"] + lines[4:]) + "\n").encode())


@case("outcomes-death-2")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: ("\n".join(lines[:3] + ["1002,10,2,3,-1,2"] + lines[4:]) + "\n").encode())


@case("outcomes-length-of-stay-negative")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: ("\n".join(lines[:3] + ["1002,10,2,-5,-1,0"] + lines[4:]) + "\n").encode())


@case("outcomes-recordid-repeated")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: ("\n".join(lines + [lines[1]]) + "\n").encode())


@case("outcomes-not-utf8")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: ("\n".join(lines) + "\n").encode().replace(b"SOFA", b"S\xd6FA"))


@case("outcomes-empty")
def _(tmp, cohorts):
    return _outcomes(tmp, lambda lines: b"")


# ------------------------------------------------------------------------ cases: Python API and specs


@case("write-stays-an-infinite-value")
def _(tmp, cohorts):
    frame, manifest = generate(SynthConfig(n_stays=40, seed=0))
    frame.loc[3, "demo_age"] = np.inf
    return lambda: write_stays(frame, manifest, tmp / "stays")


@case("write-stays-seed-negative")
def _(tmp, cohorts):
    frame, manifest = generate(SynthConfig(n_stays=40, seed=0))
    return lambda: write_stays(frame, manifest, tmp / "stays", split_seed=-5)


@case("write-stays-no-stays")
def _(tmp, cohorts):
    frame, manifest = generate(SynthConfig(n_stays=40, seed=0))
    return lambda: write_stays(frame.iloc[:0], manifest, tmp / "stays")


def _spec(tmp: Path, text: bytes) -> list[str]:
    (tmp / "specs").mkdir()
    (tmp / "specs" / "spec.yaml").write_bytes(text)
    return ["plan", str(tmp / "specs" / "spec.yaml"), "--profile", "train"]


SMOKE = (ROOT / "sweeper" / "specs" / "smoke.yaml").read_bytes()


@case("spec-not-utf8")
def _(tmp, cohorts):
    return _spec(tmp, SMOKE.replace(b"engine smoke test", b"engine sm\xf6ke test"))


@case("spec-synthetic-n-stays-a-trillion")
def _(tmp, cohorts):
    return _spec(tmp, SMOKE.replace(b"n_stays: 400", b"n_stays: 1000000000000"))


@case("spec-synthetic-seed-negative")
def _(tmp, cohorts):
    return _spec(tmp, SMOKE.replace(b"{n_stays: 400, seed: 0}", b"{n_stays: 400, seed: -1}"))


@case("plan-without-name")
def _(tmp, cohorts):
    return ["plan"]


@case("unknown-command")
def _(tmp, cohorts):
    return ["train", "smoke"]


# ------------------------------------------------------------------------------------ the catalogue


def catalogue_rows() -> list[tuple[str, str, list[tuple[str, str, str | None]]]]:
    """(bad input, message, cited tests as (file, function, parameter id or None)) per catalogue row."""
    rows = []
    for line in CATALOGUE.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| bad input |"):
            continue
        cells = line.strip().strip("|").split(" | ")
        code = re.search(r"``\s(.+?)\s``|`([^`]+)`", cells[1])
        message = (code.group(1) or code.group(2)) if code else ""
        cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^`]*)\])?`", cells[-1])
        rows.append((cells[0], message, [(f, fn, pid or None) for f, fn, pid in cited]))
    return rows


def cited_message(name: str) -> str:
    found = [message for _, message, cited in catalogue_rows() if (HERE.split("::")[0], "test_bad_input", name) in cited]
    assert len(found) == 1, f"case {name!r} is cited by {len(found)} catalogue rows"
    return found[0]


def placeholders(text: str, tmp: Path) -> str:
    for path, holder in ((tmp / "stays", "DIR"), (tmp / "specs", "DIR"), (tmp / "src", "SRC"), (tmp / "out", "OUT"), (tmp / "FILE", "FILE"), (tmp, "TMP")):
        text = text.replace(str(path), holder)
    return text.replace(str(ROOT), "REPO")


def matches(message: str, pattern: str) -> bool:
    """``pattern`` with ``…`` standing for any text."""
    return re.fullmatch(".*?".join(re.escape(part) for part in pattern.split("…")), message) is not None


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, cohorts, capsys, monkeypatch):
    build = CASES[name]
    argv = build(tmp_path, cohorts, monkeypatch) if "monkeypatch" in build.__code__.co_varnames else build(tmp_path, cohorts)
    before = snapshot(tmp_path)
    if callable(argv):  # the Python API: one StaysError line, nothing written
        with pytest.raises(SweeperError) as err:
            argv()
        line = str(err.value)
    else:
        try:
            assert main(argv) == 2
        except SystemExit as exit_:  # a usage mistake, refused by argparse
            assert exit_.code == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured
        line = captured.err.rstrip("\n")
    assert "\n" not in line
    assert snapshot(tmp_path) == before, "a failed command must leave every folder exactly as it was"
    expected = cited_message(name)
    assert matches(placeholders(line, tmp_path), expected), f"\n got:      {placeholders(line, tmp_path)}\n catalogue: {expected}"


def test_every_catalogue_row_cites_an_existing_test_and_every_case_is_cited():
    rows = catalogue_rows()
    assert len({bad for bad, _, _ in rows}) >= 60
    for bad, message, cited in rows:
        assert message, f"catalogue row without a message: {bad}"
        assert cited, f"catalogue row without a test: {bad}"
        for file, function, param in cited:
            source = ROOT / file
            assert source.is_file(), f"{bad}: cites {file}, which does not exist"
            assert re.search(rf"^def {function}\(", source.read_text(), re.M), f"{bad}: cites {file}::{function}, which does not exist"
            if file == HERE.split("::")[0]:
                assert function == "test_bad_input" and param in CASES, f"{bad}: cites unknown case {param!r}"
    cited_cases = [p for _, _, cited in rows for f, _, p in cited if f == HERE.split("::")[0]]
    assert sorted(cited_cases) == sorted(CASES), "every case here is cited by exactly one catalogue row"
