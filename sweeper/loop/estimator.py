"""The loop of a non-torch method (an sklearn-style estimator): fit once on train, report
validation metrics as epoch 1 and, in the final phase, test metrics and predictions.

A single-label task's stays with an unknown label (``los_gt_7d`` where the length of stay is unknown)
are left out of the fit; a regressor (no ``predict_proba``, e.g. for ``los``) gives its predictions."""
from __future__ import annotations

import time

import numpy as np

from sweeper.evaluation.metrics import compute_metrics, task_metrics
from sweeper.loop.outputs import labels_numpy, report_final
from sweeper.loop.selection import selection


def run_estimator(trainable, config: dict, collate, data: dict, session, final: bool, where: dict) -> None:
    started = time.perf_counter()
    estimator = trainable.build_model(config, collate.n_outputs(), int(config["seed"]))
    arrays = {split: (part["features"].numpy(), labels_numpy(part)) for split, part in data.items()}
    trainable.fit(estimator, *_known(*arrays["train"]), *_known(*arrays["val"]))
    train_seconds = time.perf_counter() - started
    scores = {split: estimator_scores(estimator, x, collate.n_outputs()) for split, (x, _) in arrays.items() if split != "train"}
    metrics_of_task = task_metrics(config["task"])
    val = compute_metrics(arrays["val"][1], scores["val"], metrics=metrics_of_task)
    select, sign = selection(config)
    metrics = {"epoch": 1, "train_seconds": train_seconds, **where, "device": "cpu", f"best_val_{select}": val[select],
               "val_objective": sign * val[select], **{f"val_{k}": v for k, v in val.items()}}
    if not final:
        session.report(metrics)
        return
    test = compute_metrics(arrays["test"][1], scores["test"], metrics=metrics_of_task)
    metrics.update({f"test_{k}": v for k, v in test.items()}, done=True, epochs_trained=1)
    from sweeper.loop.extra_sets import score_extra_sets

    extras = score_extra_sets(config, session, collate, lambda part: estimator_scores(estimator, part["features"].numpy(), collate.n_outputs()))
    report_final(session, metrics, data["test"], scores["test"], extras=extras)


def _known(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a single-label task whose label is known (all rows of a multi-label one)."""
    keep = ~np.isnan(y) if y.ndim == 1 else np.ones(len(y), bool)
    return x[keep], y[keep]


def estimator_scores(estimator, x: np.ndarray, n_outputs: int) -> np.ndarray:
    """Positive-class probabilities: [N] for one label, [N, L] for several; a regressor's predictions."""
    if not hasattr(estimator, "predict_proba"):  # a regressor (los): its predictions of log1p(hours)
        return np.asarray(estimator.predict(x), dtype=float).reshape(len(x), -1)[:, 0] if n_outputs == 1 else np.asarray(estimator.predict(x), float)
    proba = estimator.predict_proba(x)
    if isinstance(proba, list):  # one [N, 2] array per label (sklearn multi-output)
        return np.stack([p[:, 1] for p in proba], axis=1)
    proba = np.asarray(proba)
    return proba[:, 1] if n_outputs == 1 else proba
