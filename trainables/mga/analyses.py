"""The MGA pre-training's analyses (the paper's §4.1), on the test stays of every ``mga.pretrain``
artifact (stays the pre-training never trained on): cross-modal retrieval R@1/5/10 for every
ordered modality pair beside the random baseline and the improvement factor, and the silhouette of
the embeddings by modality. The engine writes them to ``<run>/analyses/`` and ``leaderboard.md``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.alignment import KS, retrieval_at_k, silhouette_by_modality
from trainables.registry import Analysis

EVAL_STAYS = 1000  # test stays per artifact (the first by stay id): R@K compares all pairs, silhouette is quadratic
EVAL_SPLIT = "test"


def artifact_embeddings(folder: Path, split: str = EVAL_SPLIT, limit: int = EVAL_STAYS) -> tuple[list[str], dict, np.ndarray]:
    """(modalities, modality → [n, d], present [n, M]) of up to ``limit`` stays of ``split``."""
    modalities = json.loads((Path(folder) / "history.json").read_text())["modalities"]
    with np.load(Path(folder) / "embeddings.npz", allow_pickle=False) as saved:
        rows = np.flatnonzero(saved["split"] == split)[:limit]
        return modalities, {m: saved[m][rows] for m in modalities}, saved["present"][rows].astype(bool)


def pretrain_analyses(artifacts: list[tuple[str, dict, Path]], attributions: pd.DataFrame) -> list[Analysis]:
    """``mga_retrieval`` and ``mga_silhouette``, one block of rows per artifact."""
    retrieval, silhouette = [], []
    for key, entry, folder in artifacts:
        subset = "+".join(entry["subset"])
        modalities, embeddings, present = artifact_embeddings(folder)
        retrieval += [{"subset": subset, "artifact": key, **row} for row in retrieval_at_k(embeddings, present)]
        score = silhouette_by_modality(embeddings, present)
        silhouette.append({"subset": subset, "artifact": key, "n_stays": len(present), "silhouette": score["overall"],
                           **{f"silhouette_{m}": v for m, v in score["per_modality"].items()}})
    out = []
    if retrieval:
        table = pd.DataFrame(retrieval)
        table["pair"] = table["query"] + " → " + table["candidate"]
        columns = ["subset", "pair", "n_candidates"] + [c for k in KS for c in (f"r@{k}", f"random@{k}", f"improvement@{k}")]
        out.append(Analysis("mga_retrieval", "MGA cross-modal retrieval on test stays: R@K, random baseline, improvement factor", table, table[columns]))
    if silhouette:
        table = pd.DataFrame(silhouette)
        out.append(Analysis("mga_silhouette", "MGA silhouette of test-stay embeddings by modality (lower: modalities mixed)", table,
                            table.drop(columns=["artifact"])))
    return out
