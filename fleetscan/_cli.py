"""The ``fleetscan`` command: flags and a TOML file in, a validated ScanConfig out.

The CLI is a thin layer: it validates everything before importing the scan engine, so bad input
costs no AWS call and no engine import (botocore's region data is read only when region names
must be checked), and it imports the emulator only for ``fleetscan emulator`` (the scanner
itself never depends on it).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from ._config import (
    CHECKSUM_ALGORITHMS,
    CONFIG_KEYS,
    MIN_OBJECT_BYTES,
    SSE_MODES,
    build_config,
    load_config_file,
)
from ._exceptions import ConfigError, FleetscanError

#: Read when --external-id is not given: keeps the value out of the process list and shell history.
EXTERNAL_ID_ENV = "FLEETSCAN_EXTERNAL_ID"
#: Exit codes of the scan command (issue 3): 0 complete, 3 partial, 1 fatal, 2 usage.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Allocations between two runs of the cycle collector's youngest generation (Python: 700).
COLLECT_EVERY = 10_000

_SCAN_EPILOG = """\
A TOML file (--config) can set every option; a flag given on the command line replaces the
file's value. Alternatives replace each other: --org, --accounts or --accounts-file replace the
file's account sources; --role-name replaces its role_arn_template and vice versa;
--no-assume-role drops its accounts and roles. Examples are in the configs/ folder.

examples:
  fleetscan scan --org --role-name FleetscanReader --output ./out
  fleetscan scan --accounts 111122223333,444455556666 \\
      --role-arn-template 'arn:{partition}:iam::{account_id}:role/FleetscanReader' \\
      --regions us-east-1,eu-west-1 --output - > recovery_points.ndjson
  fleetscan scan --config configs/organization.toml --regions all --dry-run

exit codes: 0 complete, 3 partial (data written, the manifest lists what failed), 1 fatal,
2 bad input (nothing was called), 130 interrupted.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages kept free of values that may be secrets."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_redact(message)}\n")


def _redact(message: str) -> str:
    """Hide the values after unrecognized options: a mistyped ``--external-id`` is still secret."""
    prefix = "unrecognized arguments: "
    if not message.startswith(prefix):
        return message
    shown: list[str] = []
    after_option = False
    for token in message[len(prefix) :].split(" "):
        if token.startswith("-"):
            name, equals, _ = token.partition("=")
            shown.append(f"{name}=<hidden>" if equals else token)
            after_option = not equals
        elif after_option:
            shown.append("<hidden>")
            after_option = False
        else:
            shown.append(token)
    return prefix + " ".join(shown)


def _comma_list(text: str) -> list[str]:
    """``a, b,c,`` -> [a, b, c]: spaces and a trailing comma are harmless in a pasted list."""
    return [part.strip() for part in text.split(",") if part.strip()]


_DURATION = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[smh]?)", re.IGNORECASE)
_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>(?:[kmg]i?b?)?)", re.IGNORECASE)


def _duration(text: str) -> int:
    """Seconds, or with a unit: ``3600``, ``3600s``, ``60m``, ``1h``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 60m, 1h)")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600}[match["unit"].lower()]
    return int(match["number"]) * factor


def _size(text: str) -> int:
    """Bytes, or with a binary unit: ``134217728``, ``128MiB``, ``128M``, ``1GiB``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 134217728, 128MiB, 1GiB)")
    unit = match["unit"].lower()[:1]
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
    return int(match["number"]) * factor


_FILE_MODE = re.compile(r"(?:0o?)?(?P<digits>[0-7]{1,3})", re.IGNORECASE)


def _file_mode(text: str) -> int:
    """Octal permission bits as ``chmod`` takes them: ``0640``, ``640`` or ``0o640``."""
    match = _FILE_MODE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an octal permission mode from 000 to 777 (e.g. 0600, 0640)"
        )
    return int(match["digits"], 8)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_scan_parser(subparsers: Any) -> None:
    scan: argparse.ArgumentParser = subparsers.add_parser(
        "scan",
        help="scan every cached volume's recovery points across accounts and regions",
        description="Scan the recovery points of every Storage Gateway cached volume across "
        "accounts and regions, into NDJSON datasets and a manifest.",
        epilog=_SCAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    _add_scan_options(scan)


def _add_scan_options(scan: argparse.ArgumentParser, *, for_audit: bool = False) -> None:
    """The scan's options; ``fleetscan audit`` takes the same ones to scan before it audits."""
    scan.add_argument("--config", metavar="PATH", type=Path, help="TOML file with any option")

    accounts = scan.add_argument_group("accounts")
    accounts.add_argument(
        "--org",
        action=argparse.BooleanOptionalAction,
        help="every account of the organization (ListAccounts with the ambient credentials)",
    )
    accounts.add_argument(
        "--ou",
        dest="ous",
        metavar="ID",
        action="append",
        help="with --org: only accounts under this OU, recursively (repeatable)",
    )
    accounts.add_argument(
        "--accounts",
        metavar="IDS",
        type=_comma_list,
        action="extend",
        help="comma-separated 12-digit account ids",
    )
    accounts.add_argument(
        "--accounts-file",
        metavar="PATH",
        type=Path,
        help="one account id a line (# comments), or CSV with an account_id column",
    )
    accounts.add_argument(
        "--exclude-accounts",
        metavar="IDS",
        type=_comma_list,
        action="extend",
        help="comma-separated account ids to skip",
    )
    accounts.add_argument(
        "--include-inactive",
        action=argparse.BooleanOptionalAction,
        help="also scan SUSPENDED / PENDING_CLOSURE accounts of the organization",
    )

    roles = scan.add_argument_group("roles and credentials")
    roles.add_argument("--role-name", metavar="NAME", help="role to assume in each account")
    roles.add_argument(
        "--role-arn-template",
        metavar="TEMPLATE",
        help="instead of --role-name: 'arn:{partition}:iam::{account_id}:role/NAME'",
    )
    roles.add_argument(
        "--external-id",
        metavar="VALUE",
        help=f"external id for AssumeRole (or set {EXTERNAL_ID_ENV}, which keeps it out of ps)",
    )
    roles.add_argument("--role-session-name", metavar="NAME", help="default: fleetscan")
    roles.add_argument(
        "--role-duration",
        dest="role_duration_seconds",
        metavar="SECONDS",
        type=_duration,
        help="assumed session length, 900-43200 s or e.g. 1h (default 3600)",
    )
    roles.add_argument(
        "--hub-role-arn",
        metavar="ARN",
        help="assume this role first and chain into every account (sessions capped at 1 hour)",
    )
    roles.add_argument(
        "--assume-role",
        action=argparse.BooleanOptionalAction,
        help="--no-assume-role scans only the ambient account with the ambient credentials",
    )
    roles.add_argument("--profile", metavar="NAME", help="AWS profile for the ambient credentials")
    roles.add_argument("--partition", metavar="NAME", help="aws (default), aws-cn or aws-us-gov")

    where = scan.add_argument_group("regions")
    where.add_argument(
        "--regions",
        metavar="LIST",
        help="comma-separated names, 'all' (every Storage Gateway region of the partition) or "
        "'enabled' (default: those enabled in each account)",
    )

    tuning = scan.add_argument_group("pace")
    tuning.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="calls in flight (default 128; more for far regions, ~0.35 MB each)",
    )
    tuning.add_argument(
        "--rate", type=float, metavar="N", help="requests/s per account and region (default 20)"
    )
    tuning.add_argument("--burst", type=int, metavar="N", help="token bucket burst (default 20)")
    tuning.add_argument(
        "--max-attempts", type=int, metavar="N", help="attempts per call, 1-20 (default 8)"
    )
    tuning.add_argument("--connect-timeout", type=float, metavar="SECONDS", help="default 10")
    tuning.add_argument("--read-timeout", type=float, metavar="SECONDS", help="default 30")

    output = scan.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="DEST",
        help="a directory, s3://BUCKET/PREFIX/, or - for recovery points on stdout",
    )
    output.add_argument("--compress", choices=("none", "gzip"), help="default: none")
    output.add_argument(
        "--max-object-bytes",
        type=_size,
        metavar="SIZE",
        help=f"roll files over at this size, at least {MIN_OBJECT_BYTES >> 20}MiB (default 128MiB)",
    )
    output.add_argument("--run-id", metavar="ID", help="default: a fresh, sortable id")
    output.add_argument(
        "--file-mode",
        type=_file_mode,
        metavar="MODE",
        help="permissions of every output file and its folders, in octal (default 0600)",
    )
    s3 = scan.add_argument_group("S3 output (with --output s3://BUCKET/PREFIX/)")
    s3.add_argument(
        "--sse",
        choices=SSE_MODES,
        help="server-side encryption of every object (default: the bucket's own)",
    )
    s3.add_argument(
        "--sse-kms-key-id",
        metavar="KEY",
        help="with --sse aws:kms: key id, key ARN or alias (default: the aws/s3 key)",
    )
    s3.add_argument(
        "--bucket-key",
        action=argparse.BooleanOptionalAction,
        help="with --sse aws:kms: use an S3 Bucket Key (fewer KMS requests)",
    )
    s3.add_argument(
        "--expected-bucket-owner",
        metavar="ACCOUNT",
        help="12-digit account that must own the bucket; S3 refuses every request otherwise",
    )
    s3.add_argument(
        "--checksum-algorithm",
        choices=CHECKSUM_ALGORITHMS,
        help="checksum S3 verifies on every part and object (default: CRC32)",
    )
    output.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run ('latest' or its id) in the same --output (directory "
        "or s3:// prefix): finished units are skipped, nothing is written twice",
    )
    output.add_argument(
        "--checkpoint-interval",
        type=float,
        metavar="SECONDS",
        help="how often finished units are made durable and checkpointed (default 30)",
    )
    output.add_argument(
        "--stop-grace-seconds",
        type=float,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time calls in flight get to finish (default 10)",
    )
    if not for_audit:
        output.add_argument(
            "--dry-run",
            action=argparse.BooleanOptionalAction,
            help="print the plan (accounts x regions, expected calls); call no Storage Gateway API",
        )
    output.add_argument(
        "--quiet", action="store_true", default=False, help="no progress display or summary"
    )
    output.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="default: text"
    )


def _add_demo_parser(subparsers: Any) -> None:
    demo: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="scan an emulated organization, started for the run (no AWS account needed)",
        description="Start the emulated AWS fleet on loopback and scan it, with progress and "
        "a summary. Needs the 'emulator' extra.",
        allow_abbrev=False,
    )
    demo.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=Path("fleetscan-demo"),
        help="where the datasets go (default: ./fleetscan-demo)",
    )
    demo.add_argument(
        "--accounts",
        metavar="N",
        type=_positive_int,
        default=24,
        help="member accounts in the emulated organization (default 24)",
    )
    demo.add_argument(
        "--seed", metavar="N", type=int, default=2026, help="fleet seed (default 2026)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display or summary")


def _max_age(text: str) -> str:
    from ._audit._policy import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_AUDIT_EPILOG = """\
Audit an existing run (a local directory or s3://bucket/prefix/; the latest complete run unless
--run names one, even a partial one), or give scan flags and --output to scan first and audit the
fresh run. A volume is stale when its recovery point is older than its objective, measured at the
time it was scanned; a gateway or an account/region that could not be read is unknown.

examples:
  fleetscan audit --input ./inventory --max-age 24h --report-dir ./audit
  fleetscan audit --input s3://bucket/fleetscan/ --policy audit-policy.toml --fail-on stale
  fleetscan audit --org --role-name FleetscanReader --output ./inventory --max-age 1d

exit codes: 0 every volume compliant, 4 a volume is stale, 5 none stale but some unknown
(--fail-on stale: only stale fails; none: always 0), 2 bad input; when it scans first, a scan
that fails outright exits with the scan's code (1 fatal, 130 interrupted).
"""


def _add_audit_parser(subparsers: Any) -> None:
    audit: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="which cached volumes are past their recovery-point objective",
        description="Judge every cached volume of a run against its recovery-point objective: "
        "compliant, stale or unknown; write findings, Markdown, HTML and JUnit reports.",
        epilog=_AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    what = audit.add_argument_group("audit")
    what.add_argument(
        "--input",
        metavar="DEST",
        default=None,
        help="the scan's output to audit: a directory or s3://bucket/prefix/",
    )
    what.add_argument(
        "--run",
        metavar="RUN_ID",
        default=None,
        help="audit this run, whatever its status (default: the latest complete run)",
    )
    objectives = what.add_mutually_exclusive_group(required=True)
    objectives.add_argument(
        "--max-age",
        metavar="DURATION",
        type=_max_age,
        default=None,
        help="one objective for every volume: 90s, 30m, 24h, 7d",
    )
    objectives.add_argument(
        "--policy",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML policy: a default objective and overrides by OU, account, region and "
        "gateway name (configs/audit-policy.example.toml)",
    )
    what.add_argument(
        "--report-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="write findings.ndjson, report.md, report.html and junit.xml here",
    )
    what.add_argument(
        "--fail-on",
        choices=("stale", "unknown", "none"),
        default="unknown",
        help="unknown (default): exit 4 on stale, 5 on unknown; stale: only stale fails; "
        "none: exit 0 whatever was found",
    )
    _add_scan_options(audit, for_audit=True)


def _add_emulator_placeholder(subparsers: Any) -> None:
    """List ``emulator`` in ``--help`` without importing it; main() routes it before parsing."""
    subparsers.add_parser(
        "emulator",
        help="serve the emulated AWS fleet on loopback (needs the 'emulator' extra)",
        add_help=False,
    )


def _add_schema_parser(subparsers: Any) -> None:
    schema: argparse.ArgumentParser = subparsers.add_parser(
        "schema",
        help="print the datasets' JSON Schemas, Athena DDL or Glue table definitions",
        description="Print the record schema of the datasets as JSON Schema, Athena CREATE "
        "EXTERNAL TABLE statements (Hive JSON SerDe, partition projection on dt) or Glue "
        "TableInput JSON for `aws glue create-table --table-input`.",
        allow_abbrev=False,
    )
    schema.add_argument("--format", required=True, choices=("json-schema", "athena", "glue"))
    schema.add_argument(
        "--dataset",
        choices=("recovery_points", "gateways", "errors"),
        help="one dataset (default: all three)",
    )
    schema.add_argument(
        "--location",
        metavar="S3_URL",
        help="the scan's --output, s3://BUCKET/PREFIX/ (athena and glue; default: a placeholder)",
    )


def _schema(args: argparse.Namespace) -> int:
    export = importlib.import_module("fleetscan._schema_export")
    sys.stdout.write(export.render(args.format, args.dataset, args.location))
    return 0


def build_parser(
    add_emulator_parser: Callable[[Any], None] = _add_emulator_placeholder,
) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fleetscan",
        description="Recovery points of every AWS Storage Gateway cached volume across an "
        "organization, as NDJSON.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fleetscan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_scan_parser(subparsers)
    _add_demo_parser(subparsers)
    _add_audit_parser(subparsers)
    _add_schema_parser(subparsers)
    add_emulator_parser(subparsers)
    return parser


def scan_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ScanConfig values the user gave as flags (argparse.SUPPRESS leaves out the others)."""
    overrides = {key: value for key, value in vars(args).items() if key in CONFIG_KEYS}
    for key in ("ous", "accounts", "exclude_accounts"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    if "regions" in overrides:
        text = overrides["regions"].strip()
        overrides["regions"] = text if text in ("all", "enabled") else tuple(_comma_list(text))
    if (
        "external_id" not in overrides
        and overrides.get("assume_role") is not False
        and os.environ.get(EXTERNAL_ID_ENV)
    ):
        overrides["external_id"] = os.environ[EXTERNAL_ID_ENV]
    return overrides


def _collect_less() -> None:
    """Run Python's cycle collector less often while the command runs (main() restores it).

    A scan allocates millions of short-lived objects (answers, records, tasks) and next to no
    cyclic garbage; at the default first threshold (700 allocations) the collector ran ~200 times
    in a 200-account scan and took 4-8 % of its CPU (measured; peak memory unchanged). mypy does
    the same, for the same reason. The library leaves its host's collector alone.
    """
    gc.set_threshold(COLLECT_EVERY, *gc.get_threshold()[1:])


def _scan(args: argparse.Namespace) -> int:
    file_values = load_config_file(args.config) if "config" in args else {}
    config = build_config(file_values, scan_overrides(args))
    # Only now, with the input known good, is the engine looked up and asked for anything.
    engine = importlib.import_module("fleetscan._run")
    code: int = engine.run_scan_command(config, quiet=args.quiet, log_format=args.log_format)
    return code


def _audit(args: argparse.Namespace) -> int:
    """``fleetscan audit``: check every input first (exit 2 naming it), then scan and/or audit."""
    audit = importlib.import_module("fleetscan._audit")
    policy = audit.load_policy(args.policy) if args.policy else audit.Policy.single(args.max_age)
    scan_flags = sorted(key for key in vars(args) if key in CONFIG_KEYS or key == "config")
    scan = None
    if args.input is not None:
        if scan_flags:
            shown = ", ".join("--" + key.replace("_", "-") for key in scan_flags)
            raise ConfigError(
                "--input", f"audits a run already written; drop the scan flags ({shown})"
            )
    else:
        if not scan_flags:
            raise ConfigError(
                "--input",
                "give --input DEST to audit a run, or scan flags (e.g. --org --role-name NAME) "
                "and --output DEST to scan first",
            )
        if args.run is not None:
            raise ConfigError("--run", "names a run under --input; a fresh scan is audited as is")
        file_values = load_config_file(args.config) if "config" in args else {}
        scan = build_config(file_values, scan_overrides(args))
        if getattr(scan, "resume", None):
            raise ConfigError(
                "--resume",
                "finish the run with fleetscan scan --resume, then audit it with --input",
            )
    request = audit.AuditRequest(
        policy=policy,
        source=args.input,
        run_id=args.run,
        scan=scan,
        report_dir=args.report_dir,
        fail_on=args.fail_on,
        quiet=args.quiet,
        log_format=args.log_format,
    )
    code: int = audit.run_audit_command(request)
    return code


def _demo(args: argparse.Namespace) -> int:
    engine = importlib.import_module("fleetscan._run")
    code: int = engine.run_demo_command(args)
    return code


def _emulator(argv: list[str]) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fleetscan`` command; return its exit code (argparse's own exits included)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    thresholds = gc.get_threshold()
    try:
        if arguments[:1] == ["emulator"]:
            return _emulator(arguments)
        args = build_parser().parse_args(arguments)
        if args.command != "schema":
            _collect_less()
        if args.command == "scan":
            return _scan(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "schema":
            return _schema(args)
        return _demo(args)
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
    except BrokenPipeError:
        # The reader of --output - went away (e.g. `| head`): stop quietly, as Unix tools do.
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        gc.set_threshold(*thresholds)  # a caller's process gets its collector back
