"""``mga.static`` and ``mga.static_scratch`` — the MGA paper's static heads (docs/methods.md, "MGA").

Each stay is one embedding per modality of the subset, an absent modality's slot holding the
modality's missing token; ``head`` picks what reads them:

- ``mlp``: the embeddings concatenated (R^{d·|S|}) → LayerNorm → MLP (PiCME's concat head, reused);
- ``lstm``: the embeddings as a sequence of |S| steps (the subset's canonical order: the set has no
  order of its own, and a fixed one is the simplest faithful choice) → LSTM → last hidden → MLP.

``mga.static`` (aligned and frozen): reads the ``mga.pretrain`` artifact of its subset — the frozen
aligned embeddings, and the pre-trained tokens (``mga_tokens``, kept fixed) for absent slots; only
the head trains. ``mga.static_scratch``: the same encoders (``trainables.encoders``) and tokens
trained from scratch end to end with the head, no pre-training. Both take the loop's generic
``train_missing_rate`` (a hidden modality becomes its token) and Integrated-Gradients attributions
over the concatenated slots.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.attributions import concat_block_attributions
from trainables.mga.pretrain import PRETRAIN_DEFAULTS
from trainables.picme.supervised import TEXT_DEFAULTS, ConcatFusion
from trainables.registry import Trainable, register

HEADS = ("mlp", "lstm")


class StaticHead(ConcatFusion):
    """Encoders (trained from scratch) + learned tokens → the ``head`` of the config."""

    def __init__(self, config: dict, input_shapes: dict[str, tuple[int, ...]], n_outputs: int):
        self.kind = str(config.get("head", "mlp"))
        if self.kind not in HEADS:
            raise ValueError(f"head: {self.kind!r}; expected one of {', '.join(HEADS)}")
        super().__init__(config, input_shapes, n_outputs)
        d = int(config["d"])
        if self.kind == "lstm":
            self.lstm = nn.LSTM(d, d, batch_first=True)

    def fused_width(self, d: int) -> int:
        return d if self.kind == "lstm" else d * len(self.modalities)

    def fuse(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            return self.head(z)
        _, (h, _) = self.lstm(z.reshape(len(z), len(self.modalities), -1))
        return self.head(h[-1])


class AlignedStaticHead(StaticHead):
    """The head over frozen ``mga.pretrain`` embeddings, absent slots = the pre-trained tokens."""

    def __init__(self, config: dict, input_shapes: dict[str, tuple[int, ...]], n_outputs: int):
        super().__init__(config, input_shapes, n_outputs)
        tokens = config.get("mga_tokens")
        if not tokens or any(m not in tokens for m in self.modalities):
            raise ValueError("mga.static needs mga_tokens (the missing tokens of the mga.pretrain artifact); it reads that stage")
        for m in self.modalities:
            self.missing[m] = nn.Parameter(torch.tensor(tokens[m], dtype=torch.float32), requires_grad=False)

    def make_encoder(self, modality: str, shape: tuple[int, ...], d: int, config: dict) -> nn.Module:
        if shape != (d,):
            raise ValueError(f"mga.static: {modality} inputs are {shape}, not frozen d={d} embeddings; it reads the mga.pretrain artifact")
        return nn.Identity()


HEAD_DEFAULTS = {"head": "mlp", "lr": 1e-3, "batch_size": 128, "weight_decay": 1e-4}
register(
    Trainable(
        name="mga.static", build_model=AlignedStaticHead, attributions=concat_block_attributions, needs="mga.pretrain", frozen=True,
        defaults={**PRETRAIN_DEFAULTS, **HEAD_DEFAULTS}, paper="the MGA paper §3.4.1 static heads on aligned embeddings (docs/methods.md, \"MGA\")",
    )
)
register(
    Trainable(
        name="mga.static_scratch", build_model=StaticHead, attributions=concat_block_attributions,
        defaults={"d": 64, "dropout": 0.1, **TEXT_DEFAULTS, **HEAD_DEFAULTS},
        paper="the MGA paper §3.4.1 static heads, encoders trained from scratch (docs/methods.md, \"MGA\")",
    )
)
