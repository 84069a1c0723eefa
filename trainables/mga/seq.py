"""``mga.seq`` and ``mga.seq_scratch`` — the MGA paper's sequential decoder (docs/methods.md, "MGA").

Each stay is its chronological event sequence (``trainables.mga.events``: demographics at t = 0,
one event per observed hourly time-series bin, each note and the latest CXR at its time). Events
past the prediction horizon (``horizon_hours``; 0, the default, means the stays' time-series window,
48 h) are dropped (``after_horizon: drop``) or kept at the end of the sequence
(``after_horizon: clip``: the discharge summary, written after the prediction time, still read, as
the other families here read it); an event with an unknown time sits at the horizon. Events of a
modality the stay lacks, or that the loop's ``train_missing_rate`` or a missing-modality protocol
hides (``present`` False), are not in the sequence.

Each event's embedding is projected to the decoder's width by its modality's block (Linear →
LayerNorm, the LayerNorm's gain starting at the RMS of the LM's token embeddings) and followed by a
learned [PREDICT] embedding: ``e_1 P e_2 P … e_k P``. A stay with no event left is a lone [PREDICT].
A causal LM (``lm``: ``smollm2-135m``, a local folder, a hub id or ``tiny:<width>``;
``trainables.lm``) reads the sequence through ``inputs_embeds``, right-padded with an attention mask,
with LoRA adapters (``lora_r``, ``lora_alpha``, ``lora_dropout``) on the attention and MLP
projections (``lora_targets``, Llama's names by default) and every base weight frozen; ``lm_layers``
> 0 keeps only the LM's first N blocks (a cheaper backbone for small machines; 0, the default: all).
``window_hours`` (default 1: hourly bins) sets the time-series events' window. A linear head
on every [PREDICT] position gives the running prediction; ``seq_loss: all`` (the paper) applies the
label to every [PREDICT] position (the task loss over all of them), ``last`` to the last one only;
validation, test metrics and predictions use the last one.

The event embeddings: ``mga.seq`` reads the ``mga.pretrain`` artifact, frozen — each modality's
aligned stay embedding, and for the time series the pre-trained encoder's aligned state after each
hour (``timeseries_hourly``); ``mga.seq_scratch`` trains the same encoders (``trainables.encoders``)
end to end with the decoder, the time series' per-hour events being its LSTM's projected state
after each hour. What trains: the projections, [PREDICT], the head, the LoRA adapters (and, for
``mga.seq_scratch``, the encoders). The model's ``state_dict`` leaves out the frozen LM weights
(they come back from ``lm`` when the model is built), so checkpoints and saved models stay small.

After the final epoch (``trainables.mga.seq_analyses``): the last layer's head-averaged attention of
the last [PREDICT] for ``attention_stays`` chosen test stays, and, with ``removal_protocol: true``,
the paper's §4.3 protocol.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from trainables.encoders import build_encoder
from trainables.lm import build_lm
from trainables.mga import events  # noqa: F401  (registers the mga.events input kind)
from trainables.mga.events import EVENTS, HOURLY
from trainables.mga.pretrain import PRETRAIN_DEFAULTS, hourly_embeddings
from trainables.mga.seq_analyses import seq_analyses, seq_summaries
from trainables.picme.supervised import TEXT_DEFAULTS
from trainables.registry import Trainable, register, task_loss

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AFTER_HORIZON = ("drop", "clip")
SEQ_LOSSES = ("all", "last")
PAD, PREDICT = -2, -1  # key kinds of a traced sequence besides the modality indices


class SeqDecoder(nn.Module):
    """``mga.seq_scratch``: encoders trained from scratch; ``AlignedSeqDecoder`` reads the artifact."""

    aligned = False

    def __init__(self, config: dict, input_shapes: dict, n_outputs: int):
        super().__init__()
        shapes = dict(input_shapes)
        info, hourly = shapes.pop(EVENTS), shapes.pop(HOURLY, None)
        self.modalities = list(shapes)
        self.hours = int(info["hours"])
        self.horizon = float(config.get("horizon_hours") or self.hours)
        self.after_horizon, self.loss_on = str(config.get("after_horizon", "drop")), str(config.get("seq_loss", "all"))
        if self.after_horizon not in AFTER_HORIZON or self.loss_on not in SEQ_LOSSES:
            raise ValueError(f"after_horizon {self.after_horizon!r} / seq_loss {self.loss_on!r}: use after_horizon drop|clip, seq_loss all|last")
        self.task, self.attention_stays = str(config.get("task", "")), int(config.get("attention_stays", 3))
        self.removal_protocol = bool(config.get("removal_protocol", False))
        d = int(config["d"])
        self.encoders = nn.ModuleDict({m: self.make_encoder(m, shapes[m], hourly, d, config) for m in self.modalities})
        lm = build_lm(str(config["lm"]), layers=int(config.get("lm_layers") or 0))  # the first N blocks only (0: all)
        embeddings = lm.get_input_embeddings().weight.detach().float()
        width, rms = embeddings.shape[1], float(embeddings.pow(2).mean().sqrt())
        from peft import LoraConfig, get_peft_model

        targets = list(config.get("lora_targets") or LORA_TARGETS)
        self.lm = get_peft_model(lm, LoraConfig(r=int(config["lora_r"]), lora_alpha=float(config["lora_alpha"]),
                                                lora_dropout=float(config["lora_dropout"]), target_modules=targets))
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width)) for m in self.modalities})
        for block in self.proj.values():
            nn.init.constant_(block[1].weight, rms)
        self.predict_token = nn.Parameter(torch.randn(width) * rms)
        self.head = nn.Linear(width, n_outputs)
        sizes = [self.hours if m == "timeseries" else 1 for m in self.modalities]
        self.register_buffer("offsets", torch.tensor([sum(sizes[:j]) for j in range(len(sizes))], dtype=torch.long), persistent=False)

    def make_encoder(self, modality: str, shape: tuple, hourly, d: int, config: dict) -> nn.Module:
        return build_encoder(modality, shape, d, config)

    # --- the frozen LM's weights are not part of the model's state (see the module docstring) ---
    def _frozen_key(self, key: str) -> bool:
        return key.startswith("lm.") and "lora_" not in key

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if self._frozen_key(k)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._frozen_key(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"mga.seq state: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
        return result

    # --- the sequence ---
    def slots(self, batch: dict) -> torch.Tensor:
        """[N, S, width]: every event a stay could have, projected (the time series' H hours, one slot per other modality)."""
        parts = []
        for m in self.modalities:
            if m == "timeseries":
                z = self.timeseries_hours(batch)
            else:
                x = batch[m]
                z = self.encoders[m](x).unsqueeze(1)
            parts.append(self.proj[m](z))
        return torch.cat(parts, dim=1)

    def timeseries_hours(self, batch: dict) -> torch.Tensor:
        return hourly_embeddings(self.encoders["timeseries"], batch["timeseries"])

    def sequence(self, batch: dict) -> dict:
        """The decoder's input: ``tokens`` [N, T, width], ``valid`` [N, T], ``kind`` [N, T] (modality
        index, ``PREDICT`` or ``PAD``), ``time`` [N, T], ``last`` [N] (the last [PREDICT]),
        ``predict_at`` [N, P] / ``predict_valid`` [N, P] (every [PREDICT] position)."""
        mask, present = batch["tok_mask"].bool(), batch["present"].bool()
        modality, hour = batch["ev_modality"].long(), batch["ev_hour"].long()
        time = batch["ev_time"].float()
        time = torch.where(torch.isnan(time), torch.full_like(time, self.horizon), time)
        keep = mask & present.gather(1, modality)
        if self.after_horizon == "drop":
            keep &= time <= self.horizon
        count = keep.sum(dim=1)
        n, events = len(count), max(int(count.max()) if len(count) else 0, 1)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :events]  # kept events first, in time order
        slots = self.slots(batch)
        chosen = (self.offsets[modality] + hour).gather(1, order)
        embedded = slots.gather(1, chosen.unsqueeze(-1).expand(-1, -1, slots.shape[-1]))
        width = slots.shape[-1]
        tokens = torch.stack([embedded, self.predict_token.expand(n, events, width)], dim=2).reshape(n, 2 * events, width)
        empty = count == 0
        tokens = torch.where(empty[:, None, None] & (torch.arange(2 * events, device=tokens.device) == 0)[None, :, None],
                             self.predict_token.expand_as(tokens), tokens)
        position = torch.arange(2 * events, device=tokens.device)
        valid = torch.where(empty[:, None], position[None] == 0, position[None] < 2 * count[:, None])
        is_event = (position[None] % 2 == 0) & ~empty[:, None]
        kind = torch.where(is_event, modality.gather(1, order).repeat_interleave(2, dim=1), torch.full_like(valid, PREDICT, dtype=torch.long))
        kind = kind.masked_fill(~valid, PAD)
        times = time.gather(1, order).repeat_interleave(2, dim=1).masked_fill(empty[:, None], 0.0).masked_fill(~valid, float("nan"))
        length = max(2 * int(count.max()) if len(count) else 0, 1)
        slots_p = torch.arange(events, device=tokens.device)
        predict_at = torch.where(empty[:, None], torch.zeros_like(slots_p)[None], 2 * slots_p[None] + 1).clamp(max=length - 1)
        return {
            "tokens": tokens[:, :length], "valid": valid[:, :length], "kind": kind[:, :length], "time": times[:, :length],
            "last": torch.where(empty, torch.zeros_like(count), 2 * count - 1), "predict_at": predict_at,
            "predict_valid": slots_p[None] < count.clamp(min=1)[:, None],
        }

    def decode(self, seq: dict, attentions: bool = False):
        decoder = self.lm.get_base_model().get_decoder()
        return decoder(inputs_embeds=seq["tokens"], attention_mask=seq["valid"].long(), output_attentions=attentions)

    def forward(self, batch: dict) -> dict:
        seq = self.sequence(batch)
        logits = self.head(self.decode(seq).last_hidden_state)                     # [N, T, K]
        rows = torch.arange(len(logits), device=logits.device)
        if self.training and self.loss_on == "all":  # every [PREDICT]; NaN where a stay has fewer (PredictPositionsLoss)
            at = logits.gather(1, seq["predict_at"].unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
            return {"logits": at.masked_fill(~seq["predict_valid"].unsqueeze(-1), float("nan"))}
        return {"logits": logits[rows, seq["last"]]}

    @contextlib.contextmanager
    def _eager_attention(self):
        base = self.lm.get_base_model()
        before = base.config._attn_implementation
        base.set_attn_implementation("eager")  # sdpa does not return attention weights
        try:
            yield
        finally:
            base.set_attn_implementation(before)

    def trace(self, batch: dict) -> dict:
        """The last [PREDICT]'s logits and its last-layer attention, head-averaged, over the sequence
        (``attention`` [N, T]), beside each position's ``kind`` and ``time``."""
        seq = self.sequence(batch)
        with self._eager_attention():
            out = self.decode(seq, attentions=True)
        rows = torch.arange(len(seq["last"]), device=seq["last"].device)
        attention = out.attentions[-1].mean(dim=1)[rows, seq["last"]]             # [N, T]
        logits = self.head(out.last_hidden_state[rows, seq["last"]])
        return {"logits": logits, "attention": attention * seq["valid"], "kind": seq["kind"], "time": seq["time"]}


class AlignedSeqDecoder(SeqDecoder):
    """``mga.seq``: the events are the ``mga.pretrain`` artifact's frozen aligned embeddings."""

    aligned = True

    def make_encoder(self, modality: str, shape: tuple, hourly, d: int, config: dict) -> nn.Module:
        if not config.get("mga_tokens"):
            raise ValueError("mga.seq needs the mga.pretrain artifact (mga_tokens in its config); it reads that stage")
        if shape != (d,):
            raise ValueError(f"mga.seq: {modality} inputs are {shape}, not frozen d={d} embeddings; it reads the mga.pretrain artifact")
        if modality == "timeseries" and (hourly is None or tuple(hourly)[1] != d):
            raise ValueError(f"mga.seq: the mga.pretrain artifact has no per-hour time-series embeddings ({HOURLY}); run the stage again")
        return nn.Identity()

    def timeseries_hours(self, batch: dict) -> torch.Tensor:
        return batch[HOURLY].reshape(len(batch[HOURLY]), self.hours, -1)


class PredictPositionsLoss(nn.Module):
    """The task loss over every valid [PREDICT] position (logits ``[N, P, K]``, NaN where a stay has
    fewer), or over the stays (``[N, K]``) as the task loss itself."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim < 3:
            return self.base(logits, target.reshape(logits.shape))
        n, p, k = logits.shape
        valid = ~torch.isnan(logits[..., 0])
        return self.base(logits[valid], target.reshape(n, 1, k).expand(n, p, k)[valid])


def seq_loss(task: str, train_labels, config: dict) -> nn.Module:
    return PredictPositionsLoss(task_loss(task, train_labels))


def trainable_adamw(model: nn.Module, config: dict):
    """AdamW over what trains (the LM's base weights are frozen)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=float(config["lr"]),
                             weight_decay=float(config.get("weight_decay", 0.0)))


SEQ_DEFAULTS = {
    "lm": "smollm2-135m", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "seq_loss": "all", "horizon_hours": 0,
    "after_horizon": "drop", "window_hours": 1.0, "lm_layers": 0, "attention_stays": 3, "removal_protocol": False, "lr": 5e-4, "batch_size": 16, "weight_decay": 0.0,
}
_COMMON = dict(inputs="mga.events", loss=seq_loss, optimizer=trainable_adamw, summaries=seq_summaries)
register(
    Trainable(
        name="mga.seq", build_model=AlignedSeqDecoder, needs="mga.pretrain", frozen=True, defaults={**PRETRAIN_DEFAULTS, **SEQ_DEFAULTS},
        analyses=seq_analyses, paper="the MGA paper §3.4.2 sequential decoder over aligned event embeddings (docs/methods.md, \"MGA\")", **_COMMON,
    )
)
register(
    Trainable(
        name="mga.seq_scratch", build_model=SeqDecoder, defaults={"d": 64, "dropout": 0.1, **TEXT_DEFAULTS, **SEQ_DEFAULTS},
        analyses=lambda table: seq_analyses(table, "mga_seq_scratch"),
        paper="the MGA paper §3.4.2 sequential decoder, event encoders trained from scratch (docs/methods.md, \"MGA\")", **_COMMON,
    )
)
