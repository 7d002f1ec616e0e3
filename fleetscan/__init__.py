"""fleetscan: the recovery point of every AWS Storage Gateway cached volume, organization-wide."""

from ._audit import AuditResult, Policy, audit
from ._config import ScanConfig
from ._exceptions import ConfigError, DiscoveryError, FleetscanError, SinkError
from ._records import (
    SCHEMA_VERSION,
    ErrorRecord,
    GatewayRecord,
    Record,
    RecoveryPointRecord,
)
from ._run import ScanResult, run_scan
from ._scan import ScanStats, scan

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "ConfigError",
    "DiscoveryError",
    "ErrorRecord",
    "FleetscanError",
    "GatewayRecord",
    "Policy",
    "Record",
    "RecoveryPointRecord",
    "ScanConfig",
    "ScanResult",
    "ScanStats",
    "SinkError",
    "__version__",
    "audit",
    "run_scan",
    "scan",
]
