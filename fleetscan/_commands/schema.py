"""``fleetscan schema``: the datasets' JSON Schemas, Athena DDL or Glue table definitions."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    schema: argparse.ArgumentParser = subparsers.add_parser(
        "schema",
        help="print the datasets' JSON Schemas, Athena DDL or Glue table definitions",
        description="Print the record schema of the datasets as JSON Schema, Athena CREATE "
        "EXTERNAL TABLE statements (Hive JSON SerDe, partition projection on dt) or Glue "
        "TableInput JSON for `aws glue create-table --table-input`.",
        allow_abbrev=False,
    )
    schema.add_argument("--format", required=True, choices=("json-schema", "athena", "glue"))
    schema.add_argument(
        "--dataset",
        choices=("recovery_points", "gateways", "errors"),
        help="one dataset (default: all three)",
    )
    schema.add_argument(
        "--location",
        metavar="S3_URL",
        help="the scan's --output, s3://BUCKET/PREFIX/ (athena and glue; default: a placeholder)",
    )


def run(args: argparse.Namespace) -> int:
    from .._schema_export import render

    sys.stdout.write(render(args.format, args.dataset, args.location))
    return 0
