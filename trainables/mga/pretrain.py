"""``mga.pretrain`` — Masked Global Alignment pre-training, a stage (docs/methods.md, "MGA").

The subset's encoders (``trainables.encoders``, the ones every family uses) and one learned missing
token t_m ∈ R^d per modality are trained with the loss of ``trainables.mga.loss`` on every training
stay with at least one modality of the subset (complete or not; no label is read). Modality dropout
(``drop_mode`` ``one``/``each``, ``drop_p``) hides present modalities during training only; a hidden
modality becomes its token, as an absent one does. Adam(W) on encoders, tokens and log τ; the
weights of the epoch with the lowest validation loss (no dropout) are kept, stopping after
``pretrain_patience`` epochs without a lower one.

The artifact: ``encoders.pt`` (encoders, tokens and log τ), ``history.json`` (per epoch: train and
validation loss, τ, anchors), and ``embeddings.npz``: every stay's aligned (unit-norm) embedding per
modality over all splits, its token where the modality is absent, beside ``present`` and ``split``;
when the subset has the time series, also ``timeseries_hourly`` [n, hours · d]: the time-series
encoder's unit-norm output after each hour (the LSTM's state at hour h through the same projection;
the last hour's is the stay's embedding; zeros where the stay has no series), the per-event
embeddings of ``mga.seq``. Dependent trials read the embeddings (frozen) and the tokens
(``mga_tokens`` in their config).
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sweeper.encode.text import LORA_CONFIG_KEYS
from trainables.encoders import build_encoder
from trainables.mga.analyses import pretrain_analyses
from trainables.mga.loss import INIT_TAU, MaskedGlobalAlignment, modality_dropout
from trainables.picme.supervised import TEXT_DEFAULTS
from trainables.registry import Stage, register_stage

# drop_p: the paper swept p up to 0.5 (the values were lost in extraction); 0.2 sits inside that range.
PRETRAIN_DEFAULTS = {
    "d": 64, "pretrain_epochs": 100, "pretrain_lr": 1e-3, "pretrain_batch_size": 128, "pretrain_patience": 10, "pretrain_weight_decay": 0.0,
    "drop_mode": "one", "drop_p": 0.2, "tokens_in_centroid": False, "dropout": 0.1, **TEXT_DEFAULTS,
}
CONFIG_KEYS = (
    "d", "pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "pretrain_patience", "pretrain_weight_decay", "drop_mode", "drop_p",
    "tokens_in_centroid", "dropout", "cnn_width", "text_encoder", "text_max_length", *LORA_CONFIG_KEYS,
)
EMBEDDINGS_FILE, HISTORY_FILE, ENCODERS_FILE = "embeddings.npz", "history.json", "encoders.pt"
CHUNK = 512


class AlignedEncoders(nn.Module):
    """Per-modality encoders and missing tokens: ``embed(data, index, present)`` → z ``[n, M, d]``,
    each slot its encoder's output where ``present``, the modality's token elsewhere (the encoder
    runs on the present rows only)."""

    def __init__(self, modalities: list[str], shapes: dict, d: int, config: dict):
        super().__init__()
        self.modalities = list(modalities)
        self.encoders = nn.ModuleDict({m: build_encoder(m, shapes[m], d, config) for m in self.modalities})
        self.tokens = nn.Parameter(torch.randn(len(self.modalities), d) * 0.02)

    def embed(self, data: dict, index: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        slots = []
        for j, m in enumerate(self.modalities):
            z = self.tokens[j].expand(len(index), -1).clone()
            rows = torch.nonzero(present[:, j]).flatten()
            if len(rows):
                pick = index[rows]  # raw notes (a text model in the trial) are a numpy array of strings
                z[rows] = self.encoders[m](data[m][pick.numpy()] if isinstance(data[m], np.ndarray) else data[m][pick])
            slots.append(z)
        return torch.stack(slots, dim=1)


HOURLY = "timeseries_hourly"


def hourly_embeddings(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[n, hours, d]: a ``TimeseriesLSTM``'s projected state after each hour (its output is the last one)."""
    states, _ = encoder.lstm(x)
    return encoder.proj(states)


def _batches(n: int, size: int, generator=None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[s : s + size] for s in range(0, n, size)]


def evaluate(model: AlignedEncoders, loss_fn: MaskedGlobalAlignment, data: dict, batch_size: int) -> float:
    """Mean validation loss over fixed batches (stay order), weighted by each batch's anchors; no dropout."""
    model.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        for index in _batches(len(data["stay_id"]), batch_size):
            present = data["present"][index]
            out = loss_fn(model.embed(data, index, present), present)
            anchors = int(out["anchors"].sum())
            if anchors:
                total, weight = total + float(out["loss"]) * anchors, weight + anchors
    return total / weight if weight else float("nan")


def pretrain(config: dict, data: dict, collate, session) -> None:
    """The stage's training loop; reports the losses and τ per epoch, the artifact with the last result."""
    modalities = list(collate.modalities)
    if len(modalities) < 2:
        raise ValueError(f"mga.pretrain on {modalities}: alignment needs a subset of at least 2 modalities")
    d, seed, batch_size = int(config["d"]), int(config.get("seed", 0)), int(config["pretrain_batch_size"])
    drop_p, drop_mode = float(config["drop_p"]), str(config["drop_mode"])
    if not 0.0 <= drop_p <= 1.0:
        raise ValueError(f"drop_p: {drop_p} is outside [0, 1]")
    if int(config["pretrain_epochs"]) < 1:
        raise ValueError(f"pretrain_epochs: {config['pretrain_epochs']} must be at least 1")
    torch.manual_seed(seed)
    model = AlignedEncoders(modalities, collate.input_shapes(), d, config)
    loss_fn = MaskedGlobalAlignment(INIT_TAU, bool(config["tokens_in_centroid"]))
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=float(config["pretrain_lr"]),
                                  weight_decay=float(config["pretrain_weight_decay"]))
    train = data["train"]
    if len(train["stay_id"]) < 2 or len(data["val"]["stay_id"]) < 2:
        raise ValueError(f"mga pre-training on {'+'.join(modalities)}: too few stays ({len(train['stay_id'])} train, {len(data['val']['stay_id'])} val)")
    generator = torch.Generator().manual_seed(seed)
    history, best = [], (float("inf"), None)
    since_best, patience, epochs = 0, int(config["pretrain_patience"]), int(config["pretrain_epochs"])
    initial = evaluate(model, loss_fn, data["val"], batch_size)
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for index in _batches(len(train["stay_id"]), batch_size, generator):
            if len(index) < 2:
                continue
            present = modality_dropout(train["present"][index], drop_p, drop_mode, generator)
            out = loss_fn(model.embed(train, index, present), present)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            total, seen = total + float(out["loss"].detach()) * len(index), seen + len(index)
        val_loss = evaluate(model, loss_fn, data["val"], batch_size)
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss, "tau": loss_fn.tau})
        if val_loss < best[0]:
            best, since_best = (val_loss, copy.deepcopy({"model": model.state_dict(), "loss": loss_fn.state_dict()})), 0
        else:
            since_best += 1
        metrics = {**history[-1], "train_seconds": time.perf_counter() - started, "initial_val_loss": initial}
        if since_best >= patience or epoch + 1 == epochs:
            break
        session.report(metrics)
    if best[1] is None:
        raise ValueError(f"mga pre-training on {'+'.join(modalities)}: the validation loss was never finite (no validation stay has 2 modalities)")
    model.load_state_dict(best[1]["model"])
    model.eval()
    with tempfile.TemporaryDirectory() as folder:
        _write_artifact(folder, model, data, best[1], {"modalities": modalities, "initial_val_loss": initial, "best_val_loss": best[0], "history": history})
        session.report({**metrics, "done": True, "best_val_loss": best[0]}, folder)


def _write_artifact(folder: str, model: AlignedEncoders, data: dict, state: dict, history: dict) -> None:
    splits = list(data)
    ids = np.concatenate([data[s]["stay_id"] for s in splits])
    order = np.argsort(ids, kind="stable")
    with torch.no_grad():
        tokens = F.normalize(model.tokens, dim=-1)
        blocks = {m: [] for m in model.modalities}
        for split in splits:
            part = data[split]
            for index in _batches(len(part["stay_id"]), CHUNK):
                zhat = F.normalize(model.embed(part, index, part["present"][index]), dim=-1)
                for j, m in enumerate(model.modalities):
                    blocks[m].append(zhat[:, j].numpy())
                if "timeseries" in model.modalities:
                    rows = part["present"][index][:, model.modalities.index("timeseries")]
                    x = part["timeseries"][index]
                    hourly = torch.zeros(len(index), x.shape[1], model.tokens.shape[1])
                    if rows.any():
                        hourly[rows] = F.normalize(hourly_embeddings(model.encoders["timeseries"], x[rows]), dim=-1)
                    blocks.setdefault(HOURLY, []).append(hourly.reshape(len(index), -1).numpy())
        embeddings = {m: np.concatenate(b)[order].astype(np.float32) for m, b in blocks.items()}
    present = torch.cat([data[s]["present"] for s in splits]).numpy()[order]
    split = np.concatenate([np.full(len(data[s]["stay_id"]), s) for s in splits])[order]
    np.savez(os.path.join(folder, EMBEDDINGS_FILE), stay_id=ids[order], present=present, split=split, **embeddings)
    history = {**history, "tau": float(state["loss"]["log_tau"].exp()), "tokens": {m: tokens[j].tolist() for j, m in enumerate(model.modalities)}}
    with open(os.path.join(folder, HISTORY_FILE), "w") as handle:
        json.dump(history, handle, indent=2)
    torch.save(state, os.path.join(folder, ENCODERS_FILE))


def read_artifact(folder: str) -> dict:
    """Every stay's aligned embedding per modality, and the unit-norm tokens (``mga_tokens``)."""
    with np.load(os.path.join(folder, EMBEDDINGS_FILE), allow_pickle=False) as saved:
        ids = saved["stay_id"].astype(str)
        features = {m: (ids, saved[m]) for m in saved.files if m not in ("stay_id", "present", "split")}
    with open(os.path.join(folder, HISTORY_FILE)) as handle:
        tokens = json.load(handle)["tokens"]
    return {"features": features, "config": {"mga_tokens": tokens}}


register_stage(
    Stage(
        name="mga.pretrain", run=pretrain, read=read_artifact, config_keys=CONFIG_KEYS, defaults=PRETRAIN_DEFAULTS,
        analyses=pretrain_analyses, paper="Masked Global Alignment pre-training, the MGA paper §3.2 (docs/methods.md, \"MGA\")",
    )
)
