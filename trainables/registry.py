"""name → trainable. The engine looks methods up here and never imports a method module itself.

A trainable is a small record: how to build its model for a modality subset, the search space it
defaults to, and what it needs from the data. Method modules call ``register`` at import; the
registry imports ``trainables.<family>`` modules on first lookup.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from sweeper.errors import SweeperError

FAMILIES = ("picme", "medfuse", "classical")


@dataclasses.dataclass(frozen=True)
class Trainable:
    name: str
    """Registered name, ``<family>.<variant>`` (e.g. ``picme.supervised``)."""
    build_model: Callable[..., Any]
    """Torch methods: ``build_model(config, input_shapes, n_outputs) -> torch.nn.Module``; the
    module's ``forward(batch)`` returns ``{"logits": [N, n_outputs]}`` and may add ``"aux_loss"``.
    Non-torch methods (``fit`` set): ``build_model(config, n_outputs, seed)`` returns an unfitted
    sklearn-style estimator (``fit``/``predict_proba``)."""
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Config values used when the spec does not search or fix them."""
    paper: str = ""
    """Paper section the trainable implements."""
    inputs: str = "tensors"
    """What the model reads (``sweeper.data.loading.INPUT_KINDS``): per-modality ``tensors``,
    observed-only ``tokens`` of the series and descriptors, or per-stay ``aggregates``."""
    fit: Callable[..., Any] | None = None
    """Set for non-torch methods: ``fit(estimator, X, y, X_val, y_val)`` fits in place; the
    trial is then one "epoch" (no per-epoch early stopping to do)."""
    frozen: bool = False
    """Reads the ``needs`` stage's frozen per-modality embeddings in place of its raw inputs."""
    needs: str | None = None
    """The stage (``register_stage``) whose artifact every trial of this method reads; the engine
    runs that stage once per modality subset, data and stage config, before the tune phase."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """A task-agnostic step other trainables depend on (e.g. PiCME's contrastive pre-training).

    ``run(config, data, collate, session)`` trains inside a Ray Train worker on the collated splits
    and reports its artifact (a folder) with its last result. ``config_keys`` are the config entries
    that define the artifact (with the subset and data hash they form its key); ``defaults`` their
    values when the dependent method's config does not set them. ``read(folder)`` turns an artifact
    folder into what dependent trials get: ``{"features": {modality: (ids, matrix)}, "config": {...}}``.
    """

    name: str
    run: Callable[..., Any]
    read: Callable[..., dict]
    config_keys: tuple[str, ...]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    paper: str = ""


_REGISTRY: dict[str, Trainable] = {}
_STAGES: dict[str, Stage] = {}
_loaded = False


def register_stage(stage: Stage) -> Stage:
    if stage.name in _STAGES:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    _STAGES[stage.name] = stage
    return stage


def stage(name: str) -> Stage:
    _load_families()
    return _STAGES[name]


def register(trainable: Trainable) -> Trainable:
    if trainable.name in _REGISTRY:
        raise ValueError(f"trainable {trainable.name!r} is registered twice")
    _REGISTRY[trainable.name] = trainable
    return trainable


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for family in FAMILIES:
            importlib.import_module(f"trainables.{family}")


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def get(name: str) -> Trainable:
    """The trainable of ``name``; a spec may label variants of one trainable ``name:label``
    (e.g. ``medfuse:add`` with ``fixed: {fusion: add}``), each its own leaderboard row."""
    _load_families()
    base = name.split(":", 1)[0]
    if base not in _REGISTRY:
        raise SweeperError(f"method {name!r}: no such trainable; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[base]


def can_read(name: str, subset) -> bool:
    """Whether the method's input kind can be built from the modality subset (token and
    aggregate inputs come from the time series and descriptors only)."""
    from sweeper.data.loading import EVENT_MODALITIES

    return get(name).inputs == "tensors" or set(subset) <= set(EVENT_MODALITIES)
