"""Integrated-Gradients attribution per modality, for any model that fuses concatenated
per-modality embeddings (``embed(batch) -> [N, d·|S|]`` and ``fuse(z) -> logits``)."""
from __future__ import annotations

import torch

from sweeper.evaluation.analyses import block_attributions


def concat_block_attributions(model, data: dict, device, max_stays: int = 1000) -> dict[str, float]:
    """Each modality block's share of Integrated-Gradients attribution on the concatenated
    embeddings, over up to ``max_stays`` test stays that have every modality of the subset (an
    absent block is the learned missing vector, which says nothing about what the modality
    carries). Several outputs (phenotypes) are attributed through their mean logit."""
    complete = torch.nonzero(data["present"].all(dim=1)).flatten()[:max_stays]
    if len(complete) < 2:
        return {}
    model.eval()
    batch = {k: (v[complete].to(device) if hasattr(v, "to") else v[complete.numpy()]) for k, v in data.items()}
    with torch.no_grad():
        z = model.embed(batch)
    modalities = list(model.modalities)

    def forward(x):
        logits = model.fuse(x)
        return logits.mean(dim=1) if logits.ndim == 2 and logits.shape[1] > 1 else logits

    # Baseline: the mean embedding, so a block's constant offset earns it no attribution.
    return block_attributions(forward, z, modalities, z.shape[1] // len(modalities), baseline=z.mean(dim=0))
