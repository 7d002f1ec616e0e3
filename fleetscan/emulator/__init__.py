"""An emulated AWS fleet: Storage Gateway over AWS JSON 1.1, plus moto for STS, Organizations,
EC2 and S3, seeded with the same organization. The scanner never imports this package."""

from ._counters import FAULT_KINDS, Counters
from ._faults import NO_FAULT, OPERATIONS, FaultRule, Faults, TokenBucket
from ._fleet import (
    DEFAULT_REGIONS,
    MANAGEMENT_ACCOUNT_ID,
    STORAGE_GATEWAY_REGIONS,
    Account,
    ExpectedGateway,
    ExpectedRecoveryPoint,
    Fleet,
    FleetSpec,
    Gateway,
    GroundTruth,
    OrganizationalUnit,
    Volume,
    access_key_for_account,
    account_id_from_access_key,
)
from ._server import EmulatorServer, EmulatorThread
from ._stack import DEFAULT_ROLE_NAME, Stack, start_stack
from ._tls import TLSMaterial
from ._verify import Verification, verify_run

__all__ = [
    "DEFAULT_REGIONS",
    "DEFAULT_ROLE_NAME",
    "FAULT_KINDS",
    "MANAGEMENT_ACCOUNT_ID",
    "NO_FAULT",
    "OPERATIONS",
    "STORAGE_GATEWAY_REGIONS",
    "Account",
    "Counters",
    "EmulatorServer",
    "EmulatorThread",
    "ExpectedGateway",
    "ExpectedRecoveryPoint",
    "FaultRule",
    "Faults",
    "Fleet",
    "FleetSpec",
    "Gateway",
    "GroundTruth",
    "OrganizationalUnit",
    "Stack",
    "TLSMaterial",
    "TokenBucket",
    "Verification",
    "Volume",
    "access_key_for_account",
    "account_id_from_access_key",
    "start_stack",
    "verify_run",
]
