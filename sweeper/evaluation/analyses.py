"""The PiCME paper's post-hoc analyses (docs/methods.md, "PiCME", analyses) as pure functions.

- ``top_k_alignment``: how often a stay's modality embedding has another modality of the same stay
  among its k cosine nearest neighbours (the paper's top-5 alignment).
- ``block_attributions``: Integrated Gradients (captum) on a head's concatenated embedding input,
  summed |attribution| per modality block, normalised to sum 1 (to compare against the λ weights).
- ``subgroup_auroc``: AUROC per gender, ethnicity and age-band subgroup (the paper's Table 3).
- ``phenotype_group_auroc``: phenotype AUROC averaged within the acute / chronic / mixed groups.

AUROC is sklearn's ``roc_auc_score`` per label, on the stays whose label is known (not NaN),
macro-averaged over the labels that have both classes, NaN when none does: the same convention as
``sweeper.evaluation.metrics``, but scores may be logits or any other ranking, not only probabilities.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from sweeper.data.schema import PHENOTYPE_GROUPS, PHENOTYPES
from sweeper.errors import SweeperError

GENDERS: dict[str, str] = {"F": "Female", "M": "Male"}
ETHNICITIES: tuple[str, ...] = ("Asian", "Black / African American", "Hispanic / Latino", "White", "Unknown")
# MIMIC ethnicity strings start with their broad group ("ASIAN - CHINESE", "BLACK/CAPE VERDEAN", ...).
_ETHNICITY_PREFIXES: dict[str, str] = {
    "ASIAN": "Asian", "BLACK": "Black / African American", "HISPANIC": "Hispanic / Latino", "WHITE": "White",
}
AGE_BANDS: tuple[str, ...] = ("Under 25", "25–34", "35–44", "45–54", "55–64", "65–74", "75–84", "85+")
_AGE_EDGES = (-np.inf, 25, 35, 45, 55, 65, 75, 85, np.inf)  # each band is [lower, upper) in years


class AnalysisError(SweeperError, ValueError):
    """Inputs an analysis cannot use (mismatched shapes, missing columns, bad block layout)."""


def top_k_alignment(embeddings: dict[str, np.ndarray], k: int = 5) -> dict:
    """Fraction of modality embeddings with a same-stay neighbour among their k nearest (cosine).

    ``embeddings``: modality -> ``[N, d]``; row n of every modality is stay n. All N·M embeddings
    are pooled; an embedding is aligned when at least one of its k nearest neighbours in the pool
    (itself excluded) is another modality of the same stay. Returns
    ``{"overall": fraction over all N·M, "per_modality": {modality: fraction over its N}}``.
    """
    modalities = list(embeddings)
    arrays = [np.asarray(embeddings[m], dtype=float) for m in modalities]
    if not arrays or any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays):
        shapes = {m: a.shape for m, a in zip(modalities, arrays)}
        raise AnalysisError(f"embeddings must be non-empty and all [N, d] of one shape; got {shapes}")
    n_stays = arrays[0].shape[0]
    pooled = np.vstack(arrays)
    if not 1 <= k < len(pooled):
        raise AnalysisError(f"k={k} must be between 1 and the pooled count minus one ({len(pooled) - 1})")
    stay_of = np.tile(np.arange(n_stays), len(modalities))
    # kneighbors() without X leaves each point out of its own neighbours, duplicates handled.
    index = NearestNeighbors(metric="cosine").fit(pooled)
    neighbours = index.kneighbors(n_neighbors=k, return_distance=False)
    aligned = (stay_of[neighbours] == stay_of[:, None]).any(axis=1).reshape(len(modalities), n_stays)
    return {
        "overall": float(aligned.mean()),
        "per_modality": {m: float(row.mean()) for m, row in zip(modalities, aligned)},
    }


def block_attributions(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    blocks: list[str],
    block_size: int,
    target: int | None = None,
    n_steps: int = 32,
    baseline: torch.Tensor | None = None,
) -> dict[str, float]:
    """Share of Integrated-Gradients attribution per modality block, summing to 1.

    ``forward`` maps ``[N, D]`` to logits ``[N, C]``, ``[N, 1]`` or ``[N]`` (put a module in eval
    mode first, or dropout makes the path integral noisy); ``inputs`` is ``[N, D]`` with
    ``D = block_size * len(blocks)``, block b in columns ``[b·block_size, (b+1)·block_size)``.
    IG uses a zero baseline (a zero embedding) unless ``baseline`` ([D] or [N, D]) is given;
    |attribution| is summed over stays and block columns.
    ``target`` picks the output column when C > 1. All shares are NaN when every attribution is 0.
    """
    if inputs.ndim != 2 or inputs.shape[1] != block_size * len(blocks):
        raise AnalysisError(
            f"inputs {tuple(inputs.shape)} must be [N, block_size * len(blocks)] = "
            f"[N, {block_size * len(blocks)}]; block b fills columns [b * block_size, (b + 1) * block_size)"
        )
    inputs = inputs.detach() if inputs.is_floating_point() else inputs.detach().float()
    with torch.no_grad():
        output_shape = tuple(forward(inputs).shape)
    target = _checked_target(output_shape, target)
    attributions = IntegratedGradients(forward).attribute(
        inputs, baselines=torch.zeros_like(inputs) if baseline is None else baseline.detach().expand_as(inputs).to(inputs), target=target, n_steps=n_steps
    )
    per_column = attributions.detach().abs().sum(dim=0).double()
    per_block = per_column.reshape(len(blocks), block_size).sum(dim=1)
    total = float(per_block.sum())
    shares = (per_block / total).tolist() if total > 0 else [float("nan")] * len(blocks)
    return dict(zip(blocks, shares))


def _checked_target(output_shape: tuple[int, ...], target: int | None) -> int | None:
    """The captum ``target`` for a head's output shape: None for ``[N]``, 0 for ``[N, 1]``."""
    if len(output_shape) == 1:
        if target is not None:
            raise AnalysisError(f"the head's output is [N] (one output); target must be None, not {target}")
        return None
    if len(output_shape) != 2:
        raise AnalysisError(f"the head's output {output_shape} must be [N] or [N, C]")
    n_outputs = output_shape[1]
    if target is None:
        if n_outputs != 1:
            raise AnalysisError(f"the head has {n_outputs} outputs; pass target= the column to explain")
        return 0
    if not 0 <= target < n_outputs:
        raise AnalysisError(f"target={target} is outside the head's {n_outputs} outputs")
    return target


def subgroup_auroc(labels: np.ndarray, scores: np.ndarray, demographics: pd.DataFrame) -> pd.DataFrame:
    """AUROC per demographic subgroup (Table 3): columns group, subgroup, n, n_positive, auroc.

    ``labels`` / ``scores``: ``[N]`` (binary) or ``[N, K]`` (multi-label: macro AUROC over the
    labels with both classes in the subgroup); ``demographics`` has ``demo_gender``,
    ``demo_ethnicity``, ``demo_age`` for the same N stays, matched by position.
    Groups, in this order:
    - Gender: "F" -> Female, "M" -> Male; null or other values are left out.
    - Ethnicity: MIMIC strings starting with ASIAN -> Asian, BLACK -> Black / African American,
      HISPANIC -> Hispanic / Latino, WHITE -> White (so "WHITE - RUSSIAN" is White); everything
      else (null, OTHER, UNKNOWN, UNABLE TO OBTAIN, AMERICAN INDIAN/ALASKA NATIVE, NATIVE HAWAIIAN OR
      OTHER PACIFIC ISLANDER, ...) -> Unknown.
    - Age Group: bands [lower, upper) in years: Under 25, 25–34, ..., 75–84, 85+; NaN age left out.
    Every listed subgroup gets a row; ``n`` counts its stays, ``n_positive`` its positive label
    entries (positive stays when binary); ``auroc`` is NaN when no label has both classes.
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    missing = {"demo_gender", "demo_ethnicity", "demo_age"} - set(demographics.columns)
    if missing:
        raise AnalysisError(f"demographics lacks column(s) {sorted(missing)}")
    if labels.shape != scores.shape or labels.shape[0] != len(demographics):
        raise AnalysisError(
            f"labels {labels.shape}, scores {scores.shape} and demographics ({len(demographics)} rows) must match"
        )
    gender = demographics["demo_gender"].map(lambda g: GENDERS.get(str(g).strip().upper()) if pd.notna(g) else None)
    ethnicity = demographics["demo_ethnicity"].map(ethnicity_group)
    age = pd.cut(demographics["demo_age"].astype(float), _AGE_EDGES, right=False, labels=list(AGE_BANDS))
    groups = {  # group -> (each stay's subgroup, None when left out; the subgroups in table order)
        "Gender": (gender.to_numpy(dtype=object), tuple(GENDERS.values())),
        "Ethnicity": (ethnicity.to_numpy(dtype=object), ETHNICITIES),
        "Age Group": (age.astype(object).to_numpy(dtype=object), AGE_BANDS),
    }
    rows = []
    for group, (assigned, subgroups) in groups.items():
        for subgroup in subgroups:
            members = assigned == subgroup
            n_positive = int((labels[members] == 1).sum())
            auroc = _macro_auroc(labels[members], scores[members])
            rows.append(
                dict(group=group, subgroup=subgroup, n=int(members.sum()), n_positive=n_positive, auroc=auroc)
            )
    return pd.DataFrame(rows, columns=["group", "subgroup", "n", "n_positive", "auroc"])


def ethnicity_group(ethnicity: object) -> str:
    """The Table 3 ethnicity group of one MIMIC ethnicity string (see ``subgroup_auroc``)."""
    if not isinstance(ethnicity, str):
        return "Unknown"
    normalised = ethnicity.strip().upper()
    return next((g for prefix, g in _ETHNICITY_PREFIXES.items() if normalised.startswith(prefix)), "Unknown")


def phenotype_group_auroc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Mean per-phenotype AUROC within each of "acute", "chronic", "mixed" (Harutyunyan et al. Table 2).

    ``labels`` / ``scores``: ``[N, 25]`` in ``PHENOTYPES`` order. A phenotype without both classes
    (after dropping NaN labels) is skipped; a group with no scorable phenotype is NaN.
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    if labels.shape != scores.shape or labels.ndim != 2 or labels.shape[1] != len(PHENOTYPES):
        raise AnalysisError(f"labels {labels.shape} and scores {scores.shape} must be [N, {len(PHENOTYPES)}]")
    group_of = np.array([PHENOTYPE_GROUPS[name] for name in PHENOTYPES])
    return {
        group: _macro_auroc(labels[:, group_of == group], scores[:, group_of == group])
        for group in ("acute", "chronic", "mixed")
    }


def _macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the label columns (one when ``[n]``) that have both classes; NaN if none."""
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
    per_label = [_label_auroc(labels[:, j], scores[:, j]) for j in range(labels.shape[1])]
    defined = [v for v in per_label if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def _label_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """sklearn AUROC of one label on its known (non-NaN) entries; NaN unless both classes occur."""
    known = ~np.isnan(labels)
    if np.unique(labels[known]).size < 2:
        return float("nan")
    return float(roc_auc_score(labels[known], scores[known]))
