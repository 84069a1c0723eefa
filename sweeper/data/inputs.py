"""Input kinds: what a trainable reads, built from a collated batch of stays.

A ``Trainable`` names its kind (``inputs``); the collate (``sweeper.data.loading.StaysCollate``)
asks the kind for the model's input shapes and for each batch's inputs. Three kinds are built in:

- ``tensors``: one tensor per modality of the subset (``StaysCollate.tensors``);
- ``tokens``: observed-only (feature, value, time) tokens of the time series over fixed windows,
  plus the static descriptors as tokens at t = 0 (MedFuse);
- ``aggregates``: per stay the last / mean / min / max / count of each series plus the encoded
  descriptors (classical models).

A method family that needs another kind registers it beside its trainable with
``register_input_kind`` (no loader edit).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from sweeper.data.schema import StaysError, demo_column

Collate = Any
"""A ``sweeper.data.loading.StaysCollate``: it hands itself to its kind (the kinds never import the loader)."""

EVENT_MODALITIES = ("timeseries", "demographics")
"""What the ``tokens`` and ``aggregates`` inputs are built from."""
AGGREGATES = ("last", "mean", "min", "max", "count")


@dataclasses.dataclass(frozen=True)
class InputKind:
    """``shapes(collate)``: what the model is built for; ``build(collate, batch, present)``: the
    batch's inputs by key (numpy arrays become tensors); ``modalities``: what it can be built from
    (None: any modality)."""

    name: str
    shapes: Callable[[Collate], dict]
    build: Callable[[Collate, dict, np.ndarray], dict]
    modalities: tuple[str, ...] | None = None

    def can_read(self, subset) -> bool:
        return self.modalities is None or set(subset) <= set(self.modalities)

    def check(self, collate: Collate) -> None:
        """Fail in one line when the collate's subset or source cannot give this kind."""
        if not self.can_read(collate.modalities):
            other = [m for m in collate.modalities if m not in self.modalities]
            raise StaysError(
                f"modality subset {'+'.join(collate.modalities)}: {self.name} inputs are built from {' and '.join(self.modalities)} only, not {', '.join(other)}"
            )
        if self.modalities is not None and "timeseries" in collate.modalities and collate.manifest.timeseries is None:
            raise StaysError(f"source {collate.manifest.source!r}: the manifest describes no time series")


_KINDS: dict[str, InputKind] = {}


def register_input_kind(kind: InputKind) -> InputKind:
    if kind.name in _KINDS:
        raise ValueError(f"input kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def input_kind(name: str) -> InputKind:
    if name not in _KINDS:
        raise StaysError(f"input kind {name!r}: unknown; use one of {', '.join(_KINDS)}")
    return _KINDS[name]


@dataclasses.dataclass(frozen=True)
class TokenVocab:
    """What the ``tokens`` input's ids mean (the model's embedding tables are sized from it).

    Feature ids: the series (manifest order), then numeric descriptors, then categorical ones.
    Class ids: 0 = not categorical; then, per categorical descriptor, its training categories and
    one unknown slot (``field=?``).
    """

    features: tuple[str, ...]
    classes: tuple[str, ...]
    windows: int
    window_hours: float

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return len(self.classes)



def token_vocab(collate: Collate) -> TokenVocab:
    """Ids of the ``tokens`` input (every feature the source has, whatever the subset)."""
    ts, demo = collate.manifest.timeseries, collate.manifest.demographics
    series = tuple(ts.features) if ts else ()
    classes = ["(none)"]
    for field in demo.categorical:
        classes += [f"{field}={c}" for c in demo.categories.get(field, [])] + [f"{field}=?"]
    hours = ts.hours if ts else 48
    return TokenVocab(
        features=series + tuple(demo.numeric) + tuple(demo.categorical),
        classes=tuple(classes),
        windows=max(1, int(np.ceil(hours / collate.window_hours))),
        window_hours=collate.window_hours,
    )

def aggregate_names(collate: Collate) -> list[str]:
    """Column names of the ``aggregates`` input."""
    names = []
    if "timeseries" in collate.modalities:
        names += [f"{f}:{a}" for a in AGGREGATES for f in collate.manifest.timeseries.features]
    if "demographics" in collate.modalities:
        demo = collate.manifest.demographics
        for field in demo.numeric:
            names += [field, f"{field}:missing"]
        for field in demo.categorical:
            names += [f"{field}={c}" for c in demo.categories.get(field, [])] + [f"{field}=?"]
    return names


def build_tokens(collate: Collate, batch, present) -> dict[str, np.ndarray]:
    """Observed-only tokens: descriptors at t = 0, then each (series, window) median at the
    window's centre, in time order; right-padded (``tok_mask`` False) to the batch's longest."""
    vocab, ts = token_vocab(collate), collate.manifest.timeseries
    n_series = len(ts.features) if ts else 0
    static = _static_tokens(collate, batch, collate.rows(present, "demographics"), n_series, vocab)
    series_rows = collate.rows(present, "timeseries")
    if ts is not None:  # the z-score of each series, once per batch
        ts_mean = np.asarray(ts.mean, np.float32)
        ts_std = np.asarray(ts.std, np.float32)
        ts_std = np.where(ts_std > 0, ts_std, 1.0)
    stays = []
    for i in range(len(present)):
        feature, value, time, klass = static[i]
        if series_rows[i] and batch["ts_event_feature"][i] is not None:
            f, w, med = window_medians(batch["ts_event_feature"][i], batch["ts_event_value"][i], batch["ts_event_time"][i], vocab.windows, vocab.window_hours)
            feature = feature + f.tolist()
            value = value + ((med - ts_mean[f]) / ts_std[f]).tolist()
            time = time + ((w + 0.5) * vocab.window_hours).tolist()
            klass = klass + [0] * len(f)
        stays.append((feature, value, time, klass))
    length = max([len(s[0]) for s in stays] + [1])
    out = {
        "tok_feature": np.zeros((len(stays), length), np.int64),
        "tok_value": np.zeros((len(stays), length), np.float32),
        "tok_time": np.zeros((len(stays), length), np.float32),
        "tok_class": np.zeros((len(stays), length), np.int64),
        "tok_mask": np.zeros((len(stays), length), bool),
    }
    for i, (feature, value, time, klass) in enumerate(stays):
        n = len(feature)
        out["tok_feature"][i, :n], out["tok_value"][i, :n], out["tok_time"][i, :n] = feature, value, time
        out["tok_class"][i, :n], out["tok_mask"][i, :n] = klass, True
    return out

def _static_tokens(collate: Collate, batch, rows, n_series: int, vocab: TokenVocab) -> list[tuple[list, list, list, list]]:
    demo = collate.manifest.demographics
    tokens = [([], [], [], []) for _ in rows]
    for j, field in enumerate(demo.numeric):
        raw = np.asarray(batch[demo_column(field)], dtype=np.float32)
        z = (raw - demo.mean[field]) / (demo.std[field] or 1.0)
        for i in np.flatnonzero(rows & ~np.isnan(raw)):
            tokens[i][0].append(n_series + j), tokens[i][1].append(float(z[i])), tokens[i][2].append(0.0), tokens[i][3].append(0)
    class_id = {name: k for k, name in enumerate(vocab.classes)}  # the vocabulary is the one layout of class ids
    for j, field in enumerate(demo.categorical):
        for i in np.flatnonzero(rows):
            value = batch[demo_column(field)][i]
            if value is None:
                continue
            tokens[i][0].append(n_series + len(demo.numeric) + j), tokens[i][1].append(0.0), tokens[i][2].append(0.0)
            tokens[i][3].append(class_id.get(f"{field}={value}", class_id[f"{field}=?"]))
    return tokens

def build_aggregates(collate: Collate, batch, present) -> dict[str, np.ndarray]:
    """Per stay: last, mean, min, max (NaN when never observed) and count of each series, then
    the encoded descriptors (as the ``tensors`` input has them)."""
    parts = []
    if "timeseries" in collate.modalities:
        n_features = len(collate.manifest.timeseries.features)
        stats = np.full((len(present), len(AGGREGATES), n_features), np.nan, np.float32)
        stats[:, AGGREGATES.index("count")] = 0.0
        rows = collate.rows(present, "timeseries")
        for i in np.flatnonzero(rows):
            if batch["ts_event_feature"][i] is not None and len(batch["ts_event_feature"][i]):
                stats[i] = series_aggregates(batch["ts_event_feature"][i], batch["ts_event_value"][i], batch["ts_event_time"][i], n_features)
        parts.append(stats.reshape(len(present), -1))
    if "demographics" in collate.modalities:
        parts.append(collate.encode("demographics", batch, collate.rows(present, "demographics")))
    return {"features": np.concatenate(parts, axis=1).astype(np.float32)}



def window_medians(features, values, times, n_windows: int, window_hours: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median of each (feature, window) with observations; returns (feature, window, median) sorted
    by window then feature. Events past the last window fall into it."""
    features = np.asarray(features, np.int64)
    values = np.asarray(values, np.float32)
    times = np.asarray(times, np.float32)
    keep = np.isfinite(values) & np.isfinite(times)
    features, values, times = features[keep], values[keep], times[keep]
    window = np.clip((times // window_hours).astype(np.int64), 0, n_windows - 1)
    width = features.max(initial=0) + 1
    key = window * width + features
    order = np.lexsort((values, key))
    key, values = key[order], values[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, len(key)])
    median = (values[starts + (counts - 1) // 2] + values[starts + counts // 2]) / 2
    return key[starts] % width, key[starts] // width, median.astype(np.float32)


def series_aggregates(features, values, times, n_features: int) -> np.ndarray:
    """[len(AGGREGATES), n_features]: last (latest time), mean, min, max, count of each series."""
    features = np.asarray(features, np.int64)
    values = np.asarray(values, np.float64)
    times = np.asarray(times, np.float64)
    keep = np.isfinite(values)
    features, values, times = features[keep], values[keep], times[keep]
    out = np.full((len(AGGREGATES), n_features), np.nan)
    count = np.bincount(features, minlength=n_features).astype(np.float64)
    seen = count > 0
    out[4] = count
    out[1, seen] = (np.bincount(features, weights=values, minlength=n_features)[seen]) / count[seen]
    low, high = np.full(n_features, np.inf), np.full(n_features, -np.inf)
    np.minimum.at(low, features, values)
    np.maximum.at(high, features, values)
    out[2, seen], out[3, seen] = low[seen], high[seen]
    order = np.lexsort((times, features))  # by feature, then time: each feature's last entry is its latest
    last_index = order[np.r_[features[order][1:] != features[order][:-1], True]] if len(order) else order
    out[0, features[last_index]] = values[last_index]
    return out.astype(np.float32)


register_input_kind(InputKind("tensors", shapes=lambda collate: collate.tensor_shapes(), build=lambda collate, batch, present: collate.tensors(batch, present)))
register_input_kind(InputKind(
    "tokens", shapes=lambda collate: {"tokens": token_vocab(collate)}, build=build_tokens, modalities=EVENT_MODALITIES,
))
register_input_kind(InputKind(
    "aggregates", shapes=lambda collate: {"features": (len(aggregate_names(collate)),)}, build=build_aggregates, modalities=EVENT_MODALITIES,
))
