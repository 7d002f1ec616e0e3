"""The per-(account, region) rate end to end: real scans against the emulator, whose token bucket
per (account, region) is the meter.

The emulator's bucket counts on the server side what a client sent in every window: a bucket of
rate R and burst B refuses a call exactly when more than ``B + R x w`` calls arrived in some
window of ``w`` seconds. So "the emulator throttled nothing" says no window held more than that,
and "it throttled" says some window did, with no clock read in the test.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import anyio
import pytest
from ground_truth import assert_matches_truth, run_records
from scan_runs import command, run

import fleetscan
from fleetscan.emulator import Fleet, FleetSpec
from fleetscan.emulator._faults import FaultRule, Faults

#: One member account whose one region holds 250 gateways, 136 of them cached: a unit of 139
#: calls (three ListGateways pages), the kind that sets a scan's wall time.
BIG_UNIT = FleetSpec(
    seed=32,
    accounts=1,
    regions=("us-east-1",),
    populated_fraction=1.0,
    max_gateways_per_pair=250,
    max_volumes_per_gateway=2,
)


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return BIG_UNIT


def _minimum_calls(fleet: Fleet) -> int:
    accounts = [fleet.management_account_id, *(a.id for a in fleet.accounts if a.active)]
    return sum(fleet.minimum_calls(accounts, fleet.spec.regions).values())


def test_the_fleet_has_one_big_unit(stack: Any) -> None:
    fleet: Fleet = stack.fleet
    truth = fleet.ground_truth(regions=fleet.spec.regions)
    cached = collections.Counter(
        (g.account_id, g.region) for g in truth.gateways if g.status != "not_cached"
    )
    assert max(cached.values()) == 136
    assert _minimum_calls(fleet) == 136 + 3 + 1  # the management account's empty region


def test_without_a_rate_the_scan_finds_more_than_the_old_fixed_rate_and_stays_exact(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    """A service allowing 30 calls/s (burst 10) per (account, region): the old fixed 20/s
    (burst 10) never reaches its limit; a bucket probing for the service's rate does, is
    throttled, and backs off. Every record is still exactly the fleet's, and each throttle
    cost one call sent again, no more."""
    fleet: Fleet = stack.fleet
    stack.emulator.faults = Faults([FaultRule(throttle_rate=30, throttle_burst=10)])
    config = fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=fleet.spec.regions,
        output=str(tmp_path),
        concurrency=64,
    )
    assert config.rate is None  # the default: no ceiling
    result = anyio.run(fleetscan.run_scan, config, backend="asyncio")

    assert result.status == "complete"
    assert_matches_truth(fleet, run_records(str(tmp_path), result.run_id))
    counters = stack.emulator.counters
    throttled = counters.throttles
    assert throttled >= 1, "no window ever held more than 10 + 30 x w calls: no probing"
    assert counters.calls(service="storagegateway") == _minimum_calls(fleet) + throttled
    assert throttled <= 0.1 * _minimum_calls(fleet)


def test_with_a_rate_no_window_holds_more_calls_than_the_ceiling_allows(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """``--rate 15 --burst 5``: the emulator, metering 15 calls/s with a burst of 15 (10 of
    them slack for calls that arrive closer than they left: an emulator stalled by a loaded
    machine takes the calls of up to a second at once), throttles nothing; a bucket that
    probed past 15/s would drain that slack within 4 s of its 139 calls (~9 s)."""
    fleet: Fleet = stack.fleet
    stack.emulator.faults = Faults([FaultRule(throttle_rate=15, throttle_burst=15)])
    argv = command(stack, tmp_path, "--rate", "15", "--burst", "5", "--concurrency", "64")
    proc = run(argv, stack_env)

    assert proc.returncode == 0, proc.stderr.decode()
    runs = sorted(p.stem for p in tmp_path.glob("manifests/dt=*/*.json"))
    assert len(runs) == 1
    assert_matches_truth(fleet, run_records(str(tmp_path), runs[0]))
    counters = stack.emulator.counters
    assert counters.throttles == 0
    assert counters.calls(service="storagegateway") == _minimum_calls(fleet)
