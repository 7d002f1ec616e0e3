"""Real ``python -m fleetscan scan`` runs against the emulated stack, for the tests that interrupt,
resume, race or tamper with them, and the check that a finished run holds exactly the fleet.

The emulator adds latency so that a scan lasts long enough to be killed in the middle of things,
and a short ``--checkpoint-interval`` makes commits, and so kills during a commit, frequent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fleetscan._sinks import iter_records, latest_run, read_manifest
from fleetscan.emulator import FleetSpec
from fleetscan.emulator._faults import FaultRule, Faults

#: Big enough (about 150 calls at 40-60 ms, 4 in flight) to be killed mid-scan.
KILLABLE_FLEET = FleetSpec(seed=11, accounts=30, regions=("us-east-1", "us-west-2", "eu-west-1"))


def command(stack: Any, output: Path | str, *extra: str) -> list[str]:
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


def resume_command(output: Path | str, *extra: str) -> list[str]:
    """A resume that names only where the run is: the run's own configuration does the rest."""
    return [
        sys.executable, "-m", "fleetscan", "scan", "--output", str(output), "--quiet", *extra,
    ]  # fmt: skip


def env(stack_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack_env


def slow(stack: Any) -> None:
    stack.emulator.faults = Faults([FaultRule(latency_ms=40, jitter_ms=20)])


def manifest_of(output: Path, run_id: str) -> dict[str, Any]:
    (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
    return read_manifest(path)


def checkpoint_of(output: Path) -> Path:
    (path,) = output.glob("checkpoints/dt=*/*.ndjson")
    return path


def newest_run(output: Path) -> str:
    names = sorted(p.stem for p in output.glob("manifests/dt=*/*.json"))
    return names[-1]


def wait_until_scanning(scan: subprocess.Popen[bytes], output: Path, lines: int = 1) -> None:
    """Until the run's checkpoint holds ``lines`` whole lines: the scan has started (and, with
    more lines, committed) and can be interrupted."""
    deadline = time.monotonic() + 120
    while True:
        found = list(output.glob("checkpoints/dt=*/*.ndjson"))
        if found and found[0].read_bytes().count(b"\n") >= lines:
            return
        assert scan.poll() is None, "the scan ended before it got that far"
        assert time.monotonic() < deadline, "the scan never got that far"
        time.sleep(0.01)


def run(
    argv: list[str], stack_env: dict[str, str], **extra_env: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, env=env(stack_env) | extra_env, capture_output=True, timeout=300, check=False
    )


def resume_until_done(stack: Any, stack_env: dict[str, str], output: Path) -> str:
    proc = run(command(stack, output, "--resume", "latest"), stack_env)
    assert proc.returncode == 0, proc.stderr.decode()
    run_id = latest_run(output)
    assert run_id is not None
    assert manifest_of(output, run_id)["status"] == "complete"
    return run_id


def assert_exactly_the_truth(stack: Any, output: Path, run_id: str) -> None:
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
    manifest = manifest_of(output, run_id)
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {
        p.relative_to(output).as_posix()
        for p in output.rglob("*")
        if p.is_file() and p.parts[len(output.parts)] in ("recovery_points", "gateways", "errors")
    }
    assert on_disk == listed
