"""What tunes, early-stops and ranks each task of a spec: its ``metric`` (AUROC or AUPRC) for a
classification task, its ``regression_metric`` for a regression task (``los``; default Spearman,
``sweeper.evaluation.metrics.DEFAULT_REGRESSION_METRIC``, which says why)."""
from __future__ import annotations

from sweeper.data.schema import REGRESSION_TASKS


def metric_of(spec, task: str) -> str:
    """The metric that tunes, early-stops and ranks ``task`` in ``spec``."""
    return spec.regression_metric if task in REGRESSION_TASKS else spec.metric


def rank_metrics(spec) -> dict[str, str]:
    """``{task: metric}`` for every task of ``spec`` (``rank_by`` of the leaderboard and comparisons)."""
    return {task: metric_of(spec, task) for task in spec.tasks}
