"""fleetscan: the recovery point of every AWS Storage Gateway cached volume, organization-wide.

Scan (configuration in, records out):
    ScanConfig       what to scan and how; validates itself, raises ConfigError naming the field
    scan(config)     every record as it is produced (an async generator)
    run_scan(config) a whole run to config.output (a directory, s3://bucket/prefix/ or "-"),
                     manifest last; returns a ScanResult
    plan_scan(config) the accounts and regions a scan would cover, without a Storage Gateway call
    finalize_run(dest, run_id) the manifest of a run scanned in shards (ScanConfig.shard), from
                     the shards that finished

Read a run back (local or S3, checked against its manifest; each has an ``a``-prefixed async
twin):
    list_runs(dest), latest_run(dest), read_manifest(dest, run), read_records(dest, dataset, run)

Audit:
    audit(source, Policy.single("24h")) judges every cached volume: compliant, stale or unknown.
    diff_runs(source, policy) what changed between two runs: stuck recovery points, newly stale.

Exceptions: FleetscanError and its subclasses ConfigError, DataError, DiscoveryError, SinkError.

The public names load on first use (PEP 562): ``fleetscan --help`` and a refused flag need
neither aiobotocore nor the audit's report writers, and a scan does not pay for the audit's
imports. ``from fleetscan import scan`` works as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._audit import AuditResult, Change, Policy, RunDiff, audit, diff_runs
    from ._config import OrganizationConfig, ScanConfig
    from ._exceptions import ConfigError, DataError, DiscoveryError, FleetscanError, SinkError
    from ._records import (
        SCHEMA_VERSION,
        ErrorRecord,
        GatewayRecord,
        Record,
        RecoveryPointRecord,
    )
    from ._run import ScanResult, finalize_run, plan_scan, run_scan
    from ._runs import (
        Run,
        alatest_run,
        alist_runs,
        aread_manifest,
        aread_records,
        latest_run,
        list_runs,
        read_manifest,
        read_records,
    )
    from ._scan import ScanStats, scan

#: Each public name, and the private module that defines it.
_HOMES = {
    "AuditResult": "._audit",
    "Policy": "._audit",
    "audit": "._audit",
    "Change": "._audit",
    "RunDiff": "._audit",
    "diff_runs": "._audit",
    "ScanConfig": "._config",
    "OrganizationConfig": "._config",
    "ConfigError": "._exceptions",
    "DataError": "._exceptions",
    "DiscoveryError": "._exceptions",
    "FleetscanError": "._exceptions",
    "SinkError": "._exceptions",
    "SCHEMA_VERSION": "._records",
    "ErrorRecord": "._records",
    "GatewayRecord": "._records",
    "Record": "._records",
    "RecoveryPointRecord": "._records",
    "ScanResult": "._run",
    "run_scan": "._run",
    "plan_scan": "._run",
    "finalize_run": "._run",
    "Run": "._runs",
    "alatest_run": "._runs",
    "alist_runs": "._runs",
    "aread_manifest": "._runs",
    "aread_records": "._runs",
    "latest_run": "._runs",
    "list_runs": "._runs",
    "read_manifest": "._runs",
    "read_records": "._runs",
    "ScanStats": "._scan",
    "scan": "._scan",
}

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "Change",
    "ConfigError",
    "DataError",
    "DiscoveryError",
    "ErrorRecord",
    "FleetscanError",
    "GatewayRecord",
    "OrganizationConfig",
    "Policy",
    "Record",
    "RecoveryPointRecord",
    "Run",
    "RunDiff",
    "ScanConfig",
    "ScanResult",
    "ScanStats",
    "SinkError",
    "__version__",
    "alatest_run",
    "alist_runs",
    "aread_manifest",
    "aread_records",
    "audit",
    "diff_runs",
    "finalize_run",
    "latest_run",
    "list_runs",
    "plan_scan",
    "read_manifest",
    "read_records",
    "run_scan",
    "scan",
]


if not TYPE_CHECKING:  # type checkers see the imports above, and flag a misspelt name

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'fleetscan' has no attribute {name!r}")
        value = getattr(importlib.import_module(home, __name__), name)
        globals()[name] = value  # looked up once
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
