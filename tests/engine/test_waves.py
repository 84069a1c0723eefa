"""The tune phase's waves: consecutive whole cells, at most ``trials_per_experiment`` trials each."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sweeper.engine.phases import wave_name, waves
from sweeper.plan.spec import Cell


def _cells(n: int) -> list[Cell]:
    return [Cell(task="ihm", method="picme.supervised", modalities=(f"m{i}",)) for i in range(n)]


def test_cells_fill_waves_in_order_up_to_the_limit():
    cells = _cells(5)
    budgets = dict(zip([c.cell_id for c in cells], [3, 3, 4, 1, 6]))
    groups = waves(cells, budgets, limit=6)
    assert [[c.cell_id for c in g] for g in groups] == [[cells[0].cell_id, cells[1].cell_id], [cells[2].cell_id, cells[3].cell_id], [cells[4].cell_id]]


def test_a_cell_larger_than_the_limit_is_a_wave_of_its_own():
    cells = _cells(3)
    budgets = dict(zip([c.cell_id for c in cells], [2, 9, 2]))
    assert [len(g) for g in waves(cells, budgets, limit=4)] == [1, 1, 1]


def test_wave_names_keep_the_first_as_the_tune_phase():
    assert [wave_name(i) for i in range(3)] == ["tune", "tune-2", "tune-3"]


@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.integers(1, 100))
def test_every_cell_once_in_order_and_no_wave_over_the_limit_unless_alone(sizes, limit):
    cells = _cells(len(sizes))
    budgets = dict(zip([c.cell_id for c in cells], sizes))
    groups = waves(cells, budgets, limit)
    assert [c for g in groups for c in g] == cells
    for g in groups:
        total = sum(budgets[c.cell_id] for c in g)
        assert total <= limit or len(g) == 1
    # Greedy: a wave ends only because the next cell would not fit.
    for g, nxt in zip(groups, groups[1:]):
        assert sum(budgets[c.cell_id] for c in g) + budgets[nxt[0].cell_id] > limit
