"""Reading the CSV tables of the credentialed clinical databases (MIMIC-IV, MIMIC-III, eICU-CRD).

Each database ships one ``<table>.csv.gz`` (or plain ``.csv``) per table; MIMIC-III spells the file
and column names in upper case. :func:`find_table` finds a table in either spelling and either
compression; :func:`read_table` reads the columns an adapter needs (matched case-insensitively,
returned in lower case), in chunks so that a table larger than memory (MIMIC-IV's ``chartevents``
is tens of GB) is filtered as it streams. Every problem is a one-line
:class:`~sweeper.data.schema.StaysError` naming the file (and column) and saying what to do.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sweeper.data.schema import StaysError

CHUNK_ROWS = 2_000_000


def find_table(folder: Path, name: str) -> Path | None:
    """``folder/<name>.csv.gz`` or ``.csv``, in the given or upper-case spelling; None when absent."""
    for stem in dict.fromkeys((name, name.upper(), name.lower())):
        for suffix in (".csv.gz", ".csv", ".CSV.GZ", ".CSV"):
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def require_table(folder: Path, name: str, what: str) -> Path:
    """Like :func:`find_table`, but a missing table is an error saying what it is for."""
    path = find_table(folder, name)
    if path is None:
        raise StaysError(f"{folder / (name + '.csv.gz')}: missing ({what}); use the folder as distributed (.csv.gz or .csv)")
    return path


def unreadable(where: object, err: BaseException, advice: str = "download the file again") -> StaysError:
    """The one-line error for a file that cannot be read: ``where`` (its path, or how the user
    named it), the first line of the reader's complaint, and what to do."""
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return StaysError(f"{where}: cannot read ({message}); {advice}")


READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError)


def read_table(
    path: Path,
    columns: list[str],
    keep: Callable[[pd.DataFrame], pd.Series] | None = None,
    optional: tuple[str, ...] = (),
    each: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The ``columns`` of the CSV table at ``path`` (lower-case names), as strings.

    ``keep`` (a frame → boolean mask) filters each chunk as it is read; ``each`` then turns each
    chunk into what is kept of it (typed, windowed), so a table larger than memory is reduced as it
    streams. ``optional`` columns are filled with nulls when the file lacks them. A missing required
    column is an error naming it.
    """
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8")
    except READ_ERRORS as err:
        raise unreadable(path, err) from None
    by_lower = {str(name).strip().lower(): name for name in header.columns}
    for column in columns:
        if column not in by_lower and column not in optional:
            have = ", ".join(by_lower) or "no columns"
            raise StaysError(f"{path}: missing column {column!r} (header has {have}); use the table as distributed")
    wanted = [by_lower[c] for c in columns if c in by_lower]
    parts = []
    try:
        reader = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False, na_values=[""], chunksize=CHUNK_ROWS, encoding="utf-8")
        for chunk in reader:
            chunk.columns = [str(c).strip().lower() for c in chunk.columns]
            if keep is not None:
                chunk = chunk[keep(chunk).to_numpy()]
            parts.append(_complete(chunk, columns) if each is None else each(_complete(chunk, columns)))
    except StaysError:  # a bad value found by ``each``: its own message names the column
        raise
    except READ_ERRORS as err:
        raise unreadable(path, err) from None
    if not parts:
        empty = _complete(pd.DataFrame(columns=[c.lower() for c in wanted], dtype=object), columns)
        return empty if each is None else each(empty)
    return pd.concat(parts, ignore_index=True)


def _complete(chunk: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for column in columns:
        if column not in chunk.columns:
            chunk[column] = pd.Series([None] * len(chunk), dtype=object, index=chunk.index)
    return chunk[columns]


def ids(frame: pd.DataFrame, column: str, path: Path, required: bool = True) -> pd.Series:
    """``column`` as nullable integers; a value that is not a whole number (or a missing required one) is an error."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() | (values.notna() & (values % 1 != 0))
    if required:
        bad |= frame[column].isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise StaysError(f"{path}: column {column!r} holds {frame[column].iloc[row]!r}, which is not an id (a whole number); use the table as distributed")
    return values.astype("Int64")


def times(frame: pd.DataFrame, column: str, path: Path, required: bool = True) -> pd.Series:
    """``column`` (``YYYY-MM-DD HH:MM:SS``) as datetimes; an unparseable (or missing required) value is an error."""
    try:  # the fast path: the databases' own format
        values = pd.to_datetime(frame[column], format="%Y-%m-%d %H:%M:%S")
    except (ValueError, TypeError):
        values = pd.to_datetime(frame[column], errors="coerce", format="mixed")
    bad = values.isna() & frame[column].notna()
    if required:
        bad |= frame[column].isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise StaysError(f"{path}: column {column!r} holds {frame[column].iloc[row]!r}, which is not a date and time; use the table as distributed")
    return values


def numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as float64; text that is not a number becomes NaN (a measurement recorded as words)."""
    try:  # the fast path: every value a number (or empty)
        return frame[column].astype("float64")
    except (ValueError, TypeError):
        return pd.to_numeric(frame[column], errors="coerce").astype("float64")
