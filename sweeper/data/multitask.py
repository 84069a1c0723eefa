"""The ``multitask`` task: several binary outcomes per stay, each 0, 1 or unknown (NaN).

Its labels, in order: in-hospital mortality (``ihm``, from ``label_ihm``), length of stay over 7
days (``los_gt_7d``, from ``label_los_hours`` > 168), then the source's phenotypes
(``label_phenotypes``; none for PhysioNet 2012). A label is unknown where the stays have none (a
null or NaN, e.g. a PhysioNet 2012 stay whose length of stay is -1) and where it is hidden:
``hidden`` (the spec's ``hidden_labels`` axis) is the share of (stay, label) entries turned
unknown, drawn from a hash of the stay id, the label and ``seed``, so every method, trial, split
and process of a run hides the same entries. Unknown entries are left out of losses and metrics.
"""
from __future__ import annotations

import hashlib

import numpy as np

from sweeper.data.schema import TASK_LABELS, Manifest, StaysError

MULTITASK = "multitask"
LOS_THRESHOLD_HOURS = 7 * 24.0
BASE_LABELS = ("ihm", "los_gt_7d")


def label_names(manifest: Manifest) -> list[str]:
    """Names of the multitask labels, in column order."""
    return [*BASE_LABELS, *manifest.phenotypes]


def task_columns(manifest: Manifest, task: str) -> list[str]:
    """The label columns a task reads."""
    if task != MULTITASK:
        return [TASK_LABELS[task]]
    return ["label_ihm", "label_los_hours"] + (["label_phenotypes"] if manifest.phenotypes else [])


def hidden_entries(stay_ids, n_labels: int, share: float, seed: int = 0) -> np.ndarray:
    """``[N, n_labels]`` bool: which entries to hide, each with probability ``share``, fixed by
    (seed, stay id, label index) alone."""
    if not 0.0 <= share < 1.0:
        raise StaysError(f"hidden_labels: {share} must be in [0, 1)")
    out = np.zeros((len(stay_ids), n_labels), bool)
    if share <= 0:
        return out
    for i, stay in enumerate(stay_ids):
        digest = hashlib.blake2b(f"{seed}:{stay}".encode(), digest_size=8).digest()
        out[i] = np.random.default_rng(int.from_bytes(digest, "little")).random(n_labels) < share
    return out


def multitask_labels(batch: dict, manifest: Manifest, hidden: float = 0.0, seed: int = 0) -> np.ndarray:
    """``[N, K]`` float32 of 0, 1 and NaN (unknown) for a numpy batch of stays."""
    n = len(batch["stay_id"])
    out = np.full((n, len(label_names(manifest))), np.nan, np.float32)
    out[:, 0] = _floats(batch["label_ihm"])
    out[:, 1] = los_over_7d(batch["label_los_hours"])
    if manifest.phenotypes:
        width = len(manifest.phenotypes)
        for i, row in enumerate(batch["label_phenotypes"]):
            if row is not None and len(row) == width:
                out[i, 2:] = np.asarray(row, np.float32)
    known = out[~np.isnan(out)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise StaysError("multitask labels: label_ihm and label_phenotypes must be 0, 1 or null")
    out[hidden_entries(np.asarray(batch["stay_id"]).astype(str), out.shape[1], hidden, seed)] = np.nan
    return out


def los_over_7d(hours) -> np.ndarray:
    """``[N]`` float32: 1 where the length of stay exceeds 7 days (168 h), 0 where it does not, NaN
    where it is unknown (null or NaN): the ``los_gt_7d`` label, alone or as a multitask column."""
    hours = _floats(hours)
    return np.where(np.isnan(hours), np.nan, (hours > LOS_THRESHOLD_HOURS).astype(np.float32)).astype(np.float32)


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float32)
