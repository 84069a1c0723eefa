"""MedMIX's model (docs/methods.md, "MedMIX"): expert adapters, routers, heads, fused logits, and
its distillation losses; the fusion baselines on the same experts.

The paper's Eqs. 1–4 lost their bodies in extraction: the adapter, router, scorer and fusion
forms below are a faithful reconstruction of its text, not a
quote. Per modality m with experts e: ``h̃ = h + W2 GELU(W1 h)`` (residual adapter), ``u = Dropout(
GELU(LayerNorm(W h̃)))`` (projection to d, zero for a missing expert), ``s = w_m · u`` (router,
−1e9 for a masked expert), ``α = softmax_e(s)``, ``z_m = Σ_e α u``; ``ℓ_m = head_m(z_m)``,
``r_m = q · z_m`` (−1e9 for a missing modality), ``β = softmax_m(r)``, ``ℓ = Σ_m β ℓ_m``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASKED = -1e9
FUSIONS = ("medmix", "mean", "concat", "max", "attention")


class ExpertBranch(nn.Module):
    """Residual bottleneck adapter on one expert's frozen embedding, then its projection to d."""

    def __init__(self, dim: int, d: int, bottleneck: int, dropout: float):
        super().__init__()
        self.down, self.up = nn.Linear(dim, bottleneck), nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)  # starts as the identity: h̃ = h
        nn.init.zeros_(self.up.bias)
        self.project = nn.Sequential(nn.Linear(dim, d), nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.project(h + self.up(F.gelu(self.down(h))))


def masked_softmax(scores: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis with unavailable entries at −1e9, then exactly 0 (also when a
    row has nothing available: all zeros, not a uniform spread over missing entries)."""
    weights = torch.softmax(scores.masked_fill(~available, MASKED), dim=-1)
    return weights * available.to(weights.dtype)


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance loss (Park et al. 2019): smooth-L1 between the batch's pairwise-distance
    matrices, each divided by the mean of its off-diagonal entries (so any scale of the teacher
    matches; the two may differ in dimension)."""
    n = len(student)
    if n < 2:
        return student.sum() * 0.0
    off = ~torch.eye(n, dtype=torch.bool, device=student.device)

    def normalised(x):
        distances = torch.cdist(x, x)
        return distances / distances[off].mean().clamp(min=1e-8)

    return F.smooth_l1_loss(normalised(student)[off], normalised(teacher)[off])


def cosine_loss(student: torch.Tensor, projected_teacher: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(student, projected_teacher, dim=-1)).mean()


class MedMIX(nn.Module):
    """``config``: ``d``, ``adapter_dim``, ``dropout``, ``fusion`` (``medmix`` or a baseline),
    ``router`` (``learned`` | ``uniform``), ``distill_weight`` (λ_max), ``rkd_weight``,
    ``distill_ramp_epochs``; ``single_expert: best`` with the ``chosen_experts`` its validation
    probe picked (``trainables.medmix.probe``); ``teacher_probe`` (the "-Large" rows: the inputs are
    teachers, and a stay without any probed modality gets a learned constant). ``shapes``: the
    ``medmix.experts`` input kind's (experts and teachers per modality, and each modality's column
    of ``present``)."""

    def __init__(self, config: dict, shapes: dict, n_outputs: int):
        super().__init__()
        d, dropout = int(config["d"]), float(config.get("dropout", 0.1))
        self.fusion, self.router_kind = str(config.get("fusion", "medmix")), str(config.get("router", "learned"))
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r}: unknown; use one of {', '.join(FUSIONS)}")
        if self.router_kind not in ("learned", "uniform"):
            raise ValueError(f"router {self.router_kind!r}: use learned or uniform")
        experts = shapes["experts"]
        # The validation probe's scores, for the summaries only (forward never reads them).
        self.probe_scores, self.probe_metric = config.get("expert_probe") or {}, str(config.get("expert_probe_metric", "auroc"))
        if config.get("single_expert") not in (None, False, "none", ""):
            chosen = config.get("chosen_experts")
            if chosen is None:
                raise ValueError("single_expert: best needs chosen_experts, which the trainable's prepare (a probe scored on validation) sets")
            experts = {m: {e: dim for e, dim in by_name.items() if e == chosen.get(m, e)} for m, by_name in experts.items()}
        self.experts: dict[str, list[str]] = {m: list(e) for m, e in experts.items()}
        self.modalities = list(self.experts)
        self.columns = dict(shapes.get("columns") or {m: j for j, m in enumerate(self.modalities)})  # m -> its column of present
        self.branches = nn.ModuleDict({
            m: nn.ModuleDict({e: ExpertBranch(dim, d, int(config.get("adapter_dim", 64)), dropout) for e, dim in by_name.items()})
            for m, by_name in experts.items()
        })
        # The "-Large" probe reads only the modalities that have a teacher: a stay with none of them
        # gets this learned constant instead of a fixed 0 logit.
        self.absent = nn.Parameter(torch.zeros(n_outputs)) if config.get("teacher_probe") else None
        self.distill_weight = float(config.get("distill_weight", 0.0))
        self.rkd_weight, self.ramp = float(config.get("rkd_weight", 1.0)), int(config.get("distill_ramp_epochs", 5))
        self.epoch = 0
        if self.fusion == "medmix":
            self.router = nn.ModuleDict({m: nn.Linear(d, 1, bias=False) for m in self.modalities})
            self.heads = nn.ModuleDict({m: nn.Linear(d, n_outputs) for m in self.modalities})
            self.scorer = nn.Linear(d, 1, bias=False)
            teachers = shapes.get("teachers", {}) if self.distill_weight > 0 else {}
            # Training only: never deployed, never read in evaluation.
            self.teacher_proj = nn.ModuleDict({m: nn.Linear(dim, d) for m, dim in teachers.items() if m in self.experts})
        else:
            n_tokens = sum(len(e) for e in self.experts.values())
            self.query = nn.Parameter(torch.randn(d) / d**0.5) if self.fusion == "attention" else None
            self.head = nn.Linear(d * n_tokens if self.fusion == "concat" else d, n_outputs)

    def router_parameters(self) -> list[nn.Parameter]:
        """What the lower router learning rate applies to: the routers and the modality scorer."""
        if self.fusion != "medmix":
            return [] if self.query is None else [self.query]
        return list(self.router.parameters()) + list(self.scorer.parameters())

    def experts_of(self, batch: dict, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """u [N, E, d] (zeros for a missing expert) and which experts each stay has [N, E]."""
        present = batch["present"][:, self.columns[m]].bool()
        available = batch.get(f"avail:{m}")
        available = present.unsqueeze(1).expand(-1, len(self.experts[m])) if available is None else available.bool() & present.unsqueeze(1)
        u = torch.stack([self.branches[m][e](batch[f"x:{m}:{e}"]) for e in self.experts[m]], dim=1)
        return u * available.unsqueeze(-1).to(u.dtype), available

    def route(self, batch: dict) -> dict:
        """Per modality: α [N, E], z [N, d]; and the modality presence [N, M]."""
        out = {"alpha": {}, "z": {}}
        for m in self.modalities:
            u, available = self.experts_of(batch, m)
            scores = self.router[m](u).squeeze(-1) if self.router_kind == "learned" else torch.zeros(available.shape, device=u.device)
            alpha = masked_softmax(scores, available)
            out["alpha"][m], out["z"][m] = alpha, (alpha.unsqueeze(-1) * u).sum(dim=1)
        return out

    def forward(self, batch: dict) -> dict:
        if self.fusion != "medmix":
            return {"logits": self._baseline(batch)}
        routed = self.route(batch)
        z = torch.stack([routed["z"][m] for m in self.modalities], dim=1)  # [N, M, d]
        has = torch.stack([routed["alpha"][m].sum(dim=1) > 0 for m in self.modalities], dim=1)
        beta = masked_softmax(self.scorer(z).squeeze(-1), has)
        logits = torch.stack([self.heads[m](routed["z"][m]) for m in self.modalities], dim=1)
        fused = (beta.unsqueeze(-1) * logits).sum(dim=1)
        if self.absent is not None:  # Σβ is 1 for a stay with a probed modality, 0 for one without
            fused = fused + (1.0 - beta.sum(dim=1, keepdim=True)) * self.absent
        out = {"logits": fused, "alpha": routed["alpha"], "beta": beta}
        if self.training and self.teacher_proj:  # teachers are read in training only
            weight = self.distill_weight * min(1.0, self.epoch / max(self.ramp, 1))
            if weight > 0:
                out["aux_loss"] = weight * self.distillation(batch, routed["z"], has)
        return out

    def distillation(self, batch: dict, z: dict, has: torch.Tensor) -> torch.Tensor:
        """Cosine to the projected teacher plus λ_rkd × the relational loss, averaged over the
        modalities that have a teacher, on the stays that have the modality."""
        losses = []
        for m, project in self.teacher_proj.items():
            rows = has[:, self.modalities.index(m)]
            teacher = batch.get(f"t:{m}")
            if teacher is None or rows.sum() < 2:
                continue
            student, teacher = z[m][rows], teacher[rows]
            losses.append(cosine_loss(student, project(teacher)) + self.rkd_weight * relational_loss(student, teacher))
        return torch.stack(losses).mean() if losses else torch.zeros((), device=has.device)

    def _baseline(self, batch: dict) -> torch.Tensor:
        """MeanAvg / Concat / Max / Attention over every available expert embedding of every modality."""
        parts = [self.experts_of(batch, m) for m in self.modalities]
        u = torch.cat([p[0] for p in parts], dim=1)  # [N, T, d]
        available = torch.cat([p[1] for p in parts], dim=1)
        if self.fusion == "concat":
            return self.head(u.flatten(1))
        if self.fusion == "max":
            pooled = u.masked_fill(~available.unsqueeze(-1), MASKED).amax(dim=1)
            return self.head(torch.where(available.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled)))
        if self.fusion == "mean":
            weights = available.float() / available.float().sum(dim=1, keepdim=True).clamp(min=1.0)
        else:  # attention: one learned query over the expert tokens
            weights = masked_softmax(u @ self.query / u.shape[-1] ** 0.5, available)
        logits = self.head((weights.unsqueeze(-1) * u).sum(dim=1))
        if self.absent is not None:
            logits = logits + (~available.any(dim=1, keepdim=True)).to(logits.dtype) * self.absent
        return logits
