"""The PiCME pre-training's analyses (paper §4): the final λ of every pre-training run, the top-5
alignment of its frozen embeddings, and each cell's Integrated-Gradients share beside the λ of its
subset. ``picme.pretrain`` declares them; the engine writes them to ``<run>/analyses/``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.evaluation.analyses import top_k_alignment
from trainables.registry import Analysis

ALIGNMENT_STAYS = 2000


def pretrain_analyses(artifacts: list[tuple[str, dict, Path]], attributions: pd.DataFrame) -> list[Analysis]:
    """λ and alignment per artifact; the attribution table with a ``lambda`` column added."""
    lambdas, alignments = [], []
    for key, entry, folder in artifacts:
        subset = "+".join(entry["subset"])
        lam = json.loads((folder / "lambda.json").read_text())
        lambdas += [{"subset": subset, "modality": m, "lambda": v, "artifact": key} for m, v in lam["final"].items()]
        with np.load(folder / "embeddings.npz", allow_pickle=False) as saved:
            if "present" not in saved.files:
                continue
            complete = np.flatnonzero(saved["present"].astype(bool).all(axis=1))[:ALIGNMENT_STAYS]
            if len(complete) < 7:
                continue
            score = top_k_alignment({m: saved[m][complete] for m in entry["subset"]}, k=5)
        alignments.append({"subset": subset, "n_stays": len(complete), "top5_alignment": score["overall"],
                           **{f"top5_{m}": v for m, v in score["per_modality"].items()}})
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
        out.append(Analysis("alignment", "Top-5 alignment of the pre-trained embeddings", alignment, alignment[["subset", "n_stays", "top5_alignment"]]))
    return out
