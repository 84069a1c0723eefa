"""Spec names are found in the package (the shipped specs are package data, whatever the install
and the current folder) and in the user's own folders on ``SWEEPER_SPEC_PATH``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sweeper
from sweeper.plan.spec import SPEC_DIR, SPEC_PATH_ENV, SpecError, load_spec, spec_path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ["all-combos", "medfuse-p12", "medmix", "mga", "picme-smoke", "slm", "smoke"]


def test_shipped_specs_live_inside_the_package():
    package = Path(sweeper.__file__).resolve().parent
    assert SPEC_DIR == package / "specs"
    assert sorted(p.stem for p in SPEC_DIR.glob("*.yaml")) == SHIPPED
    assert not (ROOT / "search_spaces").exists()


def test_setuptools_ships_the_specs_as_package_data():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sweeper"]
    assert "specs/*.yaml" in config and "py.typed" in config
    assert (ROOT / "sweeper" / "py.typed").is_file()


def test_a_shipped_spec_is_found_by_name_from_another_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != SPEC_PATH_ENV}
    code = "from sweeper.plan.spec import spec_path, load_spec; print(spec_path('all-combos')); print(load_spec('medfuse-p12')[0].data.path)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert Path(out[0]) == SPEC_DIR / "all-combos.yaml"
    # A shipped spec's relative data path is the user's folder, not the installed package's.
    assert Path(out[1]) == tmp_path.resolve() / "data" / "physionet2012"


def test_user_spec_folders_come_first_and_are_listed_when_a_name_is_unknown(tmp_path, monkeypatch):
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(), other.mkdir()
    (mine / "smoke.yaml").write_text((SPEC_DIR / "smoke.yaml").read_text())
    (other / "mysweep.yaml").write_text((SPEC_DIR / "smoke.yaml").read_text().replace("name: smoke", "name: mysweep"))
    monkeypatch.setenv(SPEC_PATH_ENV, os.pathsep.join([str(mine), str(other)]))
    assert spec_path("smoke") == mine / "smoke.yaml"  # the user's own shadows the shipped one
    assert spec_path("mysweep") == other / "mysweep.yaml"
    assert spec_path("all-combos") == SPEC_DIR / "all-combos.yaml"
    assert load_spec("mysweep")[0].name == "mysweep"
    with pytest.raises(SpecError) as err:
        spec_path("nosuch")
    message = str(err.value)
    assert "\n" not in message and str(other / "nosuch.yaml") in message and str(SPEC_DIR / "nosuch.yaml") in message
    assert SPEC_PATH_ENV in message and "mysweep" in message
