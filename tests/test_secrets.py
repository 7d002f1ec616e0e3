"""No secret ever reaches an output file, the manifest, stdout, stderr, an error record or an error.

Canaries are planted everywhere a secret enters: the management identity's secret access key and
session token (the environment; moto and the emulator do not verify signatures, and the scans
below succeeding shows they accept them), the external id the member roles' trust policies demand
(``start_stack(external_id=...)``, so a scan that did not send it could not assume any role), and
the secret keys and session tokens moto issues for every AssumeRole, read from moto's STS backend
in this process. Scans are made to fail in every way a run can (access denied, internal errors,
an account whose role cannot be assumed, expired tokens, an account outside the organization),
in-process and through the CLI with both log formats, and every byte they leave is searched.

Output files are private: mode 0600 unless ``--file-mode`` says otherwise.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from moto.backends import get_backend

import fleetscan
from fleetscan.emulator import FleetSpec, Stack, start_stack
from fleetscan.emulator._faults import FaultRule, Faults

CANARY_SECRET_KEY = "CanarySecretKey/fleetscan+MustNeverLeak0"
CANARY_SESSION_TOKEN = "CanarySessionToken" + "Q" * 40 + "/fleetscan+NeverLogged=="
CANARY_EXTERNAL_ID = "Canary-External-Id.7f3a9c@fleetscan"
REGIONS = ("us-east-1", "eu-west-1")
#: Six populated (account, region) pairs, most with cached gateways: room for every fault below.
SPEC = FleetSpec(seed=20, accounts=5, regions=REGIONS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The emulated fleet, with member roles that trust only callers sending the canary
    external id. One stack for the module: its scans each set and clear their own faults.
    moto's STS, whose backend keeps every secret key and session token it issued to look for."""
    with start_stack(SPEC, external_id=CANARY_EXTERNAL_ID, identity="moto") as running:
        yield running


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The stack's environment with the canary secret key and session token, applied to this
    process (for in-process scans) and returned (for subprocesses)."""
    values = stack.env()
    values["AWS_SECRET_ACCESS_KEY"] = CANARY_SECRET_KEY
    values["AWS_SESSION_TOKEN"] = CANARY_SESSION_TOKEN
    values["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    values["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("AWS_") or key == "FLEETSCAN_EXTERNAL_ID":
            del os.environ[key]
    os.environ.update(values)
    try:
        yield values
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.emulator.faults = Faults([])
        stack.emulator.credential_ttl = None


def issued_credentials() -> list[Any]:
    """Every assumed-role session moto has handed out in this process (its STS backends)."""
    sessions = []
    for account in get_backend("sts").values():
        for backend in account.values():
            sessions.extend(backend.assumed_roles)
    return sessions


def secrets_to_find() -> dict[str, str]:
    found = {
        "secret access key": CANARY_SECRET_KEY,
        "session token": CANARY_SESSION_TOKEN,
        "external id": CANARY_EXTERNAL_ID,
    }
    for number, session in enumerate(issued_credentials()):
        found[f"issued secret key {number}"] = session.secret_access_key
        found[f"issued session token {number}"] = session.session_token
    return found


def assert_nowhere(places: dict[str, bytes | str]) -> None:
    """No secret, as written or URL-encoded, in any of ``places`` (name -> content)."""
    secrets = secrets_to_find()
    assert len(secrets) > 3, "no AssumeRole was made: nothing issued to look for"
    for where, content in places.items():
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        for what, secret in secrets.items():
            for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}:
                assert form not in text, f"the {what} appears in {where}"


def everything_under(folder: Path) -> dict[str, bytes | str]:
    """Every file a run left (data, manifest, checkpoint, temporary), by path."""
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def failing_faults(stack: Stack) -> Faults:
    """Access denied for one (account, region), and every ListVolumeRecoveryPoints of two others
    failing with InternalServerError, one as HTTP 400 and one as 500; the rest stays healthy."""
    truth = stack.fleet.ground_truth(regions=REGIONS)
    cached = sorted(
        {(g.account_id, g.region) for g in truth.gateways if g.gateway_type == "CACHED"}
    )
    denied = next(pair for pair in sorted(truth_pairs(stack)) if pair not in cached[:3])
    assert len(cached) >= 3, "the fleet needs more cached gateways for this test"
    rules = [FaultRule(account_id=denied[0], region=denied[1], access_denied=True)]
    for (account, region), status in zip(cached[:2], (400, 500), strict=True):
        rules.append(
            FaultRule(
                account_id=account,
                region=region,
                operation="ListVolumeRecoveryPoints",
                internal_error_rate=1.0,
                internal_error_status=status,
            )
        )
    return Faults(rules)


def truth_pairs(stack: Stack) -> set[tuple[str, str]]:
    truth = stack.fleet.ground_truth(regions=REGIONS)
    return {(g.account_id, g.region) for g in truth.gateways}


def scan_config(output: Path | str, **overrides: Any) -> fleetscan.ScanConfig:
    values: dict[str, Any] = {
        "org": True,
        "include_inactive": True,  # the suspended account's role cannot be assumed
        "role_name": "FleetscanReader",
        "external_id": CANARY_EXTERNAL_ID,
        "regions": REGIONS,
        "output": str(output),
        "max_attempts": 2,
    }
    values.update(overrides)
    return fleetscan.ScanConfig(**values)


def error_codes(result: fleetscan.ScanResult, output: Path) -> set[tuple[str, str]]:
    from fleetscan._sinks import iter_records

    return {
        (e["operation"], e["error_code"])
        for e in iter_records(str(output), result.run_id, "errors")
    }


# -- in-process scans ---------------------------------------------------------------------------


def test_failing_scans_leak_no_secret_in_files_records_results_or_errors(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    stack.emulator.faults = failing_faults(stack)
    out = tmp_path / "faults"
    result = anyio.run(fleetscan.run_scan, scan_config(out), backend="asyncio")

    # The canary keys worked (moto and the emulator accept them) and the external id was sent
    # (the trust policies demand it): every active account was scanned ...
    assert result.status == "partial"
    assert result.stats.recovery_points > 0
    sessions = issued_credentials()
    assert sessions
    assert {s.external_id for s in sessions} == {CANARY_EXTERNAL_ID}
    # ... and every failure the run can meet was met.
    codes = error_codes(result, out)
    assert ("AssumeRole", "AccessDenied") in codes  # the suspended account
    assert ("ListGateways", "AccessDeniedException") in codes
    assert ("ListVolumeRecoveryPoints", "InternalServerError") in codes

    # Keys expired from their first use (an STS handing out dead keys): every call meets
    # ExpiredTokenException, has its keys refreshed a few times, then fails with it.
    stack.emulator.faults = Faults([])
    stack.emulator.credential_ttl = -1.0
    expired_out = tmp_path / "expired"
    expired = anyio.run(
        fleetscan.run_scan, scan_config(expired_out, max_attempts=1), backend="asyncio"
    )
    assert any(code == "ExpiredTokenException" for _, code in error_codes(expired, expired_out))
    assert expired.stats.expired_tokens > 0

    assert_nowhere(
        {
            **everything_under(out),
            **everything_under(expired_out),
            "ScanResult": repr(result) + repr(expired),
            "the manifests": repr(result.manifest) + repr(expired.manifest),
        }
    )


def test_an_error_raised_to_the_caller_carries_no_secret(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    outsider = "999988887777"
    assert outsider not in {a.id for a in stack.fleet.accounts}
    config = scan_config(tmp_path, accounts=(outsider,))
    with pytest.raises(fleetscan.DiscoveryError) as caught:
        anyio.run(fleetscan.run_scan, config, backend="asyncio")
    assert outsider in str(caught.value)
    # Any AssumeRole at all, so that issued secrets are searched for too.
    anyio.run(fleetscan.run_scan, scan_config(tmp_path / "ok"), backend="asyncio")
    assert_nowhere(
        {
            "str(error)": str(caught.value),
            "repr(error)": repr(caught.value),
            "the error's cause and context": repr(caught.value.__cause__)
            + repr(caught.value.__context__),
            "repr(config)": repr(config),
            **everything_under(tmp_path),
        }
    )


# -- the command line ---------------------------------------------------------------------------


def fleetscan_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *args],
        env=full,
        capture_output=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_cli_leaks_no_secret_on_stdout_stderr_or_disk(
    stack: Stack, env: dict[str, str], tmp_path: Path, log_format: str
) -> None:
    stack.emulator.faults = failing_faults(stack)
    common = ["--org", "--include-inactive", "--role-name", "FleetscanReader"]
    common += ["--regions", ",".join(REGIONS), "--max-attempts", "2", "--log-format", log_format]
    # The external id from the environment (the recommended way), then as a flag.
    files = fleetscan_cli(
        "scan", *common, "--output", str(tmp_path / "files"),
        env=env | {"FLEETSCAN_EXTERNAL_ID": CANARY_EXTERNAL_ID},
    )  # fmt: skip
    assert files.returncode == 3, files.stderr.decode()
    records = fleetscan_cli(
        "scan", *common, "--external-id", CANARY_EXTERNAL_ID, "--output", "-", env=env
    )
    assert records.returncode == 3, records.stderr.decode()
    assert b"volume_arn" in records.stdout
    unknown = fleetscan_cli(
        "scan", *common, "--accounts", "999988887777", "--output", str(tmp_path / "fatal"),
        env=env | {"FLEETSCAN_EXTERNAL_ID": CANARY_EXTERNAL_ID},
    )  # fmt: skip
    assert unknown.returncode == 1, unknown.stderr.decode()
    assert b"999988887777" in unknown.stderr

    for run in (files, records, unknown):
        assert b"Traceback" not in run.stderr
    assert_nowhere(
        {
            **everything_under(tmp_path),
            **{f"stdout of run {i}": run.stdout for i, run in enumerate((files, records, unknown))},
            **{f"stderr of run {i}": run.stderr for i, run in enumerate((files, records, unknown))},
        }
    )


# -- file modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "file_mode"),
    [([], 0o600), (["--file-mode", "0640"], 0o640), (["--file-mode", "660"], 0o660)],
)
def test_output_files_are_private_unless_file_mode_says_otherwise(
    stack: Stack, env: dict[str, str], tmp_path: Path, flags: list[str], file_mode: int
) -> None:
    out = tmp_path / "out"
    run = fleetscan_cli(
        "scan", "--org", "--role-name", "FleetscanReader", "--regions", REGIONS[0], "--quiet",
        "--output", str(out), *flags, env=env | {"FLEETSCAN_EXTERNAL_ID": CANARY_EXTERNAL_ID},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [p for p in out.rglob("*") if p.is_dir()]
    assert any(p.suffix == ".ndjson" for p in files)
    assert any(p.parent.parent.name == "manifests" for p in files)
    # Exactly the mode asked for, whatever this process's umask (660 survives umask 022).
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {file_mode}
    # Folders: searchable by whoever may read the files (0600 -> 0700, 0640 -> 0750).
    expected_folder = 0o700 | ((file_mode & 0o444) >> 2) | file_mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {expected_folder}


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (["--file-mode", "0999"], "", "argument --file-mode: '0999' is not an octal"),
        (["--file-mode", "rw-r-----"], "", "argument --file-mode"),
        (["--file-mode", "0400"], "", "file_mode: 400 would not let fleetscan read"),
        ([], "file_mode = 640\n", "file_mode: must be a permission mode from 0o000 to 0o777"),
    ],
)
def test_a_bad_file_mode_exits_2_naming_it(
    stack: Stack, env: dict[str, str], tmp_path: Path, flags: list[str], config: str, message: str
) -> None:
    toml = tmp_path / "scan.toml"
    toml.write_text(config)
    calls_before = stack.emulator.counters.calls()
    run = fleetscan_cli(
        "scan", "--accounts", "111122223333", "--role-name", "R", "--output", str(tmp_path / "o"),
        "--config", str(toml), *flags, env=env,
    )  # fmt: skip
    assert run.returncode == 2
    assert message in run.stderr.decode()
    assert b"Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()
    assert stack.emulator.counters.calls() == calls_before  # refused before any call
