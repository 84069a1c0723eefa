"""``mga.seq``'s interpretability (the MGA paper §4.3), on the test stays of every final trial.

``seq_summaries`` (reported with the final result as ``summary:<name>`` numbers):

- **Attention export**: the last layer's attention of the last [PREDICT], averaged over heads, over
  every position of ``attention_stays`` chosen test stays (those whose sequences hold the most
  modalities, then the earliest in stay-id order; the choice depends on the data only, so every seed
  of a cell exports the same stays). Stays are named by their rank in that choice, never by id.
  ``attn|<rank>|<position>|<token>|<hours>`` = the weight (token: a modality or ``[PREDICT]``).
- **Attention mass**: per test stay, the last [PREDICT]'s attention summed over each modality's event
  positions and over the [PREDICT] positions, averaged over the test stays:
  ``removal|none|attn|<token>``, beside the AUROC of the full sequences ``removal|none|auroc``.
- **Modality removal** (``removal_protocol: true``): for each modality of the subset, its events are
  removed from every test sequence (a stay left with none is a lone [PREDICT]); the same numbers
  under ``removal|<modality>|…`` and ``removal|<modality>|n_affected`` (the test stays whose
  sequence held an event of it).

``seq_analyses`` turns the run's summaries (mean over seeds) into ``analyses/mga_seq_attention.csv``
(the exported attention, position by position) and ``analyses/mga_seq_removal.csv`` (``mga_seq_scratch_*``
for ``mga.seq_scratch``) (per removed
modality: AUROC with and without it and the change; attention mass per token with and without it
and the change), summarised in ``leaderboard.md`` and ``report.html``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from trainables.registry import Analysis

SEP = "|"
PREDICT_TOKEN = "[PREDICT]"
BATCH = 64


def _rows(data: dict, rows) -> dict:
    return {k: v[rows] for k, v in data.items()}


def _trace_all(model, data: dict, device) -> dict:
    """The model's trace over ``data`` in batches: logits [N, K], per-stay attention mass per token
    (``mass`` [N, M + 1], the last column [PREDICT]) and the per-position traces (lists)."""
    import torch

    model.eval()
    logits, mass, traces = [], [], []
    kinds = len(model.modalities)
    with torch.no_grad():
        for start in range(0, len(data["present"]), BATCH):
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in _rows(data, slice(start, start + BATCH)).items()}
            out = model.trace(batch)
            attention, kind = out["attention"].float().cpu(), out["kind"].cpu()
            per = torch.stack([(attention * (kind == j)).sum(1) for j in range(kinds)] + [(attention * (kind == -1)).sum(1)], dim=1)
            logits.append(out["logits"].float().cpu())
            mass.append(per)
            traces += [(attention[i].numpy(), kind[i].numpy(), out["time"][i].float().cpu().numpy()) for i in range(len(attention))]
    return {"logits": torch.cat(logits).numpy(), "mass": torch.cat(mass).numpy(), "traces": traces}


def _auroc(labels: np.ndarray, logits: np.ndarray) -> float | None:
    """AUROC of the last [PREDICT] (binary or multi-label tasks; None for a regression label)."""
    from sweeper.evaluation.metrics import compute_metrics

    known = labels[~np.isnan(labels)]
    if not len(known) or not np.isin(known, (0.0, 1.0)).all():
        return None
    scores = 1.0 / (1.0 + np.exp(-logits))
    scores = scores[:, 0] if scores.shape[1] == 1 and labels.ndim == 1 else scores
    return float(compute_metrics(labels, scores, metrics=["auroc"])["auroc"])


def choose_stays(traces: list, k: int) -> list[int]:
    """The ``k`` stays whose sequences hold the most modalities (ties: the earliest)."""
    distinct = [len({int(x) for x in kind if x >= 0}) for _, kind, _ in traces]
    return sorted(range(len(traces)), key=lambda i: (-distinct[i], i))[:k]


def seq_summaries(model, data: dict, device) -> dict[str, float]:
    labels = data["label"].numpy()
    tokens = list(model.modalities) + [PREDICT_TOKEN]
    out: dict[str, float] = {}
    full = _trace_all(model, data, device)
    for rank, i in enumerate(choose_stays(full["traces"], model.attention_stays)):
        attention, kind, time = full["traces"][i]
        for position in np.flatnonzero(kind != -2):
            token = tokens[int(kind[position])] if kind[position] >= 0 else PREDICT_TOKEN
            out[SEP.join(("attn", str(rank), str(int(position)), token, f"{float(time[position]):.2f}"))] = float(attention[position])
    conditions = [("none", None)] + ([(m, j) for j, m in enumerate(model.modalities)] if model.removal_protocol else [])
    present = data["present"]
    for name, j in conditions:
        if j is None:
            traced = full
        else:
            removed = present.clone()
            removed[:, j] = False
            traced = _trace_all(model, {**data, "present": removed}, device)
            had = sum(bool((kind == j).any()) for _, kind, _ in full["traces"])  # stays whose sequence held one of its events
            out[SEP.join(("removal", name, "n_affected"))] = float(had)
        auroc = _auroc(labels, traced["logits"])
        if auroc is not None:
            out[SEP.join(("removal", name, "auroc"))] = auroc
        for t, token in enumerate(tokens):
            out[SEP.join(("removal", name, "attn", token))] = float(traced["mass"][:, t].mean())
    return out


def label(prefix: str) -> str:
    return "MGA sequential decoder" + (" (encoders from scratch)" if prefix.endswith("scratch") else "")


def seq_analyses(table: pd.DataFrame, prefix: str = "mga_seq") -> list[Analysis]:
    """``table``: cell_id, task, method, subset, name, value (mean over seeds), n_seeds; the tables are
    ``<prefix>_attention`` and ``<prefix>_removal`` (each trainable its own: the engine hands each
    one its own cells' summaries)."""
    if not len(table):
        return []
    keys = ["cell_id", "task", "method", "subset"]
    parts = table["name"].str.split(SEP, expand=True).reindex(columns=range(5))
    out = []
    attn = table[parts[0] == "attn"]
    if len(attn):
        p = parts[parts[0] == "attn"]
        attn = attn.assign(stay=p[1].astype(int), position=p[2].astype(int), token=p[3], hours=p[4].astype(float)).rename(columns={"value": "attention"})
        attn = attn[keys + ["stay", "position", "token", "hours", "attention", "n_seeds"]].sort_values(keys + ["stay", "position"]).reset_index(drop=True)
        summary = attn.pivot_table(index=["task", "method", "subset", "stay"], columns="token", values="attention", aggfunc="sum")
        out.append(Analysis(f"{prefix}_attention", f"{label(prefix)}: last-layer attention of the last [PREDICT] (head mean) on chosen "
                            "test stays, summed per token kind (mga_seq_attention.csv: position by position)", attn, summary))
    removal = table[parts[0] == "removal"]
    if len(removal):
        p = parts[parts[0] == "removal"]
        removal = removal.assign(condition=p[1], what=p[2], token=p[3])
        auroc = removal[removal["what"] == "auroc"].set_index(keys + ["condition"])["value"]
        affected = removal[removal["what"] == "n_affected"].set_index(keys + ["condition"])["value"]
        mass = removal[removal["what"] == "attn"].set_index(keys + ["condition", "token"])["value"]
        rows = []
        for (cell, task, method, subset, condition, token), value in mass.items():
            base = (cell, task, method, subset)
            full_mass = mass.get(base + ("none", token), np.nan)
            full_auroc, cond_auroc = auroc.get(base + ("none",), np.nan), auroc.get(base + (condition,), np.nan)
            rows.append({
                "cell_id": cell, "task": task, "method": method, "subset": subset, "removed": condition, "token": token,
                "n_affected": affected.get(base + (condition,), np.nan), "auroc_full": full_auroc, "auroc_removed": cond_auroc,
                "delta_auroc": cond_auroc - full_auroc, "attention_full": full_mass, "attention_removed": value, "delta_attention": value - full_mass,
            })
        frame = pd.DataFrame(rows)
        shown = frame[frame["removed"] != "none"]
        if len(shown):
            summary = shown.pivot_table(index=["task", "method", "subset", "removed"], columns="token", values="delta_attention")
            summary.columns = [f"Δ attention {c}" for c in summary.columns]
            deltas = shown.groupby(["task", "method", "subset", "removed"])[["auroc_full", "auroc_removed", "delta_auroc"]].first()
            summary = deltas.join(summary)
            title = f"{label(prefix)}, modality removal (§4.3): test AUROC and the last [PREDICT]'s attention mass per token, with and without each modality's events"
        else:
            summary = frame.pivot_table(index=["task", "method", "subset"], columns="token", values="attention_full")
            title = f"{label(prefix)}: the last [PREDICT]'s attention mass per token on the test stays (removal_protocol off)"
        out.append(Analysis(f"{prefix}_removal", title, frame, summary))
    return out
