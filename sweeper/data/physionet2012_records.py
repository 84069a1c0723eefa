"""Reading the PhysioNet 2012 input files for :mod:`sweeper.data.physionet2012`.

Yields the record files of a set (tarball or extracted folder), parses one record file into its
descriptors and events, and reads an ``Outcomes-<x>.txt`` file. Every problem is a
:class:`~sweeper.data.schema.StaysError` naming the file (and line or column).
"""
from __future__ import annotations

import gzip
import io
import math
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from sweeper.data.schema import StaysError

HOURS = 48
HEADER = "Time,Parameter,Value"
MISSING = -1.0

# General descriptors, recorded at 00:00 (-1 = unknown), with their units.
DESCRIPTORS: dict[str, str] = {
    "RecordID": "",
    "Age": "years",
    "Gender": "0: female, 1: male",
    "Height": "cm",
    "ICUType": "1-4",
    "Weight": "kg",
}

OUTCOME_COLUMNS = ("RecordID", "Length_of_stay", "In-hospital_death")  # the ones used

# What a value can be at all (inclusive): wider than abnormal, narrower than impossible for a living
# patient. A value outside (an artefact such as Temp -17.8, pH 735, Height 1.8 cm) or beyond float32
# (it would be stored as infinity) is dropped and counted by name in ``notes["implausible_values_dropped"]``;
# a dropped descriptor becomes unknown (null).
LIMITS: dict[str, tuple[float, float]] = {
    "Age": (0, 120), "Height": (50, 250), "Weight": (1, 500),  # descriptors: years, cm, kg
    "Albumin": (0, 10), "ALP": (0, 10_000), "ALT": (0, 50_000), "AST": (0, 50_000), "Bilirubin": (0, 100),
    "BUN": (0, 500), "Cholesterol": (0, 2_000), "Creatinine": (0, 50), "DiasABP": (0, 400), "FiO2": (0, 1),
    "GCS": (3, 15), "Glucose": (0, 5_000), "HCO3": (0, 100), "HCT": (0, 100), "HR": (0, 400), "K": (0, 30),
    "Lactate": (0, 50), "Mg": (0, 30), "MAP": (0, 400), "MechVent": (0, 1), "Na": (50, 250),
    "NIDiasABP": (0, 400), "NIMAP": (0, 400), "NISysABP": (0, 400), "PaCO2": (0, 300), "PaO2": (0, 1_000),
    "pH": (6, 8.5), "Platelets": (0, 5_000), "RespRate": (0, 200), "SaO2": (0, 100), "SysABP": (0, 400),
    "Temp": (10, 50), "TroponinI": (0, 1_000), "TroponinT": (0, 1_000), "Urine": (0, 50_000), "WBC": (0, 1_000),
}
_FLOAT32_MAX = 3.4028234663852886e38


def plausible(name: str, value: float) -> bool:
    """Whether ``value`` of parameter ``name`` is kept (see :data:`LIMITS`)."""
    low, high = LIMITS.get(name, (-_FLOAT32_MAX, _FLOAT32_MAX))
    return low <= value <= high
# "HH:MM" -> minutes for the first 48 h: a dict lookup is the fast path of the line parser.
_TIMES: dict[str, int] = {f"{m // 60:02d}:{m % 60:02d}": m for m in range(HOURS * 60 + 1)}


def iter_record_files(location: Path, counts: dict) -> Iterator[tuple[str, str, bytes]]:
    """``(where, file name, bytes)`` for every ``*.txt`` record in a set tarball or folder."""
    if location.is_dir():
        for path in sorted(location.iterdir()):
            if path.is_file() and path.suffix == ".txt":
                yield str(path), path.name, path.read_bytes()
            else:
                counts["ignored_files"] += 1
        return
    # Decompress in full first (~31 MB a set): gzip checks its CRC at the end of the stream, so
    # a corrupt tarball is reported as such rather than as a bad line in whichever record it hit.
    try:
        with gzip.open(location, "rb") as handle:
            raw = handle.read()
        members = []
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if not member.name.endswith(".txt"):
                    counts["ignored_files"] += 1
                    continue
                members.append((member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StaysError(f"{location}: truncated or corrupt tarball ({message}); download it again") from None
    del raw
    for name, data in members:
        yield f"{location}:{name}", name.rsplit("/", 1)[-1], data


def parse_record(where: str, filename: str, data: bytes, feature_index: dict[str, int], counts: dict) -> dict:
    """One record file → descriptors and time-ordered events (feature, value, minutes)."""
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (some editors add one) is not part of the header
    except UnicodeDecodeError as err:
        raise StaysError(f"{where}: not UTF-8 text (byte {err.start}); use the record file as distributed") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        got = lines[0][:40] if lines else ""
        raise StaysError(f"{where} line 1: expected header {HEADER!r}, got {got!r}; use the record file as distributed")
    descriptors: dict[str, float] = {}
    features: list[int] = []
    values: list[float] = []
    minutes: list[int] = []
    limit = HOURS * 60
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.isspace():
            continue
        parts = line.split(",")
        if len(parts) != 3:
            raise StaysError(f"{where} line {number}: expected 3 fields Time,Parameter,Value, got {len(parts)}; fix or remove the line")
        time_text, name, value_text = parts
        minute = _TIMES.get(time_text)
        if minute is None:
            hh, sep, mm = time_text.partition(":")
            if not (sep and hh.isascii() and hh.isdigit() and mm.isascii() and mm.isdigit() and len(mm) == 2 and int(mm) < 60):
                raise StaysError(f"{where} line {number}: time {time_text!r} is not HH:MM; fix or remove the line")
            minute = int(hh) * 60 + int(mm)
        try:
            value = float(value_text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise StaysError(f"{where} line {number}: value {value_text!r} of {name!r} is not a number; fix or remove the line")
        if name == "":  # set C as distributed: `HH:MM,,value`, a repeat of the preceding lab value
            counts["empty_parameter_lines"] = counts.get("empty_parameter_lines", 0) + 1
            continue
        if minute == 0 and name in DESCRIPTORS and name not in descriptors:
            if name != "RecordID" and value != MISSING and not plausible(name, value):
                implausible = counts.setdefault("implausible_values_dropped", {})
                implausible[name] = implausible.get(name, 0) + 1
                value = MISSING
            descriptors[name] = value
            continue
        index = feature_index.get(name)
        if index is None:
            if name == "Weight":
                counts["weight_observations_not_kept"] += 1
                continue
            if name in DESCRIPTORS:
                raise StaysError(f"{where} line {number}: descriptor {name!r} repeated or not at 00:00; keep one {name} line at 00:00")
            raise StaysError(f"{where} line {number}: unknown parameter {name!r}; fix or remove the line (known: the 36 PhysioNet 2012 time series and descriptors)")
        if value == MISSING:
            counts["missing_markers"] += 1
            continue
        if minute > limit:
            counts["observations_after_48h"] += 1
            continue
        if not plausible(name, value):
            implausible = counts.setdefault("implausible_values_dropped", {})
            implausible[name] = implausible.get(name, 0) + 1
            continue
        features.append(index)
        values.append(value)
        minutes.append(minute)
    if "RecordID" not in descriptors:
        raise StaysError(f"{where}: no RecordID line at 00:00; use the record file as distributed")
    record_value = descriptors["RecordID"]
    if record_value != int(record_value) or not 0 <= record_value < 10**12:
        raise StaysError(f"{where}: RecordID {record_value!r} is not a whole number; use the record file as distributed")
    record_id = int(record_value)
    stem = filename.removesuffix(".txt")
    if stem != str(record_id):
        raise StaysError(f"{where}: RecordID line says {record_id}, the file name says {stem}; rename the file or fix the line")
    return {
        "where": where,
        "record_id": record_id,
        "descriptors": descriptors,
        "features": features,
        "values": values,
        "minutes": minutes,
    }

def read_outcomes(path: Path, set_name: str) -> dict[int, tuple[int, float, float | None]]:
    """``Outcomes-<x>.txt`` → RecordID → (line number, in-hospital death, length of stay in days or None)."""
    if not path.is_file():
        raise StaysError(f"{path}: missing Outcomes file for set {set_name}; put Outcomes-{set_name}.txt beside set-{set_name}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of the header
    except (OSError, UnicodeDecodeError) as err:
        raise StaysError(f"{path}: cannot read ({str(err).splitlines()[0]}); use the Outcomes file as distributed") from None
    if not lines:
        raise StaysError(f"{path}: empty; use the Outcomes file as distributed")
    header = [h.strip() for h in lines[0].split(",")]
    for column in OUTCOME_COLUMNS:
        if column not in header:
            raise StaysError(f"{path}: missing column {column!r} (header has {', '.join(header)}); use the Outcomes file as distributed")
    col = {name: header.index(name) for name in OUTCOME_COLUMNS}
    outcomes: dict[int, tuple[int, float, float | None]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.isspace():
            continue
        parts = line.split(",")
        if len(parts) != len(header):
            raise StaysError(f"{path} line {number}: expected {len(header)} fields, got {len(parts)}; fix or remove the line")
        try:
            record_id = int(parts[col["RecordID"]])
            ihm = float(parts[col["In-hospital_death"]])
            los = float(parts[col["Length_of_stay"]])
        except ValueError:
            raise StaysError(f"{path} line {number}: RecordID, Length_of_stay and In-hospital_death must be numbers; fix the line") from None
        if ihm not in (0.0, 1.0):
            raise StaysError(f"{path} line {number}: In-hospital_death {parts[col['In-hospital_death']]!r} must be 0 or 1; fix the line")
        if los != MISSING and not (los >= 0 and math.isfinite(los)):
            raise StaysError(f"{path} line {number}: Length_of_stay {parts[col['Length_of_stay']]!r} must be days >= 0 or -1 (unknown); fix the line")
        if record_id in outcomes:
            raise StaysError(f"{path} line {number}: RecordID {record_id} repeats line {outcomes[record_id][0]}; keep one row per record")
        outcomes[record_id] = (number, ihm, None if los == MISSING else los)
    return outcomes
