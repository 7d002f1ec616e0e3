"""Prometheus metrics of a run and of an audit, for node_exporter's textfile collector.

A scheduled scan has no process to scrape: it ends. So ``--metrics-file`` writes the Prometheus
text format to a file that node_exporter's textfile collector (or anything reading that format)
picks up, under a temporary name renamed into place, never torn (:func:`fleetscan._localfs.
atomic_file`). Scan metrics are read from the run's manifest and audit metrics from the audit's
result, so each number is the one the run or the report states.

Labels are bounded whatever the fleet's size: operation (the scan's few API operations), dataset
(3), gateway type (5), status (3 or 4), change (8), organization (the run's ``[[organizations]]``
entries), and for the audit organization and OU
(each OU path that holds a scanned account, which AWS caps at 1,000 OUs per organization) —
never an account, a gateway or a volume.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._localfs import atomic_file, check_file_target
from ._records import DATASETS, parse_time

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._audit import AuditResult

#: Every status a run can end with; the status metric has one series per status (1 for the
#: run's own), so an alert need not know which it was before.
RUN_STATUSES = ("complete", "partial", "failed", "interrupted")
AUDIT_STATUSES = ("compliant", "stale", "unknown")
#: node_exporter runs as another user: the file must be readable by it.
FILE_MODE = 0o644


def check_metrics_file(path: Path) -> Path:
    """Refuse a ``--metrics-file`` that cannot be written, before anything runs (exit 2)."""
    return check_file_target(path, "--metrics-file")


def write_metrics(path: Path, families: Iterable[Metric]) -> None:
    """The families in the Prometheus text format, written to ``path`` complete or not at all."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collected:
        def __init__(self, metrics: list[Metric]) -> None:
            self.metrics = metrics

        def collect(self) -> Iterator[Metric]:
            yield from self.metrics

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected(list(families)))
    body = generate_latest(registry)
    with atomic_file(path, field="--metrics-file", mode=FILE_MODE) as handle:
        handle.write(body)


def _timestamp(value: object) -> float | None:
    when = parse_time(value)
    return None if when is None else when.timestamp()


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _counts(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _number(v) for k, v in value.items()}


def scan_metrics(manifest: Mapping[str, Any]) -> list[Metric]:
    """A run's metrics, from its manifest."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    summary = manifest.get("summary")
    summary = summary if isinstance(summary, dict) else {}
    status = str(manifest.get("status"))
    metrics: list[Metric] = []
    state = GaugeMetricFamily(
        "fleetscan_scan_status",
        "1 for the status the last run ended with, 0 for the others",
        labels=["status"],
    )
    for name in RUN_STATUSES:
        state.add_metric([name], 1.0 if name == status else 0.0)
    metrics.append(state)
    started, ended = _timestamp(manifest.get("started_at")), _timestamp(manifest.get("ended_at"))
    if started is not None and ended is not None:
        metrics.append(
            GaugeMetricFamily(
                "fleetscan_scan_end_timestamp_seconds",
                "when the last run ended (Unix time): alert when it is too old",
                value=ended,
            )
        )
        metrics.append(
            GaugeMetricFamily(
                "fleetscan_scan_duration_seconds",
                "how long the last run took, across every session of it when it was resumed",
                value=ended - started,
            )
        )
    units = GaugeMetricFamily(
        "fleetscan_scan_units", "(account, region) units of the last run", labels=["state"]
    )
    for name, key in (("planned", "units_planned"), ("done", "units_done")):
        units.add_metric([name], _number(summary.get(key)))
    units.add_metric(["failed"], _number(summary.get("units_failed")))
    metrics.append(units)
    accounts = GaugeMetricFamily(
        "fleetscan_scan_accounts", "accounts of the last run", labels=["state"]
    )
    accounts.add_metric(["listed"], _number(summary.get("accounts")))
    accounts.add_metric(["failed"], _number(summary.get("accounts_failed")))
    metrics.append(accounts)
    for name, key, doc in (
        ("fleetscan_scan_api_calls", "api_calls", "AWS calls the last run made"),
        ("fleetscan_scan_retries", "retries_by_operation", "calls the last run made again"),
        ("fleetscan_scan_throttles", "throttles_by_operation", "throttled answers in the last run"),
    ):
        family = CounterMetricFamily(name, doc, labels=["operation"])
        for operation, count in sorted(_counts(summary.get(key)).items()):
            family.add_metric([operation], count)
        metrics.append(family)
    records = CounterMetricFamily(
        "fleetscan_scan_records", "records the last run wrote", labels=["dataset"]
    )
    written = _counts(manifest.get("records"))
    for dataset in DATASETS:
        records.add_metric([dataset], written.get(dataset, 0.0))
    metrics.append(records)
    gateways = GaugeMetricFamily(
        "fleetscan_scan_gateways", "gateways the last run listed", labels=["type"]
    )
    for gateway_type, count in sorted(_counts(summary.get("gateways_by_type")).items()):
        gateways.add_metric([gateway_type], count)
    metrics.append(gateways)
    metrics.extend(_organization_metrics(manifest))
    return metrics


def _organization_metrics(manifest: Mapping[str, Any]) -> list[Metric]:
    """Per organization of a run of several (the manifest's ``organizations`` section): its
    status, units and records, labelled by its ``[[organizations]]`` name (else its id)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    section = manifest.get("organizations")
    entries = [e for e in section if isinstance(e, dict)] if isinstance(section, list) else []
    if not entries:
        return []
    listed = GaugeMetricFamily(
        "fleetscan_scan_organization_listed",
        "1 when the organization's accounts could be listed, 0 when it failed (an error record "
        "names it)",
        labels=["organization"],
    )
    units = GaugeMetricFamily(
        "fleetscan_scan_organization_units",
        "(account, region) units of the organization in the last run",
        labels=["organization", "state"],
    )
    records = CounterMetricFamily(
        "fleetscan_scan_organization_records",
        "records the last run wrote for the organization's accounts (absent after a resume)",
        labels=["organization", "dataset"],
    )
    for entry in entries:
        name = str(entry.get("name") or entry.get("id") or "")
        listed.add_metric([name], 1.0 if entry.get("status") == "listed" else 0.0)
        for state in ("planned", "done", "failed"):
            units.add_metric([name, state], _number(entry.get(f"units_{state}")))
        written = entry.get("records")
        if isinstance(written, dict):
            for dataset in DATASETS:
                records.add_metric([name, dataset], _number(written.get(dataset)))
    return [listed, units, records]


def audit_metrics(result: AuditResult) -> list[Metric]:
    """An audit's metrics: findings by organization, OU and status, the oldest recovery point."""
    from prometheus_client.core import GaugeMetricFamily

    placement = _placement(result.manifest)
    findings: Counter[tuple[str, str, str]] = Counter()
    oldest: dict[tuple[str, str], float] = {}
    for summary in result.accounts.values():
        where = placement.get(summary.account_id or "", ("", summary.ou_path or ""))
        for status in AUDIT_STATUSES:
            findings[(*where, status)] += summary.counts[status]
        if summary.worst_age is not None:
            oldest[where] = max(oldest.get(where, 0.0), summary.worst_age)
    counted = GaugeMetricFamily(
        "fleetscan_audit_findings",
        "findings of the last audit: volumes by verdict, plus unknown gateways and units",
        labels=["organization", "ou", "status"],
    )
    for (organization, ou, status), count in sorted(findings.items()):
        counted.add_metric([organization, ou, status], float(count))
    age = GaugeMetricFamily(
        "fleetscan_audit_oldest_recovery_point_age_seconds",
        "the oldest recovery point of the last audit, at the time it was scanned",
        labels=["organization", "ou"],
    )
    for (organization, ou), seconds in sorted(oldest.items()):
        age.add_metric([organization, ou], seconds)
    metrics: list[Metric] = [counted, age]
    scanned = _timestamp(result.manifest.get("ended_at"))
    if scanned is not None:
        metrics.append(
            GaugeMetricFamily(
                "fleetscan_audit_scan_end_timestamp_seconds",
                "when the audited run ended (Unix time): how old the evidence is",
                value=scanned,
            )
        )
    if result.changes is not None:
        from ._audit import CHANGE_KINDS

        changes = GaugeMetricFamily(
            "fleetscan_audit_changes",
            "changes since the previous finished run, by kind (stuck: did not advance)",
            labels=["change"],
        )
        for kind in CHANGE_KINDS:
            changes.add_metric([kind], float(result.changes.counts[kind]))
        metrics.append(changes)
    return metrics


def _placement(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Each scanned account's (organization id, OU path), as the manifest recorded them."""
    summary = manifest.get("summary")
    listed = summary.get("accounts_scanned") if isinstance(summary, dict) else None
    placed: dict[str, tuple[str, str]] = {}
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            organization, ou = entry.get("organization_id"), entry.get("ou_path")
            placed[entry["id"]] = (
                organization if isinstance(organization, str) else "",
                ou if isinstance(ou, str) else "",
            )
    return placed
