"""name → trainable, and everything the engine asks a method for.

A method family is one package under ``trainables/`` (or any installed package that declares a
``sweeper.trainables`` entry point): importing it calls ``register`` / ``register_stage``. The
registry discovers the families on first lookup; the engine never imports a method module itself
and never guesses what a method wants: a ``Trainable`` declares it, with defaults that suit a plain
supervised classifier.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable

from sweeper.errors import SweeperError

ENTRY_POINT_GROUP = "sweeper.trainables"


def task_loss(task: str, train_labels):
    """Default loss per task: weighted BCE (pos_weight = n_neg / n_pos over the known training labels)
    for ihm and los_gt_7d (whose unknown labels it leaves out), plain BCE over the 25 labels for
    phenotyping, MSE on log1p(hours) for los (the model's output is its prediction of log1p(hours))."""
    import torch

    from trainables.task_losses import KnownTargetsLoss

    if task == "los":
        return KnownTargetsLoss(torch.nn.MSELoss())
    if task in ("ihm", "los_gt_7d"):
        known = train_labels[~torch.isnan(train_labels)]
        positives = known.sum().clamp(min=1.0)
        weighted = torch.nn.BCEWithLogitsLoss(pos_weight=(len(known) - positives) / positives)
        return weighted if task == "ihm" else KnownTargetsLoss(weighted)
    return torch.nn.BCEWithLogitsLoss()


def adamw(model, config: dict):
    """Default optimizer: AdamW over every parameter, ``lr`` and ``weight_decay`` from the config."""
    import torch

    return torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)))


def state_dict_export(model) -> dict:
    """Default export of the best weights (``save_model: true``)."""
    return {"state_dict": model.state_dict()}


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
    """Config values used when the spec does not search or fix them. The loop reads ``lr``,
    ``batch_size``, and, when set, ``weight_decay``, ``warmup_steps`` (linear learning-rate warm-up
    over the first optimizer steps) and ``grad_clip`` (max gradient norm)."""
    paper: str = ""
    """Paper section the trainable implements."""
    inputs: str = "tensors"
    """The input kind the model reads (``sweeper.data.inputs``): per-modality ``tensors``,
    observed-only ``tokens`` of the series and descriptors, per-stay ``aggregates``, or a kind the
    family registers itself with ``register_input_kind``."""
    fit: Callable[..., Any] | None = None
    """Set for non-torch methods: ``fit(estimator, X, y, X_val, y_val)`` fits in place; the
    trial is then one "epoch" (no per-epoch early stopping to do)."""
    loss: Callable[..., Any] = task_loss
    """``loss(task, train_labels) -> module``; called as ``loss_fn(logits, target)``."""
    optimizer: Callable[..., Any] = adamw
    """``optimizer(model, config) -> torch.optim.Optimizer``: the parameter groups are the method's."""
    select: str | None = None
    """What the kept weights and early stopping follow: ``None`` for the spec's ``metric`` on
    validation (higher is better), or ``"loss"`` for the validation loss (lower is better)."""
    on_epoch_start: Callable[..., Any] | None = None
    """``on_epoch_start(model, epoch)`` before each training epoch (e.g. a warm-up that unfreezes)."""
    export: Callable[..., Any] = state_dict_export
    """``export(model) -> dict`` saved as ``models/<cell>/seed-K.pt`` when the config sets ``save_model``."""
    attributions: Callable[..., Any] | None = None
    """``attributions(model, test_data, device) -> {modality: share}`` after the final epoch; the
    shares land in ``analyses/attributions.csv``."""
    summaries: Callable[..., Any] | None = None
    """``summaries(model, test_data, device) -> {name: number}`` after the final epoch (e.g. a
    router's mean weights); reported as ``summary:<name>`` metrics and handed to ``analyses``."""
    analyses: Callable[..., list] | None = None
    """``analyses(table) -> [Analysis]``: the run's ``summaries`` of this method's cells (columns
    cell_id, task, method, subset, name, value = mean over seeds, n_seeds) as tables for ``analyses/``."""
    prepare: Callable[..., Any] | None = None
    """``prepare(config, data) -> {key: value}`` before the model is built, from the collated
    ``train`` and ``val`` splits only (the test split is never handed over); the values join the
    trial's config (MedMIX's best single expert, chosen by a probe scored on validation)."""
    frozen: bool = False
    """Reads the ``needs`` stage's frozen per-modality embeddings in place of its raw inputs."""
    needs: str | None = None
    """The stage (``register_stage``) whose artifact every trial of this method reads; the engine
    runs that stage once per modality subset, data and stage config, before the tune phase."""
    options: dict[str, tuple] = dataclasses.field(default_factory=dict)
    """Config keys whose value is one of a few (e.g. medfuse's ``fusion``): a spec's fixed value or
    searched choice outside them is refused when the spec loads, before anything runs."""


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One table a stage's analyses produce: ``analyses/<name>.csv`` holds ``table``; the report
    and ``leaderboard.md`` show ``summary`` (``table`` when None) under ``title``."""

    name: str
    title: str
    table: Any  # pandas.DataFrame
    summary: Any = None


@dataclasses.dataclass(frozen=True)
class Stage:
    """A task-agnostic step other trainables depend on (e.g. PiCME's contrastive pre-training).

    ``run(config, data, collate, session)`` trains inside a trial on the collated splits and reports
    its artifact (a folder) with its last result. ``config_keys`` are the config entries that
    define the artifact (with the subset and data hash they form its key); ``defaults`` their values
    when the dependent method's config does not set them. ``read(folder)`` turns an artifact folder
    into what dependent trials get: ``{"features": {modality: (ids, matrix)}, "config": {...}}``.
    ``analyses(artifacts, attributions)`` turns the run's artifacts (``[(key, entry, folder)]``, the
    entry as in ``artifacts/<stage>/index.json``) and the attribution table into ``Analysis`` tables.
    """

    name: str
    run: Callable[..., Any]
    read: Callable[..., dict]
    config_keys: tuple[str, ...]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    paper: str = ""
    analyses: Callable[..., list[Analysis]] | None = None


_REGISTRY: dict[str, Trainable] = {}
_STAGES: dict[str, Stage] = {}
_loaded = False


def register_stage(stage: Stage) -> Stage:
    if stage.name in _STAGES:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    _STAGES[stage.name] = stage
    return stage


def register(trainable: Trainable) -> Trainable:
    if trainable.name in _REGISTRY:
        raise ValueError(f"trainable {trainable.name!r} is registered twice")
    _REGISTRY[trainable.name] = trainable
    return trainable


def family_modules() -> list[str]:
    """Every method family: the packages under ``trainables/``, then the modules other installed
    packages name in the ``sweeper.trainables`` entry-point group."""
    import trainables

    found = [f"trainables.{info.name}" for info in pkgutil.iter_modules(trainables.__path__) if info.ispkg]
    return found + sorted(point.value for point in entry_points(group=ENTRY_POINT_GROUP))


def _load_families() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in family_modules():
            importlib.import_module(module)


def names() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def check_options(name: str, fixed: dict, choices: dict[str, list]) -> None:
    """Raise ``SweeperError`` naming the key when a fixed value or searched choice of method ``name``
    is not one of its trainable's ``options`` (and when ``name`` is no trainable)."""
    for key, allowed in get(name).options.items():
        for value in ([fixed[key]] if key in fixed else []) + list(choices.get(key, [])):
            if value not in allowed:
                raise SweeperError(f"{name}.{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def get(name: str) -> Trainable:
    """The trainable of ``name``; a spec may label variants of one trainable ``name:label``
    (e.g. ``medfuse:add`` with ``fixed: {fusion: add}``), each its own leaderboard row."""
    _load_families()
    base = name.split(":", 1)[0]
    if base not in _REGISTRY:
        raise SweeperError(f"method {name!r}: no such trainable; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[base]


def stage(name: str) -> Stage:
    _load_families()
    if name not in _STAGES:
        raise SweeperError(f"stage {name!r}: no such stage; registered: {', '.join(sorted(_STAGES)) or 'none'}")
    return _STAGES[name]


def stages() -> list[Stage]:
    _load_families()
    return [_STAGES[name] for name in sorted(_STAGES)]


def can_read(name: str, subset) -> bool:
    """Whether the method's input kind can be built from the modality subset."""
    from sweeper.data.inputs import input_kind

    return input_kind(get(name).inputs).can_read(subset)
