"""Missing-modality protocols (sweeper.data.corrupt): seeded by stay id, nested across rates, never
a stay's last modality, one modality or each; applied before collation. No Ray."""
from __future__ import annotations

import numpy as np

from sweeper.data.corrupt import EACH, CorruptedCollate, Protocol, hide

MODS = ["discharge", "timeseries", "demographics"]


def _present(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(MODS))) < 0.8
    present[:, 2] = True  # demographics always there
    return present, np.array([f"s{i}" for i in range(n)])


def test_each_modality_is_hidden_at_the_rate_and_never_the_last_one():
    present, ids = _present()
    kept = hide(present, ids, MODS, Protocol(EACH, 0.4, seed=3))
    assert not (kept & ~present).any() and kept.any(axis=1).all()
    hidden = (present & ~kept).sum() / present.sum()
    assert 0.33 < hidden < 0.4  # 0.4, less the last modalities given back


def test_one_modality_protocol_touches_only_that_modality():
    present, ids = _present()
    kept = hide(present, ids, MODS, Protocol("timeseries", 0.5))
    assert np.array_equal(kept[:, [0, 2]], present[:, [0, 2]])
    assert 0.45 < (present[:, 1] & ~kept[:, 1]).sum() / present[:, 1].sum() < 0.55
    assert np.array_equal(hide(present, ids, MODS, Protocol("cxr", 0.9)), present)  # not in the subset: nothing hidden


def test_the_draw_depends_on_seed_and_stay_not_on_order_and_rates_nest():
    present, ids = _present(500)
    protocol = Protocol(EACH, 0.3, seed=1)
    order = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(hide(present, ids, MODS, protocol)[order], hide(present[order], ids[order], MODS, protocol))
    assert not np.array_equal(hide(present, ids, MODS, protocol), hide(present, ids, MODS, Protocol(EACH, 0.3, seed=2)))
    low = hide(present, ids, MODS, Protocol("discharge", 0.3))
    high = hide(present, ids, MODS, Protocol("discharge", 0.6))
    assert not (high & ~low).any() and (low & ~high).any()  # a higher rate hides a superset


def test_the_collate_sees_the_hidden_modalities_absent():
    present, ids = _present(50)
    batch = {"stay_id": ids, **{f"present_{m}": present[:, j] for j, m in enumerate(MODS)}}

    class Echo:
        modalities = tuple(MODS)

        def __call__(self, batch):
            return {m: batch[f"present_{m}"] for m in MODS}

    out = CorruptedCollate(Echo(), Protocol(EACH, 0.5))(batch)
    expected = hide(present, ids, MODS, Protocol(EACH, 0.5))
    assert np.array_equal(np.stack([out[m] for m in MODS], axis=1), expected) and not np.array_equal(expected, present)
    assert CorruptedCollate(Echo(), Protocol(EACH, 0.5)).modalities == tuple(MODS)
