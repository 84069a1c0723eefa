"""``slm.xgboost``: the SLM paper's baseline, one XGBoost model per label on the ``slm.sources`` features.

Label k's model is fitted on the training stays whose label k is known (unknown rows are dropped,
not imputed) and early-stopped on the validation stays whose label k is known. A label whose known
training entries hold one class only (or none) is scored by that class's training rate.
"""
from __future__ import annotations

import numpy as np

from trainables.classical import build_xgboost


class PerLabelXGBoost:
    """sklearn-style: ``fit(x, y[N, K] with NaN)``, ``predict_proba(x) -> [N, K]``."""

    def __init__(self, config: dict, n_outputs: int, seed: int):
        self.config, self.n_outputs, self.seed = config, n_outputs, seed
        self.models: list = []
        self.fitted_rows: list[int] = []

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> "PerLabelXGBoost":
        y = y.reshape(len(y), -1)
        y_val = None if y_val is None else y_val.reshape(len(y_val), -1)
        self.models, self.fitted_rows = [], []
        for k in range(y.shape[1]):
            known = ~np.isnan(y[:, k])
            labels = y[known, k].astype(int)
            self.fitted_rows.append(int(known.sum()))
            if len(np.unique(labels)) < 2:
                self.models.append(float(labels.mean()) if len(labels) else 0.5)
                continue
            model = build_xgboost(self.config, 1, self.seed)
            val_known = None if y_val is None else ~np.isnan(y_val[:, k])
            if val_known is not None and len(np.unique(y_val[val_known, k])) == 2:
                model.fit(x[known], labels, eval_set=[(x_val[val_known], y_val[val_known, k].astype(int))], verbose=False)
            else:
                model.set_params(early_stopping_rounds=None)
                model.fit(x[known], labels, verbose=False)
            self.models.append(model)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        columns = [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1] for m in self.models]
        if len(columns) == 1:  # one label: sklearn's [N, 2] of both classes
            return np.stack([1.0 - columns[0], columns[0]], axis=1)
        return np.stack(columns, axis=1)


def build_per_label_xgboost(config: dict, n_outputs: int, seed: int) -> PerLabelXGBoost:
    return PerLabelXGBoost(config, n_outputs, seed)


def fit_per_label(estimator: PerLabelXGBoost, x, y, x_val, y_val) -> None:
    estimator.fit(x, y, x_val, y_val)
