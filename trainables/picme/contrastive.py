"""``picme.pretrain`` (a stage) and ``picme.contrastive`` (METHODS.md §1).

Pre-training: the subset's encoders (the same ones ``picme.supervised`` trains end to end) are
trained with pairwise InfoNCE (2 modalities) or weighted One-vs-Others (≥ 3) on the train split's
stays that have every modality of the subset; no label is read. λ = softmax(w) and τ are logged
every epoch; the encoders of the epoch with the lowest validation loss are kept. The artifact holds
λ (per epoch and final), the encoders' weights and, since they are frozen from then on, every
stay's embedding per modality (all splits), computed once here: dependent trials never re-encode.

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
from trainables.picme.analyses import pretrain_analyses
from trainables.picme.losses import ContrastiveLoss
from trainables.picme.supervised import TEXT_DEFAULTS, ConcatFusion
from trainables.attributions import concat_block_attributions
from trainables.registry import Stage, Trainable, register, register_stage
from sweeper.encode.text import LORA_CONFIG_KEYS

PRETRAIN_DEFAULTS = {
    "d": 64, "pretrain_epochs": 10, "pretrain_lr": 1e-3, "pretrain_batch_size": 128, "pretrain_patience": 3, "dropout": 0.1, **TEXT_DEFAULTS,
}
EMBEDDINGS_FILE, LAMBDA_FILE, ENCODERS_FILE = "embeddings.npz", "lambda.json", "encoders.pt"


def _complete(data: dict) -> torch.Tensor:
    return torch.nonzero(data["present"].all(dim=1)).flatten()


def _embed(encoders: nn.ModuleDict, modalities: list[str], data: dict, index) -> list[torch.Tensor]:
    return [encoders[m](data[m][index]) for m in modalities]


def pretrain(config: dict, data: dict, collate, session) -> None:
    """The stage's training loop (runs in a Ray Train worker); reports λ per epoch, the artifact last."""
    modalities = list(collate.modalities)
    shapes = collate.input_shapes()
    d = int(config["d"])
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    encoders = nn.ModuleDict({m: build_encoder(m, shapes[m], d, config) for m in modalities})
    loss_fn = ContrastiveLoss(len(modalities))
    params = list(encoders.parameters()) + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(params, lr=float(config["pretrain_lr"]), weight_decay=float(config.get("weight_decay", 0.0)))
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
            out = loss_fn(_embed(encoders, modalities, data["val"], val))
        val_loss, lam = float(out["loss"]), [float(x) for x in out["lam"]]
        history.append({"epoch": epoch + 1, "lambda": dict(zip(modalities, lam)), "tau": float(loss_fn.log_tau.detach().exp()), "val_loss": val_loss})
        if val_loss < best[0]:
            best, since_best = (val_loss, copy.deepcopy(encoders.state_dict()), lam), 0
        else:
            since_best += 1
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
                blocks = []
                for split in data:
                    present = torch.nonzero(data[split]["present"][:, index]).flatten()
                    z = torch.zeros(len(data[split]["stay_id"]), d)
                    for start in range(0, len(present), 512):
                        chunk = present[start : start + 512]
                        z[chunk] = encoders[m](data[split][m][chunk])
                    blocks.append(z.numpy())
                embeddings[m] = np.concatenate(blocks)[order].astype(np.float32)
        present = torch.cat([data[s]["present"] for s in data]).numpy()[order]
        np.savez(os.path.join(folder, EMBEDDINGS_FILE), stay_id=ids[order], present=present, **embeddings)
        final = dict(zip(modalities, best[2]))
        with open(os.path.join(folder, LAMBDA_FILE), "w") as handle:
            json.dump({"modalities": modalities, "final": final, "best_val_loss": best[0], "history": history}, handle, indent=2)
        torch.save(best[1], os.path.join(folder, ENCODERS_FILE))
        session.report({**metrics, "done": True, "best_val_loss": best[0]}, folder)


def read_artifact(folder: str) -> dict:
    """Frozen embeddings per modality and the final λ (in the subset's canonical order)."""
    with np.load(os.path.join(folder, EMBEDDINGS_FILE), allow_pickle=False) as saved:
        ids = saved["stay_id"].astype(str)
        features = {m: (ids, saved[m]) for m in saved.files if m not in ("stay_id", "present")}
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
        config_keys=("d", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "pretrain_patience", "dropout", "cnn_width", "text_encoder", "text_max_length", *LORA_CONFIG_KEYS),
        defaults=PRETRAIN_DEFAULTS, analyses=pretrain_analyses, paper="PiCME §3.2 contrastive pre-training (000_3fa7bb705ac3a9f3)",
    )
)
register(
    Trainable(
        name="picme.contrastive", attributions=concat_block_attributions, build_model=FrozenConcatHead, needs="picme.pretrain", frozen=True,
        defaults={**PRETRAIN_DEFAULTS, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
        paper="PiCME §3 contrastive fine-tune (000_3fa7bb705ac3a9f3)",
    )
)
