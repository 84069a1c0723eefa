"""Splits the user owns, for ``sweeper data prepare`` (docs/data-sources.md, "Keeping your own split").

- ``--split-file FILE``: a CSV with a ``split`` column (``train``, ``val`` or ``test``) and either a
  ``stay_id`` column (the stays' ids as the adapter names them, e.g. ``p12-a-132539``) or a
  ``subject_id`` column (every stay of that patient). Every stay must be given a split.
- ``--test-sets SET ...`` (PhysioNet 2012): the stays of those sets are the test split, the other
  sets are train and val (15 % of their patients, patient-level, seeded), e.g. train on A and B,
  test on C, as the challenge did.

Both leave the split in the frame's ``split`` column and say how in the manifest's ``split``; the
writer keeps a given split (:func:`sweeper.data.stays.write_stays`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sweeper.data.schema import SPLITS, Manifest, StaysError
from sweeper.data.splits import assign_splits
from sweeper.data.tables import READ_ERRORS, unreadable

VAL_SHARE = 0.15


def from_file(frame: pd.DataFrame, manifest: Manifest, path: str | Path) -> pd.DataFrame:
    """``frame`` with the split the CSV at ``path`` gives each stay."""
    path = Path(path)
    try:
        given = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise StaysError(f"--split-file {path}: does not exist; give a CSV with stay_id (or subject_id) and split columns") from None
    except READ_ERRORS as err:
        raise unreadable(f"--split-file {path}", err, "give a CSV with stay_id (or subject_id) and split columns") from None
    key = "stay_id" if "stay_id" in given.columns else "subject_id" if "subject_id" in given.columns else None
    if key is None or "split" not in given.columns:
        raise StaysError(f"--split-file {path}: needs a split column and a stay_id or subject_id column (header has {', '.join(given.columns)})")
    bad = given["split"][~given["split"].isin(SPLITS)]
    if len(bad):
        raise StaysError(f"--split-file {path}: split {bad.iloc[0]!r} is not one of {', '.join(SPLITS)}; fix the file")
    if given[key].duplicated().any():
        raise StaysError(f"--split-file {path}: {key} {given[key][given[key].duplicated()].iloc[0]!r} is listed twice; keep one row per {key}")
    split = frame[key].astype(str).map(dict(zip(given[key], given["split"])))
    if split.isna().any():
        raise StaysError(f"--split-file {path}: no row for {key} {frame[key][split.isna()].iloc[0]!r} (one of {int(split.isna().sum())} stays without a split); give every stay a split")
    manifest.split = {"method": f"given by the user (--split-file, by {key})", "file": path.name}
    return frame.assign(split=split.to_numpy())


def by_test_sets(frame: pd.DataFrame, manifest: Manifest, sets: list[str], seed: int) -> pd.DataFrame:
    """PhysioNet 2012: the stays of ``sets`` are test; train/val from the other sets' patients."""
    chosen = manifest.notes.get("sets", [])
    names = [name.removeprefix("set-").removesuffix(".tar.gz") for name in sets]
    for name in names:
        if name not in chosen:
            raise StaysError(f"--test-sets: set {name!r} is not among the sets read ({', '.join(chosen)}); name one of them")
    of_set = frame["stay_id"].str.split("-").str[1]
    test = of_set.isin(names).to_numpy()
    if test.all():
        raise StaysError(f"--test-sets: every set read ({', '.join(chosen)}) would be test; leave at least one set to train on")
    split = pd.Series("test", index=frame.index)
    split[~test] = assign_splits(frame[~test], seed, (1 - VAL_SHARE, VAL_SHARE, 0.0)).to_numpy()
    train_sets = [s for s in chosen if s not in names]
    manifest.split = {"method": "by set: test sets given by the user, val carved from the training sets' patients",
                      "train_sets": train_sets, "test_sets": names, "val_share": VAL_SHARE, "seed": seed}
    return frame.assign(split=split.to_numpy())
