"""``picme.mlstm`` — PiCME's Modality-Gated LSTM (docs/methods.md, "PiCME").

The subset's encoders (as in ``picme.supervised``, trained end to end from scratch) give one
embedding per modality; they are fed as a sequence, one modality per step in the canonical order,
to an LSTM cell whose input to the cell state is scaled by that modality's λ
(``trainables.picme.mlstm``); the final hidden state → MLP head. λ is the final λ of the
``picme.pretrain`` run of the same subset (a stage dependency: the engine injects it as ``lam``),
or a fixed vector given as ``lam`` in the config. An absent modality's step gets its learned
missing vector, as in the supervised baseline.
"""
from __future__ import annotations

import torch

from trainables.picme.contrastive import PRETRAIN_DEFAULTS
from trainables.picme.mlstm import ModalityGatedLSTM
from trainables.picme.supervised import ConcatFusion
from trainables.attributions import concat_block_attributions
from trainables.registry import Trainable, register


class GatedFusion(ConcatFusion):
    def __init__(self, config: dict, input_shapes: dict[str, tuple[int, ...]], n_outputs: int):
        super().__init__(config, input_shapes, n_outputs)
        d = self.d = int(config["d"])
        lam = config.get("lam")
        if lam is None or len(lam) != len(self.modalities):
            raise ValueError(f"picme.mlstm on {'+'.join(self.modalities)}: needs lam, one weight per modality (got {lam!r})")
        self.register_buffer("lam", torch.tensor([float(x) for x in lam]))
        self.lstm = ModalityGatedLSTM(d, d)

    def fused_width(self, d: int) -> int:
        return d  # the head reads the LSTM's final hidden state

    def fuse(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(list(z.split(self.d, dim=1)), self.lam))


register(
    Trainable(
        name="picme.mlstm", attributions=concat_block_attributions, build_model=GatedFusion, needs="picme.pretrain",
        defaults={**PRETRAIN_DEFAULTS, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
        paper="PiCME §3.4 Modality-Gated LSTM (docs/methods.md)",
    )
)
