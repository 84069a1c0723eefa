"""The house rules the code layout promises (docs/layout.md): imports follow the data flow, no
import cycles, no oversized modules."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_import_linter_contracts_are_kept():
    from importlinter.cli import lint_imports

    # The contracts live in pyproject.toml: layers in data-flow order, and acyclic siblings.
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_no_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for folder in ("sweeper", "trainables") for p in (ROOT / folder).rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
