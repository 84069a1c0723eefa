"""How well pre-trained per-modality embeddings are aligned, as pure functions any family's
pre-training analyses can use (docs/methods.md, "MGA", analyses).

- ``retrieval_at_k``: cross-modal retrieval, R@K for every ordered modality pair beside its random
  baseline and the improvement factor;
- ``silhouette_by_modality``: the silhouette of the embeddings labelled by their modality (low:
  the modalities are mixed in one space, which is what alignment aims at).

Both take ``embeddings`` (modality → ``[N, d]``, row n of every modality is stay n) and ``present``
(``[N, M]`` bool, columns in the order of ``embeddings``); absent rows are never queried, never
candidates and never clustered. Similarity is cosine.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_samples

KS = (1, 5, 10)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def retrieval_at_k(embeddings: dict[str, np.ndarray], present: np.ndarray, ks=KS) -> list[dict]:
    """One row per ordered pair (query modality a, candidate modality b), a ≠ b.

    Queries: the stays with both a and b; candidates: modality b of every stay that has it. A query
    is a hit at K when its own stay's b embedding is among its K most similar candidates (ties
    counted against it: rank = number of candidates at least as similar, itself excluded). Random
    baseline at K: K / candidates; improvement: R@K / baseline. Rows: ``query``, ``candidate``,
    ``n_queries``, ``n_candidates``, and per K ``r@K``, ``random@K``, ``improvement@K``.
    """
    modalities = list(embeddings)
    present = np.asarray(present, dtype=bool)
    rows = []
    for i, a in enumerate(modalities):
        for j, b in enumerate(modalities):
            if i == j:
                continue
            candidates = np.flatnonzero(present[:, j])
            queries = np.flatnonzero(present[:, i] & present[:, j])
            if len(queries) == 0 or len(candidates) < 2:
                continue
            sims = _unit(embeddings[a][queries]) @ _unit(embeddings[b][candidates]).T     # [q, c]
            own = np.searchsorted(candidates, queries)                                      # column of the true match
            true = sims[np.arange(len(queries)), own]
            rank = (sims >= true[:, None]).sum(axis=1) - 1                                  # others at least as similar
            row = {"query": a, "candidate": b, "n_queries": len(queries), "n_candidates": len(candidates)}
            for k in ks:
                hit, baseline = float((rank < k).mean()), min(k, len(candidates)) / len(candidates)
                row.update({f"r@{k}": hit, f"random@{k}": baseline, f"improvement@{k}": hit / baseline})
            rows.append(row)
    return rows


def silhouette_by_modality(embeddings: dict[str, np.ndarray], present: np.ndarray) -> dict:
    """``{"overall": mean silhouette, "per_modality": {m: mean over m's points}}`` of the present
    embeddings, each labelled by its modality (cosine distance); NaN when fewer than two modalities
    have points."""
    modalities = list(embeddings)
    present = np.asarray(present, dtype=bool)
    points = [np.asarray(embeddings[m])[present[:, j]] for j, m in enumerate(modalities)]
    labels = np.concatenate([np.full(len(p), j) for j, p in enumerate(points)])
    if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
        return {"overall": float("nan"), "per_modality": {m: float("nan") for m in modalities}}
    scores = silhouette_samples(np.concatenate(points), labels, metric="cosine")
    return {"overall": float(scores.mean()),
            "per_modality": {m: float(scores[labels == j].mean()) if (labels == j).any() else float("nan") for j, m in enumerate(modalities)}}
