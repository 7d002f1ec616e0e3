"""Judging one run against a policy: every cached volume compliant, stale or unknown.

The audit reads only what the run wrote, through its manifest (a local directory or S3), so it
needs no AWS access to the scanned accounts and re-auditing old data gives the same answer: a
volume's age is taken at its record's ``scanned_at``, never at the time of the audit.

What cannot be judged is never counted compliant. A gateway the scan could not read (status
``error``: offline, access denied, retries exhausted) is one ``unknown`` finding, since its volumes
are not known; so is an (account, region) unit that failed as a whole (AssumeRole, DescribeRegions,
ListGateways), and a run that failed or was interrupted before reaching every unit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .._exceptions import ConfigError
from .._records import parse_time
from .._sinks._read import aiter_records, alatest_run, alist_runs, aread_manifest
from ._policy import DEFAULT_RULE, Policy

Status = Literal["compliant", "stale", "unknown"]
STATUSES: tuple[Status, ...] = ("compliant", "stale", "unknown")
#: What an unknown finding stands for: a gateway, an (account, region) unit, or the whole run.
Kind = Literal["volume", "gateway", "unit", "run"]

#: The fields of each line of findings.ndjson, in order (issue 6).
FINDING_FIELDS: tuple[str, ...] = (
    "run_id",
    "account_id",
    "account_name",
    "region",
    "gateway_arn",
    "volume_arn",
    "recovery_point_time",
    "age_seconds",
    "objective_seconds",
    "rule",
    "status",
)
#: Age histogram resolution for the chart: bins per power of ten seconds.
BINS_PER_DECADE = 8


@dataclass(slots=True)
class Finding:
    run_id: str
    account_id: str | None
    account_name: str | None
    region: str | None
    gateway_arn: str | None
    volume_arn: str | None
    recovery_point_time: str | None
    age_seconds: float | None
    objective_seconds: int
    rule: str
    status: Status
    # Context for the reports; not written to findings.ndjson.
    kind: Kind = "volume"
    gateway_name: str | None = None
    operation: str | None = None
    error_code: str | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FINDING_FIELDS}

    @property
    def overdue_seconds(self) -> float:
        """How far past its objective a stale volume is (a volume with no recovery point: inf)."""
        if self.age_seconds is None:
            return math.inf
        return self.age_seconds - self.objective_seconds


@dataclass
class AccountSummary:
    account_id: str | None
    account_name: str | None
    ou_path: str | None
    counts: Counter[str] = field(default_factory=Counter)
    #: Objective (seconds) of each rule applied in this account.
    objectives: dict[str, int] = field(default_factory=dict)
    worst_age: float | None = None
    best_age: float | None = None
    #: (status, log bin) -> volumes: the chart's data, bounded whatever the fleet's size.
    age_bins: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def label(self) -> str:
        if self.account_id is None:
            return "(organization)"
        return f"{self.account_id} ({self.account_name})" if self.account_name else self.account_id

    @property
    def failing(self) -> bool:
        return bool(self.counts["stale"] or self.counts["unknown"])

    def add(self, finding: Finding) -> None:
        self.counts[finding.status] += 1
        self.objectives.setdefault(finding.rule, finding.objective_seconds)
        age = finding.age_seconds
        if age is None:
            return
        self.worst_age = age if self.worst_age is None else max(self.worst_age, age)
        self.best_age = age if self.best_age is None else min(self.best_age, age)
        self.age_bins[(finding.status, age_bin(age))] += 1


def age_bin(age: float) -> int:
    return math.floor(math.log10(max(age, 1.0)) * BINS_PER_DECADE)


@dataclass
class RuleSummary:
    name: str
    objective_seconds: int
    selectors: str
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class AuditResult:
    """Everything the reports show; findings themselves stream to ``on_finding``."""

    source: str
    run_id: str
    manifest: dict[str, Any]
    policy: Policy
    audited_at: str
    #: Findings by status, and unknown findings by kind.
    counts: Counter[str] = field(default_factory=Counter)
    unknown_by_kind: Counter[str] = field(default_factory=Counter)
    accounts: dict[str | None, AccountSummary] = field(default_factory=dict)
    regions: dict[str | None, Counter[str]] = field(default_factory=dict)
    rules: dict[str, RuleSummary] = field(default_factory=dict)
    #: Worst first: the most overdue at the top.
    stale: list[Finding] = field(default_factory=list)
    unknown: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def volumes(self) -> int:
        return self.counts["compliant"] + self.counts["stale"]

    @property
    def findings(self) -> int:
        return sum(self.counts.values())

    @property
    def run_status(self) -> str:
        return str(self.manifest.get("status"))

    def exit_code(self, fail_on: str = "unknown") -> int:
        """0 all compliant, 4 a volume stale, 5 none stale but some unknown (``--fail-on``)."""
        if fail_on == "none":
            return 0
        if self.counts["stale"]:
            return 4
        if self.counts["unknown"] and fail_on == "unknown":
            return 5
        return 0


class _Accounts:
    """What the manifest knows of each account scanned: its name and its place in the org."""

    def __init__(self, summary: Mapping[str, Any]) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        listed = summary.get("accounts")
        if not isinstance(listed, list):
            listed = summary.get("accounts_scanned")
        if isinstance(listed, list):
            for entry in listed:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    self.by_id[entry["id"]] = entry

    def ou_ids(self, account_id: str | None) -> tuple[str, ...]:
        entry = self.by_id.get(account_id or "")
        ids = entry.get("ou_ids") if entry else None
        return tuple(str(i) for i in ids) if isinstance(ids, list) else ()

    def organization(self, account_id: str | None) -> tuple[str, ...]:
        """The account's organization id and the name of the entry that reached it (runs of
        manifest version 2; none for a static list or an older run)."""
        entry = self.by_id.get(account_id or "")
        if not entry:
            return ()
        names = (entry.get("organization_id"), entry.get("organization_name"))
        return tuple(name for name in names if isinstance(name, str))

    def name(self, account_id: str | None) -> str | None:
        entry = self.by_id.get(account_id or "")
        name = entry.get("name") if entry else None
        return name if isinstance(name, str) else None

    def ou_path(self, account_id: str | None) -> str | None:
        entry = self.by_id.get(account_id or "")
        path = entry.get("ou_path") if entry else None
        return path if isinstance(path, str) else None

    @property
    def placed(self) -> bool:
        return any(self.ou_ids(account_id) for account_id in self.by_id)


async def resolve_run(source: str, run_id: str | None) -> str:
    """``--run`` as given, or the latest complete run under ``source`` (ConfigError: none)."""
    if run_id is not None:
        return run_id
    latest = await alatest_run(source, complete_only=True)
    if latest is not None:
        return latest
    runs = await alist_runs(source)
    if runs:
        statuses = Counter(str(r.get("status")) for r in runs)
        listed = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        raise ConfigError(
            "--input",
            f"no complete run under {source} ({listed}): name one with --run RUN_ID",
        )
    raise ConfigError("--input", f"no fleetscan run under {source} (no manifest found)")


async def audit(
    source: str,
    policy: Policy,
    *,
    run_id: str | None = None,
    on_finding: Callable[[Finding], None] | None = None,
) -> AuditResult:
    """Judge a run (the latest complete one under ``source`` unless ``run_id``) against ``policy``.

    Findings go to ``on_finding`` as they are made (volumes in the order the run wrote them, then
    unknown gateways, then unknown units), so memory holds only the summary, stale and unknown
    findings. Raises ConfigError for an unknown run; a damaged file raises ValueError naming it.
    """
    run_id = await resolve_run(source, run_id)
    try:
        manifest = await aread_manifest(source, run_id)
    except FileNotFoundError:
        raise ConfigError("--run", f"no run {run_id!r} under {source}") from None
    except ValueError as exc:  # not a run id, or not a fleetscan manifest
        raise ConfigError("--run", str(exc)) from None
    summary = manifest.get("summary")
    accounts = _Accounts(summary if isinstance(summary, dict) else {})
    result = AuditResult(
        source=source,
        run_id=run_id,
        manifest=manifest,
        policy=policy,
        audited_at=_now(),
    )
    for rule in policy.rules:
        result.rules[rule.name] = RuleSummary(rule.name, rule.objective_seconds, rule.describe())
    result.rules[DEFAULT_RULE] = RuleSummary(
        DEFAULT_RULE, policy.default_seconds, "every volume no rule selects"
    )
    if policy.uses_ous and not accounts.placed:
        result.warnings.append(
            f"the policy has OU rules, but run {run_id} records no OU placement (a static account "
            "list, or an older fleetscan): no OU rule matched"
        )
    if policy.uses_organizations and not any(map(accounts.organization, accounts.by_id)):
        result.warnings.append(
            f"the policy has organization rules, but run {run_id} records no organization (a "
            "static account list, or an older fleetscan): no organization rule matched"
        )
    for account_id in sorted(accounts.by_id):
        _account(result, accounts, account_id)

    def record(finding: Finding) -> None:
        objective = policy.objective_for(
            account_id=finding.account_id,
            ou_ids=accounts.ou_ids(finding.account_id),
            region=finding.region,
            gateway_name=finding.gateway_name,
            organization=accounts.organization(finding.account_id),
        )
        finding.objective_seconds = objective.seconds
        finding.rule = objective.rule
        if finding.status != "unknown":
            stale = finding.age_seconds is None or finding.age_seconds > objective.seconds
            finding.status = "stale" if stale else "compliant"
        if finding.account_name is None:
            finding.account_name = accounts.name(finding.account_id)
        _count(result, accounts, finding)
        if on_finding is not None:
            on_finding(finding)

    # Errors first (few), then gateways (only the failed ones are kept), then the volumes.
    unit_errors: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    gateway_errors: dict[str, dict[str, Any]] = {}
    async for row in aiter_records(source, run_id, "errors"):
        arn = row.get("gateway_arn")
        if arn:
            gateway_errors.setdefault(str(arn), row)
        else:
            unit_errors.setdefault((row.get("account_id"), row.get("region")), row)
    failed_gateways: dict[str, dict[str, Any]] = {}
    async for row in aiter_records(source, run_id, "gateways"):
        if row.get("status") == "error":
            failed_gateways[str(row["gateway_arn"])] = row
    async for row in aiter_records(source, run_id, "recovery_points"):
        record(_volume_finding(run_id, row))
    for arn in sorted(failed_gateways.keys() | gateway_errors.keys()):
        record(_gateway_finding(run_id, arn, failed_gateways.get(arn), gateway_errors.get(arn)))
    status = str(manifest.get("status"))
    if status not in ("complete", "partial") and (None, None) not in unit_errors:
        unit_errors[(None, None)] = {
            "operation": None,
            "error_code": f"Run{status.capitalize()}",
            "message": f"the run is {status}: accounts and regions it did not reach are not in "
            "its data",
        }
    for (unit_account, unit_region), row in sorted(unit_errors.items(), key=_unit_order):
        record(_unit_finding(run_id, unit_account, unit_region, row))
    result.stale.sort(key=lambda f: (-f.overdue_seconds, f.volume_arn or ""))
    return result


def _unit_order(item: tuple[tuple[str | None, str | None], Any]) -> tuple[str, str]:
    (account_id, region), _ = item
    return (account_id or "", region or "")


def _now() -> str:
    from .._records import format_time

    return format_time(dt.datetime.now(dt.UTC))


def _account(result: AuditResult, accounts: _Accounts, account_id: str | None) -> AccountSummary:
    summary = result.accounts.get(account_id)
    if summary is None:
        summary = AccountSummary(
            account_id, accounts.name(account_id), accounts.ou_path(account_id)
        )
        result.accounts[account_id] = summary
    return summary


def _count(result: AuditResult, accounts: _Accounts, finding: Finding) -> None:
    result.counts[finding.status] += 1
    summary = _account(result, accounts, finding.account_id)
    if summary.account_name is None:
        summary.account_name = finding.account_name
    summary.add(finding)
    result.regions.setdefault(finding.region, Counter())[finding.status] += 1
    result.rules[finding.rule].counts[finding.status] += 1
    if finding.status == "stale":
        result.stale.append(finding)
    elif finding.status == "unknown":
        result.unknown_by_kind[finding.kind] += 1
        result.unknown.append(finding)


def _volume_finding(run_id: str, row: Mapping[str, Any]) -> Finding:
    point = row.get("recovery_point_time")
    age = row.get("recovery_point_age_seconds")
    if age is None and point is not None:
        # Older data without the age: measure it at the record's own scan time.
        scanned, when = parse_time(row.get("scanned_at")), parse_time(point)
        if scanned is not None and when is not None:
            age = round((scanned - when).total_seconds(), 3)
    return Finding(
        run_id=run_id,
        account_id=row.get("account_id"),
        account_name=row.get("account_name"),
        region=row.get("region"),
        gateway_arn=row.get("gateway_arn"),
        volume_arn=row.get("volume_arn"),
        recovery_point_time=point,
        age_seconds=float(age) if age is not None else None,
        objective_seconds=0,
        rule=DEFAULT_RULE,
        status="compliant",  # decided against the objective in audit()
        gateway_name=row.get("gateway_name"),
    )


def _gateway_finding(
    run_id: str,
    arn: str,
    gateway: Mapping[str, Any] | None,
    error: Mapping[str, Any] | None,
) -> Finding:
    first = gateway or error or {}
    code = None
    if error is not None:
        code = error.get("gateway_error_code") or error.get("error_code")
    if code is None and gateway is not None:
        code = gateway.get("error_code")
    return Finding(
        run_id=run_id,
        account_id=first.get("account_id"),
        account_name=gateway.get("account_name") if gateway else None,
        region=first.get("region"),
        gateway_arn=arn,
        volume_arn=None,
        recovery_point_time=None,
        age_seconds=None,
        objective_seconds=0,
        rule=DEFAULT_RULE,
        status="unknown",
        kind="gateway",
        gateway_name=gateway.get("gateway_name") if gateway else None,
        operation=error.get("operation") if error else "ListVolumeRecoveryPoints",
        error_code=code,
        message=error.get("message") if error else None,
    )


def _unit_finding(
    run_id: str, account_id: str | None, region: str | None, error: Mapping[str, Any]
) -> Finding:
    return Finding(
        run_id=run_id,
        account_id=account_id,
        account_name=None,
        region=region,
        gateway_arn=None,
        volume_arn=None,
        recovery_point_time=None,
        age_seconds=None,
        objective_seconds=0,
        rule=DEFAULT_RULE,
        status="unknown",
        kind="unit" if account_id is not None else "run",
        operation=error.get("operation"),
        error_code=error.get("gateway_error_code") or error.get("error_code"),
        message=error.get("message"),
    )
