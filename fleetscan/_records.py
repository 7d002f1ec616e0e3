"""Record schema v2: the three datasets a scan produces, and how API answers become records.

Records are slotted dataclasses: orjson serialises them natively (no dict per record), and the
field order here *is* the column order of the NDJSON files and the JSON Schemas in schemas/.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeGuard

#: 2 added ``organization_id`` to every record; readers take runs of schema 1 too (they lack it).
SCHEMA_VERSION = 2
#: The record schema versions readers accept.
SCHEMA_VERSIONS: Final[tuple[int, ...]] = (1, 2)

Dataset = Literal["recovery_points", "gateways", "errors"]
DATASETS: tuple[Dataset, ...] = ("recovery_points", "gateways", "errors")


#: ``VolumeSizeInBytes`` and ``VolumeUsageInBytes`` are longs in the API model; a larger number
#: is not a size, and would not fit the 64-bit integers of orjson, Athena or DuckDB either.
MAX_LONG = 2**63 - 1

#: The ARNs a record may carry: the JSON Schemas' patterns (tests keep the two identical), so an
#: answer's ARN is either written as sent or not written at all, never written garbled.
GATEWAY_ARN_PATTERN = (
    r"^arn:aws(-[a-z]+)*:storagegateway:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}"
    r":gateway/sgw-[0-9A-Za-z]{8,26}$"
)
VOLUME_ARN_PATTERN = GATEWAY_ARN_PATTERN[:-1] + "/volume/vol-[0-9A-Za-z]{8,26}$"
_GATEWAY_ARN = re.compile(GATEWAY_ARN_PATTERN, re.ASCII)
_VOLUME_ARN = re.compile(VOLUME_ARN_PATTERN, re.ASCII)
_ARN_LENGTH = range(50, 501)

#: The longest value a record's text column takes from a ListGateways item: the field's
#: documented maximum (botocore's Storage Gateway model; ``tests/test_schemas.py`` keeps these,
#: the model and the JSON Schemas' ``maxLength`` in step). A longer value is not data: the
#: column is null and an error record names the field. GatewayInfo's GatewayName is a plain
#: string in the model; 255 is the maximum of the name a gateway is given (ActivateGateway,
#: UpdateGatewayInformation). HostEnvironment is an enum (longest value 8 characters) without
#: a maximum: 64 leaves room for values AWS adds.
GATEWAY_TEXT_LIMITS: Final[Mapping[str, int]] = {
    "GatewayName": 255,
    "GatewayType": 20,
    "GatewayOperationalState": 25,
    "HostEnvironment": 64,
}
#: Organizations' AccountName maximum: the account_name column.
ACCOUNT_NAME_LIMIT: Final = 128


def format_time(value: dt.datetime) -> str:
    """UTC RFC 3339 with milliseconds and ``Z`` (the spelling Storage Gateway itself uses).

    Built field by field: ``strftime("%Y")`` does not pad years before 1000 on every platform.
    """
    v = value.astimezone(dt.UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}."
        f"{v.microsecond // 1000:03d}Z"
    )


def parse_time(value: object) -> dt.datetime | None:
    """Storage Gateway sends ``VolumeRecoveryPointTime`` as a string; be liberal in what we read.

    Anything that is not a readable ISO 8601 time, or names an instant outside what a datetime
    holds in UTC (``0001-01-01T00:00:00+14:00``), is None: an unreadable time is a missing one.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return None


def parse_bytes(value: object) -> int | None:
    """Sizes are longs in the model but the API page's own sample sends a JSON string.

    Only what is unambiguously a byte count is read: a whole number from 0 to :data:`MAX_LONG`,
    as a JSON number or a string of ASCII digits. Anything else ("abc", "-5", "1.5", "²",
    Arabic-Indic digits, a 5,000-digit string, 1e300) is None, never an exception.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():  # also NaN and the infinities
            return None
        number = int(value)
    elif isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdigit()):
            return None
        digits = digits.lstrip("0") or "0"
        if len(digits) > len(str(MAX_LONG)):  # int() refuses very long strings anyway
            return None
        number = int(digits)
    else:
        return None
    return number if 0 <= number <= MAX_LONG else None


def text_or_none(value: object) -> str | None:
    """A string field of an API answer as sent, or None when the answer put something else there.

    A record's string column must hold a string or null: a number or an object sent in its place
    is unreadable, so it is dropped rather than written in another type or as its repr.
    """
    return value if isinstance(value, str) else None


def overlong(field: str, value: object, limit: int) -> str | None:
    """What is wrong with ``value`` if it is a string longer than ``limit``, naming ``field``."""
    if isinstance(value, str) and len(value) > limit:
        return (
            f"{field} is {len(value):,} characters long, more than the {limit} AWS documents: "
            "recorded as null"
        )
    return None


def is_gateway_arn(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a gateway ARN as the record schemas accept it."""
    return (
        isinstance(value, str)
        and len(value) in _ARN_LENGTH
        and _GATEWAY_ARN.fullmatch(value) is not None
    )


def is_volume_arn(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a cached volume's ARN as the record schemas accept it."""
    return (
        isinstance(value, str)
        and len(value) in _ARN_LENGTH
        and _VOLUME_ARN.fullmatch(value) is not None
    )


@dataclass(slots=True)
class RecoveryPointRecord:
    schema_version: int
    run_id: str
    scanned_at: str
    partition: str
    account_id: str
    account_name: str | None
    region: str
    gateway_arn: str
    gateway_id: str
    gateway_name: str | None
    volume_arn: str
    volume_id: str
    recovery_point_time: str | None
    volume_size_bytes: int | None
    volume_usage_bytes: int | None
    recovery_point_age_seconds: float | None
    #: The ``o-…`` id of the account's organization; None for an account of a static list.
    organization_id: str | None = None

    dataset: ClassVar[Dataset] = "recovery_points"


@dataclass(slots=True)
class GatewayRecord:
    schema_version: int
    run_id: str
    scanned_at: str
    partition: str
    account_id: str
    account_name: str | None
    region: str
    gateway_arn: str
    gateway_id: str
    gateway_name: str | None
    gateway_type: str | None
    gateway_operational_state: str | None
    host_environment: str | None
    status: Literal["scanned", "not_cached", "error"]
    recovery_point_count: int | None
    error_code: str | None
    organization_id: str | None = None

    dataset: ClassVar[Dataset] = "gateways"


@dataclass(slots=True)
class ErrorRecord:
    schema_version: int
    run_id: str
    at: str
    account_id: str | None
    region: str | None
    gateway_arn: str | None
    operation: str
    error_code: str
    gateway_error_code: str | None
    message: str
    attempts: int
    retryable: bool
    #: The organization the failure concerns (a whole organization failing has no account).
    organization_id: str | None = None

    dataset: ClassVar[Dataset] = "errors"


Record = RecoveryPointRecord | GatewayRecord | ErrorRecord


def record_fields(record_type: type[Record]) -> tuple[str, ...]:
    """The serialised field names of a record type (``dataset`` is routing, not data)."""
    return tuple(f for f in record_type.__dataclass_fields__ if f != "dataset")


#: The JSON Schemas shipped in ``fleetscan/schemas/``: one per dataset, and the run manifest.
SCHEMA_NAMES: tuple[str, ...] = (*DATASETS, "manifest")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a dataset or of the manifest, as shipped in the package.

    Read from package data, so an installed fleetscan (wheel, zip) documents itself.
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no schema named {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    resource = importlib.resources.files("fleetscan") / "schemas" / f"{name}.schema.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema
