"""``fleetscan emulator``: the emulated AWS fleet on loopback (the emulator package's own CLI).

Its flags are declared by :mod:`fleetscan.emulator`, which needs the ``emulator`` extra: the main
parser lists the command without importing it, and :func:`run_argv` hands it the whole command
line once it is chosen.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from ._args import EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    """List ``emulator`` in ``--help`` without importing it; main() routes it before parsing."""
    subparsers.add_parser(
        "emulator",
        help="serve the emulated AWS fleet on loopback (needs the 'emulator' extra)",
        add_help=False,
    )


def run_argv(argv: list[str], build_parser: Callable[..., argparse.ArgumentParser]) -> int:
    """Run ``fleetscan emulator ...``: ``build_parser`` is the main parser's builder, given the
    emulator's real flags."""
    try:
        emulator_cli = importlib.import_module("fleetscan.emulator._cli")
    except ImportError as exc:
        if (exc.name or "").startswith("fleetscan"):
            print(
                f"fleetscan: error: the emulator is missing from this install: {exc}",
                file=sys.stderr,
            )
            return 1
        print(
            f"fleetscan: error: the emulator needs the 'emulator' extra ({exc.name or exc} is "
            "missing): pip install 'fleetscan[emulator]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args = build_parser(emulator_cli.add_emulator_parser).parse_args(argv)
    code: int = emulator_cli.run_emulator_command(args)
    return code
