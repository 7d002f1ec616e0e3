"""Interrupt a real scan (SIGKILL, SIGTERM, SIGINT) and resume it: nothing lost, nothing twice.

Each scan is a real `python -m fleetscan scan` subprocess against the emulated stack; the
emulator adds latency so that a scan lasts long enough to be killed in the middle of things
(a short --checkpoint-interval makes commits, and so kills during a commit, frequent).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fleetscan._sinks import iter_records, latest_run, read_manifest
from fleetscan.emulator import FleetSpec
from fleetscan.emulator._faults import FaultRule, Faults


@pytest.fixture
def fleet_spec() -> FleetSpec:
    """Big enough (about 150 calls at 40-60 ms, 4 in flight) to be killed mid-scan."""
    return FleetSpec(seed=11, accounts=30, regions=("us-east-1", "us-west-2", "eu-west-1"))


def _command(stack: Any, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fleetscan",
        "scan",
        "--org",
        "--role-name",
        stack.role_name,
        "--regions",
        ",".join(stack.fleet.spec.regions),
        "--output",
        str(output),
        "--concurrency",
        "4",
        "--checkpoint-interval",
        "0.05",
        "--quiet",
        *extra,
    ]


def _env(stack_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack_env


def _slow(stack: Any) -> None:
    stack.emulator.faults = Faults([FaultRule(latency_ms=40, jitter_ms=20)])


def _manifest(output: Path, run_id: str) -> dict[str, Any]:
    (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
    return read_manifest(path)


def _assert_exactly_the_truth(stack: Any, output: Path, run_id: str) -> None:
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    rps = Counter(r["volume_arn"] for r in iter_records(output, run_id, "recovery_points"))
    assert max(rps.values(), default=1) == 1, "a recovery point was written twice"
    assert set(rps) == {rp.volume_arn for rp in truth.recovery_points}, "records lost"
    gateways = Counter(g["gateway_arn"] for g in iter_records(output, run_id, "gateways"))
    assert max(gateways.values(), default=1) == 1, "a gateway was written twice"
    assert set(gateways) == {g.gateway_arn for g in truth.gateways}
    offline = Counter(
        e["gateway_arn"]
        for e in iter_records(output, run_id, "errors")
        if e["gateway_error_code"] == "GatewayNotConnected"
    )
    assert max(offline.values(), default=1) == 1
    assert set(offline) == {arn for _, _, arn, _ in truth.gateway_errors}
    # Nothing of the run is left outside the manifest: no .partial, no uncommitted file.
    manifest = _manifest(output, run_id)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {
        p.relative_to(output).as_posix()
        for p in output.rglob("*")
        if p.is_file() and p.parts[len(output.parts)] in ("recovery_points", "gateways", "errors")
    }
    assert on_disk == listed


def _resume_until_done(stack: Any, stack_env: dict[str, str], output: Path) -> str:
    proc = subprocess.run(
        _command(stack, output, "--resume", "latest"),
        env=_env(stack_env),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    run_id = latest_run(output)
    assert run_id is not None
    assert _manifest(output, run_id)["status"] == "complete"
    return run_id


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_a_random_moment_then_resume_gives_exactly_the_truth(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, seed: int
) -> None:
    _slow(stack)
    scan = subprocess.Popen(_command(stack, tmp_path), env=_env(stack_env), stderr=subprocess.PIPE)
    _wait_until_scanning(scan, tmp_path)
    time.sleep(random.Random(seed).uniform(0.0, 1.2))
    assert scan.poll() is None, "the scan ended before it could be killed: make the fleet bigger"
    scan.send_signal(signal.SIGKILL)
    scan.wait(timeout=60)

    run_id = _resume_until_done(stack, stack_env, tmp_path)
    _assert_exactly_the_truth(stack, tmp_path, run_id)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_gracefully_and_say_how_to_resume(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, signum: int, code: int
) -> None:
    _slow(stack)
    scan = subprocess.Popen(_command(stack, tmp_path), env=_env(stack_env), stderr=subprocess.PIPE)
    _wait_until_scanning(scan, tmp_path)
    time.sleep(0.5)
    scan.send_signal(signum)
    _, stderr = scan.communicate(timeout=60)

    assert scan.returncode == code, stderr.decode()
    assert b"Traceback" not in stderr
    run_id = _newest(tmp_path)
    assert run_id is not None
    assert f"--resume {run_id}".encode() in stderr
    manifest = _manifest(tmp_path, run_id)
    assert manifest["status"] == "interrupted"
    # What the interrupted run wrote is itself consistent: listed, checksummed, no duplicates.
    written = [r["volume_arn"] for r in iter_records(tmp_path, run_id, "recovery_points")]
    assert len(written) == len(set(written))

    resumed = _resume_until_done(stack, stack_env, tmp_path)
    assert resumed == run_id
    _assert_exactly_the_truth(stack, tmp_path, run_id)


def test_resume_refuses_a_finished_run_and_a_missing_one(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        _command(stack, tmp_path), env=_env(stack_env), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    run_id = _newest(tmp_path)
    again = subprocess.run(
        _command(stack, tmp_path, "--resume", run_id),
        env=_env(stack_env),
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 2
    assert b"resume" in again.stderr
    assert b"finished" in again.stderr
    assert b"Traceback" not in again.stderr
    missing = subprocess.run(
        _command(stack, tmp_path, "--resume", "20200101T000000Z-abcdef"),
        env=_env(stack_env),
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert b"no checkpoint" in missing.stderr


def _wait_until_scanning(scan: subprocess.Popen[bytes], output: Path) -> None:
    """Until the run's checkpoint exists: the scan has started and can be interrupted."""
    deadline = time.monotonic() + 60
    while not any(output.glob("checkpoints/dt=*/*.ndjson")):
        assert scan.poll() is None, "the scan ended before it started"
        assert time.monotonic() < deadline, "the scan never started"
        time.sleep(0.02)


def _newest(output: Path) -> str:
    names = sorted(p.stem for p in output.glob("manifests/dt=*/*.json"))
    return names[-1]


def test_checkpoint_names_only_files_that_exist(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The checkpoint is the resume log: every file it names is on disk with its sha256."""
    done = subprocess.run(
        _command(stack, tmp_path), env=_env(stack_env), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    (checkpoint,) = tmp_path.glob("checkpoints/dt=*/*.ndjson")
    lines = [orjson.loads(line) for line in checkpoint.read_bytes().splitlines()]
    assert lines[0]["checkpoint_version"] == 1
    named = [f for line in lines[1:] for f in line.get("files", [])]
    units = [tuple(u) for line in lines[1:] for u in line.get("units", [])]
    assert len(units) == len(set(units)), "a unit was checkpointed twice"
    manifest = _manifest(tmp_path, lines[0]["run_id"])
    assert sorted(f["path"] for f in named) == sorted(f["path"] for f in manifest["files"])
