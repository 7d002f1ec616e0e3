"""The ``fleetscan`` command: one module per subcommand, above the library.

Each command module (``scan``, ``finalize``, ``audit``, ``diff``, ``demo``, ``schema``,
``emulator``) declares its flags (``add_parser``) and runs (``run``): it parses, calls the
library, and maps the outcome to an exit code and terminal output. The library never imports
this package. A command module imports nothing heavy until it runs, so ``fleetscan --help`` and
refused input need neither the engine nor aiobotocore; the emulator is imported only for
``fleetscan emulator`` and ``fleetscan demo``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .. import __version__
from .._exceptions import ConfigError, FleetscanError
from ._args import EXIT_USAGE, Parser

#: The subcommands, in the order ``--help`` lists them; each is a module of this package.
COMMANDS = ("scan", "finalize", "audit", "diff", "demo", "schema", "emulator")
#: Commands that run a scan (or may): they get the cycle collector setting below.
SCANNING = frozenset({"scan", "audit", "demo"})
EXIT_INTERRUPTED = 130
#: Allocations between two runs of the cycle collector's youngest generation (Python: 700).
COLLECT_EVERY = 10_000
#: Blocks at least this large get a memory mapping of their own, given back when freed
#: (glibc's own default, before its dynamic threshold moves it).
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(
    add_emulator_parser: Callable[[Any], None] | None = None,
) -> argparse.ArgumentParser:
    """The whole command line; ``add_emulator_parser`` replaces the emulator's placeholder with
    its real flags (the emulator package supplies them once ``fleetscan emulator`` is chosen)."""
    parser = Parser(
        prog="fleetscan",
        description="Recovery points of every AWS Storage Gateway cached volume across an "
        "organization, as NDJSON.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fleetscan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if name == "emulator" and add_emulator_parser is not None:
            add_emulator_parser(subparsers)
        else:
            _command(name).add_parser(subparsers)
    return parser


def _collect_less() -> None:
    """Run Python's cycle collector less often while the command runs (main() restores it).

    A scan allocates millions of short-lived objects (answers, records, tasks) and next to no
    cyclic garbage; at the default first threshold (700 allocations) the collector ran ~200 times
    in a 200-account scan and took 4-8 % of its CPU (measured; peak memory unchanged). mypy does
    the same, for the same reason. The library leaves its host's collector alone.
    """
    gc.set_threshold(COLLECT_EVERY, *gc.get_threshold()[1:])


def _map_large_blocks() -> None:
    """Keep glibc's malloc from placing large, short-lived blocks in its heap (not undone).

    The event loop gives every TLS connection a 256 KiB read buffer (uvloop and asyncio alike).
    glibc maps such a block, but once one is freed it raises its mmap threshold above that size
    (its dynamic threshold), so later buffers land in the heap, and connections opened and
    closed through a long scan leave the heap fragmented: at 10,000 accounts it held 14-16 MB
    free that it could not give back, and peak RSS grew with the length of the run (measured
    with mallinfo2, 2026-12-02: 110 MB on uvloop, 101 MB with the threshold fixed; on asyncio
    134 and 127 MB). Only glibc has mallopt; elsewhere this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is behind ``exc`` (its cause, or its cause's...)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fleetscan`` command; return its exit code (argparse's own exits included)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    thresholds = gc.get_threshold()
    try:
        if arguments[:1] == ["emulator"]:
            code: int = _command("emulator").run_argv(arguments, build_parser)
            return code
        args = build_parser().parse_args(arguments)
        args.command_line = arguments  # what --workers starts again, once per shard
        if args.command in SCANNING:
            _collect_less()
            _map_large_blocks()
        code = _command(args.command).run(args)
        return code
    except SystemExit as exit_:
        # argparse's --help, --version and usage errors: give main()'s callers the code.
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except ConfigError as exc:
        problem = " ".join(exc.problem.splitlines())
        print(f"fleetscan: error: {exc.field}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except FleetscanError as exc:
        print(f"fleetscan: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except RuntimeError as exc:
        # Python 3.11 wraps an exception raised inside ``__set_name__`` in a RuntimeError: a
        # Ctrl-C that lands while a module defining a dataclass is imported arrives so.
        if _caused_by_interrupt(exc):
            return EXIT_INTERRUPTED
        raise
    except BrokenPipeError:
        # The reader of --output - went away (e.g. `| head`): stop quietly, as Unix tools do.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        gc.set_threshold(*thresholds)  # a caller's process gets its collector back
