"""An audit with its reports: the library call behind ``fleetscan audit --report-dir``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .._config import parse_s3_url
from .._exceptions import ConfigError
from ._diff import diff_runs, resolve_runs
from ._evaluate import DEFAULT_MAX_SCAN_AGE, AuditResult, Finding, audit
from ._policy import Policy
from ._reports import FindingsWriter, write_reports


async def audit_to_dir(
    source: str,
    policy: Policy,
    *,
    run_id: str | None = None,
    report_dir: Path | None = None,
    require_complete: bool = False,
    max_scan_age: int | None = DEFAULT_MAX_SCAN_AGE,
    on_finding: Callable[[Finding], None] | None = None,
    expected_bucket_owner: str | None = None,
) -> AuditResult:
    """Audit a run; with ``report_dir``, write findings.ndjson as it goes and the reports after,
    with what changed since the previous finished run when there is one. ``on_finding`` sees
    every finding too (after it is written). ``expected_bucket_owner`` goes with every read of
    an S3 ``source``, the comparison's too (see :func:`audit`)."""
    owner = expected_bucket_owner

    async def judge(write: Callable[[Finding], None] | None) -> AuditResult:
        def each(finding: Finding) -> None:
            if write is not None:
                write(finding)
            if on_finding is not None:
                on_finding(finding)

        return await audit(
            source,
            policy,
            run_id=run_id,
            require_complete=require_complete,
            max_scan_age=max_scan_age,
            on_finding=each,
            expected_bucket_owner=owner,
        )

    if report_dir is None:
        return await judge(None)
    with FindingsWriter(report_dir) as findings:
        result = await judge(findings.write)
    try:
        previous, _ = await resolve_runs(source, None, result.run_id, expected_bucket_owner=owner)
    except ConfigError:  # no finished run before this one
        previous = None
    if previous is not None:
        result.changes = await diff_runs(
            source, policy, from_run=previous, to_run=result.run_id, expected_bucket_owner=owner
        )
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
