"""``fleetscan diff``: what changed between two runs, as NDJSON and a terminal table.

Exit codes: 0 (whatever changed), 1 when a change named by ``--fail-on`` exists, 2 bad input (a
flag, an unknown run, a damaged or tampered run, a run S3 would not give). A run that cannot be
read is never 1: a scheduled ``--fail-on`` job must not take a refused bucket for a change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._exceptions import ConfigError, FleetscanError
from ._args import add_expected_bucket_owner, comma_list, expected_bucket_owner
from ._loop import run_async

if TYPE_CHECKING:
    from .._audit._diff import Change, RunDiff

EXIT_CHANGED = 1
#: Changes listed in the terminal table; the NDJSON has them all.
TERMINAL_ROWS = 15
DEFAULT_MAX_AGE = "24h"

_EPILOG = """\
Compares two runs under one destination (a directory or s3://bucket/prefix/): by default the two
newest finished (complete or partial) runs. One change a line, with stable keys: stuck (the
recovery point did not advance although the gateway answered both times), new-stale, recovered,
gone and appeared (volumes), gateway-gone, gateway-appeared and gateway-unreachable. Staleness
is judged as fleetscan audit judges it.

examples:
  fleetscan diff --input ./inventory
  fleetscan diff --input s3://bucket/fleetscan/ --policy audit-policy.toml --fail-on stuck,new-stale
  fleetscan diff --input s3://bucket/fleetscan/ --expected-bucket-owner 111122223333
  fleetscan diff --input ./inventory --from 20261201T020000Z-1a2b3c --output changes.ndjson

exit codes: 0 whatever changed, 1 a change named by --fail-on exists, 2 bad input (a flag, an
unknown run, a damaged run, a run S3 refused or failed to give).
"""


def _duration(text: str) -> str:
    from .._audit import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "diff",
        help="what changed between two runs: stuck recovery points, newly stale, gone",
        description="Compare two runs: volumes whose recovery point did not advance, newly "
        "stale, recovered, appeared or gone; gateways appeared, gone or newly unreachable.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--input", metavar="DEST", required=True, help="a directory or s3://bucket/prefix/"
    )
    parser.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN_ID",
        help="the earlier run; without it, the newest finished run before --to",
    )
    parser.add_argument(
        "--to",
        dest="to_run",
        metavar="RUN_ID",
        help="the later run; without it, the newest finished run",
    )
    objectives = parser.add_mutually_exclusive_group()
    objectives.add_argument(
        "--max-age",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_MAX_AGE,
        help=f"one objective for every volume, for new-stale and recovered (default "
        f"{DEFAULT_MAX_AGE})",
    )
    objectives.add_argument(
        "--policy", metavar="FILE", type=Path, help="a TOML audit policy instead of --max-age"
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        help="write the NDJSON here, complete or not at all, instead of to stdout",
    )
    parser.add_argument(
        "--fail-on",
        metavar="KINDS",
        type=comma_list,
        default=[],
        help="exit 1 when a change of these kinds exists, comma-separated: stuck,new-stale,"
        "recovered,gateway-unreachable,gateway-gone,gone,gateway-appeared,appeared",
    )
    add_expected_bucket_owner(parser)
    parser.add_argument("--quiet", action="store_true", help="no table on stderr")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr as a table, or one JSON object (default: text)",
    )


def run(args: argparse.Namespace) -> int:
    """Check every input first (exit 2 naming it), then compare and print."""

    from .._audit import Policy, check_source, load_policy
    from .._audit._diff import CHANGE_KINDS, diff_runs

    unknown = [kind for kind in args.fail_on if kind not in CHANGE_KINDS]
    if unknown:
        expected = ", ".join(CHANGE_KINDS)
        raise ConfigError("--fail-on", f"unknown change {unknown[0]!r}; expected {expected}")
    policy = load_policy(args.policy) if args.policy else Policy.single(args.max_age)
    source = check_source(args.input)
    owner = expected_bucket_owner(args, source)
    with _ndjson(args.output) as out:
        try:
            result = run_async(
                lambda: diff_runs(
                    source,
                    policy,
                    from_run=args.from_run,
                    to_run=args.to_run,
                    on_change=lambda change: _write(out, change),
                    expected_bucket_owner=owner,
                ),
            )
        except ConfigError:
            raise
        except (FleetscanError, ValueError, OSError) as exc:
            # Unreadable (S3 refused, a damaged file): bad input, exit 2, never 1 (a change).
            raise ConfigError("--input", f"cannot compare runs under {source}: {exc}") from None
    failed = [kind for kind in args.fail_on if result.counts[kind]]
    code = EXIT_CHANGED if failed else 0
    if not args.quiet:
        print_summary(result, code, args.log_format)
    return code


def _write(out: IO[bytes], change: Change) -> None:
    import orjson

    out.write(orjson.dumps(change.as_json()) + b"\n")


@contextmanager
def _ndjson(path: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or ``path`` written under a temporary name and renamed when complete."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    from .._localfs import atomic_file

    with atomic_file(path, field="--output") as handle:
        yield handle


def print_summary(result: RunDiff, code: int, log_format: str = "text") -> None:
    """Counts by kind and the first changes, on stderr."""
    import orjson
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .._audit._diff import CHANGE_KINDS

    if log_format == "json":
        event = {
            "event": "diff_finished",
            "from_run_id": result.from_run_id,
            "to_run_id": result.to_run_id,
            "volumes_before": result.volumes_before,
            "volumes_after": result.volumes_after,
            "changes": {kind: result.counts[kind] for kind in CHANGE_KINDS},
            "exit_code": code,
        }
        sys.stderr.write(orjson.dumps(event).decode() + "\n")
        return
    console = Console(stderr=True, highlight=False)
    table = Table(
        title=escape(f"fleetscan diff: run {result.from_run_id} -> {result.to_run_id}"),
        caption=escape(
            f"{result.volumes_before:,} -> {result.volumes_after:,} volumes; objectives: "
            f"{result.policy.source}"
        ),
        title_justify="left",
        caption_justify="left",
    )
    # The organization only when the changes span several: with one (or none) it is noise.
    several = len({c.organization_id for c in result.changes} - {None}) > 1
    columns = ("change", "organization") if several else ("change",)
    for column in (*columns, "account", "region", "volume or gateway"):
        table.add_column(column, no_wrap=True)
    table.add_column("recovery point", overflow="fold")
    order = {kind: index for index, kind in enumerate(CHANGE_KINDS)}
    shown = sorted(result.changes, key=lambda c: order[c.change])[:TERMINAL_ROWS]
    for change in shown:
        kind, *rest = _cells(change)
        cells = (kind, change.organization_id or "-", *rest) if several else (kind, *rest)
        table.add_row(*(escape(cell) for cell in cells))
    if result.total > len(shown):
        more = (f"+{result.total - len(shown):,} more", *([""] * len(columns)), "", "in the NDJSON")
        table.add_row(*more, "")
    console.print(table)
    counts = ", ".join(f"{result.counts[kind]:,} {kind}" for kind in CHANGE_KINDS)
    suffix = f" (exit code {code})" if code else ""
    console.print(f"changes: {counts}{suffix}", markup=False)


def _cells(change: Change) -> tuple[str, str, str, str, str]:
    what = change.volume_arn or change.gateway_arn or "-"
    what = what.rsplit("/", 1)[-1] if change.volume_arn else (change.gateway_name or what)
    before, after = (
        _short(change.recovery_point_time_before),
        _short(change.recovery_point_time_after),
    )
    if change.change == "stuck":
        point = f"{after}, unchanged"
    elif before or after:
        point = f"{before or '-'} -> {after or '-'}"
    else:
        point = change.error_code or "-"
    return change.change, change.account_id or "-", change.region or "-", what, point


def _short(time: str | None) -> str | None:
    """A recovery point time to the second, for the table (the NDJSON has it to the ms)."""
    return None if time is None else time[:19].replace("T", " ")
