"""`fleetscan scan` and `fleetscan demo` run as real subprocesses against the emulated stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from fleetscan import list_runs
from fleetscan._sinks import iter_records, latest_run, read_manifest
from fleetscan.emulator import Fleet, FleetSpec
from fleetscan.emulator._faults import FaultRule, Faults


def _fleetscan(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *args],
        env=full_env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _scan_args(stack: Any, *extra: str) -> list[str]:
    return [
        "scan",
        "--org",
        "--role-name",
        stack.role_name,
        "--regions",
        ",".join(stack.fleet.spec.regions),
        *extra,
    ]


def test_scan_to_a_directory_exits_0_with_a_complete_manifest(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _fleetscan(*_scan_args(stack, "--output", str(tmp_path)), env=stack_env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    run_id = latest_run(tmp_path)
    assert run_id is not None
    (manifest_path,) = tmp_path.glob(f"manifests/dt=*/{run_id}.json")
    manifest = read_manifest(manifest_path)
    assert manifest["status"] == "complete"
    # The summary says where the manifest is.
    assert f"manifest: {manifest_path}" in proc.stderr.decode()
    truth = stack.fleet.ground_truth()
    rps = list(iter_records(tmp_path, run_id, "recovery_points"))
    assert len(rps) == len(truth.recovery_points) == manifest["records"]["recovery_points"]
    # Output files are private by default.
    for entry in manifest["files"]:
        assert (tmp_path / entry["path"]).stat().st_mode & 0o777 == 0o600


def test_partial_scan_exits_3_and_names_what_failed(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    account, region = sorted(stack.fleet.pairs)[0]
    stack.emulator.faults = Faults(
        [FaultRule(account_id=account, region=region, access_denied=True)]
    )
    proc = _fleetscan(*_scan_args(stack, "--output", str(tmp_path)), env=stack_env)
    assert proc.returncode == 3, proc.stderr.decode()
    run_id = latest_run(tmp_path)
    assert run_id is not None
    errors = list(iter_records(tmp_path, run_id, "errors"))
    assert (account, region, "AccessDeniedException") in {
        (e["account_id"], e["region"], e["error_code"]) for e in errors
    }


def test_output_dash_streams_recovery_points_to_stdout(
    stack: Any, stack_env: dict[str, str]
) -> None:
    proc = _fleetscan(*_scan_args(stack, "--output", "-", "--quiet"), env=stack_env)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.splitlines()
    records = [orjson.loads(line) for line in lines]
    truth = stack.fleet.ground_truth()
    assert sorted(r["volume_arn"] for r in records) == sorted(
        rp.volume_arn for rp in truth.recovery_points
    )
    assert all(r["schema_version"] == 2 for r in records)
    assert {r["organization_id"] for r in records} == {stack.fleet.organization_id}


def test_dry_run_makes_no_storage_gateway_call(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _fleetscan(
        *_scan_args(stack, "--output", str(tmp_path), "--dry-run", "--log-format", "json"),
        env=stack_env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    plan = orjson.loads(proc.stdout)
    members = {a.id for a in stack.fleet.accounts if a.active} | {stack.fleet.management_account_id}
    assert {a["id"] for a in plan["accounts"]} == members
    assert plan["units"] == len(members) * len(stack.fleet.spec.regions)
    assert stack.emulator.counters.calls(service="storagegateway") == 0
    assert stack.emulator.counters.calls(operation="ListAccounts") >= 1  # it did discover
    assert not any(tmp_path.iterdir())


def test_enabled_regions_come_from_describe_regions(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The default `--regions enabled`: EC2 DescribeRegions per account, with its credentials."""
    proc = _fleetscan(
        "scan", "--org", "--role-name", stack.role_name, "--output", str(tmp_path), "--quiet",
        env=stack_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    run_id = latest_run(tmp_path)
    assert run_id is not None
    rps = list(iter_records(tmp_path, run_id, "recovery_points"))
    assert len(rps) == len(stack.fleet.ground_truth().recovery_points)
    manifest = read_manifest(next(tmp_path.glob("manifests/dt=*/*.json")))
    accounts = manifest["summary"]["accounts"]
    assert manifest["summary"]["api_calls"]["DescribeRegions"] == accounts
    # More regions than the fleet uses were scanned, each with one empty ListGateways page.
    assert manifest["summary"]["units_planned"] > accounts * len(stack.fleet.spec.regions)


def test_demo_command_scans_and_checks_the_demo_organization(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _fleetscan("demo", "--output", str(out), "--accounts", "6", env={}, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    stderr = proc.stderr.decode()
    assert "matches the emulated fleet's ground truth" in stderr
    assert latest_run(out) is not None
    # A second scan an hour later on the fleet, with one gateway's snapshots stopped: the diff
    # of the two runs finds exactly its volumes stuck.
    assert len(list_runs(str(out))) == 2
    fleet = Fleet(FleetSpec(seed=2026, accounts=6))
    stuck = next(g for g in fleet.iter_gateways() if g.is_cached and g.connected and g.volumes)
    assert f"changes: {len(stuck.volumes)} stuck, 0 new-stale" in " ".join(stderr.split())


def test_demo_of_two_organizations_scans_both_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = _fleetscan(
        "demo", "--output", str(out), "--accounts", "6", "--organizations", "2",
        env={}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    stderr = proc.stderr.decode()
    assert "2 organizations" in stderr
    assert "matches the emulated fleet's ground truth" in stderr
    run_id = latest_run(out)
    assert run_id is not None
    manifest = read_manifest(next(out.glob(f"manifests/dt=*/{run_id}.json")))
    section = manifest["organizations"]
    assert [(o["name"], o["status"]) for o in section] == [("org-1", "listed"), ("org-2", "listed")]
    assert len({o["id"] for o in section}) == 2
    ids = {r["organization_id"] for r in iter_records(str(out), run_id, "recovery_points")}
    assert ids == {o["id"] for o in section}


def test_demo_refuses_more_organizations_than_accounts(tmp_path: Path) -> None:
    proc = _fleetscan(
        "demo", "--output", str(tmp_path / "demo"), "--accounts", "2", "--organizations", "3",
        env={},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().endswith("3 organizations need at least as many accounts")
    assert "Traceback" not in proc.stderr.decode()
