"""Argument errors, for every command: one short usage line, then one line saying what is wrong,
exit 2 (real subprocesses). argparse's own usage block was 25 lines for ``fleetscan audit`` and
buried the error; a value that starts with ``-`` (``--max-age -3h``) was read as an option, and
the message said only "expected one argument"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def fleetscan_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--input", ".", "--max-age", "1d", "--no-such-flag"],
        ["audit", "--input", "."],
        ["scan", "--org", "--no-such-flag"],
        ["demo", "--accounts", "many"],
        ["schema", "--format", "csv"],
        ["emulator", "serve", "--accounts", "x"],
    ],
    ids=["audit", "audit-missing", "scan", "demo", "schema", "emulator"],
)
def test_an_argument_error_is_one_usage_line_and_one_error_line(argv: list[str]) -> None:
    proc = fleetscan_cli(*argv)
    assert proc.returncode == 2, proc.stderr
    usage, error = proc.stderr.splitlines()
    # The command's parser, or the top one for an unknown flag (argparse's "unrecognized").
    assert re.fullmatch(r"usage: fleetscan( [a-z]+)* \S.*", usage), usage
    assert re.match(r"fleetscan( [a-z]+)*: error: \S", error), error


@pytest.mark.parametrize("given", [["--max-age", "-3h"], ["--max-age=-3h"], ["--max-age", "0h"]])
def test_a_negative_or_zero_max_age_is_refused_as_such(tmp_path: Path, given: list[str]) -> None:
    proc = fleetscan_cli("audit", "--input", tmp_path, *given)
    assert proc.returncode == 2, proc.stderr
    value = given[-1].rpartition("=")[2]
    assert proc.stderr.splitlines()[-1] == (
        f"fleetscan audit: error: argument --max-age: must be a positive duration, got '{value}'"
    )


def test_a_value_read_as_an_option_says_how_to_give_it_and_never_shows_it() -> None:
    proc = fleetscan_cli("scan", "--org", "--role-name", "R", "--external-id", "-s3cret")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "fleetscan scan: error: argument --external-id: expected one argument (a value that "
        "starts with '-' is written --external-id=VALUE)"
    )
    assert "s3cret" not in proc.stderr
