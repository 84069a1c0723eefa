"""Property tests (Hypothesis) of the spec loader: arbitrary bytes, mutated shipped specs and specs
with one value replaced either load (and expand into cells) or raise one ``SweeperError`` whose
message is one line naming the spec file — never another exception. No Ray."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import edit_one, mutate_bytes

from sweeper.errors import SweeperError
from sweeper.plan.spec import SPEC_DIR, expand_cells, load_spec

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SMOKE = (SPEC_DIR / "smoke.yaml").read_bytes()
TOKENS = [b":", b"\n", b"- ", b"{", b"}", b"[", b"]", b"&a", b"*a", b"!!python/object:os.system", b"~", b"null", b"0", b"-1",
          b"1e999", b".nan", b"'", b'"', b"\t", b"\xff", b"\x00", b"picme.nosuch", b"ekg", b"los", b"<<: *a"]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def folder():
    path = Path(tempfile.mkdtemp(prefix="sweeper-spec-properties-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def check_spec(folder: Path, data: bytes, profile: str | None = None) -> None:
    path = folder / "spec.yaml"
    path.write_bytes(data)
    try:
        spec, where = load_spec(str(path), profile)
    except SweeperError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(str(path)), repr(message)
        return
    assert where == path
    for cell in expand_cells(spec):
        assert cell.modalities and cell.task in spec.tasks


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    return mutate_bytes(draw, valid, TOKENS)


@st.composite
def edited(draw, raw: dict) -> dict:
    """The parsed spec with one value (at any depth) replaced by an arbitrary one, or one key removed."""
    return edit_one(draw, yaml.safe_load(yaml.safe_dump(raw)), YAML_VALUES)


def test_the_shipped_smoke_spec_loads(folder):
    check_spec(folder, SMOKE)
    spec, _ = load_spec(str(folder / "spec.yaml"), "train")
    assert spec.resources.trial_runtime == "train"


@SETTINGS
@given(st.binary(max_size=300))
def test_spec_loader_on_arbitrary_bytes(folder, data):
    check_spec(folder, data)


@SETTINGS
@given(mutated(SMOKE), st.sampled_from([None, "train", "nosuch"]))
def test_spec_loader_on_mutated_specs(folder, data, profile):
    check_spec(folder, data, profile)


@SETTINGS
@given(edited(yaml.safe_load(SMOKE)), st.sampled_from([None, "inline"]))
def test_spec_loader_on_specs_with_one_value_replaced(folder, raw, profile):
    check_spec(folder, yaml.safe_dump(raw, allow_unicode=False).encode(), profile)


def test_a_key_with_a_newline_is_written_escaped_on_one_line(folder):
    """Found by Hypothesis in CI: an unknown key ``"budgets.\\n"`` made the message two lines."""
    raw = yaml.safe_load(SMOKE)
    raw["budgets"] = {"\n": 1}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweeperError, match=r"budgets\.\\n: Extra inputs are not permitted$"):
        load_spec(str(path))
