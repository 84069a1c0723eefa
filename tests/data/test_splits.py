"""Patient-level, presence-stratified splits: no leakage, determinism, fractions, strata, stays without
subject, bad fractions, and what the written manifest records. No Ray."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sweeper.data.schema import MODALITIES, SPLITS, StaysError, presence_column, read_manifest
from sweeper.data.splits import DEFAULT_FRACTIONS, assign_splits, presence_pattern
from sweeper.data.stays import write_stays
from sweeper.data.synthetic import SynthConfig, generate

# A few presence patterns (MODALITIES order: discharge, radiology, cxr, timeseries, demographics),
# three of them common, one rare.
PATTERNS = {"11111": 0.40, "10011": 0.30, "00011": 0.25, "01101": 0.05}


def make_cohort(n_subjects: int = 600, seed: int = 11, subject_ids: bool = True) -> pd.DataFrame:
    """Stays of subjects with 1-4 stays each (most subjects several), rows in chronological order;
    each stay draws its own presence pattern, so a subject's later stays may differ from the first."""
    rng = np.random.default_rng(seed)
    per_subject = rng.choice([1, 2, 3, 4], size=n_subjects, p=[0.35, 0.30, 0.20, 0.15])
    subject = np.repeat(np.arange(n_subjects), per_subject)
    n = len(subject)
    patterns = rng.choice(list(PATTERNS), size=n, p=list(PATTERNS.values()))
    frame = pd.DataFrame({
        "stay_id": [f"s{i:05d}" for i in range(n)],
        "subject_id": [f"p{k:04d}" for k in subject] if subject_ids else [None] * n,
    })
    for j, modality in enumerate(MODALITIES):
        frame[presence_column(modality)] = [p[j] == "1" for p in patterns]
    return frame


@pytest.fixture(scope="module")
def cohort():
    return make_cohort()


@pytest.fixture(scope="module")
def split(cohort):
    return assign_splits(cohort, seed=0)


def test_cohort_has_many_multi_stay_subjects(cohort):
    per_subject = cohort.groupby("subject_id").size()
    assert (per_subject > 1).sum() >= 300 and len(cohort) >= 1200


def test_every_stay_gets_a_split(cohort, split):
    assert len(split) == len(cohort) and split.name == "split"
    assert split.notna().all() and set(split) == set(SPLITS)


def test_no_subject_in_two_splits(cohort, split):
    per_subject = split.groupby(cohort["subject_id"]).nunique()
    assert (per_subject == 1).all(), per_subject[per_subject > 1].index.tolist()[:5]


def test_same_seed_same_split_other_seed_other_split(cohort, split):
    pd.testing.assert_series_equal(assign_splits(cohort, seed=0), split)
    other = assign_splits(cohort, seed=1)
    assert (other != split).mean() > 0.2, "another seed must give a clearly different split"
    assert (other.groupby(cohort["subject_id"]).nunique() == 1).all()


def test_fractions_roughly_70_15_15(cohort, split):
    stays = split.value_counts(normalize=True)
    subjects = split.groupby(cohort["subject_id"]).first().value_counts(normalize=True)
    for name, fraction in zip(SPLITS, DEFAULT_FRACTIONS):
        assert abs(stays[name] - fraction) <= 0.05, (name, stays.to_dict())
        assert abs(subjects[name] - fraction) <= 0.02, (name, subjects.to_dict())


def test_other_fractions_are_followed(cohort):
    split = assign_splits(cohort, seed=0, fractions=(0.5, 0.25, 0.25))
    subjects = split.groupby(cohort["subject_id"]).first().value_counts(normalize=True)
    assert abs(subjects["train"] - 0.5) <= 0.02 and abs(subjects["val"] - 0.25) <= 0.02


def test_presence_strata_are_spread_across_splits(cohort, split):
    """Stratified by the first stay's pattern: in each stratum every split's subject count is within
    one of its share (a plain random split would miss that on strata of ~100+ subjects)."""
    first = pd.DataFrame({"subject": cohort["subject_id"], "pattern": presence_pattern(cohort), "split": split}).drop_duplicates("subject")
    assert set(first["pattern"]) == set(PATTERNS)
    for pattern, members in first.groupby("pattern"):
        counts = members["split"].value_counts()
        for name, fraction in zip(SPLITS, DEFAULT_FRACTIONS):
            assert abs(counts.get(name, 0) - fraction * len(members)) <= 1, (pattern, len(members), counts.to_dict())
        if len(members) >= 20:
            assert set(counts.index) == set(SPLITS), pattern


def test_presence_pattern_strings():
    frame = make_cohort(n_subjects=5)
    patterns = presence_pattern(frame)
    row = frame.iloc[0]
    assert patterns.iloc[0] == "".join("1" if row[presence_column(m)] else "0" for m in MODALITIES)
    assert set(patterns) <= set(PATTERNS)


def test_stays_without_subject_id_are_split_by_stay():
    frame = make_cohort(n_subjects=200, subject_ids=False)
    split = assign_splits(frame, seed=0)
    counts = split.value_counts(normalize=True)
    for name, fraction in zip(SPLITS, DEFAULT_FRACTIONS):
        assert abs(counts[name] - fraction) <= 0.02, counts.to_dict()


def test_missing_subject_ids_mixed_with_known_ones(cohort):
    frame = cohort.copy()
    orphan = frame["subject_id"].isin({f"p{k:04d}" for k in range(0, 600, 3)})
    frame.loc[orphan, "subject_id"] = None
    split = assign_splits(frame, seed=0)
    known = ~orphan
    assert (split[known].groupby(frame.loc[known, "subject_id"]).nunique() == 1).all()
    orphan_counts = split[orphan].value_counts(normalize=True)
    assert orphan.sum() > 300 and set(orphan_counts.index) == set(SPLITS)
    assert abs(orphan_counts["train"] - 0.7) <= 0.05, "orphan stays are split one by one, not as one group"


def test_assignment_does_not_depend_on_unrelated_columns(cohort, split):
    noisy = cohort.assign(label_ihm=np.arange(len(cohort)) % 2, source="x")
    pd.testing.assert_series_equal(assign_splits(noisy, seed=0), split)


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (0.8, 0.3, -0.1), (0.7, 0.3), (0.7, 0.1, 0.1, 0.1), (0.6, 0.2, 0.1)])
def test_bad_fractions_raise(cohort, fractions):
    with pytest.raises(StaysError, match=r"^split fractions \[.*\]: need three non-negative numbers summing to 1"):
        assign_splits(cohort, seed=0, fractions=fractions)


def test_missing_presence_column_raises(cohort):
    with pytest.raises(StaysError, match="missing required column 'present_cxr'"):
        assign_splits(cohort.drop(columns=[presence_column("cxr")]), seed=0)


# ------------------------------------------------------------------------------ written manifest


@pytest.fixture(scope="module")
def synthetic():
    return generate(SynthConfig(n_stays=200, seed=0))


def test_bad_fractions_through_the_writer_write_nothing(tmp_path, synthetic):
    frame, manifest = synthetic
    with pytest.raises(StaysError, match=r"^split fractions"):
        write_stays(frame, manifest, tmp_path / "stays", split_fractions=(0.9, 0.2, 0.1))
    assert list(tmp_path.iterdir()) == []


def test_split_method_and_seed_are_recorded(tmp_path, synthetic):
    frame, manifest = synthetic
    out = tmp_path / "stays"
    written = write_stays(frame, manifest, out, split_seed=7)
    raw = json.loads((out / "manifest.json").read_text())["split"]
    assert raw == {"method": "patient-level, stratified by first-stay modality-presence pattern", "seed": 7, "fractions": [0.7, 0.15, 0.15]}
    assert read_manifest(out).split == raw == written.split
    assert manifest.split == {}, "the caller's manifest is not modified"
    # The recorded seed reproduces the written split.
    expected = assign_splits(frame, seed=7).value_counts().to_dict()
    assert written.counts == {s: expected[s] for s in SPLITS}


def test_given_split_is_recorded_as_given(tmp_path, synthetic):
    frame, manifest = synthetic
    given = frame.assign(split=assign_splits(frame, seed=3, fractions=(0.6, 0.2, 0.2)))
    written = write_stays(given, manifest, tmp_path / "stays", split_seed=99)
    assert written.split == {"method": "given by the source"}
    assert written.counts == given["split"].value_counts().to_dict()
