"""``fleetscan audit``: which cached volumes are past their recovery-point objective.

policy (objectives and overrides) -> evaluation (a run's datasets, read back through its
manifest, judged volume by volume) -> reports (findings.ndjson, report.md, report.html,
junit.xml; ASFF for AWS Security Hub in ``_asff``, imported into each member account by
``_securityhub``). The terminal summary and the exit code belong to the command
(``fleetscan._commands.audit``).
"""

from ._diff import CHANGE_FIELDS, CHANGE_KINDS, Change, RunDiff, diff_runs
from ._evaluate import FINDING_FIELDS, AccountSummary, AuditResult, Finding, audit
from ._policy import DEFAULT_RULE, Policy, Rule, format_duration, load_policy, parse_duration
from ._reports import render_html, render_junit, render_markdown, write_reports
from ._run import audit_to_dir, check_source

__all__ = [
    "CHANGE_FIELDS",
    "CHANGE_KINDS",
    "DEFAULT_RULE",
    "FINDING_FIELDS",
    "AccountSummary",
    "AuditResult",
    "Change",
    "Finding",
    "Policy",
    "Rule",
    "RunDiff",
    "audit",
    "audit_to_dir",
    "check_source",
    "diff_runs",
    "format_duration",
    "load_policy",
    "parse_duration",
    "render_html",
    "render_junit",
    "render_markdown",
    "write_reports",
]
