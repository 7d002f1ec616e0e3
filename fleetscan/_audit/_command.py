"""``fleetscan audit``: optionally scan first, judge the run, write the reports, set the exit code.

Exit codes: 0 every volume compliant, 4 a volume is stale, 5 none stale but some unknown
(``--fail-on`` narrows this), 2 bad input. When it scans first, a scan that fails outright returns
the scan's own code (1 fatal, 130 interrupted); a partial scan is audited, its gaps as unknowns.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._config import ScanConfig, parse_s3_url
from .._exceptions import ConfigError
from ._evaluate import AuditResult, audit
from ._policy import Policy, format_duration
from ._reports import FindingsWriter, prepare_report_dir, verdict, write_reports

EXIT_COMPLIANT = 0
EXIT_USAGE = 2
EXIT_STALE = 4
EXIT_UNKNOWN = 5
FAIL_ON = ("stale", "unknown", "none")
#: Accounts listed in the terminal table; the reports list them all.
TERMINAL_ROWS = 15

_console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class AuditRequest:
    """What ``fleetscan audit`` was asked, validated by the CLI."""

    policy: Policy
    source: str | None = None
    run_id: str | None = None
    #: Set: scan first with this config (its ``output`` is where the run goes), then audit it.
    scan: ScanConfig | None = None
    report_dir: Path | None = None
    fail_on: str = "unknown"
    quiet: bool = False
    log_format: str = "text"


async def audit_to_dir(
    source: str, policy: Policy, *, run_id: str | None = None, report_dir: Path | None = None
) -> AuditResult:
    """Audit a run; with ``report_dir``, write findings.ndjson as it goes and the reports after."""
    if report_dir is None:
        return await audit(source, policy, run_id=run_id)
    with FindingsWriter(report_dir) as findings:
        result = await audit(source, policy, run_id=run_id, on_finding=findings.write)
    write_reports(result, report_dir)
    return result


def check_source(source: str) -> str:
    """A local ``--input`` must be an existing directory (S3 is checked when it is read)."""
    if source.startswith("s3://"):
        parse_s3_url(source, "--input")
        return source
    if "://" in source:
        raise ConfigError("--input", f"{source}: give a local directory or s3://bucket/prefix/")
    if not os.path.isdir(source):
        what = "does not exist" if not os.path.exists(source) else "is not a directory"
        raise ConfigError("--input", f"{source} {what}")
    # Absolute, so the report's evidence names the data wherever the report is read.
    return os.path.abspath(source)


def run_audit_command(request: AuditRequest) -> int:
    if request.fail_on not in FAIL_ON:
        raise ConfigError("--fail-on", f"must be one of {', '.join(FAIL_ON)}")
    report_dir = prepare_report_dir(request.report_dir) if request.report_dir else None
    source, run_id = request.source, request.run_id
    if request.scan is not None:
        from .._run import run_scan_command
        from .._scan import new_run_id

        config = request.scan
        if not config.output or config.output == "-":
            raise ConfigError("--output", "the audit reads the run back: give a directory or S3")
        if config.dry_run:
            raise ConfigError("--dry-run", "an audit needs a real scan")
        config = replace(config, run_id=config.run_id or new_run_id())
        code = run_scan_command(config, quiet=request.quiet, log_format=request.log_format)
        if code not in (0, 3):  # complete or partial: there is a run to audit
            return code
        source, run_id = config.output, config.run_id
    if source is None:
        raise ConfigError("--input", "give --input DEST, or scan flags and --output DEST")
    source = check_source(source)
    try:
        result = anyio.run(
            lambda: audit_to_dir(source, request.policy, run_id=run_id, report_dir=report_dir),
            backend="asyncio",
        )
    except (ValueError, OSError) as exc:
        # A damaged or unreadable run: the data is bad input, not a crash.
        raise ConfigError("--input", f"cannot audit {source}: {exc}") from None
    code = result.exit_code(request.fail_on)
    if not request.quiet:
        print_summary(result, report_dir, code, request.log_format)
    return code


def print_summary(
    result: AuditResult, report_dir: Path | None, code: int | None, log_format: str = "text"
) -> None:
    """The terminal summary on stderr: accounts with problems first, then the verdict.

    ``code`` is the exit code the audit returns, shown with the verdict (None: not an audit
    command's own exit, as in the demo).
    """
    if log_format == "json":
        event = {
            "event": "audit_finished",
            "run_id": result.run_id,
            "run_status": result.run_status,
            "compliant": result.counts["compliant"],
            "stale": result.counts["stale"],
            "unknown": result.counts["unknown"],
            "accounts": len(result.accounts),
            "report_dir": str(report_dir) if report_dir else None,
            "exit_code": code,
        }
        sys.stderr.write(orjson.dumps(event).decode() + "\n")
        return
    table = Table(
        title=escape(f"fleetscan audit of run {result.run_id} ({result.run_status})"),
        caption=escape(f"objectives: {result.policy.source}"),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("account", no_wrap=True, min_width=12)
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=24)
    for column in ("compliant", "stale", "unknown", "oldest"):
        table.add_column(column, justify="right", no_wrap=True)
    # One objective for all: the caption says it; with a policy, each account's objectives.
    per_account = bool(result.policy.rules)
    if per_account:
        table.add_column("objective", overflow="fold")
    judged = [s for s in result.accounts.values() if sum(s.counts.values())]
    ordered = sorted(
        judged,
        key=lambda s: (not s.failing, -s.counts["stale"], -s.counts["unknown"], s.account_id or ""),
    )
    for summary in ordered[:TERMINAL_ROWS]:
        counts = summary.counts
        row = [
            escape(summary.account_id or "(organization)"),
            escape(summary.account_name or "-"),
            f"{counts['compliant']:,}",
            f"[red]{counts['stale']:,}[/]" if counts["stale"] else "0",
            f"[yellow]{counts['unknown']:,}[/]" if counts["unknown"] else "0",
            format_duration(summary.worst_age) if summary.worst_age is not None else "-",
        ]
        if per_account:
            row.append(", ".join(sorted({format_duration(s) for s in summary.objectives.values()})))
        table.add_row(*row)
    rest = ordered[TERMINAL_ROWS:]
    if rest:
        failing = sum(1 for s in rest if s.failing)
        table.add_row(f"+{len(rest)} more", f"{failing} of them failing")
    empty = len(result.accounts) - len(judged)
    if empty:
        table.add_row(f"+{empty} more", "no cached volume")
    table.add_section()
    table.add_row(
        "total",
        f"{len(result.accounts)} accounts",
        f"{result.counts['compliant']:,}",
        f"{result.counts['stale']:,}",
        f"{result.counts['unknown']:,}",
    )
    _console.print(table)
    for warning in result.warnings:
        _console.print(f"fleetscan: warning: {warning}", markup=False)
    colour = "red" if result.counts["stale"] else "yellow" if result.counts["unknown"] else "green"
    suffix = f" (exit code {code})" if code is not None else ""
    _console.print(f"[bold {colour}]{verdict(result)}[/]{suffix}")
    if report_dir is not None:
        _console.print(
            f"reports: {report_dir}/findings.ndjson, report.md, report.html, junit.xml",
            markup=False,
        )
