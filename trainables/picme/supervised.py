"""``picme.supervised`` — PiCME's supervised baseline (METHODS.md §1, "Supervised baseline").

Each modality of the subset has its own encoder, trained from scratch end to end; the subset's
embeddings are concatenated (R^{d·|S|}) and an MLP head predicts the task. An absent modality's
block is replaced by a learned per-modality missing vector (the stays keep absence as a mask,
never as zeros; the model decides what absence means).
"""
from __future__ import annotations

import torch
from torch import nn

from trainables.encoders import build_encoder
from trainables.registry import Trainable, register


class ConcatFusion(nn.Module):
    def __init__(self, config: dict, input_shapes: dict[str, tuple[int, ...]], n_outputs: int):
        super().__init__()
        d = int(config["d"])
        self.modalities = list(input_shapes)
        self.encoders = nn.ModuleDict({m: build_encoder(m, shape, d, config) for m, shape in input_shapes.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in self.modalities})
        width = d * len(self.modalities)
        self.head = nn.Sequential(
            nn.LayerNorm(width), nn.Dropout(config.get("dropout", 0.1)), nn.Linear(width, d), nn.GELU(), nn.Linear(d, n_outputs)
        )

    def embed(self, batch: dict) -> torch.Tensor:
        """The concatenated per-modality embeddings [N, d·|S|] (absent blocks = missing vectors)."""
        blocks = []
        for index, modality in enumerate(self.modalities):
            z = self.encoders[modality](batch[modality])
            present = batch["present"][:, index : index + 1]
            blocks.append(torch.where(present, z, self.missing[modality].expand_as(z)))
        return torch.cat(blocks, dim=1)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.head(self.embed(batch))}


register(
    Trainable(
        name="picme.supervised",
        build_model=ConcatFusion,
        defaults={"d": 64, "dropout": 0.1, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
        paper="PiCME §3 supervised baseline (000_3fa7bb705ac3a9f3)",
    )
)
