"""A scan stopped by signals, as a real ``fleetscan scan`` subprocess: a second signal ends the
grace that calls in flight get after the first, at once.

The first SIGINT stops new calls and gives calls in flight ``--stop-grace-seconds`` to finish;
the second must end that wait (the user means it). Before the fix the second signal sat unread in
the receiver until the grace was over. Every Storage Gateway answer here takes 300 s and the grace
is 600 s, so a scan that exits at all after the second signal has honoured it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from scan_runs import command, env, manifest_of, newest_run, wait_until_scanning

from fleetscan.emulator import FaultRule, Faults

#: Generous, and far below the grace: the scan must not wait the grace out.
EXIT_GUARD_SECONDS = 60


def test_a_second_signal_ends_the_grace_at_once(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    stack.emulator.faults = Faults([FaultRule(slow_rate=1.0, slow_seconds=300)])
    scan = subprocess.Popen(
        command(stack, tmp_path, "--stop-grace-seconds", "600"),
        env=env(stack_env),
        stderr=subprocess.PIPE,
    )
    wait_until_scanning(scan, tmp_path)
    deadline = time.monotonic() + EXIT_GUARD_SECONDS
    while stack.emulator.counters.in_flight == 0:  # Storage Gateway calls, each held 300 s
        assert time.monotonic() < deadline, "no Storage Gateway call was ever in flight"
        time.sleep(0.05)
    scan.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert scan.poll() is None, "the scan should be waiting for its calls in flight"
    second = time.monotonic()
    scan.send_signal(signal.SIGINT)
    _, stderr = scan.communicate(timeout=EXIT_GUARD_SECONDS)
    print(f"exited {time.monotonic() - second:.2f} s after the second SIGINT")
    assert scan.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    run_id = newest_run(tmp_path)
    assert manifest_of(tmp_path, run_id)["status"] == "interrupted"
    assert f"--resume {run_id}".encode() in stderr


def test_a_ctrl_c_while_a_module_defines_its_classes_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.11 wraps an exception raised inside ``__set_name__`` in a RuntimeError, so a
    Ctrl-C landing while a command's modules are imported (a dataclass being defined) arrived
    as a traceback and exit 1. A real signal cannot be placed at that instant on purpose (the
    emulator's signal test met it at random), so the command's import is replaced by one that
    meets it."""
    import fleetscan._commands as commands

    class Interrupted:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    real = commands._command

    class Importing:
        """The real command module, whose ``run`` meets the interrupt while defining a class."""

        def __init__(self, name: str) -> None:
            self.module = real(name)

        def __getattr__(self, attribute: str) -> object:
            return getattr(self.module, attribute)

        @staticmethod
        def run(args: object) -> int:
            type("Defined", (), {"field": Interrupted()})  # calls __set_name__, as an import does
            return 0

    monkeypatch.setattr(commands, "_command", Importing)
    assert commands.main(["schema", "--format", "json-schema"]) == commands.EXIT_INTERRUPTED
