"""``slm.projector``: per-source projectors into a frozen causal LM (docs/methods.md, "SLM projectors").

Each source's feature vector e^s (``trainables.slm.features``) goes through an over-complete
autoencoder: the encoder ``Linear(d_s → d_token)`` gives the token t^s, the decoder
``Linear(d_token → d_s)`` reconstructs ê^s; ``aux_loss`` is the reconstruction term (mean squared
error per source, summed over the stay's sources, averaged over stays), and the task loss
(``trainables.slm.losses``) is weighted by β = ``beta``. Only the projectors train: the LM reads the
tokens through ``inputs_embeds`` with every weight frozen (and no dropout). Class scores are the
LM head's logits of K vocabulary ids drawn once from the trial's seed.

- ``mode: joint``: the stay's present sources form one sequence (absent ones masked out); the
  per-position logits of the K ids are averaged over the present positions.
- ``mode: isolated``: during training each source is its own one-token sequence and its logits
  carry their own loss (the projectors never see each other). At evaluation
  ``evaluate: joint`` reads them jointly, as above (the paper's "iso" row), and
  ``evaluate: best_single`` scores each label with one source alone: the source whose isolated
  projector had the lowest training cross-entropy on that label over the last epoch (the paper's
  best single source, chosen there on the test results; here on training data, so no test leak),
  falling back to the joint reading for a stay without that source.

``lm`` names the backbone (``trainables.lm``): ``smollm2-135m`` (the real SmolLM2-135M), a local
folder, a hub id, or ``tiny:<width>`` for a small random Llama; ``lm_layers: N`` reads it through its
first N blocks only (0, the default: all). The paper: Gemma-2B and
Phi-3-mini; Adam (lr 5e-4, weight decay 3e-4), batch 32, 50 epochs, β = 10.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainables.lm import build_lm

_LMS: dict[tuple[str, int], nn.Module] = {}


def shared_lm(name: str, layers: int = 0) -> nn.Module:
    """One frozen LM per process, name and depth (trials in a reused worker load it once)."""
    if (name, layers) not in _LMS:
        _LMS.clear()  # one backbone in memory at a time
        _LMS[(name, layers)] = build_lm(name, layers=layers)
    return _LMS[(name, layers)]


class SLMProjector(nn.Module):
    def __init__(self, config: dict, input_shapes: dict, n_outputs: int):
        super().__init__()
        self.layout = dict(input_shapes["sources"])
        self.sources = list(self.layout)
        object.__setattr__(self, "lm", shared_lm(str(config["lm"]), int(config.get("lm_layers") or 0)))  # not a submodule: not saved, not optimised
        d_token = self.lm.get_input_embeddings().embedding_dim
        self.mode, self.evaluate = str(config.get("mode", "joint")), str(config.get("evaluate", "joint"))
        if self.mode not in ("joint", "isolated") or self.evaluate not in ("joint", "best_single"):
            raise ValueError(f"mode {self.mode!r} / evaluate {self.evaluate!r}: use mode joint|isolated, evaluate joint|best_single")
        width = int(config.get("d_token") or 0) or d_token
        if width != d_token:
            raise ValueError(f"d_token {width} differs from the LM's embedding width {d_token}")
        self.encoders = nn.ModuleDict({s: nn.Linear(stop - start, d_token) for s, (start, stop) in self.layout.items()})
        self.decoders = nn.ModuleDict({s: nn.Linear(d_token, stop - start) for s, (start, stop) in self.layout.items()})
        vocab = self.lm.get_output_embeddings().weight.shape[0]
        generator = torch.Generator().manual_seed(int(config["seed"]))
        self.register_buffer("class_ids", torch.randperm(vocab, generator=generator)[:n_outputs].clone())
        # best_single: per (source, label), training cross-entropy summed over the current and the last epoch.
        self.register_buffer("source_loss", torch.zeros(2, len(self.sources), n_outputs))
        self.register_buffer("source_count", torch.zeros(2, len(self.sources), n_outputs))

    def _apply(self, fn, *args, **kwargs):
        self.lm._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()  # frozen: no dropout, whatever the loop asks
        return self

    def new_epoch(self) -> None:
        self.source_loss[1], self.source_count[1] = self.source_loss[0].clone(), self.source_count[0].clone()
        self.source_loss[0].zero_(), self.source_count[0].zero_()

    def class_logits(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, K]``: the logits of the class ids at every position of ``tokens`` ``[B, L, d]``."""
        hidden = self.lm.base_model(inputs_embeds=tokens, attention_mask=mask.long()).last_hidden_state
        head = self.lm.get_output_embeddings()
        logits = hidden @ head.weight[self.class_ids].T
        return logits + head.bias[self.class_ids] if getattr(head, "bias", None) is not None else logits

    def forward(self, batch: dict) -> dict:
        x, present = batch["features"], batch["source_present"].bool()
        tokens, recon = [], x.new_zeros(len(x))
        for i, s in enumerate(self.sources):
            e = x[:, slice(*self.layout[s])]
            t = self.encoders[s](e)
            recon = recon + ((self.decoders[s](t) - e) ** 2).mean(dim=1) * present[:, i]
            tokens.append(t)
        tokens = torch.stack(tokens, dim=1)  # [N, S, d]
        out = {"aux_loss": recon.mean()}
        if self.mode == "isolated" and self.training:
            n, s, d = tokens.shape
            per_source = self.class_logits(tokens.reshape(n * s, 1, d), torch.ones(n * s, 1, device=x.device)).reshape(n, s, -1)
            self._track(per_source.detach(), batch["label"], present)
            out["logits"] = per_source.masked_fill(~present.unsqueeze(-1), float("nan"))  # absent: left out by the loss
            return out
        per_position = self.class_logits(tokens, present)
        weights = present.float().unsqueeze(-1)
        joint = (per_position * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        if self.mode == "isolated" and self.evaluate == "best_single":
            joint = self._best_single(tokens, present, joint)
        out["logits"] = joint
        return out

    def _track(self, per_source: torch.Tensor, labels: torch.Tensor, present: torch.Tensor) -> None:
        labels = labels.reshape(len(labels), 1, -1).expand_as(per_source)
        known = ~torch.isnan(labels) & present.unsqueeze(-1)
        ce = F.binary_cross_entropy_with_logits(per_source, torch.nan_to_num(labels), reduction="none")
        self.source_loss[0] += torch.where(known, ce, torch.zeros_like(ce)).sum(dim=0)
        self.source_count[0] += known.sum(dim=0)

    def best_sources(self) -> torch.Tensor:
        """``[K]``: per label, the source with the lowest mean training cross-entropy (last full epoch,
        else the current one)."""
        row = 1 if self.source_count[1].sum() > 0 else 0
        mean = self.source_loss[row] / self.source_count[row].clamp(min=1)
        return mean.masked_fill(self.source_count[row] == 0, float("inf")).argmin(dim=0)

    def _best_single(self, tokens: torch.Tensor, present: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        n, s, d = tokens.shape
        per_source = self.class_logits(tokens.reshape(n * s, 1, d), torch.ones(n * s, 1, device=tokens.device)).reshape(n, s, -1)
        best = self.best_sources()
        chosen = per_source.gather(1, best.view(1, 1, -1).expand(n, 1, -1)).squeeze(1)
        has = present.gather(1, best.view(1, -1).expand(n, -1))
        return torch.where(has, chosen, joint)


def projector_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def adam(model: nn.Module, config: dict):
    """The paper's optimiser: Adam with (L2) weight decay, over the projectors only."""
    return torch.optim.Adam(projector_parameters(model), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)))


def new_epoch(model: nn.Module, epoch: int) -> None:
    model.new_epoch()
