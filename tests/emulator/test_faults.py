"""Fault injection: how rules combine, how they travel as JSON, and (over real HTTP, with real
aiobotocore clients and botocore's retries off) that each fault kind happens at the configured
rate and reaches the client the way AWS's would.

Rate checks use bounds more than four standard deviations wide, so they do not flake; the
client's observations must also equal the server's fault counters exactly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from hypothesis import given
from hypothesis import strategies as st

from fleetscan.emulator import (
    NO_FAULT,
    OPERATIONS,
    EmulatorServer,
    EmulatorThread,
    FaultRule,
    Faults,
    Fleet,
    Gateway,
    TokenBucket,
)
from fleetscan.emulator._faults import FIELD_GROUPS

A = "111111111111"
B = "222222222222"


# -- rules --------------------------------------------------------------------------------------


def test_without_rules_a_call_gets_no_fault() -> None:
    assert Faults().for_call(A, "us-east-1", "ListGateways") is NO_FAULT
    # A scoped rule that injects nothing is no fault either.
    assert Faults([FaultRule(account_id=A)]).for_call(A, "us-east-1", "ListGateways") is NO_FAULT
    # A rule for another account does not apply.
    faults = Faults([FaultRule(account_id=B, internal_error_rate=1.0)])
    assert faults.for_call(A, "us-east-1", "ListGateways") is NO_FAULT


def test_the_most_specific_rule_wins_per_field_group() -> None:
    faults = Faults(
        [
            FaultRule(internal_error_rate=0.1, latency_ms=50, jitter_ms=5),
            FaultRule(account_id=A, internal_error_rate=0.5, internal_error_status=400),
            FaultRule(account_id=A, operation="ListVolumeRecoveryPoints", throttle_rate=5.0),
            FaultRule(region="eu-west-1", malformed_rate=0.2),
            FaultRule(region="eu-west-1", operation="ListGateways", internal_error_rate=0.05),
        ]
    )
    rule = faults.for_call(A, "eu-west-1", "ListVolumeRecoveryPoints")
    assert (rule.internal_error_rate, rule.internal_error_status) == (0.5, 400)  # account rule
    assert (rule.latency_ms, rule.jitter_ms) == (50, 5)  # only the global rule sets latency
    assert (rule.throttle_rate, rule.throttle_burst) == (5.0, 10)  # account + operation
    assert rule.malformed_rate == 0.2  # region rule
    # The effective rule says what to inject, not whom: no scope of its own.
    assert (rule.account_id, rule.region, rule.operation, rule.service) == (None,) * 4

    # Region + operation (two scope fields) beats the account rule (one), status and all.
    rule = faults.for_call(A, "eu-west-1", "ListGateways")
    assert (rule.internal_error_rate, rule.internal_error_status) == (0.05, 500)
    assert rule.throttle_rate is None

    rule = faults.for_call(B, "us-east-1", "ListGateways")
    assert (rule.internal_error_rate, rule.internal_error_status) == (0.1, 500)
    assert rule.malformed_rate == 0.0


def test_rules_scope_to_a_service_and_an_organization() -> None:
    org_a, org_b = "o-aaaaaaaaaa", "o-bbbbbbbbbb"
    # Naming neither a service nor an operation means Storage Gateway, as rules always did.
    storage_gateway = Faults([FaultRule(internal_error_rate=1.0)])
    assert storage_gateway.for_call(A, "us-east-1", "ListGateways").internal_error_rate == 1.0
    assert storage_gateway.for_call(A, "us-east-1", "AssumeRole") is NO_FAULT
    # service=None: every service; naming an operation names its service.
    everywhere = Faults([FaultRule(service=None, latency_ms=5)])
    assert everywhere.for_call(A, "us-east-1", "DescribeRegions").latency_ms == 5
    assert FaultRule(operation="ListAccounts").service == "organizations"
    assert FaultRule(operation="AssumeRole", service=None).service == "sts"
    sts = Faults([FaultRule(service="sts", throttle_rate=0)])
    assert sts.for_call(A, "us-east-1", "GetCallerIdentity").throttle_rate == 0
    assert sts.for_call(A, "us-east-1", "ListAccounts") is NO_FAULT

    # An organization's rule applies to calls made as any of its accounts, and only those.
    faults = Faults(
        [
            FaultRule(organization_id=org_b, operation="ListAccounts", throttle_rate=0),
            FaultRule(organization_id=org_a, service=None, internal_error_rate=0.5),
            FaultRule(account_id=A, service=None, internal_error_rate=0.1),
        ]
    )
    assert faults.for_call(B, "us-east-1", "ListAccounts", org_b).throttle_rate == 0
    assert faults.for_call(B, "us-east-1", "ListRoots", org_b) is NO_FAULT
    assert faults.for_call(B, "us-east-1", "ListAccounts", org_a).throttle_rate is None
    assert faults.for_call(B, "us-east-1", "ListAccounts", None) is NO_FAULT
    # Equally specific (one scope field each, besides the service): the later rule wins.
    assert faults.for_call(A, "us-east-1", "AssumeRole", org_a).internal_error_rate == 0.1


def test_between_equally_specific_rules_the_later_wins() -> None:
    faults = Faults(
        [
            FaultRule(account_id=A, internal_error_rate=0.2),
            FaultRule(account_id=A, internal_error_rate=0.7, internal_error_status=400),
        ]
    )
    rule = faults.for_call(A, "us-east-1", "ListGateways")
    assert (rule.internal_error_rate, rule.internal_error_status) == (0.7, 400)


_rates = st.floats(min_value=0.0, max_value=0.2, allow_nan=False)
_rules = st.builds(
    FaultRule,
    account_id=st.none() | st.sampled_from([A, B]),
    region=st.none() | st.sampled_from(["us-east-1", "eu-west-1"]),
    operation=st.none() | st.sampled_from(OPERATIONS),
    service=st.sampled_from(["storagegateway", None]),
    organization_id=st.none() | st.sampled_from(["o-aaaaaaaaaa", "o-bbbbbbbbbb"]),
    internal_error_rate=_rates,
    internal_error_status=st.sampled_from([400, 500]),
    throttle_rate=st.none() | st.floats(min_value=0.01, max_value=1e4),
    throttle_burst=st.integers(min_value=1, max_value=1000),
    latency_ms=st.floats(min_value=0, max_value=1e4),
    jitter_ms=st.floats(min_value=0, max_value=1e4),
    reset_rate=_rates,
    slow_rate=_rates,
    slow_seconds=st.floats(min_value=0, max_value=1e3),
    malformed_rate=_rates,
    access_denied=st.booleans(),
    empty_page_rate=_rates,
)


def _reference_rule(
    rules: list[FaultRule],
    account_id: str,
    region: str,
    operation: str,
    organization_id: str | None,
) -> dict[str, Any]:
    """What the effective rule injects, worked out from scratch for one call: per field group,
    the values of the most specific matching rule that sets the group (the later between
    equals), else the defaults."""
    ranked = sorted(
        (
            (rule.specificity, index, rule)
            for index, rule in enumerate(rules)
            if rule.matches(account_id, region, operation, organization_id)
        ),
        key=lambda item: (item[0], item[1]),
    )
    values = {name: getattr(NO_FAULT, name) for names in FIELD_GROUPS.values() for name in names}
    for group, names in FIELD_GROUPS.items():
        setting = [rule for _, _, rule in ranked if rule.sets(group)]
        if setting:
            values.update({name: getattr(setting[-1], name) for name in names})
    return values


_calls = st.tuples(
    st.sampled_from([A, B]),
    st.sampled_from(["us-east-1", "eu-west-1"]),
    st.sampled_from(OPERATIONS),
    st.none() | st.sampled_from(["o-aaaaaaaaaa", "o-bbbbbbbbbb"]),
)


@given(st.lists(_rules, max_size=6), st.lists(_calls, min_size=1, max_size=30))
def test_each_call_gets_what_its_own_rules_say_whatever_was_asked_before(
    rules: list[FaultRule], calls: list[tuple[str, str, str, str | None]]
) -> None:
    """Effective rules are cached per call and per set of matching rules: a cache keyed too
    coarsely would hand one call another's faults. Calls repeat, in any order."""
    faults = Faults(rules)
    for call in calls + calls[::-1]:
        rule = faults.for_call(*call)
        expected = _reference_rule(rules, *call)
        assert {name: getattr(rule, name) for name in expected} == expected
        if all(value == getattr(NO_FAULT, name) for name, value in expected.items()):
            assert rule is NO_FAULT


def test_calls_matched_by_the_same_rules_share_one_effective_rule() -> None:
    faults = Faults([FaultRule(latency_ms=5), FaultRule(account_id=A, throttle_rate=1.0)])
    first = faults.for_call(A, "us-east-1", "ListGateways")
    assert faults.for_call(A, "eu-west-1", "ListVolumeRecoveryPoints") is first
    other = faults.for_call(B, "us-east-1", "ListGateways")
    assert other is not first
    assert (other.latency_ms, other.throttle_rate) == (5, None)


@given(st.lists(_rules, max_size=6))
def test_faults_round_trip_through_json(rules: list[FaultRule]) -> None:
    faults = Faults(rules)
    assert Faults.from_json(faults.to_json()) == faults
    assert Faults.from_json(faults.to_json().encode()) == faults
    assert Faults.from_json(faults.to_dict()) == faults
    assert Faults.from_json(faults.to_dict()["rules"]) == faults  # a bare list of rules


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"rules": [{"error_rate": 0.1}]}', "'error_rate'"),
        ('{"rules": [{"internal_error_rate": 1.5}]}', "internal_error_rate"),
        ('{"rules": [{"internal_error_rate": "often"}]}', "internal_error_rate"),
        ('{"rules": [{"internal_error_status": 503}]}', "internal_error_status"),
        ('{"rules": [{"operation": "DeleteGateway"}]}', "operation"),
        ('{"rules": [{"account_id": "12345"}]}', "account_id"),
        ('{"rules": [{"throttle_rate": -1}]}', "throttle_rate"),
        ('{"rules": [{"throttle_burst": 0}]}', "throttle_burst"),
        ('{"rules": [{"latency_ms": -1}]}', "latency_ms"),
        ('{"rules": [{"reset_rate": 0.6, "slow_rate": 0.6}]}', "must not exceed 1"),
        ('{"rules": [{"access_denied": "yes"}]}', "access_denied"),
        ('{"rules": [{"service": "s3"}]}', "service"),
        (
            '{"rules": [{"service": "sts", "operation": "ListAccounts"}]}',
            "belongs to organizations",
        ),
        ('{"rules": [{"organization_id": "123456789012"}]}', "organization_id"),
        ('{"rules": [{"empty_page_rate": 0.7, "reset_rate": 0.7}]}', "must not exceed 1"),
        ('{"rules": {"internal_error_rate": 0.1}}', "list of rules"),
        ('{"rulez": []}', "'rulez'"),
        ('{"rules": [', "not valid JSON"),
        ('{"rules": ["x"]}', "expected an object"),
    ],
)
def test_bad_faults_are_refused_naming_what_is_wrong(text: str, names: str) -> None:
    with pytest.raises(ValueError, match="faults") as info:
        Faults.from_json(text)
    assert names in str(info.value)


def test_token_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1e-6, burst=3)  # refills one token in ~11 days
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    bucket.reconfigure(rate=1e-6, burst=1)
    assert bucket.take() is False


# -- over HTTP ----------------------------------------------------------------------------------


def cached_gateway(fleet: Fleet) -> Gateway:
    return next(g for g in fleet.iter_gateways() if g.is_cached and g.connected)


async def outcomes(
    count: int, call: Callable[[], Awaitable[Any]], concurrency: int = 1
) -> list[Any]:
    """Each call's response or exception, ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one() -> Any:
        async with limit:
            try:
                return await call()
            except Exception as exc:  # the outcome under test
                return exc

    return await asyncio.gather(*(one() for _ in range(count)))


def error_code(outcome: Any) -> str | None:
    return outcome.response["Error"]["Code"] if isinstance(outcome, ClientError) else None


@pytest.mark.parametrize("status", [400, 500])
async def test_internal_errors_happen_at_the_configured_rate_with_the_chosen_status(
    server: EmulatorServer, fleet: Fleet, make_client: Any, status: int
) -> None:
    gateway = cached_gateway(fleet)
    server.faults = Faults([FaultRule(internal_error_rate=0.3, internal_error_status=status)])
    async with make_client(server.endpoint_url, gateway.account_id, gateway.region) as client:
        results = await outcomes(
            400, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn)
        )
        errors = [r for r in results if isinstance(r, ClientError)]
        assert all(isinstance(e, client.exceptions.InternalServerError) for e in errors)
    assert 80 <= len(errors) <= 160
    assert len(errors) == server.counters.faults()["internal_error"]
    for error in errors:
        assert error.response["Error"]["Code"] == "InternalServerError"
        assert error.response["error"]["errorCode"] == "InternalError"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert all(r["GatewayARN"] == gateway.arn for r in results if isinstance(r, dict))


async def test_malformed_bodies_happen_at_the_configured_rate(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    server.faults = Faults([FaultRule(malformed_rate=0.3)])
    bodies: list[tuple[str, bytes]] = []
    async with make_client(
        server.endpoint_url, gateway.account_id, gateway.region, raw_bodies=bodies
    ) as client:
        results = await outcomes(
            400, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn)
        )
    # botocore does not raise on a 200 it cannot parse: the answer just lacks its members.
    assert not any(isinstance(r, Exception) for r in results)
    broken = [r for r in results if "VolumeRecoveryPointInfos" not in r]
    assert all(r["ResponseMetadata"]["HTTPStatusCode"] == 200 for r in broken)
    assert 80 <= len(broken) <= 160
    assert len(broken) == server.counters.faults()["malformed"]
    unparseable = 0
    for _, body in bodies:
        try:
            orjson.loads(body)
        except ValueError:
            unparseable += 1
    assert unparseable == len(broken)


async def test_resets_show_as_connection_errors_at_the_configured_rate(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    server.faults = Faults([FaultRule(reset_rate=0.3)])
    async with make_client(server.endpoint_url, gateway.account_id, gateway.region) as client:
        results = await outcomes(
            400, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn), 8
        )
    resets = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, EndpointConnectionError | ConnectionClosedError) for r in resets)
    assert 80 <= len(resets) <= 160
    assert len(resets) == server.counters.faults()["reset"]


async def test_resets_on_the_emulator_thread_are_connection_errors_too(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    """Resets on the emulator's own thread (not the test's loop) reach the client as connection
    errors too."""
    gateway = cached_gateway(fleet)
    emulator.faults = Faults([FaultRule(reset_rate=1.0)])
    async with make_client(emulator.endpoint_url, gateway.account_id, gateway.region) as client:
        results = await outcomes(
            12, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn), 4
        )
    assert all(isinstance(r, EndpointConnectionError | ConnectionClosedError) for r in results)
    assert emulator.counters.faults()["reset"] == 12


async def test_slow_responses_show_as_read_timeouts_at_the_configured_rate(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    server.faults = Faults([FaultRule(slow_rate=0.3, slow_seconds=60)])
    async with make_client(
        server.endpoint_url, gateway.account_id, gateway.region, read_timeout=2
    ) as client:
        results = await outcomes(
            200, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn), 50
        )
    timeouts = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, ReadTimeoutError) for r in timeouts)
    assert 30 <= len(timeouts) <= 90  # mean 60, sd 6.5
    assert len(timeouts) == server.counters.faults()["slow"]


async def test_latency_delays_but_answers(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    server.faults = Faults([FaultRule(latency_ms=20, jitter_ms=30)])
    async with make_client(server.endpoint_url, gateway.account_id, gateway.region) as client:
        results = await outcomes(
            20, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn), 5
        )
    assert all(r["GatewayARN"] == gateway.arn for r in results)
    assert server.counters.faults()["latency"] == 20


async def test_throttling_comes_from_a_token_bucket_per_account_and_region(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    other_region = next(r for r in fleet.spec.regions if r != gateway.region)
    rate, burst = 0.5, 5
    server.faults = Faults([FaultRule(throttle_rate=rate, throttle_burst=burst)])
    async with make_client(server.endpoint_url, gateway.account_id, gateway.region) as client:
        start = time.monotonic()
        results = await outcomes(
            20, lambda: client.list_volume_recovery_points(GatewayARN=gateway.arn)
        )
        elapsed = time.monotonic() - start
    throttled = [r for r in results if isinstance(r, ClientError)]
    succeeded = sum(isinstance(r, dict) for r in results)
    assert succeeded + len(throttled) == len(results)
    # The full bucket lets the burst through; beyond it, only what refilled meanwhile.
    assert burst <= succeeded <= burst + int(elapsed * rate) + 1
    assert len(throttled) == server.counters.throttles == server.counters.faults()["throttle"]
    for error in throttled:
        assert error_code(error) == "ThrottlingException"
        assert error.response["Error"]["Message"] == "Rate exceeded"
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "error" not in error.response

    # Another region of the same account has its own, full bucket.
    async with make_client(server.endpoint_url, gateway.account_id, other_region) as client:
        others = await outcomes(burst, client.list_gateways)
    assert all(isinstance(r, dict) for r in others)

    # New faults start with fresh buckets.
    server.faults = Faults([FaultRule(throttle_rate=rate, throttle_burst=burst)])
    async with make_client(server.endpoint_url, gateway.account_id, gateway.region) as client:
        again = await outcomes(burst, lambda: client.list_gateways())
    assert all(isinstance(r, dict) for r in again)


async def test_rules_apply_only_to_their_account_region_and_operation(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    gateway = cached_gateway(fleet)
    account, region = gateway.account_id, gateway.region
    other_account = next(a.id for a in fleet.accounts if a.id != account)
    other_region = next(r for r in fleet.spec.regions if r != region)
    # Set from this thread while the server runs in its own.
    emulator.faults = Faults(
        [
            FaultRule(account_id=account, operation="ListGateways", access_denied=True),
            FaultRule(region=other_region, internal_error_rate=1.0),
        ]
    )
    url = emulator.endpoint_url
    async with make_client(url, account, region) as client:
        denied = await outcomes(1, client.list_gateways)
        allowed = await client.list_volume_recovery_points(GatewayARN=gateway.arn)
    assert error_code(denied[0]) == "AccessDeniedException"
    assert denied[0].response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "error" not in denied[0].response
    assert allowed["GatewayARN"] == gateway.arn

    async with make_client(url, other_account, region) as client:
        assert "Gateways" in await client.list_gateways()
    async with make_client(url, other_account, other_region) as client:
        failed = await outcomes(1, client.list_gateways)
    assert error_code(failed[0]) == "InternalServerError"
    assert emulator.counters.faults()["access_denied"] == 1
    assert emulator.counters.faults()["internal_error"] == 1
