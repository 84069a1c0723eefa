"""Small-language-model projectors for multitask risk prediction with unknown labels (docs/methods.md, "SLM projectors").

- ``slm.projector``: per-source over-complete autoencoders project HAIM-style source features
  into a frozen causal LM (``trainables.slm.projector``); losses ``avg`` / ``asl``
  (``trainables.slm.losses``); modes ``joint`` and ``isolated`` (evaluated jointly or by the best
  single source).
- ``slm.xgboost``: one XGBoost per label on the same features, fitted on that label's known rows
  (``trainables.slm.baseline``).
Both read the ``slm.sources`` input kind (``trainables.slm.features``).
"""
from __future__ import annotations

from trainables.registry import Trainable, register
from trainables.slm import features  # noqa: F401 - registers the slm.sources input kind
from trainables.slm.baseline import build_per_label_xgboost, fit_per_label
from trainables.slm.losses import multitask_loss
from trainables.slm.projector import SLMProjector, adam, new_epoch

register(Trainable(
    name="slm.projector", build_model=SLMProjector, inputs="slm.sources", loss=multitask_loss, optimizer=adam, on_epoch_start=new_epoch,
    defaults={
        "lm": "smollm2-135m", "lm_layers": 0, "mode": "joint", "evaluate": "joint", "loss": "asl", "asl_margin": 0.05, "asl_gamma_neg": 4.0, "beta": 10.0,
        "lr": 5e-4, "weight_decay": 3e-4, "batch_size": 32, **features.FEATURE_DEFAULTS,
    },
    paper="SLM projectors (docs/methods.md): frozen causal LM read through per-source autoencoder projectors",
))
register(Trainable(
    name="slm.xgboost", build_model=build_per_label_xgboost, fit=fit_per_label, inputs="slm.sources",
    defaults={
        "n_estimators": 300, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.8,
        "min_child_weight": 1.0, "reg_lambda": 1.0, "early_stopping_rounds": 30, **features.FEATURE_DEFAULTS,
    },
    paper="SLM projectors' baseline (docs/methods.md): one XGBoost per label on the same source features",
))
