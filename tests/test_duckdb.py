"""A real query engine over the local layout of real scans: DuckDB's read_json, hive-partitioned.

The tables are read with the Athena DDL's own columns and types (from ``fleetscan._schema_export``)
and named as in the DDL, so every sample query in configs/athena/ runs here unchanged: only the
tables are views over read_json instead of S3 locations. Each query's answer is checked against
the emulated fleet's ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

import fleetscan
from fleetscan._records import DATASETS, parse_time
from fleetscan._schema_export import columns, table_name
from fleetscan._sinks import iter_records, latest_run
from fleetscan._sinks._read import aiter_records, alatest_run, alist_runs, aread_manifest
from fleetscan.emulator import Stack

QUERIES = Path(__file__).parent.parent / "configs" / "athena"
DUCKDB_TYPES = {"bigint": "BIGINT", "double": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}


async def scan(stack: Stack, output: Path) -> fleetscan.ScanResult:
    config = fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=stack.fleet.spec.regions,
        output=str(output),
        concurrency=64,
    )
    result = await fleetscan.run_scan(config)
    assert result.status == "complete"
    return result


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """One view per dataset, named and typed as the Athena table is."""
    con = duckdb.connect()
    for dataset in DATASETS:
        typed = ", ".join(f"'{c.name}': '{DUCKDB_TYPES[c.type]}'" for c in columns(dataset))
        con.execute(
            f"CREATE VIEW {table_name(dataset)} AS SELECT * FROM read_json("
            f"'{root}/{dataset}/*/*.ndjson', format = 'newline_delimited', "
            f"hive_partitioning = true, columns = {{{typed}}})"
        )
    return con


def rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def sample_query(name: str) -> str:
    return (QUERIES / f"{name}.sql").read_text()


async def test_duckdb_over_a_real_scan_returns_the_ground_truth(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    result = await scan(stack, tmp_path)
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    con = connect(tmp_path)

    points = rows(con, "SELECT * FROM fleetscan_recovery_points")
    got = {
        (r["account_id"], r["region"], r["gateway_arn"], r["volume_arn"]): (
            parse_time(r["recovery_point_time"]),
            r["volume_size_bytes"],
            r["volume_usage_bytes"],
        )
        for r in points
    }
    assert len(got) == len(points)
    assert got == {
        (p.account_id, p.region, p.gateway_arn, p.volume_arn): (
            p.recovery_point_time,
            p.volume_size_bytes,
            p.volume_usage_bytes,
        )
        for p in truth.recovery_points
    }
    # The dt partition comes from the path, and is the run's UTC start date.
    started = result.manifest["started_at"][:10]
    assert {str(r["dt"]) for r in points} == {started}
    assert {r["run_id"] for r in points} == {result.run_id}

    gateways = rows(con, "SELECT gateway_arn, status, recovery_point_count, error_code FROM "
                         "fleetscan_gateways")  # fmt: skip
    assert {g["gateway_arn"]: (g["status"], g["recovery_point_count"], g["error_code"])
            for g in gateways} == {
        g.gateway_arn: (g.status, g.recovery_point_count, g.error_code) for g in truth.gateways
    }  # fmt: skip
    (count,) = con.execute("SELECT count(*) FROM fleetscan_errors").fetchone() or (None,)
    assert count == result.manifest["records"]["errors"]

    # The async readers see the same run as the sync ones and as DuckDB.
    dest = str(tmp_path)
    for dataset in DATASETS:
        listed = [r async for r in aiter_records(dest, result.run_id, dataset)]
        assert listed == list(iter_records(dest, result.run_id, dataset))
    assert await aread_manifest(dest, result.run_id) == result.manifest
    assert await alatest_run(dest) == latest_run(dest) == result.run_id
    assert await alist_runs(dest) == [
        {"run_id": result.run_id, "status": "complete", "started_at": result.manifest["started_at"]}
    ]


async def test_each_sample_query_runs_on_duckdb_and_answers_as_the_fleet_says(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    first = await scan(stack, tmp_path)
    second = await scan(stack, tmp_path)  # every volume and gateway is now seen twice
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    con = connect(tmp_path)

    latest = rows(con, sample_query("latest_recovery_point_per_volume"))
    assert {r["volume_arn"]: parse_time(r["recovery_point_time"]) for r in latest} == {
        p.volume_arn: p.recovery_point_time for p in truth.recovery_points
    }
    assert len(latest) == len(truth.recovery_points)
    assert {r["run_id"] for r in latest} == {second.run_id}  # the latest scan among equals

    stale = rows(con, sample_query("stale_recovery_points"))
    expected = {p.volume_arn for p in truth.recovery_points if p.age_seconds > 24 * 3600}
    assert expected, "the fleet has stale volumes, so the query is really tested"
    assert {r["volume_arn"] for r in stale} == expected
    assert len(stale) == len(expected)
    ages = [r["age_hours"] for r in stale]
    assert ages == sorted(ages, reverse=True)
    assert min(ages) > 24

    unscanned = rows(con, sample_query("gateways_not_scanned"))
    failed = {g.gateway_arn: g.error_code for g in truth.gateways if g.status == "error"}
    assert failed, "the fleet has offline gateways, so the query is really tested"
    assert {r["gateway_arn"]: r["error_code"] for r in unscanned} == failed
    assert len(unscanned) == len(failed)
    for row in unscanned:
        assert row["run_id"] == second.run_id
        assert row["aws_error_code"] == "InvalidGatewayRequestException"
        assert row["message"]
    assert first.run_id != second.run_id


def test_the_sample_queries_read_only_tables_the_shipped_ddl_creates() -> None:
    queries = [path for path in QUERIES.glob("*.sql") if path.stem not in DATASETS]
    assert sorted(path.stem for path in queries) == [
        "gateways_not_scanned",
        "latest_recovery_point_per_volume",
        "stale_recovery_points",
    ]
    created = {
        name
        for dataset in DATASETS
        for name in (table_name(dataset),)
        if f"CREATE EXTERNAL TABLE IF NOT EXISTS {name} (" in sample_query(dataset)
    }
    used = {word for path in queries for word in path.read_text().split()
            if word.startswith("fleetscan_")}  # fmt: skip
    assert used == created
