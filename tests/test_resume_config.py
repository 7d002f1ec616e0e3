"""A resume scans what its run started to scan: the run's configuration is kept in its checkpoint
(without secrets), a resume starts from it, and a setting that changes what is scanned is
refused (exit 2) naming the difference, while pace and timeouts may change.

The scans are real ``python -m fleetscan scan`` processes against the emulated stack, to a local
directory and to S3 (moto); the rules themselves are also checked directly, case by case.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import boto3
import orjson
import pytest
from scan_runs import (
    KILLABLE_FLEET,
    assert_exactly_the_truth,
    checkpoint_of,
    command,
    env,
    manifest_of,
    newest_run,
    resume_command,
    run,
    slow,
    wait_until_scanning,
)

from fleetscan import ConfigError, ScanConfig, run_scan
from fleetscan._config import check_resume, resumed_config, stored_config
from fleetscan.emulator import FleetSpec, Stack

CANARY = "Zq9CanaryExtId"


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return KILLABLE_FLEET


def interrupted(stack: Any, stack_env: dict[str, str], output: Path | str, probe: Path) -> str:
    """A scan of the whole fleet stopped by SIGTERM once it committed a few units: its run id.

    ``probe`` is where its checkpoint appears (the output itself, or a local mirror for S3).
    """
    slow(stack)
    scan = subprocess.Popen(command(stack, output), env=env(stack_env), stderr=subprocess.PIPE)
    wait_until_scanning(scan, probe, lines=3)
    scan.send_signal(signal.SIGTERM)
    _, stderr = scan.communicate(timeout=120)
    assert scan.returncode == 143, stderr.decode()
    return stderr.decode().rsplit("--resume ", 1)[1].split()[0]


def assert_refused(proc: subprocess.CompletedProcess[bytes], *words: str) -> str:
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith("fleetscan: error: resume: run "), line
    for word in words:
        assert word in line, line
    return line


def test_a_local_resume_reuses_the_runs_configuration_and_refuses_another(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = interrupted(stack, stack_env, tmp_path, tmp_path)
    header = orjson.loads(checkpoint_of(tmp_path).read_bytes().split(b"\n", 1)[0])
    regions = list(stack.fleet.spec.regions)
    assert header["config"]["regions"] == regions
    assert header["config"]["org"] is True

    # The review's case: the same run, resumed for one region only, would end "complete".
    assert_refused(
        run(resume_command(tmp_path, "--resume", "latest", "--regions", "us-east-1"), stack_env),
        f"run {run_id} was started with other settings",
        "regions (this resume drops 'us-west-2', 'eu-west-1')",
    )
    assert_refused(
        run(resume_command(tmp_path, "--resume", run_id, "--accounts", "111122223333"), stack_env),
        "org (the run's is True, this resume's False)",
        "accounts (this resume adds '111122223333')",
    )
    assert_refused(
        run(command(stack, tmp_path, "--resume", "latest", "--compress", "gzip"), stack_env),
        "compress (the run's is 'none', this resume's 'gzip')",
    )
    # The library refuses it too: a ScanConfig that scans something else is not this run.
    other = ScanConfig(
        org=True, role_name=stack.role_name, regions=("us-east-1",), output=str(tmp_path),
        resume=run_id,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"regions \(this resume drops"):
        anyio.run(run_scan, other)

    # Only where the run is, and a new pace: the run's own accounts, role and regions are used.
    done = run(resume_command(tmp_path, "--resume", "latest", "--concurrency", "3"), stack_env)
    assert done.returncode == 0, done.stderr.decode()
    assert newest_run(tmp_path) == run_id
    manifest = manifest_of(tmp_path, run_id)
    assert manifest["status"] == "complete"
    assert manifest["summary"]["config"]["regions"] == regions
    assert manifest["summary"]["config"]["concurrency"] == 3
    assert_exactly_the_truth(stack, tmp_path, run_id)


BUCKET = "fleetscan-resume-config"
DEST = f"s3://{BUCKET}/runs/"


def test_an_s3_resume_reuses_the_runs_configuration_and_refuses_another(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.moto_endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    slow(stack)
    scan = subprocess.Popen(command(stack, DEST), env=env(stack_env), stderr=subprocess.PIPE)
    while (
        len(s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/checkpoints/").get("Contents", [])) < 3
    ):
        assert scan.poll() is None, "the scan ended before it committed"
    scan.send_signal(signal.SIGTERM)
    _, stderr = scan.communicate(timeout=120)
    assert scan.returncode == 143, stderr.decode()

    assert_refused(
        run(resume_command(DEST, "--resume", "latest", "--regions", "us-east-1"), stack_env),
        "regions (this resume drops 'us-west-2', 'eu-west-1')",
    )
    done = run(resume_command(DEST, "--resume", "latest"), stack_env)
    assert done.returncode == 0, done.stderr.decode()
    keys = [
        k["Key"] for k in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/manifests/")["Contents"]
    ]
    (manifest_key,) = keys
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["status"] == "complete"
    assert manifest["summary"]["config"]["regions"] == list(stack.fleet.spec.regions)
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    points = [
        orjson.loads(line)["volume_arn"]
        for f in manifest["files"]
        if f["dataset"] == "recovery_points"
        for line in s3.get_object(Bucket=BUCKET, Key="runs/" + f["path"])["Body"].iter_lines()
    ]
    assert sorted(points) == sorted(p.volume_arn for p in truth.recovery_points)


def test_a_checkpoint_without_a_stored_configuration_resumes_with_the_flags_given(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """As written by fleetscan before it kept the configuration: only compression is checked."""
    run_id = interrupted(stack, stack_env, tmp_path, tmp_path)
    checkpoint = checkpoint_of(tmp_path)
    header, rest = checkpoint.read_bytes().split(b"\n", 1)
    old = {k: v for k, v in orjson.loads(header).items() if k not in ("config", "pid", "host")}
    checkpoint.write_bytes(orjson.dumps(old) + b"\n" + rest)

    done = run(command(stack, tmp_path, "--resume", "latest"), stack_env)

    assert done.returncode == 0, done.stderr.decode()
    assert b"did not keep its configuration" in done.stderr
    assert manifest_of(tmp_path, run_id)["status"] == "complete"
    assert_exactly_the_truth(stack, tmp_path, run_id)


# -- the rules, one by one ------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "org": True,
    "role_name": "Reader",
    "regions": ("us-east-1", "eu-west-1"),
    "output": "out",
}


def test_the_stored_configuration_keeps_no_secret() -> None:
    stored = stored_config(ScanConfig(**BASE, external_id=CANARY))
    assert CANARY.encode() not in orjson.dumps(stored)
    assert stored["external_id"] == "<set>"
    assert "output" not in stored
    assert "profile" not in stored


def test_an_external_id_must_be_given_again_and_only_if_the_run_had_one() -> None:
    with_id = stored_config(ScanConfig(**BASE, external_id=CANARY))
    given = {"output": "out", "resume": "latest"}
    with pytest.raises(ConfigError) as refused:
        resumed_config(with_id, given, "r1")
    assert refused.value.field == "external_id"
    assert "give it again" in refused.value.problem
    config = resumed_config(with_id, {**given, "external_id": CANARY}, "r1")
    assert config.external_id == CANARY
    without = stored_config(ScanConfig(**BASE))
    with pytest.raises(ConfigError, match="scanned without one, this resume gives one") as again:
        resumed_config(without, {**given, "external_id": CANARY}, "r1")
    assert CANARY not in str(again.value)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"regions": ("us-east-1",)}, "regions (this resume drops 'eu-west-1')"),
        (
            {"regions": "all"},
            "regions (the run's is ['us-east-1', 'eu-west-1'], this resume's 'all')",
        ),
        ({"role_arn_template": "arn:aws:iam::{account_id}:role/Other"}, "role_name (the run's is"),
        ({"include_inactive": True}, "include_inactive (the run's is False"),
        ({"exclude_accounts": ("111122223333",)}, "exclude_accounts (this resume adds"),
        ({"ous": ("ou-ab12-cdef3456",)}, "ous (this resume adds 'ou-ab12-cdef3456')"),
        ({"file_mode": 0o640}, "file_mode (the run's is 0o600, this resume's 0o640)"),
        ({"partition": "aws-cn", "regions": ("cn-north-1",)}, "partition"),
        ({"assume_role": False, "org": False}, "assume_role"),
    ],
)
def test_a_resume_that_changes_what_is_scanned_is_refused(
    given: dict[str, Any], words: str
) -> None:
    stored = stored_config(ScanConfig(**BASE))
    with pytest.raises(ConfigError) as refused:
        resumed_config(stored, {"output": "out", "resume": "r1", **given}, "r1")
    assert refused.value.field == "resume"
    assert words in refused.value.problem
    assert "drop these settings" in refused.value.problem


def test_pace_and_timeouts_may_change_and_what_is_not_given_is_the_runs() -> None:
    stored = stored_config(ScanConfig(**BASE, concurrency=7, rate=3.0))
    pace = {
        "concurrency": 64, "rate": 50.0, "burst": 30, "max_attempts": 3, "connect_timeout": 2.0,
        "read_timeout": 9.0, "call_timeout": 20.0, "checkpoint_interval": 5.0,
        "stop_grace_seconds": 1.0,
        "role_duration_seconds": 900, "max_object_bytes": 8 << 20, "retry_budget_ratio": 0.1,
    }  # fmt: skip
    config = resumed_config(stored, {"output": "elsewhere", "resume": "r1", **pace}, "r1")
    for key, value in pace.items():
        assert getattr(config, key) == value
    assert config.regions == ("us-east-1", "eu-west-1")
    assert config.role_name == "Reader"
    assert config.org is True
    kept = resumed_config(stored, {"output": "out", "resume": "r1"}, "r1")
    assert (kept.concurrency, kept.rate) == (7, 3.0)
    check_resume(stored, config, "r1")  # the library's own check agrees


def test_a_run_without_a_rate_ceiling_resumes_without_one_unless_given_one() -> None:
    """No ``rate`` (the buckets probe for the service's) is stored as null and resumed as such;
    a resume may set a ceiling (pace). A run stored by an older fleetscan with rate 20 keeps
    it as its ceiling."""
    stored = stored_config(ScanConfig(**BASE))
    assert stored["rate"] is None
    kept = resumed_config(stored, {"output": "out", "resume": "r1"}, "r1")
    assert kept.rate is None
    capped = resumed_config(stored, {"output": "out", "resume": "r1", "rate": 5.0}, "r1")
    assert capped.rate == 5.0
    older = {**stored, "rate": 20.0}
    assert resumed_config(older, {"output": "out", "resume": "r1"}, "r1").rate == 20.0


def test_a_long_account_list_is_named_by_its_difference() -> None:
    accounts = tuple(f"{n:012d}" for n in range(1, 1001))
    stored = stored_config(ScanConfig(**{**BASE, "org": False}, accounts=accounts))
    given = {"output": "out", "resume": "r1", "accounts": (*accounts[5:], "999999999999")}
    with pytest.raises(ConfigError) as refused:
        resumed_config(stored, given, "r1")
    assert "adds '999999999999'" in refused.value.problem
    assert (
        "drops '000000000001', '000000000002', '000000000003' and 2 more" in refused.value.problem
    )
    assert len(refused.value.problem) < 600
