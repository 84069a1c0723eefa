"""``medmix`` — MedMIX: several frozen experts per modality, a router, masked logit fusion and
distillation from larger teachers (docs/methods.md, "MedMIX"; seed paper 002).

Reads the ``medmix.experts`` input kind: per modality of the subset, the cached embeddings of each
expert the config names (``sweeper.encode.experts``: run once per stay, expert, config and data,
before the tune phase, and shared by every trial), plus the modality's teacher where one is named.
The fusion baselines (``fusion``: mean, concat, max, attention) and the ablations (``router:
uniform``, ``distill_weight: 0``, ``single_expert: best`` — the expert per modality whose probe
scores best on validation, ``trainables.medmix.probe`` — and ``drop_family``) are configs of the
same trainable, so a spec lists them as variants (``medmix:mean`` ...), each its own leaderboard
row. So is the teacher probe (``teacher_probe: true``, the paper's "-Large" rows): the one variant
whose inputs are teachers, named ``teacher-probe:`` apart from the deployed experts.

Choices left open by the paper (its Eqs. 1–4 and optimiser values were lost in extraction):
the adapter bottleneck (``adapter_dim``), the router learning rate as a ratio of ``lr``
(``router_lr_ratio``), the ramp of the distillation weight over ``distill_ramp_epochs`` epochs
(linear from 0 to ``distill_weight``), RKD on the teacher's own (unprojected) embedding, and a
constant ``rkd_weight``. The paper's retrieval-augmented expert needs web resources and is left out.
"""
from __future__ import annotations

import numpy as np

from sweeper.data.inputs import InputKind, register_input_kind
from sweeper.encode.experts import PROBE
from trainables.medmix.analyses import router_analyses, router_summaries
from trainables.medmix.model import MedMIX
from trainables.medmix.probe import prepare
from trainables.registry import Trainable, register


def _keys(collate):
    """Per modality of the subset: its experts' feature keys and its teacher's (only those the
    collate was handed: the engine computes exactly what the config names). A teacher probe's
    cell is handed ``teacher-probe:`` keys only: those are its inputs, it has no teacher to distil
    from, and the modalities without one are not read."""
    out = {}
    probe = any(k.startswith(f"{PROBE}:") for k in collate.features)
    for m in collate.modalities:
        students = [k for k in collate.features if k.startswith(f"{PROBE if probe else 'expert'}:{m}:")]
        teachers = [] if probe else [k for k in collate.features if k.startswith(f"teacher:{m}:")]
        if probe and not students:
            continue
        if not students:
            from sweeper.data.schema import StaysError

            raise StaysError(f"medmix: no expert embeddings for {m}; the engine computes them from the method config's experts")
        out[m] = (students, teachers[0] if teachers else None)
    return out


def _shapes(collate) -> dict:
    keys = _keys(collate)
    return {
        "experts": {m: {k.split(":", 2)[2]: collate.features[k][1].shape[1] for k in students} for m, (students, _) in keys.items()},
        "teachers": {m: collate.features[t][1].shape[1] for m, (_, t) in keys.items() if t is not None},
        "columns": {m: collate.modalities.index(m) for m in keys},
    }


def _build(collate, batch, present) -> dict:
    stay_ids = np.asarray(batch["stay_id"]).astype(str)
    out = {}
    for m, (students, teacher) in _keys(collate).items():
        rows = collate.rows(present, m)
        for key in students:
            out[f"x:{m}:{key.split(':', 2)[2]}"] = collate._lookup(stay_ids, key, rows)
        if teacher is not None:
            out[f"t:{m}"] = collate._lookup(stay_ids, teacher, rows)
    if "demo_gender" in batch:  # for the router analysis per subgroup (never a model input)
        out["group:gender"] = np.array([str(g) if g is not None else "?" for g in batch["demo_gender"]], dtype=object)
    return out


register_input_kind(InputKind("medmix.experts", shapes=_shapes, build=_build))


def router_optimizer(model, config: dict):
    """AdamW in two groups: the routers and the modality scorer at ``lr × router_lr_ratio``, the rest at ``lr``."""
    import torch

    router = {id(p) for p in model.router_parameters()}
    rest = [p for p in model.parameters() if id(p) not in router]
    groups = [{"params": rest}]
    if router:
        groups.append({"params": model.router_parameters(), "lr": float(config["lr"]) * float(config.get("router_lr_ratio", 0.1))})
    return torch.optim.AdamW(groups, lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)))


def _on_epoch_start(model, epoch: int) -> None:
    model.epoch = epoch  # the distillation weight's ramp


def _export(model) -> dict:
    """The deployed weights only: the teacher projections are training-time parts."""
    return {"state_dict": {k: v for k, v in model.state_dict().items() if not k.startswith("teacher_proj.")}}


register(Trainable(
    name="medmix",
    build_model=MedMIX,
    defaults={
        "d": 64, "adapter_dim": 64, "dropout": 0.1, "fusion": "medmix", "router": "learned",
        "experts": {}, "teachers": {}, "single_expert": "none", "probe_c": 0.1, "teacher_probe": False, "distill_weight": 0.5, "rkd_weight": 1.0, "distill_ramp_epochs": 5,
        "lr": 1e-3, "router_lr_ratio": 0.1, "weight_decay": 1e-4, "batch_size": 64, "warmup_steps": 20, "grad_clip": 1.0,
    },
    paper="MedMIX (seed paper 002): mixture of frozen experts per modality, router, masked fusion, distillation",
    inputs="medmix.experts",
    optimizer=router_optimizer,
    select="loss",
    on_epoch_start=_on_epoch_start,
    export=_export,
    prepare=prepare,
    summaries=router_summaries,
    analyses=router_analyses,
))

__all__ = ["MedMIX", "router_optimizer"]
