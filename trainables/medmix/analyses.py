"""MedMIX's router analysis: which expert wins, per modality and per subgroup.

``router_summaries`` runs the trained model on the test stays and returns the mean intra-modality
weight α of each expert (over the stays that have the modality) and the mean inter-modality weight
β of each modality, overall and per gender where the subset reads demographics; the loop reports
them with the final result. ``router_analyses`` turns the run's summaries (mean over seeds) into
``analyses/router_experts.csv`` and ``analyses/router_modalities.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.registry import Analysis

SEP = "|"


def router_weights(model, data: dict, device, batch_size: int = 512) -> tuple[dict, np.ndarray]:
    """({modality: α [N, E]}, β [N, M]) of the stays in ``data`` (eval mode, no teachers read)."""
    import torch

    model.eval()
    alphas, betas = {m: [] for m in model.modalities}, []
    with torch.no_grad():
        for start in range(0, len(data["label"]), batch_size):
            rows = slice(start, start + batch_size)
            out = model({k: (v[rows].to(device) if hasattr(v, "to") else v[rows]) for k, v in data.items()})
            for m in model.modalities:
                alphas[m].append(out["alpha"][m].float().cpu())
            betas.append(out["beta"].float().cpu())
    return {m: torch.cat(a).numpy() for m, a in alphas.items()}, torch.cat(betas).numpy()


def router_summaries(model, data: dict, device) -> dict[str, float]:
    """``alpha|modality|expert|group`` and ``beta|modality|group`` means; nothing for the baselines."""
    if getattr(model, "fusion", None) != "medmix":
        return {}
    alpha, beta = router_weights(model, data, device)
    groups = {"all": np.ones(len(beta), bool)}
    if "group:gender" in data:
        genders = np.asarray(data["group:gender"]).astype(str)
        groups.update({f"gender={g}": genders == g for g in sorted(set(genders)) if g != "?"})
    out = {}
    for group, rows in groups.items():
        for j, m in enumerate(model.modalities):
            has = rows & (alpha[m].sum(axis=1) > 0)
            if has.any():
                out.update({SEP.join(("alpha", m, e, group)): float(alpha[m][has, k].mean()) for k, e in enumerate(model.experts[m])})
                out[SEP.join(("beta", m, group))] = float(beta[rows, j].mean())
    return out


def router_analyses(table: pd.DataFrame) -> list[Analysis]:
    """``table``: cell_id, task, method, subset, name, value (mean over seeds), n_seeds."""
    if not len(table):
        return []
    parts = table["name"].str.split(SEP, expand=True)
    experts = table[parts[0] == "alpha"].assign(modality=parts[1], expert=parts[2], group=parts[3]).rename(columns={"value": "alpha"})
    modalities = table[parts[0] == "beta"].assign(modality=parts[1], group=parts[2]).rename(columns={"value": "beta"})
    keys = ["cell_id", "task", "method", "subset"]
    out = []
    if len(experts):
        experts = experts[keys + ["modality", "group", "expert", "alpha", "n_seeds"]].reset_index(drop=True)
        best = experts.loc[experts.groupby(keys + ["modality", "group"])["alpha"].idxmax()]
        summary = best.assign(winner=best["expert"] + " (" + best["alpha"].map("{:.2f}".format) + ")").pivot_table(
            index=["task", "method", "subset", "group"], columns="modality", values="winner", aggfunc="first")
        out.append(Analysis("router_experts", "MedMIX router: the expert with the most weight per modality and subgroup (mean α over test stays and seeds)", experts, summary))
    if len(modalities):
        modalities = modalities[keys + ["group", "modality", "beta", "n_seeds"]].reset_index(drop=True)
        out.append(Analysis("router_modalities", "MedMIX scorer: mean weight β of each modality (test stays, mean over seeds)", modalities,
                            modalities.pivot_table(index=["task", "method", "subset", "group"], columns="modality", values="beta")))
    return out
