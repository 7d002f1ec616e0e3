"""`fleetscan scan` command line, run as a user runs it: `python -m fleetscan` in a subprocess.

Bad input must end with one line naming the field, exit code 2, no traceback, no secret, and no
AWS call. Where a test needs to see the ScanConfig the command hands to the engine, a small
script stands in for `fleetscan._commands._progress` (see ENGINE_STUB): running the real engine
needs the emulated fleet, which the scan tests cover; here the subject is the command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fleetscan

SECRET = "Do-Not-Leak/Ext.Id@42"
VALID = ["--accounts", "111122223333", "--role-name", "FleetscanReader"]

# Replaces the command layer's scan runner (fleetscan._commands._progress), which main() imports
# only once the input is valid: the stub
# prints what main() handed over and returns FAKE_EXIT (or raises KeyboardInterrupt).
ENGINE_STUB = """
import json, os, sys, types
import fleetscan._commands

def scan_with_progress(config, *, quiet, log_format, metrics_file=None):
    if os.environ.get("FAKE_INTERRUPT"):
        raise KeyboardInterrupt
    fields = {k: v for k, v in vars(config).items() if not k.startswith("_")}
    fields["external_id"] = None if config.external_id is None else "<set>"
    fields["static_account_ids"] = config.static_account_ids()
    fields["quiet"] = quiet
    fields["log_format"] = log_format
    # Validating the command line needs neither the emulator nor the scan engine nor the audit.
    heavy = ("fleetscan.emulator", "fleetscan._scan", "fleetscan._audit")
    fields["heavy_imports"] = [name for name in heavy if name in sys.modules]
    print(json.dumps(fields, default=str))
    expected_secret = os.environ.get("FAKE_SECRET_CHECK")
    if expected_secret and config.external_id != expected_secret:
        return 99
    return int(os.environ.get("FAKE_EXIT", "0"))

stub = types.ModuleType("fleetscan._commands._progress")
stub.scan_with_progress = scan_with_progress
sys.modules["fleetscan._commands._progress"] = stub
raise SystemExit(fleetscan._commands.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def silent_endpoint() -> Iterator[socket.socket]:
    """A loopback listener every AWS endpoint points at: any call would show up as a connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


@pytest.fixture
def env(tmp_path: Path, silent_endpoint: socket.socket) -> dict[str, str]:
    """A clean AWS environment: fake keys, no ~/.aws, every endpoint on the silent listener."""
    port = silent_endpoint.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSCAN_"))}
    clean.update(
        AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return clean


def fleetscan_cli(
    env: dict[str, str], cwd: Path, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *args],
        env={**env, **extra_env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def with_engine_stub(
    env: dict[str, str], cwd: Path, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENGINE_STUB, *args],
        env={**env, **extra_env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def handed_over(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def assert_usage_error(result: subprocess.CompletedProcess[str], field: str) -> str:
    """Exit 2 and exactly one line, ``fleetscan: error: <field>: <problem>``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fleetscan: error: {field}: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def assert_no_aws_call(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


# -- bad input: exit 2, one line naming the field --------------------------------------------

BAD_FLAGS: list[tuple[list[str], str, str]] = [
    (
        ["--accounts", "11112222333", "--role-name", "R", "--output", "o"],
        "accounts[0]",
        "11 digits",
    ),
    (["--accounts", "111122223333, abc", "--role-name", "R", "--output", "o"], "accounts[1]", ""),
    ([*VALID, "--exclude-accounts", "12", "--output", "o"], "exclude_accounts[0]", "2 digits"),
    ([*VALID, "--exclude-accounts", "111122223333", "--output", "o"], "exclude_accounts", ""),
    (["--role-name", "R", "--output", "o"], "accounts", "nothing to scan"),
    (["--org", "--ou", "ou-1", "--role-name", "R", "--output", "o"], "ous[0]", "OU id"),
    (["--ou", "ou-ab12-cd34ef56", "--role-name", "R", "--output", "o"], "ous", "--org"),
    (["--accounts", "111122223333", "--output", "o"], "role_name", "--role-name"),
    ([*VALID, "--role-arn-template", "arn:aws:iam::{account_id}:role/R"], "role_arn_template", ""),
    (
        ["--org", "--role-arn-template", "arn:aws:iam::123456789012:role/R", "--output", "o"],
        "role_arn_template",
        "{account_id}",
    ),
    (
        ["--org", "--role-arn-template", "arn:aws:iam::{acct}:role/R", "--output", "o"],
        "role_arn_template",
        "unknown placeholder",
    ),
    (
        ["--org", "--role-arn-template", "arn:aws:s3:::{account_id}/x", "--output", "o"],
        "role_arn_template",
        "not an IAM role ARN",
    ),
    (["--org", "--role-name", "ops/Reader", "--output", "o"], "role_name", "IAM"),
    ([*VALID, "--role-session-name", "x", "--output", "o"], "role_session_name", "2-64"),
    ([*VALID, "--role-duration", "60", "--output", "o"], "role_duration_seconds", "900"),
    (
        [*VALID, "--hub-role-arn", "arn:aws:iam::123456789012:role/Hub", "--role-duration", "2h"],
        "role_duration_seconds",
        "3600",
    ),
    ([*VALID, "--hub-role-arn", "Hub", "--output", "o"], "hub_role_arn", "role ARN"),
    ([*VALID, "--partition", "aws-iso", "--output", "o"], "partition", ""),
    ([*VALID, "--regions", "us-east-1,us-east-7", "--output", "o"], "regions[1]", "Storage"),
    ([*VALID, "--regions", "cn-north-1", "--output", "o"], "regions[0]", "aws-cn"),
    ([*VALID, "--regions", "", "--output", "o"], "regions", "empty"),
    ([*VALID, "--concurrency", "0", "--output", "o"], "concurrency", "1 to 10000"),
    ([*VALID, "--rate", "0", "--output", "o"], "rate", "greater than 0"),
    ([*VALID, "--rate", "nan", "--output", "o"], "rate", "finite"),
    ([*VALID, "--burst", "0", "--output", "o"], "burst", ""),
    ([*VALID, "--max-attempts", "21", "--output", "o"], "max_attempts", "1 to 20"),
    ([*VALID, "--connect-timeout", "0", "--output", "o"], "connect_timeout", ""),
    ([*VALID, "--read-timeout", "-1", "--output", "o"], "read_timeout", ""),
    ([*VALID, "--call-timeout", "0", "--output", "o"], "call_timeout", "greater than 0"),
    ([*VALID, "--call-timeout", "inf", "--output", "o"], "call_timeout", "finite"),
    ([*VALID, "--max-object-bytes", "1MiB", "--output", "o"], "max_object_bytes", "5 MiB"),
    (VALID, "output", "--output"),
    ([*VALID, "--output", "o", "--run-id", "../up"], "run_id", ""),
    (["--no-assume-role", "--accounts", "111122223333", "--output", "o"], "accounts", "ambient"),
    (["--org", "--role-name", "R", "--accounts-file", "nope.txt"], "accounts_file", "nope.txt"),
    (["--config", "missing.toml"], "config", "missing.toml"),
]


@pytest.mark.parametrize(
    ("flags", "field", "fragment"), BAD_FLAGS, ids=[f"{f[1]}:{i}" for i, f in enumerate(BAD_FLAGS)]
)
def test_bad_flags_exit_2_naming_the_field(
    env: dict[str, str],
    tmp_path: Path,
    silent_endpoint: socket.socket,
    flags: list[str],
    field: str,
    fragment: str,
) -> None:
    line = assert_usage_error(fleetscan_cli(env, tmp_path, "scan", *flags), field)
    assert fragment in line
    assert_no_aws_call(silent_endpoint)


@pytest.mark.parametrize("output", ["./afile/sub", "afile/sub/deeper", "afile"])
def test_an_output_directory_at_or_below_a_file_exits_2_naming_the_file(
    env: dict[str, str], tmp_path: Path, silent_endpoint: socket.socket, output: str
) -> None:
    (tmp_path / "afile").write_bytes(b"a regular file\n")
    line = assert_usage_error(
        fleetscan_cli(env, tmp_path, "scan", *VALID, "--output", output), "output"
    )
    assert "afile" in line
    assert "is not a directory" in line
    assert (tmp_path / "afile").read_bytes() == b"a regular file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert_no_aws_call(silent_endpoint)


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ('org = true\nrole_name = "R"\nregoins = "all"\n', "regoins", "did you mean 'regions'"),
        ('org = true\nrole_name = "R"\nconcurrency = "lots"\n', "concurrency", "an integer"),
        ("accounts = [111122223333]\n", "accounts[0]", "quotes"),
        ('org = true\nrole_name = "R"\nregions = [us-east-1]\n', "config", "line 3"),
        ('org = true\nrole_name = "R"\nregions = ["us-east-1", "eu-west-9"]\n', "regions[1]", ""),
    ],
)
def test_bad_config_files_exit_2_naming_the_key(
    env: dict[str, str],
    tmp_path: Path,
    silent_endpoint: socket.socket,
    text: str,
    field: str,
    fragment: str,
) -> None:
    (tmp_path / "scan.toml").write_text(text)
    line = assert_usage_error(
        fleetscan_cli(env, tmp_path, "scan", "--config", "scan.toml", "--output", "o"), field
    )
    assert fragment in line
    if field == "config":
        assert "scan.toml" in line
    assert_no_aws_call(silent_endpoint)


@pytest.mark.parametrize(
    ("text", "line_number"),
    [("111122223333\n# next one is short\n11112222333\n", 3), ("account_id\nprod\n", 2)],
)
def test_bad_accounts_files_name_file_and_line(
    env: dict[str, str], tmp_path: Path, text: str, line_number: int
) -> None:
    (tmp_path / "ids.csv").write_text(text)
    line = assert_usage_error(
        fleetscan_cli(env, tmp_path, "scan", "--accounts-file", "ids.csv", "--role-name", "R"),
        "accounts_file",
    )
    assert f"ids.csv:{line_number}:" in line


def test_argparse_errors_exit_2_naming_the_flag(env: dict[str, str], tmp_path: Path) -> None:
    for flags, flag in [
        (["--compress", "zstd"], "--compress"),
        (["--concurrency", "many"], "--concurrency"),
        (["--role-duration", "forever"], "--role-duration"),
        (["--log-format", "xml"], "--log-format"),
    ]:
        result = fleetscan_cli(env, tmp_path, "scan", *VALID, *flags)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert f"argument {flag}" in result.stderr
    assert fleetscan_cli(env, tmp_path).returncode == 2
    assert fleetscan_cli(env, tmp_path, "rescan").returncode == 2


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        [*VALID, "--output", "o", "--external-id", SECRET + " with space"],
        [*VALID, "--output", "o", f"--external-id={SECRET}" + "!" * 1300],
        [*VALID, "--external-id", SECRET, "--concurrency", "0", "--output", "o"],
        ["--no-assume-role", "--external-id", SECRET, "--output", "o"],
        [*VALID, "--output", "o", "--extrnal-id", SECRET],
        [*VALID, "--output", "o", f"--external_id={SECRET}"],
    ],
)
def test_external_id_never_appears_in_stderr(
    env: dict[str, str], tmp_path: Path, flags: list[str]
) -> None:
    result = fleetscan_cli(env, tmp_path, "scan", *flags)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr
    assert SECRET not in result.stdout


def test_external_id_from_a_file_or_the_environment_never_appears(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "scan.toml").write_text(f'org = true\nrole_name = "R"\nexternal_id = "{SECRET}#"\n')
    result = fleetscan_cli(env, tmp_path, "scan", "--config", "scan.toml", "--output", "o")
    assert "external_id" in assert_usage_error(result, "external_id")
    assert SECRET not in result.stderr
    result = fleetscan_cli(
        env, tmp_path, "scan", *VALID, "--output", "o", FLEETSCAN_EXTERNAL_ID=f"{SECRET} x"
    )
    assert_usage_error(result, "external_id")
    assert SECRET not in result.stderr


# -- what the command hands to the engine ------------------------------------------------------


def test_flags_override_the_config_file(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "scan.toml").write_text(
        'org = true\nrole_name = "FileRole"\nregions = ["us-east-1"]\nconcurrency = 10\n'
        'output = "from-file"\ncompress = "gzip"\nrun_id = "file-run"\n'
    )
    config = handed_over(
        with_engine_stub(
            env,
            tmp_path,
            "scan",
            "--config",
            "scan.toml",
            "--concurrency",
            "20",
            "--regions",
            "eu-west-1, eu-central-1",
            "--output",
            "from-flag",
            "--max-object-bytes",
            "64MiB",
        )
    )
    assert config["concurrency"] == 20
    assert config["regions"] == ["eu-west-1", "eu-central-1"]
    assert config["output"] == "from-flag"
    assert config["max_object_bytes"] == 64 << 20
    # What no flag touched comes from the file.
    assert (config["org"], config["role_name"], config["compress"], config["run_id"]) == (
        True,
        "FileRole",
        "gzip",
        "file-run",
    )
    assert config["quiet"] is False
    assert config["log_format"] == "text"
    assert config["heavy_imports"] == []


def test_alternative_flags_replace_the_files_choice(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "scan.toml").write_text(
        'org = true\nous = ["ou-ab12-cd34ef56"]\nrole_name = "FileRole"\noutput = "out"\n'
    )
    template = "arn:{partition}:iam::{account_id}:role/Other"
    config = handed_over(
        with_engine_stub(
            env,
            tmp_path,
            "scan",
            "--config",
            "scan.toml",
            "--accounts",
            "111122223333,444455556666,",
            "--accounts",
            "555566667777",
            "--role-arn-template",
            template,
        )
    )
    assert (config["org"], config["ous"]) == (False, [])
    assert config["static_account_ids"] == ["111122223333", "444455556666", "555566667777"]
    assert (config["role_name"], config["role_arn_template"]) == (None, template)
    ambient = handed_over(
        with_engine_stub(env, tmp_path, "scan", "--config", "scan.toml", "--no-assume-role")
    )
    assert (ambient["assume_role"], ambient["org"], ambient["role_name"]) == (False, False, None)


def test_every_scan_flag_reaches_the_config(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "more.csv").write_text("account_id,name\n444455556666,a\n999988887777,b\n")
    config = handed_over(
        with_engine_stub(
            env,
            tmp_path,
            "scan",
            "--org",
            "--ou",
            "ou-ab12-cd34ef56",
            "--ou",
            "r-ab12",
            "--accounts",
            "111122223333",
            "--accounts-file",
            "more.csv",
            "--exclude-accounts",
            "999988887777",
            "--include-inactive",
            "--role-name",
            "Reader",
            "--external-id",
            SECRET,
            "--role-session-name",
            "audit",
            "--role-duration",
            "45m",
            "--hub-role-arn",
            "arn:aws-us-gov:iam::123456789012:role/Hub",
            "--profile",
            "mgmt",
            "--partition",
            "aws-us-gov",
            "--regions",
            "all",
            "--rate",
            "2.5",
            "--burst",
            "3",
            "--max-attempts",
            "4",
            "--connect-timeout",
            "1.5",
            "--read-timeout",
            "7",
            "--call-timeout",
            "42.5",
            "--output",
            "-",
            "--compress",
            "gzip",
            "--run-id",
            "r1",
            "--file-mode",
            "0640",
            "--checkpoint-interval",
            "5",
            "--stop-grace-seconds",
            "2.5",
            "--dry-run",
            "--quiet",
            "--log-format",
            "json",
        )
    )
    assert config == {
        "org": True,
        "ous": ["ou-ab12-cd34ef56", "r-ab12"],
        # The file's ids join the list; the exclusion applies to the whole list.
        "accounts": ["111122223333", "444455556666", "999988887777"],
        "accounts_file": "more.csv",
        "exclude_accounts": ["999988887777"],
        "organizations": [],  # TOML only: no flag
        "include_inactive": True,
        "role_name": "Reader",
        "role_arn_template": None,
        "external_id": "<set>",
        "role_session_name": "audit",
        "role_duration_seconds": 2700,
        "hub_role_arn": "arn:aws-us-gov:iam::123456789012:role/Hub",
        "assume_role": True,
        "profile": "mgmt",
        "partition": "aws-us-gov",
        "regions": "all",
        "concurrency": 128,
        "rate": 2.5,
        "burst": 3,
        "max_attempts": 4,
        "retry_budget_ratio": 0.5,
        "connect_timeout": 1.5,
        "read_timeout": 7.0,
        "call_timeout": 42.5,
        "output": "-",
        "compress": "gzip",
        "max_object_bytes": 128 << 20,
        "run_id": "r1",
        "dry_run": True,
        "file_mode": 0o640,
        "resume": None,
        "checkpoint_interval": 5.0,
        "stop_grace_seconds": 2.5,
        # --shard needs a directory or S3 output: tests/test_shards.py covers it.
        "shard": None,
        # S3 settings are refused with a non-S3 output: their flags are covered by test_s3_sink.
        "sse": None,
        "sse_kms_key_id": None,
        "bucket_key": False,
        "expected_bucket_owner": None,
        "checksum_algorithm": "CRC32",
        "static_account_ids": ["111122223333", "444455556666"],
        "quiet": True,
        "log_format": "json",
        "heavy_imports": [],
    }


def test_external_id_from_the_environment_and_the_flag_wins(
    env: dict[str, str], tmp_path: Path
) -> None:
    from_env = with_engine_stub(
        env,
        tmp_path,
        "scan",
        *VALID,
        "--dry-run",
        FLEETSCAN_EXTERNAL_ID="env-value",
        FAKE_SECRET_CHECK="env-value",
    )
    assert handed_over(from_env)["external_id"] == "<set>"
    from_flag = with_engine_stub(
        env,
        tmp_path,
        "scan",
        *VALID,
        "--dry-run",
        "--external-id",
        "flag-value",
        FLEETSCAN_EXTERNAL_ID="env-value",
        FAKE_SECRET_CHECK="flag-value",
    )
    assert from_flag.returncode == 0, from_flag.stderr


def test_exit_code_and_interrupt(env: dict[str, str], tmp_path: Path) -> None:
    partial = with_engine_stub(env, tmp_path, "scan", *VALID, "--dry-run", FAKE_EXIT="3")
    assert partial.returncode == 3
    interrupted = with_engine_stub(env, tmp_path, "scan", *VALID, "--dry-run", FAKE_INTERRUPT="1")
    assert interrupted.returncode == 130
    assert interrupted.stderr == ""


def test_bad_input_never_reaches_the_engine(
    env: dict[str, str], tmp_path: Path, silent_endpoint: socket.socket
) -> None:
    """Validation runs before the engine is asked for anything: the stub would print if called."""
    result = with_engine_stub(env, tmp_path, "scan", "--org", "--role-name", "R", "--regions", "x")
    assert_usage_error(result, "regions[0]")
    assert_no_aws_call(silent_endpoint)


# -- help and version ------------------------------------------------------------------------


def test_help_lists_the_commands_and_every_scan_flag(env: dict[str, str], tmp_path: Path) -> None:
    top = fleetscan_cli(env, tmp_path, "--help")
    assert top.returncode == 0
    for command in ("scan", "demo", "emulator"):
        assert command in top.stdout
    scan = fleetscan_cli(env, tmp_path, "scan", "--help")
    assert scan.returncode == 0
    flags = [
        "--config",
        "--org",
        "--ou",
        "--accounts",
        "--accounts-file",
        "--exclude-accounts",
        "--include-inactive",
        "--role-name",
        "--role-arn-template",
        "--external-id",
        "--role-session-name",
        "--role-duration",
        "--hub-role-arn",
        "--no-assume-role",
        "--profile",
        "--partition",
        "--regions",
        "--concurrency",
        "--rate",
        "--burst",
        "--max-attempts",
        "--connect-timeout",
        "--read-timeout",
        "--output",
        "--compress",
        "--max-object-bytes",
        "--run-id",
        "--dry-run",
        "--quiet",
        "--log-format",
    ]
    missing = [flag for flag in flags if flag not in scan.stdout]
    assert missing == []
    demo = fleetscan_cli(env, tmp_path, "demo", "--help")
    assert demo.returncode == 0
    for flag in ("--output", "--accounts", "--seed", "--quiet"):
        assert flag in demo.stdout


def test_version(env: dict[str, str], tmp_path: Path) -> None:
    result = fleetscan_cli(env, tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fleetscan {fleetscan.__version__}"


def test_emulator_command_is_routed_to_the_emulator(env: dict[str, str], tmp_path: Path) -> None:
    result = fleetscan_cli(env, tmp_path, "emulator", "--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
