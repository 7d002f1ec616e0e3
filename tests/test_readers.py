"""The public readers (``fleetscan.read_records`` and friends) on real scans, local and in S3.

Two real scans of the emulated fleet (the second one partial: an account's role is denied), read
back through the public API only, as a user of the library would: both forms (plain and async),
both destinations (a directory, and moto's S3 over HTTP), compared with the fleet's ground truth.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import pytest

import fleetscan
from fleetscan.emulator import Stack

BUCKET = "fleetscan-readers"


def _config(stack: Stack, output: str, **overrides: object) -> fleetscan.ScanConfig:
    values: dict[str, object] = {
        "org": True,
        "role_name": stack.role_name,
        "regions": stack.fleet.spec.regions,
        "output": output,
        "concurrency": 32,
    }
    values.update(overrides)
    return fleetscan.ScanConfig(**values)  # type: ignore[arg-type]


def _truth(stack: Stack) -> set[tuple[str, str, str]]:
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    return {(p.account_id, p.region, p.volume_arn) for p in truth.recovery_points}


def _keys(records: list[dict[str, object]]) -> set[tuple[str, str, str]]:
    return {(str(r["account_id"]), str(r["region"]), str(r["volume_arn"])) for r in records}


async def _two_runs(stack: Stack, dest: str) -> tuple[fleetscan.ScanResult, fleetscan.ScanResult]:
    complete = await fleetscan.run_scan(_config(stack, dest))
    # The second run's only account cannot be assumed into: partial, and newer.
    member = next(a.id for a in stack.fleet.accounts if a.active)
    denied = await fleetscan.run_scan(
        _config(stack, dest, org=False, role_name="NoSuchRole", accounts=(member,))
    )
    return complete, denied


@pytest.mark.parametrize("where", ["local", "s3"])
async def test_readers_on_two_runs(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path, where: str
) -> None:
    if where == "s3":
        boto3.session.Session(region_name="us-east-1").client(
            "s3", endpoint_url=stack_env["AWS_ENDPOINT_URL_S3"]
        ).create_bucket(Bucket=BUCKET)
        dest = f"s3://{BUCKET}/inventory/"
    else:
        dest = str(tmp_path / "inventory")
    complete, partial = await _two_runs(stack, dest)
    assert (complete.status, partial.status) == ("complete", "partial")

    runs = await fleetscan.alist_runs(dest)
    assert [(r.run_id, r.status) for r in runs] == [
        (complete.run_id, "complete"),
        (partial.run_id, "partial"),
    ]
    assert all(isinstance(r, fleetscan.Run) for r in runs)
    assert dt.datetime.fromisoformat(runs[0].started_at) <= dt.datetime.fromisoformat(
        runs[1].started_at
    )
    # "latest" is the newest run whatever its status; complete_only narrows it.
    assert await fleetscan.alatest_run(dest) == partial.run_id
    assert await fleetscan.alatest_run(dest, complete_only=True) == complete.run_id
    assert (await fleetscan.aread_manifest(dest))["run_id"] == partial.run_id
    assert await fleetscan.aread_manifest(dest, complete.run_id) == complete.manifest

    records = [r async for r in fleetscan.aread_records(dest, run=complete.run_id)]
    assert _keys(records) == _truth(stack)
    assert len(records) == len(_truth(stack))
    errors = [r async for r in fleetscan.aread_records(dest, "errors")]
    assert {(e["run_id"], e["operation"]) for e in errors} == {(partial.run_id, "AssumeRole")}


async def test_plain_readers_match_the_async_ones(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    dest = str(tmp_path / "inventory")
    complete, partial = await _two_runs(stack, dest)

    def plain() -> tuple[object, ...]:
        # The plain readers start an event loop of their own: run them off this test's loop.
        return (
            fleetscan.list_runs(dest),
            fleetscan.latest_run(dest),
            fleetscan.latest_run(dest, complete_only=True),
            fleetscan.read_manifest(dest, complete.run_id),
            list(fleetscan.read_records(dest, "gateways", run=complete.run_id)),
        )

    import anyio.to_thread

    runs, latest, latest_complete, manifest, gateways = await anyio.to_thread.run_sync(plain)
    assert runs == await fleetscan.alist_runs(dest)
    assert (latest, latest_complete) == (partial.run_id, complete.run_id)
    assert manifest == complete.manifest
    assert gateways == [
        g async for g in fleetscan.aread_records(dest, "gateways", run=complete.run_id)
    ]
    assert gateways, "the fleet has gateways, so the comparison means something"


def test_stopping_early_and_bad_arguments(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fleetscan.list_runs(str(empty)) == []
    assert fleetscan.latest_run(str(empty)) is None
    with pytest.raises(FileNotFoundError, match="no run with a manifest"):
        fleetscan.read_manifest(str(empty))
    with pytest.raises(ValueError, match="unknown dataset 'volumes'"):
        next(fleetscan.read_records(str(empty), "volumes"))


async def test_a_plain_reader_stopped_early_closes_its_files(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    dest = str(tmp_path / "inventory")
    await fleetscan.run_scan(_config(stack, dest))

    def first_two() -> list[dict[str, object]]:
        records = fleetscan.read_records(dest)
        taken = [next(records), next(records)]
        records.close()  # the reader's event loop and open file end here
        return taken

    import anyio.to_thread

    taken = await anyio.to_thread.run_sync(first_two)
    assert len(taken) == 2
    everything = [r async for r in fleetscan.aread_records(dest)]
    assert taken == everything[:2]
