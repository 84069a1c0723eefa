"""The extra test sets a final trial scores besides the run's test split, each saved as its own
predictions beside the test ones (``predictions.<set>.parquet`` in the final checkpoint):

- external cohorts (``data.external``), set ``ext_<name>``: every stay of another stays folder,
  read by the driver as the training cohort's model reads it (``sweeper.data.external.read_external``)
  and handed to the trial as one more dataset;
- missing-modality protocols (``final.test_missing``), set ``miss_<name>``: the test split again,
  with modalities hidden by a seeded protocol before collation (``sweeper.data.corrupt``).

A set none of whose stays has a modality of the cell (or whose stays lack the precomputed
embeddings the cell reads) is not scored, and its leaderboard columns stay empty.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

EXTERNAL_PREFIX, MISSING_PREFIX = "ext_", "miss_"
EXTRA_PREDICTIONS = "predictions.{}.parquet"


def extra_splits(config: dict) -> tuple[str, ...]:
    """The datasets a final trial reads besides train/val/test: its external cohorts."""
    if not config.get("final"):
        return ()
    return tuple(name for name, what in (config.get("extra_sets") or {}).items() if what.get("external"))


def score_extra_sets(config: dict, session, collate, score: Callable[[dict], np.ndarray]) -> dict[str, tuple[dict, np.ndarray]]:
    """``{set: (collated data, scores)}`` of every extra set the final trial scores."""
    from sweeper.data.corrupt import CorruptedCollate, Protocol
    from sweeper.data.loading import collate_all
    from sweeper.data.schema import StaysError

    out = {}
    for name, what in (config.get("extra_sets") or {}).items():
        if what.get("external"):
            source, used = session.dataset(name), collate
        else:
            protocol = Protocol(str(what["drop"]), float(what["rate"]), int(what.get("seed", 0)))
            source, used = session.dataset("test"), CorruptedCollate(collate, protocol)
        try:
            data = collate_all(source.iter_batches(batch_size=1024, batch_format="numpy"), used)
        except StaysError:  # no stay with a modality of the cell, or no embedding of these stays
            continue
        out[name] = (data, score(data))
    return out
