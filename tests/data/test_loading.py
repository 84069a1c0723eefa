"""Ray Data loading of a split × modality subset, and the collate to tensors (real local Ray)."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from sweeper.data.loading import StaysCollate, collate_all, needed_columns, split_dataset
from sweeper.data.schema import StaysError, read_manifest


@pytest.fixture(scope="module")
def ray_session():
    # An in-process local Ray, shut down after this module: the engine tests that start their
    # own Ray must not find a second instance on the machine.
    from sweeper.engine.session import RaySession

    with RaySession(None, num_cpus=2):
        yield


def _train_table(stays):
    manifest = read_manifest(stays)
    return pq.read_table([str(stays / p) for p in manifest.shards["train"]][0])


@pytest.mark.ray
def test_reads_only_the_subset_columns_and_present_stays(ray_session, synth_stays):
    dataset = split_dataset(synth_stays, "train", ["radiology", "cxr"], "ihm")
    columns = set(dataset.schema().names)
    assert columns == {"stay_id", "label_ihm", "present_radiology", "radiology_text", "radiology_time", "present_cxr", "cxr_images", "cxr_times"}
    rows = dataset.take_all()
    manifest = read_manifest(synth_stays)
    total = sum(pq.read_metadata(synth_stays / p).num_rows for p in manifest.shards["train"])
    assert 0 < len(rows) < total  # stays with neither modality were left out
    assert all(r["present_radiology"] or r["present_cxr"] for r in rows)


@pytest.mark.ray
def test_collate_gives_tensors_and_presence_masks(ray_session, synth_stays):
    manifest = read_manifest(synth_stays)
    subset = ["discharge", "cxr", "timeseries", "demographics"]
    collate = StaysCollate(manifest, subset, "phenotyping")
    dataset = split_dataset(synth_stays, "val", subset, "phenotyping").materialize()
    data = collate_all(dataset.iter_batches(batch_size=64, batch_format="numpy"), collate)
    n = len(data["stay_id"])
    assert n == dataset.count()
    assert data["present"].shape == (n, 4) and data["present"].dtype.is_floating_point is False
    assert data["label"].shape == (n, len(manifest.phenotypes))
    shapes = collate.input_shapes()
    for modality in subset:
        assert tuple(data[modality].shape[1:]) == shapes[modality], modality
    cxr_present = data["present"][:, 1].numpy()
    images = data["cxr"].numpy()
    assert images[cxr_present].max() > 0 and np.all(images[~cxr_present] == 0)  # absent: zeros + False mask
    ts = data["timeseries"].numpy()
    features = len(manifest.timeseries.features)
    mask = ts[:, :, features:]
    assert set(np.unique(mask)) <= {0.0, 1.0} and mask[data["present"][:, 2].numpy()].sum() > 0
    assert np.isfinite(ts).all()


def test_collate_is_what_the_loader_gives_without_ray(synth_stays):
    # The same collate over batches read with pyarrow directly: identical model inputs.
    manifest = read_manifest(synth_stays)
    collate = StaysCollate(manifest, ["demographics"], "ihm")
    table = _train_table(synth_stays).select(needed_columns(manifest, ["demographics"], "ihm"))
    batch = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    out = collate(batch)
    assert out["demographics"].shape == (len(table), manifest.demographics.width)
    assert out["label"].tolist() == table["label_ihm"].to_pylist()


def test_unknown_modality_and_missing_source_modality_are_errors(tmp_path, synth_stays):
    with pytest.raises(StaysError, match="unknown modality 'ekg'"):
        split_dataset(synth_stays, "train", ["ekg"], "ihm")
    with pytest.raises(StaysError, match="unknown task 'sepsis'"):
        split_dataset(synth_stays, "train", ["discharge"], "sepsis")


def test_a_process_decodes_each_image_once_and_never_mixes_two_snapshots(synth_stays, tmp_path, monkeypatch):
    """A reused trial actor collates the same images trial after trial: the second collate decodes
    nothing and gives the same arrays; another data snapshot with the same stay ids is decoded anew."""
    from PIL import Image

    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    table = _train_table(synth_stays).slice(0, 64)
    batch = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    collate = StaysCollate(read_manifest(synth_stays), ["cxr"], "ihm")
    first = collate(batch)["cxr"]
    decoded = len(opened)
    assert decoded == int(batch["present_cxr"].sum()) > 0
    assert np.array_equal(collate(batch)["cxr"].numpy(), first.numpy()) and len(opened) == decoded

    frame, manifest = generate(SynthConfig(n_stays=600, seed=5))  # other images under the same stay ids
    write_stays(frame, manifest, tmp_path / "other", split_seed=0)
    other_manifest = read_manifest(tmp_path / "other")
    assert other_manifest.content_hash != read_manifest(synth_stays).content_hash
    other = StaysCollate(other_manifest, ["cxr"], "ihm")(batch)["cxr"]
    assert len(opened) == 2 * decoded and np.array_equal(other.numpy(), first.numpy())  # same bytes in, same pixels out
