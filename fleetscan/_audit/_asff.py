"""Audit findings in the AWS Security Finding Format (ASFF): for ``--asff FILE`` and Security Hub.

One ASFF finding per audit finding that belongs to an account and a region (a volume, an unknown
gateway, an unknown (account, region) unit): Security Hub keeps findings per account and region,
so an account-wide unknown (its role could not be assumed) and a run-wide one stay in the reports.

The ``Id`` is made from the resource alone, never from the run or the rule, so auditing again
updates each finding instead of adding one; the ``GeneratorId`` names the policy rule that
applied, under :data:`GENERATOR_PREFIX`, which is how an import finds fleetscan's own findings
to archive. The product is the account's own default product
(``arn:PARTITION:securityhub:REGION:ACCOUNT:product/ACCOUNT/default``), which Security Hub
accepts only from that account: findings are imported from inside each member account.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .._exceptions import ConfigError
from .._records import format_time, parse_time
from ._evaluate import AuditResult, Finding
from ._policy import format_duration

SCHEMA_VERSION = "2018-10-08"
#: Every fleetscan finding's GeneratorId starts so; the rule's name follows.
GENERATOR_PREFIX = "fleetscan/recovery-point-objective/"
#: Every fleetscan finding's Id starts so; the resource follows.
ID_PREFIX = "fleetscan/rpo/"
TYPES = ("Software and Configuration Checks/AWS Security Best Practices/Recovery Point Objective",)
COMPLIANCE = {"compliant": "PASSED", "stale": "FAILED", "unknown": "NOT_AVAILABLE"}
#: Stale volumes by how many times their objective their recovery point's age is (at most).
SEVERITY_STEPS = ((2.0, "LOW"), (4.0, "MEDIUM"), (10.0, "HIGH"))
#: What could not be checked: not proven at risk, never proven safe.
UNKNOWN_SEVERITY = "MEDIUM"
#: ProductFields entries carry strings only (Security Hub: at most 50 keys).
_FIELD_PREFIX = "fleetscan/"


def product_arn(partition: str, region: str, account_id: str) -> str:
    return f"arn:{partition}:securityhub:{region}:{account_id}:product/{account_id}/default"


def severity(finding: Finding) -> tuple[str, str]:
    """(label, original): from how far past its objective a volume is."""
    if finding.status == "compliant":
        return "INFORMATIONAL", "compliant"
    if finding.status == "unknown":
        return UNKNOWN_SEVERITY, "unknown"
    if finding.age_seconds is None or math.isinf(finding.overdue_seconds):
        return "CRITICAL", "no recovery point"
    ratio = finding.age_seconds / max(finding.objective_seconds, 1)
    label = next((name for limit, name in SEVERITY_STEPS if ratio <= limit), "CRITICAL")
    return label, f"{ratio:.2f}x objective"


@dataclass(frozen=True)
class AsffContext:
    """What every finding of one audit shares."""

    audited_at: str
    run_id: str
    #: When the run ended: its evidence was observed then at the latest.
    observed_at: str
    partition: str
    version: str

    @classmethod
    def of(cls, result: AuditResult) -> AsffContext:
        from .. import __version__

        manifest = result.manifest
        summary = manifest.get("summary")
        config = summary.get("config") if isinstance(summary, dict) else None
        partition = config.get("partition") if isinstance(config, dict) else None
        observed = parse_time(manifest.get("ended_at")) or parse_time(manifest.get("started_at"))
        return cls(
            audited_at=result.audited_at,
            run_id=result.run_id,
            observed_at=format_time(observed or dt.datetime.now(dt.UTC)),
            partition=partition if isinstance(partition, str) else "aws",
            version=__version__,
        )


def _resource(kind: str, resource_id: str, partition: str, region: str) -> dict[str, Any]:
    return {"Type": kind, "Id": resource_id, "Partition": partition, "Region": region}


def _describe(finding: Finding) -> tuple[str, str]:
    objective = format_duration(finding.objective_seconds)
    rule = f"objective {objective} (rule {finding.rule})"
    if finding.kind == "volume" and finding.status != "unknown":
        age = (
            "has no recovery point"
            if finding.age_seconds is None
            else f"has a recovery point aged {format_duration(finding.age_seconds)} "
            f"({finding.recovery_point_time})"
        )
        title = {
            "compliant": "Storage Gateway volume recovery point within its objective",
            "stale": "Storage Gateway volume recovery point older than its objective",
        }[finding.status]
        return title, f"Volume {finding.volume_arn} {age}; {rule}."
    what = {
        "volume": f"volume {finding.volume_arn}",
        "gateway": f"the volumes of gateway {finding.gateway_arn}",
        "unit": f"the gateways of account {finding.account_id} in {finding.region}",
    }.get(finding.kind, "the fleet")
    why = f"{finding.operation or '-'} {finding.error_code or '-'}"
    if finding.message:
        why += f": {finding.message}"
    return (
        "Storage Gateway volume recovery points could not be checked",
        f"fleetscan could not check {what} ({why}); never counted compliant. {rule}.",
    )


def to_asff(finding: Finding, context: AsffContext) -> dict[str, Any] | None:
    """The ASFF form of ``finding``; None when it has no account and region to live in."""
    account, region = finding.account_id, finding.region
    if account is None or region is None:
        return None
    partition = context.partition
    if finding.kind == "volume" and finding.volume_arn:
        key = finding.volume_arn
        resources = [_resource("Other", finding.volume_arn, partition, region)]
        if finding.gateway_arn:
            resources.append(_resource("Other", finding.gateway_arn, partition, region))
    elif finding.kind == "gateway" and finding.gateway_arn:
        key = finding.gateway_arn
        resources = [_resource("Other", finding.gateway_arn, partition, region)]
    else:
        key = f"{account}/{region}"
        resources = [_resource("AwsAccount", f"AWS::::Account:{account}", partition, region)]
    label, original = severity(finding)
    title, description = _describe(finding)
    fields = {
        "ProviderName": "fleetscan",
        "ProviderVersion": context.version,
        "run_id": context.run_id,
        "status": finding.status,
        "rule": finding.rule,
        "objective_seconds": str(finding.objective_seconds),
        "age_seconds": None if finding.age_seconds is None else f"{finding.age_seconds:.0f}",
        "recovery_point_time": finding.recovery_point_time,
        "gateway_arn": finding.gateway_arn,
        "error_code": finding.error_code,
    }
    product_fields = {
        (name if name.startswith("Provider") else _FIELD_PREFIX + name): value
        for name, value in fields.items()
        if value is not None
    }
    return {
        "SchemaVersion": SCHEMA_VERSION,
        "Id": ID_PREFIX + key,
        "ProductArn": product_arn(partition, region, account),
        "ProductName": "fleetscan",
        "CompanyName": "fleetscan",
        "Region": region,
        "GeneratorId": GENERATOR_PREFIX + finding.rule,
        "AwsAccountId": account,
        "Types": list(TYPES),
        "CreatedAt": context.audited_at,
        "UpdatedAt": context.audited_at,
        "LastObservedAt": context.observed_at,
        "Severity": {"Label": label, "Original": original},
        "Title": title[:256],
        "Description": description[:1024],
        "ProductFields": product_fields,
        "Resources": resources,
        "Compliance": {"Status": COMPLIANCE[finding.status]},
        "RecordState": "ACTIVE",
        "FindingProviderFields": {
            "Severity": {"Label": label, "Original": original},
            "Types": list(TYPES),
        },
    }


def asff_findings(result: AuditResult, findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """Every finding that has an account and a region, in ASFF."""
    context = AsffContext.of(result)
    converted = (to_asff(finding, context) for finding in findings)
    return [item for item in converted if item is not None]


def check_asff_path(path: str | Path) -> Path:
    """``--asff FILE``: its directory must exist and be writable (checked before any reading)."""
    import os

    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError("--asff", f"{parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise ConfigError("--asff", f"{parent} is not writable")
    if target.is_dir():
        raise ConfigError("--asff", f"{target} is a directory; give a file name")
    return target


def write_asff(path: Path, findings: list[dict[str, Any]]) -> None:
    """A JSON array of findings (what BatchImportFindings takes, and `aws securityhub
    batch-import-findings --findings file://...`), replaced atomically."""
    from ._reports import _atomic

    with _atomic(path.parent, path.name, field="--asff") as handle:
        handle.write(b"[\n")
        for index, item in enumerate(findings):
            handle.write((b",\n" if index else b"") + orjson.dumps(item))
        handle.write(b"\n]\n")


def is_fleetscan_finding(item: Mapping[str, Any]) -> bool:
    return str(item.get("Id", "")).startswith(ID_PREFIX) and str(
        item.get("GeneratorId", "")
    ).startswith(GENERATOR_PREFIX)
