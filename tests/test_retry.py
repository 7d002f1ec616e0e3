"""fleetscan's own retries, over real HTTP against injected faults.

What a user checks: that the InternalServerError Storage Gateway sends with HTTP 400 is retried
(botocore alone does not), that permanent errors are not, that every transient fault kind is
absorbed, and that a dead endpoint is not hammered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

import fleetscan
from fleetscan._sinks import iter_records
from fleetscan.emulator import Fleet
from fleetscan.emulator._faults import FaultRule, Faults


def _scan(stack: Any, output: Path, **overrides: Any) -> fleetscan.ScanResult:
    values: dict[str, Any] = {
        "org": True,
        "role_name": stack.role_name,
        "regions": stack.fleet.spec.regions,
        "output": str(output),
    }
    values.update(overrides)
    return anyio.run(fleetscan.run_scan, fleetscan.ScanConfig(**values), backend="asyncio")


def _busiest_pair(stack: Any) -> tuple[str, str]:
    fleet: Fleet = stack.fleet
    active = {a.id for a in fleet.accounts if a.active}
    return max((p for p in fleet.pairs if p[0] in active), key=lambda p: fleet.pairs[p])


def test_internal_server_error_with_http_400_is_retried_to_the_limit(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    account, region = _busiest_pair(stack)
    stack.emulator.faults = Faults(
        [
            FaultRule(
                account_id=account,
                region=region,
                operation="ListGateways",
                internal_error_rate=1.0,
                internal_error_status=400,
            )
        ]
    )
    result = _scan(stack, tmp_path, max_attempts=4)

    assert result.status == "partial"
    (error,) = [
        e
        for e in iter_records(str(tmp_path), result.run_id, "errors")
        if e["region"] == region and e["account_id"] == account
    ]
    assert error["error_code"] == "InternalServerError"
    assert error["operation"] == "ListGateways"
    assert error["attempts"] == 4
    assert error["retryable"] is True
    counters = stack.emulator.counters
    assert counters.calls(operation="ListGateways", account_id=account, region=region) == 4
    # Everything else was scanned completely.
    rps = list(iter_records(str(tmp_path), result.run_id, "recovery_points"))
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    expected = [r for r in truth.recovery_points if (r.account_id, r.region) != (account, region)]
    assert len(rps) == len(expected)


def test_transient_transport_faults_are_absorbed(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    """Connection resets, answers slower than the read timeout and truncated bodies."""
    stack.emulator.faults = Faults(
        [FaultRule(reset_rate=0.1, slow_rate=0.03, slow_seconds=3.0, malformed_rate=0.1)]
    )
    result = _scan(stack, tmp_path, read_timeout=0.5, max_attempts=10)

    assert result.status == "complete"
    faults = stack.emulator.counters.faults()
    assert faults.get("reset", 0) > 0
    assert faults.get("malformed", 0) > 0
    rps = list(iter_records(str(tmp_path), result.run_id, "recovery_points"))
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    assert sorted(r["volume_arn"] for r in rps) == sorted(
        r.volume_arn for r in truth.recovery_points
    )
    assert result.stats.retries >= faults.get("reset", 0) + faults.get("malformed", 0)


def test_retry_budget_bounds_calls_when_everything_fails(
    stack: Any, stack_env: None, tmp_path: Path
) -> None:
    stack.emulator.faults = Faults([FaultRule(internal_error_rate=1.0, internal_error_status=500)])
    max_attempts = 10
    result = _scan(stack, tmp_path, max_attempts=max_attempts, retry_budget_ratio=0.2)

    assert result.status == "partial"
    units = result.stats.units_planned
    assert result.stats.units_failed == units
    calls = stack.emulator.counters.calls(operation="ListGateways")
    # Without a budget every unit would cost max_attempts calls; with it, about 1.2 plus a floor.
    assert calls < units * max_attempts / 2
    assert calls <= units * 1.2 + 100 + units  # first attempts + budgeted retries
    assert result.stats.retries_denied > 0
    errors = list(iter_records(str(tmp_path), result.run_id, "errors"))
    assert len(errors) == units
