"""``fleetscan emulator serve`` stops on any signal, however many arrive and whenever they do.

Its handler used to call ``threading.Event.set``, which takes a non-reentrant lock: a signal that
landed while the main thread held that lock (inside ``Event.wait``, or inside the handler of a
signal just before) deadlocked the process, and every later signal only nested another handler.
Each test here is a real ``serve`` subprocess, sent real signals; it must exit. Timings are
printed (``-s``), never asserted tightly: the machine may be loaded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

SERVE = [sys.executable, "-m", "fleetscan", "emulator", "serve", "--accounts", "12"]
#: Generous: a stop takes well under a second; a deadlocked process never exits. A signal that
#: lands while it starts is acted on once the stack is up, and a fresh clone's first start under
#: a loaded test run (every module compiled, four test workers) took over 30 s here.
EXIT_GUARD_SECONDS = 120
RANDOM_TRIALS = 6
BURST_TRIALS = 3


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Servers started by a test, killed at teardown if one is still running (a failed test)."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _serve(started: list[subprocess.Popen[bytes]], *, wait_ready: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        SERVE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
    )
    started.append(process)
    if wait_ready:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith(b"Serving"):
                break
        else:
            pytest.fail(f"serve ended before serving: {process.wait()}")
    return process


def _exit_seconds(process: subprocess.Popen[bytes], since: float) -> float:
    """Seconds from ``since`` until the process exited (TimeoutExpired: it never does)."""
    process.wait(timeout=EXIT_GUARD_SECONDS)
    return time.monotonic() - since


@pytest.mark.parametrize("trial", range(BURST_TRIALS))
def test_signals_back_to_back_stop_it(started: list[subprocess.Popen[bytes]], trial: int) -> None:
    """SIGINT, SIGTERM, SIGINT, ... back to back: some land inside an earlier one's handler
    (before the fix, about one run in three of these deadlocked here)."""
    process = _serve(started, wait_ready=True)
    sent = time.monotonic()
    signals = (signal.SIGINT, signal.SIGTERM)
    n = 0
    # As fast as they can go, for up to a second or until it is gone: once the first handler
    # returns, the process stops in milliseconds, so only this many land inside a handler.
    while time.monotonic() - sent < 1.0 and (n % 64 or process.poll() is None):
        os.kill(process.pid, signals[n % 2])  # a zombie not yet reaped still takes signals
        n += 1
    seconds = _exit_seconds(process, sent)
    print(f"exited {seconds:.2f} s after the first of {n} signals (code {process.returncode})")
    assert process.returncode in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM)


def test_one_signal_stops_it_cleanly(started: list[subprocess.Popen[bytes]]) -> None:
    process = _serve(started, wait_ready=True)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    seconds = _exit_seconds(process, sent)
    assert process.stderr is not None
    print(f"exited {seconds:.2f} s after one SIGINT")
    assert process.returncode == 0
    assert process.stderr.read().decode().strip() == "Stopped."


@pytest.mark.parametrize("trial", range(RANDOM_TRIALS))
def test_a_signal_at_a_random_moment_stops_it(
    started: list[subprocess.Popen[bytes]], trial: int
) -> None:
    """While it starts (imports, the fleet, the servers) or while it serves."""
    rng = random.Random(trial)
    sig = rng.choice([signal.SIGINT, signal.SIGTERM])
    process = _serve(started, wait_ready=trial % 2 == 1)
    time.sleep(rng.uniform(0, 1.5))
    sent = time.monotonic()
    process.send_signal(sig)
    seconds = _exit_seconds(process, sent)
    print(f"trial {trial}: {sig.name} -> exit {process.returncode} in {seconds:.2f} s")
    # Stopped by its handler (0), or before it was installed, by Python's defaults; a SIGINT
    # that lands while the interpreter itself starts (importing site, before any fleetscan code)
    # is CPython's "Fatal Python error: init_import_site", exit 1: nothing to do about it here.
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")
    interpreter_start = process.returncode == 1 and "Fatal Python error: init_import_site" in stderr
    assert process.returncode in (0, 130, -signal.SIGINT, -signal.SIGTERM) or interpreter_start, (
        stderr[-2000:]
    )
