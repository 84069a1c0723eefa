"""PiCME's contrastive pre-training: does it align two modalities beyond the stays it trained on?
(issue 18, item 6; run by hand, numbers in the issue note).

Runs the ``picme.pretrain`` stage in memory, exactly as the engine's trial runs it, on a synthetic
cohort with the default planted signal, for one modality pair, with bag-of-words or frozen MiniLM
note features and a few epoch budgets, and prints the pooled top-5 alignment of the aligned
embeddings over every complete stay and over the val + test stays only (which pre-training never
trained on), each beside its chance.

``--ceiling`` prints instead, for discharge and each other modality, the held-out top-5 retrieval
that an oracle reaches when it knows every discharge stay's true latent state (severity, the 25
conditions, gender) and scores the other modality's stays by the exact likelihood of what that
modality shows (its severity reading, the condition mentions it renders, gender where readable:
``sweeper.data.synthetic``'s latent model). No encoder of the real notes / images / series can do
better, so it bounds what any pre-training can reach on the cohort.

    python bench/picme_alignment.py [--pair discharge+timeseries] [--stays 1000] [--epochs 10 40]
    python bench/picme_alignment.py --ceiling [--stays 1000]
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
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="pre-training config overrides (YAML values), e.g. weight_decay=0.01 d=64")
    parser.add_argument("--ceiling", action="store_true", help="print the oracle's held-out top-5 for discharge with each modality, then stop")
    args = parser.parse_args()
    if args.ceiling:
        return ceiling(args.stays)

    from sweeper.data.schema import read_manifest
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.encode.embeddings import text_embeddings
    from sweeper.evaluation.analyses import top_k_alignment
    from sweeper.loop.training import run_training
    import yaml

    from trainables import registry
    from trainables.alignment import retrieval_at_k
    from trainables.picme.analyses import ALIGNED_PREFIX, alignment_chance

    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}

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
                **({"text_encoder": "bag"} if notes == "bag" else {"features": minilm}), **overrides,
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
            cross = retrieval_at_k({m: v[held] for m, v in aligned.items()}, np.ones((int(held.sum()), len(modalities)), bool), ks=(5,))
            pairs = "; ".join(f"{r['query']}->{r['candidate']} {r['r@5']:.3f}" for r in cross)
            print(f"  notes {notes:6}  {epochs:3} epochs: top-5 all stays {every:.3f} (chance {alignment_chance(len(rows), len(modalities)):.3f}); "
                  f"held-out {held_out:.3f} (chance {alignment_chance(int(held.sum()), len(modalities)):.3f}); "
                  f"held-out cross-modal R@5 {pairs} (random {cross[0]['random@5']:.3f}); {time.time() - started:.0f} s", flush=True)
    return 0


def ceiling(n_stays: int) -> int:
    """The oracle's held-out top-5 retrieval for discharge with each other modality (module docstring)."""
    import pandas as pd

    from sweeper.data.splits import assign_splits
    from sweeper.data.synthetic import SynthConfig, generate
    from sweeper.data.synthetic_modalities import SHOWN_CONDITIONS, SHOWS_GENDER

    config, latent = SynthConfig(n_stays=n_stays, seed=0), {}
    frame, _ = generate(config, latent=latent)
    held_out = np.isin(assign_splits(frame, seed=0), ["val", "test"])
    s, u, c, gender = config.strengths, latent["u"], latent["conditions"], latent["gender"]
    print(f"oracle top-5 retrieval, discharge with each modality, held-out stays of {n_stays} synthetic stays (pooled over both directions)")
    for m in ("radiology", "cxr", "timeseries", "demographics"):
        rows = np.flatnonzero(held_out & latent["present"]["discharge"] & latent["present"][m])
        q, cq = u[rows], c[rows]
        if m == "demographics":  # age carries z_age, and z_age | u ~ N(a u, 1 - a^2)
            a = s[m]
            score = -((latent["z_age"][rows][None, :] - a * q[:, None]) ** 2) / (2 * (1 - a * a))
        else:
            score = -((latent["readings"][m][rows][None, :] - s[m] * q[:, None]) ** 2) / (2 * (1 - s[m] ** 2))
            q1, q0 = 0.1 + 0.85 * s[m], 0.1 * (1 - s[m])
            for k in SHOWN_CONDITIONS[m]:
                said = latent["mentions"][m][rows, k][None, :]
                p = np.where(cq[:, k][:, None], q1, q0)
                score = score + np.where(said, np.log(p), np.log1p(-p))
        if m in SHOWS_GENDER:
            score = np.where(gender[rows][:, None] == gender[rows][None, :], score, -np.inf)
        truth = np.diag(score)
        hits = ((score > truth[:, None]).sum(axis=1) < 5).mean() + ((score > truth[None, :]).sum(axis=0) < 5).mean()
        chance = 5 / len(rows)  # the partner among the other modality's stays only
        print(f"  discharge + {m:12} {len(rows):4} stays: oracle top-5 {hits / 2:.3f}, chance {chance:.3f} ({hits / 2 / chance:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
