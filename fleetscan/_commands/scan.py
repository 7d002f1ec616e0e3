"""``fleetscan scan``: flags and a TOML file in, a validated ScanConfig, a scan with progress.

Everything is validated before the engine is imported, so bad input costs no AWS call and no
engine import. A ``--resume`` is the exception: what it may be given depends on the run's stored
configuration, so its checkpoint is read (by the library, engine imported) first.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from .._config import ScanConfig
from .._exceptions import ConfigError
from ._args import add_scan_options, scan_values
from ._loop import run_async

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


def add_parser(subparsers: Any) -> None:
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
    add_scan_options(scan)


def run(args: argparse.Namespace) -> int:
    given = scan_values(args)
    if "workers" in args:
        if getattr(args, "metrics_file", None) is not None:
            raise ConfigError(
                "--metrics-file",
                "is not written by --workers (each shard process has its own figures): run "
                "the shards with --shard K/N and --metrics-file each, or read the run's manifest",
            )
        workers = importlib.import_module("fleetscan._commands._workers")
        status: int = workers.run_workers(
            given, args.workers, args.command_line, quiet=args.quiet, log_format=args.log_format
        )
        return status
    if given.get("resume") is not None:
        return _resume(given, args)
    config = ScanConfig(**given)
    if config.output is None and not config.dry_run:
        raise ConfigError(
            "output",
            "where should records go? Set output (--output DIR, or - for stdout), "
            "or dry_run (--dry-run) to plan only",
        )
    metrics_file = _metrics_file(args)
    # Only now, with the input known good, is the engine looked up and asked for anything.
    progress = importlib.import_module("fleetscan._commands._progress")
    code: int = progress.scan_with_progress(
        config, quiet=args.quiet, log_format=args.log_format, metrics_file=metrics_file
    )
    return code


def _metrics_file(args: argparse.Namespace) -> Path | None:
    path: Path | None = getattr(args, "metrics_file", None)
    if path is None:
        return None
    from .._metrics import check_metrics_file

    return check_metrics_file(path)


def _resume(given: dict[str, Any], args: argparse.Namespace) -> int:
    """``--resume``: the run's own configuration, with what was given on top (the checkpoint
    must be read first, so the engine is imported before the input is fully checked)."""

    run = importlib.import_module("fleetscan._run")
    progress = importlib.import_module("fleetscan._commands._progress")
    metrics_file = _metrics_file(args)
    config, kept = run_async(lambda: run.resume_config(given))
    if not kept:
        progress.say(
            f"the run to resume ({config.resume}) was started by a fleetscan that did not keep "
            "its configuration: it is resumed with the settings given, and only its "
            "compression is checked",
            args.log_format,
        )
    code: int = progress.scan_with_progress(
        config, quiet=args.quiet, log_format=args.log_format, metrics_file=metrics_file
    )
    return code
