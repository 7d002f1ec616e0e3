"""Run a scanner (or writer) as its own process and measure it: see :mod:`benchmarks._launcher`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LAUNCHER = Path(__file__).with_name("_launcher.py")


@dataclass(frozen=True)
class Usage:
    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdout: IO[bytes] | int | None,
    stderr: IO[bytes] | int | None,
    timeout: float,
) -> Usage:
    """Run ``argv`` under the launcher; on timeout or interruption kill it and all it started."""
    report = cwd / f"usage-{os.getpid()}-{id(argv)}.json"
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(LAUNCHER), str(report), *argv],
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,  # one process group: a timeout kills the scanner too
    )
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{argv[:4]} did not finish in {timeout:g} s") from None
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        if process.returncode != 0:
            raise RuntimeError(f"the benchmark launcher failed with exit code {process.returncode}")
        usage = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    return Usage(**usage)
