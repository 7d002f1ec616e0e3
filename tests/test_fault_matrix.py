"""The fault matrix: every fault kind at a high rate, then all of them together.

What a user needs from a scan on a bad day: it ends; every (account, region) unit is either in
the data (exactly as the fleet holds it) or named in the errors dataset; the manifest's counts
add up; nothing is silently missing. Checked against the emulated fleet's ground truth.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

import fleetscan
from fleetscan._sinks import iter_records, read_manifest
from fleetscan.emulator import Fleet
from fleetscan.emulator._faults import FaultRule, Faults

SCENARIOS: dict[str, dict[str, Any]] = {
    "internal-error-400": {
        "rules": [FaultRule(internal_error_rate=0.4, internal_error_status=400)]
    },
    "internal-error-500": {
        "rules": [FaultRule(internal_error_rate=0.4, internal_error_status=500)]
    },
    "throttling-storm": {"rules": [FaultRule(throttle_rate=3, throttle_burst=1)]},
    "connection-resets": {"rules": [FaultRule(reset_rate=0.3)]},
    "timeouts": {"rules": [FaultRule(slow_rate=0.2, slow_seconds=2.0)]},
    "malformed-bodies": {"rules": [FaultRule(malformed_rate=0.3)]},
    "credentials-expire-every-second": {
        "rules": [FaultRule(latency_ms=20, jitter_ms=20)],
        "credential_ttl": 0.3,
    },
    "role-cannot-be-assumed": {"rules": [], "include_inactive": True},
    "region-access-denied": {"rules": "access-denied-region"},
    "everything-at-once": {
        "rules": [
            FaultRule(
                internal_error_rate=0.1,
                internal_error_status=400,
                reset_rate=0.05,
                slow_rate=0.05,
                slow_seconds=2.0,
                malformed_rate=0.05,
                throttle_rate=5,
                throttle_burst=2,
                latency_ms=5,
                jitter_ms=10,
            ),
            FaultRule(
                operation="ListVolumeRecoveryPoints",
                internal_error_rate=0.1,
                internal_error_status=500,
            ),
        ],
        "credential_ttl": 1.5,
        "include_inactive": True,
        "denied_region": True,
    },
}


def _denied_pair(fleet: Fleet) -> tuple[str, str]:
    active = {a.id for a in fleet.accounts if a.active}
    return sorted(p for p in fleet.pairs if p[0] in active)[0]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_unit_is_in_the_data_or_in_the_errors(
    stack: Any, stack_env: None, tmp_path: Path, name: str
) -> None:
    scenario = SCENARIOS[name]
    fleet: Fleet = stack.fleet
    rules = scenario["rules"]
    denied = _denied_pair(fleet)
    if rules == "access-denied-region":
        rules = []
        scenario = {**scenario, "denied_region": True}
    if scenario.get("denied_region"):
        rules = [*rules, FaultRule(account_id=denied[0], region=denied[1], access_denied=True)]
    stack.emulator.faults = Faults(rules)
    stack.emulator.credential_ttl = scenario.get("credential_ttl")
    config = fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=fleet.spec.regions,
        output=str(tmp_path),
        include_inactive=scenario.get("include_inactive", False),
        read_timeout=0.5,
        max_attempts=10,
        concurrency=32,
    )

    async def scan() -> fleetscan.ScanResult:
        with anyio.fail_after(240):  # "the scan always ends"
            return await fleetscan.run_scan(config)

    result = anyio.run(scan, backend="asyncio")

    assert result.status in ("complete", "partial")
    manifest = read_manifest(next(tmp_path.glob("manifests/dt=*/*.json")))
    summary = manifest["summary"]
    assert summary["units_done"] + summary["units_failed"] == summary["units_planned"]
    _assert_nothing_silently_missing(
        fleet, tmp_path, result, include_inactive=config.include_inactive
    )
    if scenario.get("denied_region"):
        errors = list(iter_records(tmp_path, result.run_id, "errors"))
        assert any(
            (e["account_id"], e["region"], e["error_code"]) == (*denied, "AccessDeniedException")
            for e in errors
        )
    if scenario.get("credential_ttl"):
        assert stack.emulator.counters.faults()["expired_token"] > 0
        assert result.stats.credential_refreshes > 0
    if name == "role-cannot-be-assumed":
        (suspended,) = [a.id for a in fleet.accounts if not a.active]
        errors = list(iter_records(tmp_path, result.run_id, "errors"))
        assert [e["operation"] for e in errors if e["account_id"] == suspended] == ["AssumeRole"]
        assert result.status == "partial"
    injected = stack.emulator.counters.faults()
    for kind, key in (
        ("internal-error", "internal_error"),
        ("throttling", "throttle"),
        ("resets", "reset"),
        ("timeouts", "slow"),
        ("malformed", "malformed"),
    ):
        if kind in name:
            assert injected[key] > 0, f"the emulator injected no {key}: the test tested nothing"


def _assert_nothing_silently_missing(
    fleet: Fleet, output: Path, result: fleetscan.ScanResult, *, include_inactive: bool
) -> None:
    truth = fleet.ground_truth(regions=fleet.spec.regions)
    errors = list(iter_records(output, result.run_id, "errors"))
    failed_accounts = {e["account_id"] for e in errors if e["region"] is None}
    failed_units = {(e["account_id"], e["region"]) for e in errors if e["gateway_arn"] is None}
    failed_gateways = {e["gateway_arn"] for e in errors if e["gateway_arn"]}

    gateways = {g["gateway_arn"]: g for g in iter_records(output, result.run_id, "gateways")}
    rps: dict[str, set[str]] = defaultdict(set)
    for r in iter_records(output, result.run_id, "recovery_points"):
        assert r["volume_arn"] not in rps[r["gateway_arn"]], "a recovery point was written twice"
        rps[r["gateway_arn"]].add(r["volume_arn"])

    want_rps: dict[str, set[str]] = defaultdict(set)
    for rp in truth.recovery_points:
        want_rps[rp.gateway_arn].add(rp.volume_arn)
    for expected in truth.gateways:
        arn = expected.gateway_arn
        if expected.account_id in failed_accounts:
            continue  # named in the errors dataset as a whole account
        if (expected.account_id, expected.region) in failed_units:
            continue  # its unit's ListGateways failed for good: named in the errors
        assert arn in gateways, f"{arn} is neither in the data nor in the errors"
        got = gateways[arn]
        if got["status"] == "error":
            assert arn in failed_gateways
            continue
        assert got["status"] == expected.status
        assert rps.get(arn, set()) == want_rps.get(arn, set())
    # Nothing that does not exist was invented either.
    assert set(gateways) <= {g.gateway_arn for g in truth.gateways}
    if include_inactive:
        suspended = {a.id for a in fleet.accounts if not a.active}
        assert suspended <= failed_accounts
