"""The PiCME pre-training's analyses (paper §4): the final λ of every pre-training run, the top-5
alignment of its frozen embeddings, cross-modal retrieval on the stays pre-training never trained
on (R@1/5/10 per ordered pair beside its random baseline, ``trainables.alignment``, as MGA's), and
each cell's Integrated-Gradients share beside the λ of its subset. ``picme.pretrain`` declares
them; the engine writes them to ``<run>/analyses/``.

The pooled top-5 alignment asks more than retrieval: a stay's other view must beat the other stays'
embeddings of its *own* modality too, so a modality gap alone drives it to 0 while retrieval (the
partner among the other modality's stays) still works."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.evaluation.analyses import top_k_alignment
from trainables.alignment import KS, retrieval_at_k
from trainables.registry import Analysis

ALIGNMENT_STAYS = 2000
ALIGNED_PREFIX = "aligned_"
"""``embeddings.npz`` may hold ``aligned_<modality>``: the pre-training's projection-head output (the
space its loss aligns, what these analyses measure) beside ``<modality>``, the encoder's output
(what dependent trials read)."""


def pretrain_analyses(artifacts: list[tuple[str, dict, Path]], attributions: pd.DataFrame) -> list[Analysis]:
    """λ and alignment per artifact; the attribution table with a ``lambda`` column added."""
    lambdas, alignments, retrieval = [], [], []
    for key, entry, folder in artifacts:
        subset = "+".join(entry["subset"])
        lam = json.loads((folder / "lambda.json").read_text())
        lambdas += [{"subset": subset, "modality": m, "lambda": v, "artifact": key} for m, v in lam["final"].items()]
        with np.load(folder / "embeddings.npz", allow_pickle=False) as saved:
            if "present" not in saved.files:
                continue
            row = _alignment(saved, entry["subset"])
            retrieval += [{"subset": subset, "artifact": key, **r} for r in _held_out_retrieval(saved, entry["subset"])]
        if row is not None:
            alignments.append({"subset": subset, **row})
    out = []
    lambdas = pd.DataFrame(lambdas)
    if len(attributions) and len(lambdas):
        lam = {(r.subset, r.modality): r["lambda"] for _, r in lambdas.iterrows()}
        beside = attributions.assign(**{"lambda": [lam.get((s, m), np.nan) for s, m in zip(attributions["subset"], attributions["modality"])]})
        out.append(Analysis("attributions", "Integrated-Gradients share per modality (mean over seeds)", beside,
                            beside.pivot_table(index=["task", "method", "subset"], columns="modality", values="ig_share")))
    if len(lambdas):
        out.append(Analysis("lambda", "Final λ of each pre-training run", lambdas, lambdas.pivot_table(index="subset", columns="modality", values="lambda")))
    if alignments:
        alignment = pd.DataFrame(alignments)
        columns = [c for c in ("subset", "n_stays", "top5_alignment", "top5_chance", "n_held_out", "top5_held_out", "top5_held_out_chance") if c in alignment]
        out.append(Analysis("alignment", "Top-5 alignment of the pre-trained embeddings (all stays, and the val + test stays pre-training never trained on)", alignment, alignment[columns]))
    if retrieval:
        table = pd.DataFrame(retrieval)
        table["pair"] = table["query"] + " → " + table["candidate"]
        columns = ["subset", "pair", "n_candidates"] + [c for k in KS for c in (f"r@{k}", f"random@{k}", f"improvement@{k}")]
        out.append(Analysis("picme_retrieval", "PiCME cross-modal retrieval on the val + test stays: R@K, random baseline, improvement factor",
                            table, table[columns]))
    return out


def _held_out_retrieval(saved, subset: list[str]) -> list[dict]:
    """R@K rows (``retrieval_at_k``) over the val + test stays in the space the loss aligned; none
    when the artifact records no splits."""
    if "split" not in saved.files:
        return []
    rows = np.flatnonzero(np.isin(saved["split"], ["val", "test"]))[:ALIGNMENT_STAYS]
    space = {m: f"{ALIGNED_PREFIX}{m}" if f"{ALIGNED_PREFIX}{m}" in saved.files else m for m in subset}
    return retrieval_at_k({m: saved[space[m]][rows] for m in subset}, saved["present"][rows].astype(bool))


def alignment_chance(n_stays: int, n_modalities: int, k: int = 5) -> float:
    """Top-k alignment of random embeddings: the chance that k neighbours drawn from the other
    N·M − 1 embeddings include one of the stay's M − 1 other views."""
    pool, hits = n_stays * n_modalities - 1, n_modalities - 1
    miss = 1.0
    for j in range(min(k, pool - hits + 1)):
        miss *= (pool - hits - j) / (pool - j)
    return 1.0 - miss


def _alignment(saved, subset: list[str]) -> dict | None:
    """Top-5 alignment over the complete stays (at most ``ALIGNMENT_STAYS``), beside its chance; and
    over the complete val + test stays alone when the artifact records splits: the training pairs
    can be memorised, so only the held-out figure says the modalities align."""
    complete = np.flatnonzero(saved["present"].astype(bool).all(axis=1))[:ALIGNMENT_STAYS]
    if len(complete) < 7:
        return None
    space = {m: f"{ALIGNED_PREFIX}{m}" if f"{ALIGNED_PREFIX}{m}" in saved.files else m for m in subset}  # the space the loss aligned
    score = top_k_alignment({m: saved[space[m]][complete] for m in subset}, k=5)
    row = {"n_stays": len(complete), "top5_alignment": score["overall"], "top5_chance": alignment_chance(len(complete), len(subset)),
           **{f"top5_{m}": v for m, v in score["per_modality"].items()}}
    if "split" in saved.files:
        held = complete[np.isin(saved["split"][complete], ["val", "test"])]
        if len(held) >= 7:
            row.update(n_held_out=len(held), top5_held_out=top_k_alignment({m: saved[space[m]][held] for m in subset}, k=5)["overall"],
                       top5_held_out_chance=alignment_chance(len(held), len(subset)))
    return row
