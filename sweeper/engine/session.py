"""The Ray session of a run and what the cluster can hold: start or join Ray with the Train
settings every process gets, size the trial slots, materialize the splits once."""
from __future__ import annotations

import os

from sweeper.errors import SweeperError


def cluster_has_gpu(address: str | None) -> bool:
    """Whether the target cluster (or this machine, for a local run) offers GPUs."""
    if address:
        import ray

        with RaySession(address):
            return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()

def ray_env_vars(local: bool) -> dict[str, str]:
    """Ray Train V2 settings every process of the run gets (measured in bench/engine_overhead.py).

    The controller polls worker health every 2 s by default and each ``ray.train.report`` waits
    for a poll, which dominated small trials; a local cluster is never preempted, so its
    preemption-watcher actor (one more process per trial) is skipped. State tracking puts the Train
    jobs in the dashboard's Train tab. A user's own settings win.
    """
    wanted = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}
    if local:
        wanted["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


class RaySession:
    """``with RaySession(address):`` joins ``address`` (or starts a local Ray) unless Ray is up already,
    and shuts down only what it started."""

    def __init__(self, address: str | None, **kwargs):
        self.address, self.kwargs = address, kwargs

    def __enter__(self):
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            env = ray_env_vars(local=self.address is None)
            os.environ.update(env)  # the Tune trial actors read them from the driver's environment too
            try:
                context = ray.init(
                    address=self.address, log_to_driver=False, configure_logging=True, logging_level="ERROR",
                    runtime_env={"env_vars": env}, **self.kwargs,
                )
            except (ConnectionError, RuntimeError) as err:
                if self.address is None:
                    raise
                reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
                raise SweeperError(
                    f"--address {self.address}: cannot join this Ray cluster ({reason}); check the address (`ray status` on the head "
                    "prints it) and, for a cluster with token authentication, that RAY_AUTH_TOKEN or ~/.ray/auth_token holds its token"
                ) from None
            if not context.dashboard_url:
                ray.shutdown()
                raise SweeperError(
                    f"--address {self.address}: this Ray cluster runs without its dashboard; Ray Train needs the dashboard's "
                    "State API to free the resources of stopped trials (without it the sweep hangs). "
                    "Start the head with `ray start --head --include-dashboard=true` (pip install 'ray[default]')"
                )
        return self

    def __exit__(self, *exc):
        import ray

        if self.started:
            ray.shutdown()

def local_cluster_resources() -> dict[str, float]:
    """What a local Ray declares: the cores plus one CPU of headroom for trial drivers and Ray Data."""
    import torch

    return {"CPU": float((os.cpu_count() or 1) + 1), "GPU": float(torch.cuda.device_count())}


def materialize(datasets: dict) -> dict:
    """Read the splits into the object store once, without Ray Data's per-operator progress log
    (our status line reports the run; Ray Data's own log file under the session keeps the detail)."""
    import logging

    import ray.data

    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        return {split: dataset.materialize() for split, dataset in datasets.items()}
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)
