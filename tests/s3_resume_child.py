"""A writer for tests/test_s3_resume.py to kill: synthetic units straight into an S3Sink.

Why not a scan: the emulated fleet's records weigh a few hundred KB, far below S3's 5 MiB part,
so a killed scan never leaves a multipart upload open or a rolled-over object uncommitted. This
writes ``UNITS`` units of ``PER_UNIT`` recovery points (about 200 KB a unit, 31 MB in all) the
way run_scan does (all of a unit's records, ``unit_done``, ``commit``), with 5 MiB parts,
objects rolling over at 12 MiB and commits every 20 MiB: most of the time an upload is open,
an object is complete but not yet checkpointed, or both.

``python s3_resume_child.py DEST RUN_ID new`` starts the run; ``... DEST RUN_ID resume`` does
what ``fleetscan scan --resume RUN_ID`` does (load the checkpoint, let the sink tidy up, skip
the checkpointed units) and finishes it.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter

import anyio

from fleetscan._records import SCHEMA_VERSION, RecoveryPointRecord
from fleetscan._sinks import RunInfo, S3Options, S3Sink, load_checkpoint
from fleetscan._sinks._s3 import MIN_PART_BYTES

UNITS = 150
PER_UNIT = 320
#: Seconds between units: a scan hands units over at its own pace, slower than S3 takes them.
PACE = 0.01
MIB = 1 << 20
STARTED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
REGION = "eu-west-1"


def unit_key(index: int) -> tuple[str, str]:
    return (f"{100000000000 + index:012d}", REGION)


def unit_records(index: int, run_id: str) -> list[RecoveryPointRecord]:
    """The records of one unit: the same in every process, each volume ARN unique."""
    account = unit_key(index)[0]
    gateway = f"arn:aws:storagegateway:{REGION}:{account}:gateway/sgw-{index:08X}"
    return [
        RecoveryPointRecord(
            SCHEMA_VERSION,
            run_id,
            "2026-01-02T03:05:00.000Z",
            "aws",
            account,
            f"account {index} of a synthetic fleet padded to a realistic record size",
            REGION,
            gateway,
            f"sgw-{index:08X}",
            f"gateway {index}",
            f"{gateway}/volume/vol-{index:04X}{n:04X}",
            f"vol-{index:04X}{n:04X}",
            "2026-01-02T01:00:00.000Z",
            107374182400 + n,
            53687091200 + n,
            7500.0,
        )
        for n in range(PER_UNIT)
    ]


def expected_volumes(run_id: str) -> list[str]:
    return [r.volume_arn for index in range(UNITS) for r in unit_records(index, run_id)]


async def main(dest: str, run_id: str, mode: str) -> None:
    checkpoint = await load_checkpoint(dest, run_id) if mode == "resume" else None
    run = RunInfo(run_id=run_id, started_at=STARTED, version="test")
    options = S3Options(part_bytes=MIN_PART_BYTES, commit_min_bytes=20 * MIB, commit_max_age=3600.0)
    sink = S3Sink(
        dest, run, compress="none", max_object_bytes=12 * MIB, options=options, resume=checkpoint
    )
    await sink.start()
    done = checkpoint.units if checkpoint is not None else set()
    for index in range(UNITS):
        key = unit_key(index)
        if key in done:
            continue
        records = unit_records(index, run_id)
        for record in records:
            await sink.write(record)
        sink.unit_done(key, Counter((None, r.dataset) for r in records))
        await sink.commit()
        await anyio.sleep(PACE)
    await sink.finish("complete", {"units": UNITS})


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
