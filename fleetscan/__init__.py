"""fleetscan: the recovery point of every AWS Storage Gateway cached volume, organization-wide.

The public names load on first use (PEP 562): ``fleetscan --help`` and a refused flag need
neither aiobotocore nor the audit's report writers, and a scan does not pay for the audit's
imports. ``from fleetscan import scan`` works as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
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

#: Each public name, and the private module that defines it.
_HOMES = {
    "AuditResult": "._audit",
    "Policy": "._audit",
    "audit": "._audit",
    "ScanConfig": "._config",
    "ConfigError": "._exceptions",
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
    "ScanStats": "._scan",
    "scan": "._scan",
}

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
