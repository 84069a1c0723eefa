"""MedMIX's router analysis: which expert wins, per modality and per subgroup.

``router_summaries`` runs the trained model on the test stays and returns the mean intra-modality
weight α of each expert (over the stays that have the modality) and the mean inter-modality weight
β of each modality, overall and per gender where the subset reads demographics; the loop reports
them with the final result. ``router_analyses`` turns the run's summaries (mean over seeds) into
``analyses/router_experts.csv`` and ``analyses/router_modalities.csv``.

A ``single_expert: best`` model also reports its validation probe (``trainables.medmix.probe``):
``probe|modality|expert|metric`` (every candidate's validation score) and
``chosen|modality|expert`` (1 for the expert it kept, 0 for the others), which become
``analyses/single_expert_probe.csv``.
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


def probe_summaries(model) -> dict[str, float]:
    """``probe|modality|expert|metric`` and ``chosen|modality|expert`` of a ``single_expert: best``
    model (read from its config: the scores were measured on validation before it was built)."""
    out = {}
    for m, scores in (getattr(model, "probe_scores", None) or {}).items():
        for e, score in scores.items():
            out[SEP.join(("probe", m, e, getattr(model, "probe_metric", "auroc")))] = float(score)
            out[SEP.join(("chosen", m, e))] = float(model.experts.get(m) == [e])
    return out


def router_summaries(model, data: dict, device) -> dict[str, float]:
    """``alpha|modality|expert|group`` and ``beta|modality|group`` means (nothing for the
    baselines), and the validation probe's scores and choice where the model has them."""
    out = probe_summaries(model)
    if getattr(model, "fusion", None) != "medmix":
        return out
    alpha, beta = router_weights(model, data, device)
    groups = {"all": np.ones(len(beta), bool)}
    if "group:gender" in data:
        genders = np.asarray(data["group:gender"]).astype(str)
        groups.update({f"gender={g}": genders == g for g in sorted(set(genders)) if g != "?"})
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
    parts = table["name"].str.split(SEP, expand=True).reindex(columns=range(4))
    named = table.assign(kind=parts[0], modality=parts[1], part2=parts[2], part3=parts[3])  # filter after assigning: an
    # empty selection would otherwise take the assigned columns' rows
    experts = named[named["kind"] == "alpha"].rename(columns={"part2": "expert", "part3": "group", "value": "alpha"})
    probes = named[named["kind"] == "probe"].rename(columns={"part2": "expert", "part3": "metric", "value": "val_score"})
    modalities = named[named["kind"] == "beta"].rename(columns={"part2": "group", "value": "beta"})
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
    if len(probes):
        chosen = named[named["kind"] == "chosen"].rename(columns={"part2": "expert", "value": "chosen"})
        probes = probes.merge(chosen[keys + ["modality", "expert", "chosen"]], on=keys + ["modality", "expert"], how="left")
        probes = probes[keys + ["modality", "expert", "metric", "val_score", "chosen", "n_seeds"]].reset_index(drop=True)
        kept = probes[probes["chosen"] > 0.5]
        summary = kept.assign(kept=kept["expert"] + " (" + kept["val_score"].map("{:.3f}".format) + ")").pivot_table(
            index=["task", "method", "subset"], columns="modality", values="kept", aggfunc="first")
        out.append(Analysis("single_expert_probe", "Best single expert: per modality, the expert whose probe (logistic regression on its frozen "
                            "features, fitted on train) scores best on validation, with that score; every candidate's in the CSV", probes, summary))
    return out
