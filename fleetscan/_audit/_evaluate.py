"""Judging one run against a policy: every cached volume compliant, stale or unknown.

The audit reads only what the run wrote, through its manifest (a local directory or S3), so it
needs no AWS access to the scanned accounts and re-auditing old data gives the same answer: a
volume's age is taken at its record's ``scanned_at``, never at the time of the audit.

What cannot be judged is never counted compliant. A gateway the scan could not read (status
``error``: offline, access denied, retries exhausted) is one ``unknown`` finding, since its volumes
are not known; so is an (account, region) unit that failed as a whole (AssumeRole, DescribeRegions,
ListGateways), and a run that failed or was interrupted before reaching every unit.

The verdict is about the newest evidence: by default the run that started last under the source,
whatever its status (a partial run's gaps are unknowns; a failed or interrupted run is judged and
says so, never skipped for an older complete one), and evidence older than ``max_scan_age``
judges nothing (every finding ``unknown``, "evidence too old"). Newer runs that were not judged
(``run_id`` named an older one, or ``require_complete``) are listed in the result, with why.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._exceptions import ConfigError, DataError
from .._records import format_time, parse_time
from .._sinks._read import aiter_records, alist_runs, aread_manifest
from ._policy import DEFAULT_RULE, Policy, format_duration

if TYPE_CHECKING:
    from ._diff import RunDiff

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
#: Evidence older than this (audit time - the run's start) judges nothing, unless told otherwise.
DEFAULT_MAX_SCAN_AGE = 48 * 3600
#: What ``run_id=`` takes besides a run id: the run that started last (the default).
LATEST = "latest"
#: The error code of a finding whose run is older than ``max_scan_age``.
TOO_OLD = "EvidenceTooOld"
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


@dataclass(frozen=True)
class NewerRun:
    """A run that started after the judged one and was not used: the reports say so, and why."""

    run_id: str
    status: str
    started_at: str
    reason: str


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
    #: Seconds from the run's start to the audit: how old the evidence is.
    scan_age_seconds: float | None = None
    #: The freshness limit applied (None: none).
    max_scan_age_seconds: int | None = DEFAULT_MAX_SCAN_AGE
    newer_runs: list[NewerRun] = field(default_factory=list)

    @property
    def too_old(self) -> bool:
        """The run is older than ``max_scan_age``: every finding is unknown."""
        limit, age = self.max_scan_age_seconds, self.scan_age_seconds
        return limit is not None and (age is None or age > limit)

    #: What changed since the previous finished run, when the reports were asked for and there
    #: is one (see :func:`fleetscan.diff_runs`).
    changes: RunDiff | None = None

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


def _listed(runs: list[dict[str, Any]]) -> str:
    statuses = Counter(str(r.get("status")) for r in runs)
    return ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))


async def resolve_run(
    source: str,
    run_id: str | None,
    *,
    require_complete: bool = False,
    expected_bucket_owner: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The run to judge (``run_id``, or the newest: of any status, or complete with
    ``require_complete``; ConfigError when there is none), and every run with a manifest."""
    runs = await alist_runs(source, expected_bucket_owner=expected_bucket_owner)
    if run_id is not None and run_id != LATEST:
        return run_id, runs
    candidates = [r for r in runs if r["status"] == "complete"] if require_complete else runs
    if candidates:
        return str(candidates[-1]["run_id"]), runs
    if runs:
        raise ConfigError(
            "--require-complete",
            f"no complete run under {source} ({_listed(runs)}): drop --require-complete to judge "
            "the newest run, or name one with --run RUN_ID",
        )
    raise ConfigError("--input", f"no fleetscan run under {source} (no manifest found)")


def _newer_runs(
    runs: list[dict[str, Any]], judged: dict[str, Any], run_id: str, require_complete: bool
) -> list[NewerRun]:
    """The runs that started after the judged one, each with why it was not used."""
    key = (str(judged.get("started_at")), run_id)
    newer = []
    for run in runs:
        if (run["started_at"], run["run_id"]) <= key:
            continue
        if require_complete and run["status"] != "complete":
            reason = f"{run['status']}, and --require-complete judges complete runs only"
        else:
            reason = "not asked for: --run named an older run"
        newer.append(NewerRun(run["run_id"], run["status"], run["started_at"], reason))
    return newer


def _scan_age(manifest: Mapping[str, Any], audited: dt.datetime) -> float | None:
    """How old the run's evidence is: from its start, so no record in it is older."""
    started = parse_time(manifest.get("started_at"))
    return None if started is None else round((audited - started).total_seconds(), 3)


async def audit(
    source: str,
    policy: Policy,
    *,
    run_id: str | None = None,
    require_complete: bool = False,
    max_scan_age: int | None = DEFAULT_MAX_SCAN_AGE,
    on_finding: Callable[[Finding], None] | None = None,
    expected_bucket_owner: str | None = None,
) -> AuditResult:
    """Judge a run against ``policy``: ``run_id`` (a run id, or ``"latest"``: the default), the
    newest run under ``source`` whatever its status, or the newest complete one with
    ``require_complete``. A run older than ``max_scan_age`` seconds (None: no limit) makes every
    finding unknown, "evidence too old".

    Findings go to ``on_finding`` as they are made (volumes in the order the run wrote them, then
    unknown gateways, then unknown units), so memory holds only the summary, stale and unknown
    findings. Raises ConfigError for an unknown run, DataError naming the file and line for a
    damaged manifest or record file.

    With ``expected_bucket_owner`` (an S3 ``source`` only), every request says which account
    must own the bucket: a verdict is never read from a bucket that was deleted and re-created
    by someone else. S3 refuses the reads otherwise (:class:`FleetscanError`).
    """
    owner = expected_bucket_owner
    run_id, runs = await resolve_run(
        source, run_id, require_complete=require_complete, expected_bucket_owner=owner
    )
    try:
        manifest = await aread_manifest(source, run_id, expected_bucket_owner=owner)
    except FileNotFoundError:
        raise ConfigError("--run", f"no run {run_id!r} under {source}") from None
    except DataError:
        raise  # a damaged manifest: the data is bad, not the run id
    except ValueError as exc:  # not a run id
        raise ConfigError("--run", str(exc)) from None
    status = str(manifest.get("status"))
    if require_complete and status != "complete":
        raise ConfigError("--require-complete", f"run {run_id} is {status}, not complete")
    summary = manifest.get("summary")
    accounts = _Accounts(summary if isinstance(summary, dict) else {})
    audited = dt.datetime.now(dt.UTC)
    result = AuditResult(
        source=source,
        run_id=run_id,
        manifest=manifest,
        policy=policy,
        audited_at=format_time(audited),
        scan_age_seconds=_scan_age(manifest, audited),
        max_scan_age_seconds=max_scan_age,
        newer_runs=_newer_runs(runs, manifest, run_id, require_complete),
    )
    too_old = result.too_old
    if too_old:
        result.warnings.append(
            f"evidence too old: run {run_id} started {manifest.get('started_at')}, "
            f"{format_duration(result.scan_age_seconds)} before this audit, more than the "
            f"{format_duration(max_scan_age)} allowed (--max-scan-age): every finding is unknown"
        )
    if status not in ("complete", "partial"):
        result.warnings.append(
            f"run {run_id} is {status}: what it did not reach is unknown; finish it with "
            "fleetscan scan --resume, or scan again"
        )
    for newer in result.newer_runs:
        result.warnings.append(
            f"newer run {newer.run_id} ({newer.status}, started {newer.started_at}) was not "
            f"judged: {newer.reason}"
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
        if too_old and finding.status != "unknown":
            finding.status = "unknown"
            finding.error_code = TOO_OLD
            finding.message = "evidence too old (--max-scan-age)"
        elif finding.status != "unknown":
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
    # Each reader is closed here, whatever stops the loop: a reader left to the garbage
    # collector finalises after the event loop ends, and its file's worker thread never does.
    async with aclosing(
        aiter_records(source, run_id, "errors", expected_bucket_owner=owner)
    ) as rows:
        async for row in rows:
            arn = row.get("gateway_arn")
            if arn:
                gateway_errors.setdefault(str(arn), row)
            else:
                unit_errors.setdefault((row.get("account_id"), row.get("region")), row)
    failed_gateways: dict[str, dict[str, Any]] = {}
    async with aclosing(
        aiter_records(source, run_id, "gateways", expected_bucket_owner=owner)
    ) as rows:
        async for row in rows:
            if row.get("status") == "error":
                failed_gateways[str(row["gateway_arn"])] = row
    async with aclosing(
        aiter_records(source, run_id, "recovery_points", expected_bucket_owner=owner)
    ) as rows:
        async for row in rows:
            record(_volume_finding(run_id, row))
    for arn in sorted(failed_gateways.keys() | gateway_errors.keys()):
        record(_gateway_finding(run_id, arn, failed_gateways.get(arn), gateway_errors.get(arn)))
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
