"""A checkpoint whose last line was torn by a kill: resumed, killed again, resumed, exactly once.

A kill mid-append leaves the first bytes of a commit line and no newline. A resumed session must
cut them off before it appends, or its own first line is glued onto them and the checkpoint can
never be read again. Two tests:

* every byte offset of a real checkpoint's last line, with the sink driven as run_scan drives it
  (synthetic units, so that a few hundred offsets take seconds): cut there, resume, stop, resume
  to the end: each unit's records exactly once, the checkpoint readable throughout. The stop in
  the middle is an ``interrupted`` abort, which leaves on disk what a kill after a commit leaves
  (every append is written and fsynced before the call returns; only the manifest differs, and
  an interrupted run is resumed like a killed one);
* real ``fleetscan scan`` processes at a few offsets: a scan SIGKILLed, its checkpoint cut, the
  resumed scan SIGKILLed after it appended, and a last resume: exactly the emulated fleet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from scan_runs import (
    KILLABLE_FLEET,
    assert_exactly_the_truth,
    checkpoint_of,
    command,
    env,
    resume_until_done,
    slow,
    wait_until_scanning,
)
from synthetic_run import DT, RUN_ID, session, unit_key, unit_records

from fleetscan._sinks import iter_records, read_manifest
from fleetscan.emulator import FleetSpec


def last_line_start(data: bytes) -> int:
    assert data.endswith(b"\n")
    return data.rfind(b"\n", 0, len(data) - 1) + 1


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs where there is one: a few hundred cut-and-resume rounds fsync
    thousands of times, which costs seconds on a disk and nothing in memory (the durability of
    fsync is not what this test checks; test_resume.py kills real scans on a disk)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="fleetscan-torn-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


async def test_a_torn_last_line_cut_at_every_byte_resumes_exactly_once(scratch: Path) -> None:
    tmp_path = scratch
    base = tmp_path / "base"
    await session(base, range(4), resume=False, end="interrupted")
    checkpoint = base / "checkpoints" / DT / f"{RUN_ID}.ndjson"
    whole = checkpoint.read_bytes()
    start = last_line_start(whole)
    assert b'"units"' in whole[start:], "the last line is a commit"
    want = sorted(r.volume_arn for index in range(6) for r in unit_records(index))

    for offset in range(len(whole) - start + 1):
        dest = tmp_path / f"cut-{offset}"
        shutil.copytree(base, dest, symlinks=True)
        cut = dest / "checkpoints" / DT / f"{RUN_ID}.ndjson"
        cut.write_bytes(whole[: start + offset])
        await session(dest, range(5), resume=True, end="interrupted")
        await session(dest, range(6), resume=True, end="complete")

        got = Counter(r["volume_arn"] for r in iter_records(dest, RUN_ID, "recovery_points"))
        assert sorted(got) == want, f"cut at byte {offset} of the last line"
        assert max(got.values()) == 1, f"cut at byte {offset}: a record written twice"
        manifest = read_manifest(dest / "manifests" / DT / f"{RUN_ID}.json")
        assert manifest["status"] == "complete"
        # Every line of the checkpoint is whole JSON: nothing was glued onto torn bytes.
        lines = cut.read_bytes().split(b"\n")
        assert lines[-1] == b""
        entries = [orjson.loads(line) for line in lines[:-1]]
        units = [tuple(u) for e in entries[1:] for u in e.get("units", [])]
        assert sorted(units) == sorted(unit_key(i) for i in range(6)), f"cut at byte {offset}"
        shutil.rmtree(dest)


@pytest.fixture
def fleet_spec() -> FleetSpec:
    return KILLABLE_FLEET


def test_real_scans_killed_around_a_torn_tail_end_exactly_once(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    slow(stack)
    base = tmp_path / "base"
    first = subprocess.Popen(command(stack, base), env=env(stack_env), stderr=subprocess.PIPE)
    wait_until_scanning(first, base, lines=4)  # the header and three commits at least
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    whole = checkpoint_of(base).read_bytes()
    whole = whole[: whole.rfind(b"\n") + 1]  # the kill may itself have torn the last line
    start = last_line_start(whole)
    length = len(whole) - start

    for offset in sorted({1, length // 2, length - 1}):
        dest = tmp_path / f"cut-{offset}"
        shutil.copytree(base, dest, symlinks=True)
        checkpoint_of(dest).write_bytes(whole[: start + offset])
        resumed = subprocess.Popen(
            command(stack, dest, "--resume", "latest"), env=env(stack_env), stderr=subprocess.PIPE
        )
        # Killed once it has appended its session line and a commit after the cut.
        wait_until_scanning(resumed, dest, lines=whole.count(b"\n") + 1)
        resumed.send_signal(signal.SIGKILL)
        resumed.wait(timeout=60)

        run_id = resume_until_done(stack, stack_env, dest)
        assert_exactly_the_truth(stack, dest, run_id)
