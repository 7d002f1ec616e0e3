"""Interrupt a real scan (SIGKILL, SIGTERM, SIGINT) and resume it: nothing lost, nothing twice.

Each scan is a real `python -m fleetscan scan` subprocess against the emulated stack
(:mod:`scan_runs`).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from scan_runs import (
    KILLABLE_FLEET,
    assert_exactly_the_truth,
    command,
    env,
    manifest_of,
    newest_run,
    resume_until_done,
    slow,
    wait_until_scanning,
)

from fleetscan._sinks import iter_records
from fleetscan.emulator import FleetSpec


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return KILLABLE_FLEET


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_a_random_moment_then_resume_gives_exactly_the_truth(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, seed: int
) -> None:
    slow(stack)
    scan = subprocess.Popen(command(stack, tmp_path), env=env(stack_env), stderr=subprocess.PIPE)
    wait_until_scanning(scan, tmp_path)
    time.sleep(random.Random(seed).uniform(0.0, 1.2))
    assert scan.poll() is None, "the scan ended before it could be killed: make the fleet bigger"
    scan.send_signal(signal.SIGKILL)
    scan.wait(timeout=60)

    run_id = resume_until_done(stack, stack_env, tmp_path)
    assert_exactly_the_truth(stack, tmp_path, run_id)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_gracefully_and_say_how_to_resume(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, signum: int, code: int
) -> None:
    slow(stack)
    scan = subprocess.Popen(command(stack, tmp_path), env=env(stack_env), stderr=subprocess.PIPE)
    # Stopped once a unit is committed (not after a fixed delay, which a loaded machine may
    # spend in discovery): the interrupted run then has something to keep.
    wait_until_scanning(scan, tmp_path, lines=2)
    scan.send_signal(signum)
    _, stderr = scan.communicate(timeout=60)

    assert scan.returncode == code, stderr.decode()
    assert b"Traceback" not in stderr
    run_id = newest_run(tmp_path)
    assert run_id is not None
    assert f"--resume {run_id}".encode() in stderr
    manifest = manifest_of(tmp_path, run_id)
    assert manifest["status"] == "interrupted"
    # What the interrupted run wrote is itself consistent: listed, checksummed, no duplicates.
    written = [r["volume_arn"] for r in iter_records(tmp_path, run_id, "recovery_points")]
    assert len(written) == len(set(written))

    resumed = resume_until_done(stack, stack_env, tmp_path)
    assert resumed == run_id
    assert_exactly_the_truth(stack, tmp_path, run_id)


def test_resume_refuses_a_finished_run_and_a_missing_one(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        command(stack, tmp_path), env=env(stack_env), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    run_id = newest_run(tmp_path)
    again = subprocess.run(
        command(stack, tmp_path, "--resume", run_id),
        env=env(stack_env),
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 2
    assert b"resume" in again.stderr
    assert b"finished" in again.stderr
    assert b"Traceback" not in again.stderr
    missing = subprocess.run(
        command(stack, tmp_path, "--resume", "20200101T000000Z-abcdef"),
        env=env(stack_env),
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert b"no checkpoint" in missing.stderr


def test_checkpoint_names_only_files_that_exist(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The checkpoint is the resume log: every file it names is on disk with its sha256."""
    done = subprocess.run(
        command(stack, tmp_path), env=env(stack_env), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    (checkpoint,) = tmp_path.glob("checkpoints/dt=*/*.ndjson")
    lines = [orjson.loads(line) for line in checkpoint.read_bytes().splitlines()]
    assert lines[0]["checkpoint_version"] == 1
    named = [f for line in lines[1:] for f in line.get("files", [])]
    units = [tuple(u) for line in lines[1:] for u in line.get("units", [])]
    assert len(units) == len(set(units)), "a unit was checkpointed twice"
    manifest = manifest_of(tmp_path, lines[0]["run_id"])
    assert sorted(f["path"] for f in named) == sorted(f["path"] for f in manifest["files"])
