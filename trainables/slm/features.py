"""The ``slm.sources`` input kind: one feature vector per data source (docs/methods.md, "SLM projectors").

Sources, each present or not per stay:

- ``chart`` and ``lab``: the stay's time series split into bedside (charted) series and laboratory
  tests (``LAB_SERIES``: the 22 lab tests of PhysioNet 2012 and the synthetic cohort's glucose and
  pH), each series summarised by HAIM's 11 statistics (``STATISTICS``) over its observations in
  time order. Values are first z-scored with the training split's per-series mean and std (the
  manifest's), so every statistic is on the training split's scale; the two that grow with the
  number of observations (sum of |diff|, peaks) are log1p-compressed. An unobserved series is zeros.
- ``cxr_latest`` and ``cxr_mean``: the latest chest X-ray and the time-weighted mean of all of the
  stay's X-rays, ``w_j = (t_j - min t) / max t`` normalised to sum to one (the paper's weights do not,
  and give a single image weight 0: it falls back to the latest image; ``sweeper.encode.cxr_series``).
  Each image's embedding comes from the frozen CXR expert the method names in ``cxr_encoder``
  (default ``effnet_lite0``: EfficientNet-Lite0 with ImageNet weights; ``cnn``: the frozen random
  CNN), which the engine runs once per image into the embedding cache and hands over as the
  ``cxr_series:<expert>`` feature; with ``cxr_encoder: pixels`` (or a collate given no such
  feature) an image's embedding is its pixels average-pooled to ``CXR_SIDE`` squared, centred.
- ``radiology`` and ``discharge``: the note's embedding from the run's frozen text encoder when
  the method sets ``text_encoder`` (the engine's embedding cache; with ``text_chunks: true``, the
  default here, the whole note as the mean of its 512-token chunks' embeddings), else its hashed
  bag of words.
- ``demographics``: the encoded descriptors.

``features`` is every source concatenated (what a per-task XGBoost reads), ``source_present`` says
which sources each stay has, and the shapes say where each source sits in ``features``.
"""
from __future__ import annotations

import io

import numpy as np

from sweeper.data.inputs import InputKind, register_input_kind
from sweeper.encode.cxr_series import cxr_weights, image_times, latest_and_mean  # noqa: F401 - cxr_weights: the rule, re-exported

STATISTICS = (
    "mean", "variance", "min", "max", "mean_diff", "mean_abs_diff", "max_diff", "sum_abs_diff", "last_minus_first", "peaks_above_median", "trend",
)
LAB_SERIES = frozenset({
    "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "Glucose", "HCO3", "HCT", "K", "Lactate", "Mg", "Na",
    "PaCO2", "PaO2", "pH", "Platelets", "TroponinI", "TroponinT", "WBC",
})
CXR_SIDE = 8
FEATURE_DEFAULTS = {"cxr_encoder": "effnet_lite0", "text_chunks": True}
"""What both SLM methods read unless the spec says otherwise: each CXR through EfficientNet-Lite0
(ImageNet weights), and each note whole, its chunks' embeddings averaged (the engine computes both once)."""


def series_statistics(values, times) -> np.ndarray:
    """HAIM's 11 statistics of one series (observations in any order; sorted by time here)."""
    values, times = np.asarray(values, np.float64), np.asarray(times, np.float64)
    out = np.zeros(len(STATISTICS))
    if len(values) == 0:
        return out
    order = np.argsort(times, kind="stable")
    v, t = values[order], times[order]
    d = np.diff(v)
    out[0], out[1], out[2], out[3] = v.mean(), v.var(), v.min(), v.max()
    if len(d):
        out[4], out[5], out[6], out[7] = d.mean(), np.abs(d).mean(), d.max(), np.abs(d).sum()
    out[8] = v[-1] - v[0]
    inner = v[1:-1]
    out[9] = np.sum((inner > v[:-2]) & (inner > v[2:]) & (inner > np.median(v))) if len(v) > 2 else 0.0
    spread = t - t.mean()
    if len(v) > 1 and (spread**2).sum() > 0:  # least-squares slope per hour
        out[10] = (spread * (v - v.mean())).sum() / (spread**2).sum()
    return out


def _compress(stats: np.ndarray) -> np.ndarray:
    """log1p of the statistics that grow with the number of observations."""
    for name in ("sum_abs_diff", "peaks_above_median"):
        stats[..., STATISTICS.index(name)] = np.log1p(stats[..., STATISTICS.index(name)])
    return stats


def source_layout(collate) -> dict[str, tuple[int, int]]:
    """Source name → (start, stop) in ``features``, for the sources the collate's subset gives."""
    manifest, widths = collate.manifest, {}
    if "timeseries" in collate.modalities:
        groups = series_groups(manifest.timeseries.features)
        widths.update({g: len(idx) * len(STATISTICS) for g, idx in groups.items()})
    if "cxr" in collate.modalities:
        key = cxr_feature(collate)
        width = collate.features[key][1].shape[1] // 2 if key else CXR_SIDE * CXR_SIDE
        widths.update(cxr_latest=width, cxr_mean=width)
    for note in ("radiology", "discharge"):
        if note in collate.modalities:
            widths[note] = collate.tensor_shapes()[note][0]
    if "demographics" in collate.modalities:
        widths["demographics"] = manifest.demographics.width
    layout, start = {}, 0
    for name, width in widths.items():
        layout[name] = (start, start + width)
        start += width
    return layout


def cxr_feature(collate) -> str | None:
    """The key of the precomputed ``[latest ‖ time-weighted mean]`` CXR embeddings the engine gave
    the collate (``sweeper.encode.cxr_series``), or None: the pixels are pooled here."""
    keys = [k for k in collate.features if str(k).startswith("cxr_series:")]
    if len(keys) > 1:
        raise ValueError(f"slm.sources: several CXR encoders given ({', '.join(sorted(keys))}); a method reads one")
    return keys[0] if keys else None


def series_groups(features) -> dict[str, list[int]]:
    groups = {"chart": [i for i, f in enumerate(features) if f not in LAB_SERIES], "lab": [i for i, f in enumerate(features) if f in LAB_SERIES]}
    return {name: idx for name, idx in groups.items() if idx}


def build_sources(collate, batch, present) -> dict[str, np.ndarray]:
    layout = source_layout(collate)
    n = len(present)
    features = np.zeros((n, max([stop for _, stop in layout.values()] + [0])), np.float32)
    source_present = np.zeros((n, len(layout)), bool)
    names = list(layout)
    if "timeseries" in collate.modalities:
        rows = collate.rows(present, "timeseries")
        for group, stats in _series_sources(collate, batch, rows).items():
            start, stop = layout[group]
            features[:, start:stop] = stats
            source_present[:, names.index(group)] = rows
    if "cxr" in collate.modalities:
        rows, key = collate.rows(present, "cxr"), cxr_feature(collate)
        if key:
            latest, mean = np.split(collate._lookup(np.asarray(batch["stay_id"]).astype(str), key, rows), 2, axis=1)
        else:
            latest, mean = _cxr_sources(batch, rows)
        for name, value in (("cxr_latest", latest), ("cxr_mean", mean)):
            features[:, slice(*layout[name])] = value
            source_present[:, names.index(name)] = rows
    for name in ("radiology", "discharge", "demographics"):
        if name in collate.modalities:
            rows = collate.rows(present, name)
            value = collate._lookup(np.asarray(batch["stay_id"]).astype(str), name, rows) if name in collate.features else collate.encode(name, batch, rows)
            features[:, slice(*layout[name])] = value
            source_present[:, names.index(name)] = rows
    return {"features": features, "source_present": source_present}


def _series_sources(collate, batch, rows) -> dict[str, np.ndarray]:
    ts = collate.manifest.timeseries
    mean, std = np.asarray(ts.mean, np.float64), np.asarray(ts.std, np.float64)
    std = np.where(std > 0, std, 1.0)
    n_features = len(ts.features)
    stays, features, values, times = [], [], [], []
    for i in np.flatnonzero(rows):
        feature = batch["ts_event_feature"][i]
        if feature is not None and len(feature):
            features.append(np.asarray(feature, np.int64))
            values.append(np.asarray(batch["ts_event_value"][i], np.float64))
            times.append(np.asarray(batch["ts_event_time"][i], np.float64))
            stays.append(np.full(len(feature), i))
    stats = np.zeros((len(rows) * n_features, len(STATISTICS)))
    if stays:
        feature = np.concatenate(features)
        value = (np.concatenate(values) - mean[feature]) / std[feature]
        groups, grouped = all_series_statistics(np.concatenate(stays) * n_features + feature, value, np.concatenate(times))
        stats[groups] = grouped
    stats = _compress(stats.reshape(len(rows), n_features, -1)).astype(np.float32)
    return {group: stats[:, idx].reshape(len(rows), -1) for group, idx in series_groups(ts.features).items()}


def all_series_statistics(keys, values, times) -> tuple[np.ndarray, np.ndarray]:
    """``series_statistics`` of every series at once: ``(keys [G], stats [G, 11])`` for the distinct
    ``keys`` (one per series), from all their observations (non-finite values and times dropped)."""
    keys, values, times = np.asarray(keys, np.int64), np.asarray(values, np.float64), np.asarray(times, np.float64)
    keep = np.isfinite(values) & np.isfinite(times)
    keys, values, times = keys[keep], values[keep], times[keep]
    order = np.lexsort((times, keys))
    k, v, t = keys[order], values[order], times[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(k)]
    n = (ends - starts).astype(np.float64)
    group = np.repeat(np.arange(len(starts)), ends - starts)
    out = np.zeros((len(starts), len(STATISTICS)))
    if not len(starts):
        return k[starts], out
    sum_ = lambda x: np.bincount(group, weights=x, minlength=len(starts))  # noqa: E731
    out[:, 0] = sum_(v) / n
    out[:, 1] = np.maximum(sum_((v - out[group, 0]) ** 2) / n, 0.0)
    out[:, 2], out[:, 3] = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    d = np.diff(v)
    within = group[1:] == group[:-1]  # a difference inside one series
    n_diff = np.maximum(n - 1, 1)
    d_sum = np.bincount(group[1:][within], weights=d[within], minlength=len(starts))
    abs_sum = np.bincount(group[1:][within], weights=np.abs(d[within]), minlength=len(starts))
    d_max = np.full(len(starts), -np.inf)
    np.maximum.at(d_max, group[1:][within], d[within])
    out[:, 4], out[:, 5], out[:, 6], out[:, 7] = d_sum / n_diff, abs_sum / n_diff, np.where(np.isfinite(d_max), d_max, 0.0), abs_sum
    out[:, 8] = v[ends - 1] - v[starts]
    by_value = np.lexsort((v, group))  # the median of each series from its values in order
    sorted_v = v[by_value]
    median = (sorted_v[starts + (ends - starts - 1) // 2] + sorted_v[starts + (ends - starts) // 2]) / 2
    if len(v) > 2:
        inner = np.arange(1, len(v) - 1)
        peak = (group[inner - 1] == group[inner]) & (group[inner + 1] == group[inner])
        peak &= (v[inner] > v[inner - 1]) & (v[inner] > v[inner + 1]) & (v[inner] > median[group[inner]])
        out[:, 9] = np.bincount(group[inner][peak], minlength=len(starts))
    spread = t - (sum_(t) / n)[group]
    denominator = sum_(spread**2)
    slope = np.divide(sum_(spread * (v - out[group, 0])), denominator, out=np.zeros(len(starts)), where=denominator > 0)
    out[:, 10] = np.where(n > 1, slope, 0.0)
    return k[starts], out


def image_embedding(png: bytes) -> np.ndarray:
    """An image's pixels, average-pooled to ``CXR_SIDE`` x ``CXR_SIDE``, in [-0.5, 0.5]."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L").resize((CXR_SIDE, CXR_SIDE), Image.BOX)
    return np.asarray(image, np.float32).reshape(-1) / 255.0 - 0.5


def _cxr_sources(batch, rows) -> tuple[np.ndarray, np.ndarray]:
    latest = np.zeros((len(rows), CXR_SIDE * CXR_SIDE), np.float32)
    mean = np.zeros_like(latest)
    for i in np.flatnonzero(rows):
        pngs, times = batch["cxr_images"][i], batch["cxr_times"][i]
        if pngs is None or not len(pngs):
            continue
        latest[i], mean[i] = latest_and_mean(np.stack([image_embedding(p) for p in pngs]), image_times(pngs, times))
    return latest, mean


register_input_kind(InputKind(
    "slm.sources", shapes=lambda collate: {"sources": source_layout(collate)}, build=build_sources,
    modalities=("timeseries", "cxr", "radiology", "discharge", "demographics"),
))
