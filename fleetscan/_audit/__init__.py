"""``fleetscan audit``: which cached volumes are past their recovery-point objective.

policy (objectives and overrides) -> evaluation (a run's datasets, read back through its
manifest, judged volume by volume) -> reports (findings.ndjson, report.md, report.html, junit.xml,
the terminal summary and the exit code).
"""

from ._command import (
    EXIT_COMPLIANT,
    EXIT_STALE,
    EXIT_UNKNOWN,
    AuditRequest,
    audit_to_dir,
    print_summary,
    run_audit_command,
)
from ._evaluate import FINDING_FIELDS, AccountSummary, AuditResult, Finding, audit
from ._policy import DEFAULT_RULE, Policy, Rule, format_duration, load_policy, parse_duration
from ._reports import render_html, render_junit, render_markdown, write_reports

__all__ = [
    "DEFAULT_RULE",
    "EXIT_COMPLIANT",
    "EXIT_STALE",
    "EXIT_UNKNOWN",
    "FINDING_FIELDS",
    "AccountSummary",
    "AuditRequest",
    "AuditResult",
    "Finding",
    "Policy",
    "Rule",
    "audit",
    "audit_to_dir",
    "format_duration",
    "load_policy",
    "parse_duration",
    "print_summary",
    "render_html",
    "render_junit",
    "render_markdown",
    "run_audit_command",
    "write_reports",
]
