"""Every chest X-ray of a stay through a frozen CXR expert: the latest image's embedding and the
time-weighted mean of all of them (the SLM features' two CXR sources, docs/methods.md "SLM projectors").

The expert is one of ``sweeper.encode.experts`` (``effnet_lite0``: EfficientNet-Lite0 with ImageNet
weights; ``cnn``: a small frozen random CNN; or any other CXR expert), run through its own extractor
one image at a time, so each image is decoded and embedded exactly as that expert embeds a stay's
latest image. Per stay the result is ``[latest ‖ time-weighted mean]`` (2 × the expert's width),
stored once per (expert, options, data snapshot) in the embedding cache
(``sweeper.encode.embeddings.cached_embeddings``, id ``cxr-series-<expert>-<hash>``).

Weights (docs/methods.md, "SLM projectors"): ``w_j = (t_j - min t) / max t``, normalised here to sum to one (the paper's
do not); when they are all zero (a single image, or all taken at once) the latest image takes all
the weight instead of the paper's zero vector. Normalising makes the ``/ max t`` scale cancel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeper.encode.embeddings import DEFAULT_CACHE_ROOT, cached_embeddings
from sweeper.encode.experts import expert, expert_id, experts_for, present_rows

PIXELS = "pixels"
"""No expert: the SLM features pool each image's pixels themselves (``trainables.slm.features``)."""
IMAGES_PER_BLOCK = 512
_SEP = "\x1f"  # stay id + separator + image index: a per-image row id no stay id holds


def cxr_encoders() -> list[str]:
    """What ``cxr_encoder`` may name: ``pixels`` and every CXR expert (teachers included)."""
    return [PIXELS, *experts_for("cxr"), *experts_for("cxr", teacher=True)]


def feature_key(name: str) -> str:
    """How the matrix is named among a trial's precomputed features."""
    return f"cxr_series:{name}"


def cxr_weights(times) -> np.ndarray:
    """Normalised time weights ``(t_j - min t) / max t`` of a stay's images; all weight on the latest
    image when they sum to zero (one image, or all taken at once)."""
    times = np.asarray(times, np.float64)
    scale = times.max() if times.max() > 0 else 1.0
    weights = (times - times.min()) / scale
    if weights.sum() <= 0:
        weights = np.zeros(len(times))
        weights[int(np.argmax(times))] = 1.0
    return weights / weights.sum()


def image_times(pngs, times) -> np.ndarray:
    """A stay's image times; their order (0, 1, ...) when the times are missing or do not match the images."""
    if times is not None and len(times) == len(pngs):
        return np.asarray(times, np.float64)
    return np.arange(len(pngs), dtype=np.float64)


def latest_and_mean(embeddings: np.ndarray, times) -> tuple[np.ndarray, np.ndarray]:
    """(the latest image's embedding, the time-weighted mean) of one stay's ``embeddings [J, d]``."""
    times = np.asarray(times, np.float64)
    return embeddings[int(np.argmax(times))], cxr_weights(times) @ embeddings


def cxr_series_embeddings(
    stays_dir: str | Path, name: str, config: dict | None = None, cache_root: str | Path = DEFAULT_CACHE_ROOT,
) -> tuple[np.ndarray, np.ndarray]:
    """(stay ids sorted, ``[n, 2·dim]`` float32: latest ‖ time-weighted mean) of the stays that have
    a chest X-ray, from the CXR expert ``name`` with ``config`` (its options); cached."""
    found = expert("cxr", name)
    identity, full = expert_id("cxr", name, config)

    def compute(manifest):
        if "cxr" not in manifest.modalities:
            return np.asarray([], dtype=object), np.zeros((0, 2), np.float32), 0
        rows, train = present_rows(stays_dir, manifest, "cxr")
        owner, ids, pngs, times, per_stay = [], [], [], [], []
        for i, (stay, images, stamps) in enumerate(zip(rows["stay_id"], rows["cxr_images"], rows["cxr_times"])):
            images = [] if images is None else list(images)
            stamps = image_times(images, stamps)
            per_stay.append(stamps)
            for j, (png, t) in enumerate(zip(images, stamps)):
                owner.append(i)
                ids.append(f"{stay}{_SEP}{j}")
                pngs.append([png])
                times.append(np.asarray([t], np.float32))
        owner = np.asarray(owner, np.int64)
        blocks, passes = [], 0
        for start in range(0, len(ids), IMAGES_PER_BLOCK):
            stop = min(start + IMAGES_PER_BLOCK, len(ids))
            block = {"stay_id": np.asarray(ids[start:stop], dtype=object), "cxr_images": _objects(pngs[start:stop]),
                     "cxr_times": _objects(times[start:stop]), "present_cxr": np.ones(stop - start, bool)}
            vectors, spent = found.extract(block, train[owner[start:stop]], manifest, "cxr", full)
            blocks.append(np.asarray(vectors, np.float32))
            passes += spent
        if not blocks:  # no images at all: the expert's width is unknown, and nothing reads it
            return rows["stay_id"], np.zeros((len(rows["stay_id"]), 2), np.float32), 0
        per_image = np.concatenate(blocks)
        out = np.zeros((len(rows["stay_id"]), 2 * per_image.shape[1]), np.float32)
        starts = np.searchsorted(owner, np.arange(len(per_stay) + 1))
        for i, stamps in enumerate(per_stay):
            if len(stamps):  # a stay marked present without images keeps zeros
                latest, mean = latest_and_mean(per_image[starts[i]:starts[i + 1]], stamps)
                out[i] = np.concatenate([latest, mean])
        return rows["stay_id"], out, passes

    return cached_embeddings(stays_dir, "cxr", f"cxr-series-{identity.removeprefix('expert-')}", {"cxr_series": name, **full}, compute, cache_root,
                             what="stays")


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):  # one by one: numpy would read a list of lists as a 2-d array
        out[k] = item
    return out
