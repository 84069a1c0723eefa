"""Where stays folders go: checking ``--out`` before any work, and putting a finished folder in place.

Writes are all-or-nothing and never delete what sweeper did not write:

- a new folder is built beside ``--out`` in a hidden temporary sibling and renamed into place;
- an existing non-empty ``--out`` that is not a stays folder is refused;
- an existing stays folder is replaced only when asked (``overwrite``, the CLI's ``--overwrite``) and
  only when it holds nothing but what sweeper writes (``manifest.json`` and ``shards/<split>-NNNNN.parquet``);
  the old folder is moved aside, the new one renamed into place, and only then the old one removed
  (if the second rename fails, the old folder is moved back).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from sweeper.data.schema import StaysError

_SHARD_FILE = re.compile(r"[a-z]+-\d{5}\.parquet")


def shown(path: str | Path) -> str:
    """``path`` as text safe to print: bytes that are not UTF-8 appear as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_path_text(path: str | Path, option: str) -> Path:
    """Refuse a path whose name is not UTF-8 (it cannot be printed or handed to Arrow), naming ``option``."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        byte = os.fsencode(text[err.start])[0]
        raise StaysError(f"{option} {shown(text)}: the path is not UTF-8 (byte 0x{byte:02x}); rename it or choose another path") from None
    if "\x00" in text:
        raise StaysError(f"{option} {text!r}: the path holds a NUL character; choose another path")
    return Path(text)


def foreign_entries(folder: Path) -> list[str]:
    """What in a stays folder sweeper did not write (relative paths, sorted); empty when it is all sweeper's."""
    foreign = []
    for entry in sorted(folder.iterdir()):
        if entry.name == "manifest.json" and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == "shards" and entry.is_dir() and not entry.is_symlink():
            foreign += [f"shards/{p.name}" for p in sorted(entry.iterdir()) if not (_SHARD_FILE.fullmatch(p.name) and p.is_file() and not p.is_symlink())]
            continue
        foreign.append(entry.name)
    return foreign


def check_writable(out: str | Path, overwrite: bool = False) -> Path:
    """Fail early, naming ``out``, when a stays folder cannot be written (or replaced) there."""
    out = check_path_text(out, "--out").absolute()
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StaysError(f"--out {out}: exists and is not a folder; choose another path")
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise StaysError(f"--out {out}: folder is not empty and is not a stays folder; choose an empty or new path")
        if not overwrite:
            raise StaysError(f"--out {out}: already holds a stays folder; pass --overwrite to replace it, or choose a new path")
        _check_only_ours(out)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise StaysError(f"--out {out}: {parent} is not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise StaysError(f"--out {out}: not writable; choose a path you can write to")
    return out


def _check_only_ours(out: Path) -> None:
    foreign = foreign_entries(out)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise StaysError(
            f"--out {out}: holds {foreign[0]}{more}, which sweeper did not write; move it out of the folder "
            "(--overwrite replaces only a stays folder's own files) or choose another path"
        )


def make_temporary(out: Path) -> Path:
    """A new empty hidden folder beside ``out`` to build the stays folder in."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise StaysError(f"--out {out}: cannot write ({err.strerror or err}); choose another path") from None


def put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, keeping an old ``out`` until that succeeded.

    On failure ``out`` is as it was before; ``tmp`` is the caller's to remove.
    """
    if not out.exists():
        os.rename(tmp, out)
        return
    _check_only_ours(out)  # again, right before: nothing sweeper did not write is ever deleted
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.rename(out, old)  # onto the empty folder just made
    except OSError:
        old.rmdir()
        raise
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    try:
        shutil.rmtree(old)
    except OSError as err:
        raise StaysError(f"--out {out}: written, but the old stays folder (moved to {old}) could not be removed ({err.strerror or err}); delete it by hand") from None
