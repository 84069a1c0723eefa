"""PiCME's contrastive pre-training: does it align two modalities beyond the stays it trained on?
(issue 18, item 6; run by hand, numbers in the issue note).

Runs the ``picme.pretrain`` stage in memory, exactly as the engine's trial runs it, on a synthetic
cohort with the default planted signal, for one modality pair, with bag-of-words or frozen MiniLM
note features and a few epoch budgets, and prints the pooled top-5 alignment of the aligned
embeddings over every complete stay and over the val + test stays only (which pre-training never
trained on), each beside its chance.

    python bench/picme_alignment.py [--pair discharge+timeseries] [--stays 1000] [--epochs 10 40]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from against_baselines import TableSession  # noqa: E402  (bench/ is the script's folder, first on sys.path)

TEXT = ("discharge", "radiology")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="discharge+timeseries", help="two or more modalities joined by + (default discharge+timeseries)")
    parser.add_argument("--stays", type=int, default=1000, help="synthetic stays (default 1000, the main job's)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 40], help="pre-training epoch budgets (default 10 40)")
    args = parser.parse_args()

    from sweeper.data.schema import read_manifest
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.encode.embeddings import text_embeddings
    from sweeper.evaluation.analyses import top_k_alignment
    from sweeper.loop.training import run_training
    from trainables import registry
    from trainables.picme.analyses import ALIGNED_PREFIX, alignment_chance

    root = Path(tempfile.mkdtemp(prefix="sweeper-bench-align-"))
    frame, manifest = generate(SynthConfig(n_stays=args.stays, seed=0))
    write_stays(frame, manifest, root / "stays", split_seed=0)
    stays = root / "stays"
    modalities = args.pair.split("+")
    minilm = {m: text_embeddings(stays, m, cache_root=root / "cache") for m in modalities if m in TEXT}

    class Session(TableSession):
        def report(self, metrics, checkpoint_dir=None):
            super().report(metrics, checkpoint_dir)
            if checkpoint_dir and (Path(checkpoint_dir) / "embeddings.npz").exists():
                with np.load(Path(checkpoint_dir) / "embeddings.npz", allow_pickle=False) as saved:
                    self.saved = {name: saved[name] for name in saved.files}

    print(f"{args.pair} on {args.stays} synthetic stays ({root})")
    for notes in ("bag", "minilm"):
        if notes == "minilm" and not minilm:
            continue
        for epochs in args.epochs:
            config = {
                **registry.get("picme.contrastive").defaults, "method": "picme.contrastive", "task": "ihm", "modalities": modalities,
                "seed": 0, "stage": "picme.pretrain", "manifest": read_manifest(stays), "d": 32, "pretrain_lr": 3e-3,
                "pretrain_batch_size": 64, "pretrain_epochs": epochs, "pretrain_patience": epochs,
                **({"text_encoder": "bag"} if notes == "bag" else {"features": minilm}),
            }
            session = Session(stays)
            started = time.time()
            run_training(config, session)
            saved = session.saved
            rows = np.flatnonzero(saved["present"].astype(bool).all(axis=1))
            aligned = {m: saved[ALIGNED_PREFIX + m][rows] for m in modalities}
            held = np.isin(saved["split"][rows], ["val", "test"])
            every = top_k_alignment(aligned, k=5)["overall"]
            held_out = top_k_alignment({m: v[held] for m, v in aligned.items()}, k=5)["overall"]
            print(f"  notes {notes:6}  {epochs:3} epochs: top-5 all stays {every:.3f} (chance {alignment_chance(len(rows), len(modalities)):.3f}); "
                  f"held-out {held_out:.3f} (chance {alignment_chance(int(held.sum()), len(modalities)):.3f}); {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
