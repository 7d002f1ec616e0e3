"""The long versions of the failure tests (issue 5), too slow for ``make test``.

* kill-and-resume: one run of a larger fleet, SIGKILLed at many random moments and resumed each
  time, until it completes; the result must equal the fleet's ground truth exactly.
* fault soak: every fault at once on a larger organization, 10 runs; each must end, and the
  report counts the runs that ended complete and partial and those whose data is exact.
* retry budget: an endpoint where every call fails; calls spent per failed unit, with and
  without the budget.

Everything runs on 127.0.0.1 against the emulated stack, started in this process (the scans are
subprocesses, so a kill is a real kill).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetscan._sinks import latest_run, read_manifest
from fleetscan.emulator import FaultRule, Faults, FleetSpec, Stack, start_stack, verify_run

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")


def _env(stack: Stack, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack.env()
    env["AWS_CONFIG_FILE"] = str(home / "no-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-credentials")
    return env


def _scan_command(stack: Stack, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fleetscan", "scan", "--org", "--role-name", stack.role_name,
        "--regions", ",".join(stack.fleet.spec.regions), "--output", str(output), "--quiet",
        *extra,
    ]  # fmt: skip


def kill_and_resume(kills: int, accounts: int, seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    spec = FleetSpec(seed=seed, accounts=accounts, regions=REGIONS)
    with tempfile.TemporaryDirectory() as tmp, start_stack(spec) as stack:
        home, output = Path(tmp), Path(tmp) / "out"
        stack.emulator.faults = Faults(
            [FaultRule(latency_ms=30, jitter_ms=30, internal_error_rate=0.05, throttle_rate=15)]
        )
        env = _env(stack, home)
        command = _scan_command(stack, output, "--concurrency", "8", "--checkpoint-interval", "0.1")
        started = time.monotonic()
        sessions = done_kills = 0
        while True:
            sessions += 1
            # Resume once a session got as far as its checkpoint: on a loaded machine a kill may
            # land before the first one did, and `--resume latest` then has nothing to resume.
            extra = ["--resume", "latest"] if any(output.glob("checkpoints/dt=*/*")) else []
            proc = subprocess.Popen([*command, *extra], env=env, stderr=subprocess.DEVNULL)
            if done_kills < kills:
                time.sleep(rng.uniform(1.0, 2.5))  # start-up takes about 0.5 s
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    done_kills += 1
            proc.wait(timeout=600)
            # Whatever the exit code: a session may finish the run (manifest written last) and
            # be killed before it exits; the run is then complete, and resuming it is refused.
            run_id = latest_run(output)
            if run_id and _status(output, run_id) in ("complete", "partial"):
                break  # finished: partial runs are judged by the verdict below
            if sessions > kills + 5:
                raise RuntimeError("the run never completed")
        verdict = verify_run(stack.fleet, str(output), run_id, regions=REGIONS)
        return {
            "accounts": accounts,
            "kills": done_kills,
            "sessions": sessions,
            "recovery_points_expected": verdict.expected,
            "recovery_points_written": verdict.written,
            "missing": verdict.missing,
            "written_twice": verdict.duplicated,
            "exact": verdict.exact,
            "seconds": round(time.monotonic() - started, 1),
        }


def _status(output: Path, run_id: str) -> str:
    (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
    return str(read_manifest(path)["status"])


#: Every fault at once: InternalServerError 400 and 500, resets, slow answers beyond the read
#: timeout, truncated bodies, throttling at 8/s, latency, and credentials expiring every 2 s.
ALL_FAULTS = Faults(
    [
        FaultRule(
            internal_error_rate=0.1,
            internal_error_status=400,
            reset_rate=0.05,
            slow_rate=0.03,
            slow_seconds=3.0,
            malformed_rate=0.05,
            throttle_rate=8,
            throttle_burst=2,
            latency_ms=10,
            jitter_ms=20,
        ),
        FaultRule(
            operation="ListVolumeRecoveryPoints",
            internal_error_rate=0.1,
            internal_error_status=500,
        ),
    ]
)


def fault_soak(accounts: int, runs: int) -> dict[str, Any]:
    """``runs`` scans of one fleet under every fault at once, each into a fresh directory: how
    many end complete or partial, and whether each one's data is exact (every recovery point of
    the fleet once: nothing missing, nothing twice, nothing unexpected)."""
    spec = FleetSpec(seed=9, accounts=accounts, regions=REGIONS)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, start_stack(spec) as stack:
        home = Path(tmp)
        stack.emulator.faults = ALL_FAULTS
        stack.emulator.credential_ttl = 2.0
        for number in range(runs):
            output = home / f"run-{number}"
            faults_before = stack.emulator.counters.faults()
            started = time.monotonic()
            proc = subprocess.run(
                _scan_command(stack, output, "--read-timeout", "1", "--max-attempts", "10"),
                env=_env(stack, home),
                capture_output=True,
                timeout=1800,
                check=False,
            )
            run_id = latest_run(output)
            assert run_id is not None, proc.stderr.decode()[-2000:]
            (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
            manifest = read_manifest(path)
            summary = manifest["summary"]
            verdict = verify_run(stack.fleet, str(output), run_id, regions=REGIONS)
            rows.append(
                {
                    "exit_code": proc.returncode,
                    "status": manifest["status"],
                    "seconds": round(time.monotonic() - started, 1),
                    "units_planned": summary["units_planned"],
                    "units_failed": summary["units_failed"],
                    "api_calls": summary["api_calls_total"],
                    "retries": summary["retries"],
                    "throttles": summary["throttles"],
                    "credential_refreshes": summary["credential_refreshes"],
                    "faults_injected": {
                        kind: n - faults_before.get(kind, 0)
                        for kind, n in stack.emulator.counters.faults().items()
                    },
                    "recovery_points_expected": verdict.expected,
                    "recovery_points_missing": verdict.missing,
                    "written_twice": verdict.duplicated,
                    "unexpected": verdict.unexpected,
                    "exact": verdict.exact,
                }
            )
            shutil.rmtree(output)
    statuses = [row["status"] for row in rows]
    return {
        "accounts": accounts,
        "runs": runs,
        "complete": statuses.count("complete"),
        "partial": statuses.count("partial"),
        "other": len(rows) - statuses.count("complete") - statuses.count("partial"),
        "exact": sum(1 for row in rows if row["exact"]),
        "recovery_points_missing": sum(row["recovery_points_missing"] for row in rows),
        "written_twice": sum(row["written_twice"] for row in rows),
        "per_run": rows,
    }


def retry_budget(accounts: int) -> dict[str, Any]:
    """Calls per failed unit when every call fails, with the default budget and without one."""
    spec = FleetSpec(seed=3, accounts=accounts, regions=REGIONS)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, start_stack(spec) as stack:
        home = Path(tmp)
        stack.emulator.faults = Faults([FaultRule(internal_error_rate=1.0)])
        for label, ratio in (("budget 0.5 (default)", "0.5"), ("no budget", "1000")):
            stack.emulator.counters.reset()
            output = home / label.replace(" ", "-")
            config = home / f"{label.split()[0]}-{ratio}.toml"
            config.write_text(f"retry_budget_ratio = {ratio}\n")
            subprocess.run(
                _scan_command(stack, output, "--config", str(config), "--max-attempts", "8"),
                env=_env(stack, home),
                capture_output=True,
                timeout=1800,
                check=False,
            )
            run_id = latest_run(output)
            assert run_id is not None
            (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
            failed = read_manifest(path)["summary"]["units_failed"]
            calls = stack.emulator.counters.calls(service="storagegateway")
            rows[label] = {
                "units_failed": failed,
                "storage_gateway_calls": calls,
                "calls_per_failed_unit": round(calls / max(failed, 1), 2),
            }
    return rows


def main(quick: bool = False) -> dict[str, Any]:
    results = {
        "kill_and_resume": kill_and_resume(kills=4 if quick else 20, accounts=80 if quick else 600),
        "fault_soak": fault_soak(accounts=60 if quick else 300, runs=3 if quick else 10),
        "retry_budget": retry_budget(accounts=40 if quick else 200),
    }
    k = results["kill_and_resume"]
    print(
        f"kill-and-resume ({k['accounts']} accounts): {k['kills']} SIGKILLs over "
        f"{k['sessions']} sessions, {k['seconds']} s: {k['recovery_points_written']}/"
        f"{k['recovery_points_expected']} recovery points, {k['missing']} missing, "
        f"{k['written_twice']} written twice -> {'EXACT' if k['exact'] else 'NOT EXACT'}"
    )
    f = results["fault_soak"]
    for number, row in enumerate(f["per_run"], 1):
        print(
            f"fault soak run {number}/{f['runs']} ({f['accounts']} accounts, every fault at once): "
            f"exit {row['exit_code']} {row['status']}, {row['seconds']} s, "
            f"{row['units_failed']}/{row['units_planned']} units failed, {row['api_calls']} calls, "
            f"{row['retries']} retries, {row['throttles']} throttles, "
            f"{row['credential_refreshes']} credential refreshes, "
            f"{row['recovery_points_missing']} recovery points missing, "
            f"{row['written_twice']} written twice -> {'EXACT' if row['exact'] else 'NOT EXACT'}"
        )
    print(
        f"fault soak: {f['runs']} runs, {f['complete']} complete, {f['partial']} partial, "
        f"{f['other']} other; {f['exact']}/{f['runs']} exact; {f['recovery_points_missing']} "
        f"recovery points missing and {f['written_twice']} written twice in all"
    )
    for label, row in results["retry_budget"].items():
        print(
            f"retry budget, every call failing, {label}: {row['calls_per_failed_unit']} calls "
            f"per failed unit ({row['storage_gateway_calls']} calls, {row['units_failed']} units)"
        )
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
