"""The extra test sets a final trial scores besides the run's test split, each saved as its own
predictions beside the test ones (``predictions.<set>.parquet`` in the final checkpoint):

- external cohorts (``data.external``), set ``ext_<name>``: every stay of another stays folder,
  read by the driver as the training cohort's model reads it (``sweeper.data.external.read_external``)
  and handed to the trial as one more dataset. A cell that reads precomputed embeddings (a frozen
  text encoder's notes) reads the cohort's own: the driver runs the same encoder over the cohort's
  notes through the same encode-once cache, keyed by the cohort's content hash
  (``sweeper.engine.stages.external_features``), and hands them over as ``extra_features[set]``;
  :func:`external_collate` swaps them in key for key;
- missing-modality protocols (``final.test_missing``), set ``miss_<name>``: the test split again,
  with modalities hidden by a seeded protocol before collation (``sweeper.data.corrupt``).

A modality the external cohort lacks is absent for every stay (never zero-filled), as is a note a
stay lacks. A set none of whose stays has a modality of the cell is not scored, nor an external
cohort of a cell that reads embeddings the driver cannot compute for another cohort (a pre-training
stage's, or experts fitted on the training split): its leaderboard columns stay empty. The training
cohort's embeddings are never looked up by another cohort's stay ids (two cohorts may share ids).
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
            source, used = session.dataset(name), external_collate(collate, config, name)
            if used is None:
                continue
        else:
            protocol = Protocol(str(what["drop"]), float(what["rate"]), int(what.get("seed", 0)))
            source, used = session.dataset("test"), CorruptedCollate(collate, protocol)
        try:
            data = collate_all(source.iter_batches(batch_size=1024, batch_format="numpy"), used)
        except StaysError:  # no stay with a modality of the cell, or no embedding of these stays
            continue
        out[name] = (data, score(data))
    return out


def external_collate(collate, config: dict, name: str):
    """``collate`` for external set ``name``: each precomputed feature the cell reads replaced by the
    cohort's own under the same key (``config["extra_features"][name]``); ``collate`` itself when
    the cell reads none, None when the driver gave the cohort not all of them."""
    import copy

    import ray

    if not collate.features:
        return collate
    own = (config.get("extra_features") or {}).get(name) or {}
    if set(collate.features) - set(own):
        return None
    features = {}
    for key, (_, matrix) in collate.features.items():
        value = own[key]
        ids, theirs = ray.get(value) if isinstance(value, ray.ObjectRef) else value
        if theirs.shape[1:] != matrix.shape[1:]:
            if len(ids):  # not the same extractor's output: never fed to the model
                return None
            theirs = np.zeros((0, *matrix.shape[1:]), dtype=np.float32)  # no stay of the cohort has it
        features[key] = (ids, theirs)
    used = copy.copy(collate)
    used.features = features
    return used
