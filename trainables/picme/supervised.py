"""``picme.supervised`` — PiCME's supervised baseline (docs/methods.md, "PiCME").

Each modality of the subset has its own encoder, trained from scratch end to end; the subset's
embeddings are concatenated (R^{d·|S|}) and an MLP head predicts the task. An absent modality's
block is replaced by a learned per-modality missing vector (the stays keep absence as a mask,
never as zeros; the model decides what absence means).
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.encoders import build_encoder
from trainables.attributions import concat_block_attributions
from trainables.registry import Trainable, register
from sweeper.encode.text import DEFAULT_TEXT_MODEL

# Notes go through the frozen offline all-MiniLM-L6-v2 (embeddings cached once per stay) unless a
# spec picks another ``text_encoder`` (a hub id or local path; ``bag`` for hashed bag-of-words) or
# fine-tunes it with ``text_lora_r`` > 0.
TEXT_DEFAULTS = {"text_encoder": DEFAULT_TEXT_MODEL, "text_max_length": 128, "text_lora_r": 0}


class ConcatFusion(nn.Module):
    def __init__(self, config: dict, input_shapes: dict[str, tuple[int, ...]], n_outputs: int):
        super().__init__()
        d = int(config["d"])
        self.modalities = list(input_shapes)
        self.encoders = nn.ModuleDict({m: self.make_encoder(m, shape, d, config) for m, shape in input_shapes.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in self.modalities})
        width = self.fused_width(d)
        self.head = nn.Sequential(
            nn.LayerNorm(width), nn.Dropout(config.get("dropout", 0.1)), nn.Linear(width, d), nn.GELU(), nn.Linear(d, n_outputs)
        )

    def fused_width(self, d: int) -> int:
        """Width of what ``fuse`` hands the head: the concatenated embeddings."""
        return d * len(self.modalities)

    def make_encoder(self, modality: str, shape: tuple[int, ...], d: int, config: dict) -> nn.Module:
        return build_encoder(modality, shape, d, config)

    def embed(self, batch: dict) -> torch.Tensor:
        """The concatenated per-modality embeddings [N, d·|S|] (absent blocks = missing vectors)."""
        blocks = []
        for index, modality in enumerate(self.modalities):
            z = self.encoders[modality](batch[modality])
            present = batch["present"][:, index : index + 1]
            blocks.append(torch.where(present, z, self.missing[modality].expand_as(z)))
        return torch.cat(blocks, dim=1)

    def fuse(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the concatenated embeddings (what Integrated Gradients attributes over)."""
        return self.head(z)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.fuse(self.embed(batch))}


register(
    Trainable(
        name="picme.supervised", attributions=concat_block_attributions,
        build_model=ConcatFusion,
        defaults={"d": 64, "dropout": 0.1, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4, **TEXT_DEFAULTS},
        paper="PiCME §3 supervised baseline (docs/methods.md)",
    )
)
