"""S3 output against moto's S3 server: real HTTP, the real aiobotocore client, real multipart
uploads.

Each test reads the bucket back the way a user would (a listing, GetObject, the manifest,
ListMultipartUploads) with boto3 straight to moto, and checks what the sink promises: the
objects are exactly the manifest's files, their bytes, sha256 and record counts equal the
manifest, every part carried a checksum matching its bytes, and after any run no multipart upload
is left open. Failures come from :mod:`s3_proxy` (moto cannot fail on demand; see there).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import boto3
import orjson
import pytest
from fleet_records import RUN, RUN_ID, fleet_records
from ground_truth import assert_matches_truth
from s3_policies import IAM_ACTION, actions
from s3_proxy import Fault, FaultyS3Proxy

from fleetscan import ConfigError, ScanConfig, SinkError, run_scan
from fleetscan._records import (
    DATASETS,
    SCHEMA_VERSION,
    ErrorRecord,
    Record,
    RecoveryPointRecord,
)
from fleetscan._retry import Backoff
from fleetscan._sinks import RunInfo, S3Options, S3Sink
from fleetscan._sinks._checkpoint import MAX_PENDING_UNITS
from fleetscan._sinks._read import aiter_records, alatest_run, alist_runs, aread_manifest
from fleetscan._sinks._s3 import MIN_PART_BYTES, composite_checksum
from fleetscan._sinks._s3io import S3Reader
from fleetscan.emulator import Stack

BUCKET = "fleetscan-lake"
PREFIX = "inventory/"
DEST = f"s3://{BUCKET}/{PREFIX}"
MIB = 1 << 20
SUMMARY: dict[str, Any] = {"accounts": 20, "retries": 0}
FLEET = fleet_records()
#: Quick retries: the policy is the same, the waits are not what is tested.
FAST = Backoff(base=0.001, cap=0.01)


def options(**overrides: Any) -> S3Options:
    values: dict[str, Any] = {"part_bytes": MIN_PART_BYTES, "backoff": FAST, "max_attempts": 4}
    values.update(overrides)
    return S3Options(**values)


def many_points(count: int) -> Iterator[RecoveryPointRecord]:
    """``count`` distinct recovery points (about 630 bytes each) built from the fleet's."""
    points = [r for r in FLEET if isinstance(r, RecoveryPointRecord)]
    for i in range(count):
        point = points[i % len(points)]
        volume_id = f"vol-{i:08X}"
        yield dataclasses.replace(
            point, volume_id=volume_id, volume_arn=f"{point.gateway_arn}/volume/{volume_id}"
        )


def fleet_rest() -> list[Record]:
    return [r for r in FLEET if not isinstance(r, RecoveryPointRecord)]


def stored(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    """What each dataset must hold once written and parsed back, in order."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in DATASETS}
    for record in records:
        out[record.dataset].append(orjson.loads(orjson.dumps(record)))
    return out


def direct(stack: Stack) -> Any:
    """boto3 straight to moto (never through the proxy): what the bucket really holds."""
    return boto3.client("s3", endpoint_url=stack.moto_endpoint_url)


def open_uploads(stack: Stack) -> list[str]:
    answer = direct(stack).list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX)
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def object_keys(stack: Stack) -> set[str]:
    answer = direct(stack).list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    return {item["Key"] for item in answer.get("Contents", [])}


def manifest_key(run: RunInfo = RUN) -> str:
    return f"{PREFIX}manifests/{run.partition}/{run.run_id}.json"


def read_manifest_object(stack: Stack, run: RunInfo = RUN) -> dict[str, Any]:
    body = direct(stack).get_object(Bucket=BUCKET, Key=manifest_key(run))["Body"].read()
    manifest: dict[str, Any] = orjson.loads(body)
    return manifest


def check_bucket_against_manifest(stack: Stack, manifest: dict[str, Any]) -> dict[str, list[Any]]:
    """Objects == the manifest's files (+ the manifest and the run's checkpoint entries); bytes,
    sha256, records as listed.

    Reads with boto3, hashlib and gzip, independently of fleetscan's readers.
    """
    listed = {PREFIX + entry["path"] for entry in manifest["files"]}
    keys = object_keys(stack)
    checkpoints = {key for key in keys if key.startswith(f"{PREFIX}checkpoints/")}
    assert f"{PREFIX}checkpoints/{RUN.partition}/{RUN_ID}/000000.json" in checkpoints
    assert all(
        key.startswith(f"{PREFIX}checkpoints/{RUN.partition}/{RUN_ID}/") for key in checkpoints
    )
    assert keys - checkpoints == {*listed, manifest_key()}, "an object the manifest does not list"
    assert open_uploads(stack) == []
    records: dict[str, list[Any]] = {name: [] for name in DATASETS}
    for entry in manifest["files"]:
        body = direct(stack).get_object(Bucket=BUCKET, Key=PREFIX + entry["path"])["Body"].read()
        assert len(body) == entry["bytes"]
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        text = gzip.decompress(body) if entry["path"].endswith(".gz") else body
        lines = text.splitlines()
        assert len(lines) == entry["records"]
        records[entry["dataset"]].extend(orjson.loads(line) for line in lines)
    assert {name: len(rows) for name, rows in records.items()} == manifest["records"]
    return records


@pytest.fixture
def bucket(stack: Stack, stack_env: dict[str, str]) -> str:
    direct(stack).create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
async def proxy(
    stack: Stack, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FaultyS3Proxy]:
    """The sink's S3 endpoint becomes the fault-injecting proxy in front of moto."""
    async with FaultyS3Proxy(stack.moto_endpoint_url) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", running.url)
        yield running


async def write_all(sink: S3Sink, records: Iterable[Record]) -> None:
    for record in records:
        await sink.write(record)


# -- a healthy run ----------------------------------------------------------------------------


async def test_units_pending_in_memory_bring_a_commit_however_few_bytes_they_wrote(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    """An S3 commit waits for commit_min_bytes of records or commit_max_age, to keep objects
    few and large; but the sink holds every unit it has not checkpointed, and a fleet of mostly
    empty units writes few bytes: once MAX_PENDING_UNITS are pending, the commit comes anyway,
    so that memory does not grow with the fleet."""
    sink = S3Sink(
        DEST,
        RUN,
        compress="none",
        max_object_bytes=6 * MIB,
        options=options(commit_min_bytes=1 << 40, commit_max_age=1e9),
    )
    await sink.start()

    def entries() -> list[str]:
        return [s.key for s in proxy.requests("PutObject") if "/checkpoints/" in s.key]

    def done(index: int) -> None:
        sink.unit_done((f"{index:012d}", "us-east-1", "*"), {})

    for index in range(MAX_PENDING_UNITS - 1):
        done(index)
    await sink.commit()
    assert len(entries()) == 1  # the header: a commit this early is skipped
    done(MAX_PENDING_UNITS)
    await sink.commit()
    (header, entry) = entries()
    assert header.endswith("/000000.json")
    assert entry.endswith("/000001.json")
    units = orjson.loads(direct(stack).get_object(Bucket=BUCKET, Key=entry)["Body"].read())
    assert len(units["units"]) == MAX_PENDING_UNITS
    manifest = await sink.finish("complete", SUMMARY)
    assert manifest["status"] == "complete"


async def test_multipart_multi_object_run_reads_back_equal_to_the_manifest(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    owner = stack.management_account_id
    records: list[Record] = [*many_points(20_000), *fleet_rest()]
    sink = S3Sink(
        DEST,
        RUN,
        compress="none",
        max_object_bytes=6 * MIB,
        options=options(sse="AES256", expected_bucket_owner=owner),
    )
    await write_all(sink, records)
    manifest = await sink.finish("complete", SUMMARY)

    assert manifest["status"] == "complete"
    assert manifest["destination"] == DEST
    assert check_bucket_against_manifest(stack, manifest) == stored(records)
    point_files = [e for e in manifest["files"] if e["dataset"] == "recovery_points"]
    assert len(point_files) >= 3
    assert all(
        e["path"].startswith(f"recovery_points/dt=2025-03-01/{RUN_ID}-") for e in point_files
    )

    # Every rolled-over object went up in >= 2 parts, all but the last >= 5 MiB, each with a
    # CRC32 that matches the bytes that went over the wire.
    parts: dict[str, list[Any]] = {}
    for seen in proxy.requests("UploadPart"):
        parts.setdefault(seen.query["uploadId"], []).append(seen)
        assert seen.headers["x-amz-checksum-crc32"] == seen.body_crc32
    assert len(parts) == len(point_files) - 1  # the last, small object is one PutObject
    for uploaded in parts.values():
        assert len(uploaded) >= 2
        assert [int(p.query["partNumber"]) for p in uploaded] == list(range(1, len(uploaded) + 1))
        assert all(p.body_bytes >= MIN_PART_BYTES for p in uploaded[:-1])
        key = uploaded[0].key
        head = direct(stack).head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        digests = [base64.b64decode(p.body_crc32) for p in uploaded]
        assert head["ChecksumCRC32"].split("-")[0] == composite_checksum("CRC32", digests)
        assert head["ServerSideEncryption"] == "AES256"
    for seen in proxy.requests("PutObject"):
        assert seen.headers["x-amz-checksum-crc32"] == seen.body_crc32
    for seen in proxy.requests("PutObject") + proxy.requests("CreateMultipartUpload"):
        assert seen.headers["x-amz-server-side-encryption"] == "AES256"
    # Every request, the probe included, asked S3 to check the bucket's owner.
    assert proxy.expected_owners() == {owner}
    # The manifest was the last thing written.
    assert proxy.seen[-1].operation == "PutObject"
    assert proxy.seen[-1].key == manifest_key()

    # fleetscan's own async readers agree, over the same HTTP path.
    assert await aread_manifest(DEST, RUN_ID) == manifest
    for dataset in DATASETS:
        rows = [row async for row in aiter_records(DEST, RUN_ID, dataset)]
        assert rows == stored(records)[dataset]
    assert await alatest_run(DEST) == RUN_ID
    assert await alist_runs(DEST) == [
        {"run_id": RUN_ID, "status": "complete", "started_at": manifest["started_at"]}
    ]


async def test_gzip_sha256_and_sse_kms_on_every_part(stack: Stack, proxy: FaultyS3Proxy) -> None:
    # Random text compresses to about half: 12 MB of it makes a gzip object of two parts. Each
    # message is at most 500 characters, as the errors schema (and the readers' check) says.
    noisy: list[Record] = [
        ErrorRecord(
            SCHEMA_VERSION, RUN_ID, "2025-03-01T22:30:00.000Z", None, None, None,
            "ListAccounts", "InternalServerError", None, os.urandom(250).hex(), 8, True,
        )
        for _ in range(24_000)
    ]  # fmt: skip
    records = [*noisy, *fleet_rest()]
    key_id = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    sink = S3Sink(
        DEST,
        RUN,
        compress="gzip",
        max_object_bytes=64 * MIB,
        options=options(
            sse="aws:kms",
            sse_kms_key_id=key_id,
            bucket_key_enabled=True,
            checksum_algorithm="SHA256",
        ),
    )
    await write_all(sink, records)
    manifest = await sink.finish("complete", SUMMARY)

    assert check_bucket_against_manifest(stack, manifest) == stored(records)
    assert all(entry["path"].endswith(".ndjson.gz") for entry in manifest["files"])
    uploaded = proxy.requests("UploadPart")
    assert len(uploaded) == 2
    for seen in uploaded + proxy.requests("PutObject"):
        assert seen.headers["x-amz-checksum-sha256"] == seen.body_sha256
    for seen in proxy.requests("PutObject") + proxy.requests("CreateMultipartUpload"):
        assert seen.headers["x-amz-server-side-encryption"] == "aws:kms"
        assert seen.headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id
        assert seen.headers["x-amz-server-side-encryption-bucket-key-enabled"] == "true"
    head = direct(stack).head_object(Bucket=BUCKET, Key=uploaded[0].key, ChecksumMode="ENABLED")
    digests = [base64.b64decode(seen.body_sha256) for seen in uploaded]
    assert head["ChecksumSHA256"].split("-")[0] == composite_checksum("SHA256", digests)
    rows = [row async for row in aiter_records(DEST, RUN_ID, "errors")]
    assert rows == stored(records)["errors"]


# -- failures ---------------------------------------------------------------------------------


async def test_a_part_that_fails_for_good_fails_the_run_and_leaves_no_upload(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    # The third part (the first of the second object) answers 500 to every attempt.
    proxy.faults = [Fault("UploadPart", 3, "error", times=None)]
    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    with pytest.raises(SinkError) as failed:
        await write_all(sink, list(many_points(20_000)))
    message = str(failed.value)
    assert "S3 UploadPart of" in message
    assert "(part 1)" in message
    assert "after 4 attempts: InternalError" in message
    assert f"recovery_points/dt=2025-03-01/{RUN_ID}-00001.ndjson" in message
    # The writer stops there; the run then aborts the sink, as run_scan does.
    manifest = await sink.abort("failed", SUMMARY)

    assert manifest["status"] == "failed"
    assert read_manifest_object(stack) == manifest
    failing = [seen for seen in proxy.requests("UploadPart") if seen.fault == "error"]
    assert len(failing) == 4  # max_attempts
    aborted = {seen.query["uploadId"] for seen in proxy.requests("AbortMultipartUpload")}
    assert failing[0].query["uploadId"] in aborted
    assert open_uploads(stack) == []
    # Only the object completed before the failure exists, and the manifest lists exactly it.
    rows = check_bucket_against_manifest(stack, manifest)
    assert [e["path"] for e in manifest["files"]] == [
        f"recovery_points/dt=2025-03-01/{RUN_ID}-00000.ndjson"
    ]
    assert (
        rows["recovery_points"]
        == stored(list(many_points(len(rows["recovery_points"]))))["recovery_points"]
    )
    assert await alatest_run(DEST) is None  # no complete run
    assert await alatest_run(DEST, complete_only=False) == RUN_ID


async def test_cancelled_half_way_aborts_every_upload_and_says_interrupted(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    # The third part is held; the run is cancelled while it waits, as Ctrl-C would.
    proxy.faults = [Fault("UploadPart", 3, "hang")]
    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    async with anyio.create_task_group() as tg:
        tg.start_soon(write_all, sink, list(many_points(20_000)))
        await proxy.holding.wait()
        tg.cancel_scope.cancel()
    manifest = await sink.abort("interrupted", SUMMARY)

    assert manifest["status"] == "interrupted"
    assert open_uploads(stack) == []
    check_bucket_against_manifest(stack, manifest)
    assert len(manifest["files"]) == 1
    with pytest.raises(RuntimeError, match="after finish"):
        await sink.write(FLEET[0])


async def test_an_upload_whose_creation_answer_was_lost_is_found_and_aborted(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    """S3 created the upload but the answer never came back: the sink has no id for it, and
    only ListMultipartUploads can find it. Cancelled right then, nothing may stay open."""
    proxy.faults = [Fault("CreateMultipartUpload", 2, "hang_after_forward")]
    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    async with anyio.create_task_group() as tg:
        tg.start_soon(write_all, sink, list(many_points(20_000)))
        await proxy.holding.wait()
        assert len(open_uploads(stack)) == 1  # created in S3, unknown to the sink
        tg.cancel_scope.cancel()
    manifest = await sink.abort("interrupted", SUMMARY)

    assert manifest["status"] == "interrupted"
    assert open_uploads(stack) == []
    assert proxy.requests("ListMultipartUploads")
    check_bucket_against_manifest(stack, manifest)


async def whole_run_with_a_short_call_timeout(stack: Stack) -> S3Sink:
    """Two objects of several parts each, with one-second deadlines; the run must be whole."""
    records: list[Record] = [*many_points(20_000), *fleet_rest()]
    sink = S3Sink(
        DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options(call_timeout=1.0)
    )
    await write_all(sink, records)
    manifest = await sink.finish("complete", SUMMARY)
    assert manifest["status"] == "complete"
    assert check_bucket_against_manifest(stack, manifest) == stored(records)
    return sink


async def test_a_trickling_answer_is_cut_at_the_call_deadline_and_sent_again(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    """CompleteMultipartUpload's answer comes a byte every half second (its XML would take
    minutes, and the read timeout restarts with every byte): the attempt is cut at
    call_timeout and made again (completing is idempotent); the run is whole."""
    proxy.faults = [Fault("CompleteMultipartUpload", 1, "trickle")]
    with anyio.fail_after(120):  # a hang guard: the trickle alone would take minutes
        sink = await whole_run_with_a_short_call_timeout(stack)

    completes = proxy.requests("CompleteMultipartUpload")
    assert completes[0].fault == "trickle"
    assert [seen.target for seen in completes].count(completes[0].target) == 2
    assert sink.stats.retries >= 1
    assert open_uploads(stack) == []


async def test_a_part_on_a_slow_uplink_gets_a_second_per_64_kib(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    """A request's deadline grows with its body: a 5 MiB part taken in over two seconds is not
    cut at a one-second call_timeout (it has 1 + 80 s), so it is sent once."""
    proxy.faults = [Fault("UploadPart", 1, "slow_read")]
    sink = await whole_run_with_a_short_call_timeout(stack)

    parts = proxy.requests("UploadPart")
    assert parts[0].fault == "slow_read"
    assert parts[0].body_bytes >= MIN_PART_BYTES
    assert [seen.target for seen in parts].count(parts[0].target) == 1
    assert sink.stats.retries == 0


async def test_a_trickling_object_is_read_again_from_where_it_broke_off(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    await write_all(sink, FLEET)
    await sink.finish("complete", SUMMARY)
    proxy.faults = [Fault("GetObject", 1, "trickle", key_contains="manifests/")]
    relpath = manifest_key()[len(PREFIX) :]

    async with S3Reader(DEST, call_timeout=1.0) as reader:
        with anyio.fail_after(60):  # a hang guard: the trickle alone would take many minutes
            body = await reader.read(relpath)

    assert body == direct(stack).get_object(Bucket=BUCKET, Key=manifest_key())["Body"].read()
    first, again = proxy.requests("GetObject")
    assert first.fault == "trickle"
    assert again.headers["range"].startswith("bytes=")
    assert again.headers["range"] != "bytes=0-"  # what arrived before the cut is kept


async def test_transient_s3_errors_are_retried_and_the_run_completes(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    proxy.faults = [
        Fault("UploadPart", 1, "slowdown", times=2),  # 503 SlowDown, twice
        Fault("UploadPart", 2, "reset"),  # the connection drops mid-request
        Fault("CreateMultipartUpload", 2, "lose_answer"),  # S3 acted; the answer was lost
        Fault("CompleteMultipartUpload", 1, "lose_answer"),  # ditto: completing is idempotent
        Fault("PutObject", 1, "error", key_contains="manifests/"),  # 500 on the manifest
    ]
    records: list[Record] = [*many_points(20_000), *fleet_rest()]
    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    await write_all(sink, records)
    manifest = await sink.finish("complete", SUMMARY)

    assert manifest["status"] == "complete"
    assert check_bucket_against_manifest(stack, manifest) == stored(records)
    assert sink.stats.throttles == 2
    # One retry each for the lost answers, the SlowDowns and the manifest's 500; aiohttp itself
    # re-sends a PUT once when a reused connection drops, so the reset may cost ours nothing.
    assert sink.stats.retries >= 5
    assert {seen.fault for seen in proxy.seen} == {"", "slowdown", "reset", "lose_answer", "error"}
    # The upload created by the lost CreateMultipartUpload was swept up before the manifest.
    assert proxy.requests("ListMultipartUploads")
    # Every call this run made is allowed by the writer policy shipped in configs/, and the
    # policy allows nothing else but s3:GetObject, which a run in shards needs (its plan, the
    # shards' manifests: tests/test_shards.py) and this run uses only to check its run id.
    # (HeadObject, the start-up check for an existing manifest, needs s3:GetObject; without it
    # S3 answers 403 and the sink goes on.)
    s3_actions = {IAM_ACTION[seen.operation] for seen in proxy.seen} | {"s3:GetObject"}
    allowed = actions("s3-writer.json")
    assert {a for a in allowed if a.startswith("s3:")} == s3_actions
    assert {a for a in allowed if a.startswith("kms:")} == {"kms:GenerateDataKey", "kms:Decrypt"}


async def test_start_refuses_a_missing_bucket_and_an_existing_run(
    stack: Stack, proxy: FaultyS3Proxy
) -> None:
    missing = S3Sink("s3://no-such-bucket-here/x/", RUN, compress="none", max_object_bytes=MIB)
    with pytest.raises(SinkError, match="NoSuchBucket") as refused:
        await missing.start()
    assert "s3://no-such-bucket-here/x/manifests/" in str(refused.value)

    sink = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    await write_all(sink, fleet_rest())
    await sink.finish("complete", SUMMARY)
    again = S3Sink(DEST, RUN, compress="none", max_object_bytes=6 * MIB, options=options())
    with pytest.raises(ConfigError, match="already has a manifest") as exists:
        await again.write(fleet_rest()[0])
    assert exists.value.field == "run_id"
    assert open_uploads(stack) == []  # the probe's upload was aborted


# -- through the scan and the CLI -------------------------------------------------------------


def _fleetscan(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *args],
        env=full_env,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _scan_args(stack: Stack, *extra: str) -> list[str]:
    regions = ",".join(stack.fleet.spec.regions)
    return ["scan", "--org", "--role-name", stack.role_name, "--regions", regions, *extra]


async def _read_run(dest: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    return {name: [r async for r in aiter_records(dest, run_id, name)] for name in DATASETS}


async def test_cli_scan_to_s3_equals_the_ground_truth(
    stack: Stack, stack_env: dict[str, str], bucket: str
) -> None:
    owner = stack.management_account_id
    args = _scan_args(
        stack,
        "--output", DEST, "--compress", "gzip", "--sse", "AES256",
        "--checksum-algorithm", "SHA256", "--expected-bucket-owner", owner, "--quiet",
    )  # fmt: skip
    proc = await anyio.to_thread.run_sync(lambda: _fleetscan(*args, env=stack_env))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr

    run_id = await alatest_run(DEST)
    assert run_id is not None
    manifest = await aread_manifest(DEST, run_id)
    assert manifest["status"] == "complete"
    assert manifest["compression"] == "gzip"
    rows = await _read_run(DEST, run_id)
    assert_matches_truth(stack.fleet, rows)
    assert {name: len(r) for name, r in rows.items()} == manifest["records"]
    for entry in manifest["files"]:
        head = direct(stack).head_object(
            Bucket=BUCKET, Key=PREFIX + entry["path"], ChecksumMode="ENABLED"
        )
        assert head["ServerSideEncryption"] == "AES256"
        assert "ChecksumSHA256" in head
    assert open_uploads(stack) == []


async def test_cli_scan_whose_upload_fails_for_good_exits_1_with_a_failed_manifest(
    stack: Stack, stack_env: dict[str, str], proxy: FaultyS3Proxy
) -> None:
    proxy.faults = [Fault("PutObject", 1, "error", times=None, key_contains="recovery_points/")]
    env = stack_env | {"AWS_ENDPOINT_URL_S3": proxy.url}
    owner = stack.management_account_id
    args = _scan_args(
        stack,
        "--output", DEST, "--max-attempts", "2", "--quiet", "--sse", "aws:kms",
        "--sse-kms-key-id", "alias/fleetscan", "--bucket-key", "--expected-bucket-owner", owner,
        "--checksum-algorithm", "SHA256",
    )  # fmt: skip
    proc = await anyio.to_thread.run_sync(lambda: _fleetscan(*args, env=env))

    # Every S3 flag reached the wire: each request, each object written.
    assert proxy.expected_owners() == {owner}
    writes = proxy.requests("PutObject") + proxy.requests("CreateMultipartUpload")
    assert {seen.headers["x-amz-server-side-encryption"] for seen in writes} == {"aws:kms"}
    assert {seen.headers["x-amz-server-side-encryption-aws-kms-key-id"] for seen in writes} == {
        "alias/fleetscan"
    }
    assert {seen.headers["x-amz-server-side-encryption-bucket-key-enabled"] for seen in writes} == {
        "true"
    }
    for seen in proxy.requests("PutObject"):
        assert seen.headers["x-amz-checksum-sha256"] == seen.body_sha256

    assert proc.returncode == 1, proc.stderr.decode()
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    assert "S3 PutObject of s3://fleetscan-lake/inventory/recovery_points/dt=" in stderr
    assert "after 2 attempts: InternalError" in stderr
    assert stack_env["AWS_SECRET_ACCESS_KEY"] not in stderr
    run_id = await alatest_run(DEST, complete_only=False)
    assert run_id is not None
    manifest = await aread_manifest(DEST, run_id)
    assert manifest["status"] == "failed"
    assert all(entry["dataset"] != "recovery_points" for entry in manifest["files"])
    assert await alatest_run(DEST) is None
    assert open_uploads(stack) == []


async def test_every_read_of_the_bucket_carries_the_expected_owner(
    stack: Stack, stack_env: dict[str, str], proxy: FaultyS3Proxy
) -> None:
    """A scan told who owns its bucket reads nothing from a bucket someone else owns: not the
    earlier runs it orders its accounts by, not the checkpoint it resumes, not a shard's plan,
    not the run's manifest that ``--workers`` reads back for its summary."""
    proxy.faults = [Fault("PutObject", 1, "error", times=None, key_contains="recovery_points/")]
    env = stack_env | {"AWS_ENDPOINT_URL_S3": proxy.url}
    owner = stack.management_account_id
    flags = ["--output", DEST, "--quiet", "--max-attempts", "2", "--expected-bucket-owner", owner]
    first = await anyio.to_thread.run_sync(lambda: _fleetscan(*_scan_args(stack, *flags), env=env))
    assert first.returncode == 1, first.stderr.decode()  # failed: resumable
    proxy.faults = []
    resumed = await anyio.to_thread.run_sync(
        lambda: _fleetscan(*_scan_args(stack, *flags, "--resume", "latest"), env=env)
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    again = await anyio.to_thread.run_sync(lambda: _fleetscan(*_scan_args(stack, *flags), env=env))
    assert again.returncode == 0, again.stderr.decode()
    shard = await anyio.to_thread.run_sync(
        lambda: _fleetscan(
            *_scan_args(stack, *flags, "--shard", "1/1", "--run-id", "sharded"), env=env
        )
    )
    assert shard.returncode == 0, shard.stderr.decode()
    # --workers: the parent reads the run's manifest its shards wrote, to print the summary.
    workers = await anyio.to_thread.run_sync(
        lambda: _fleetscan(
            *_scan_args(stack, *flags, "--workers", "2", "--run-id", "workers"), env=env
        )
    )
    assert workers.returncode == 0, workers.stderr.decode()

    reads = [seen for seen in proxy.seen if seen.operation in ("GetObject", "ListObjectsV2")]
    read_keys = " ".join(seen.key for seen in reads)
    for read in ("checkpoints/", "manifests/", "shards/"):
        assert read in read_keys
    assert proxy.expected_owners() == {owner}


async def test_a_scan_to_a_bucket_another_account_owns_fails_naming_the_expected_owner(
    stack: Stack, stack_env: dict[str, str], proxy: FaultyS3Proxy
) -> None:
    """The bucket was deleted and re-created by another account: S3 refuses every request (moto
    does not check the owner; the proxy answers as S3 does), the scan writes nothing and says
    which owner it expected, since S3's AccessDenied alone reads as a missing permission."""
    proxy.owner = "999988887777"
    env = stack_env | {"AWS_ENDPOINT_URL_S3": proxy.url}
    owner = stack.management_account_id
    flags = ["--output", DEST, "--quiet", "--expected-bucket-owner", owner]
    proc = await anyio.to_thread.run_sync(lambda: _fleetscan(*_scan_args(stack, *flags), env=env))

    assert proc.returncode == 1, proc.stderr.decode()
    (line,) = proc.stderr.decode().splitlines()
    assert line.startswith(f"fleetscan: error: S3 CreateMultipartUpload of {DEST}manifests/")
    assert f"not owned by account {owner}, the expected bucket owner" in line
    assert {seen.status for seen in proxy.seen} == {403}
    assert object_keys(stack) == set()


async def test_run_scan_to_s3_fails_cleanly_when_the_bucket_refuses(
    stack: Stack, stack_env: dict[str, str], proxy: FaultyS3Proxy
) -> None:
    """The library path: run_scan raises SinkError, the manifest (written last) says failed."""
    proxy.faults = [Fault("PutObject", 1, "error", times=None, key_contains="gateways/")]
    config = ScanConfig(
        org=True,
        role_name=stack.role_name,
        regions=stack.fleet.spec.regions,
        output=DEST,
        max_attempts=2,
    )
    with pytest.raises(SinkError, match="gateways/dt="):
        await run_scan(config)
    (run,) = await alist_runs(DEST)
    assert run["status"] == "failed"
    assert open_uploads(stack) == []
    assert proxy.seen[-1].key.startswith(f"{PREFIX}manifests/")


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "problem"),
    [
        ({"output": "s3://b/x"}, "output", "valid bucket name"),
        ({"output": "s3://fleetscan-lake/a//b/"}, "output", "empty, '.' or '..' segment"),
        ({"sse": "aws:kms", "output": "./out"}, "sse", "applies only to S3 output"),
        ({"checksum_algorithm": "SHA256", "output": "./out"}, "checksum_algorithm", "only to S3"),
        ({"sse": "AES128"}, "sse", "is not one of AES256, aws:kms"),
        ({"sse": "AES256", "sse_kms_key_id": "alias/x"}, "sse_kms_key_id", "needs sse"),
        ({"sse": "AES256", "bucket_key": True}, "bucket_key", "for SSE-KMS"),
        ({"expected_bucket_owner": "1234"}, "expected_bucket_owner", "has 4 digits"),
        ({"checksum_algorithm": "MD5"}, "checksum_algorithm", "is not one of CRC32, SHA256"),
    ],
)
def test_s3_settings_are_validated_naming_the_field(
    values: dict[str, Any], field: str, problem: str
) -> None:
    settings: dict[str, Any] = {"org": True, "role_name": "Reader", "output": DEST, **values}
    with pytest.raises(ConfigError) as refused:
        ScanConfig(**settings)
    assert refused.value.field == field
    assert problem in refused.value.problem


def test_the_cli_refuses_s3_flags_for_a_local_directory_with_exit_2(
    tmp_path: Any, stack: Stack, stack_env: dict[str, str]
) -> None:
    args = _scan_args(stack, "--output", str(tmp_path), "--sse", "aws:kms", "--bucket-key")
    proc = _fleetscan(*args, env=stack_env)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        "fleetscan: error: sse: applies only to S3 output (--output s3://BUCKET/PREFIX/)"
    )
    assert list(tmp_path.iterdir()) == []
