"""How much memory and time does ``fleetscan diff`` take over two runs of a large fleet?

Two synthetic runs are written into a local directory through fleetscan's own local sink, as a
scan writes them (1,000 volumes per account, one gateway per 20 volumes): the second run has
every volume's recovery point an hour later, except 1 % that did not advance (stuck); 0.1 % of
the volumes are removed and 0.1 % replaced by new ones. ``fleetscan diff --output FILE`` then
runs as its own process (:mod:`benchmarks._launcher` measures its CPU and peak RSS), and its
counts are checked.

Runs: 1,000,000 volumes per run (``quick``: 200,000).

Run: ``python -m benchmarks --only diff``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson

from ._measure import run_measured

VOLUMES = 1_000_000
QUICK_VOLUMES = 200_000
PER_ACCOUNT = 1000
PER_GATEWAY = 20
REGION = "eu-west-1"
STUCK_EVERY = 100
CHURN_EVERY = 1000
T0 = dt.datetime(2026, 12, 1, 2, tzinfo=dt.UTC)


def _runs() -> list[tuple[str, dt.datetime]]:
    return [(f"20261201T0{n}0000Z-be7c4{n}", T0 + dt.timedelta(hours=n)) for n in (0, 1)]


async def _write_run(
    dest: Path, run_id: str, started: dt.datetime, count: int, second: bool
) -> int:
    from fleetscan._records import SCHEMA_VERSION, GatewayRecord, RecoveryPointRecord, format_time
    from fleetscan._sinks import RunInfo, open_sink

    sink = open_sink(str(dest), RunInfo(run_id=run_id, started_at=started, version="bench"))
    scanned = format_time(started)
    written = 0
    for first in range(0, count, PER_ACCOUNT):
        account = f"{100000000000 + first // PER_ACCOUNT:012d}"
        for gw_first in range(first, min(first + PER_ACCOUNT, count), PER_GATEWAY):
            gateway_id = f"sgw-{gw_first:08X}"
            gateway = f"arn:aws:storagegateway:{REGION}:{account}:gateway/{gateway_id}"
            volumes = 0
            for index in range(gw_first, min(gw_first + PER_GATEWAY, count)):
                gone = second and index % CHURN_EVERY == 1
                new = second and index % CHURN_EVERY == 2
                if gone:
                    continue
                volume = f"vol-{index + (10**8 if new else 0):08X}"
                advanced = second and index % STUCK_EVERY != 0
                age = 1800.0 + index % 7200
                # A stuck volume keeps the first run's recovery point, an hour older now.
                stuck = second and not advanced
                point = started - dt.timedelta(seconds=age, hours=1 if stuck else 0)
                record = RecoveryPointRecord(
                    SCHEMA_VERSION, run_id, scanned, "aws", account, f"account {account}",
                    REGION, gateway, gateway_id, f"gateway {gw_first}",
                    f"{gateway}/volume/{volume}", volume, format_time(point),
                    107374182400, 53687091200, (started - point).total_seconds(),
                )  # fmt: skip
                await sink.write(record)
                volumes += 1
                written += 1
            listed = GatewayRecord(
                SCHEMA_VERSION, run_id, scanned, "aws", account, f"account {account}", REGION,
                gateway, gateway_id, f"gateway {gw_first}", "CACHED", "ACTIVE", "VMWARE",
                "scanned", volumes, None,
            )  # fmt: skip
            await sink.write(listed)
        sink.unit_done((account, REGION, "*"), {})
        await sink.commit()
    await sink.finish("complete", {"config": {"regions": [REGION]}})
    return written


def measure(count: int, workdir: Path) -> dict[str, Any]:
    dest = workdir / "inventory"
    (first, first_at), (second, second_at) = _runs()
    before = anyio.run(_write_run, dest, first, first_at, count, False)
    after = anyio.run(_write_run, dest, second, second_at, count, True)
    output = workdir / "changes.ndjson"
    argv = [sys.executable, "-m", "fleetscan", "diff", "--input", str(dest), "--quiet"]
    usage = run_measured(
        [*argv, "--output", str(output)],
        env=dict(os.environ),
        cwd=workdir,
        stdout=None,
        stderr=None,
        timeout=1800,
    )
    if usage.returncode != 0:
        raise RuntimeError(f"fleetscan diff exited {usage.returncode}")
    counts: Counter[str] = Counter()
    with output.open("rb") as handle:
        for line in handle:
            counts[orjson.loads(line)["change"]] += 1
    # Per 1,000 volumes, one removed and one replaced by a new one: two gone, one appeared.
    churn = count // CHURN_EVERY
    want = {"stuck": count // STUCK_EVERY, "gone": 2 * churn, "appeared": churn}
    if {kind: counts[kind] for kind in want} != want:
        raise RuntimeError(f"diff counted {dict(counts)}, expected {want}")
    return {
        "volumes_before": before,
        "volumes_after": after,
        "changes": dict(counts),
        "wall_s": round(usage.wall_s, 2),
        "cpu_s": round(usage.cpu_s, 2),
        "peak_rss_mb": round(usage.peak_rss_mb, 1),
    }


def main(quick: bool = False) -> dict[str, Any]:
    count = QUICK_VOLUMES if quick else VOLUMES
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-diff-") as tmp:
        result = measure(count, Path(tmp))
    print(f"fleetscan diff of two runs of {count:,} volumes (local directory)")
    print(
        f"  wall {result['wall_s']} s, CPU {result['cpu_s']} s, peak RSS "
        f"{result['peak_rss_mb']} MB; changes {result['changes']}"
    )
    return result


if __name__ == "__main__":
    main()
