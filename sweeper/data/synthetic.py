"""The synthetic MIMIC-shaped cohort (docs/data-sources.md, "Synthetic cohort"): the embedded default source.

Latent model, per stay ``i`` (all draws from one ``numpy.random.default_rng(seed)``):

- severity ``u_i ~ N(0, 1)`` = ``a·z_age(subject) + sqrt(1-a²)·(sqrt(0.5)·frailty(subject) + sqrt(0.5)·acute_i)``
  with ``a`` the demographics strength, so readmissions of one subject share part of their severity;
- 25 latent conditions (the benchmark phenotypes): ``c_ik = 1[γ_k·u_i + sqrt(1-γ_k²)·e_ik > Φ⁻¹(1-prev_k)]``,
  ``e_ik`` partly subject-level (chronic conditions persist across readmissions); labels = conditions;
- in-hospital mortality ``~ Bernoulli(sigmoid(b0 + β·u_i + Σ_k w_k c_ik))`` (~12 %);
- ICU length of stay ``48 + exp(N(log 50 + 0.35·u + 0.15·#acute, 0.7))`` hours (cohort: stays ≥ 48 h).

Each modality ``m`` with strength ``s`` sees the latent state only through noise: a severity reading
``o_m = s·u + sqrt(1-s²)·ε_m`` (correlation ``s`` with ``u``) and noisy condition mentions
(``P(mention | c=1) = 0.1 + 0.85 s``, ``P(mention | c=0) = 0.1 (1 - s)``); at ``s = 0`` both are pure
noise. Demographics carry their share through age (``z_age``), not through a separate reading.
Presence is Bernoulli per modality; ``mnar`` tilts its logit by ``3·mnar·u`` (sicker stays are more
often complete), the intercept re-fitted so the mean rate still equals the configured one. Every stay
keeps at least one modality; absent modalities are null, never zeros.

The content of each modality (notes, chest X-rays, time series, demographics) is drawn by
:mod:`sweeper.data.synthetic_modalities`, which also holds the variable and phenotype tables.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import random

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from scipy.stats import norm

from sweeper.data.schema import (
    MODALITIES,
    PHENOTYPES,
    DemographicsInfo,
    Manifest,
    StaysError,
    TimeseriesInfo,
    presence_column,
)
from sweeper.data.synthetic_modalities import (
    HOURS,
    PHENO_SPEC,
    TS_FEATURES,
    TS_SPEC,
    make_cxr,
    make_demographics,
    make_notes,
    make_timeseries,
)

MIN_STAYS = 30
MAX_STAYS = 1_000_000  # ~2 KiB a stay in memory (~2 GiB at the bound) and ~0.5 ms a stay to generate
IHM_BETA, IHM_INTERCEPT = 5.0, -6.9
_ACUTE = [0, 1, 2, 14, 15, 21, 22, 23, 24]  # phenotype indices that lengthen the stay


def _default_strengths() -> dict[str, float]:
    return {"discharge": 0.9, "radiology": 0.7, "demographics": 0.55, "cxr": 0.35, "timeseries": 0.1}


def _default_presence() -> dict[str, float]:
    return {"discharge": 0.85, "radiology": 0.75, "cxr": 0.55, "timeseries": 0.95, "demographics": 1.0}


@dataclasses.dataclass
class SynthConfig:
    """Parameters of the synthetic cohort; ``generate`` records them in the manifest's ground truth."""

    n_stays: int = 2000
    """Number of ICU stays (rows), 30 to 1,000,000."""
    seed: int = 0
    """Seed of the one random generator everything is drawn from; same seed, same cohort."""
    strengths: dict[str, float] = dataclasses.field(default_factory=_default_strengths)
    """Per modality, in [0, 1]: correlation of its reading with the latent severity (0 = pure noise)."""
    presence: dict[str, float] = dataclasses.field(default_factory=_default_presence)
    """Per modality, in [0, 1]: fraction of stays where it is present."""
    mnar: float = 0.0
    """Missing-not-at-random, in [0, 1]: how strongly sicker stays are more often complete."""
    cxr_size: int = 32
    """Side of the square grayscale chest X-ray images, in pixels (16 to 256)."""

    def validate(self) -> "SynthConfig":
        """Fail with a one-line ``StaysError`` naming the bad option."""
        if not isinstance(self.n_stays, numbers.Integral) or self.n_stays < MIN_STAYS:
            raise StaysError(f"--n-stays: {self.n_stays!r} is too few; use at least {MIN_STAYS} stays")
        if self.n_stays > MAX_STAYS:
            raise StaysError(f"--n-stays: {self.n_stays} is too many; use at most {MAX_STAYS} stays")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise StaysError(f"--seed: {self.seed!r} must be a non-negative integer")
        for option, values in (("--strength", self.strengths), ("--presence", self.presence)):
            for name, value in values.items():
                if name not in MODALITIES:
                    raise StaysError(f"{option}: unknown modality {name!r}; known: {', '.join(MODALITIES)}")
                if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise StaysError(f"{option}: {name}={value} is outside [0, 1]")
            missing = [m for m in MODALITIES if m not in values]
            if missing:
                raise StaysError(f"{option}: no value for modality {missing[0]!r}; give one per modality")
        if not any(self.presence.values()):
            raise StaysError("--presence: every rate is 0; at least one modality must be present")
        if not isinstance(self.mnar, (int, float)) or not 0.0 <= self.mnar <= 1.0:
            raise StaysError(f"--mnar: {self.mnar} is outside [0, 1]")
        if not isinstance(self.cxr_size, numbers.Integral) or not 16 <= self.cxr_size <= 256:
            raise StaysError(f"cxr_size: {self.cxr_size!r} must be an integer from 16 to 256")
        return self

    def planted_order(self) -> list[str]:
        """Modalities strongest first (ties in ``MODALITIES`` order)."""
        return sorted(MODALITIES, key=lambda m: (-self.strengths[m], MODALITIES.index(m)))


def generate(config: SynthConfig, latent: dict | None = None) -> tuple[pd.DataFrame, Manifest]:
    """One row per stay (every column of the manifest but ``split``) and the manifest.

    ``latent``, when given, receives the per-stay latent state the modalities were drawn from
    (``u``, ``z_age``, ``gender``, ``conditions``, and per modality ``readings``, ``mentions``,
    ``present``), for analyses that need the truth (e.g. the best retrieval any encoder could reach)."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    n, s = config.n_stays, config.strengths

    # Subjects: 1-5 stays each (~1.3 on average), rows in chronological order within a subject.
    per_subject = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.80, 0.13, 0.045, 0.017, 0.008])
    subject = np.repeat(np.arange(n), per_subject)[:n]
    n_subj = subject[-1] + 1
    z_age, frailty = rng.standard_normal(n_subj), rng.standard_normal(n_subj)
    a = s["demographics"]
    u = a * z_age[subject] + math.sqrt(1 - a * a) * math.sqrt(0.5) * (frailty[subject] + rng.standard_normal(n))

    prev, load, chronic, weight = (np.array([p[j] for p in PHENO_SPEC]) for j in range(4))
    shared = rng.standard_normal((n_subj, 25))[subject]
    other = np.sqrt(chronic) * shared + np.sqrt(1 - chronic) * rng.standard_normal((n, 25))
    conditions = load * u[:, None] + np.sqrt(1 - load**2) * other > norm.ppf(1 - prev)
    ihm = rng.random(n) < expit(IHM_INTERCEPT + IHM_BETA * u + conditions @ weight)
    los = 48 + np.exp(np.log(50) + 0.35 * u + 0.15 * conditions[:, _ACUTE].sum(1) + 0.7 * rng.standard_normal(n))
    # The dead are not readmitted: stays after a death start a new subject.
    first = np.r_[True, subject[1:] != subject[:-1]]
    new_subject = first | np.r_[False, ihm[:-1] & ~first[1:]]
    subject_id = np.cumsum(new_subject) - 1

    readings = {m: s[m] * u + math.sqrt(1 - s[m] ** 2) * rng.standard_normal(n) for m in MODALITIES}
    q1 = {m: 0.1 + 0.85 * s[m] for m in MODALITIES}
    mentions = {m: np.where(conditions, rng.random((n, 25)) < q1[m], rng.random((n, 25)) < 0.1 * (1 - s[m]))
                for m in MODALITIES}
    present = _presence(rng, u, config)

    frame = pd.DataFrame({
        "stay_id": [str(30000000 + 7 * i + 3) for i in range(n)],
        "subject_id": [str(10000000 + 13 * int(k) + 1) for k in subject_id],
        "source": "synthetic",
        "label_ihm": ihm.astype(np.float32),
        "label_phenotypes": list(conditions.astype(np.float32)),
        "label_los_hours": los.astype(np.float32),
    })
    for m in MODALITIES:
        frame[presence_column(m)] = present[m]
    text_rng = random.Random(int(rng.integers(2**31)))
    gender = np.where(rng.random(n_subj) < 0.56, "M", "F")[subject]
    frame = frame.assign(
        **make_notes(text_rng, rng, readings, mentions, present, gender, los),
        **make_cxr(rng, readings["cxr"], mentions["cxr"], present["cxr"], config.cxr_size),
        **make_timeseries(rng, readings["timeseries"], mentions["timeseries"], present["timeseries"], gender),
        **make_demographics(rng, z_age, subject, present["demographics"], gender),
    )
    if latent is not None:
        latent.update(u=u, z_age=z_age[subject], gender=gender, conditions=conditions, readings=readings, mentions=mentions, present=present)
    manifest = Manifest(
        source="synthetic",
        modalities=list(MODALITIES),
        timeseries=TimeseriesInfo(features=TS_FEATURES, units={f: v[0] for f, v in TS_SPEC.items()}, hours=HOURS),
        demographics=DemographicsInfo(numeric=["age"], categorical=["gender", "ethnicity", "insurance", "marital_status", "admission_type"]),
        cxr_size=config.cxr_size,
        notes={"subjects": int(subject_id[-1] + 1), "readmitted_subjects": int((np.bincount(subject_id) > 1).sum())},
        ground_truth={
            "strengths": dict(s), "presence": dict(config.presence), "mnar": config.mnar, "seed": config.seed,
            "n_stays": n, "planted_order": config.planted_order(),
            "latent_model": {
                "severity": "u = a*z_age(subject) + sqrt(1-a^2)*sqrt(0.5)*(frailty(subject) + acute(stay)), a = demographics strength",
                "conditions": "c_k = 1[load_k*u + sqrt(1-load_k^2)*e_k > Phi^-1(1-prev_k)], e_k partly subject-level; labels = conditions",
                "los_hours": "48 + exp(N(log 50 + 0.35*u + 0.15*#acute conditions, 0.7))",
                "modality_reading": "o_m = s_m*u + sqrt(1-s_m^2)*eps_m; condition mentions P(|c=1) = 0.1+0.85*s_m, P(|c=0) = 0.1*(1-s_m)",
                "ihm_logit": f"{IHM_INTERCEPT} + {IHM_BETA}*u + sum_k w_k*c_k",
                "phenotype_prevalence": dict(zip(PHENOTYPES, prev.tolist())),
                "phenotype_severity_loading": dict(zip(PHENOTYPES, load.tolist())),
                "phenotype_mortality_weight": dict(zip(PHENOTYPES, weight.tolist())),
                "mnar_presence_logit": "logit(rate) + b + 3*mnar*u, b re-fitted so the mean equals rate",
                "demographics_signal": "age (through z_age); gender, ethnicity, marital status, admission type carry none",
            },
        },
    )
    return frame, manifest


def _presence(rng, u: np.ndarray, config: SynthConfig) -> dict[str, np.ndarray]:
    n, tilt = len(u), 3.0 * config.mnar
    present = {}
    for m in MODALITIES:
        rate = config.presence[m]
        if rate in (0.0, 1.0):
            present[m] = np.full(n, bool(rate))
            continue
        lo, hi = -20.0, 20.0  # bisect the intercept so that the mean presence probability is ``rate``
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expit(logit(rate) + mid + tilt * u).mean() < rate else (lo, mid)
        present[m] = rng.random(n) < expit(logit(rate) + lo + tilt * u)
    rates = np.array([config.presence[m] for m in MODALITIES])
    none = ~np.any([present[m] for m in MODALITIES], axis=0)
    pick = rng.choice(len(MODALITIES), size=n, p=rates / rates.sum())
    for j, m in enumerate(MODALITIES):
        present[m] = present[m] | (none & (pick == j))
    return present
