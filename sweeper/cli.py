"""``sweeper`` command line: data preparation, planning and running sweeps.

Every user-fixable problem surfaces as one line on stderr and exit status 2; a run stopped by a
signal (Ctrl-C, SIGTERM, SIGHUP) says how to resume it and exits with 128 + the signal's number.
"""
from __future__ import annotations

import argparse
import os
import sys

from sweeper.errors import Interrupted, SweeperError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line too (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"sweeper: error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _version() -> str:
    """The installed distribution's version (``pyproject.toml``), or "unknown" outside an install."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sweeper")
    except PackageNotFoundError:
        return "unknown (not installed; pip install .)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sweeper", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sweeper {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from sweeper.data import cli as data_cli

    from sweeper.engine import cli as tune_cli

    data_cli.add_commands(commands)
    tune_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Interrupted as err:
        print(f"sweeper: interrupted: {err}", file=sys.stderr)
        return 128 + err.signum
    except SweeperError as err:
        print(f"sweeper: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweeper: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
