"""What a final torch model costs to deploy, measured in its final trial on the test stays (issue
16, item 5): deployed parameters and FLOPs per stay (``trainables.efficiency``, teachers excluded),
and the peak memory of inference.

Peak memory of the test pass (every test stay, in the loop's evaluation batches):
- on CUDA, ``torch.cuda.max_memory_allocated`` over the pass (weights included), after a reset;
- on CPU, the process's peak resident set size over the pass, sampled every millisecond by a
  thread (psutil): the whole process (Python, torch, the data it holds), not the model alone, so on
  CPU it mostly tells methods apart when their models or activations are large.
``eff_memory_measure`` names which one a row holds.
"""
from __future__ import annotations

import threading
from collections.abc import Callable


def _cpu_peak_rss(run: Callable[[], object]) -> float:
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample():
        while not done.wait(0.001):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return float(max(peak[0], process.memory_info().rss))


def inference_costs(model, batch: dict, run_inference: Callable[[], object], device) -> dict:
    """``eff_params``, ``eff_flops_per_stay`` (one forward pass over ``batch``), ``eff_peak_mem_mb``
    (of ``run_inference``: the test pass) and ``eff_memory_measure``."""
    import torch

    from trainables.efficiency import deployed_parameters, flops_per_stay

    costs = {"eff_params": float(deployed_parameters(model)), "eff_flops_per_stay": float(flops_per_stay(model, batch))}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_inference()
        torch.cuda.synchronize(device)
        peak, measure = float(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    else:
        peak, measure = _cpu_peak_rss(run_inference), "cpu_process_peak_rss"
    return {**costs, "eff_peak_mem_mb": peak / 2**20, "eff_memory_measure": measure}
