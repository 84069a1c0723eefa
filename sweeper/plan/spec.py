"""Experiment specs (``sweeper/specs/<name>.yaml``, or a folder on ``SWEEPER_SPEC_PATH``): typed, validated, expanded into cells.

A cell is one task × modality subset × method × extra-axis values. Within a cell the tune phase
searches the method's space; the final phase re-runs the cell's best config on K seeds.
Profiles are partial specs deep-merged over the base before validation (``--profile NAME``); a
null in a profile removes that key of the base (e.g. ``methods: {picme.mlstm: null}``).
"""
from __future__ import annotations

import builtins
import copy
import dataclasses
import functools
import itertools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweeper.data.schema import MODALITIES, TASK_LABELS
from sweeper.errors import SweeperError
from sweeper.plan.protocols import MissingProtocol, SetName, check_drop
from sweeper.plan.ranking import metric_of

SPEC_DIR = Path(__file__).resolve().parents[1] / "specs"
"""The shipped specs: package data, found by name wherever sweeper is installed."""
SPEC_PATH_ENV = "SWEEPER_SPEC_PATH"
"""Folders of the user's own specs (``os.pathsep``-separated), searched by name before the shipped ones."""
KNOWN_AXES = {
    "train_missing_rate": "probability of hiding each present modality of a training stay (never its last one)",
    "train_drop": "what train_missing_rate hides: 'each' modality independently (default) or one modality's name",
    "hidden_labels": "multitask: share of (stay, label) entries hidden as unknown, the same ones for every method (sweeper.data.multitask)",
}


class SpecError(SweeperError):
    """A malformed experiment spec; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthOptions(_Strict):
    """Options of the synthetic cohort (see ``sweeper data synth --help``)."""

    n_stays: int = Field(2000, ge=30, le=1_000_000, description="number of ICU stays (sweeper.data.synthetic's MIN_STAYS to MAX_STAYS)")
    seed: int = Field(0, ge=0, description="generator and split seed")
    strengths: dict[str, float] = Field(default_factory=dict, description="per-modality signal strength in [0, 1]")
    presence: dict[str, float] = Field(default_factory=dict, description="per-modality presence rate in [0, 1]")
    mnar: float = Field(0.0, ge=0.0, le=1.0, description="missing-not-at-random strength")


class DataSpec(_Strict):
    """Where the stays come from: a prepared stays folder, or the synthetic generator."""

    path: str | None = Field(None, description="stays folder (absolute, or relative to the spec file)")
    synthetic: SynthOptions | None = Field(None, description="generate the synthetic cohort with these options")
    external: dict[SetName, str] = Field(default_factory=dict, description="external cohorts every final model is also scored on: name → stays folder")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'path' or 'synthetic'")
        return self


class Distribution(_Strict):
    """One searched hyperparameter: exactly one of the four forms."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # builtins: the field's name shadows the type here
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("loguniform", "uniform", "int", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of loguniform, uniform, int, choice")
        low_high = getattr(self, kinds[0])
        if kinds[0] == "choice":
            if not low_high:
                raise ValueError("choice needs at least one value")
        elif low_high[0] >= low_high[1] or (kinds[0] == "loguniform" and low_high[0] <= 0):
            raise ValueError(f"{kinds[0]} needs 0 < low < high" if kinds[0] == "loguniform" else f"{kinds[0]} needs low < high")
        return self

    def to_optuna(self):
        import optuna.distributions as od

        if self.loguniform is not None:
            return od.FloatDistribution(*self.loguniform, log=True)
        if self.uniform is not None:
            return od.FloatDistribution(*self.uniform)
        if self.int is not None:
            return od.IntDistribution(*self.int)
        return od.CategoricalDistribution(self.choice)


class MethodSpec(_Strict):
    search: dict[str, Distribution] = Field(default_factory=dict, description="hyperparameters Optuna searches")
    fixed: dict[str, Any] = Field(default_factory=dict, description="hyperparameters held fixed")

    @model_validator(mode="after")
    def _disjoint(self):
        both = set(self.search) & set(self.fixed)
        if both:
            raise ValueError(f"{sorted(both)[0]!r} is both searched and fixed")
        return self


class Subsets(_Strict):
    """Modality subsets: an explicit list, or every subset of the modalities within a size range."""

    explicit: list[list[str]] | None = None
    sizes: tuple[int, int] | None = Field(None, description="min and max subset size, inclusive (2, 5 gives 26)")
    modalities: list[str] = Field(default_factory=lambda: list(MODALITIES), description="modalities 'sizes' draws from")

    @model_validator(mode="after")
    def _check(self):
        if (self.explicit is None) == (self.sizes is None):
            raise ValueError("give exactly one of 'explicit' or 'sizes'")
        for subset in (self.explicit or []) + [self.modalities]:
            for name in subset:
                if name not in MODALITIES:
                    raise ValueError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
            if len(set(subset)) != len(subset) or not subset:
                raise ValueError(f"subset {subset} is empty or repeats a modality")
        if self.sizes is not None and not 1 <= self.sizes[0] <= self.sizes[1] <= len(self.modalities):
            raise ValueError(f"sizes {list(self.sizes)} must satisfy 1 <= min <= max <= {len(self.modalities)}")
        return self

    def expand(self) -> list[tuple[str, ...]]:
        order = {m: i for i, m in enumerate(MODALITIES)}
        if self.explicit is not None:
            subsets = [tuple(sorted(s, key=order.get)) for s in self.explicit]
            if len(set(subsets)) != len(subsets):
                raise ValueError("a subset is listed twice")
            return subsets
        pool = sorted(self.modalities, key=order.get)
        return [c for k in range(self.sizes[0], self.sizes[1] + 1) for c in itertools.combinations(pool, k)]


class Budgets(_Strict):
    tune_trials: int = Field(8, ge=0, description="Optuna trials per cell in the tune phase (0: no tuning, each cell's default config)")
    max_epochs: int = Field(20, ge=1, description="epochs a trial may train (ASHA's max_t)")
    grace_period: int = Field(2, ge=1, description="ASHA: epochs before a trial may be stopped")
    reduction_factor: float = Field(3, gt=1, description="ASHA: keep the top 1/reduction_factor at each rung")
    patience: int = Field(5, ge=1, description="early stop after this many epochs without a better validation metric (sweeper.plan.ranking)")

    @model_validator(mode="after")
    def _grace(self):
        if self.grace_period > self.max_epochs:
            raise ValueError("grace_period must not exceed max_epochs")
        return self


class Final(_Strict):
    seeds: int = Field(10, ge=1, description="seeds per cell in the final phase (K)")
    bootstrap_resamples: int = Field(1000, ge=1000, description="bootstrap resamples of the test stays")
    correction: Literal["holm", "bh"] = Field(
        "holm", description="multiplicity correction of the leaderboard's p-values vs the top cell: Holm (family-wise) or "
        "Benjamini-Hochberg (false discovery rate)"
    )
    test_missing: dict[SetName, MissingProtocol] = Field(default_factory=dict, description="named test-time missing-modality protocols")
    efficiency_reference: str | None = Field(None, description="the method whose row (same task, subset, axes) EffScore is relative to")


class Resources(_Strict):
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per Train worker")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs per Train worker; fractions only when workers_per_trial is 1")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers per trial")
    max_concurrent_trials: int | None = Field(None, ge=1, description="cap on trials in flight (default: what fits)")
    trial_runtime: Literal["auto", "train", "inline"] = Field(
        "auto",
        description="train: each trial one Ray Train job (needed for several workers, DDP); inline: the same loop in the "
        "Tune trial actor, reused across trials (no Train start-up); auto: inline on a local Ray started by sweeper, "
        "train on a cluster (--address) or with workers_per_trial > 1",
    )
    trials_per_experiment: int = Field(
        500,
        ge=1,
        description="tune-phase trials per Tune experiment: a tune phase with more runs as several experiments (tune, "
        "tune-2, ...), whole cells each, one after the other, so the driver holds at most this many trials' state "
        "(Tune keeps every trial of an experiment in memory until it ends)",
    )

    @model_validator(mode="after")
    def _fractional(self):
        if self.workers_per_trial > 1 and 0 < self.gpus_per_trial % 1:
            raise ValueError("fractional gpus_per_trial is only safe with workers_per_trial: 1")
        if self.workers_per_trial > 1 and self.trial_runtime == "inline":
            raise ValueError("trial_runtime inline runs one worker per trial; use train (or auto) with workers_per_trial > 1")
        return self

    def runtime(self, local: bool) -> str:
        """The trial runtime this run uses: ``inline`` or ``train`` (``auto`` resolved)."""
        if self.trial_runtime != "auto":
            return self.trial_runtime
        return "inline" if local and self.workers_per_trial == 1 else "train"


class Spec(_Strict):
    name: str
    description: str = ""
    seed: int = Field(0, description="seeds Optuna's TPE per cell")
    metric: Literal["auroc", "auprc"] = Field(
        "auroc", description="validation metric that tunes (Optuna, ASHA), early-stops and picks each cell's best config; ranks the leaderboard"
    )
    regression_metric: Literal["spearman", "pearson", "mae", "mse"] = Field("spearman", description="the same for los (a regression): "
                                                                            "spearman, pearson, mae or mse (hours; lower is better)")
    data: DataSpec
    tasks: list[Literal["ihm", "phenotyping", "los", "los_gt_7d", "multitask"]]
    modality_subsets: Subsets
    methods: dict[str, MethodSpec]
    budgets: Budgets = Field(default_factory=Budgets)
    final: Final = Field(default_factory=Final)
    resources: Resources = Field(default_factory=Resources)
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="extra axes: name → values")
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict, description="named partial overrides")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks):
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError("list at least one task, each once")
        return tasks

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods):
        from trainables import registry

        if not methods:
            raise ValueError("list at least one method")
        for name, method in methods.items():  # an unknown method, or a value outside its options, raises naming it
            registry.check_options(name, method.fixed, {key: d.choice for key, d in method.search.items() if d.choice})
        return methods

    @field_validator("axes")
    @classmethod
    def _axes(cls, axes):
        for name, values in axes.items():
            if name not in KNOWN_AXES:
                raise ValueError(f"unknown axis {name!r}; known: {', '.join(KNOWN_AXES)}")
            if not values:
                raise ValueError(f"axis {name!r} has no values")
            for value in values if name == "train_drop" else ():
                check_drop(value)
        return axes


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    method: str
    modalities: tuple[str, ...]
    axes: tuple[tuple[str, Any], ...] = ()

    @property
    def cell_id(self) -> str:
        parts = [self.task, self.method, "+".join(self.modalities)] + [f"{k}={v}" for k, v in self.axes]
        return "__".join(parts)

    @functools.cached_property
    def trainable(self):
        """The cell's ``Trainable``, resolved once per cell (not pickled: a trial resolves its own)."""
        from trainables import registry

        return registry.get(self.method)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "trainable"}

    def row(self) -> dict[str, Any]:
        return {"task": self.task, "method": self.method, "subset": list(self.modalities), "n_modalities": len(self.modalities), **dict(self.axes)}


def expand_cells(spec: Spec) -> list[Cell]:
    """Task × method × modality subset × axis values; a method is paired only with the subsets
    its inputs can be built from (``trainables.registry.can_read``)."""
    from trainables import registry

    subsets = spec.modality_subsets.expand()
    axis_names = sorted(spec.axes)
    axis_values = list(itertools.product(*(spec.axes[a] for a in axis_names)))
    return [
        Cell(task, method, subset, tuple(zip(axis_names, values)))
        for task in spec.tasks
        for method in spec.methods
        for subset in subsets
        if registry.can_read(method, subset)
        for values in axis_values
    ]


def _merge(base: dict, override: dict) -> dict:
    """``override`` deep-merged over ``base``; a null removes the key (e.g. a method), also in a mapping the base lacks."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
            continue
        out[key] = _merge(out[key] if isinstance(out.get(key), dict) else {}, value) if isinstance(value, dict) else copy.deepcopy(value)
    return out


def spec_dirs() -> list[Path]:
    """Where a spec name is looked up: the ``SWEEPER_SPEC_PATH`` folders in order, then the shipped specs."""
    extra = [Path(p).expanduser() for p in os.environ.get(SPEC_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, SPEC_DIR]


def spec_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    for folder in spec_dirs():
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    known = sorted({p.stem for folder in spec_dirs() for p in folder.glob("*.yaml")})
    where = ", ".join(str(folder / f"{name_or_path}.yaml") for folder in spec_dirs())
    raise SpecError(f"spec {name_or_path!r}: no {where}; pass a path to a .yaml file or add its folder to "
                    f"{SPEC_PATH_ENV}; known specs: {', '.join(known)}")


def _location(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def load_spec(name_or_path: str, profile: str | None = None) -> tuple[Spec, Path]:
    """Read, merge ``profile`` and validate a spec; errors are one line naming file and key."""
    path = spec_path(name_or_path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err}); check its permissions") from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text (byte {err.start}); save the spec as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply; fix the syntax") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of keys at the top level")
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise SpecError(f"{path}: profiles: expected a mapping of profile names to overrides")
        if profile not in profiles:
            raise SpecError(f"{path}: profiles.{profile}: no such profile; defined: {', '.join(profiles) or 'none'}")
        if not isinstance(profiles[profile], dict):
            raise SpecError(f"{path}: profiles.{profile}: expected a mapping of overrides")
        raw = _merge(raw, profiles[profile])
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(f"{path}: {_location(first)}: {message}") from None
    except SweeperError as err:  # e.g. an unknown method, raised inside a validator
        raise SpecError(f"{path}: methods: {err}") from None
    if spec.final.efficiency_reference not in (None, *spec.methods):
        raise SpecError(f"{path}: final.efficiency_reference: {spec.final.efficiency_reference!r} is not one of the spec's methods "
                        f"({', '.join(spec.methods)})")
    try:
        subsets = spec.modality_subsets.expand()
    except ValueError as err:
        raise SpecError(f"{path}: modality_subsets: {err}") from None
    from trainables import registry

    for method in spec.methods:
        if not any(registry.can_read(method, subset) for subset in subsets):
            from sweeper.data.inputs import input_kind

            kind = input_kind(registry.get(method).inputs)
            raise SpecError(
                f"{path}: methods.{method}: reads {kind.name} inputs built from {' and '.join(kind.modalities or ())} only; "
                "no modality subset of this spec is one of those"
            )
    base = Path.cwd() if path.parent.resolve() == SPEC_DIR else path.parent  # a shipped spec's is the user's folder
    if spec.data.path is not None and not Path(spec.data.path).is_absolute():
        spec.data.path = str((base / spec.data.path).resolve())
    spec.data.external = {name: str((base / folder).resolve()) for name, folder in spec.data.external.items()}
    return spec, path


def trial_config(spec: Spec, cell: Cell, params: dict[str, Any]) -> dict[str, Any]:
    """Method defaults, then the spec's fixed values, then the searched ``params``."""
    config = {**cell.trainable.defaults, **spec.methods[cell.method].fixed, **params}
    config.update(dict(cell.axes))
    config["select_metric"] = metric_of(spec, cell.task)
    return config
