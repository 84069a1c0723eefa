"""Synthetic cohort: determinism, a valid stays folder, the planted signal order, presence/MNAR and bad
options. No Ray."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sweeper.cli import main
from sweeper.data.schema import MODALITIES, MODALITY_COLUMNS, StaysError, demo_column, presence_column
from sweeper.data.splits import assign_splits
from sweeper.data.stays import read_stays, write_stays
from sweeper.data.synthetic import SynthConfig, TS_FEATURES, generate


@pytest.fixture(scope="module")
def cohort():
    """The default 2000-stay cohort, seed 0 (shared by the slower tests)."""
    return generate(SynthConfig())


# ------------------------------------------------------------------------------------ determinism


def test_same_seed_same_cohort_other_seed_other_cohort():
    config = SynthConfig(n_stays=200, seed=3)
    a, manifest_a = generate(config)
    b, manifest_b = generate(SynthConfig(n_stays=200, seed=3))
    pd.testing.assert_frame_equal(a, b)
    assert manifest_a.to_json() == manifest_b.to_json()
    c, _ = generate(SynthConfig(n_stays=200, seed=4))
    assert not a["label_ihm"].equals(c["label_ihm"])
    assert a["discharge_text"].tolist() != c["discharge_text"].tolist()


# -------------------------------------------------------------------------------- stays folder


def test_writes_a_valid_stays_folder(tmp_path, cohort):
    frame, manifest = cohort
    assert "split" not in frame.columns
    assert set(manifest.expected_columns()) - set(frame.columns) == {"split"}
    write_stays(frame, manifest, tmp_path / "stays", split_seed=0)
    table, read = read_stays(tmp_path / "stays")
    back = table.to_pandas()
    assert len(back) == len(frame) == 2000
    assert read.source == "synthetic" and read.cxr_size == 32
    assert read.timeseries.features == TS_FEATURES and len(TS_FEATURES) == 17 and read.timeseries.hours == 48
    assert read.ground_truth["planted_order"] == ["discharge", "radiology", "demographics", "cxr", "timeseries"]

    presence = back[[presence_column(m) for m in MODALITIES]].to_numpy()
    assert presence.any(axis=1).all(), "every stay has at least one modality"
    for m in MODALITIES:
        absent = ~back[presence_column(m)]
        columns = [demo_column(f) for f in read.demographics.numeric + read.demographics.categorical] if m == "demographics" else list(MODALITY_COLUMNS[m])
        for column in columns:
            assert back.loc[absent, column].isna().all(), f"{column} must be null where {m} is absent"
        text = {"discharge": "discharge_text", "radiology": "radiology_text", "cxr": "cxr_images", "timeseries": "ts_hourly_values", "demographics": "demo_age"}[m]
        assert back.loc[~absent, text].notna().all(), f"{text} must be set where {m} is present"
    # Subjects with several stays exist, ~1.2-1.4 stays per subject, and share one split.
    per_subject = back.groupby("subject_id").size()
    assert (per_subject > 1).sum() >= 100 and 1.15 <= len(back) / len(per_subject) <= 1.45
    assert (back.groupby("subject_id")["split"].nunique() == 1).all()
    # Labels, LOS and the shapes of every modality.
    assert 0.09 <= back["label_ihm"].mean() <= 0.15
    assert (back["label_los_hours"] >= 48).all() and 70 <= back["label_los_hours"].median() <= 160
    assert all(len(p) == 25 for p in back["label_phenotypes"])
    row = back[back[presence_column("timeseries")]].iloc[0]
    assert len(row["ts_hourly_values"]) == len(row["ts_hourly_mask"]) == 48 * 17
    observed = np.asarray(row["ts_hourly_mask"], dtype=bool)
    assert 0 < observed.sum() == len(row["ts_event_value"]) == len(row["ts_event_time"]) == len(row["ts_event_feature"])
    assert np.all(np.diff(row["ts_event_time"]) >= 0) and 0 <= min(row["ts_event_time"]) and max(row["ts_event_time"]) < 48
    images = back.loc[back[presence_column("cxr")], "cxr_images"]
    assert images.map(len).between(1, 2).all() and (images.map(len) == 2).any()
    assert Image.open(io.BytesIO(images.iloc[0][0])).size == (32, 32)
    assert back["demo_ethnicity"].value_counts().min() < 20, "small subgroups exist"


def test_timeseries_physiological_ranges(cohort):
    frame, _ = cohort
    ts = frame[frame[presence_column("timeseries")]]
    values = np.stack(ts["ts_hourly_values"].to_numpy()).reshape(len(ts), 48, 17)
    mask = np.stack(ts["ts_hourly_mask"].to_numpy()).reshape(len(ts), 48, 17)
    assert np.isnan(values[~mask]).all() and not np.isnan(values[mask]).any()
    median = {name: np.nanmedian(values[..., i]) for i, name in enumerate(TS_FEATURES)}
    assert 70 <= median["Heart Rate"] <= 100 and 100 <= median["Systolic blood pressure"] <= 135
    assert 36 <= median["Temperature"] <= 38 and 7.3 <= median["pH"] <= 7.45 and 94 <= median["Oxygen saturation"] <= 100
    gcs = values[..., TS_FEATURES.index("Glascow coma scale total")]
    assert np.nanmin(gcs) >= 3 and np.nanmax(gcs) <= 15
    rate = mask.mean(axis=(0, 1))
    assert rate[TS_FEATURES.index("Heart Rate")] > 0.8 > 0.3 > rate[TS_FEATURES.index("Temperature")] > rate[TS_FEATURES.index("pH")]
    assert (~mask.any(axis=2)).any(), "some stays have charting gaps"


# ------------------------------------------------------------------------------- planted signal


def _features(frame: pd.DataFrame, modality: str, train: np.ndarray, test: np.ndarray):
    """Simple per-modality features: tf-idf, downsampled pixels, per-variable mean/last, one-hot."""
    if modality in ("discharge", "radiology"):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        text = frame[f"{modality}_text"]
        return vectorizer.fit_transform(text[train]), vectorizer.transform(text[test]), 1.0
    if modality == "cxr":
        def pixels(images):
            image = np.asarray(Image.open(io.BytesIO(images[0])), dtype=np.float32) / 255
            return image.reshape(4, 8, 4, 8).mean(axis=(1, 3)).ravel()  # 4x4 blocks: few features, little overfit
        x = np.stack(frame["cxr_images"].map(pixels).to_numpy())
        c = 0.01
    elif modality == "timeseries":
        values = np.stack(frame["ts_hourly_values"].to_numpy()).reshape(len(frame), 48, -1)
        with warnings.catch_warnings():  # all-NaN columns (a variable never charted) are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=1)
            last = np.array([[col[~np.isnan(col)][-1] if (~np.isnan(col)).any() else np.nan for col in v.T] for v in values])
        x = np.hstack([mean, last])
        fill = np.nanmean(x[train], axis=0)
        x = np.hstack([np.where(np.isnan(x), np.nan_to_num(fill), x), np.isnan(x)])
        c = 0.1
    else:
        categorical = frame[[c for c in frame.columns if c.startswith("demo_") and c != "demo_age"]].fillna("missing")
        encoder = OneHotEncoder(handle_unknown="ignore").fit(categorical[train])
        x = np.hstack([encoder.transform(categorical).toarray(), frame[["demo_age"]].to_numpy(dtype=float)])
        c = 1.0
    scaler = StandardScaler().fit(x[train])
    return scaler.transform(x[train]), scaler.transform(x[test]), c


def single_modality_aurocs(frame: pd.DataFrame, seed: int) -> dict[str, float]:
    """Validation AUROC for mortality per modality, averaged over two patient-level halves of the
    cohort (each half is once the training and once the validation split; only stays where the
    modality is present)."""
    half = assign_splits(frame, seed, fractions=(0.5, 0.5, 0.0)).to_numpy()
    y = frame["label_ihm"].to_numpy()
    aurocs = {}
    for modality in MODALITIES:
        present = frame[presence_column(modality)].to_numpy()
        rows, part, target = frame[present].reset_index(drop=True), half[present], y[present]
        scores = []
        for fit_on, score_on in (("train", "val"), ("val", "train")):
            train, test = part == fit_on, part == score_on
            x_train, x_test, c = _features(rows, modality, train, test)
            model = LogisticRegression(C=c, max_iter=2000).fit(x_train, target[train])
            scores.append(roc_auc_score(target[test], model.predict_proba(x_test)[:, 1]))
        aurocs[modality] = float(np.mean(scores))
    return aurocs


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_signal_order_is_recovered(seed, cohort):
    frame, manifest = cohort if seed == 0 else generate(SynthConfig(seed=seed))
    aurocs = single_modality_aurocs(frame, seed)
    found = sorted(aurocs, key=aurocs.get, reverse=True)
    assert found == manifest.ground_truth["planted_order"], f"single-modality AUROCs {aurocs}"
    assert aurocs["discharge"] > 0.8 and aurocs["timeseries"] < 0.65


def test_zero_strength_is_noise():
    strengths = {m: 0.0 for m in MODALITIES} | {"radiology": 0.9}
    frame, manifest = generate(SynthConfig(n_stays=1500, seed=2, strengths=strengths))
    aurocs = single_modality_aurocs(frame, 2)
    assert aurocs["radiology"] > 0.8
    assert all(abs(aurocs[m] - 0.5) < 0.1 for m in MODALITIES if m != "radiology"), aurocs
    assert manifest.ground_truth["planted_order"][0] == "radiology"


# ------------------------------------------------------------------------------- presence, MNAR


def test_presence_rates_follow_the_config():
    presence = {"discharge": 0.6, "radiology": 0.4, "cxr": 0.3, "timeseries": 0.9, "demographics": 0.8}
    for mnar in (0.0, 0.8):
        frame, manifest = generate(SynthConfig(n_stays=2000, seed=5, presence=presence, mnar=mnar))
        for m in MODALITIES:
            assert abs(frame[presence_column(m)].mean() - presence[m]) <= 0.05, (m, mnar)
        assert manifest.ground_truth["presence"] == presence and manifest.ground_truth["mnar"] == mnar


def _complete_vs_other_mortality(mnar: float) -> tuple[float, float]:
    frame, _ = generate(SynthConfig(n_stays=2000, seed=6, mnar=mnar))
    count = frame[[presence_column(m) for m in MODALITIES]].sum(axis=1)
    complete = count == len(MODALITIES)
    return frame.loc[complete, "label_ihm"].mean(), frame.loc[~complete, "label_ihm"].mean()


def test_mnar_makes_sicker_stays_more_complete():
    """With mnar, presence depends on the latent severity: complete stays die more often."""
    complete, other = _complete_vs_other_mortality(0.8)
    assert complete > 2 * other
    complete, other = _complete_vs_other_mortality(0.0)
    assert abs(complete - other) < 0.05


# ---------------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("change, option", [
    ({"strengths": SynthConfig().strengths | {"cxr": 1.5}}, "--strength: cxr=1.5"),
    ({"strengths": SynthConfig().strengths | {"ecg": 0.5}}, "--strength: unknown modality 'ecg'"),
    ({"presence": SynthConfig().presence | {"radiology": -0.1}}, "--presence: radiology=-0.1"),
    ({"presence": {m: 0.0 for m in MODALITIES}}, "--presence"),
    ({"n_stays": 10}, "--n-stays"),
    ({"mnar": 2.0}, "--mnar"),
    ({"strengths": {"cxr": 0.5}}, "--strength: no value for modality 'discharge'"),
    ({"cxr_size": 4}, "cxr_size"),
])
def test_bad_options_fail_naming_the_option(change, option):
    with pytest.raises(StaysError, match="^" + option.replace("(", r"\(")):
        generate(SynthConfig(**change))


@pytest.mark.parametrize("argument", ["foo=1", "cxr=1.5"])
def test_cli_bad_strength_exits_2_and_writes_nothing(tmp_path, capsys, argument):
    out = tmp_path / "stays"
    assert main(["data", "synth", "--out", str(out), "--strength", argument, "--n-stays", "50"]) == 2
    assert "--strength" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_writes_a_small_cohort(tmp_path, capsys):
    out = tmp_path / "stays"
    assert main(["data", "synth", "--out", str(out), "--n-stays", "60", "--seed", "2", "--mnar", "0.3"]) == 0
    table, manifest = read_stays(out)
    assert table.num_rows == 60 and manifest.ground_truth["seed"] == 2 and math.isclose(manifest.ground_truth["mnar"], 0.3)
    assert "synthetic" in capsys.readouterr().out


def test_latent_state_is_what_the_frame_was_drawn_from():
    config, latent = SynthConfig(n_stays=300, seed=3), {}
    frame, _ = generate(config, latent=latent)
    again, _ = generate(config)
    pd.testing.assert_frame_equal(frame, again)  # asking for the latent state changes no draw
    assert np.array_equal(latent["conditions"], np.stack(frame["label_phenotypes"]).astype(bool))
    for m in MODALITIES:
        assert np.array_equal(latent["present"][m], frame[presence_column(m)].to_numpy(bool))
        assert latent["mentions"][m].shape == (300, 25) and latent["readings"][m].shape == (300,)
    shown = frame[presence_column("demographics")].to_numpy(bool)
    assert shown.any() and list(frame[demo_column("gender")][shown]) == list(latent["gender"][shown])
    assert np.corrcoef(latent["u"], latent["readings"]["discharge"])[0, 1] > 0.8


@pytest.mark.parametrize("modality", ["radiology", "cxr", "timeseries"])
def test_shown_conditions_are_the_mentions_that_change_the_modality(modality):
    """SHOWN_CONDITIONS (what the alignment ceiling in bench/picme_alignment.py reads) is kept in step
    with the generators: flipping a mention it leaves out changes nothing; flipping one it lists changes the content."""
    import random

    from sweeper.data.synthetic_modalities import SHOWN_CONDITIONS, make_cxr, make_notes, make_timeseries

    n = 40
    rng = np.random.default_rng(0)
    readings = {m: rng.standard_normal(n) for m in MODALITIES}
    mentions = {m: rng.random((n, 25)) < 0.3 for m in MODALITIES}
    present = {m: np.ones(n, bool) for m in MODALITIES}
    gender, los = np.where(rng.random(n) < 0.5, "M", "F"), np.full(n, 100.0)

    def draw(flip: int | None):
        shown = {m: v.copy() for m, v in mentions.items()}
        if flip is not None:
            shown[modality][:, flip] = ~shown[modality][:, flip]
        if modality == "radiology":
            return make_notes(random.Random(0), np.random.default_rng(1), readings, shown, present, gender, los)["radiology_text"]
        if modality == "cxr":
            return [b"".join(images) for images in make_cxr(np.random.default_rng(1), readings["cxr"], shown["cxr"], present["cxr"], 32)["cxr_images"]]
        return [v.tobytes() for v in make_timeseries(np.random.default_rng(1), readings["timeseries"], shown["timeseries"], present["timeseries"], gender)["ts_hourly_values"]]

    base = draw(None)
    for k in range(25):
        assert (draw(k) != base) == (k in SHOWN_CONDITIONS[modality]), (modality, k)
