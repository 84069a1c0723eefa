"""PiCME's contrastive pre-training: does it align two modalities beyond the stays it trained on?
(issue 18, item 6; run by hand, numbers in the issue note).

Runs the ``picme.pretrain`` stage in memory, exactly as the engine's trial runs it, on a synthetic
cohort with the default planted signal, for one modality pair, with bag-of-words or frozen MiniLM
note features and a few epoch budgets, and prints the pooled top-5 alignment of the aligned
embeddings over every complete stay and over the val + test stays only (which pre-training never
trained on), each beside its chance.

``--ceiling`` prints instead, for discharge and each other modality, the held-out top-5 retrieval
that two oracles reach. The latent oracle reaches it when it knows every discharge stay's true latent state (severity, the 25
conditions, gender) and scores the other modality's stays by the exact likelihood of what that
modality shows (its severity reading, the condition mentions it renders, gender where readable:
``sweeper.data.synthetic``'s latent model). No encoder of the real notes / images / series can do
better, so it bounds what any pre-training can reach on the cohort. The view oracle knows only what
the two modalities of a pair show (the discharge note's severity level and mentions, the other
modality's reading and mentions) and ranks by their mutual information under the latent model: it
is what the two views themselves share, the tighter bound on aligning them (``view_score``).

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
    """The two oracles' held-out top-5 retrieval for discharge with each other modality (module docstring)."""
    from sweeper.data.splits import assign_splits
    from sweeper.data.synthetic import SynthConfig, generate

    config, latent = SynthConfig(n_stays=n_stays, seed=0), {}
    frame, _ = generate(config, latent=latent)
    held_out = np.isin(assign_splits(frame, seed=0), ["val", "test"])
    print(f"oracle top-5 retrieval, discharge with each modality, held-out stays of {n_stays} synthetic stays (pooled over both directions)")
    for m in ("radiology", "cxr", "timeseries", "demographics"):
        rows = np.flatnonzero(held_out & latent["present"]["discharge"] & latent["present"][m])
        oracle = Oracle(config, latent, rows, m)
        latent_hits, view_hits = _top5(oracle.latent_score()), _top5(oracle.view_score())
        chance = 5 / len(rows)  # the partner among the other modality's stays only
        print(f"  discharge + {m:12} {len(rows):4} stays: chance {chance:.3f}; latent oracle top-5 {latent_hits:.3f} ({latent_hits / chance:.1f}x), "
              f"view oracle {view_hits:.3f} ({view_hits / chance:.1f}x)")
    return 0


def _top5(score: np.ndarray) -> float:
    """Top-5 retrieval of the diagonal partner, pooled over both directions (rows query columns and back)."""
    truth = np.diag(score)
    return float((((score > truth[:, None]).sum(axis=1) < 5).mean() + ((score > truth[None, :]).sum(axis=0) < 5).mean()) / 2)


class Oracle:
    """Scores (discharge of stay i, modality ``m`` of stay j) by how likely j is i's partner under
    ``sweeper.data.synthetic``'s latent model, as pointwise mutual information (the Bayes posterior
    that j is the partner is proportional to it, in both directions). What ``m`` shows: its severity
    reading (radiology: the nine levels the note renders; cxr, time series: the reading itself, which
    the images and series render with more noise; demographics: z_age, through age), its condition
    mentions, and the gender where readable. Integrals over the severity u are Gauss-Hermite sums;
    the conditions are independent given u."""

    def __init__(self, config, latent: dict, rows: np.ndarray, m: str, nodes: int = 64):
        from scipy.stats import norm

        from sweeper.data.synthetic_modalities import PHENO_SPEC, SHOWN_CONDITIONS

        self.config, self.latent, self.rows, self.m = config, latent, rows, m
        self.x, w = np.polynomial.hermite_e.hermegauss(nodes)  # ∫ f(u) φ(u) du ≈ Σ w f(x) / sqrt(2π)
        self.log_w = np.log(w / np.sqrt(2 * np.pi))
        prev, load = np.array([p[0] for p in PHENO_SPEC]), np.array([p[1] for p in PHENO_SPEC])
        self.threshold, self.load = norm.ppf(1 - prev), load
        self.shown = list(SHOWN_CONDITIONS[m])
        self.like_m = self._mention_likelihoods(m, self.shown)  # (P(said | c = 1), P(said | c = 0)), each [N, S]
        self.like_d = self._mention_likelihoods("discharge", list(range(25)))
        self.log_p_m = self._logsumexp_u(self.log_w[None, :] + self._reading("m", self.x) + self._mentions_given_u(self.like_m, self.shown))  # log p(m content of j), [N]

    def _p_condition(self, u: np.ndarray, ks: list[int]) -> np.ndarray:
        from scipy.stats import norm

        return norm.cdf((self.load[ks] * u[..., None] - self.threshold[ks]) / np.sqrt(1 - self.load[ks] ** 2))

    def _mention_likelihoods(self, modality: str, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        strength = self.config.strengths[modality]
        said = self.latent["mentions"][modality][self.rows][:, ks]
        q1, q0 = 0.1 + 0.85 * strength, 0.1 * (1 - strength)
        return np.where(said, q1, 1 - q1), np.where(said, q0, 1 - q0)

    def _reading(self, which: str, at: np.ndarray) -> np.ndarray:
        """log P(the severity the view shows of each stay | u = at): [N, len(at)]."""
        from scipy.stats import norm

        from sweeper.data.synthetic_modalities import SEVERITY_LEVELS

        modality = "discharge" if which == "d" else self.m
        strength = self.config.strengths[modality]
        sd = np.sqrt(1 - strength**2)
        value = self.latent["z_age" if modality == "demographics" else "readings"]
        value = (value if modality == "demographics" else value[modality])[self.rows]
        if modality in ("discharge", "radiology"):  # the notes render one of nine levels
            edges = np.r_[-np.inf, SEVERITY_LEVELS, np.inf]
            level = np.searchsorted(SEVERITY_LEVELS, value)
            mass = norm.cdf((edges[level + 1][:, None] - strength * at[None, :]) / sd) - norm.cdf((edges[level][:, None] - strength * at[None, :]) / sd)
            return np.log(mass + 1e-300)
        return norm.logpdf(value[:, None], strength * at[None, :], sd)

    def _mentions_given_u(self, like: tuple[np.ndarray, np.ndarray], ks: list[int]) -> np.ndarray:
        """log P(the mentions of conditions ks | u = each node), conditions integrated out: [N, Q]."""
        if not ks:
            return np.zeros((len(self.rows), len(self.x)))
        pc = self._p_condition(self.x, ks)[None]  # [1, Q, K]
        return np.log(pc * like[0][:, None, :] + (1 - pc) * like[1][:, None, :]).sum(-1)

    @staticmethod
    def _logsumexp_u(values: np.ndarray) -> np.ndarray:
        from scipy.special import logsumexp

        return logsumexp(values, axis=-1)

    def _gender(self, score: np.ndarray) -> np.ndarray:
        from sweeper.data.synthetic_modalities import SHOWS_GENDER

        if self.m not in SHOWS_GENDER:
            return score
        gender = self.latent["gender"][self.rows]
        p = np.where(gender == "M", (gender == "M").mean(), (gender == "F").mean())
        return np.where(gender[:, None] == gender[None, :], score - np.log(p)[None, :], -np.inf)

    def latent_score(self) -> np.ndarray:
        """Knows stay i's true u and conditions: log p(m content of j | u_i, c_i) - log p(m content of j)."""
        u, c = self.latent["u"][self.rows], self.latent["conditions"][self.rows][:, self.shown]
        score = self._reading("m", u)  # [N_j, N_i]
        if self.shown:
            score = score + np.log(np.where(c[None, :, :], self.like_m[0][:, None, :], self.like_m[1][:, None, :])).sum(-1)
        return self._gender(score.T - self.log_p_m[None, :])

    def view_score(self) -> np.ndarray:
        """Knows only what the discharge note of i shows (its level, its mentions): log p(d_i, m_j) - log p(d_i) - log p(m_j)."""
        alone = [k for k in range(25) if k not in self.shown]
        like_alone = (self.like_d[0][:, alone], self.like_d[1][:, alone])
        a = self._reading("d", self.x) + self._mentions_given_u(like_alone, alone)  # [N_i, Q]
        b = self._reading("m", self.x)  # [N_j, Q]
        joint = self.log_w[None, None, :] + a[:, None, :] + b[None, :, :]
        margin_d = self.log_w[None, :] + a
        if self.shown:
            pc = self._p_condition(self.x, self.shown)[None, None]  # [1, 1, Q, S]
            d1, d0 = self.like_d[0][:, self.shown][:, None, None, :], self.like_d[1][:, self.shown][:, None, None, :]
            m1, m0 = self.like_m[0][None, :, None, :], self.like_m[1][None, :, None, :]
            joint = joint + np.log(pc * d1 * m1 + (1 - pc) * d0 * m0).sum(-1)
            margin_d = margin_d + self._mentions_given_u((self.like_d[0][:, self.shown], self.like_d[1][:, self.shown]), self.shown)
        score = self._logsumexp_u(joint) - self._logsumexp_u(margin_d)[:, None] - self.log_p_m[None, :]
        return self._gender(score)

if __name__ == "__main__":
    sys.exit(main())
