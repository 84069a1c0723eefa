"""``picme.pretrain`` (a stage) and ``picme.contrastive`` (docs/methods.md, "PiCME").

Pre-training: the subset's encoders (the same ones ``picme.supervised`` trains end to end) are
trained with pairwise InfoNCE (2 modalities) or weighted One-vs-Others (≥ 3) on the train split's
stays that have every modality of the subset; no label is read. λ = softmax(w) and τ are logged
every epoch; the encoders of the epoch with the lowest validation loss are kept. The artifact holds
λ (per epoch and final), the encoders' weights and, since they are frozen from then on, every
stay's embedding per modality (all splits, with each stay's split), computed once here: dependent
trials never re-encode.

Choices beyond the paper's text (each a knob; measured in issue 18, "PiCME alignment"):

- ``pretrain_projection`` (default on): each encoder is followed by a projection head ending in a
  per-modality standardisation (``Projected``); the loss and the alignment analysis read its output
  (stored as ``aligned_<modality>``), dependent trials the encoder's.
- ``pretrain_intra_negatives`` (default on): the other stays' embeddings of the anchor's own
  modality are negatives too (``losses.directional_nce``). Cross-modal InfoNCE alone leaves every
  modality in its own region of the sphere, so a stay's nearest neighbours were all of its own
  modality and the pooled top-5 alignment was 0.000 on every subset.
- ``pretrain_lambda_from`` (default ``val``): w takes one step per epoch on the validation stays'
  cross-modal terms (``pretrain_weight_lr``) instead of training beside the encoders (``train``,
  the paper's joint form), where λ drifted toward whichever encoder memorised its training pairs
  fastest (the CNN on cxr), or stayed uniform when the first epoch was the best.

Fine-tune (``picme.contrastive``): frozen embeddings of the subset, concatenated (R^{d·|S|}), an
absent modality's block replaced by a learned missing vector → MLP head on the task. It reads the
pre-training artifact of its subset; the engine runs one pre-training per (subset, data, pre-training
config) whatever the number of dependent trials, tasks and seeds.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time

import numpy as np
import torch
from torch import nn

from trainables.encoders import build_encoder
from trainables.picme.analyses import ALIGNED_PREFIX, pretrain_analyses
from trainables.picme.losses import ContrastiveLoss
from trainables.picme.supervised import TEXT_DEFAULTS, ConcatFusion
from trainables.attributions import concat_block_attributions
from trainables.registry import Stage, Trainable, register, register_stage
from sweeper.encode.text import LORA_CONFIG_KEYS

PRETRAIN_DEFAULTS = {
    "d": 64, "pretrain_epochs": 10, "pretrain_lr": 1e-3, "pretrain_batch_size": 128, "pretrain_patience": 3, "dropout": 0.1,
    "pretrain_projection": True, "pretrain_intra_negatives": True, "pretrain_lambda_from": "val", "pretrain_weight_lr": 0.3, **TEXT_DEFAULTS,
}
EMBEDDINGS_FILE, LAMBDA_FILE, ENCODERS_FILE = "embeddings.npz", "lambda.json", "encoders.pt"


def _complete(data: dict) -> torch.Tensor:
    return torch.nonzero(data["present"].all(dim=1)).flatten()


def _embed(encoders: nn.ModuleDict, modalities: list[str], data: dict, index) -> list[torch.Tensor]:
    return [encoders[m](data[m][index]) for m in modalities]


class Projected(nn.Module):
    """The encoder followed by a projection head whose output is standardised per modality
    (BatchNorm without affine: batch statistics in training, running ones after): every modality's
    embeddings are centred on one origin, so cosine neighbours compare stays, not modalities. The
    loss reads the head's output; dependents read the encoder's (the head's standardised output
    kept less of the task: IHM AUROC of the frozen fine-tune on discharge+cxr fell 0.81 → 0.60)."""

    def __init__(self, encoder: nn.Module, d: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.BatchNorm1d(d, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _encode_all(encoder: nn.Module, data: dict, modality: str, index: int, d: int, order: np.ndarray) -> np.ndarray:
    """Every stay's embedding (zeros where the modality is absent), all splits, rows in ``order``."""
    blocks = []
    for split in data:
        present = torch.nonzero(data[split]["present"][:, index]).flatten()
        z = torch.zeros(len(data[split]["stay_id"]), d)
        for start in range(0, len(present), 512):
            chunk = present[start : start + 512]
            z[chunk] = encoder(data[split][modality][chunk])
        blocks.append(z.numpy())
    return np.concatenate(blocks)[order].astype(np.float32)


def _optimizers(encoders: nn.ModuleDict, loss_fn: ContrastiveLoss, config: dict) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """AdamW on the encoders and log τ; w (λ) without weight decay (it would pull λ back to uniform).

    ``pretrain_lambda_from: train`` (the paper's joint training): w in AdamW beside the encoders, at
    ``pretrain_weight_lr`` (0: the encoders' rate). ``val``: w is left out of it and gets one plain
    gradient step per epoch on the validation stays' weighted *cross-modal* loss (rate
    ``pretrain_weight_lr``, 0: 0.1), so λ follows how well each modality aligns with the others on
    stays the encoders did not fit, not how well its encoder memorises training pairs.
    """
    lr, weight_lr = float(config["pretrain_lr"]), float(config.get("pretrain_weight_lr") or 0.0)
    on_val = _lambda_from(config) == "val"
    groups = [{"params": list(encoders.parameters()), "weight_decay": float(config.get("weight_decay", 0.0))},
              {"params": [loss_fn.log_tau], "weight_decay": 0.0}]
    if not on_val:
        groups.append({"params": [loss_fn.w], "weight_decay": 0.0, "lr": weight_lr or lr})
    return torch.optim.AdamW(groups, lr=lr), (torch.optim.SGD([loss_fn.w], lr=weight_lr or 0.1) if on_val else None)


def _lambda_from(config: dict) -> str:
    where = str(config.get("pretrain_lambda_from", "val"))
    if where not in ("train", "val"):
        raise ValueError(f"pretrain_lambda_from {where!r}: use train or val")
    return where


def pretrain(config: dict, data: dict, collate, session) -> None:
    """The stage's training loop (runs in a Ray Train worker); reports λ per epoch, the artifact last."""
    modalities = list(collate.modalities)
    shapes = collate.input_shapes()
    d = int(config["d"])
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    encoders = nn.ModuleDict({m: build_encoder(m, shapes[m], d, config) for m in modalities})
    if config.get("pretrain_projection", True):
        encoders = nn.ModuleDict({m: Projected(e, d) for m, e in encoders.items()})
    loss_fn = ContrastiveLoss(len(modalities), intra_negatives=bool(config.get("pretrain_intra_negatives", True)))
    optimizer, weight_step = _optimizers(encoders, loss_fn, config)
    train, val = _complete(data["train"]), _complete(data["val"])
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"picme pre-training on {'+'.join(modalities)}: {len(train)} train / {len(val)} val stays have every modality; pick a larger cohort")
    generator = torch.Generator().manual_seed(seed)
    batch_size = int(config["pretrain_batch_size"])
    history, best = [], (float("inf"), None, None)
    since_best, patience = 0, int(config["pretrain_patience"])
    for epoch in range(int(config["pretrain_epochs"])):
        started = time.perf_counter()
        encoders.train()
        total, seen = 0.0, 0
        order = train[torch.randperm(len(train), generator=generator)]
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                continue
            loss = loss_fn(_embed(encoders, modalities, data["train"], index))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(index), seen + len(index)
        encoders.eval()
        with torch.no_grad():
            views = _embed(encoders, modalities, data["val"], val)
            out = loss_fn(views)
        cross = loss_fn(views, intra=False)  # each modality's cross-modal term: what λ should follow
        val_loss, lam = float(out["loss"]), [float(x) for x in out["lam"]]
        history.append({"epoch": epoch + 1, "lambda": dict(zip(modalities, lam)), "tau": float(loss_fn.log_tau.detach().exp()), "val_loss": val_loss,
                        "val_cross_terms": dict(zip(modalities, [float(x) for x in cross["terms"].detach()]))})
        if val_loss < best[0]:
            best, since_best = (val_loss, copy.deepcopy(encoders.state_dict()), lam), 0
        else:
            since_best += 1
        if weight_step is not None:  # λ's step on the validation stays (encoders and τ untouched)
            weight_step.zero_grad(set_to_none=True)
            cross["loss"].backward(inputs=[loss_fn.w])
            weight_step.step()
        metrics = {
            "epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss, "tau": history[-1]["tau"],
            "train_seconds": time.perf_counter() - started, **{f"lambda_{m}": v for m, v in zip(modalities, lam)},
        }
        if since_best >= patience or epoch + 1 == int(config["pretrain_epochs"]):
            break
        session.report(metrics)
    encoders.load_state_dict(best[1])
    encoders.eval()
    with tempfile.TemporaryDirectory() as folder:
        embeddings = {}
        with torch.no_grad():
            ids = np.concatenate([data[s]["stay_id"] for s in data])
            order = np.argsort(ids, kind="stable")
            for index, m in enumerate(modalities):
                if isinstance(encoders[m], Projected):  # the encoder's output for dependents, the head's for the analyses
                    embeddings[m] = _encode_all(encoders[m].encoder, data, m, index, d, order)
                    embeddings[ALIGNED_PREFIX + m] = _encode_all(encoders[m], data, m, index, d, order)
                else:
                    embeddings[m] = _encode_all(encoders[m], data, m, index, d, order)
        present = torch.cat([data[s]["present"] for s in data]).numpy()[order]
        split = np.concatenate([np.full(len(data[s]["stay_id"]), s) for s in data])[order]
        np.savez(os.path.join(folder, EMBEDDINGS_FILE), stay_id=ids[order], present=present, split=split, **embeddings)
        final = dict(zip(modalities, best[2]))
        with open(os.path.join(folder, LAMBDA_FILE), "w") as handle:
            json.dump({"modalities": modalities, "final": final, "best_val_loss": best[0], "history": history}, handle, indent=2)
        torch.save(best[1], os.path.join(folder, ENCODERS_FILE))
        session.report({**metrics, "done": True, "best_val_loss": best[0]}, folder)


def read_artifact(folder: str) -> dict:
    """Frozen embeddings per modality and the final λ (in the subset's canonical order)."""
    with np.load(os.path.join(folder, EMBEDDINGS_FILE), allow_pickle=False) as saved:
        ids = saved["stay_id"].astype(str)
        features = {m: (ids, saved[m]) for m in saved.files if m not in ("stay_id", "present", "split") and not m.startswith(ALIGNED_PREFIX)}
    with open(os.path.join(folder, LAMBDA_FILE)) as handle:
        lam = json.load(handle)
    return {"features": features, "config": {"lam": [lam["final"][m] for m in lam["modalities"]]}}


class FrozenConcatHead(ConcatFusion):
    """Concat of precomputed (frozen) embeddings → the supervised baseline's MLP head."""

    def make_encoder(self, modality: str, shape: tuple[int, ...], d: int, config: dict) -> nn.Module:
        if shape != (d,):
            raise ValueError(f"picme.contrastive: {modality} inputs are {shape}, not frozen d={d} embeddings; it reads the picme.pretrain artifact")
        return nn.Identity()


register_stage(
    Stage(
        name="picme.pretrain", run=pretrain, read=read_artifact,
        config_keys=("d", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "pretrain_patience", "pretrain_projection", "pretrain_weight_lr", "pretrain_intra_negatives", "pretrain_lambda_from", "dropout", "cnn_width", "text_encoder", "text_max_length", *LORA_CONFIG_KEYS),
        defaults=PRETRAIN_DEFAULTS, analyses=pretrain_analyses, paper="PiCME §3.2 contrastive pre-training (docs/methods.md)",
    )
)
register(
    Trainable(
        name="picme.contrastive", attributions=concat_block_attributions, build_model=FrozenConcatHead, needs="picme.pretrain", frozen=True,
        defaults={**PRETRAIN_DEFAULTS, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
        paper="PiCME §3 contrastive fine-tune (docs/methods.md)",
    )
)
