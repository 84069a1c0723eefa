"""The stays format: the one place that knows column names, dtypes and the manifest layout.

A stays folder holds parquet shards (``shards/<split>-NNNNN.parquet``), one row per ICU stay, and a
``manifest.json``. Every source adapter writes it (``sweeper.data.stays.write_stays``) and everything
downstream reads it (``sweeper.data.stays.read_stays``, ``sweeper.data.loading``). See
``docs/stays-format.md`` for what each group of columns carries.

Columns
-------
ids            ``stay_id`` (str), ``subject_id`` (str, nullable), ``source`` (str), ``split`` (str)
labels         ``label_ihm`` (float32 0/1, nullable), ``label_phenotypes`` (list<float32> of
               ``len(PHENOTYPES)``, nullable), ``label_los_hours`` (float32, nullable)
presence       ``present_<modality>`` (bool, never null) — a missing modality is absent, never zeros
discharge      ``discharge_text`` (str), ``discharge_time`` (float32, hours since ICU admission)
radiology      ``radiology_text`` (str), ``radiology_time`` (float32)
cxr            ``cxr_images`` (list<binary>, PNG-encoded 8-bit grayscale), ``cxr_times`` (list<float32>)
timeseries     hourly bins ``ts_hourly_values`` / ``ts_hourly_mask`` (list<float32> / list<bool>,
               row-major ``hours × features``; values NaN where not observed) and observed events
               ``ts_event_feature`` (list<int16>, index into the manifest's feature names),
               ``ts_event_value`` (list<float32>), ``ts_event_time`` (list<float32>, hours)
demographics   ``demo_<field>``: float32 for the manifest's numeric fields, str for its categorical ones
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweeper.errors import SweeperError

SCHEMA_VERSION = 1

MODALITIES: tuple[str, ...] = ("discharge", "radiology", "cxr", "timeseries", "demographics")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# The 25 HCUP-CCS phenotypes of the MIMIC-III benchmark (Harutyunyan et al. 2019), in its order.
PHENOTYPES: tuple[str, ...] = (
    "Acute and unspecified renal failure",
    "Acute cerebrovascular disease",
    "Acute myocardial infarction",
    "Cardiac dysrhythmias",
    "Chronic kidney disease",
    "Chronic obstructive pulmonary disease and bronchiectasis",
    "Complications of surgical procedures or medical care",
    "Conduction disorders",
    "Congestive heart failure; nonhypertensive",
    "Coronary atherosclerosis and other heart disease",
    "Diabetes mellitus with complications",
    "Diabetes mellitus without complication",
    "Disorders of lipid metabolism",
    "Essential hypertension",
    "Fluid and electrolyte disorders",
    "Gastrointestinal hemorrhage",
    "Hypertension with complications and secondary hypertension",
    "Other liver diseases",
    "Other lower respiratory disease",
    "Other upper respiratory disease",
    "Pleurisy; pneumothorax; pulmonary collapse",
    "Pneumonia (except that caused by tuberculosis)",
    "Respiratory failure; insufficiency; arrest (adult)",
    "Septicemia (except in labor)",
    "Shock",
)
# Acute / chronic / mixed grouping of the benchmark phenotypes (Harutyunyan et al. 2019, Table 2).
PHENOTYPE_GROUPS: dict[str, str] = {
    name: group
    for group, names in {
        "acute": (0, 1, 2, 6, 14, 15, 18, 19, 20, 21, 22, 23, 24),
        "chronic": (4, 5, 9, 11, 12, 13, 16),
        "mixed": (3, 7, 8, 10, 17),
    }.items()
    for name in (PHENOTYPES[i] for i in names)
}

# Task name -> label column: the engine's tasks (and ``multitask``, sweeper.data.multitask). ``los``: a
# regression on log1p(hours); ``los_gt_7d``: binary, hours > 168, unknown (NaN) where the hours are.
TASK_LABELS: dict[str, str] = {
    "ihm": "label_ihm", "phenotyping": "label_phenotypes", "los": "label_los_hours", "los_gt_7d": "label_los_hours",
}
REGRESSION_TASKS: tuple[str, ...] = ("los",)  # model output: a number, not a logit (sweeper.evaluation.regression)

ID_COLUMNS = {
    "stay_id": pa.string(),
    "subject_id": pa.string(),
    "source": pa.string(),
    "split": pa.string(),
}
LABEL_COLUMNS = {
    "label_ihm": pa.float32(),
    "label_phenotypes": pa.list_(pa.float32()),
    "label_los_hours": pa.float32(),
}
MODALITY_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "discharge": {"discharge_text": pa.string(), "discharge_time": pa.float32()},
    "radiology": {"radiology_text": pa.string(), "radiology_time": pa.float32()},
    "cxr": {"cxr_images": pa.list_(pa.binary()), "cxr_times": pa.list_(pa.float32())},
    "timeseries": {
        "ts_hourly_values": pa.list_(pa.float32()),
        "ts_hourly_mask": pa.list_(pa.bool_()),
        "ts_event_feature": pa.list_(pa.int16()),
        "ts_event_value": pa.list_(pa.float32()),
        "ts_event_time": pa.list_(pa.float32()),
    },
    "demographics": {},  # demo_<field> columns, declared per source in the manifest
}
DEMO_PREFIX = "demo_"
NOT_NULL = ("stay_id", "source", "split") + tuple(f"present_{m}" for m in MODALITIES)


class StaysError(SweeperError, ValueError):
    """Bad stays data or input files: the message names the file and field and says what to do."""


def presence_column(modality: str) -> str:
    return f"present_{modality}"


def demo_column(field: str) -> str:
    return f"{DEMO_PREFIX}{field}"


def check_modalities(names, where: str = "modalities") -> tuple[str, ...]:
    """Return ``names`` as a tuple in canonical order, or fail naming the unknown one."""
    names = tuple(names)
    for name in names:
        if name not in MODALITIES:
            raise StaysError(f"{where}: unknown modality {name!r}; known: {', '.join(MODALITIES)}")
    if len(set(names)) != len(names):
        raise StaysError(f"{where}: modality listed twice in {list(names)}")
    return tuple(m for m in MODALITIES if m in names)


def check_task(task: str, where: str = "task") -> str:
    if task not in TASK_LABELS and task != "multitask":  # multitask: sweeper.data.multitask
        raise StaysError(f"{where}: unknown task {task!r}; known: {', '.join(TASK_LABELS)}, multitask")
    return task


@dataclasses.dataclass
class TimeseriesInfo:
    """How the time-series columns are laid out."""

    features: list[str]
    """Feature names; ``ts_event_feature`` indexes this list, hourly bins follow its order."""
    units: dict[str, str]
    """Unit of each feature (free text, e.g. ``"bpm"``)."""
    hours: int = 48
    """Number of hourly bins, from ICU admission."""
    categorical: list[str] = dataclasses.field(default_factory=list)
    """Features whose values are category codes, not measurements (e.g. ICUType)."""
    mean: list[float] = dataclasses.field(default_factory=list)
    """Per-feature mean of observed training values (filled by the writer)."""
    std: list[float] = dataclasses.field(default_factory=list)
    """Per-feature std of observed training values (filled by the writer)."""


@dataclasses.dataclass
class DemographicsInfo:
    """Which ``demo_<field>`` columns exist and how to encode them."""

    numeric: list[str] = dataclasses.field(default_factory=list)
    """Numeric fields (float32; null when unknown)."""
    categorical: list[str] = dataclasses.field(default_factory=list)
    """Categorical fields (str; null when unknown)."""
    mean: dict[str, float] = dataclasses.field(default_factory=dict)
    """Training mean of each numeric field (filled by the writer)."""
    std: dict[str, float] = dataclasses.field(default_factory=dict)
    """Training std of each numeric field (filled by the writer)."""
    categories: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Categories seen in training per categorical field, sorted (filled by the writer)."""

    @property
    def width(self) -> int:
        """Width of the encoded vector: z-scored numerics + a missing flag each, one-hots + unknown."""
        return 2 * len(self.numeric) + sum(len(self.categories.get(f, [])) + 1 for f in self.categorical)


@dataclasses.dataclass
class Manifest:
    """``manifest.json`` of a stays folder."""

    source: str
    """Where the stays came from: ``synthetic``, ``physionet2012``, ..."""
    modalities: list[str]
    """Modalities this source can have (others are absent for every stay)."""
    timeseries: TimeseriesInfo | None = None
    demographics: DemographicsInfo = dataclasses.field(default_factory=DemographicsInfo)
    phenotypes: list[str] = dataclasses.field(default_factory=lambda: list(PHENOTYPES))
    cxr_size: int | None = None
    """Side of the square CXR images in pixels, when the source has images."""
    split: dict[str, Any] = dataclasses.field(default_factory=dict)
    """How the split was made: method, seed, fractions."""
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)
    """Rows left out by cohort rules, by reason."""
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Source-specific counts (e.g. stays with descriptors only)."""
    ground_truth: dict[str, Any] = dataclasses.field(default_factory=dict)
    """For generated cohorts: what was planted (strengths, presence rates, ...)."""
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    label_rates: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    presence_rates: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    shards: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Shard files per split, relative to the stays folder."""
    shard_hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    """sha256 of each shard file's bytes, by its path in ``shards``: readers check them."""
    content_hash: str = ""
    """sha256 over the shard files' bytes, in split then file order."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        try:
            return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=False, allow_nan=False)
        except ValueError:
            raise StaysError("manifest: a statistic is NaN or infinite; drop non-finite values before writing") from None

    @classmethod
    def from_json(cls, text: str, where: str = "manifest.json") -> "Manifest":
        """Parse and validate ``manifest.json`` text; every problem is one line naming the field."""
        try:
            raw = json.loads(text, parse_constant=_no_constant)
        except json.JSONDecodeError as err:
            raise StaysError(f"{where}: not valid JSON ({err.msg}, line {err.lineno}); re-run the prepare step") from None
        except (ValueError, RecursionError) as err:  # NaN / Infinity (no statistic may be one), absurd nesting
            raise StaysError(f"{where}: {err if isinstance(err, ValueError) else 'nested too deeply'}; re-run the prepare step") from None
        if not isinstance(raw, dict):
            raise StaysError(f"{where}: expected a JSON object; re-run the prepare step")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise StaysError(f"{where}: schema_version {version!r}, this sweeper reads {SCHEMA_VERSION}; re-run the prepare step")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - fields
        if unknown:
            raise StaysError(f"{where}: unknown field {sorted(unknown)[0]!r}; re-run the prepare step")
        try:
            _ManifestModel.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            field = "".join(f"{part}: " if i == len(first["loc"]) - 1 else f"{part}." for i, part in enumerate(first["loc"]))
            raise StaysError(f"{where}: {field}{first['msg'].removeprefix('Value error, ')}; re-run the prepare step") from None
        ts, demo = raw.pop("timeseries", None), raw.pop("demographics", None) or {}
        return cls(**raw, timeseries=TimeseriesInfo(**ts) if ts else None, demographics=DemographicsInfo(**demo))

    def expected_columns(self) -> dict[str, pa.DataType]:
        """Every column a shard of this source must have, with its dtype."""
        cols: dict[str, pa.DataType] = {**ID_COLUMNS, **LABEL_COLUMNS}
        cols.update({presence_column(m): pa.bool_() for m in MODALITIES})
        for modality in self.modalities:
            cols.update(MODALITY_COLUMNS[modality])
        if "demographics" in self.modalities:
            cols.update({demo_column(f): pa.float32() for f in self.demographics.numeric})
            cols.update({demo_column(f): pa.string() for f in self.demographics.categorical})
        return cols

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, dtype, nullable=name not in NOT_NULL) for name, dtype in self.expected_columns().items()])


def modality_columns(manifest: Manifest, modality: str) -> list[str]:
    """The columns a reader needs for one modality (its presence flag included)."""
    check_modalities([modality])
    if modality == "demographics":
        cols = [demo_column(f) for f in manifest.demographics.numeric + manifest.demographics.categorical]
    else:
        cols = list(MODALITY_COLUMNS[modality])
    return [presence_column(modality)] + cols


def read_manifest(stays_dir: str | Path) -> Manifest:
    path = Path(stays_dir) / "manifest.json"
    if not Path(stays_dir).is_dir():
        raise StaysError(f"{stays_dir}: no such stays folder; create it with `sweeper data synth` or `sweeper data prepare`")
    if not path.is_file():
        raise StaysError(f"{path}: missing manifest.json — not a stays folder; create it with `sweeper data synth` or `sweeper data prepare`")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise StaysError(f"{path}: cannot read ({err.strerror or err}); check its permissions") from None
    except UnicodeDecodeError as err:
        raise StaysError(f"{path}: not UTF-8 text (byte {err.start}); re-run the prepare step") from None
    return Manifest.from_json(text, where=str(path))


def _no_constant(name: str):
    raise ValueError(f"holds {name}, which is not valid JSON")


# The manifest's JSON schema: ``Manifest.from_json`` validates against it before building the dataclasses.
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Rate = Annotated[float, Field(ge=0.0, le=1.0)]
_Count = Annotated[int, Field(ge=0)]
SHARD_PATH = re.compile(r"shards/[A-Za-z0-9_][A-Za-z0-9._-]*\.parquet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _TimeseriesModel(_Strict):
    features: list[str] = Field(min_length=1)
    units: dict[str, str]
    hours: int = Field(48, ge=1, le=10_000)
    categorical: list[str] = []
    mean: list[_Finite] = []
    std: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = []

    @model_validator(mode="after")
    def _lengths(self):
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: a feature is listed twice")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values and len(values) != len(self.features):
                raise ValueError(f"{name}: {len(values)} values for {len(self.features)} features")
        return self


class _DemographicsModel(_Strict):
    numeric: list[str] = []
    categorical: list[str] = []
    mean: dict[str, _Finite] = {}
    std: dict[str, Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = {}
    categories: dict[str, list[str]] = {}


class _LabelRates(_Strict):
    ihm: _Rate | None
    ihm_known: _Rate
    los_hours_median: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None
    phenotypes_mean: _Rate | None = None


def _per_split(value: dict, what: str) -> dict:
    if set(value) == set(SPLITS):
        return value
    raise ValueError(f"needs one {what} per split ({', '.join(SPLITS)}), has {', '.join(map(str, value)) or 'none'}")


class _ManifestModel(_Strict):
    source: str = Field(min_length=1)
    modalities: list[str]
    timeseries: _TimeseriesModel | None = None
    demographics: _DemographicsModel = _DemographicsModel()
    phenotypes: list[str] = []
    cxr_size: Annotated[int, Field(ge=1, le=4096)] | None = None
    split: dict[str, Any] = {}
    excluded: dict[str, _Count] = {}
    notes: dict[str, Any] = {}
    ground_truth: dict[str, Any] = {}
    counts: dict[str, _Count]
    label_rates: dict[str, _LabelRates]
    presence_rates: dict[str, dict[str, _Rate | None]]
    shards: dict[str, list[str]]
    shard_hashes: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = {}
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    schema_version: int

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, names):
        unknown = [name for name in names if name not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; known: {', '.join(MODALITIES)}")
        if len(set(names)) != len(names):
            raise ValueError("a modality is listed twice")
        return names

    @field_validator("counts", "label_rates", "shards")
    @classmethod
    def _splits(cls, value, info):
        return _per_split(value, {"counts": "count", "label_rates": "set of label rates", "shards": "list of shards"}[info.field_name])

    @field_validator("presence_rates")
    @classmethod
    def _presence(cls, value):
        for split, rates in _per_split(value, "set of presence rates").items():
            if set(rates) != set(MODALITIES):
                raise ValueError(f"{split}: needs one rate per modality ({', '.join(MODALITIES)})")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if "timeseries" in self.modalities and self.timeseries is None:
            raise ValueError("timeseries: missing, but modalities lists 'timeseries'")
        listed = [rel for split in SPLITS for rel in self.shards[split]]
        for rel in listed:
            if not SHARD_PATH.fullmatch(rel):
                raise ValueError(f"shards: {rel!r} is not a file under shards/ of the stays folder")
        if len(set(listed)) != len(listed):
            raise ValueError("shards: a shard is listed twice")
        if self.shard_hashes and set(self.shard_hashes) != set(listed):
            raise ValueError("shard_hashes: needs one hash per listed shard")
        for split in SPLITS:
            if bool(self.counts[split]) != bool(self.shards[split]):
                raise ValueError(f"counts: {self.counts[split]} stays in split {split!r} but {len(self.shards[split])} shards")
        return self
