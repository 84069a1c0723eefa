"""Missing-modality protocols: seeded corruptions of which modalities a stay has.

A protocol hides modalities of stays: ``drop`` is one modality's name (hide it at ``rate``) or
``each`` (hide each modality independently at ``rate``, a Bernoulli drop). Whether a (stay,
modality) is hidden depends only on ``seed``, the stay id and the modality, never on batch order: a
uniform number is hashed from the three and the modality is hidden when it is below ``rate``, so a
higher rate hides a superset of what a lower one hides. A stay never loses its last present
modality (the one least likely hidden stays), so a corrupted test split holds the same stays as the
clean one and every method is scored on the same rows. Applied to the presence columns of a batch
before collation (:class:`CorruptedCollate`), it reaches every input kind: an absent modality is
absent everywhere a collate builds from, not only in the ``present`` mask.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from sweeper.data.schema import presence_column

EACH = "each"


@dataclasses.dataclass(frozen=True)
class Protocol:
    drop: str  # a modality's name, or ``each``
    rate: float
    seed: int = 0


def uniforms(stay_ids, modalities, seed: int) -> np.ndarray:
    """``[n, |modalities|]`` numbers in [0, 1), one per (stay, modality), from ``seed`` alone."""
    out = np.empty((len(stay_ids), len(modalities)))
    for i, stay in enumerate(np.asarray(stay_ids).astype(str)):
        for j, modality in enumerate(modalities):
            digest = hashlib.blake2b(f"{seed}\0{stay}\0{modality}".encode(), digest_size=8).digest()
            out[i, j] = int.from_bytes(digest, "little") / 2**64
    return out


def hide(present: np.ndarray, stay_ids, modalities, protocol: Protocol) -> np.ndarray:
    """``present`` (bool ``[n, |modalities|]``) with the protocol's modalities hidden."""
    present = np.asarray(present, dtype=bool)
    if protocol.rate <= 0 or (protocol.drop != EACH and protocol.drop not in modalities):
        return present.copy()
    draws = uniforms(stay_ids, modalities, protocol.seed)
    hidden = (draws < protocol.rate) & present
    if protocol.drop != EACH:
        hidden[:, [m != protocol.drop for m in modalities]] = False
    kept = present & ~hidden
    lost_all = ~kept.any(axis=1) & present.any(axis=1)
    if lost_all.any():  # give back the stay's modality least likely hidden
        keep = np.where(present, draws, -1.0).argmax(axis=1)
        kept[np.flatnonzero(lost_all), keep[lost_all]] = True
    return kept


class CorruptedCollate:
    """A collate that hides modalities by ``protocol`` before building the batch (every attribute
    else is the wrapped collate's)."""

    def __init__(self, collate, protocol: Protocol):
        self.collate, self.protocol = collate, protocol

    def __getattr__(self, name):
        return getattr(self.collate, name)

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        modalities = list(self.collate.modalities)
        present = np.stack([np.asarray(batch[presence_column(m)]).astype(bool) for m in modalities], axis=1)
        kept = hide(present, batch["stay_id"], modalities, self.protocol)
        for j, modality in enumerate(modalities):
            batch[presence_column(modality)] = kept[:, j]
        return self.collate(batch)
