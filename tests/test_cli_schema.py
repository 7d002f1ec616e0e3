"""`fleetscan schema`: JSON Schema, Athena DDL and Glue tables, generated from the record schema.

The DDL shipped in configs/athena/ must be exactly what the command prints, the columns exactly
the record fields, and the Glue TableInput must create a table through the real AWS CLI (against
moto's Glue), as the README tells users to do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetscan._records import DATASETS, load_schema, record_fields
from fleetscan._schema_export import DEFAULT_LOCATION, RECORD_TYPES, render
from fleetscan.emulator import Stack

ROOT = Path(__file__).parent.parent
ATHENA = ROOT / "configs" / "athena"
AWS_CLI = str(Path(sys.executable).parent / "aws")
LAKE = "s3://acme-data-lake/inventory/fleetscan/"
JSON_TYPES = {"bigint": "integer", "double": "number", "string": "string", "boolean": "boolean"}


def fleetscan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", "schema", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def printed(*args: str) -> str:
    proc = fleetscan(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_the_shipped_ddl_is_what_fleetscan_schema_prints() -> None:
    shipped = {name: (ATHENA / f"{name}.sql").read_text() for name in DATASETS}
    everything = printed("--format", "athena")
    assert everything == "\n".join(shipped[name] for name in DATASETS)
    for name in DATASETS:
        # What `fleetscan schema --format athena --dataset NAME` prints (the same function).
        assert render("athena", name) == shipped[name]
        assert f"LOCATION '{DEFAULT_LOCATION}{name}/'" in shipped[name]


def _json_type(prop: dict[str, Any]) -> str:
    kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    (kind,) = [k for k in kinds if k != "null"]
    return str(kind)


def test_athena_ddl_has_the_record_columns_the_hive_serde_and_projection() -> None:
    statements = printed("--format", "athena", "--location", LAKE).split("\n\n")
    assert len(statements) == len(DATASETS)
    for dataset, ddl in zip(DATASETS, statements, strict=True):
        check_ddl(dataset, ddl)


def check_ddl(dataset: str, ddl: str) -> None:
    columns = re.findall(r"^  `(\w+)`\s+(\w+)\s+COMMENT '", ddl, re.MULTILINE)
    assert [name for name, _ in columns] == list(record_fields(RECORD_TYPES[dataset]))
    properties = load_schema(dataset)["properties"]
    assert [(name, JSON_TYPES[kind]) for name, kind in columns] == [
        (name, _json_type(properties[name])) for name, _ in columns
    ]
    assert f"CREATE EXTERNAL TABLE IF NOT EXISTS fleetscan_{dataset} (" in ddl
    assert "PARTITIONED BY (`dt` string" in ddl
    assert "ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'" in ddl
    assert "openx" not in ddl.lower()
    assert f"LOCATION '{LAKE}{dataset}/'" in ddl
    projection = dict(re.findall(r"^  '([\w.]+)' = '([^']*)'", ddl, re.MULTILINE))
    assert projection == {
        "projection.enabled": "true",
        "projection.dt.type": "date",
        "projection.dt.format": "yyyy-MM-dd",
        "projection.dt.range": "2025-01-01,NOW",
        "projection.dt.interval": "1",
        "projection.dt.interval.unit": "DAYS",
        "storage.location.template": f"{LAKE}{dataset}/dt=${{dt}}/",
    }
    assert ddl.rstrip().endswith(");")
    # Quotes inside comments are escaped the Hive way, so every literal closes where it should.
    for line in ddl.splitlines():
        if line.startswith("  `"):
            literal = line.split(" COMMENT ", 1)[1].rstrip(",")
            assert re.fullmatch(r"'(?:[^'\\]|\\.)*'", literal), line


def test_json_schema_format_prints_the_shipped_schemas() -> None:
    assert json.loads(printed("--format", "json-schema")) == {
        name: load_schema(name) for name in DATASETS
    }
    for name in DATASETS:
        assert json.loads(render("json-schema", name)) == load_schema(name)


def test_glue_table_input_creates_the_table_with_the_aws_cli(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    tables = json.loads(render("glue", location=LAKE))
    assert [table["Name"] for table in tables] == [f"fleetscan_{name}" for name in DATASETS]
    table_input = tmp_path / "recovery_points.json"
    table_input.write_text(
        printed("--format", "glue", "--dataset", "recovery_points", "--location", LAKE)
    )
    assert json.loads(table_input.read_text()) == tables[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack_env
    env["AWS_ENDPOINT_URL_GLUE"] = stack.moto_endpoint_url

    def aws(*args: str) -> str:
        proc = subprocess.run(
            [AWS_CLI, "glue", *args, "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    aws("create-database", "--database-input", '{"Name": "fleetscan"}')
    aws("create-table", "--database-name", "fleetscan", "--table-input", f"file://{table_input}")
    table = json.loads(
        aws("get-table", "--database-name", "fleetscan", "--name", tables[0]["Name"])
    )
    created = table["Table"]
    descriptor = created["StorageDescriptor"]
    assert [c["Name"] for c in descriptor["Columns"]] == list(
        record_fields(RECORD_TYPES["recovery_points"])
    )
    assert all(len(c["Comment"]) <= 255 for c in descriptor["Columns"])
    assert (
        descriptor["SerdeInfo"]["SerializationLibrary"] == "org.apache.hive.hcatalog.data.JsonSerDe"
    )
    assert descriptor["Location"] == f"{LAKE}recovery_points/"
    assert created["PartitionKeys"][0]["Name"] == "dt"
    assert created["Parameters"]["projection.dt.type"] == "date"
    assert created["Parameters"]["storage.location.template"] == (
        f"{LAKE}recovery_points/dt=${{dt}}/"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "athena", "--location", "s3://X/y"), "location: 's3://X/y' is not s3://"),
        (("--format", "json-schema", "--location", LAKE), "location: applies to --format athena"),
        (("--format", "glue", "--dataset", "volumes"), "invalid choice: 'volumes'"),
    ],
)
def test_bad_arguments_exit_2_naming_what_is_wrong(args: tuple[str, ...], message: str) -> None:
    proc = fleetscan(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
