"""End-to-end scans over real HTTP: aiobotocore -> moto (STS, Organizations, EC2) and the emulator.

Every test compares what fleetscan wrote with the emulated fleet's ground truth, exactly.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import fleetscan
import fleetscan._backpressure
import fleetscan._scan
from fleetscan._sinks import iter_records, read_manifest
from fleetscan.emulator import Fleet
from fleetscan.emulator._faults import FaultRule, Faults


def _config(stack: Any, output: Path, **overrides: Any) -> fleetscan.ScanConfig:
    values: dict[str, Any] = {
        "org": True,
        "role_name": stack.role_name,
        "regions": stack.fleet.spec.regions,
        "output": str(output),
        "concurrency": 64,
    }
    values.update(overrides)
    return fleetscan.ScanConfig(**values)


def _manifest_path(output: Path) -> Path:
    (path,) = output.glob("manifests/dt=*/*.json")
    return path


def _read(output: Path, result: fleetscan.ScanResult, dataset: str) -> list[dict[str, Any]]:
    return list(iter_records(str(output), result.run_id, dataset))


def _assert_matches_truth(
    fleet: Fleet,
    output: Path,
    result: fleetscan.ScanResult,
    *,
    skip_regions: tuple[tuple[str, str], ...] = (),
) -> None:
    truth = fleet.ground_truth(regions=fleet.spec.regions)

    def keep(account: str, region: str) -> bool:
        return (account, region) not in skip_regions

    want_rps = {
        (rp.account_id, rp.region, rp.gateway_arn, rp.volume_arn): (
            rp.recovery_point_time,
            rp.volume_size_bytes,
            rp.volume_usage_bytes,
        )
        for rp in truth.recovery_points
        if keep(rp.account_id, rp.region)
    }
    rows = _read(output, result, "recovery_points")
    got_rps = {
        (r["account_id"], r["region"], r["gateway_arn"], r["volume_arn"]): (
            fleetscan._records.parse_time(r["recovery_point_time"]),
            r["volume_size_bytes"],
            r["volume_usage_bytes"],
        )
        for r in rows
    }
    assert len(rows) == len(got_rps), "a recovery point was written twice"
    assert got_rps == want_rps

    want_gws = {
        g.gateway_arn: (g.status, g.recovery_point_count, g.error_code)
        for g in truth.gateways
        if keep(g.account_id, g.region)
    }
    gw_rows = _read(output, result, "gateways")
    got_gws = {
        g["gateway_arn"]: (g["status"], g["recovery_point_count"], g["error_code"]) for g in gw_rows
    }
    assert len(gw_rows) == len(got_gws), "a gateway was written twice"
    assert got_gws == want_gws

    errors = _read(output, result, "errors")
    offline = {e["gateway_arn"] for e in errors if e["gateway_error_code"] == "GatewayNotConnected"}
    assert offline == {
        arn for (account, region, arn, _) in truth.gateway_errors if keep(account, region)
    }


def test_fault_free_scan_equals_ground_truth_with_minimum_calls(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    fleet: Fleet = stack.fleet
    result = fleetscan_run(_config(stack, tmp_path))

    assert result.status == "complete"
    assert result.exit_code == 0
    _assert_matches_truth(fleet, tmp_path, result)

    truth = fleet.ground_truth()
    # ListAccounts also lists the management account: it is scanned like any member.
    active = [fleet.management_account_id, *(a.id for a in fleet.accounts if a.active)]
    minimum = fleet.minimum_calls(active, fleet.spec.regions)
    counters = stack.emulator.counters
    assert counters.calls(operation="ListGateways") == minimum["ListGateways"]
    assert (
        counters.calls(operation="ListVolumeRecoveryPoints") == minimum["ListVolumeRecoveryPoints"]
    )
    manifest = read_manifest(_manifest_path(tmp_path))
    assert manifest["status"] == "complete"
    assert manifest["summary"]["api_calls"]["AssumeRole"] == len(active)
    assert manifest["summary"]["retries"] == 0
    assert manifest["summary"]["recovery_points"] == len(truth.recovery_points)
    # Records carry the organization's account names.
    names = {a.id: a.name for a in fleet.accounts}
    for row in _read(tmp_path, result, "gateways"):
        assert row["account_name"] == names[row["account_id"]]


def test_a_scan_starts_the_accounts_that_took_most_calls_last_time_first(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    """The run ends with its slowest rate-limited unit: its account must start first.

    One call in flight at a time makes the server see the accounts in the order the scan starts
    them (each account's first ListGateways queues behind the one before)."""
    counters = stack.emulator.counters
    first = fleetscan_run(_config(stack, tmp_path, concurrency=1))
    discovery_order = counters.first_called("ListGateways")
    calls = {
        a["id"]: a["calls"]
        for a in read_manifest(_manifest_path(tmp_path))["summary"]["accounts_scanned"]
    }
    heaviest_first = sorted(discovery_order, key=lambda account: -calls[account])
    assert heaviest_first != discovery_order, "the fleet must not already be in that order"
    # A newer manifest that is torn is passed over: the run before it still says the order.
    torn = tmp_path / "manifests" / "dt=2099-12-31" / "20991231T000000Z-torn00.json"
    torn.parent.mkdir()
    torn.write_bytes(b'{"manifest_version": 2, "status": "compl')
    # So are a stray file and a planted link among the days: nothing is read through a link.
    (tmp_path / "manifests" / "notes.txt").write_text("not a day\n")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (tmp_path / "manifests" / "dt=2099-12-30").symlink_to(elsewhere, target_is_directory=True)

    counters.reset()
    second = fleetscan_run(_config(stack, tmp_path, concurrency=1))

    assert counters.first_called("ListGateways") == heaviest_first
    assert first.status == second.status == "complete"
    _assert_matches_truth(stack.fleet, tmp_path, second)


def test_scan_under_faults_still_equals_ground_truth(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    fleet: Fleet = stack.fleet
    stack.emulator.faults = Faults(
        [
            FaultRule(
                internal_error_rate=0.15,
                internal_error_status=400,
                throttle_rate=30,
                throttle_burst=5,
            ),
            FaultRule(
                operation="ListVolumeRecoveryPoints",
                internal_error_rate=0.15,
                internal_error_status=500,
                throttle_rate=30,
                throttle_burst=5,
            ),
        ]
    )
    result = fleetscan_run(_config(stack, tmp_path, max_attempts=12))

    assert result.status == "complete"
    _assert_matches_truth(fleet, tmp_path, result)
    manifest = read_manifest(_manifest_path(tmp_path))
    assert manifest["summary"]["retries"] > 0
    faults = stack.emulator.counters.snapshot()
    assert faults  # the emulator did inject: the retries above answered them


def test_access_denied_region_and_suspended_account_are_recorded_not_fatal(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    fleet: Fleet = stack.fleet
    populated = sorted(fleet.pairs)
    denied_account, denied_region = populated[0]
    stack.emulator.faults = Faults(
        [FaultRule(account_id=denied_account, region=denied_region, access_denied=True)]
    )
    result = fleetscan_run(_config(stack, tmp_path, include_inactive=True))

    assert result.status == "partial"
    assert result.exit_code == 3
    _assert_matches_truth(fleet, tmp_path, result, skip_regions=((denied_account, denied_region),))
    errors = _read(tmp_path, result, "errors")
    denied = [e for e in errors if e["error_code"] == "AccessDeniedException"]
    assert {(e["account_id"], e["region"]) for e in denied} == {(denied_account, denied_region)}
    assert all(not e["retryable"] and e["attempts"] == 1 for e in denied)
    (suspended,) = [a.id for a in fleet.accounts if not a.active]
    assert any(e["account_id"] == suspended for e in errors)
    manifest = read_manifest(_manifest_path(tmp_path))
    assert manifest["status"] == "partial"
    assert manifest["summary"]["units_failed"] >= 1


def fleetscan_run(config: fleetscan.ScanConfig) -> fleetscan.ScanResult:
    import anyio

    return anyio.run(fleetscan.run_scan, config, backend="asyncio")


async def test_library_scan_yields_records_as_they_come(stack: Any, stack_env: None) -> None:
    fleet: Fleet = stack.fleet
    config = fleetscan.ScanConfig(
        org=True, role_name=stack.role_name, regions=fleet.spec.regions, output="-"
    )
    kinds: Counter[str] = Counter()
    async with contextlib.aclosing(fleetscan.scan(config)) as records:
        async for record in records:
            kinds[record.dataset] += 1
    truth = fleet.ground_truth()
    assert kinds["recovery_points"] == len(truth.recovery_points)
    assert kinds["gateways"] == len(truth.gateways)


@pytest.mark.parametrize("stop_after", [1, 5])
async def test_library_scan_can_stop_early(stack: Any, stack_env: None, stop_after: int) -> None:
    config = fleetscan.ScanConfig(
        org=True, role_name=stack.role_name, regions=stack.fleet.spec.regions, output="-"
    )
    seen = 0
    async with contextlib.aclosing(fleetscan.scan(config)) as records:
        async for _record in records:
            seen += 1
            if seen == stop_after:
                break
    assert seen == stop_after


async def test_a_stop_while_the_accounts_are_listed_ends_the_scan_quietly(
    stack: Any, stack_env: None
) -> None:
    """SIGINT during discovery (Organizations' tree walk) must end the scan like any stop, not
    escape as an exception (it did: a traceback and exit 1 instead of 130)."""
    config = fleetscan.ScanConfig(
        org=True, role_name=stack.role_name, regions=stack.fleet.spec.regions, output="-"
    )
    engine = fleetscan._scan.Engine(config, run_id="stopped")
    engine.request_stop()  # as the signal handler does
    send, receive = anyio.create_memory_object_stream[fleetscan._scan.UnitBatch](8)
    async with receive:
        await engine.run(send)
        batches = [batch async for batch in receive]
    assert (batches, engine.accounts, engine.stats.total_calls) == ([], [], 0)


def test_ou_scope_is_recursive_and_the_manifest_places_each_account(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    fleet: Fleet = stack.fleet
    production = next(ou for ou in fleet.ous if ou.name == "Production")
    nested = next(ou for ou in fleet.ous if ou.parent_id == production.id)
    result = fleetscan_run(_config(stack, tmp_path, ous=(production.id,)))

    expected = {a.id for a in fleet.ou_accounts(production.id) if a.active}
    assert any(a.ou_id == nested.id for a in fleet.accounts if a.id in expected)
    gateway_accounts = {g["account_id"] for g in _read(tmp_path, result, "gateways")}
    truth_accounts = {g.account_id for g in fleet.ground_truth(accounts=sorted(expected)).gateways}
    assert gateway_accounts == truth_accounts

    manifest = read_manifest(_manifest_path(tmp_path))
    placed = {a["id"]: a for a in manifest["summary"]["accounts_scanned"]}
    assert set(placed) == expected
    for account in fleet.accounts:
        if account.id in expected:
            entry = placed[account.id]
            assert entry["ou_ids"][0] == fleet.root_id
            assert entry["ou_ids"][-1] == account.ou_id
            if account.ou_id == nested.id:
                assert entry["ou_path"] == "Root/Production/Production-EU"


def test_every_region_and_account_shares_one_connection_pool(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    """Connections follow --concurrency, not the number of regions (each would have its own
    pool otherwise, and every idle TLS connection holds a 256 KiB read buffer)."""
    fleet: Fleet = stack.fleet
    assert len(fleet.spec.regions) == 4
    result = fleetscan_run(_config(stack, tmp_path, concurrency=2))
    _assert_matches_truth(fleet, tmp_path, result)
    assert 1 <= stack.emulator.counters.connections <= 2


async def test_a_slow_consumer_holds_the_scan_within_its_record_budget(
    stack: Any, stack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records in memory (reserved for answers, built, or waiting for the consumer) stay within
    the budget, plus at most one answer larger than its reservation, however slow the consumer."""
    budgets: list[fleetscan._backpressure.RecordBudget] = []

    def small_budget(cap: int) -> fleetscan._backpressure.RecordBudget:
        budgets.append(fleetscan._backpressure.RecordBudget(40))
        return budgets[-1]

    monkeypatch.setattr(fleetscan._scan, "RecordBudget", small_budget)
    fleet: Fleet = stack.fleet
    config = fleetscan.ScanConfig(
        org=True, role_name=stack.role_name, regions=fleet.spec.regions, output="-"
    )
    recovery_points = 0
    async with contextlib.aclosing(fleetscan.scan(config)) as records:
        async for record in records:
            recovery_points += record.dataset == "recovery_points"
            await anyio.sleep(0.001)  # a consumer slower than the API
    (budget,) = budgets
    assert recovery_points == len(fleet.ground_truth().recovery_points)
    largest = max(len(g.volumes) for g in fleet.iter_gateways()) + 1  # and the gateway record
    assert budget.answers > 0
    assert budget.peak <= budget.cap + largest
    assert (budget.used, budget.outstanding) == (0, 0)  # everything written was released


def test_the_public_names_load_on_first_use() -> None:
    """``fleetscan`` loads its public names lazily: each must still resolve, to the object its
    module defines, and a misspelt one must fail as a missing attribute does."""
    import fleetscan._run

    resolved = {name: getattr(fleetscan, name) for name in fleetscan.__all__}
    assert resolved["scan"] is fleetscan._scan.scan
    assert resolved["run_scan"] is fleetscan._run.run_scan
    assert resolved["ScanStats"] is fleetscan._scan.ScanStats
    assert issubclass(resolved["ConfigError"], resolved["FleetscanError"])
    with pytest.raises(AttributeError, match="scna"):
        fleetscan.scna  # type: ignore[attr-defined]  # noqa: B018
    # ... and late: importing the package alone loads neither the engine nor the AWS SDK.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, fleetscan; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'fleetscan._scan'" not in loaded
    assert "'aiobotocore'" not in loaded
