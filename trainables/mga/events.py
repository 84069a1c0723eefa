"""The ``mga.events`` input kind: each stay as a chronological event sequence (docs/methods.md, "MGA").

What a stay's events are, from the times the stays carry (``sweeper.data.schema``):

- ``demographics``: one event at t = 0;
- ``timeseries``: one event per window of ``window_hours`` hours (1, the default of ``mga.seq``:
  the paper's hourly bins) with at least one observation, at the window's end (window w covers
  [w·W, (w + 1)·W) and is complete at (w + 1)·W, cut at the series' last hour); the event is the
  series up to that hour (``ev_hour``: the last hourly bin it includes);
- ``discharge`` / ``radiology``: one event each, at ``discharge_time`` / ``radiology_time`` (a stay
  holds one text per note kind; for radiology it is every report of the window joined, timed at the
  last one);
- ``cxr``: one event, the latest image (the one every MGA encoder and the pre-training embed), at
  its time in ``cxr_times``; earlier images of the stay are not events of their own.

An event whose time is unknown (NaN) gets NaN here and is placed at the horizon by the model. Events
are sorted by time; ties go demographics, then time-series bins, then the other modalities in the
canonical order. The prediction horizon is applied by the model (``horizon_hours``), not here, so one
collated split serves every horizon.

Besides the ``tensors`` input of the subset, the kind gives per stay, right-padded to the batch's
longest (``tok_mask`` False on padding; the loop batches stays of similar length together):
``ev_modality`` (index into the subset), ``ev_hour`` (the bin of a time-series event, else 0),
``ev_time`` (hours since ICU admission) and ``tok_mask``. When the subset's time series comes frozen
from the ``mga.pretrain`` artifact, ``timeseries_hourly`` [N, hours · d] holds its per-hour aligned
embeddings.
"""
from __future__ import annotations

import numpy as np

from sweeper.data.inputs import InputKind, register_input_kind

HOURLY = "timeseries_hourly"
"""The feature key of the pre-training's per-hour time-series embeddings (``trainables.mga.pretrain``)."""
EVENTS = "events"
"""The input-shapes key describing the sequence (``{"hours": H}``)."""
_PRIORITY = {"demographics": 0, "timeseries": 1}


def _hours(collate) -> int:
    ts = collate.manifest.timeseries
    return int(ts.hours) if ts is not None else 48


def event_shapes(collate) -> dict:
    shapes = dict(collate.tensor_shapes())
    if HOURLY in collate.features and "timeseries" in collate.modalities:
        shapes[HOURLY] = (_hours(collate), collate.features[HOURLY][1].shape[1] // _hours(collate))
    shapes[EVENTS] = {"hours": _hours(collate)}
    return shapes


def _event_time(collate, batch, modality: str, i: int) -> float:
    if modality in ("discharge", "radiology"):
        value = batch[f"{modality}_time"][i]
        return float(value) if value is not None else float("nan")
    times = batch["cxr_times"][i]
    if times is None or not len(times):
        return float("nan")
    return float(np.max(np.asarray(times, np.float32)))  # the latest image, as the collate reads it


def stay_events(collate, batch, present: np.ndarray, i: int) -> list[tuple[float, int, int, int]]:
    """(time, priority, modality index, hour) of stay ``i``'s events, sorted."""
    events = []
    hours = _hours(collate)
    for j, modality in enumerate(collate.modalities):
        if not present[i, j]:
            continue
        if modality == "demographics":
            events.append((0.0, 0, j, 0))
        elif modality == "timeseries":
            mask = batch["ts_hourly_mask"][i]
            if mask is None:
                continue
            observed = np.asarray(mask, bool).reshape(hours, -1).any(axis=1)
            width = float(collate.window_hours)
            ends = np.minimum(np.ceil((np.floor(np.flatnonzero(observed) / width) + 1) * width - 1e-6), hours).astype(int)
            events += [(float(end), 1, j, int(end) - 1) for end in np.unique(ends)]
        else:
            events.append((_event_time(collate, batch, modality, i), 2 + j, j, 0))
    # NaN times last (the model places them at the horizon), then by time, priority, modality
    return sorted(events, key=lambda e: (np.isnan(e[0]), 0.0 if np.isnan(e[0]) else e[0], e[1], e[2]))


def build_events(collate, batch, present: np.ndarray) -> dict[str, np.ndarray]:
    out = dict(collate.tensors(batch, present))
    if HOURLY in collate.features and "timeseries" in collate.modalities:
        rows = collate.rows(present, "timeseries")
        out[HOURLY] = collate._lookup(np.asarray(batch["stay_id"]).astype(str), HOURLY, rows)
    stays = [stay_events(collate, batch, present, i) for i in range(len(present))]
    length = max([len(s) for s in stays] + [1])
    out.update({
        "ev_modality": np.zeros((len(stays), length), np.int64), "ev_hour": np.zeros((len(stays), length), np.int64),
        "ev_time": np.zeros((len(stays), length), np.float32), "tok_mask": np.zeros((len(stays), length), bool),
    })
    for i, events in enumerate(stays):
        n = len(events)
        if n:
            times, _, modality, hour = zip(*events)
            out["ev_time"][i, :n], out["ev_modality"][i, :n], out["ev_hour"][i, :n], out["tok_mask"][i, :n] = times, modality, hour, True
    return out


register_input_kind(InputKind("mga.events", shapes=event_shapes, build=build_events))
