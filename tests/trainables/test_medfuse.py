"""medfuse: the token fusions against their equations, observed-only tokens, and learning on the
synthetic cohort and a set A → set B transfer on real PhysioNet 2012 (no Ray: the in-memory session)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from sweeper.data.inputs import token_vocab, window_medians
from sweeper.data.loading import StaysCollate
from sweeper.data.schema import read_manifest
from sweeper.loop.training import run_training
from trainables.medfuse import MedFuse, TokenEmbedding, sinusoidal


def test_mufuse_with_k1_and_identity_affine_is_the_gated_feature_embedding():
    torch.manual_seed(0)
    embed = TokenEmbedding(n_features=6, n_classes=1, d=8, fusion="mufuse", partition_k=1)
    assert torch.equal(embed.gamma, torch.ones_like(embed.gamma)) and torch.equal(embed.beta, torch.zeros_like(embed.beta))
    feature, x = torch.tensor([[0, 3, 5]]), torch.tensor([[0.5, -1.2, 2.0]])
    expected = embed.feature(feature) * torch.sigmoid(embed.phi(x.unsqueeze(-1)))
    assert torch.allclose(embed.numeric(feature, x), expected)


def test_mufuse_repeats_each_value_entry_k_times():
    torch.manual_seed(0)
    embed = TokenEmbedding(n_features=3, n_classes=1, d=8, fusion="mufuse", partition_k=4)
    with torch.no_grad():
        embed.gamma.uniform_(0.5, 2.0)
        embed.beta.uniform_(-1.0, 1.0)
    feature, x = torch.tensor([[2, 1]]), torch.tensor([[0.3, -0.7]])
    v = embed.gamma[feature] * embed.phi(x.unsqueeze(-1)) + embed.beta[feature]  # [1, 2, d_v = 2]
    gate = torch.sigmoid(torch.stack([v[..., 0]] * 4 + [v[..., 1]] * 4, dim=-1))
    assert torch.allclose(embed.numeric(feature, x), embed.feature(feature) * gate)


def test_scane_is_the_feature_embedding_times_the_value():
    embed = TokenEmbedding(n_features=4, n_classes=1, d=8, fusion="scane", partition_k=1)
    feature, x = torch.tensor([[1, 2, 3]]), torch.tensor([[2.0, -0.5, 0.0]])
    assert torch.allclose(embed.numeric(feature, x), embed.feature(feature) * x.unsqueeze(-1))
    assert not hasattr(embed, "phi")


def test_additive_and_concatenative_fusions():
    feature, x = torch.tensor([[0, 1]]), torch.tensor([[1.0, -1.0]])
    add = TokenEmbedding(n_features=2, n_classes=1, d=8, fusion="add", partition_k=1)
    assert torch.allclose(add.numeric(feature, x), add.feature(feature) + add.project(add.value(feature, x)))
    cat = TokenEmbedding(n_features=2, n_classes=1, d=8, fusion="concat", partition_k=1)
    assert torch.allclose(cat.numeric(feature, x), cat.project(torch.cat([cat.feature(feature), cat.value(feature, x)], -1)))


def test_categorical_tokens_embed_feature_and_class_whatever_the_fusion():
    embed = TokenEmbedding(n_features=3, n_classes=4, d=8, fusion="mufuse", partition_k=2)
    feature, x, klass = torch.tensor([[2, 0]]), torch.tensor([[0.0, 1.5]]), torch.tensor([[3, 0]])
    out = embed(feature, x, klass)
    expected = embed.categorical(torch.cat([embed.feature(feature[:, :1]), embed.category(klass[:, :1])], -1))
    assert torch.allclose(out[:, :1], expected)
    assert torch.allclose(out[:, 1:], embed.numeric(feature[:, 1:], x[:, 1:]))


def test_sinusoidal_time_encoding():
    enc = sinusoidal(torch.tensor([0.0, 5.0]), 8, 10000.0)
    assert torch.allclose(enc[0], torch.tensor([0.0, 1.0] * 4))
    assert torch.isclose(enc[1, 0], torch.sin(torch.tensor(5.0))) and torch.isclose(enc[1, 1], torch.cos(torch.tensor(5.0)))


def test_window_medians_take_the_median_per_feature_and_window():
    feature, window, median = window_medians([0, 0, 0, 1, 0, 1], [1.0, 5.0, 3.0, 7.0, 10.0, 9.0], [0.2, 1.0, 1.9, 0.5, 2.5, 47.9], 24, 2.0)
    assert list(zip(window.tolist(), feature.tolist(), median.tolist())) == [(0, 0, 3.0), (0, 1, 7.0), (1, 0, 10.0), (23, 1, 9.0)]
    feature, window, median = window_medians([2, 2], [1.0, 2.0], [48.0, 3.0], 24, 2.0)  # t = 48 h falls into the last window
    assert window.tolist() == [1, 23] and median.tolist() == [2.0, 1.0]


def _batch(manifest, events, demo_known: bool):
    """A two-stay numpy batch as Ray Data yields it: stay 0 with ``events``, stay 1 descriptors only."""
    demo = manifest.demographics
    batch = {
        "stay_id": np.array(["s0", "s1"]), "label_ihm": np.array([0.0, 1.0], np.float32),
        "present_timeseries": np.array([True, False]), "present_demographics": np.array([True, True]),
        "ts_event_feature": np.array([np.asarray(events[0], np.int16), None], dtype=object),
        "ts_event_value": np.array([np.asarray(events[1], np.float32), None], dtype=object),
        "ts_event_time": np.array([np.asarray(events[2], np.float32), None], dtype=object),
    }
    for field in demo.numeric:
        batch[f"demo_{field}"] = np.array([50.0, 70.0] if demo_known else [np.nan, np.nan], np.float32)
    for field in demo.categorical:
        batch[f"demo_{field}"] = np.array([demo.categories[field][0], None] if demo_known else [None, None], dtype=object)
    return batch


def test_tokens_are_made_for_observed_values_only(synth_stays):
    manifest = read_manifest(synth_stays)
    collate = StaysCollate(manifest, ["timeseries", "demographics"], "ihm", inputs="tokens")
    vocab, demo = token_vocab(collate), manifest.demographics
    n_series = len(manifest.timeseries.features)
    out = collate(_batch(manifest, ([0, 0, 4], [70.0, 90.0, 1.0], [0.5, 1.0, 30.0]), demo_known=True))
    mask = out["tok_mask"].numpy()
    n_static_0 = len(demo.numeric) + len(demo.categorical)
    assert mask[0].sum() == n_static_0 + 2  # descriptors + one token per observed (series, window)
    # Stay 1 has descriptors only: only t = 0 tokens, one per known descriptor (its categoricals are null).
    assert mask[1].sum() == len(demo.numeric)
    assert (out["tok_time"].numpy()[1][mask[1]] == 0).all()
    assert (out["tok_feature"].numpy()[1][mask[1]] >= n_series).all()
    series = mask[0] & (out["tok_feature"].numpy()[0] < n_series)
    assert out["tok_time"].numpy()[0][series].tolist() == [1.0, 31.0]  # window centres
    z = (80.0 - manifest.timeseries.mean[0]) / manifest.timeseries.std[0]  # median of 70 and 90, z-scored
    assert np.isclose(out["tok_value"].numpy()[0][series][0], z)
    classes = out["tok_class"].numpy()[0][mask[0]]
    assert (classes > 0).sum() == len(demo.categorical) and vocab.classes[classes.max()] != "(none)"
    # Nothing known at all → no tokens (the model's summary token still gives the stay a representation).
    none_known = collate(_batch(manifest, ([], [], []), demo_known=False))
    assert none_known["tok_mask"].numpy()[1].sum() == 0


def test_token_inputs_refuse_other_modalities(synth_stays):
    from sweeper.data.schema import StaysError

    with pytest.raises(StaysError, match="tokens inputs are built from timeseries and demographics only, not discharge"):
        StaysCollate(read_manifest(synth_stays), ["timeseries", "discharge"], "ihm", inputs="tokens")


def _config(stays, fusion="mufuse", **extra):
    return {
        "method": "medfuse", "task": "ihm", "modalities": ["timeseries", "demographics"], "seed": 0, "final": True,
        "max_epochs": 6, "patience": 6, "manifest": read_manifest(stays), "d": 32, "fusion": fusion,
        "partition_k": 4, "heads": 4, "layers": 1, "dropout": 0.1, "time_period": 10000.0, "window_hours": 2.0, "phi_hidden": 64,
        "mufuse_gate": "sigmoid", "lr": 2e-3, "batch_size": 32, "weight_decay": 1e-4, **extra,
    }


@pytest.fixture(scope="module")
def series_stays(tmp_path_factory):
    """600 synthetic stays whose time series carry a strong share of the planted signal (the
    default cohort plants little there: logistic regression on the series alone gets ~0.6)."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("series") / "stays"
    frame, manifest = generate(SynthConfig(n_stays=600, seed=0, strengths={**SynthConfig().strengths, "timeseries": 0.9}))
    write_stays(frame, manifest, out, split_seed=0)
    return out


@pytest.mark.parametrize(("fusion", "gate"), [("mufuse", "sigmoid"), ("mufuse", "tanh"), ("scane", "sigmoid")])
def test_beats_trivial_baseline_on_synthetic(series_stays, in_memory_session, fusion, gate):
    session = in_memory_session(series_stays)
    run_training(_config(series_stays, fusion, heads=2, lr=3e-3, mufuse_gate=gate), session)
    final = session.reports[-1]
    assert final["done"]
    assert final["test_auroc"] > 0.65, final  # a constant score has AUROC 0.5 (measured: 0.71, 0.75 and 0.78)


def test_transfer_copies_shared_feature_embeddings_and_freezes_them(tmp_path, synth_stays):
    manifest = read_manifest(synth_stays)
    vocab = token_vocab(StaysCollate(manifest, ["timeseries", "demographics"], "ihm", inputs="tokens"))
    config = _config(synth_stays)
    source = MedFuse(config, {"tokens": vocab}, 1)
    # The source cohort knows the first three series under the same names, plus one the target lacks.
    export = source.export()
    export["feature_names"] = list(vocab.features[:3]) + ["NotInTarget"]
    export["state_dict"] = {"embed.feature.weight": source.embed.feature.weight.detach()[[0, 1, 2, 5]].clone()}
    torch.save(export, tmp_path / "model.pt")
    target = MedFuse({**config, "transfer_from": str(tmp_path / "model.pt"), "transfer_freeze_epochs": 1}, {"tokens": vocab}, 1)
    weight = target.embed.feature.weight
    assert torch.equal(weight[:3], source.embed.feature.weight[:3]) and target.frozen_rows.tolist()[:4] == [True, True, True, False]
    before = weight.detach().clone()
    optimizer = torch.optim.SGD(target.parameters(), lr=1.0)
    batch = {"tok_feature": torch.tensor([[0, 1, 3]]), "tok_value": torch.tensor([[1.0, 2.0, 3.0]]),
             "tok_time": torch.zeros(1, 3), "tok_class": torch.zeros(1, 3, dtype=torch.long), "tok_mask": torch.ones(1, 3, dtype=torch.bool)}
    for epoch, frozen in ((0, True), (1, False)):
        target.on_epoch_start(epoch)
        optimizer.zero_grad()
        target(batch)["logits"].sum().backward()
        optimizer.step()
        assert torch.equal(weight[:2], before[:2]) == frozen
        assert not torch.equal(weight[3], before[3])  # not transferred: always trained
        before = weight.detach().clone()
    with pytest.raises(FileNotFoundError, match="transfer_from .*no such file"):
        MedFuse({**config, "transfer_from": str(tmp_path / "absent.pt")}, {"tokens": vocab}, 1)


def test_transfer_from_set_a_to_set_b_on_real_physionet(tmp_path, in_memory_session, p12_dir):
    """Paper §4.8 on real files: a model trained on P12 set A seeds set B's feature embeddings."""
    import subprocess
    import sys

    for name in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "data", "prepare", "physionet2012", "--src", str(p12_dir), "--sets", name, "--out", str(tmp_path / name)],
            capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stderr
    small = {"d": 16, "heads": 1, "layers": 1, "batch_size": 64, "max_epochs": 1, "patience": 1}
    source = in_memory_session(tmp_path / "a")
    run_training(_config(tmp_path / "a", **small, save_model=True), source)
    (tmp_path / "a.pt").write_bytes(source.model_bytes)
    exported = torch.load(tmp_path / "a.pt", weights_only=True)
    assert len(exported["feature_names"]) == 36 + 5  # the 36 series and the 5 descriptors

    target = in_memory_session(tmp_path / "b")
    config = _config(tmp_path / "b", **{**small, "max_epochs": 2, "patience": 2}, transfer_from=str(tmp_path / "a.pt"), transfer_freeze_epochs=1, save_model=True)
    run_training(config, target)
    tuned = torch.load(io.BytesIO(target.model_bytes), weights_only=True)
    # Sets A and B share every feature: all rows came from A, were frozen for epoch 1, then tuned.
    assert tuned["feature_names"] == exported["feature_names"]
    source_rows, tuned_rows = exported["state_dict"]["embed.feature.weight"], tuned["state_dict"]["embed.feature.weight"]
    assert not torch.equal(source_rows, tuned_rows) and torch.allclose(source_rows, tuned_rows, atol=0.1)
    assert target.reports[-1]["test_auroc"] > 0.6  # mortality on set B's own test stays
