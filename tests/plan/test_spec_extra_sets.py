"""Spec keys of the extra test sets and train-time drop: data.external, final.test_missing, axis train_drop."""
from __future__ import annotations

import pytest
import yaml

from sweeper.plan.spec import SpecError, expand_cells, load_spec, trial_config

BASE = {"name": "x", "data": {"synthetic": {"n_stays": 100}}, "tasks": ["ihm"],
        "modality_subsets": {"explicit": [["discharge", "demographics"]]}, "methods": {"picme.supervised": {}}}


def _load(tmp_path, **changes):
    spec = {**BASE, **changes}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    return load_spec(str(tmp_path / "s.yaml"))[0]


def test_external_cohorts_and_protocols_are_read_with_paths_beside_the_spec(tmp_path):
    spec = _load(tmp_path, data={"synthetic": {"n_stays": 100}, "external": {"setb": "../b"}},
                 final={"seeds": 1, "test_missing": {"d50": {"drop": "discharge", "rate": 0.5}, "each30": {"drop": "each", "rate": 0.3, "seed": 2}}},
                 axes={"train_missing_rate": [0.0, 0.5], "train_drop": ["each", "discharge"]})
    assert spec.data.external == {"setb": str((tmp_path.parent / "b").resolve())}
    assert spec.final.test_missing["each30"].model_dump() == {"drop": "each", "rate": 0.3, "seed": 2}
    cells = expand_cells(spec)
    assert len(cells) == 4 and {trial_config(spec, c, {})["train_drop"] for c in cells} == {"each", "discharge"}


@pytest.mark.parametrize("changes, says", [
    ({"final": {"test_missing": {"x": {"drop": "notes", "rate": 0.5}}}}, "final.test_missing.x.drop: drop 'notes': give a modality"),
    ({"final": {"test_missing": {"x": {"drop": "each", "rate": 1.5}}}}, "final.test_missing.x.rate: Input should be less than or equal to 1"),
    ({"axes": {"train_drop": ["cxr", "ecg"]}}, "axes: drop 'ecg': give a modality"),
    ({"final": {"efficiency_reference": "medmix"}}, "final.efficiency_reference: 'medmix' is not one of the spec's methods (picme.supervised)"),
    ({"data": {"synthetic": {"n_stays": 100}, "external": {"a b": "x"}}}, "data.external.a b.[key]: String should match pattern"),
])
def test_a_bad_key_is_one_line_naming_it(tmp_path, changes, says):
    with pytest.raises(SpecError) as error:
        _load(tmp_path, **changes)
    assert says in str(error.value) and str(tmp_path / "s.yaml") in str(error.value) and "\n" not in str(error.value)
