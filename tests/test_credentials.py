"""Assumed-role credentials: one AssumeRole per account, refreshed before expiry, via a hub.

The clock is the only thing faked (a scan cannot be made to last an hour in a test); every
AssumeRole is real, against the emulator's STS over HTTP.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson

import fleetscan
from fleetscan._aws import AmbientCredentials, AwsClients, acting_as
from fleetscan._credentials import (
    MEMBER_ACTIONS,
    MEMBER_SESSION_POLICY,
    AssumedRoleCredentials,
    RoleAssumer,
)
from fleetscan._sinks import iter_records
from fleetscan.emulator import account_id_from_access_key


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def _direct_call(fn: Any, operation: str) -> dict[str, Any]:
    result: dict[str, Any] = await fn()
    return result


def _assumer(clients: AwsClients) -> RoleAssumer:
    """Member credentials straight from the ambient (management) ones, with no retry layer."""
    return RoleAssumer(
        clients,
        ambient=AmbientCredentials(None),
        sts_region="us-east-1",
        session_name="fleetscan-test",
        duration_seconds=900,
        external_id=None,
        hub_role_arn=None,
        call=_direct_call,
    )


async def test_credentials_refresh_before_expiry_and_only_once(stack: Any, stack_env: None) -> None:
    member = next(a for a in stack.fleet.accounts if a.active)
    clock = Clock()
    async with AwsClients(
        profile=None, max_pool_connections=4, connect_timeout=5, read_timeout=5
    ) as clients:
        assumer = _assumer(clients)
        creds = assumer.credentials_for(stack.role_arn(member.id))
        creds._clock = clock  # the one fake: time

        # Many tasks asking at once cause one AssumeRole.
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(creds.get_frozen_credentials)
        assert creds.refreshes == 1
        first = await creds.get_frozen_credentials()
        assert account_id_from_access_key(first.access_key) == member.id
        # An ExpiredToken answer to keys another call already replaced: the current ones stay.
        creds.expire(first._replace(access_key="ASIAREPLACEDKEYS0000"))
        assert await creds.get_frozen_credentials() == first
        assert creds.refreshes == 1

        clock.now += dt.timedelta(minutes=4)  # 11 minutes left: still fresh
        assert (await creds.get_frozen_credentials()).access_key == first.access_key
        assert creds.refreshes == 1

        clock.now += dt.timedelta(minutes=2)  # 9 minutes left: inside the refresh margin
        second = await creds.get_frozen_credentials()
        assert creds.refreshes == 2
        assert second.access_key != first.access_key
        assert account_id_from_access_key(second.access_key) == member.id

        creds.expire(second)  # as after an ExpiredToken answer to the current keys
        third = await creds.get_frozen_credentials()
        assert creds.refreshes == 3
        assert third.access_key != second.access_key


def test_session_policy_allows_exactly_the_calls_fleetscan_makes() -> None:
    policy = orjson.loads(MEMBER_SESSION_POLICY)
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == sorted(MEMBER_ACTIONS)
    assert all(not a.endswith("*") for a in statement["Action"])
    # The scan's member calls, by service prefix, are exactly these.
    assert {a.split(":")[0] for a in MEMBER_ACTIONS} == {"storagegateway", "ec2"}


def test_scan_through_a_hub_role(stack: Any, stack_env: None, tmp_path: Path) -> None:
    hub = stack.role_arn(stack.fleet.accounts[0].id)
    config = fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        hub_role_arn=hub,
        regions=stack.fleet.spec.regions,
        output=str(tmp_path),
    )
    result = anyio.run(fleetscan.run_scan, config, backend="asyncio")
    assert result.status == "complete"
    rps = list(iter_records(str(tmp_path), result.run_id, "recovery_points"))
    assert len(rps) == len(stack.fleet.ground_truth().recovery_points)
    # One AssumeRole for the hub, one per account scanned.
    assert result.stats.calls["AssumeRole"] == result.stats.accounts + 1


async def test_acting_as_scopes_credentials_to_the_task(stack: Any, stack_env: None) -> None:
    """Two accounts' calls interleaved on one shared client each sign as their own account."""
    members = [a for a in stack.fleet.accounts if a.active][:2]
    seen: dict[str, str] = {}
    async with AwsClients(
        profile=None, max_pool_connections=4, connect_timeout=5, read_timeout=5
    ) as clients:
        assumer = _assumer(clients)
        sts = await clients.client("sts", "us-east-1")

        async def who_am_i(account_id: str, creds: AssumedRoleCredentials) -> None:
            with acting_as(creds):
                for _ in range(3):
                    identity = await sts.get_caller_identity()
                    seen.setdefault(account_id, identity["Account"])
                    assert identity["Account"] == account_id
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(
                    who_am_i, member.id, assumer.credentials_for(stack.role_arn(member.id))
                )
        assert clients.open_clients == 1  # one STS client served both accounts
    assert seen == {m.id: m.id for m in members}
