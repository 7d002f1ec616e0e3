"""``make bench`` (``python -m benchmarks [--quick] [--only NAME]``): every benchmark, one report.

Prints a table per scenario, then writes all figures, with the machine they were measured on, to
``benchmarks/results/<UTC timestamp>.json`` (gitignored). The machine is part of the result: the
figures mean little without the core count and the load that other work put on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import bench_scan

RESULTS = Path(__file__).resolve().parent / "results"


def _emulator(quick: bool) -> dict[str, Any]:
    from . import bench_emulator

    result: dict[str, Any] = bench_emulator.main(quick)
    return result


def _calls(quick: bool) -> dict[str, Any]:
    from . import bench_calls

    result: dict[str, Any] = bench_calls.main(quick)
    return result


def _machinery(quick: bool) -> dict[str, Any]:
    from . import bench_machinery

    return bench_machinery.main(quick)


def _s3(quick: bool) -> dict[str, Any]:
    from . import bench_s3

    result: dict[str, Any] = bench_s3.main(quick)
    return result


def _validate(quick: bool) -> dict[str, Any]:
    from . import bench_validate

    return bench_validate.main(quick)


def _diff(quick: bool) -> dict[str, Any]:
    from . import bench_diff

    return bench_diff.main(quick)


def _soak(quick: bool) -> dict[str, Any]:
    from . import soak

    return soak.main(quick)


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "emulator": _emulator,
    "calls": _calls,
    "machinery": _machinery,
    **bench_scan.SCENARIOS,
    "s3": _s3,
    "validate": _validate,
    "diff": _diff,
    "soak": _soak,
}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("fleetscan", "aiobotocore", "botocore", "boto3", "anyio", "orjson", "moto"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind through every ``finally``, which stops the servers and scanners started so far.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of fleetscan and its emulator (see benchmarks/README.md).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run per measurement instead of three, and only the 250k-record memory run",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=tuple(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    args = parser.parse_args(argv)
    selected = [name for name in BENCHMARKS if not args.only or name in args.only]
    signal.signal(signal.SIGTERM, _on_sigterm)

    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    host = machine()
    print(
        f"machine: {host['nproc']} CPUs ({host['usable_cpus']} usable), {host['cpu_model']}; "
        f"Python {host['python']}; load average {host['load_average_at_start']}",
        flush=True,
    )
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
        "machine": host,
        "benchmarks": {},
    }
    failed = []
    for name in selected:
        began = time.perf_counter()
        try:
            result = BENCHMARKS[name](args.quick)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        result["elapsed_s"] = round(time.perf_counter() - began, 1)
        report["benchmarks"][name] = result
        print(f"[{name}: {result['elapsed_s']:.0f} s]", flush=True)

    report["duration_s"] = round(time.perf_counter() - clock, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nall benchmarks took {report['duration_s']:.0f} s (load average at the end: "
        f"{report['machine']['load_average_at_end']}); results: {path}"
    )
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
