"""Links and directories planted in an output tree by someone else: never followed, never used.

An output directory may be shared, and every name fleetscan writes is predictable from the run
id and the date (a run id can be read off the checkpoint, which is created first). Another user
who plants a symbolic link at such a name must not get fleetscan to create, truncate, overwrite
or chmod anything outside the output directory, nor to write into a directory that is not the
user's own. Each case is a real ``python -m fleetscan`` against the emulated stack; what lies
outside the output directory is compared byte for byte, mode for mode and time for time.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from output_checks import check_run_output
from scan_runs import command, env

RUN_ID = "planted-run"
VICTIM = b"precious data, not fleetscan's\n"


def partition() -> str:
    return "dt=" + dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry under ``root``: its content (or link target), mode and modification time."""
    found: dict[str, tuple[bytes, int, int]] = {}
    for path in [root, *root.rglob("*")]:
        status = path.lstat()
        content = b""
        if path.is_symlink():
            content = os.readlink(path).encode()
        elif path.is_file():
            content = path.read_bytes()
        found[str(path.relative_to(root))] = (content, status.st_mode, status.st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """What must stay untouched: a file (mode 0644) and an empty directory."""
    root = tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    (root / "victim.txt").write_bytes(VICTIM)
    (root / "victim.txt").chmod(0o644)
    return root


def plant(output: Path, relpath: str, target: Path) -> Path:
    link = output / relpath
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def scan(stack: Any, stack_env: dict[str, str], output: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command(stack, output, "--run-id", RUN_ID),
        env=env(stack_env),
        capture_output=True,
        timeout=300,
        check=False,
    )


def assert_refused(proc: subprocess.CompletedProcess[bytes], *words: str) -> str:
    """Exit 2 with one line naming what is wrong, no traceback."""
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    for word in words:
        assert word in line, line
    return line


def test_links_at_temporary_and_final_names_are_never_written_through(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, outside: Path
) -> None:
    output = tmp_path / "out"
    victim = outside / "victim.txt"
    before = snapshot(outside)
    day = partition()
    planted = [
        plant(output, f"recovery_points/{day}/.{RUN_ID}-00000.ndjson.partial", victim),
        plant(output, f"gateways/{day}/.{RUN_ID}-00000.ndjson.partial", victim),
        plant(output, f"errors/{day}/.{RUN_ID}-00000.ndjson.partial", victim),
        plant(output, f"manifests/{day}/.{RUN_ID}.json.partial", victim),
        plant(output, f"recovery_points/{day}/{RUN_ID}-00000.ndjson", victim),
        plant(output, f"gateways/{day}/{RUN_ID}-00000.ndjson", outside / "missing.txt"),
    ]

    done = scan(stack, stack_env, output)

    assert done.returncode == 0, done.stderr.decode()
    assert snapshot(outside) == before, "a file outside the output directory was changed"
    # The final names are the run's own files now (the links there were replaced, not followed).
    for final in planted[4:]:
        assert not final.is_symlink()
        assert final.is_file()
    # The links at the old temporary names are someone else's: left alone.
    for link in planted[:4]:
        assert os.readlink(link) == str(victim)
        link.unlink()
    truth = stack.fleet.ground_truth(regions=stack.fleet.spec.regions)
    _, records = check_run_output(output, RUN_ID)
    assert {r["volume_arn"] for r in records["recovery_points"]} == {
        p.volume_arn for p in truth.recovery_points
    }


def test_a_link_at_the_checkpoint_name_refuses_the_run(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, outside: Path
) -> None:
    output = tmp_path / "out"
    link = plant(output, f"checkpoints/{partition()}/{RUN_ID}.ndjson", outside / "victim.txt")
    before = snapshot(outside)

    assert_refused(scan(stack, stack_env, output), str(link), "symbolic link")

    assert snapshot(outside) == before
    # Nothing written: no data file, no manifest, no checkpoint of its own.
    assert [p for p in output.rglob("*") if p.is_file() and not p.is_symlink()] == []


@pytest.mark.parametrize(
    "directory", ["recovery_points/{day}", "manifests/{day}", "checkpoints", "errors"]
)
def test_a_linked_directory_refuses_the_run_naming_it(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, outside: Path, directory: str
) -> None:
    output = tmp_path / "out"
    link = plant(output, directory.format(day=partition()), outside / "dir")
    before = snapshot(outside)

    assert_refused(scan(stack, stack_env, output), str(link), "symbolic link")

    assert snapshot(outside) == before, "something was written through the planted directory"


def test_another_users_directory_refuses_the_run_naming_it(
    stack: Any, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """A directory below the output that another user made (and so may fill with links, or
    swap files in, at any time) is not written into."""
    output = tmp_path / "out"
    theirs = output / "recovery_points" / partition()
    theirs.mkdir(parents=True)
    argv = command(stack, output, "--run-id", RUN_ID)
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)  # nobody's
    else:
        # Only root can give a directory away. Without root, the scan runs as root of a user
        # namespace, where this user's files are root's and every other user's are "nobody"'s,
        # and a directory of the system (root's, so nobody's there) is mounted over ``theirs``.
        mount = 'mount --bind /usr "$0" && exec "$@"'
        argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, str(theirs)]
        argv += command(stack, output, "--run-id", RUN_ID)
    proc = subprocess.run(argv, env=env(stack_env), capture_output=True, timeout=300, check=False)
    assert_refused(proc, str(theirs), "belongs to another user")
    assert [p for p in output.rglob("*") if p.is_file()] == []


def test_audit_reports_replace_planted_links_and_never_write_through_them(
    stack: Any, stack_env: dict[str, str], tmp_path: Path, outside: Path
) -> None:
    output, reports = tmp_path / "out", tmp_path / "reports"
    assert scan(stack, stack_env, output).returncode == 0
    names = ("findings.ndjson", "report.md", "report.html", "junit.xml")
    for name in names:
        plant(reports, name, outside / "victim.txt")
    before = snapshot(outside)

    audit = subprocess.run(
        [sys.executable, "-m", "fleetscan", "audit", "--input", str(output), "--max-age",
         "100000h", "--fail-on", "none", "--report-dir", str(reports), "--quiet"],
        env=env(stack_env),
        capture_output=True,
        timeout=300,
        check=False,
    )  # fmt: skip

    assert audit.returncode == 0, audit.stderr.decode()
    assert snapshot(outside) == before
    for name in names:
        assert not (reports / name).is_symlink()
        assert (reports / name).stat().st_size > 0
    assert sorted(p.name for p in reports.iterdir()) == sorted(names)
