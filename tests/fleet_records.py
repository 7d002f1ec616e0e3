"""Realistic records for the output tests, built from the emulated fleet as a scan builds them.

The values (ids, ARNs, sizes sent as strings, missing usage, offline and non-cached gateways, a
suspended account) come from the seeded fleet, so schema and sink tests see what a real scan
writes, not hand-made samples.
"""

from __future__ import annotations

import datetime as dt

from fleetscan._records import (
    SCHEMA_VERSION,
    ErrorRecord,
    GatewayRecord,
    Record,
    RecoveryPointRecord,
    format_time,
    parse_bytes,
    parse_time,
)
from fleetscan._sinks import RunInfo
from fleetscan.emulator import Fleet, FleetSpec

EPOCH = dt.datetime(2026, 11, 27, 22, 0, tzinfo=dt.UTC)
RUN_ID = "20261127T220000Z-5e1f0a"
# 01:30 at UTC+3 on March 2nd is still March 1st in UTC: the partition follows the UTC date.
STARTED = dt.datetime(2025, 3, 2, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
RUN = RunInfo(run_id=RUN_ID, started_at=STARTED, version="0.1.0")
DT = "dt=2025-03-01"
#: Seed 4 with 20 accounts: ~860 recovery points, ~130 gateways of every status, ~10 errors.
SPEC = FleetSpec(seed=4, accounts=20, epoch=EPOCH)


def fleet_records(spec: FleetSpec = SPEC, run_id: str = RUN_ID) -> list[Record]:
    fleet = Fleet(spec)
    scanned = spec.epoch + dt.timedelta(seconds=90)
    scanned_at = format_time(scanned)
    records: list[Record] = []
    for account in fleet.accounts:
        if not account.active:
            records.append(
                ErrorRecord(
                    SCHEMA_VERSION, run_id, scanned_at, account.id, None, None, "AssumeRole",
                    "AccessDenied", None,
                    f"User is not authorized to perform: sts:AssumeRole on {account.id}", 1, False,
                )
            )  # fmt: skip
    for gw in fleet.iter_gateways():
        owner = fleet.account(gw.account_id)
        assert owner is not None
        if not owner.active:
            continue
        head = (
            SCHEMA_VERSION, run_id, scanned_at, "aws", owner.id, owner.name, gw.region,
            gw.arn, gw.id, gw.name,
        )  # fmt: skip
        tail = (gw.type, gw.operational_state, gw.host_environment)
        if not gw.is_cached:
            records.append(GatewayRecord(*head, *tail, "not_cached", None, None))
            continue
        if not gw.connected:
            records.append(
                ErrorRecord(
                    SCHEMA_VERSION, run_id, scanned_at, owner.id, gw.region, gw.arn,
                    "ListVolumeRecoveryPoints", "InvalidGatewayRequestException",
                    "GatewayNotConnected", "The specified gateway is not connected.", 1, False,
                )
            )  # fmt: skip
            records.append(
                GatewayRecord(*head, *tail, "error", None, "InvalidGatewayRequestException")
            )
            continue
        for volume in gw.volumes:
            point = parse_time(volume.recovery_point_time_text)
            assert point is not None
            size = str(volume.size_bytes) if volume.size_as_string else volume.size_bytes
            records.append(
                RecoveryPointRecord(
                    *head,
                    volume_arn=volume.arn,
                    volume_id=volume.id,
                    recovery_point_time=format_time(point),
                    volume_size_bytes=parse_bytes(size),
                    volume_usage_bytes=parse_bytes(volume.usage_bytes),
                    recovery_point_age_seconds=round((scanned - point).total_seconds(), 3),
                )
            )
        records.append(GatewayRecord(*head, *tail, "scanned", len(gw.volumes), None))
    # A throttled region whose retries ran out: retryable, many attempts, no gateway.
    first = fleet.accounts[0]
    records.append(
        ErrorRecord(
            SCHEMA_VERSION, run_id, scanned_at, first.id, spec.regions[0], None, "ListGateways",
            "ThrottlingException", None, "Rate exceeded", 8, True,
        )
    )  # fmt: skip
    return records
