"""One writer per run: a second scan with the same run id, or a resume of a run that is alive, is
refused (exit 2) naming the live process, and leaves the live run untouched; a SIGKILLed writer
leaves no lock behind (the kernel drops it with the process).

Every writer is a real ``python -m fleetscan scan`` against the emulated stack (:mod:`scan_runs`).
The live scan is frozen (SIGSTOP) while the others try, so that it is alive, holding its lock,
however long they take to start on a loaded machine.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from output_checks import check_run_output
from scan_runs import (
    KILLABLE_FLEET,
    assert_exactly_the_truth,
    command,
    env,
    manifest_of,
    resume_until_done,
    run,
    slow,
    wait_until_scanning,
)

from fleetscan.emulator import FleetSpec

RUN_ID = "one-writer"


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return KILLABLE_FLEET


def start(stack: Any, stack_env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    slow(stack)
    live = subprocess.Popen(
        command(stack, output, "--run-id", RUN_ID), env=env(stack_env), stderr=subprocess.PIPE
    )
    wait_until_scanning(live, output, lines=2)
    live.send_signal(signal.SIGSTOP)
    return live


def assert_refused_naming(
    proc: subprocess.CompletedProcess[bytes], live: subprocess.Popen[bytes]
) -> None:
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert f"pid {live.pid} on host {socket.gethostname()!r}" in line, line
    assert live.poll() is None


def test_a_second_scan_with_the_same_run_id_is_refused_and_the_first_ends_exactly(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    live = start(stack, stack_env, tmp_path)

    second = run(command(stack, tmp_path, "--run-id", RUN_ID), stack_env)

    assert_refused_naming(second, live)
    live.send_signal(signal.SIGCONT)
    _, stderr = live.communicate(timeout=300)
    assert live.returncode == 0, stderr.decode()
    assert manifest_of(tmp_path, RUN_ID)["status"] == "complete"
    check_run_output(tmp_path, RUN_ID)  # sizes, checksums and counts as the manifest says
    assert_exactly_the_truth(stack, tmp_path, RUN_ID)


def test_a_resume_of_a_live_run_is_refused_and_a_killed_writer_leaves_no_lock(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    live = start(stack, stack_env, tmp_path)

    for which in ("latest", RUN_ID):
        refused = run(command(stack, tmp_path, "--resume", which), stack_env)
        assert_refused_naming(refused, live)
    live.send_signal(signal.SIGKILL)
    live.wait(timeout=60)

    assert resume_until_done(stack, stack_env, tmp_path) == RUN_ID
    assert_exactly_the_truth(stack, tmp_path, RUN_ID)
