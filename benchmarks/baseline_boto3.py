"""The scan as people write it today: boto3 in a thread pool. The yardstick for fleetscan.

Deliberately ordinary, not a straw man: it is the shape of the scripts that multi-account
inventories are built from. ListAccounts (paged) with the ambient credentials, ACTIVE accounts
only; in a ThreadPoolExecutor(32), STS AssumeRole once per account, then one task per
(account, region) that builds its own boto3 client, pages ListGateways and calls
ListVolumeRecoveryPoints for each CACHED gateway, one after the other. Retries are boto3's
defaults (legacy mode, 5 attempts); a call that still fails is counted and skipped, as such
scripts do. Records are written as NDJSON with :mod:`json`, as results arrive.

boto3 sessions are not thread-safe, so each worker thread gets its own (the documented way).
Like any boto3 script it reads the standard AWS configuration: ``AWS_ENDPOINT_URL_<SERVICE>``,
``AWS_CA_BUNDLE``, the access keys.

Run: ``python -m benchmarks.baseline_boto3 --role-name NAME --regions R1,R2 --output DIR``.
It prints one JSON line of counts on stdout at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

WORKERS = 32
_local = threading.local()
_lock = threading.Lock()
_calls: Counter[str] = Counter()
_failures: Counter[str] = Counter()


def _count(operation: str) -> None:
    with _lock:
        _calls[operation] += 1


def _fail(code: str) -> None:
    with _lock:
        _failures[code] += 1


def _session() -> Any:
    """This thread's boto3 session (sessions must not be shared between threads)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = boto3.session.Session()
    return session


def list_accounts() -> list[dict[str, Any]]:
    org = boto3.client("organizations")
    accounts: list[dict[str, Any]] = []
    for page in org.get_paginator("list_accounts").paginate():
        _count("ListAccounts")
        accounts.extend(a for a in page["Accounts"] if a["Status"] == "ACTIVE")
    return accounts


def assume_role(account_id: str, role_name: str) -> dict[str, Any]:
    sts = _session().client("sts")
    _count("AssumeRole")
    answer = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{role_name}", RoleSessionName="inventory"
    )
    credentials: dict[str, Any] = answer["Credentials"]
    return credentials


def scan_region(
    account: dict[str, Any], credentials: dict[str, Any], region: str
) -> list[dict[str, Any]]:
    """Every recovery point of one (account, region), with a client of its own."""
    client = _session().client(
        "storagegateway",
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    gateways: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_gateways").paginate():
            _count("ListGateways")
            gateways.extend(page["Gateways"])
    except (ClientError, BotoCoreError) as exc:
        _fail(_code(exc))
        return []
    records: list[dict[str, Any]] = []
    for gateway in gateways:
        if gateway.get("GatewayType") != "CACHED":
            continue
        try:
            _count("ListVolumeRecoveryPoints")
            answer = client.list_volume_recovery_points(GatewayARN=gateway["GatewayARN"])
        except (ClientError, BotoCoreError) as exc:
            _fail(_code(exc))
            continue
        now = dt.datetime.now(dt.UTC)
        for info in answer.get("VolumeRecoveryPointInfos", []):
            point = dt.datetime.fromisoformat(info["VolumeRecoveryPointTime"])
            records.append(
                {
                    "account_id": account["Id"],
                    "account_name": account["Name"],
                    "region": region,
                    "gateway_arn": gateway["GatewayARN"],
                    "gateway_id": gateway.get("GatewayId"),
                    "gateway_name": gateway.get("GatewayName"),
                    "volume_arn": info["VolumeARN"],
                    "volume_id": info["VolumeARN"].rsplit("/", 1)[-1],
                    "recovery_point_time": info["VolumeRecoveryPointTime"],
                    "volume_size_bytes": int(info["VolumeSizeInBytes"]),
                    "volume_usage_bytes": info.get("VolumeUsageInBytes"),
                    "recovery_point_age_seconds": (now - point).total_seconds(),
                    "scanned_at": now.isoformat(),
                }
            )
    return records


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_boto3")
    parser.add_argument("--role-name", required=True)
    parser.add_argument("--regions", required=True, help="comma-separated")
    parser.add_argument("--output", required=True, type=Path, help="a directory")
    parser.add_argument("--workers", type=int, default=WORKERS)
    args = parser.parse_args(argv)
    regions = [r for r in args.regions.split(",") if r]
    args.output.mkdir(parents=True, exist_ok=True)
    written = 0
    with (
        ThreadPoolExecutor(max_workers=args.workers) as pool,
        open(args.output / "recovery_points.ndjson", "w", encoding="utf-8") as out,
    ):
        accounts = list_accounts()
        assumed: dict[Future[dict[str, Any]], dict[str, Any]] = {
            pool.submit(assume_role, account["Id"], args.role_name): account for account in accounts
        }
        pairs: list[Future[list[dict[str, Any]]]] = []
        for future in as_completed(assumed):
            account = assumed[future]
            try:
                credentials = future.result()
            except (ClientError, BotoCoreError) as exc:
                _fail(_code(exc))
                continue
            pairs.extend(pool.submit(scan_region, account, credentials, r) for r in regions)
        for pair in as_completed(pairs):
            for record in pair.result():
                out.write(json.dumps(record) + "\n")
                written += 1
    summary = {
        "accounts": len(accounts),
        "recovery_points": written,
        "calls": dict(sorted(_calls.items())),
        "failures": dict(sorted(_failures.items())),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
