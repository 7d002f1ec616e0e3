"""Athena DDL and Glue table definitions, generated from the record schema (one source of truth).

Column names and order come from the record dataclasses, types and comments from the shipped
JSON Schemas (a test keeps the two identical), so a table can never disagree with what a scan
writes. ``fleetscan schema`` prints these; configs/athena/ holds the same DDL, checked by a test.

Why these choices: the Hive JSON SerDe (``org.apache.hive.hcatalog.data.JsonSerDe``), because
AWS documents that the OpenX SerDe can return non-deterministic results; times stay strings
(RFC 3339 in UTC with milliseconds, so they sort as text, and ``from_iso8601_timestamp`` reads
them) because the SerDe's timestamp parsing does not accept the ``T`` and ``Z`` of RFC 3339;
partition projection on ``dt``, so new days are queryable at once without a crawler or
``MSCK REPAIR TABLE``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from ._config import parse_s3_url
from ._exceptions import ConfigError
from ._records import (
    DATASETS,
    ErrorRecord,
    GatewayRecord,
    Record,
    RecoveryPointRecord,
    load_schema,
    record_fields,
)

FORMATS: Final = ("json-schema", "athena", "glue")
#: Where the tables point when no ``--location`` is given: the user replaces it (a placeholder
#: that is still a valid S3 URL, so the DDL parses as is).
DEFAULT_LOCATION: Final = "s3://amzn-s3-demo-bucket/fleetscan/"
TABLE_PREFIX: Final = "fleetscan_"
SERDE: Final = "org.apache.hive.hcatalog.data.JsonSerDe"
INPUT_FORMAT: Final = "org.apache.hadoop.mapred.TextInputFormat"
OUTPUT_FORMAT: Final = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
#: The first day partition projection considers; queries without a ``dt`` filter list every day
#: from here to today, so it is not set earlier than fleetscan existed.
PROJECTION_START: Final = "2025-01-01"
#: Glue keeps at most this many characters of a column comment.
MAX_COMMENT: Final = 255
DT_COMMENT: Final = "UTC start date of the run (yyyy-MM-dd): one run, one partition"

RECORD_TYPES: Final[dict[str, type[Record]]] = {
    "recovery_points": RecoveryPointRecord,
    "gateways": GatewayRecord,
    "errors": ErrorRecord,
}
_HIVE_TYPES: Final = {
    "integer": "bigint",
    "number": "double",
    "string": "string",
    "boolean": "boolean",
}


@dataclass(frozen=True)
class Column:
    name: str
    #: Hive type, as Athena and Glue spell it.
    type: str
    comment: str


def table_name(dataset: str) -> str:
    return TABLE_PREFIX + dataset


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError("dataset", f"{dataset!r} is not one of {', '.join(DATASETS)}")


def _short(description: str) -> str:
    """The first sentence of a description, within Glue's limit for a comment."""
    first = description.split(". ", 1)[0].rstrip(".")
    return first if len(first) <= MAX_COMMENT else first[: MAX_COMMENT - 3].rstrip() + "..."


def _hive_type(name: str, prop: dict[str, Any]) -> str:
    kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    kinds = [kind for kind in kinds if kind != "null"]
    if len(kinds) != 1 or kinds[0] not in _HIVE_TYPES:
        raise ValueError(f"field {name}: JSON Schema type {prop['type']!r} has no Hive type")
    return _HIVE_TYPES[kinds[0]]


def columns(dataset: str) -> list[Column]:
    """The dataset's columns: names in record order, Hive types, short comments."""
    _check_dataset(dataset)
    properties: dict[str, Any] = load_schema(dataset)["properties"]
    names = record_fields(RECORD_TYPES[dataset])
    if tuple(properties) != names:
        raise ValueError(f"the {dataset} JSON Schema and record fields disagree")
    return [
        Column(name, _hive_type(name, properties[name]), _short(properties[name]["description"]))
        for name in names
    ]


def _table_location(dataset: str, location: str) -> str:
    bucket, prefix = parse_s3_url(location, "location")
    return f"s3://{bucket}/{prefix}{dataset}/"


def projection(dataset: str, location: str) -> dict[str, str]:
    """Table properties for partition projection on ``dt``, in the order Athena documents."""
    return {
        "projection.enabled": "true",
        "projection.dt.type": "date",
        "projection.dt.format": "yyyy-MM-dd",
        "projection.dt.range": f"{PROJECTION_START},NOW",
        "projection.dt.interval": "1",
        "projection.dt.interval.unit": "DAYS",
        "storage.location.template": _table_location(dataset, location) + "dt=${dt}/",
    }


def _literal(text: str) -> str:
    """A Hive string literal (Athena DDL is Hive: backslash escapes, not doubled quotes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def athena_ddl(dataset: str, location: str = DEFAULT_LOCATION) -> str:
    """``CREATE EXTERNAL TABLE`` for one dataset: Hive JSON SerDe, partition projection on dt."""
    cols = columns(dataset)
    title = load_schema(dataset)["title"]
    width = max(len(column.name) for column in cols) + 2
    lines = [
        f"-- {title}",
        f"-- fleetscan schema --format athena --dataset {dataset} --location {location}",
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {table_name(dataset)} (",
    ]
    for index, column in enumerate(cols):
        comma = "," if index < len(cols) - 1 else ""
        name = f"`{column.name}`".ljust(width)
        lines.append(f"  {name} {column.type.ljust(7)} COMMENT {_literal(column.comment)}{comma}")
    lines += [
        ")",
        f"COMMENT {_literal(title)}",
        f"PARTITIONED BY (`dt` string COMMENT {_literal(DT_COMMENT)})",
        f"ROW FORMAT SERDE '{SERDE}'",
        f"STORED AS INPUTFORMAT '{INPUT_FORMAT}'",
        f"OUTPUTFORMAT '{OUTPUT_FORMAT}'",
        f"LOCATION '{_table_location(dataset, location)}'",
        "TBLPROPERTIES (",
    ]
    properties = list(projection(dataset, location).items())
    for index, (key, value) in enumerate(properties):
        comma = "," if index < len(properties) - 1 else ""
        lines.append(f"  '{key}' = '{value}'{comma}")
    lines.append(");")
    return "\n".join(lines) + "\n"


def glue_table_input(dataset: str, location: str = DEFAULT_LOCATION) -> dict[str, Any]:
    """The ``TableInput`` of ``aws glue create-table`` for one dataset (same table as the DDL)."""
    return {
        "Name": table_name(dataset),
        "Description": load_schema(dataset)["title"],
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "EXTERNAL": "TRUE",
            "classification": "json",
            **projection(dataset, location),
        },
        "PartitionKeys": [{"Name": "dt", "Type": "string", "Comment": DT_COMMENT}],
        "StorageDescriptor": {
            "Columns": [
                {"Name": c.name, "Type": c.type, "Comment": c.comment} for c in columns(dataset)
            ],
            "Location": _table_location(dataset, location),
            "InputFormat": INPUT_FORMAT,
            "OutputFormat": OUTPUT_FORMAT,
            "Compressed": False,
            "SerdeInfo": {
                "SerializationLibrary": SERDE,
                "Parameters": {"serialization.format": "1"},
            },
            "StoredAsSubDirectories": False,
        },
    }


def render(fmt: str, dataset: str | None = None, location: str | None = None) -> str:
    """What ``fleetscan schema`` prints: one dataset's definition, or all three.

    json-schema: the shipped JSON Schema (an object keyed by dataset for all three). athena: the
    DDL statements. glue: a TableInput (a JSON array of them for all three).
    """
    if fmt not in FORMATS:
        raise ConfigError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    if dataset is not None:
        _check_dataset(dataset)
    if location is not None:
        if fmt == "json-schema":
            raise ConfigError("location", "applies to --format athena or glue")
        parse_s3_url(location, "location")
    where = location or DEFAULT_LOCATION
    names = [dataset] if dataset is not None else list(DATASETS)
    if fmt == "athena":
        return "\n".join(athena_ddl(name, where) for name in names)
    if fmt == "glue":
        tables = [glue_table_input(name, where) for name in names]
        return json.dumps(tables[0] if dataset else tables, indent=2) + "\n"
    if dataset is not None:
        return json.dumps(load_schema(dataset), indent=2) + "\n"
    return json.dumps({name: load_schema(name) for name in names}, indent=2) + "\n"
