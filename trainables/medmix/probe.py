"""MedMIX's "best single expert" ablation, measured (docs/methods.md, "MedMIX"; paper App. E7).

With ``single_expert: best`` every trial, before its model is built, probes each candidate expert
of each modality on its own and keeps the best one per modality:

- candidates: the experts the config reads for the modality (``experts``, ``drop_family``; never a
  teacher);
- probe: an L2-regularised logistic regression (``probe_c``, default 0.1) on the expert's frozen
  features, standardised with the training stays' mean and spread, fitted on the **training** stays
  that have the modality, one per output;
- score: the spec's ``metric`` (AUROC, or AUPRC) of the probe on the **validation** stays that have
  the modality, averaged over the outputs that have both classes there;
- choice: the highest score; a tie (or no score at all) goes to the first candidate in the config's
  order. The test split is never read: the loop hands ``prepare`` the train and val splits only.

The choice is deterministic (lbfgs from zero; no random state), so every trial and seed of a cell
chooses the same experts; the scores travel in the config and are reported as summaries
(``trainables.medmix.analyses``: ``analyses/single_expert_probe.csv``).
"""
from __future__ import annotations

import numpy as np

from sweeper.errors import SweeperError

MODES = ("best",)


def single_expert_mode(config: dict) -> str | None:
    """``best``, or None when the config keeps every expert; anything else fails in one line."""
    value = config.get("single_expert")
    if value in (None, False, "none", ""):
        return None
    if value not in MODES:
        raise SweeperError(f"single_expert {value!r}: use best (the expert chosen on validation), or name the expert under experts")
    if config.get("teacher_probe"):
        raise SweeperError("single_expert and teacher_probe exclude each other: a teacher probe reads the teacher alone")
    return str(value)


def _probe_score(x_train, y_train, x_val, y_val, metric: str, c: float) -> float:
    """Mean validation ``metric`` over the outputs of one logistic regression per output; NaN when
    no output has both classes in train and in val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    score_of = average_precision_score if metric == "auprc" else roc_auc_score
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    y_train, y_val = y_train.reshape(len(y_train), -1), y_val.reshape(len(y_val), -1)
    scores = []
    for k in range(y_train.shape[1]):
        fit_rows, val_rows = np.isfinite(y_train[:, k]), np.isfinite(y_val[:, k])  # multitask: unknown labels are NaN
        if len(set(y_train[fit_rows, k])) < 2 or len(set(y_val[val_rows, k])) < 2:
            continue
        probe = LogisticRegression(C=c, max_iter=2000).fit(x_train[fit_rows], y_train[fit_rows, k])
        scores.append(float(score_of(y_val[val_rows, k], probe.predict_proba(x_val[val_rows])[:, 1])))
    return float(np.mean(scores)) if scores else float("nan")


def probe_experts(data: dict, modalities: list[str], experts: dict[str, list[str]], metric: str = "auroc", c: float = 0.1) -> dict:
    """{modality: {expert: validation score}} of each expert's probe (see the module docstring).
    ``data``: the collated ``train`` and ``val`` splits of the ``medmix.experts`` input kind."""
    metric = metric if metric in ("auroc", "auprc") else "auroc"
    out = {}
    for j, m in enumerate(modalities):
        if m not in experts:
            continue
        train_rows = data["train"]["present"][:, j].bool().numpy()
        val_rows = data["val"]["present"][:, j].bool().numpy()
        y_train, y_val = data["train"]["label"].numpy()[train_rows], data["val"]["label"].numpy()[val_rows]
        out[m] = {
            e: _probe_score(data["train"][f"x:{m}:{e}"].numpy()[train_rows].astype(np.float64), y_train,
                            data["val"][f"x:{m}:{e}"].numpy()[val_rows].astype(np.float64), y_val, metric, c)
            for e in experts[m]
        }
    return out


def choose(scores: dict[str, dict[str, float]]) -> dict[str, str]:
    """The best-scoring expert per modality; ties and NaN go to the first candidate."""
    chosen = {}
    for m, by_expert in scores.items():
        names = list(by_expert)
        ranked = [(-(s if np.isfinite(s) else -np.inf), i) for i, s in enumerate(by_expert.values())]
        chosen[m] = names[min(ranked)[1]]
    return chosen


def prepare(config: dict, data: dict) -> dict:
    """The trainable's ``prepare`` hook: with ``single_expert: best``, the chosen expert per modality
    (``chosen_experts``) and every candidate's validation score (``expert_probe``), for the model
    and its summaries; nothing otherwise."""
    if single_expert_mode(config) is None:
        return {}
    labels = np.concatenate([data[split]["label"].numpy().ravel() for split in ("train", "val")])
    if not np.isin(labels[np.isfinite(labels)], (0.0, 1.0)).all():
        raise SweeperError(f"single_expert: best probes with a classifier; task {config.get('task')!r} has labels other than 0 and 1")
    modalities = list(config["modalities"])
    keys = [k for k in data["train"] if k.startswith("x:")]
    experts = {m: [k.split(":", 2)[2] for k in keys if k.split(":", 2)[1] == m] for m in modalities}
    metric = str(config.get("select_metric", "auroc"))
    metric = metric if metric in ("auroc", "auprc") else "auroc"
    scores = probe_experts(data, modalities, {m: e for m, e in experts.items() if e}, metric, float(config.get("probe_c", 0.1)))
    return {"chosen_experts": choose(scores), "expert_probe": scores, "expert_probe_metric": metric}
