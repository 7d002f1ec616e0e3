"""A run's records against the emulated fleet's ground truth, as a reader would compare them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fleetscan import read_records
from fleetscan._records import DATASETS, parse_time
from fleetscan.emulator import Fleet


def run_records(dest: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of a run, by dataset, through fleetscan's public reader (which checks each
    file's size, SHA-256 and record count against the manifest)."""
    return {name: list(read_records(dest, name, run=run_id)) for name in DATASETS}


def assert_matches_truth(
    fleet: Fleet, rows: Mapping[str, list[dict[str, Any]]], accounts: Iterable[str] | None = None
) -> None:
    """The recovery points, gateways and offline-gateway errors are exactly the fleet's, in its
    regions, for ``accounts`` (default: every account), none twice."""
    truth = fleet.ground_truth(
        accounts=None if accounts is None else list(accounts), regions=fleet.spec.regions
    )
    want = {
        (p.account_id, p.region, p.gateway_arn, p.volume_arn): (
            p.recovery_point_time,
            p.volume_size_bytes,
            p.volume_usage_bytes,
        )
        for p in truth.recovery_points
    }
    got = {
        (r["account_id"], r["region"], r["gateway_arn"], r["volume_arn"]): (
            parse_time(r["recovery_point_time"]),
            r["volume_size_bytes"],
            r["volume_usage_bytes"],
        )
        for r in rows["recovery_points"]
    }
    assert len(got) == len(rows["recovery_points"]), "a recovery point was written twice"
    assert got == want
    gateways = {
        g["gateway_arn"]: (g["status"], g["recovery_point_count"], g["error_code"])
        for g in rows["gateways"]
    }
    assert len(gateways) == len(rows["gateways"]), "a gateway was written twice"
    assert gateways == {
        g.gateway_arn: (g.status, g.recovery_point_count, g.error_code) for g in truth.gateways
    }
    offline = {
        e["gateway_arn"] for e in rows["errors"] if e["gateway_error_code"] == "GatewayNotConnected"
    }
    assert offline == {arn for (_, _, arn, _) in truth.gateway_errors}
