"""``mga.seq``: stays as chronological event sequences read by a causal LM with LoRA (no Ray: the
in-memory session runs the workers' loop; a tiny random Llama stands in for SmolLM2).

The order cohort: synthetic stays with both notes, whose note times are redrawn uniformly in the
48-hour window and whose label says which note came first. The notes' content is independent of
their times, so a head that sees one embedding per modality (``mga.static``) cannot beat chance,
while the sequential decoder reads the order.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sweeper.loop.training import run_training

EVENT_SUBSET = ["radiology", "cxr", "timeseries", "demographics"]
ORDER_SUBSET = ["discharge", "radiology", "demographics"]
TINY = {"d": 16, "lm": "tiny:32", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "text_encoder": "bag", "cnn_width": 4}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as the loop runs a trial (``torch_threads``): tiny models on a shared machine
    are many times slower with several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _collated(stays, modalities, split="test", features=None, batch_size=64, window_hours=1.0):
    from sweeper.data.loading import StaysCollate, collate_all
    from sweeper.data.schema import read_manifest
    from tests.conftest import InMemorySession
    from trainables import registry

    registry.names()  # loads the families (and the mga.events input kind)
    collate = StaysCollate(read_manifest(stays), modalities, "ihm", inputs="mga.events", features=features, window_hours=window_hours)
    session = InMemorySession(stays)
    return collate, collate_all(session.dataset(split).iter_batches(batch_size=batch_size), collate), session.tables[split].to_pandas()


def _model(collate, method="mga.seq_scratch", **extra):
    from trainables import registry

    torch.manual_seed(0)
    config = {**registry.get(method).defaults, **TINY, "task": "ihm", "seed": 0, **extra}
    return registry.get(method).build_model(config, collate.input_shapes(), collate.n_outputs())


def test_events_are_chronological_and_come_from_the_stays_times(synth_stays):
    collate, data, frame = _collated(synth_stays, EVENT_SUBSET)
    frame = frame.set_index("stay_id").loc[data["stay_id"]]
    hours = collate.manifest.timeseries.hours
    j = {m: EVENT_SUBSET.index(m) for m in EVENT_SUBSET}
    checked = 0
    for i, (stay, row) in enumerate(frame.iterrows()):
        mask = data["tok_mask"][i].numpy()
        modality, time, hour = data["ev_modality"][i].numpy()[mask], data["ev_time"][i].numpy()[mask], data["ev_hour"][i].numpy()[mask]
        known = time[~np.isnan(time)]
        assert (np.diff(known) >= 0).all() and np.isnan(time[len(known):]).all(), stay
        assert modality[0] == j["demographics"] and time[0] == 0.0  # every stay has demographics here
        series = modality == j["timeseries"]
        if row["present_timeseries"]:
            observed = np.asarray(row["ts_hourly_mask"], bool).reshape(hours, -1).any(axis=1)
            assert list(hour[series]) == list(np.flatnonzero(observed)) and np.allclose(time[series], hour[series] + 1)
        else:
            assert not series.any()
        assert (modality == j["radiology"]).sum() == int(row["present_radiology"])
        if row["present_radiology"]:
            assert np.isclose(time[modality == j["radiology"]][0], row["radiology_time"])
        if row["present_cxr"]:
            assert np.isclose(time[modality == j["cxr"]][0], np.max(row["cxr_times"]))
            checked += 1
    assert checked > 10


def test_time_series_events_follow_the_window(synth_stays):
    """``window_hours: 6``: one event per 6-hour window with an observation, at the window's end."""
    _, hourly, frame = _collated(synth_stays, ["timeseries"], window_hours=1.0)
    _, windows, _ = _collated(synth_stays, ["timeseries"], window_hours=6.0)
    for i in range(len(hourly["stay_id"])):
        hours = hourly["ev_time"][i][hourly["tok_mask"][i]].numpy()
        ends = windows["ev_time"][i][windows["tok_mask"][i]].numpy()
        assert list(ends) == sorted({float(np.ceil(h / 6) * 6) for h in hours}), hourly["stay_id"][i]
        assert (windows["ev_hour"][i][windows["tok_mask"][i]].numpy() == ends - 1).all()


@pytest.mark.parametrize("after", ["drop", "clip"])
def test_the_decoder_reads_only_present_events_within_the_horizon(synth_stays, after):
    collate, data, _ = _collated(synth_stays, EVENT_SUBSET)
    model = _model(collate, horizon_hours=24, after_horizon=after).eval()
    present = data["present"].clone()
    present[::3, EVENT_SUBSET.index("radiology")] = False  # what train_missing_rate or a protocol does
    with torch.no_grad():
        seq = model.sequence({**data, "present": present})
    kind, time, valid = seq["kind"].numpy(), seq["time"].numpy(), seq["valid"].numpy()
    for i in range(len(kind)):
        events = kind[i] >= 0
        expected = data["tok_mask"][i].numpy() & present[i].numpy()[data["ev_modality"][i].numpy()]
        if after == "drop":
            expected &= data["ev_time"][i].numpy() <= 24
        assert events.sum() == expected.sum()
        assert (np.diff(time[i][events]) >= 0).all()
        if after == "drop":
            assert (time[i][events] <= 24).all()
        assert valid[i].sum() == max(2 * events.sum(), 1)  # e P e P ... or a lone [PREDICT]
        assert (kind[i][valid[i]][1::2] == -1).all() if events.any() else kind[i][0] == -1
        if i % 3 == 0:
            assert not (kind[i] == EVENT_SUBSET.index("radiology")).any()
    late = (data["ev_time"] > 24) & data["tok_mask"]
    assert late.any()  # the horizon cut something: hours 25-48 of the series, later notes and images


def test_padding_does_not_change_a_stays_prediction(synth_stays):
    collate, data, _ = _collated(synth_stays, EVENT_SUBSET)
    model = _model(collate).eval()
    present = data["present"].clone()
    present[0] = False  # no events at all: a lone [PREDICT]
    data = {**data, "present": present}
    lengths = (data["tok_mask"] & present.gather(1, data["ev_modality"])).sum(dim=1)
    assert lengths.max() > lengths[1:].min() + 10  # stays of very different lengths share the batch
    with torch.no_grad():
        together = model(data)["logits"]
        traced = model.trace(data)
        for i in [0, 1, 2, int(lengths.argmin()), int(lengths.argmax())]:
            alone = {k: v[i : i + 1] for k, v in data.items()}
            assert torch.allclose(model(alone)["logits"], together[i : i + 1], atol=1e-5), i
            t = model.trace(alone)
            width = t["attention"].shape[1]
            assert torch.allclose(t["attention"], traced["attention"][i : i + 1, :width], atol=1e-5)
            assert traced["attention"][i, width:].abs().sum() == 0
    assert torch.allclose(traced["logits"], together, atol=1e-5)  # the trace runs the same decoder (eager attention)


def test_lora_adapters_train_while_the_language_model_stays_frozen(synth_stays):
    from trainables.mga.seq import seq_loss, trainable_adamw

    collate, data, _ = _collated(synth_stays, ["radiology", "timeseries", "demographics"], split="val")
    model = _model(collate)
    lm = {n: p for n, p in model.named_parameters() if n.startswith("lm.")}
    assert lm and all(p.requires_grad == ("lora_" in n) for n, p in lm.items())
    base_before = {n: p.detach().clone() for n, p in lm.items() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in lm.items() if "lora_" in n}
    loss_fn, optimizer = seq_loss("ihm", data["label"], {}), trainable_adamw(model, {"lr": 1e-2})
    model.train()
    batch = {k: v[:32] for k, v in data.items()}
    for _ in range(3):
        out = model(batch)
        assert out["logits"].ndim == 3  # seq_loss: all — every [PREDICT] position
        loss = loss_fn(out["logits"], batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(p, base_before[n]) for n, p in model.named_parameters() if n in base_before)
    assert all(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if n in lora_before)
    # the state leaves the frozen LM out and restores the trained model
    state = model.state_dict()
    assert not any(k in state for k in base_before) and all(k in state for k in lora_before)
    fresh = _model(collate)
    fresh.load_state_dict(state)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(batch)["logits"], model(batch)["logits"], atol=1e-6)
    last = _model(collate, seq_loss="last").train()
    assert last(batch)["logits"].shape == (32, 1)  # seq_loss: last — the last [PREDICT] only


def test_the_pretraining_artifact_holds_per_hour_series_embeddings(synth_stays, in_memory_session):
    from trainables.mga.pretrain import read_artifact
    from sweeper.data.schema import read_manifest
    from trainables import registry

    session = in_memory_session(synth_stays)
    config = {**registry.get("mga.seq").defaults, **TINY, "method": "mga.seq", "task": "ihm", "modalities": ["timeseries", "demographics"],
              "seed": 0, "stage": "mga.pretrain", "manifest": read_manifest(synth_stays), "pretrain_epochs": 1, "max_epochs": 1, "patience": 1}
    run_training(config, session)
    features = read_artifact(str(session.artifact))["features"]
    ids, stay = features["timeseries"]
    hourly_ids, hourly = features["timeseries_hourly"]
    assert list(hourly_ids) == list(ids) and hourly.shape == (len(ids), 48 * 16)
    with np.load(session.artifact / "embeddings.npz") as saved:
        has = saved["present"][:, 0].astype(bool)
    hours = hourly.reshape(len(ids), 48, 16)
    assert np.allclose(np.linalg.norm(hours[has], axis=2), 1.0, atol=1e-5) and (hours[~has] == 0).all()
    assert np.allclose(hours[has, -1], stay[has], atol=1e-5)  # after the last hour: the stay's aligned embedding
    assert not np.allclose(hours[has, 0], stay[has], atol=1e-2)


@pytest.fixture(scope="module")
def order_stays(tmp_path_factory):
    """Stays with both notes, timed uniformly in the window; label: the discharge note came first."""
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    frame, manifest = generate(SynthConfig(n_stays=1300, seed=1))
    frame = frame[frame["present_discharge"] & frame["present_radiology"]].reset_index(drop=True)
    rng = np.random.default_rng(0)
    times = rng.uniform(0, 48, (len(frame), 2)).astype(np.float32)
    frame["discharge_time"] = pd.array(times[:, 0], dtype="Float32")
    frame["radiology_time"] = pd.array(times[:, 1], dtype="Float32")
    frame["label_ihm"] = (times[:, 0] < times[:, 1]).astype(np.float32)
    out = tmp_path_factory.mktemp("mga-order") / "stays"
    write_stays(frame, manifest, out, split_seed=0)
    return out


def _config(stays, method, **extra):
    from sweeper.data.schema import read_manifest
    from trainables import registry

    return {
        **registry.get(method).defaults, **TINY, "method": method, "task": "ihm", "modalities": ORDER_SUBSET, "seed": 0, "final": True,
        "max_epochs": 12, "patience": 4, "manifest": read_manifest(stays), "lr": 3e-3, "batch_size": 32, "pretrain_epochs": 6,
        "pretrain_patience": 3, "pretrain_batch_size": 64, "pretrain_lr": 3e-3, **extra,
    }


@pytest.fixture(scope="module")
def order_runs(order_stays):
    """The pre-training, then mga.static (MLP) and mga.seq on its frozen embeddings."""
    from tests.conftest import InMemorySession
    from trainables.mga.pretrain import read_artifact

    stage = InMemorySession(order_stays)
    run_training(_config(order_stays, "mga.seq", stage="mga.pretrain"), stage)
    artifact = read_artifact(str(stage.artifact))
    runs = {}
    for method, extra in [("mga.static", {"head": "mlp"}), ("mga.seq", {"removal_protocol": True})]:
        session = InMemorySession(order_stays)
        run_training(_config(order_stays, method, features=artifact["features"], **artifact["config"], **extra), session)
        runs[method] = session.reports[-1]
    for method, extra in [("mga.static_scratch", {"head": "mlp"}), ("mga.seq_scratch", {})]:  # the encoders trained end to end
        session = InMemorySession(order_stays)
        run_training(_config(order_stays, method, **extra), session)
        runs[method] = session.reports[-1]
    return runs


def test_the_sequential_decoder_reads_event_order_the_static_head_cannot(order_runs):
    for static, seq in [("mga.static", "mga.seq"), ("mga.static_scratch", "mga.seq_scratch")]:
        static, seq = order_runs[static]["test_auroc"], order_runs[seq]["test_auroc"]
        assert static < 0.65, static  # one embedding per modality: no order to see
        assert seq > 0.8 and seq > static + 0.2, (seq, static)


def _summary_table(report, method="mga.seq"):
    rows = [{"cell_id": "c", "task": "ihm", "method": method, "subset": "+".join(ORDER_SUBSET), "name": k.split(":", 1)[1], "value": v, "n_seeds": 1}
            for k, v in report.items() if k.startswith("summary:")]
    return pd.DataFrame(rows)


def test_attention_export_and_removal_protocol_tables(order_runs):
    from trainables import registry

    analyses = {a.name: a for a in registry.get("mga.seq").analyses(_summary_table(order_runs["mga.seq"]))}
    attention = analyses["mga_seq_attention"].table
    assert sorted(attention["stay"].unique()) == [0, 1, 2]
    assert set(attention["token"]) == set(ORDER_SUBSET) | {"[PREDICT]"}
    for _, stay in attention.groupby("stay"):  # the last [PREDICT]'s softmax, every position exported
        assert np.isclose(stay["attention"].sum(), 1.0, atol=1e-4)
        assert list(stay["position"]) == list(range(len(stay))) and (np.diff(stay["hours"]) >= 0).all()
        assert list(stay["token"][1::2]) == ["[PREDICT]"] * (len(stay) // 2) and stay["token"].iloc[0] == "demographics"
    removal = analyses["mga_seq_removal"].table
    assert set(removal["removed"]) == {"none", *ORDER_SUBSET} and set(removal["token"]) == set(ORDER_SUBSET) | {"[PREDICT]"}
    assert np.allclose(removal["delta_auroc"], removal["auroc_removed"] - removal["auroc_full"])
    assert np.allclose(removal["delta_attention"], removal["attention_removed"] - removal["attention_full"])
    own = removal[removal["removed"] == removal["token"]]
    assert len(own) == 3 and (own["attention_removed"] == 0).all() and (own["attention_full"] > 0).all()
    for _, condition in removal.groupby("removed"):
        assert np.isclose(condition["attention_removed"].sum(), 1.0, atol=1e-4)
    by_removed = removal.groupby("removed")[["delta_auroc", "n_affected"]].first()
    full = order_runs["mga.seq"]["test_auroc"]
    assert np.isclose(removal["auroc_full"].iloc[0], full, atol=1e-6)
    # the label is the notes' order: without either note the decoder is back to chance
    for note in ("discharge", "radiology"):
        assert by_removed.loc[note, "delta_auroc"] < -0.2, by_removed
        assert by_removed.loc[note, "n_affected"] > 50
    assert by_removed.drop("none")["n_affected"].nunique() == 1  # every order stay has all three modalities
    summary = analyses["mga_seq_removal"].summary
    assert "delta_auroc" in summary.columns and len(summary) == 3


def test_aligned_decoder_needs_the_stage_and_its_hourly_embeddings(synth_stays):
    collate, _, _ = _collated(synth_stays, ["timeseries", "demographics"])
    with pytest.raises(ValueError, match="mga.pretrain"):
        _model(collate, method="mga.seq")
