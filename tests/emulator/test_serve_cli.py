"""``fleetscan emulator serve`` as a user runs it: a real subprocess whose exported lines drive the
real AWS CLI, stopped with a signal."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetscan.emulator import Fleet, FleetSpec

AWS_CLI = str(Path(sys.executable).parent / "aws")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
SERVE = ["serve", "--seed", "7", "--accounts", "12", "--regions", "us-east-1,us-west-2"]
SERVE += ["--regions", "eu-west-1,ap-southeast-2"]
#: Both entry points: the main CLI and the emulator package's own.
FLEETSCAN = [sys.executable, "-m", "fleetscan", "emulator"]
EMULATOR = [sys.executable, "-m", "fleetscan.emulator"]


def _clean_env(home: Path) -> dict[str, str]:
    """This environment without the developer's AWS settings, so only exported lines count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = str(home / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws-credentials")
    return env


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Started servers, killed at teardown if a test left one running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _start(
    started: list[subprocess.Popen[str]], home: Path, *extra: str
) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    """Start serve and read its output up to the role line: (process, exports, comment lines)."""
    process = subprocess.Popen(
        [*FLEETSCAN, *SERVE, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_clean_env(home),
    )
    started.append(process)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    exports: dict[str, str] = {}
    comments: list[str] = []
    while True:
        line = lines.get(timeout=120)
        assert line is not None, f"serve ended early: {process.wait()} {process.stderr!r}"
        if line.startswith("export "):
            key, _, value = shlex.split(line)[1].partition("=")
            exports[key] = value
        elif line.startswith("#"):
            comments.append(line)
            if line.startswith("# role "):
                return process, exports, comments


def _aws(env: dict[str, str], *args: str) -> dict[str, Any]:
    completed = subprocess.run(
        [AWS_CLI, *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def _member_gateways(env: dict[str, str], fleet: Fleet) -> tuple[list[str], list[str]]:
    """Assume the reader role in the fleet's busiest member with the AWS CLI, then list that
    member's gateways with the CLI: (listed ARNs, the fleet's ARNs)."""
    account_id, region = max(
        (p for p in fleet.pairs if fleet.account(p[0]).active),  # type: ignore[union-attr]
        key=lambda p: fleet.pairs[p],
    )
    role_arn = f"arn:aws:iam::{account_id}:role/FleetscanReader"
    assumed = _aws(env, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "cli")
    credentials = assumed["Credentials"]
    assert isinstance(credentials, dict)
    member_env = env | {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
    listed = _aws(member_env, "storagegateway", "list-gateways", "--region", region)["Gateways"]
    assert isinstance(listed, list)
    return (
        sorted(g["GatewayARN"] for g in listed),
        sorted(g.arn for g in fleet.gateways(account_id, region)),
    )


def test_serve_exports_drive_the_aws_cli_and_sigint_stops_cleanly(
    serve: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    process, exports, comments = _start(serve, tmp_path)

    assert exports["AWS_ENDPOINT_URL_STORAGE_GATEWAY"].startswith("http://127.0.0.1:")
    for service in ("STS", "ORGANIZATIONS", "EC2", "S3"):
        assert exports[f"AWS_ENDPOINT_URL_{service}"].startswith("http://127.0.0.1:")
    assert "AWS_ENDPOINT_URL" not in exports
    assert exports["AWS_DEFAULT_REGION"] == "us-east-1"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= exports.keys()
    assert "AWS_CA_BUNDLE" not in exports
    assert comments[-1] == (
        "# role FleetscanReader in every member account; management account 123456789012"
    )

    env = _clean_env(tmp_path) | exports
    fleet = Fleet(FleetSpec(seed=7, accounts=12, regions=REGIONS))
    listed = _aws(env, "organizations", "list-accounts")["Accounts"]
    assert isinstance(listed, list)
    assert sorted((a["Id"], a["Status"]) for a in listed) == sorted(
        [(a.id, a.status) for a in fleet.accounts] + [("123456789012", "ACTIVE")]
    )
    gateways, expected = _member_gateways(env, fleet)
    assert gateways == expected
    assert len(gateways) > 0

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert "Traceback" not in stderr
    assert "Stopped." in stderr


def test_serve_tls_is_trusted_by_the_aws_cli_and_sigterm_stops_cleanly(
    serve: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    process, exports, _ = _start(serve, tmp_path, "--tls", "--latency-ms", "1")

    assert exports["AWS_ENDPOINT_URL_STORAGE_GATEWAY"].startswith("https://127.0.0.1:")
    ca_bundle = Path(exports["AWS_CA_BUNDLE"])
    assert ca_bundle.read_text().startswith("-----BEGIN CERTIFICATE-----")
    gateways, expected = _member_gateways(
        _clean_env(tmp_path) | exports, Fleet(FleetSpec(seed=7, accounts=12, regions=REGIONS))
    )
    assert gateways == expected

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()
    assert not ca_bundle.exists()  # the throwaway CA went with the server


def test_serve_two_organizations_says_how_to_reach_each(
    serve: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """The second organization is reached as a scanner's ``management_role_arn`` would reach
    it: the ARN printed for it, assumed with the exported keys."""
    process, exports, comments = _start(serve, tmp_path, "--organizations", "2")
    fleet = Fleet(FleetSpec(seed=7, accounts=12, organizations=2, regions=REGIONS))
    printed = [c for c in comments if c.startswith("# organization ")]
    assert len(printed) == 2
    env = _clean_env(tmp_path) | exports
    for organization, line in zip(fleet.organizations, printed, strict=True):
        role_arn = line.rsplit("management_role_arn ", 1)[1]
        assert role_arn == (f"arn:aws:iam::{organization.management.id}:role/FleetscanOrgReader")
        assert f" {organization.id}: management account {organization.management.id}" in line
        assumed = _aws(
            env, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "org"
        )["Credentials"]
        assert isinstance(assumed, dict)
        admin_env = env | {
            "AWS_ACCESS_KEY_ID": assumed["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": assumed["SecretAccessKey"],
            "AWS_SESSION_TOKEN": assumed["SessionToken"],
        }
        described = _aws(admin_env, "organizations", "describe-organization")["Organization"]
        assert isinstance(described, dict)
        assert described["Id"] == organization.id
        listed = _aws(admin_env, "organizations", "list-accounts")["Accounts"]
        assert isinstance(listed, list)
        assert sorted(a["Id"] for a in listed) == sorted(
            a.id for a in fleet.organization_accounts(organization)
        )

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def test_serve_fleet_knobs_shape_the_fleet_it_serves(
    serve: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """The benchmarks size fleets with these flags: what the AWS CLI sees must be the fleet the
    same knobs build, volumes beyond the default cap of 24 included."""
    knobs = ["--populated-fraction", "1", "--max-gateways-per-pair", "3"]
    knobs += ["--max-volumes-per-gateway", "60"]
    process, exports, _ = _start(serve, tmp_path, *knobs)
    fleet = Fleet(
        FleetSpec(
            seed=7,
            accounts=12,
            regions=REGIONS,
            populated_fraction=1.0,
            max_gateways_per_pair=3,
            max_volumes_per_gateway=60,
        )
    )
    assert {account_id for account_id, _ in fleet.pairs} == {a.id for a in fleet.accounts}
    env = _clean_env(tmp_path) | exports
    gateways, expected = _member_gateways(env, fleet)
    assert gateways == expected
    assert 1 <= len(gateways) <= 3

    big = max(
        (g for g in fleet.iter_gateways() if g.is_cached and g.connected),
        key=lambda g: len(g.volumes),
    )
    assert len(big.volumes) > 24
    role_arn = f"arn:aws:iam::{big.account_id}:role/FleetscanReader"
    assumed = _aws(env, "sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "cli")
    credentials = assumed["Credentials"]
    member_env = env | {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
    points = _aws(
        member_env,
        "storagegateway",
        "list-volume-recovery-points",
        "--gateway-arn",
        big.arn,
        "--region",
        big.region,
    )["VolumeRecoveryPointInfos"]
    assert sorted(p["VolumeARN"] for p in points) == sorted(v.arn for v in big.volumes)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


@pytest.mark.parametrize(
    ("entry", "args", "message"),
    [
        (FLEETSCAN, ["--host", "10.0.0.1"], "10.0.0.1 is not a loopback address"),
        (EMULATOR, ["--host", "10.0.0.1"], "10.0.0.1 is not a loopback address"),
        (EMULATOR, ["--error-rate", "2"], "--error-rate must be between 0 and 1"),
        (EMULATOR, ["--regions", "us-east-1,mars-north-1"], "mars-north-1"),
        (EMULATOR, ["--populated-fraction", "1.5"], "--populated-fraction must be between 0 and 1"),
        (FLEETSCAN, ["--max-volumes-per-gateway", "-1"], "must be at least 0, got -1"),
        (FLEETSCAN, ["--max-gateways-per-pair", "0"], "must be at least 1, got 0"),
        (FLEETSCAN, ["--organizations", "0"], "--organizations must be at least 1, got 0"),
        (
            EMULATOR,
            ["--accounts", "2", "--organizations", "3"],
            "3 organizations need at least as many member accounts, got 2",
        ),
        (EMULATOR, ["--identity", "iam"], "invalid choice: 'iam'"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(
    entry: list[str], args: list[str], message: str, tmp_path: Path
) -> None:
    completed = subprocess.run(
        [*entry, "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(tmp_path),
        check=False,
    )
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""  # nothing to export: nothing was started
