"""The README's two set-up commands stay what CI and users run."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("sweeper run all-combos")
    assert commands[1].endswith("python -m pytest")
    for command in commands:  # never an unpinned torch on a CPU machine
        assert "pip install torch==2.13.0" in command and "-c constraints-cpu.txt" in command


def test_ci_runs_the_readme_test_command():
    ci = ROOT.joinpath(".ci", "run").read_text().splitlines()
    assert _readme_commands()[1] in ci
