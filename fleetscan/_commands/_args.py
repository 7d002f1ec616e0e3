"""What the commands share: the parser class, value types, and the scan's options.

``fleetscan scan`` and ``fleetscan audit`` (which can scan first) take the same scan options, so
they are declared once here; :func:`scan_config` turns parsed flags and ``--config`` into a
validated :class:`~fleetscan.ScanConfig` without importing the engine.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._config import (
    CHECKSUM_ALGORITHMS,
    CONFIG_KEYS,
    MIN_OBJECT_BYTES,
    SSE_MODES,
    ScanConfig,
    check_bucket_owner,
    given_values,
    load_config_file,
)

#: Read when --external-id is not given: keeps the value out of the process list and shell history.
EXTERNAL_ID_ENV = "FLEETSCAN_EXTERNAL_ID"
EXIT_USAGE = 2


#: A value that argparse would take for an option: ``-3h``, ``-1.5d`` (a plain ``-3`` it reads
#: as a negative number already). No fleetscan option starts with a digit.
_NEGATIVE_VALUE = re.compile(r"-[0-9][0-9.]*[A-Za-z]*")


class Parser(argparse.ArgumentParser):
    """argparse, with short errors kept free of values that may be secrets, and values that
    start with ``-`` taken as values. Every command's parser is one (subparsers inherit it)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._tokens = self._joined(list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(self._tokens, namespace)

    def _joined(self, tokens: list[str]) -> list[str]:
        """``--max-age -3h`` as ``--max-age=-3h``: argparse reads ``-3h`` as an unknown option
        and says only "expected one argument"; given as the value, it is checked as one (and
        refused for what it is: a negative duration)."""
        takes_one = {
            name
            for action in self._actions
            if action.nargs is None
            for name in action.option_strings
        }
        joined: list[str] = []
        for token in tokens:
            if joined and joined[-1] in takes_one and _NEGATIVE_VALUE.fullmatch(token):
                joined[-1] = f"{joined[-1]}={token}"
            else:
                joined.append(token)
        return joined

    def error(self, message: str) -> NoReturn:
        """One short usage line and the error: argparse's full usage block (25 lines for
        ``audit``) buried the one line that says what is wrong."""
        usage = self.format_usage()
        if usage.count("\n") > 1:
            usage = f"usage: {self.prog} [options] ({self.prog} --help lists them)\n"
        sys.stderr.write(usage)
        if message.endswith(": expected one argument"):
            option = message.removeprefix("argument ").split(":", 1)[0].split("/")[-1]
            tokens = getattr(self, "_tokens", [])
            after = tokens[tokens.index(option) + 1 :][:1] if option in tokens else []
            if after and after[0].startswith("-"):  # a value argparse took for an option
                message += f" (a value that starts with '-' is written {option}=VALUE)"
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


def comma_list(text: str) -> list[str]:
    """``a, b,c,`` -> [a, b, c]: spaces and a trailing comma are harmless in a pasted list."""
    return [part.strip() for part in text.split(",") if part.strip()]


_DURATION = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[smh]?)", re.IGNORECASE)
_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>(?:[kmg]i?b?)?)", re.IGNORECASE)


def duration(text: str) -> int:
    """Seconds, or with a unit: ``3600``, ``3600s``, ``60m``, ``1h``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 3600, 60m, 1h)")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600}[match["unit"].lower()]
    return int(match["number"]) * factor


def size(text: str) -> int:
    """Bytes, or with a binary unit: ``134217728``, ``128MiB``, ``128M``, ``1GiB``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 134217728, 128MiB, 1GiB)")
    unit = match["unit"].lower()[:1]
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
    return int(match["number"]) * factor


_FILE_MODE = re.compile(r"(?:0o?)?(?P<digits>[0-7]{1,3})", re.IGNORECASE)


def file_mode_type(text: str) -> int:
    """Octal permission bits as ``chmod`` takes them: ``0640``, ``640`` or ``0o640``."""
    match = _FILE_MODE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an octal permission mode from 000 to 777 (e.g. 0600, 0640)"
        )
    return int(match["digits"], 8)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


#: The one flag every command that reads or writes a bucket takes.
EXPECTED_BUCKET_OWNER = "--expected-bucket-owner"


def add_expected_bucket_owner(group: Any) -> None:
    """``--expected-bucket-owner``, declared once: ``scan`` writes with it, ``audit``, ``diff``
    and ``finalize`` read with it (``finalize`` also writes with it, or with the run's own), and
    a run read without it could come from a bucket that was deleted and re-created by another
    account under the same name."""
    group.add_argument(
        EXPECTED_BUCKET_OWNER,
        metavar="ACCOUNT",
        help="12-digit account that must own the bucket; S3 refuses every request otherwise",
    )


def expected_bucket_owner(args: argparse.Namespace, source: str | None) -> str | None:
    """``--expected-bucket-owner`` as given for reading ``source``, checked as the scan checks
    it (12 digits; S3 only): ConfigError naming the flag, exit 2."""
    owner = getattr(args, "expected_bucket_owner", None)
    if owner is None or source is None:
        return None
    return check_bucket_owner(owner, source, EXPECTED_BUCKET_OWNER)


def add_scan_options(scan: argparse.ArgumentParser, *, for_audit: bool = False) -> None:
    """The scan's options; ``fleetscan audit`` takes the same ones to scan before it audits."""
    scan.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        help="TOML file with any option, and [[organizations]] tables to scan several "
        "organizations in one run",
    )

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
        type=comma_list,
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
        type=comma_list,
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
    roles.add_argument(
        "--role-session-name",
        metavar="NAME",
        help="session name, shown in CloudTrail (default: fleetscan)",
    )
    roles.add_argument(
        "--role-duration",
        dest="role_duration_seconds",
        metavar="SECONDS",
        type=duration,
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
    roles.add_argument(
        "--partition",
        metavar="NAME",
        help="the accounts' partition: aws (default), aws-cn or aws-us-gov",
    )

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
        "--rate",
        type=float,
        metavar="N",
        help="most requests/s per account and region (default: no ceiling; start at 20/s and "
        "probe upward while the service does not throttle)",
    )
    tuning.add_argument("--burst", type=int, metavar="N", help="token bucket burst (default 10)")
    tuning.add_argument(
        "--max-attempts", type=int, metavar="N", help="attempts per call, 1-20 (default 8)"
    )
    tuning.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="time to open a connection to an endpoint (default 10)",
    )
    tuning.add_argument(
        "--read-timeout",
        type=float,
        metavar="SECONDS",
        help="time to wait for the next bytes of an answer (default 30)",
    )
    tuning.add_argument(
        "--call-timeout",
        type=float,
        metavar="SECONDS",
        help="total time one attempt of an AWS call may take, however its answer trickles in "
        "(default 60; S3 requests 1 s more per 64 KiB they send)",
    )

    output = scan.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="DEST",
        help="a directory, s3://BUCKET/PREFIX/, or - for recovery points on stdout",
    )
    output.add_argument(
        "--compress", choices=("none", "gzip"), help="gzip: .ndjson.gz data files (default: none)"
    )
    output.add_argument(
        "--max-object-bytes",
        type=size,
        metavar="SIZE",
        help=f"roll files over at this size, at least {MIN_OBJECT_BYTES >> 20}MiB (default 128MiB)",
    )
    output.add_argument(
        "--run-id",
        metavar="ID",
        help="the run's id, which names its files (default: a fresh, sortable id)",
    )
    output.add_argument(
        "--file-mode",
        type=file_mode_type,
        metavar="MODE",
        help="permissions of every output file and its folders, in octal (default 0600)",
    )
    s3 = scan.add_argument_group(
        "S3 (with --input or --output s3://BUCKET/PREFIX/)"
        if for_audit
        else "S3 output (with --output s3://BUCKET/PREFIX/)"
    )
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
    add_expected_bucket_owner(s3)
    s3.add_argument(
        "--checksum-algorithm",
        choices=CHECKSUM_ALGORITHMS,
        help="checksum S3 verifies on every part and object (default: CRC32)",
    )
    output.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue an interrupted run ('latest' or its id) in the same --output (directory "
        "or s3:// prefix): finished units are skipped, nothing is written twice; the run's own "
        "accounts, roles and regions are used (a flag that changes them is refused), pace and "
        "timeout flags may differ",
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
            "--metrics-file",
            type=Path,
            metavar="FILE",
            help="also write the run's metrics in the Prometheus text format here (for "
            "node_exporter's textfile collector), complete or not at all",
        )
        output.add_argument(
            "--shard",
            metavar="K/N",
            help="scan the K-th of N shares of the run's accounts (K from 1), or 'auto' for the "
            "index of a Kubernetes Indexed Job or an AWS Batch array job; every shard is given "
            "the same --run-id and --output, and a shard started again resumes its own part",
        )
        output.add_argument(
            "--workers",
            type=positive_int,
            metavar="N",
            help="run the scan as N shard processes on this machine, to use N cores (one "
            "summary, one exit code; each process takes its own memory)",
        )
        output.add_argument(
            "--dry-run",
            action=argparse.BooleanOptionalAction,
            help="print the plan (accounts x regions, expected calls); call no Storage Gateway API",
        )
    output.add_argument(
        "--quiet", action="store_true", default=False, help="no progress display or summary"
    )
    output.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr as text, or one JSON object a line (default: text)",
    )


def scan_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ScanConfig values the user gave as flags (argparse.SUPPRESS leaves out the others)."""
    overrides = {key: value for key, value in vars(args).items() if key in CONFIG_KEYS}
    for key in ("ous", "accounts", "exclude_accounts"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    if "regions" in overrides:
        text = overrides["regions"].strip()
        overrides["regions"] = text if text in ("all", "enabled") else tuple(comma_list(text))
    if (
        "external_id" not in overrides
        and overrides.get("assume_role") is not False
        and os.environ.get(EXTERNAL_ID_ENV)
    ):
        overrides["external_id"] = os.environ[EXTERNAL_ID_ENV]
    return overrides


def scan_values(args: argparse.Namespace) -> dict[str, Any]:
    """What the user set, from ``--config`` and the flags given (flags win), not yet checked."""
    file_values = load_config_file(args.config) if "config" in args else {}
    return given_values(file_values, scan_overrides(args))


def scan_config(args: argparse.Namespace) -> ScanConfig:
    """The ScanConfig of ``--config`` and the flags given (flags win), validated."""
    return ScanConfig(**scan_values(args))
