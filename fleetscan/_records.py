"""Record schema v1: the three datasets a scan produces, and how API answers become records.

Records are slotted dataclasses: orjson serialises them natively (no dict per record), and the
field order here *is* the column order of the NDJSON files and the JSON Schemas in schemas/.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

SCHEMA_VERSION = 1

Dataset = Literal["recovery_points", "gateways", "errors"]
DATASETS: tuple[Dataset, ...] = ("recovery_points", "gateways", "errors")


def format_time(value: dt.datetime) -> str:
    """UTC RFC 3339 with milliseconds and ``Z`` (the spelling Storage Gateway itself uses)."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(value: object) -> dt.datetime | None:
    """Storage Gateway sends ``VolumeRecoveryPointTime`` as a string; be liberal in what we read."""
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
    return parsed.astimezone(dt.UTC)


def parse_bytes(value: object) -> int | None:
    """Sizes are longs in the model but the API page's own sample sends a JSON string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


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

    dataset: ClassVar[Dataset] = "errors"


Record = RecoveryPointRecord | GatewayRecord | ErrorRecord


def record_fields(record_type: type[Record]) -> tuple[str, ...]:
    """The serialised field names of a record type (``dataset`` is routing, not data)."""
    return tuple(f for f in record_type.__dataclass_fields__ if f != "dataset")


def to_json_dict(record: Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record_fields(type(record))}


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
