"""``medfuse`` — MedFuse: observed-only tokens, MuFuse value fusion, Transformer (docs/methods.md, "MedFuse").

Input: the ``tokens`` input of ``sweeper.data.loading.StaysCollate`` — one token per observed
(series, 2-hour window) median at the window's centre, plus one per known static descriptor at
t = 0; nothing is imputed. A token of feature f with value x becomes:

- ``e_f`` — a lookup of the feature's identity (``d`` dims);
- ``v = φ(x)`` — a shared MLP on the (z-scored) scalar (``d_v = d / k`` dims), then the
  feature-specific affine ``ṽ = γ_f ⊙ v + β_f`` (γ = 1, β = 0 at init);
- fusion (config ``fusion``): ``mufuse`` ``e_f ⊙ g(repeat_k(ṽ))`` (each entry of ṽ repeated
  k times, ``k = partition_k``; the gate g is config ``mufuse_gate``: ``sigmoid``, the paper's, or
  ``tanh``, which can flip an entry's sign); ``add`` ``e_f + P ṽ``; ``concat`` ``W [e_f ; ṽ]``; ``scane``
  ``e_f · x`` (no φ);
- categorical descriptors (e.g. ICUType, gender): ``W_c [e_f ; e_class]``, whatever the fusion;
- a sinusoidal encoding of the token's elapsed hours is added.

A learned summary token is prepended (so a stay with no known value still has one token); the
Transformer encoder (pre-norm, padding masked) output is mean-pooled over real tokens → MLP head.
Loss (config ``class_weight``): ``balanced`` (default), the engine's weighted BCE (pos_weight =
n_neg / n_pos); ``none``, plain BCE. The paper states no weighting, but its P12 accuracy at 0.5
(0.884, above the 0.858 of always predicting survival) is what an unweighted classifier gives; the
spec's ``paper`` profile sets ``none``. At a few epochs the weighted loss learns faster (issue 18,
item 5: AUPRC 0.01-0.03 higher on P12 at 5 epochs, one seed) but its accuracy at 0.5 falls (0.80 vs 0.85).
Choices the paper leaves open, made here: φ is Linear(1, h) → GELU → Linear(h, d_v) with h = ``phi_hidden`` (default 64: a d_v-wide hidden layer learned markedly slower on P12); the
time encoding's longest period is ``time_period`` hours (default 10 000, as in the Transformer).

Feature-embedding transfer (paper §4.8): ``transfer_from`` names a ``model.pt`` a final trial of a
source cohort saved (``save_model: true``); ``e_f`` rows of the feature names both cohorts share are
copied from it and frozen for the first ``transfer_freeze_epochs`` epochs, then fine-tuned.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from trainables.registry import Trainable, register, task_loss

FUSIONS = ("mufuse", "add", "concat", "scane")
CLASS_WEIGHTS = ("none", "balanced")
# MuFuse's gate on repeat_k(ṽ): the paper's sigmoid, bounded in (0, 1), can only shrink an entry of
# e_f; tanh, in (-1, 1), can also flip its sign, as SCANE's e_f · x does (issue 18, item 5).
GATES = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


def sinusoidal(times: torch.Tensor, d: int, period: float) -> torch.Tensor:
    """[..., d] sinusoidal encoding of continuous times (sin on even dims, cos on odd)."""
    half = d // 2
    frequencies = torch.exp(-math.log(period) * torch.arange(half, device=times.device, dtype=torch.float32) / max(half, 1))
    angles = times.unsqueeze(-1).float() * frequencies
    out = torch.zeros(*times.shape, d, device=times.device)
    out[..., 0 : 2 * half : 2] = torch.sin(angles)
    out[..., 1 : 2 * half : 2] = torch.cos(angles)
    return out


class TokenEmbedding(nn.Module):
    """(feature id, value, class id) → token vectors, by the configured fusion."""

    def __init__(self, n_features: int, n_classes: int, d: int, fusion: str, partition_k: int, phi_hidden: int = 64,
                 gate: str = "sigmoid"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
        if gate not in GATES:
            raise ValueError(f"mufuse_gate {gate!r}: use one of {', '.join(GATES)}")
        self.gate = GATES[gate]
        if fusion == "mufuse" and d % partition_k:
            raise ValueError(f"partition_k {partition_k} must divide d {d}")
        self.fusion, self.k = fusion, partition_k
        d_v = d // partition_k if fusion == "mufuse" else d
        self.feature = nn.Embedding(n_features, d)
        self.category = nn.Embedding(max(n_classes, 1), d)
        self.categorical = nn.Linear(2 * d, d)
        if fusion != "scane":
            self.phi = nn.Sequential(nn.Linear(1, phi_hidden), nn.GELU(), nn.Linear(phi_hidden, d_v))
            self.gamma = nn.Parameter(torch.ones(n_features, d_v))
            self.beta = nn.Parameter(torch.zeros(n_features, d_v))
        if fusion == "add":
            self.project = nn.Linear(d_v, d, bias=False)
        elif fusion == "concat":
            self.project = nn.Linear(d + d_v, d)

    def value(self, feature: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ṽ = γ_f ⊙ φ(x) + β_f."""
        return self.gamma[feature] * self.phi(x.unsqueeze(-1)) + self.beta[feature]

    def numeric(self, feature: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        e = self.feature(feature)
        if self.fusion == "scane":
            return e * x.unsqueeze(-1)
        v = self.value(feature, x)
        if self.fusion == "mufuse":
            return e * self.gate(torch.repeat_interleave(v, self.k, dim=-1))
        if self.fusion == "add":
            return e + self.project(v)
        return self.project(torch.cat([e, v], dim=-1))

    def forward(self, feature: torch.Tensor, x: torch.Tensor, klass: torch.Tensor) -> torch.Tensor:
        numeric = self.numeric(feature, x)
        categorical = self.categorical(torch.cat([self.feature(feature), self.category(klass)], dim=-1))
        return torch.where((klass > 0).unsqueeze(-1), categorical, numeric)


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer on ``scaled_dot_product_attention`` (fused kernels on CPU
    and GPU; padded keys masked, no attention-weight dropout)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"heads {heads} must divide d {d}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.feed = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(n, length, d)))
        return x + self.drop(self.feed(self.norm2(x)))


class MedFuse(nn.Module):
    def __init__(self, config: dict, input_shapes: dict, n_outputs: int):
        super().__init__()
        vocab = input_shapes["tokens"]
        d = int(config["d"])
        self.feature_names = list(vocab.features)
        self.embed = TokenEmbedding(
            vocab.n_features, vocab.n_classes, d, config["fusion"], int(config["partition_k"]), int(config["phi_hidden"]), str(config["mufuse_gate"])
        )
        self.summary = nn.Parameter(torch.zeros(d))
        self.time_period = float(config["time_period"])
        self.layers = nn.ModuleList(EncoderLayer(d, int(config["heads"]), float(config["dropout"])) for _ in range(int(config["layers"])))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Dropout(float(config["dropout"])), nn.Linear(d, n_outputs))
        self.frozen_rows: torch.Tensor | None = None
        self.freeze_epochs = int(config.get("transfer_freeze_epochs", 0))
        if config.get("transfer_from"):
            self.frozen_rows = load_feature_embeddings(self, str(config["transfer_from"]))
            self.embed.feature.weight.register_hook(self._mask_frozen)
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def _mask_frozen(self, grad: torch.Tensor) -> torch.Tensor:
        if self.frozen_rows is None or self.epoch >= self.freeze_epochs:
            return grad
        return grad.masked_fill(self.frozen_rows.to(grad.device).unsqueeze(1), 0.0)

    def forward(self, batch: dict) -> dict:
        mask = batch["tok_mask"]
        length = int(mask.sum(dim=1).max()) if mask.numel() else 0
        mask = mask[:, :length]
        tokens = self.embed(batch["tok_feature"][:, :length], batch["tok_value"][:, :length], batch["tok_class"][:, :length])
        tokens = tokens + sinusoidal(batch["tok_time"][:, :length], tokens.shape[-1], self.time_period)
        tokens = torch.cat([self.summary.expand(len(tokens), 1, -1), tokens], dim=1)
        mask = torch.cat([torch.ones(len(mask), 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        hidden = tokens
        for layer in self.layers:
            hidden = layer(hidden, mask)
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return {"logits": self.head(pooled)}

    def export(self) -> dict:
        """What ``save_model`` stores: the weights and the feature names they are indexed by."""
        return {"state_dict": self.state_dict(), "feature_names": [str(name) for name in self.feature_names]}


def medfuse_loss(task: str, train_labels: torch.Tensor, config: dict) -> nn.Module:
    """``class_weight: balanced``: the engine's default weighted BCE; ``none`` (what the paper's
    accuracy implies): plain BCE on the binary tasks, unknown labels left out as the default does.
    Other tasks: the engine's default."""
    from trainables.task_losses import KnownTargetsLoss

    weight = str(config.get("class_weight", "balanced"))
    if weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight {weight!r}: use one of {', '.join(CLASS_WEIGHTS)}")
    if weight == "balanced" or task not in ("ihm", "los_gt_7d"):
        return task_loss(task, train_labels)
    return nn.BCEWithLogitsLoss() if task == "ihm" else KnownTargetsLoss(nn.BCEWithLogitsLoss())


def load_feature_embeddings(model: MedFuse, path: str) -> torch.Tensor:
    """Copy the source's ``e_f`` rows of the feature names both cohorts have; returns which rows."""
    import os

    from sweeper.safeload import load_weights

    if not os.path.isfile(path):
        raise FileNotFoundError(f"transfer_from {path}: no such file; point it at a model.pt a final trial saved with save_model: true")
    source = load_weights(path, "transfer_from")  # weights only: a model.pt may come from anyone
    names = source.get("feature_names") if isinstance(source, dict) else None
    weights = source.get("state_dict", {}).get("embed.feature.weight") if isinstance(source, dict) else None
    if names is None or weights is None:
        raise ValueError(f"transfer_from {path}: not a medfuse model export (needs feature_names and embed.feature.weight)")
    target = model.embed.feature.weight
    if weights.shape[1] != target.shape[1]:
        raise ValueError(f"transfer_from {path}: embedding width {weights.shape[1]} differs from this model's d = {target.shape[1]}")
    index = {name: i for i, name in enumerate(names)}
    shared = torch.zeros(len(model.feature_names), dtype=torch.bool)
    with torch.no_grad():
        for row, name in enumerate(model.feature_names):
            if name in index:
                target[row] = weights[index[name]]
                shared[row] = True
    return shared


register(
    Trainable(
        name="medfuse",
        build_model=MedFuse,
        inputs="tokens",
        loss=medfuse_loss,
        on_epoch_start=MedFuse.on_epoch_start,
        export=MedFuse.export,
        defaults={
            "d": 32, "fusion": "mufuse", "partition_k": 4, "heads": 2, "layers": 2, "dropout": 0.1, "time_period": 10000.0,
            "window_hours": 2.0, "phi_hidden": 64, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4, "transfer_freeze_epochs": 2,
            "class_weight": "balanced", "mufuse_gate": "sigmoid",
        },
        options={"fusion": FUSIONS, "class_weight": CLASS_WEIGHTS, "mufuse_gate": tuple(GATES)},
        paper="MedFuse / MuFuse (docs/methods.md)",
    )
)
