"""Interrupt runs written to S3 (SIGKILL, SIGTERM) and resume them: nothing lost, nothing twice,
nothing left behind.

Scans are real `python -m fleetscan scan` subprocesses writing to moto's S3 server over HTTP; the
emulator adds latency so that a scan lasts long enough to be killed in the middle of things, and
a short --checkpoint-interval makes commits frequent. The emulated fleet's records are too few
to fill an S3 part, so :mod:`s3_resume_child` (the sink driven as run_scan drives it, with
synthetic units) is what gets killed with multipart uploads open. Everything is read back with
boto3 straight from moto, independently of fleetscan's readers: after every finished run no
multipart upload is open, every object of the run is in the manifest (or is a checkpoint entry),
and the records across all sessions are exactly the expected ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import boto3
import orjson
import pytest
import s3_resume_child as child
from s3_policies import IAM_ACTION, actions, allows_request
from s3_proxy import FaultyS3Proxy

from fleetscan import ConfigError
from fleetscan._sinks import RunInfo, S3Options, S3Sink, load_checkpoint
from fleetscan._sinks._checkpoint import header_line
from fleetscan.emulator import FleetSpec, Stack
from fleetscan.emulator._faults import FaultRule, Faults

BUCKET = "fleetscan-resume"
PREFIX = "lake/"
DEST = f"s3://{BUCKET}/{PREFIX}"
ROOT = Path(__file__).resolve().parent.parent
DATA = ("recovery_points", "gateways", "errors")


@pytest.fixture
def fleet_spec() -> FleetSpec:
    """As tests/test_resume.py: big enough (about 150 calls at 40-60 ms) to be killed mid-scan."""
    return FleetSpec(seed=11, accounts=30, regions=("us-east-1", "us-west-2", "eu-west-1"))


@pytest.fixture
def s3(stack: Stack, stack_env: dict[str, str]) -> Any:
    """boto3 straight to moto, with the bucket created."""
    client = boto3.client("s3", endpoint_url=stack.moto_endpoint_url)
    client.create_bucket(Bucket=BUCKET)
    return client


# -- reading the bucket -----------------------------------------------------------------------


def keys(s3: Any, under: str = "") -> set[str]:
    found: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + under):
        found.update(item["Key"] for item in page.get("Contents", []))
    return found


def open_uploads(s3: Any) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX).get(
        "Uploads", []
    )
    return uploads


def get(s3: Any, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def run_ids(s3: Any) -> set[str]:
    return {key.split("/")[-2] for key in keys(s3, "checkpoints/")}


def entry_keys(s3: Any, run_id: str) -> list[str]:
    return sorted(k for k in keys(s3, "checkpoints/") if k.split("/")[-2] == run_id)


def manifest_of(s3: Any, run_id: str) -> dict[str, Any]:
    (key,) = [k for k in keys(s3, "manifests/") if k.endswith(f"/{run_id}.json")]
    manifest: dict[str, Any] = orjson.loads(get(s3, key))
    return manifest


def check_run(s3: Any, run_id: str, status: str = "complete") -> dict[str, list[dict[str, Any]]]:
    """What a finished run must be, whatever interrupted it before; returns its rows.

    No upload open; the objects under the prefix are exactly the manifest's files, the manifest
    and the run's checkpoint entries; every file's bytes, sha256 and records are as listed; the
    entries name exactly the manifest's files, and no unit twice.
    """
    manifest = manifest_of(s3, run_id)
    assert manifest["status"] == status
    assert open_uploads(s3) == []
    listed = {PREFIX + f["path"] for f in manifest["files"]}
    manifest_key = f"{PREFIX}manifests/dt={manifest['started_at'][:10]}/{run_id}.json"
    entries = entry_keys(s3, run_id)
    of_run = {k for k in keys(s3) if f"/{run_id}-" in k or f"/{run_id}/" in k or k == manifest_key}
    assert of_run == listed | {manifest_key} | set(entries), "an object the manifest omits"
    documents = [orjson.loads(get(s3, key)) for key in entries]
    assert documents[0]["run_id"] == run_id
    named = [f["path"] for d in documents[1:] for f in d.get("files", [])]
    assert sorted(named) == sorted(f["path"] for f in manifest["files"])
    units = [tuple(u) for d in documents[1:] for u in d.get("units", [])]
    assert len(units) == len(set(units)), "a unit was checkpointed twice"
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in DATA}
    for entry in manifest["files"]:
        body = get(s3, PREFIX + entry["path"])
        assert len(body) == entry["bytes"]
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        lines = body.splitlines()
        assert len(lines) == entry["records"]
        rows[entry["dataset"]].extend(orjson.loads(line) for line in lines)
    return rows


def assert_exactly_the_truth(stack: Stack, rows: dict[str, list[dict[str, Any]]]) -> None:
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    points = Counter(r["volume_arn"] for r in rows["recovery_points"])
    assert max(points.values(), default=1) == 1, "a recovery point was written twice"
    assert set(points) == {p.volume_arn for p in truth.recovery_points}, "records lost"
    gateways = Counter(g["gateway_arn"] for g in rows["gateways"])
    assert max(gateways.values(), default=1) == 1, "a gateway was written twice"
    assert set(gateways) == {g.gateway_arn for g in truth.gateways}
    offline = Counter(
        e["gateway_arn"] for e in rows["errors"] if e["gateway_error_code"] == "GatewayNotConnected"
    )
    assert max(offline.values(), default=1) == 1
    assert set(offline) == {arn for _, _, arn, _ in truth.gateway_errors}


# -- running scans ----------------------------------------------------------------------------


def _command(stack: Stack, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fleetscan", "scan", "--org", "--role-name", stack.role_name,
        "--regions", ",".join(stack.fleet.spec.regions), "--output", DEST,
        "--concurrency", "4", "--checkpoint-interval", "0.02", "--quiet", *extra,
    ]  # fmt: skip


def _env(stack_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack_env


def _slow(stack: Stack) -> None:
    stack.emulator.faults = Faults([FaultRule(latency_ms=40, jitter_ms=20)])


def _scan(stack: Stack, stack_env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_command(stack, *extra), env=_env(stack_env), stderr=subprocess.PIPE)


def _run(
    stack: Stack, stack_env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        _command(stack, *extra), env=_env(stack_env), capture_output=True, timeout=300, check=False
    )


def _wait_until_started(s3: Any, proc: subprocess.Popen[bytes]) -> None:
    """Until the run's checkpoint header exists: the scan has started and can be interrupted."""
    deadline = time.monotonic() + 60
    while not keys(s3, "checkpoints/"):
        assert proc.poll() is None, "the scan ended before it started"
        assert time.monotonic() < deadline, "the scan never started"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, "the scan ended before it could be killed: make the fleet bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


# -- kill and resume a scan -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_twice_at_random_moments_then_resume_gives_exactly_the_truth(
    stack: Stack, stack_env: dict[str, str], s3: Any, seed: int
) -> None:
    rng = random.Random(seed)
    _slow(stack)
    first = _scan(stack, stack_env)
    _wait_until_started(s3, first)
    time.sleep(rng.uniform(0.0, 1.2))
    _kill(first)
    (run_id,) = run_ids(s3)

    # The resumed session is killed too: mid start-up, mid tidying up, or mid-scan.
    second = _scan(stack, stack_env, "--resume", "latest")
    time.sleep(rng.uniform(0.2, 1.0))
    _kill(second)

    done = _run(stack, stack_env, "--resume", "latest")
    assert done.returncode == 0, done.stderr.decode()
    assert run_ids(s3) == {run_id}
    assert_exactly_the_truth(stack, check_run(s3, run_id))


def test_sigterm_stops_gracefully_then_resume_gives_exactly_the_truth(
    stack: Stack, stack_env: dict[str, str], s3: Any
) -> None:
    _slow(stack)
    scan = _scan(stack, stack_env)
    _wait_until_started(s3, scan)
    # Stopped once a unit is committed (not after a fixed delay, which a loaded machine may
    # spend in discovery): the interrupted run then has something to keep.
    (run_id,) = run_ids(s3)
    deadline = time.monotonic() + 120
    while len(entry_keys(s3, run_id)) < 2:
        assert scan.poll() is None, "the scan ended before it committed"
        assert time.monotonic() < deadline, "the scan never committed"
        time.sleep(0.02)
    scan.send_signal(signal.SIGTERM)
    _, stderr = scan.communicate(timeout=60)

    assert scan.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr
    (run_id,) = run_ids(s3)
    assert f"--output {DEST} --resume {run_id}".encode() in stderr
    # The interrupted run is itself consistent: every unit finished is completed, checkpointed
    # and listed; no upload is left open; nothing is written twice.
    interrupted = check_run(s3, run_id, status="interrupted")
    first_files = manifest_of(s3, run_id)["files"]
    volumes = [r["volume_arn"] for r in interrupted["recovery_points"]]
    assert len(volumes) == len(set(volumes))
    done = [u for key in entry_keys(s3, run_id)[1:] for u in orjson.loads(get(s3, key))["units"]]
    assert done, "the scan was stopped before any unit finished"

    resumed = _run(stack, stack_env, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr.decode()
    rows = check_run(s3, run_id)
    assert_exactly_the_truth(stack, rows)
    # What the first session wrote was kept (the manifest lists both sessions' files).
    final_files = manifest_of(s3, run_id)["files"]
    assert all(entry in final_files for entry in first_files)
    assert len(final_files) > len(first_files)


def test_resume_refusals_and_a_run_that_never_committed(
    stack: Stack, stack_env: dict[str, str], s3: Any
) -> None:
    done = _run(stack, stack_env)
    assert done.returncode == 0, done.stderr.decode()
    (finished,) = run_ids(s3)
    for extra, words in [
        (("--resume", finished), b"has finished: nothing to resume"),
        (("--resume", "latest"), b"no unfinished run to resume under " + DEST.encode()),
        (("--resume", "20200101T000000Z-abcdef"), b"has no checkpoint under"),
        (("--run-id", finished), b"already has a manifest"),
    ]:
        refused = _run(stack, stack_env, *extra)
        assert refused.returncode == 2, refused.stderr.decode()
        assert words in refused.stderr
        assert b"Traceback" not in refused.stderr

    # A run killed before its first commit left only its checkpoint's header: a new run may not
    # take its id, and resuming it scans everything.
    # (Started now: a run's checkpoint is under its start date's partition.)
    orphan = RunInfo(run_id="orphan-run", started_at=dt.datetime.now(dt.UTC), version="test")
    header = f"{PREFIX}checkpoints/{orphan.partition}/{orphan.run_id}/000000.json"
    s3.put_object(Bucket=BUCKET, Key=header, Body=header_line(orphan, "none"))
    taken = _run(stack, stack_env, "--run-id", orphan.run_id)
    assert taken.returncode == 2
    assert b"already has a checkpoint" in taken.stderr
    assert b"--resume orphan-run" in taken.stderr
    resumed = _run(stack, stack_env, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr.decode()
    rows = check_run(s3, orphan.run_id)
    assert_exactly_the_truth(stack, rows)


# -- kill the sink with multipart uploads open ------------------------------------------------


@pytest.fixture
async def proxy(stack: Stack, s3: Any) -> Any:
    """A recording proxy in front of moto (no faults): which S3 calls each session makes."""
    async with FaultyS3Proxy(stack.moto_endpoint_url) as running:
        yield running


def _child(mode: str) -> list[str | Path]:
    return [sys.executable, ROOT / "tests" / "s3_resume_child.py", DEST, "child-run", mode]


@pytest.mark.parametrize("moment", ["before the first commit", "after the first commit"])
async def test_sigkill_with_an_upload_open_then_resume_tidies_up_and_writes_each_unit_once(
    stack: Stack, stack_env: dict[str, str], s3: Any, proxy: FaultyS3Proxy, moment: str
) -> None:
    env = _env(stack_env) | {"AWS_ENDPOINT_URL_S3": proxy.url}
    entries = 1 if moment == "before the first commit" else 2

    def state() -> tuple[int, int, int]:
        data = [k for k in keys(s3) if k.removeprefix(PREFIX).split("/")[0] in DATA]
        return len(entry_keys(s3, "child-run")), len(open_uploads(s3)), len(data)

    def wanted(observed: tuple[int, int, int]) -> bool:
        return observed[0] == entries and observed[1] > 0 and observed[2] > 0

    async with await anyio.open_process(_child("new"), env=env) as first:
        # Kill once an upload is open and (before the first commit) an object is complete that no
        # checkpoint names: the resumed session must abort the one and delete the other. The writer
        # is frozen (SIGSTOP) while the state is checked again, so the kill lands in that state.
        while True:
            observed = await anyio.to_thread.run_sync(state)
            if wanted(observed):
                first.send_signal(signal.SIGSTOP)
                await anyio.sleep(0.1)  # requests already sent are answered meanwhile
                if wanted(await anyio.to_thread.run_sync(state)):
                    break
                first.send_signal(signal.SIGCONT)
            assert first.returncode is None, f"the writer ended before the kill: {observed}"
            await anyio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        await first.wait()
    left_open = {u["UploadId"] for u in open_uploads(s3)}
    strays = (
        keys(s3)
        - keys(s3, "checkpoints/")
        - {
            PREFIX + f["path"]
            for key in entry_keys(s3, "child-run")[1:]
            for f in orjson.loads(get(s3, key))["files"]
        }
    )
    assert left_open
    assert bool(strays) == (entries == 1)
    first_session = len(proxy.seen)

    resumed = await anyio.run_process(_child("resume"), env=env, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()

    rows = check_run(s3, "child-run")
    volumes = Counter(r["volume_arn"] for r in rows["recovery_points"])
    assert max(volumes.values()) == 1, "a record was written twice"
    assert set(volumes) == set(child.expected_volumes("child-run")), "records lost"
    assert rows["gateways"] == rows["errors"] == []
    later = proxy.seen[first_session:]
    aborted = {seen.query["uploadId"] for seen in later if seen.operation == "AbortMultipartUpload"}
    assert left_open <= aborted
    deleted = {seen.key for seen in later if seen.operation == "DeleteObject"}
    assert strays <= deleted

    # Every call either session made is allowed by configs/iam (the writer policy, plus the
    # resume policy for what only resuming needs), on exactly the keys and prefixes it made it on.
    for seen in proxy.seen:
        where = {"bucket": BUCKET, "prefix": PREFIX}
        if seen.operation == "ListObjectsV2":
            assert allows_request("s3-resume.json", seen, **where), seen.query["prefix"]
        elif seen.operation == "ListMultipartUploads":
            assert allows_request("s3-writer.json", seen, **where)
        else:
            assert allows_request("s3-writer.json", seen, **where) or allows_request(
                "s3-resume.json", seen, **where
            ), (seen.operation, seen.key)
    # ... and the resume policy grants nothing a resumed session does not use.
    granted = actions("s3-resume.json")
    assert granted == {"s3:GetObject", "s3:ListBucket", "s3:DeleteObject"}
    if strays:
        assert granted <= {IAM_ACTION[seen.operation] for seen in later}


# -- the checkpoint's entries -----------------------------------------------------------------


async def test_a_missing_entry_forgets_its_files_and_units_together(stack: Stack, s3: Any) -> None:
    """PutObject is atomic, so an entry exists whole or not at all; if one goes missing (a gap),
    the units it named are scanned again and the files it named are deleted: still exactly once."""
    run = RunInfo(run_id="gap-run", started_at=child.STARTED, version="test")
    options = S3Options(commit_min_bytes=0)
    sink = S3Sink(DEST, run, compress="none", max_object_bytes=64 << 20, options=options)
    await sink.start()
    for index in range(5):
        for record in child.unit_records(index, run.run_id)[:20]:
            await sink.write(record)
        sink.unit_done(child.unit_key(index), {})
        await sink.commit()
    await sink.abort("interrupted", {})
    entries = entry_keys(s3, run.run_id)
    assert len(entries) == 6  # the header, then one commit per unit
    gone = orjson.loads(get(s3, entries[3]))
    s3.delete_object(Bucket=BUCKET, Key=entries[3])

    checkpoint = await load_checkpoint(DEST, "latest")
    assert checkpoint.run_id == run.run_id
    assert checkpoint.units == {child.unit_key(i) for i in (0, 1, 3, 4)}
    assert {f.path for f in checkpoint.files}.isdisjoint(f["path"] for f in gone["files"])
    assert checkpoint.next_entry == 6
    assert checkpoint.next_seq["recovery_points"] == 5

    sink = S3Sink(
        DEST, run, compress="none", max_object_bytes=64 << 20, options=options, resume=checkpoint
    )
    await sink.start()
    for index in range(5):
        if child.unit_key(index) not in checkpoint.units:
            for record in child.unit_records(index, run.run_id)[:20]:
                await sink.write(record)
            sink.unit_done(child.unit_key(index), {})
    await sink.finish("complete", {})
    rows = check_run(s3, run.run_id)
    volumes = [r["volume_arn"] for r in rows["recovery_points"]]
    assert sorted(volumes) == sorted(
        r.volume_arn for i in range(5) for r in child.unit_records(i, run.run_id)[:20]
    )

    # An entry without the header before it is not a checkpoint to resume from.
    headless = entries[1].replace("/gap-run/", "/headless-run/")
    s3.copy_object(Bucket=BUCKET, Key=headless, CopySource={"Bucket": BUCKET, "Key": entries[1]})
    with pytest.raises(ConfigError, match="has no header entry"):
        await load_checkpoint(DEST, "headless-run")
