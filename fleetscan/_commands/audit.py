"""``fleetscan audit``: optionally scan first, judge the run, write the reports, set the exit code.

Exit codes: 0 every volume compliant, 4 a volume is stale, 5 none stale but some unknown
(``--fail-on`` narrows this), 6 findings not all imported into Security Hub (whatever the
verdict: the summary still gives it), 2 bad input, 1 a run S3 would not give (refused or
failed). When it scans first, a scan that fails outright returns the scan's own code (1 fatal,
130 interrupted); a partial scan is audited, its gaps as unknowns.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config import CONFIG_KEYS, ScanConfig
from .._exceptions import ConfigError, DataError
from ._args import add_scan_options, expected_bucket_owner, scan_config
from ._loop import run_async

if TYPE_CHECKING:
    from rich.console import Console

    from .._audit import AuditResult, Finding, Policy

FAIL_ON = ("stale", "unknown", "none")
#: Some findings could not be imported into Security Hub (``--security-hub``).
EXIT_NOT_IMPORTED = 6
#: ``--max-scan-age`` unless given: the library's DEFAULT_MAX_SCAN_AGE, without importing the
#: audit (and its readers) to build the parser (tests/test_cli_audit.py checks they agree).
MAX_SCAN_AGE = 48 * 3600
#: Accounts listed in the terminal table; the reports list them all.
TERMINAL_ROWS = 15


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _max_age(text: str) -> str:
    from .._audit import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _max_scan_age(text: str) -> int | None:
    """``--max-scan-age``: a duration, or ``none`` to judge evidence of any age."""
    from .._audit import parse_duration

    if text.strip().lower() == "none":
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_AUDIT_EPILOG = """\
Audit an existing run (a local directory or s3://bucket/prefix/; the newest run, whatever its
status, unless --run names one or --require-complete skips runs that are not complete), or give
scan flags and --output to scan first and audit the fresh run. A volume is stale when its recovery
point is older than its objective, measured at the time it was scanned; a gateway or an
account/region that could not be read is unknown, and so is everything when the run is older than
--max-scan-age (evidence too old).

examples:
  fleetscan audit --input ./inventory --max-age 24h --report-dir ./audit
  fleetscan audit --input s3://bucket/fleetscan/ --policy audit-policy.toml --fail-on stale \
    --expected-bucket-owner 111122223333
  fleetscan audit --org --role-name FleetscanReader --output ./inventory --max-age 1d

exit codes: 0 every volume compliant, 4 a volume is stale, 5 none stale but some unknown
(--fail-on stale: only stale fails; none: always 0), 6 findings not all imported into Security
Hub (--security-hub), 2 bad input, 1 the run could not be read (S3 refused or failed: e.g.
another account owns the bucket than --expected-bucket-owner); when it scans first, a scan that
fails outright exits with the scan's code (1 fatal, 130 interrupted).
"""


def add_parser(subparsers: Any) -> None:
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
        help="audit this run, whatever its status, or 'latest' (default: the newest run whatever "
        "its status; newer runs not judged are reported)",
    )
    what.add_argument(
        "--require-complete",
        action="store_true",
        default=False,
        help="judge only a complete run: the newest complete one (newer ones are reported)",
    )
    what.add_argument(
        "--max-scan-age",
        metavar="DURATION",
        type=_max_scan_age,
        default=MAX_SCAN_AGE,
        help="evidence older than this (from the run's start) judges nothing: every finding "
        "unknown, exit 5 (default: 48h; 'none': no limit)",
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
        "--metrics-file",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the audit's metrics in the Prometheus text format here (for "
        "node_exporter's textfile collector), complete or not at all",
    )
    what.add_argument(
        "--asff",
        metavar="FILE",
        type=Path,
        default=None,
        help="write the findings in the AWS Security Finding Format (a JSON array, what "
        "BatchImportFindings takes)",
    )
    hub = audit.add_argument_group("AWS Security Hub")
    hub.add_argument(
        "--security-hub",
        action="store_true",
        default=False,
        help="import the findings into Security Hub, in each member account (through an "
        "assumed role) and the region of each volume; archive those of volumes gone. "
        "Exit 6 when some could not be imported",
    )
    hub.add_argument(
        "--security-hub-role-name",
        metavar="NAME",
        default=None,
        help="the role to import through (default: the scan's --role-name, or the one the "
        "run's manifest records); it needs securityhub:DescribeHub, GetFindings and "
        "BatchImportFindings (configs/iam/security-hub-import.json)",
    )
    what.add_argument(
        "--fail-on",
        choices=("stale", "unknown", "none"),
        default="unknown",
        help="unknown (default): exit 4 on stale, 5 on unknown; stale: only stale fails; "
        "none: exit 0 whatever was found",
    )
    add_scan_options(audit, for_audit=True)


@dataclass(frozen=True)
class AuditRequest:
    """What ``fleetscan audit`` was asked, validated by the CLI."""

    policy: Policy
    source: str | None = None
    run_id: str | None = None
    #: Set: scan first with this config (its ``output`` is where the run goes), then audit it.
    scan: ScanConfig | None = None
    report_dir: Path | None = None
    #: Write the findings here in ASFF.
    asff: Path | None = None
    #: Import them into Security Hub, through this role (None: the scan's).
    security_hub: bool = False
    security_hub_role_name: str | None = None
    require_complete: bool = False
    #: Seconds (None: no limit).
    max_scan_age: int | None = MAX_SCAN_AGE
    fail_on: str = "unknown"
    quiet: bool = False
    log_format: str = "text"
    metrics_file: Path | None = None
    #: Every read of an S3 ``source`` says this account must own the bucket (when scanning
    #: first, the scan's own ``expected_bucket_owner`` is used instead).
    expected_bucket_owner: str | None = None


def run(args: argparse.Namespace) -> int:
    """``fleetscan audit``: check every input first (exit 2 naming it), then scan and/or audit."""
    from .._audit import Policy, load_policy

    policy = load_policy(args.policy) if args.policy else Policy.single(args.max_age)
    scan_flags = sorted(key for key in vars(args) if key in CONFIG_KEYS or key == "config")
    scan = None
    owner = None
    if args.input is not None:
        # The one scan flag that also means something for a run already written: its reads.
        owner = expected_bucket_owner(args, args.input)
        scan_flags = [key for key in scan_flags if key != "expected_bucket_owner"]
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
        if args.run is not None or args.require_complete:
            flag = "--run" if args.run is not None else "--require-complete"
            raise ConfigError(flag, "chooses a run under --input; a fresh scan is audited as is")
        scan = scan_config(args)
        if getattr(scan, "resume", None):
            raise ConfigError(
                "--resume",
                "finish the run with fleetscan scan --resume, then audit it with --input",
            )
    if args.security_hub_role_name is not None and not args.security_hub:
        raise ConfigError("--security-hub-role-name", "only means something with --security-hub")
    request = AuditRequest(
        policy=policy,
        source=args.input,
        run_id=args.run,
        scan=scan,
        report_dir=args.report_dir,
        asff=args.asff,
        security_hub=args.security_hub,
        security_hub_role_name=args.security_hub_role_name,
        require_complete=args.require_complete,
        max_scan_age=args.max_scan_age,
        fail_on=args.fail_on,
        quiet=args.quiet,
        log_format=args.log_format,
        metrics_file=args.metrics_file,
        expected_bucket_owner=owner,
    )
    return run_request(request)


def run_request(request: AuditRequest) -> int:
    """Scan first if asked, audit, write the reports, print the summary; the exit code."""

    from .._audit import audit_to_dir, check_source
    from .._audit._reports import prepare_report_dir

    if request.fail_on not in FAIL_ON:
        raise ConfigError("--fail-on", f"must be one of {', '.join(FAIL_ON)}")
    report_dir = prepare_report_dir(request.report_dir) if request.report_dir else None
    asff_path = None
    if request.asff is not None:
        from .._audit._asff import check_asff_path

        asff_path = check_asff_path(request.asff)
    if request.metrics_file is not None:
        from .._metrics import check_metrics_file

        check_metrics_file(request.metrics_file)
    source, run_id = request.source, request.run_id
    owner = request.expected_bucket_owner
    if request.scan is not None:
        from .._scan import new_run_id
        from ._progress import scan_with_progress

        config = request.scan
        if not config.output or config.output == "-":
            raise ConfigError("--output", "the audit reads the run back: give a directory or S3")
        if config.dry_run:
            raise ConfigError("--dry-run", "an audit needs a real scan")
        config = replace(config, run_id=config.run_id or new_run_id())
        code = scan_with_progress(config, quiet=request.quiet, log_format=request.log_format)
        if code not in (0, 3):  # complete or partial: there is a run to audit
            return code
        source, run_id = config.output, config.run_id
        owner = config.expected_bucket_owner
    if source is None:
        raise ConfigError("--input", "give --input DEST, or scan flags and --output DEST")
    source = check_source(source)
    found: list[Finding] = []
    try:
        result = run_async(
            lambda: audit_to_dir(
                source,
                request.policy,
                run_id=run_id,
                report_dir=report_dir,
                require_complete=request.require_complete,
                max_scan_age=request.max_scan_age,
                on_finding=found.append if asff_path is not None or request.security_hub else None,
                expected_bucket_owner=owner,
            ),
        )
    except DataError:
        raise  # a damaged run: one line naming the file and line, exit 1
    except (ValueError, OSError) as exc:
        # An unreadable run: bad input, not a crash.
        raise ConfigError("--input", f"cannot audit {source}: {exc}") from None
    code = result.exit_code(request.fail_on)
    notes: list[str] = []
    imported = None
    if asff_path is not None or request.security_hub:
        from .._audit._asff import asff_findings, write_asff

        items = asff_findings(result, found)
        found.clear()
        left_out = f"{result.findings - len(items)} without an account and region: reports only"
        if asff_path is not None:
            write_asff(asff_path, items)
            notes.append(f"ASFF: {len(items):,} findings in {asff_path} ({left_out})")
        if request.security_hub:
            imported = _import(request, result, items)
            notes.append(
                f"Security Hub: {imported.imported:,} findings imported, {imported.archived:,} "
                f"archived, in {imported.places} account/region(s); "
                f"{imported.not_imported:,} not imported ({left_out})"
            )
            notes += [
                f"Security Hub problem: {p.account_id} {p.region or '-'}: {p.operation} "
                f"{p.error_code}: {p.message} ({p.findings} findings not imported)"
                for p in imported.problems
            ]
            if imported.not_imported:
                code = EXIT_NOT_IMPORTED
    if request.metrics_file is not None:
        from .._metrics import audit_metrics, write_metrics

        write_metrics(request.metrics_file, audit_metrics(result))
    if not request.quiet:
        print_summary(result, report_dir, code, request.log_format, notes=notes, imported=imported)
    return code


def _import(request: AuditRequest, result: AuditResult, items: list[dict[str, Any]]) -> Any:
    """Import into Security Hub with the scan's configuration, or one made from the run's
    manifest (its role and partition) when auditing a run already written."""

    from .._audit._securityhub import import_findings

    manifest_config = (result.manifest.get("summary") or {}).get("config") or {}
    config = request.scan
    scan_role = config.role_name if config is not None else manifest_config.get("role_name")
    role_name = request.security_hub_role_name or scan_role
    if not isinstance(role_name, str) or not role_name:
        raise ConfigError(
            "--security-hub-role-name",
            "name the role to import through (the run records no --role-name)",
        )
    if config is None:
        partition = manifest_config.get("partition")
        hub_role = manifest_config.get("hub_role_arn")
        config = ScanConfig(
            org=True,
            role_name=role_name,
            partition=partition if isinstance(partition, str) else "aws",
            hub_role_arn=hub_role if isinstance(hub_role, str) else None,
        )
    blind_units = frozenset(
        (str(f.account_id), str(f.region))
        for f in result.unknown
        if f.kind == "unit" and f.account_id and f.region
    )
    blind_gateways = frozenset(
        str(f.gateway_arn) for f in result.unknown if f.kind == "gateway" and f.gateway_arn
    )
    # Places the run read and found nothing in: their old findings are archived. Only when the
    # run reached every unit, and not in an account it could not enter.
    account_wide = {f.account_id for f in result.unknown if f.kind == "unit" and not f.region}
    regions = manifest_config.get("regions")
    scanned = frozenset(
        (str(account_id), str(region))
        for account_id in result.accounts
        if account_id is not None and account_id not in account_wide
        for region in (regions if isinstance(regions, list) else [])
        if result.run_status in ("complete", "partial")
    )
    return run_async(
        lambda: import_findings(
            items,
            config,
            role_name=role_name,
            blind_units=blind_units,
            blind_gateways=blind_gateways,
            scanned=scanned - blind_units,
        ),
    )


def print_summary(
    result: AuditResult,
    report_dir: Path | None,
    code: int | None,
    log_format: str = "text",
    *,
    notes: list[str] | None = None,
    imported: Any = None,
) -> None:
    """The terminal summary on stderr: accounts with problems first, then the verdict.

    ``code`` is the exit code the audit returns, shown with the verdict (None: not an audit
    command's own exit, as in the demo).
    """
    import orjson
    from rich.markup import escape
    from rich.table import Table

    from .._audit import format_duration
    from .._audit._reports import evidence_age, verdict

    console = _console()
    if log_format == "json":
        event = {
            "event": "audit_finished",
            "run_id": result.run_id,
            "run_status": result.run_status,
            "run_started_at": result.manifest.get("started_at"),
            "run_ended_at": result.manifest.get("ended_at"),
            "scan_age_seconds": result.scan_age_seconds,
            "max_scan_age_seconds": result.max_scan_age_seconds,
            "evidence_too_old": result.too_old,
            "newer_runs_not_judged": [
                {
                    "run_id": n.run_id,
                    "status": n.status,
                    "started_at": n.started_at,
                    "reason": n.reason,
                }
                for n in result.newer_runs
            ],
            "warnings": result.warnings,
            "security_hub": imported.as_json() if imported is not None else None,
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
    console.print(table)
    manifest = result.manifest
    console.print(
        f"evidence: run {result.run_id} ({result.run_status}), scanned "
        f"{manifest.get('started_at')} to {manifest.get('ended_at')}, {evidence_age(result)}",
        markup=False,
    )
    for warning in result.warnings:
        console.print(f"fleetscan: warning: {warning}", markup=False)
    colour = "red" if result.counts["stale"] else "yellow" if result.counts["unknown"] else "green"
    suffix = f" (exit code {code})" if code is not None else ""
    console.print(f"[bold {colour}]{verdict(result)}[/]{suffix}")
    for note in notes or []:
        console.print(note, markup=False, soft_wrap=True)  # one greppable line each
    if report_dir is not None:
        console.print(
            f"reports: {report_dir}/findings.ndjson, report.md, report.html, junit.xml",
            markup=False,
        )
