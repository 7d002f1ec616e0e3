"""The JSON Schemas shipped in the package describe exactly what fleetscan writes.

The schemas are checked against the record dataclasses (same fields, same order), against
records built from the emulated fleet and manifests written by real sinks (they validate), and
against broken values (they are refused), so neither side can drift from the other.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from fleet_records import RUN, fleet_records
from jsonschema import Draft202012Validator

from fleetscan._aws import botocore_session
from fleetscan._records import (
    ACCOUNT_NAME_LIMIT,
    DATASETS,
    GATEWAY_TEXT_LIMITS,
    SCHEMA_NAMES,
    ErrorRecord,
    GatewayRecord,
    Record,
    RecoveryPointRecord,
    load_schema,
    record_fields,
)
from fleetscan._retry import MAX_CODE_CHARS, MAX_MESSAGE_CHARS
from fleetscan._sinks import find_manifest, open_sink, read_manifest

RECORD_TYPES: dict[str, type[Record]] = {
    "recovery_points": RecoveryPointRecord,
    "gateways": GatewayRecord,
    "errors": ErrorRecord,
}
RECORDS = fleet_records()


def validator(name: str) -> Draft202012Validator:
    """A validator that also asserts ``format`` (date-time), which 2020-12 only annotates."""
    return Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def problems(name: str, instance: Any) -> list[str]:
    return [error.message for error in validator(name).iter_errors(instance)]


def stored(record: Record) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(orjson.dumps(record))
    return result


def test_the_package_ships_one_schema_per_dataset_and_the_manifest() -> None:
    shipped = importlib.resources.files("fleetscan") / "schemas"
    names = sorted(entry.name for entry in shipped.iterdir() if entry.name.endswith(".json"))
    assert names == sorted(f"{name}.schema.json" for name in SCHEMA_NAMES)
    with pytest.raises(ValueError, match="no schema named 'volumes'"):
        load_schema("volumes")


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_each_schema_is_valid_draft_2020_12_and_documents_every_field(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["title"]
    assert schema["description"]
    assert schema["additionalProperties"] is False
    # Every field is required, but those a later version added: old runs lack them.
    assert schema["required"] == [k for k in schema["properties"] if k not in ADDED_LATER]
    undocumented = [key for key, value in schema["properties"].items() if not value["description"]]
    assert undocumented == []


#: Fields added by record schema 2 (required of schema-2 records) and manifest version 2.
ADDED_LATER = ("organization_id", "organizations")


@pytest.mark.parametrize("dataset", DATASETS)
def test_schema_1_records_validate_and_schema_2_records_need_their_organization(
    dataset: str,
) -> None:
    """Old runs stay readable: a record of schema 1 has no organization_id; one of schema 2 must
    have it (null for a static account list)."""
    record = stored(next(r for r in RECORDS if r.dataset == dataset))
    assert record["schema_version"] == 2
    old = {k: v for k, v in record.items() if k != "organization_id"} | {"schema_version": 1}
    assert problems(dataset, old) == []
    assert problems(dataset, {k: v for k, v in record.items() if k != "organization_id"}) != []
    assert problems(dataset, {**record, "organization_id": None}) == []
    assert problems(dataset, {**record, "organization_id": "o-exampleorgid"}) == []
    assert problems(dataset, {**record, "organization_id": "org-1"}) != []


@pytest.mark.parametrize("dataset", DATASETS)
def test_schema_fields_are_the_record_fields_in_column_order(dataset: str) -> None:
    record_type = RECORD_TYPES[dataset]
    assert record_type.dataset == dataset
    assert tuple(load_schema(dataset)["properties"]) == record_fields(record_type)


@pytest.mark.parametrize("dataset", DATASETS)
def test_records_from_the_emulated_fleet_validate(dataset: str) -> None:
    records = [record for record in RECORDS if record.dataset == dataset]
    assert records
    check = validator(dataset)
    for record in records:
        errors = [error.message for error in check.iter_errors(stored(record))]
        assert errors == [], record


def test_the_fleet_records_cover_the_nullable_and_odd_cases() -> None:
    """So the validation above has seen nulls, every status and retryable errors."""
    points = [r for r in RECORDS if isinstance(r, RecoveryPointRecord)]
    gateways = [r for r in RECORDS if isinstance(r, GatewayRecord)]
    errors = [r for r in RECORDS if isinstance(r, ErrorRecord)]
    assert any(r.volume_usage_bytes is None for r in points)
    assert {r.status for r in gateways} == {"scanned", "not_cached", "error"}
    assert any(r.recovery_point_count == 0 for r in gateways)
    assert {r.retryable for r in errors} == {True, False}
    assert any(r.region is None and r.gateway_arn is None for r in errors)


POINT = next(r for r in RECORDS if isinstance(r, RecoveryPointRecord))
SCANNED = next(r for r in RECORDS if isinstance(r, GatewayRecord) and r.status == "scanned")
NOT_CACHED = next(r for r in RECORDS if isinstance(r, GatewayRecord) and r.status == "not_cached")
ERROR = next(r for r in RECORDS if isinstance(r, ErrorRecord))


@pytest.mark.parametrize(
    ("record", "changes"),
    [
        (POINT, {"account_id": "11112222333"}),  # 11 digits
        (POINT, {"account_id": "1111-2222-3333"}),
        (POINT, {"region": "US-EAST-1"}),
        (POINT, {"scanned_at": "2026-11-27T22:00:00.000+01:00"}),  # not UTC
        (POINT, {"scanned_at": "2026-11-27 22:00:00"}),
        (POINT, {"recovery_point_time": "2026-13-45T25:61:00.000Z"}),  # the shape, not a time
        (POINT, {"gateway_arn": "arn:aws:s3:::bucket/gateway/sgw-12A3456B"}),
        (POINT, {"volume_arn": SCANNED.gateway_arn}),  # a gateway ARN is not a volume ARN
        (POINT, {"volume_id": "12A3456B"}),
        (POINT, {"volume_size_bytes": "1073741824"}),  # sizes are numbers, not strings
        (POINT, {"volume_usage_bytes": -1}),
        (POINT, {"schema_version": 3}),
        (POINT, {"run_id": "../elsewhere"}),
        (POINT, {"partition": "azure"}),
        (SCANNED, {"status": "ok"}),
        (SCANNED, {"recovery_point_count": None}),  # scanned gateways have a count
        (SCANNED, {"error_code": "InternalServerError"}),
        (NOT_CACHED, {"recovery_point_count": 0}),  # no call was spent on it
        (NOT_CACHED, {"status": "error"}),  # an error names its code
        (ERROR, {"attempts": 0}),
        (ERROR, {"retryable": "false"}),
        (ERROR, {"operation": ""}),
        (ERROR, {"gateway_arn": "sgw-12A3456B"}),
        (POINT, {"gateway_name": "g" * 256}),
        (POINT, {"account_name": "a" * 129}),
        (SCANNED, {"gateway_name": "g" * 256}),
        (SCANNED, {"gateway_type": "CACHED" * 4}),
        (SCANNED, {"gateway_operational_state": "A" * 26}),
        (SCANNED, {"host_environment": "H" * 65}),
        (ERROR, {"message": "m" * 501}),
        (ERROR, {"error_code": "E" * 201}),
    ],
)
def test_broken_values_are_refused(record: Record, changes: dict[str, Any]) -> None:
    assert problems(record.dataset, stored(record)) == []
    broken = stored(dataclasses.replace(record, **changes))
    assert problems(record.dataset, broken) != []


#: Each text column copied from an API answer: (dataset, column) -> its limit in fleetscan.
TEXT_COLUMNS = {
    ("gateways", "gateway_name"): GATEWAY_TEXT_LIMITS["GatewayName"],
    ("gateways", "gateway_type"): GATEWAY_TEXT_LIMITS["GatewayType"],
    ("gateways", "gateway_operational_state"): GATEWAY_TEXT_LIMITS["GatewayOperationalState"],
    ("gateways", "host_environment"): GATEWAY_TEXT_LIMITS["HostEnvironment"],
    ("gateways", "account_name"): ACCOUNT_NAME_LIMIT,
    ("recovery_points", "gateway_name"): GATEWAY_TEXT_LIMITS["GatewayName"],
    ("recovery_points", "account_name"): ACCOUNT_NAME_LIMIT,
    ("errors", "error_code"): MAX_CODE_CHARS,
    ("errors", "gateway_error_code"): MAX_CODE_CHARS,
    ("errors", "message"): MAX_MESSAGE_CHARS,
}


@pytest.mark.parametrize(("dataset", "column"), sorted(TEXT_COLUMNS))
def test_the_schemas_bound_every_text_column_as_fleetscan_does(dataset: str, column: str) -> None:
    assert load_schema(dataset)["properties"][column]["maxLength"] == TEXT_COLUMNS[dataset, column]


def test_the_text_limits_are_the_documented_maxima_of_the_api_models() -> None:
    """botocore's service models are AWS's own: a limit of ours must not cut a real value."""
    session = botocore_session()
    gateway = session.get_service_model("storagegateway")
    info = gateway.shape_for("GatewayInfo").members
    for field in ("GatewayType", "GatewayOperationalState"):
        assert info[field].metadata["max"] == GATEWAY_TEXT_LIMITS[field]
    # GatewayInfo's GatewayName is a bare string; the name a gateway is given is this shape.
    assert info["GatewayName"].metadata.get("max") is None
    assert gateway.shape_for("GatewayName").metadata["max"] == GATEWAY_TEXT_LIMITS["GatewayName"]
    environments = info["HostEnvironment"].enum
    assert max(len(value) for value in environments) * 4 <= GATEWAY_TEXT_LIMITS["HostEnvironment"]
    organizations = session.get_service_model("organizations")
    account = organizations.shape_for("Account").members
    assert account["Name"].metadata["max"] == ACCOUNT_NAME_LIMIT


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_and_extra_fields_are_refused(dataset: str) -> None:
    record = next(r for r in RECORDS if r.dataset == dataset)
    missing = stored(record)
    del missing["run_id"]
    assert problems(dataset, missing) != []
    assert problems(dataset, {**stored(record), "note": "x"}) != []


SUMMARY: dict[str, Any] = {
    "accounts": 20,
    "units": {"planned": 320, "done": 318, "failed": 2},
    "calls": {"AssumeRole": 19, "ListGateways": 320, "ListVolumeRecoveryPoints": 70},
    "config": {"role_name": "FleetscanReadOnly", "external_id": "<set>", "regions": "enabled"},
}


@pytest.mark.parametrize("compress", ["none", "gzip"])
async def test_manifests_written_by_the_local_sink_validate(tmp_path: Path, compress: Any) -> None:
    sink = open_sink(str(tmp_path), RUN, compress=compress, max_object_bytes=16 * 1024)
    for record in RECORDS:
        await sink.write(record)
    manifest = await sink.finish("partial", SUMMARY)
    assert len(manifest["files"]) > 3
    assert problems("manifest", manifest) == []
    assert problems("manifest", read_manifest(find_manifest(tmp_path, RUN.run_id))) == []


async def test_manifests_of_stdout_and_aborted_runs_validate(tmp_path: Path) -> None:
    with (tmp_path / "stdout").open("wb") as out:
        sink = open_sink("-", RUN, stdout=out)
        for record in RECORDS:
            await sink.write(record)
        assert problems("manifest", await sink.finish("complete", SUMMARY)) == []
    aborted = open_sink(str(tmp_path / "aborted"), RUN)
    for record in RECORDS[:100]:
        await aborted.write(record)
    assert problems("manifest", await aborted.abort("interrupted", SUMMARY)) == []


async def test_broken_manifests_are_refused(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN, compress="gzip")
    for record in RECORDS[:50]:
        await sink.write(record)
    manifest = await sink.finish("complete", SUMMARY)
    entry = manifest["files"][0]
    broken: list[dict[str, Any]] = [
        {**manifest, "status": "done"},
        {**manifest, "compression": "zstd"},
        {**manifest, "ended_at": "yesterday"},
        {**manifest, "records": {"recovery_points": 1}},
        {**manifest, "files": [{**entry, "sha256": "ABC"}]},
        {**manifest, "files": [{**entry, "path": "/etc/passwd"}]},
        {**manifest, "files": [{**entry, "records": 0}]},
        {key: value for key, value in manifest.items() if key != "summary"},
    ]
    assert problems("manifest", manifest) == []
    for instance in broken:
        assert problems("manifest", instance) != [], instance
