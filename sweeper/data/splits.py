"""Patient-level train/val/test splits, stratified by modality-presence pattern (docs/stays-format.md).

Every stay of a subject lands in the same split. Subjects are stratified by the presence pattern
of their *first* stay (a 5-character string such as ``"11011"`` in ``MODALITIES`` order); stays
without a subject id are their own group. The same seed always gives the same split.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sweeper.data.schema import MODALITIES, SPLITS, StaysError, presence_column

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def presence_pattern(frame: pd.DataFrame) -> pd.Series:
    """One string per row: ``'1'``/``'0'`` per modality in ``MODALITIES`` order."""
    bits = [frame[presence_column(m)].astype(bool).map({True: "1", False: "0"}) for m in MODALITIES]
    return pd.concat(bits, axis=1).agg("".join, axis=1)


def assign_splits(frame: pd.DataFrame, seed: int, fractions=DEFAULT_FRACTIONS) -> pd.Series:
    """Return a ``split`` value per row of ``frame`` (needs ``stay_id``, ``subject_id``, presence)."""
    missing = [c for c in ["stay_id", "subject_id"] + [presence_column(m) for m in MODALITIES] if c not in frame.columns]
    if missing:
        raise StaysError(f"split assignment: missing required column {missing[0]!r}")
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise StaysError(f"split fractions {fractions.tolist()}: need three non-negative numbers summing to 1")
    group = frame["subject_id"].where(frame["subject_id"].notna(), "stay:" + frame["stay_id"].astype(str))
    pattern = presence_pattern(frame)
    # Rows are in source order, so a group's first row is its first stay.
    first = pd.DataFrame({"group": group, "pattern": pattern}).drop_duplicates("group")
    rng = np.random.default_rng(seed)
    group_split: dict[str, str] = {}
    for _, members in sorted(first.groupby("pattern"), key=lambda kv: kv[0]):
        ids = members["group"].to_numpy().copy()
        rng.shuffle(ids)
        # Largest-remainder rounding keeps each stratum's shares close to the fractions.
        bounds = np.floor(np.cumsum(fractions) * len(ids) + 0.5).astype(int)
        start = 0
        for split, stop in zip(SPLITS, bounds):
            group_split.update({g: split for g in ids[start:stop]})
            start = stop
    return group.map(group_split).rename("split")
