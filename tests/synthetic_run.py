"""A run of synthetic units written straight into a local sink, the way run_scan writes a scan:
all of a unit's records, ``unit_done``, ``commit``. For tests that need many runs, or many
sessions of one run, in seconds (each unit: one account, three recovery points).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from fleetscan._records import SCHEMA_VERSION, RecoveryPointRecord
from fleetscan._sinks import RunInfo, load_checkpoint, open_sink

RUN_ID = "synthetic-run"
RUN = RunInfo(run_id=RUN_ID, started_at=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC), version="t")
DT = "dt=2026-01-02"
REGION = "eu-west-1"
PER_UNIT = 3


def unit_key(index: int) -> tuple[str, str, str]:
    return (f"{100000000000 + index:012d}", REGION, "*")


def unit_records(index: int) -> list[RecoveryPointRecord]:
    account = unit_key(index)[0]
    gateway = f"arn:aws:storagegateway:{REGION}:{account}:gateway/sgw-{index:08X}"
    records = []
    for n in range(PER_UNIT):
        volume = f"vol-{index:04X}{n:04X}"
        record = RecoveryPointRecord(
            SCHEMA_VERSION, RUN_ID, "2026-01-02T03:05:00.000Z", "aws", account, f"account {index}",
            REGION, gateway, f"sgw-{index:08X}", f"gateway {index}", f"{gateway}/volume/{volume}",
            volume, "2026-01-02T01:00:00.000Z", 107374182400, 53687091200, 7500.0,
        )  # fmt: skip
        records.append(record)
    return records


async def session(
    dest: Path, units: range, *, resume: bool, end: str, config: dict[str, Any] | None = None
) -> None:
    """One session of the run: each unit written and committed, as run_scan does, then ended
    with ``end`` (``complete``: finished; ``interrupted``: stopped, resumable). ``config`` is
    the scan configuration a new run's checkpoint keeps."""
    checkpoint = await load_checkpoint(str(dest), RUN_ID) if resume else None
    sink = open_sink(str(dest), RUN, resume=checkpoint, config=config)
    done = checkpoint.units if checkpoint is not None else set()
    for index in units:
        if unit_key(index) in done:
            continue
        records = unit_records(index)
        for record in records:
            await sink.write(record)
        sink.unit_done(unit_key(index), Counter((None, r.dataset) for r in records))
        await sink.commit()
    if end == "complete":
        await sink.finish("complete", {})
    else:
        await sink.abort("interrupted", {})
