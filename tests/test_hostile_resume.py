"""Resuming a run whose checkpoint someone tampered with, through the real command: a property
test in the style of test_hostile_responses.py, over the mutations of test_hostile_checkpoint.py.

A real scan of the emulated fleet is stopped with SIGINT after a few units (an ``interrupted``
run with a checkpoint); each example copies it, mutates its checkpoint (values replaced, keys
removed or added, lines replaced, dropped or repeated, the file cut or spliced) and runs
``fleetscan scan --resume``. The property: exit 2 with one line naming the checkpoint and the
line, nothing deleted; or a resume that finishes a consistent run (every file the manifest lists
checks out, nothing written twice, nothing from outside the fleet), and when the mutation
changed nothing that matters, exactly the fleet. Never a traceback, never a hang.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scan_runs import command, resume_command, wait_until_scanning
from test_hostile_checkpoint import tampered

from fleetscan._sinks import iter_records, latest_run
from fleetscan.emulator import FaultRule, Faults, FleetSpec, Stack, start_stack

SPEC = FleetSpec(seed=21, accounts=8, regions=("us-east-1", "eu-west-1"))
#: Generous: a resume of this fleet takes seconds; a hang fails instead of blocking the suite.
HANG_GUARD_SECONDS = 120


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_stack(SPEC) as running:
        yield running


@pytest.fixture(scope="module")
def stack_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("aws-home")
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSCAN_"))} | (
        stack.env()
        | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
    )


@pytest.fixture(scope="module")
def interrupted(
    stack: Stack, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An interrupted run with some units committed: the base every example mutates."""
    output = tmp_path_factory.mktemp("interrupted") / "out"
    stack.emulator.faults = Faults([FaultRule(latency_ms=60, jitter_ms=20)])
    scan = subprocess.Popen(command(stack, output), env=stack_env, stderr=subprocess.PIPE)
    wait_until_scanning(scan, output, lines=3)
    scan.send_signal(signal.SIGINT)
    _, stderr = scan.communicate(timeout=HANG_GUARD_SECONDS)
    assert scan.returncode == 130, stderr.decode()
    stack.emulator.faults = Faults([])
    return output


def _checkpoint(output: Path) -> Path:
    (path,) = output.glob("checkpoints/dt=*/*.ndjson")
    return path


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_tampered_checkpoint_is_refused_naming_its_line_or_resumed_soundly(
    stack: Stack, stack_env: dict[str, str], interrupted: Path, data: st.DataObject
) -> None:
    base = _checkpoint(interrupted).read_bytes()
    content = data.draw(tampered(base))
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "out"
        shutil.copytree(interrupted, output)
        checkpoint = _checkpoint(output)
        checkpoint.write_bytes(content)
        before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
        started = time.monotonic()
        done = subprocess.run(
            resume_command(output, "--resume", "latest"),
            env=stack_env,
            capture_output=True,
            timeout=HANG_GUARD_SECONDS,
            check=False,
        )
        stderr = done.stderr.decode()
        print(f"resume: exit {done.returncode} in {time.monotonic() - started:.1f} s")
        assert "Traceback" not in stderr
        if done.returncode == 2:
            (message,) = stderr.splitlines()
            named = (
                rf"{re.escape(str(checkpoint))}(: line [0-9]+: | is empty| line 1 is incomplete)"
            )
            assert re.match(rf"fleetscan: error: resume: {named}", message), message
            assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
            return
        assert done.returncode in (0, 3), stderr
        run_id = latest_run(output)
        assert run_id is not None
        truth = {
            rp.volume_arn for rp in stack.fleet.ground_truth(regions=SPEC.regions).recovery_points
        }
        written = Counter(r["volume_arn"] for r in iter_records(output, run_id, "recovery_points"))
        assert max(written.values(), default=1) == 1, "a recovery point was written twice"
        assert set(written) <= truth, "a record from outside the fleet"
        if content == base:
            assert set(written) == truth
