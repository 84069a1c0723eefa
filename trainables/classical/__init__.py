"""Classical baselines on per-stay aggregates (docs/methods.md, "Classical baselines"; reusable by any family).

Both read the ``aggregates`` input: for each series its last, mean, min, max and count over the
stay, plus the encoded descriptors (``sweeper.data.loading.StaysCollate``). Unobserved series are
NaN: XGBoost routes them natively; logistic regression imputes the training median and adds a
missing-indicator column per such feature, then standardises.

- ``classical.logreg``: L2 logistic regression, ``C`` searched; class weights balanced for ihm.
- ``classical.xgboost``: gradient-boosted trees (hist), early-stopped on validation AUPRC after
  ``early_stopping_rounds`` rounds without gain (validation log-loss for several labels).
Several labels (phenotyping): one model per label (sklearn ``MultiOutputClassifier``) for the
logistic regression, XGBoost's native multi-label trees.
Length of stay (``los``, a regression on log1p(hours)): the same pipelines with a regressor —
ridge regression (``alpha = 1 / C``, so ``C`` keeps its meaning: larger is less regularised) and
``XGBRegressor`` (squared error, early-stopped on validation RMSE).
"""
from __future__ import annotations

from sweeper.data.schema import REGRESSION_TASKS
from trainables.registry import Trainable, register


def build_logreg(config: dict, n_outputs: int, seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if config.get("task") in REGRESSION_TASKS:
        from sklearn.linear_model import Ridge

        return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), Ridge(alpha=1.0 / float(config["C"])))
    model = LogisticRegression(
        C=float(config["C"]), max_iter=int(config["max_iter"]), random_state=seed,
        class_weight="balanced" if config.get("balanced", True) else None,
    )
    head = model if n_outputs == 1 else MultiOutputClassifier(model)
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), head)


def fit_logreg(estimator, x, y, x_val, y_val) -> None:
    estimator.fit(x, y)


def build_xgboost(config: dict, n_outputs: int, seed: int):
    from xgboost import XGBClassifier, XGBRegressor

    regression = config.get("task") in REGRESSION_TASKS
    return (XGBRegressor if regression else XGBClassifier)(
        n_estimators=int(config["n_estimators"]), max_depth=int(config["max_depth"]), learning_rate=float(config["learning_rate"]),
        subsample=float(config["subsample"]), colsample_bytree=float(config["colsample_bytree"]),
        min_child_weight=float(config["min_child_weight"]), reg_lambda=float(config["reg_lambda"]),
        tree_method="hist", eval_metric="rmse" if regression else "aucpr" if n_outputs == 1 else "logloss",
        early_stopping_rounds=int(config["early_stopping_rounds"]), n_jobs=int(config.get("torch_threads", 1)), random_state=seed,
    )


def fit_xgboost(estimator, x, y, x_val, y_val) -> None:
    estimator.fit(x, y, eval_set=[(x_val, y_val)], verbose=False)


register(
    Trainable(
        name="classical.logreg", build_model=build_logreg, fit=fit_logreg, inputs="aggregates",
        defaults={"C": 0.1, "max_iter": 2000, "balanced": True},
        paper="MedFuse §5 baselines (docs/methods.md): logistic regression on aggregates",
    )
)
register(
    Trainable(
        name="classical.xgboost", build_model=build_xgboost, fit=fit_xgboost, inputs="aggregates",
        defaults={
            "n_estimators": 400, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.8,
            "min_child_weight": 1.0, "reg_lambda": 1.0, "early_stopping_rounds": 30,
        },
        paper="MedFuse §5 baselines (docs/methods.md): XGBoost on aggregates",
    )
)
