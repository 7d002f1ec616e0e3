"""Per-account state is released when the account's last unit ends, not kept to the end of the
scan: at 10,000 accounts, keeping every account's credentials made peak memory grow with the
organization (issue 12 and 16). Real scans, real aiobotocore over loopback, the emulated fleet.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import fleetscan
from fleetscan._credentials import MEMBER_SESSION_POLICY, AssumedRoleCredentials, RoleAssumer
from fleetscan._scan import ALL, Engine, UnitBatch


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """Objects must be freed by their last reference going away, as a scan goes, not by a
    collection that happens to run: with the collector off, a freed object was truly let go."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_each_accounts_credentials_are_freed_once_its_units_end(
    stack: Any, stack_env: None, monkeypatch: pytest.MonkeyPatch, no_cycle_collector: None
) -> None:
    """Weak references to every account's credentials are dead before the scan ends, each
    soon after its account's last unit, while the engine itself is still alive."""
    made: dict[str, weakref.ref[AssumedRoleCredentials]] = {}
    freed: list[str] = []
    #: How many accounts' credentials were already freed when each next account's were made.
    freed_when_made: list[int] = []
    real_credentials_for = RoleAssumer.credentials_for

    def watched(
        self: RoleAssumer, role_arn: str, policy: str = MEMBER_SESSION_POLICY
    ) -> AssumedRoleCredentials:
        credentials = real_credentials_for(self, role_arn, policy)
        account = role_arn.split(":")[4]
        freed_when_made.append(len(freed))
        made[account] = weakref.ref(credentials, lambda _: freed.append(account))
        return credentials

    monkeypatch.setattr(RoleAssumer, "credentials_for", watched)
    # One call at a time: accounts start in waves (4 preparing, 4 units running), so the
    # last accounts' roles are assumed long after the first accounts have ended.
    config = fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=stack.fleet.spec.regions,
        output="-",
        concurrency=1,
    )
    engine = Engine(config, run_id="release")
    accounts_done: set[str] = set()
    freed_at_end: list[str] = []
    send, receive = anyio.create_memory_object_stream[UnitBatch](64)

    async def scan() -> None:
        await engine.run(send)
        freed_at_end.extend(freed)

    async with anyio.create_task_group() as tg:
        tg.start_soon(scan)
        async with receive:
            async for batch in receive:
                engine.records_written(len(batch.records))
                if batch.key[1:] == (ALL, ALL):
                    accounts_done.add(batch.key[0])

    scanned = {account.id for account in engine.accounts}
    assert len(scanned) > 8
    assert set(made) == scanned == accounts_done
    assert engine.stats.units_failed == 0
    # Every account's credentials were gone when the engine's run ended...
    assert sorted(freed_at_end) == sorted(scanned)
    # ...and not all at the end: accounts' credentials were freed as the scan went on.
    assert freed_when_made[-1] > 0
