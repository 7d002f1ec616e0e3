"""What the readers' shape checks cost per record (issue 15: every reader validates).

Each record read back is checked against its dataset's JSON Schema on the hot path of the
readers and the audit, so the check must stay cheap beside what reading a record costs anyway.
Measured in this process, best of 7 repeats, per record: parsing a line (``orjson.loads``), the
compiled check (the generated predicate :mod:`fleetscan._validate` runs first), the closures that
explain a mismatch, and for comparison a general validator (``jsonschema``, a dev dependency);
then reading a whole local run of N records through :func:`fleetscan._sinks.iter_records`
(file I/O, parsing, checks, SHA-256), per record.

Run: ``python -m benchmarks --only validate`` (``main()`` returns the figures).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson

from fleetscan._records import SCHEMA_VERSION, RecoveryPointRecord, load_schema
from fleetscan._sinks import RunInfo, iter_records, open_sink
from fleetscan._validate import checker, compile_schema

RUN = RunInfo(
    run_id="bench-validate", started_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), version="b"
)
RECORDS = 200_000
QUICK_RECORDS = 50_000
NUMBER = 20_000


def _record(index: int) -> RecoveryPointRecord:
    account = f"{100000000000 + index // 50:012d}"
    gateway = f"arn:aws:storagegateway:eu-west-1:{account}:gateway/sgw-{index // 10:08X}"
    volume = f"vol-{index:08X}"
    return RecoveryPointRecord(
        SCHEMA_VERSION, RUN.run_id, "2026-01-02T03:05:00.000Z", "aws", account, "an account",
        "eu-west-1", gateway, f"sgw-{index // 10:08X}", "a gateway", f"{gateway}/volume/{volume}",
        volume, "2026-01-02T01:00:00.000Z", 107374182400, 53687091200, 7500.0,
    )  # fmt: skip


def _per_call_us(fn: Callable[[], Any]) -> float:
    return min(timeit.repeat(fn, number=NUMBER, repeat=7)) / NUMBER * 1e6


def _write_run(dest: Path, count: int) -> None:
    async def write() -> None:
        sink = open_sink(str(dest), RUN)
        for index in range(count):
            await sink.write(_record(index))
        await sink.finish("complete", {})

    anyio.run(write)


def main(quick: bool = False) -> dict[str, Any]:
    from jsonschema import Draft202012Validator

    record = orjson.loads(orjson.dumps(_record(1)))
    line = orjson.dumps(record)
    check = checker("recovery_points")
    explain = compile_schema(load_schema("recovery_points"))
    general = Draft202012Validator(load_schema("recovery_points"))
    figures: dict[str, Any] = {
        "parse_us": _per_call_us(lambda: orjson.loads(line)),
        "check_us": _per_call_us(lambda: check(record)),
        "explaining_closures_us": _per_call_us(lambda: explain(record)),
        "jsonschema_us": _per_call_us(lambda: general.validate(record)),
    }
    count = QUICK_RECORDS if quick else RECORDS
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-validate-") as tmp:
        _write_run(Path(tmp), count)
        started = time.perf_counter()
        read = sum(1 for _ in iter_records(tmp, RUN.run_id, "recovery_points"))
        seconds = time.perf_counter() - started
    assert read == count
    figures |= {"records": count, "read_us_per_record": seconds / count * 1e6}
    print("shape checks, per recovery-point record (best of 7):")
    for key in ("parse_us", "check_us", "explaining_closures_us", "jsonschema_us"):
        print(f"  {key:<24} {figures[key]:8.2f} us")
    print(
        f"  reading a local run of {count:,} records: {figures['read_us_per_record']:.2f} us/record"
    )
    return figures


if __name__ == "__main__":
    main()
