"""The commands that read runs back from S3 (`audit`, `diff`, `finalize`) and the public readers,
with `--expected-bucket-owner`: every request they make says which account must own the bucket,
and a bucket another account owns stops them with a clear message and their documented exit code.

One module-wide emulated stack and two runs written to moto's S3 by `fleetscan scan` (the second
one in shards, for `finalize`); each test then reads them through the loopback proxy of
:mod:`s3_proxy`, which records every request and checks the bucket's owner as S3 does (moto
ignores the header: see there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import boto3
import pytest
from fleetscan_cli import run_cli
from s3_policies import IAM_ACTION, actions, allows_request
from s3_proxy import FaultyS3Proxy

import fleetscan
from fleetscan.emulator import FleetSpec, Stack, start_stack

REGIONS = ("us-east-1", "eu-west-1")
BUCKET = "fleetscan-readers"
DEST = f"s3://{BUCKET}/inventory/"
#: Where `fleetscan audit` scanning first writes its run (DEST keeps its two runs).
FRESH = f"s3://{BUCKET}/fresh/"
#: One shard of two of a run, whose manifest `finalize` writes (partial, naming the other).
HALVED = f"s3://{BUCKET}/halved/"
FIRST = "20261202T010000Z-0a0a0a"
SHARDED = "20261202T020000Z-0b0b0b"
#: The account that owns the bucket once someone else has deleted and re-created it.
STRANGER = "999988887777"
#: Judges every run whatever its age: the verdict is not what these tests look at.
LENIENT = ["--max-age", "2000h", "--max-scan-age", "none", "--fail-on", "none"]


@dataclass
class Lake:
    stack: Stack
    env: dict[str, str]

    @property
    def owner(self) -> str:
        """The account that created the bucket (moto's buckets belong to the caller's)."""
        return self.stack.management_account_id

    def scan_args(self, *extra: str) -> list[str]:
        return [
            "--org", "--role-name", self.stack.role_name, "--regions", ",".join(REGIONS), *extra
        ]  # fmt: skip


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """Two runs under DEST: a plain one, then one scanned as shard 1/1 (its manifest written by
    the shard, which `finalize` then finds); under HALVED, shard 1/2 of a run, alone."""
    home = tmp_path_factory.mktemp("aws-home")
    with start_stack(FleetSpec(seed=7, accounts=4, regions=REGIONS)) as stack:
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
        boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=stack.moto_endpoint_url).create_bucket(Bucket=BUCKET)
        found = Lake(stack, env)
        for extra in (
            ["--output", DEST, "--run-id", FIRST],
            ["--output", DEST, "--run-id", SHARDED, "--shard", "1/1"],
            ["--output", HALVED, "--run-id", SHARDED, "--shard", "1/2"],
        ):
            proc = run_cli("scan", *found.scan_args("--quiet", *extra), env=env)
            assert proc.returncode == 0, proc.stderr
        yield found


@pytest.fixture
async def proxy(lake: Lake) -> AsyncIterator[FaultyS3Proxy]:
    """A recording proxy in front of moto that knows the bucket's owner."""
    async with FaultyS3Proxy(lake.stack.moto_endpoint_url, owner=lake.owner) as running:
        yield running


def _commands(lake: Lake, tmp_path: Path) -> dict[str, list[str]]:
    """Each reading command's arguments on the lake's runs (each exits 0 on them, but finalize
    writing a manifest: 3, the run is partial)."""
    return {
        "audit": ["audit", "--input", DEST, *LENIENT, "--report-dir", str(tmp_path / "reports")],
        "audit scanning first": ["audit", *lake.scan_args("--output", FRESH, "--quiet"), *LENIENT],
        "diff": ["diff", "--input", DEST, "--from", FIRST, "--to", SHARDED],
        "finalize": ["finalize", "--output", DEST, "--run-id", SHARDED],
        "finalize writing": ["finalize", "--output", HALVED, "--run-id", SHARDED],
    }


async def _run(lake: Lake, proxy: FaultyS3Proxy, *args: str) -> tuple[int, str, str]:
    env = lake.env | {"AWS_ENDPOINT_URL_S3": proxy.url}
    proc = await anyio.to_thread.run_sync(lambda: run_cli(*args, env=env))
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("command", "code"),
    [("audit", 0), ("audit scanning first", 0), ("diff", 0), ("finalize", 0),
     ("finalize writing", 3)],
)  # fmt: skip
async def test_every_request_of_a_reading_command_carries_the_expected_owner(
    lake: Lake, proxy: FaultyS3Proxy, tmp_path: Path, command: str, code: int
) -> None:
    """Listings, manifests, record files (and the audit's comparison with the run before, with
    --report-dir), the shards' plan and manifests, the manifest finalize writes: all of them
    name the owner."""
    args = _commands(lake, tmp_path)[command]
    got, _, stderr = await _run(lake, proxy, *args, "--expected-bucket-owner", lake.owner)

    assert got == code, stderr
    operations = {seen.operation for seen in proxy.seen}
    assert "GetObject" in operations
    if not command.startswith("finalize"):  # finalize reads by name only
        assert "ListObjectsV2" in operations
        data = [s.key for s in proxy.requests("GetObject") if "/recovery_points/" in s.key]
        assert data, "no record file was read"
    else:
        assert any("/shards/" in seen.key for seen in proxy.seen)
    if command == "finalize writing":
        (written,) = [s.key for s in proxy.requests("PutObject") if s.status == 200]
        assert written.startswith("halved/manifests/")
    assert proxy.expected_owners() == {lake.owner}
    # What each command needs is what configs/iam says it needs: a reading command, the reader
    # policy; finalize, what the writer policy gives a shard to read and write the manifest with.
    policy = "s3-writer.json" if command.startswith("finalize") else "s3-reader.json"
    if command != "audit scanning first":  # the scan writes, and needs the writer policy too
        for seen in proxy.seen:
            prefix = seen.key.partition("/")[0] + "/" if seen.key else "inventory/"
            where = {"bucket": BUCKET, "prefix": prefix}
            assert allows_request(policy, seen, **where), (seen.operation, seen.key, seen.query)


@pytest.mark.parametrize(("command", "code"), [("audit", 1), ("diff", 2), ("finalize", 1)])
async def test_a_bucket_another_account_owns_stops_the_command_clearly(
    lake: Lake, proxy: FaultyS3Proxy, tmp_path: Path, command: str, code: int
) -> None:
    """The bucket was deleted and re-created by another account: S3 refuses the first request,
    and the command says so in one line, with its code for a run it cannot read (diff: 2, never
    the 1 of --fail-on; audit: 1; finalize: 1, fatal)."""
    proxy.owner = STRANGER
    args = _commands(lake, tmp_path)[command]
    got, stdout, stderr = await _run(lake, proxy, *args, "--expected-bucket-owner", lake.owner)

    assert got == code, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith("fleetscan: error: ")
    assert f"s3://{BUCKET}/inventory/" in line
    assert f"not owned by account {lake.owner}, the expected bucket owner" in line
    # ... or a permission is missing: from the file of configs/iam this command needs.
    policy = "s3-writer.json" if command == "finalize" else "s3-reader.json"
    assert f"a permission is missing: see configs/iam/{policy})" in line
    assert stdout == ""
    assert proxy.seen
    assert {seen.status for seen in proxy.seen} == {403}  # nothing was read
    assert lake.env["AWS_SECRET_ACCESS_KEY"] not in stderr


@pytest.mark.parametrize(
    ("command", "owner", "problem"),
    [
        ("audit", "1234", "'1234' has 4 digits; an AWS account id has exactly 12"),
        ("diff", "12345678901x", "'12345678901x' is not an AWS account id (exactly 12 digits)"),
        ("finalize", "", "is empty; an AWS account id has exactly 12 digits"),
        ("audit", "local", "applies only to S3 (s3://BUCKET/PREFIX/)"),
        ("diff", "local", "applies only to S3 (s3://BUCKET/PREFIX/)"),
        ("finalize", "local", "applies only to S3 (s3://BUCKET/PREFIX/)"),
    ],
)
def test_a_bad_expected_owner_exits_2_naming_it(
    tmp_path: Path, command: str, owner: str, problem: str
) -> None:
    """Checked as the scan checks it, before any request: 12 digits, and for S3 only."""
    source = DEST
    if owner == "local":
        source, owner = str(tmp_path), "111122223333"
    where = "--output" if command == "finalize" else "--input"
    args = {
        "audit": ["audit", "--input", source, "--max-age", "1d"],
        "diff": ["diff", "--input", source],
        "finalize": ["finalize", "--output", source, "--run-id", SHARDED],
    }[command]
    assert where in args
    proc = run_cli(*args, f"--expected-bucket-owner={owner}", env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"fleetscan: error: --expected-bucket-owner: {problem}")


async def test_the_public_readers_send_the_expected_owner(
    lake: Lake, proxy: FaultyS3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library calls behind the commands take it as a keyword, and refuse a bucket another
    account owns with FleetscanError (its message names the expected owner)."""
    for key, value in (lake.env | {"AWS_ENDPOINT_URL_S3": proxy.url}).items():
        monkeypatch.setenv(key, value)
    owner = lake.owner
    runs = await fleetscan.alist_runs(DEST, expected_bucket_owner=owner)
    assert [run.run_id for run in runs] == [FIRST, SHARDED]
    assert await fleetscan.alatest_run(DEST, expected_bucket_owner=owner) == SHARDED
    manifest = await fleetscan.aread_manifest(DEST, FIRST, expected_bucket_owner=owner)
    records = fleetscan.aread_records(DEST, "gateways", run=FIRST, expected_bucket_owner=owner)
    gateways = [record async for record in records]
    assert len(gateways) == manifest["records"]["gateways"]
    policy = fleetscan.Policy.single("2000h")
    audited = await fleetscan.audit(DEST, policy, max_scan_age=None, expected_bucket_owner=owner)
    assert audited.run_id == SHARDED
    compared = await fleetscan.diff_runs(DEST, policy, expected_bucket_owner=owner)
    assert (compared.from_run_id, compared.to_run_id) == (FIRST, SHARDED)
    assert proxy.expected_owners() == {owner}
    # Every request the readers made is one the reader policy allows, and it allows no action
    # they did not use (kms:Decrypt: only for a run written with SSE-KMS, which moto's S3 does
    # not encrypt with a key the policy could be checked against).
    for seen in proxy.seen:
        where = {"bucket": BUCKET, "prefix": "inventory/"}
        assert allows_request("s3-reader.json", seen, **where), (seen.operation, seen.key)
    used = {IAM_ACTION[seen.operation] for seen in proxy.seen}
    assert actions("s3-reader.json") == used | {"kms:Decrypt"}

    proxy.owner = STRANGER
    with pytest.raises(fleetscan.FleetscanError, match=f"not owned by account {owner}"):
        await fleetscan.aread_manifest(DEST, FIRST, expected_bucket_owner=owner)
    with pytest.raises(fleetscan.ConfigError, match="has 3 digits") as refused:
        await fleetscan.aread_manifest(DEST, FIRST, expected_bucket_owner="123")
    assert refused.value.field == "expected_bucket_owner"


def test_the_reports_command_for_more_changes_reads_with_the_same_owner() -> None:
    """An audit report lists the first changes and prints the `fleetscan diff` that shows the
    rest: run as printed, it must pass the owner the audit read with, or S3 reads it unchecked."""
    from fleetscan._audit._diff import RunDiff
    from fleetscan._audit._policy import Policy
    from fleetscan._audit._reports import change_tables

    def note(owner: str | None) -> str:
        diff = RunDiff(
            DEST, FIRST, SHARDED, "", "", Policy.single("24h"), expected_bucket_owner=owner
        )
        diff.counts["stuck"] = 3  # three changes, none kept: all of them "more"
        return change_tables(diff)[-1].note

    owner = "123456789012"
    assert note(owner).endswith(
        f"fleetscan diff --input {DEST} --from {FIRST} --to {SHARDED} "
        f"--expected-bucket-owner {owner}"
    )
    assert "--expected-bucket-owner" not in note(None)
