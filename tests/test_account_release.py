"""Memory that must not grow with the organization (issue 12 and 16): per-account state is
released when the account's last unit ends, not kept to the end of the scan (at 10,000 accounts,
keeping every account's credentials made peak memory grow with it), a shard does not keep the
run's plan, and a scanning process keeps large short-lived buffers out of malloc's heap. Real
scans, real aiobotocore over loopback, the emulated fleet.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import fleetscan
import fleetscan._run
import fleetscan._shards
from fleetscan._credentials import MEMBER_SESSION_POLICY, AssumedRoleCredentials, RoleAssumer
from fleetscan._scan import ALL, Engine, UnitBatch
from fleetscan._shards import ShardPlan


def org_scan(stack: Any, output: Path, **settings: Any) -> fleetscan.ScanConfig:
    """A scan of the emulated organization into ``output``."""
    return fleetscan.ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=stack.fleet.spec.regions,
        output=str(output),
        **settings,
    )


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


async def test_a_shard_does_not_keep_the_runs_plan_while_it_scans(
    stack: Any,
    stack_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_cycle_collector: None,
) -> None:
    """The plan lists every account of every shard: a shard scanning its share must not hold
    it, or each of N shard processes holds the whole run's accounts."""
    plans: list[weakref.ref[ShardPlan]] = []
    real_write_plan = fleetscan._shards.write_plan

    async def watched_write_plan(store: Any, run_id: str, document: bytes) -> ShardPlan:
        plan = await real_write_plan(store, run_id, document)
        plans.append(weakref.ref(plan))
        return plan

    alive_while_scanning: list[list[bool]] = []
    real_run = Engine.run

    async def watched_run(self: Engine, send: Any) -> None:
        alive_while_scanning.append([plan() is not None for plan in plans])
        await real_run(self, send)

    monkeypatch.setattr(fleetscan._run, "write_plan", watched_write_plan)
    monkeypatch.setattr(Engine, "run", watched_run)
    result = await fleetscan.run_scan(org_scan(stack, tmp_path, run_id="sharded", shard="1/2"))
    assert result.status == "complete"
    assert result.stats.accounts > 0
    assert alive_while_scanning == [[False]]


async def test_the_last_shard_writes_the_runs_manifest_without_reading_the_plan_again(
    stack: Any, stack_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's manifest needs only the plan's outline (its shards, their sizes, the run's
    settings), which a shard keeps; parsing the whole plan again at the end took a moment's
    ~13 MB at 10,000 accounts (orjson's parse of 3.5 MB), the peak of each shard process."""
    parsed: list[str] = []
    real_parse_plan = fleetscan._shards.parse_plan

    def counted_parse_plan(data: bytes, where: str, run_id: str) -> ShardPlan:
        parsed.append(run_id)
        return real_parse_plan(data, where, run_id)

    monkeypatch.setattr(fleetscan._shards, "parse_plan", counted_parse_plan)
    first = await fleetscan.run_scan(org_scan(stack, tmp_path, run_id="outlined", shard="1/2"))
    assert first.run_manifest is None
    parsed.clear()
    last = await fleetscan.run_scan(org_scan(stack, tmp_path, run_id="outlined", shard="2/2"))

    assert last.run_manifest is not None
    assert last.run_manifest["status"] == "complete"
    sizes = [s["accounts"] for s in last.run_manifest["shards"]["shards"]]
    assert sum(sizes) == first.stats.accounts + last.stats.accounts
    assert parsed == ["outlined"]  # once, to find its share


MALLINFO2 = r"""
import ctypes, sys
from fleetscan._commands import main

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no-glibc")
    sys.exit(0)
libc.mallinfo2.restype = MallInfo2
main(["scan"])  # refused (nothing to scan), once the scanning commands' process is set up
large = bytearray(1024 * 1024)  # mapped; freeing it moves glibc's dynamic threshold up to it
del large
before = libc.mallinfo2().hblkhd
buffer = bytearray(256 * 1024)  # asyncio's TLS read buffer
print(libc.mallinfo2().hblkhd - before)
"""


def test_a_scanning_command_keeps_tls_buffers_out_of_mallocs_heap(tmp_path: Path) -> None:
    """A scan opens and closes TLS connections throughout, each with a 256 KiB buffer: in
    glibc's heap they left it fragmented, so peak RSS grew with the length of the run (9 MB
    at 10,000 accounts on uvloop). After the command's setup such a block gets a mapping of
    its own."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", MALLINFO2], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    mapped = done.stdout.split()[-1]
    if mapped == "no-glibc":
        pytest.skip("mallopt and mallinfo2 are glibc's")
    assert int(mapped) >= 256 * 1024


async def test_a_scan_commits_once_enough_units_are_pending_whatever_its_interval(
    stack: Any, stack_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until a commit, a sink holds every finished unit for its checkpoint entry; at 10,000
    accounts a 30-second interval is ~40,000 of them. So the writer also commits every
    MAX_PENDING_UNITS units, and a checkpoint entry never names more. The emulated fleet has a
    few hundred units, not tens of thousands: the bound is lowered here to 4, which only
    changes when commits come."""
    monkeypatch.setattr(fleetscan._run, "MAX_PENDING_UNITS", 4)
    output = tmp_path / "out"
    result = await fleetscan.run_scan(org_scan(stack, output, checkpoint_interval=3600.0))
    assert result.status == "complete"

    (checkpoint,) = output.glob("checkpoints/dt=*/*.ndjson")
    entries = [orjson.loads(line) for line in checkpoint.read_bytes().splitlines()]
    commits = [entry for entry in entries if "units" in entry]
    named = [len(entry["units"]) for entry in commits]
    assert sum(named) > 8 * 4  # (account, region) units, gateways and accounts: many entries
    assert max(named) == 4
    assert len(commits) >= sum(named) / 4
