"""MedFuse's token fusions side by side on prepared stays, one seed each, in this process
(issue 18, item 5; run by hand, numbers in the issue note).

Trains each listed fusion with the ``medfuse-p12`` spec's config for a profile (default ``repro``),
exactly as the engine's final trial does (the same loop, early stopping on validation AUPRC), and
prints the validation AUPRC of every epoch and the test AUROC / AUPRC of the kept epoch, so a
fusion that learns slower can be told from one that levels off lower.

    python bench/medfuse_fusions.py --stays data/physionet2012 [--fusions mufuse add] [--epochs 12]
        [--profile repro] [--set lr=1e-3 partition_k=1] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from against_baselines import TableSession, loop_config  # noqa: E402  (bench/ is the script's folder, first on sys.path)


class EpochSession(TableSession):
    """Keeps every epoch's report, not only the last."""

    def __init__(self, stays: Path):
        super().__init__(stays)
        self.reports: list[dict] = []

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        self.reports.append(dict(metrics))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=Path, default=Path("data/physionet2012"), help="a prepared stays folder (default data/physionet2012)")
    parser.add_argument("--fusions", nargs="+", default=["mufuse", "add", "concat", "scane"], help="which fusions (default all four)")
    parser.add_argument("--profile", default="repro", help="the medfuse-p12 profile whose config is used (default repro)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a trial)")
    parser.add_argument("--gate", choices=("sigmoid", "tanh"), default=None,
                        help="MuFuse's gate, config mufuse_gate (default: the profile's; sigmoid is the paper's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values), e.g. lr=1e-3 partition_k=1")
    args = parser.parse_args()

    if not (args.stays / "manifest.json").is_file():
        parser.error(f"--stays {args.stays}: not a prepared stays folder (sweeper data prepare physionet2012 --src SRC --out DIR)")
    import yaml

    from sweeper.data.schema import read_manifest
    from sweeper.errors import SweeperError
    from sweeper.loop.training import run_training
    from sweeper.plan.spec import expand_cells, load_spec
    from trainables.medfuse import FUSIONS

    unknown = sorted(set(args.fusions) - set(FUSIONS))
    if unknown:
        parser.error(f"--fusions {' '.join(unknown)}: use {', '.join(FUSIONS)}")
    try:
        spec, _ = load_spec("medfuse-p12", profile=args.profile)
    except SweeperError as error:
        parser.error(str(error))
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    if args.gate:
        overrides["mufuse_gate"] = args.gate
    manifest = read_manifest(args.stays)
    cells = {cell.method: cell for cell in expand_cells(spec)}
    print(f"medfuse-p12 / {args.profile} on {args.stays}, seed {args.seed}, overrides {overrides or 'none'}")
    for fusion in args.fusions:
        cell = cells[f"medfuse:{fusion}"]
        config = {**loop_config(spec, cell, args.seed, manifest, {}, threads=args.threads), **overrides}
        if args.epochs:
            config["max_epochs"] = args.epochs
        session = EpochSession(args.stays)
        started = time.time()
        run_training(config, session)
        curve = " ".join(f"{r['val_auprc']:.3f}" for r in session.reports if "val_auprc" in r)
        last = session.last
        print(f"  {fusion:7} lr {config['lr']:.1e} k {config.get('partition_k')}: val AUPRC by epoch {curve}; "
              f"test AUROC {last.get('test_auroc', float('nan')):.3f} AUPRC {last.get('test_auprc', float('nan')):.3f}; "
              f"{time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
