"""An emulated AWS fleet: Storage Gateway over AWS JSON 1.1, plus moto for STS, Organizations,
EC2 and S3, seeded with the same organization. The scanner never imports this package."""

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

__all__ = [
    "DEFAULT_REGIONS",
    "MANAGEMENT_ACCOUNT_ID",
    "STORAGE_GATEWAY_REGIONS",
    "Account",
    "ExpectedGateway",
    "ExpectedRecoveryPoint",
    "Fleet",
    "FleetSpec",
    "Gateway",
    "GroundTruth",
    "OrganizationalUnit",
    "Volume",
    "access_key_for_account",
    "account_id_from_access_key",
]
