"""What an install needs: every imported package declared (deptry), and ``sweeper --version``.
The specs shipped as package data: tests/plan/test_spec_lookup.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from sweeper.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_deptry_finds_no_undeclared_or_unused_dependency():
    pytest.importorskip("deptry")
    result = subprocess.run([sys.executable, "-m", "deptry", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_flag_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sweeper {version('sweeper')}"


@pytest.mark.skipif(shutil.which("sweeper") is None, reason="no sweeper console script on PATH")
def test_console_script_version():
    out = subprocess.run(["sweeper", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("sweeper ")
