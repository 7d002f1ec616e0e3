"""An emulated AWS estate: one or more organizations whose member accounts hold Storage Gateways.

The emulator answers Storage Gateway (AWS JSON 1.1), STS, Organizations and EC2
``DescribeRegions`` from a seeded :class:`Fleet`; moto serves S3 beside it (and, in the stack's
``identity="moto"`` mode, STS and Organizations too). The scanner never imports this package.
"""

from ._counters import FAULT_KINDS, Counters
from ._faults import NO_FAULT, OPERATIONS, SERVICES, FaultRule, Faults, TokenBucket
from ._fleet import (
    DEFAULT_REGIONS,
    MANAGEMENT_ACCOUNT_ID,
    NON_OPT_IN_REGIONS,
    OPT_IN_REGIONS,
    STORAGE_GATEWAY_REGIONS,
    Account,
    ExpectedGateway,
    ExpectedRecoveryPoint,
    Fleet,
    FleetSpec,
    Gateway,
    GroundTruth,
    Organization,
    OrganizationalUnit,
    Volume,
    access_key_for_account,
    account_id_from_access_key,
)
from ._identity import DEFAULT_ROLE_NAME, MANAGEMENT_ROLE_NAME, OrganizationAccess, Roles
from ._server import EmulatorServer, EmulatorThread
from ._stack import IDENTITY_MODES, Stack, StackOrganization, start_stack
from ._tls import TLSMaterial
from ._verify import Verification, verify_run

__all__ = [
    "DEFAULT_REGIONS",
    "DEFAULT_ROLE_NAME",
    "FAULT_KINDS",
    "IDENTITY_MODES",
    "MANAGEMENT_ACCOUNT_ID",
    "MANAGEMENT_ROLE_NAME",
    "NON_OPT_IN_REGIONS",
    "NO_FAULT",
    "OPERATIONS",
    "OPT_IN_REGIONS",
    "SERVICES",
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
    "Organization",
    "OrganizationAccess",
    "OrganizationalUnit",
    "Roles",
    "Stack",
    "StackOrganization",
    "TLSMaterial",
    "TokenBucket",
    "Verification",
    "Volume",
    "access_key_for_account",
    "account_id_from_access_key",
    "start_stack",
    "verify_run",
]
