"""How fast does the S3 sink write, and does its memory stay flat as the record count grows?

moto's S3 runs in its own process (``python -m moto.server`` on 127.0.0.1), so its CPU is not the
writer's. Each measured run is its own subprocess that writes N recovery-point records (about
630 bytes of NDJSON each, generated as they are written, as a scan hands them over) through
:class:`fleetscan._sinks.S3Sink` with its defaults (8 MiB parts, 128 MiB objects, CRC32 on every
part), and finishes with the manifest. Its CPU time and peak RSS are its own (measured by
:mod:`benchmarks._launcher`, which explains why not from this process); the
throughput is timed inside it, from the first record to the manifest. The run is then checked:
the manifest counts every record, the objects' sizes add up to it, no multipart upload is left.

Runs: 250,000 and 1,000,000 records uncompressed (memory must not grow with the count), and
1,000,000 gzipped. ``quick``: 50,000 and 200,000 uncompressed.

Run: ``python -m benchmarks.bench_s3`` (prints a table; ``main()`` returns the figures).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._measure import run_measured

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "fleetscan-bench"
RUNS = ((250_000, "none"), (1_000_000, "none"), (1_000_000, "gzip"))
QUICK_RUNS = ((50_000, "none"), (200_000, "none"))
START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 900.0
MIB = 1 << 20
_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "fleetscan/bench/not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1",
    "no_proxy": "127.0.0.1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port, stopped (and reaped) on the way out."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with opener.open(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# -- the measured process ------------------------------------------------------------------------


def _records(count: int, run_id: str) -> Iterator[Any]:
    """Distinct, realistic recovery points: 40 accounts x 4 regions x gateways of 20 volumes."""
    from fleetscan._records import SCHEMA_VERSION, RecoveryPointRecord

    regions = ("us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2")
    for i in range(count):
        account = f"{100000000000 + i // 25_000 % 40:012d}"
        region = regions[i // 5_000 % 4]
        gateway_id = f"sgw-{i // 20:08X}"
        gateway_arn = f"arn:aws:storagegateway:{region}:{account}:gateway/{gateway_id}"
        volume_id = f"vol-{i:08X}"
        yield RecoveryPointRecord(
            SCHEMA_VERSION, run_id, "2026-11-27T22:00:00.000Z", "aws", account,
            f"workload-{account[-4:]}", region, gateway_arn, gateway_id, f"gw-{i // 20}",
            f"{gateway_arn}/volume/{volume_id}", volume_id, "2026-11-27T19:41:07.000Z",
            1 << 40, (i * 7919) % (1 << 40), 8333.0,
        )  # fmt: skip


async def _write(count: int, compress: str, dest: str, run_id: str) -> dict[str, Any]:
    import datetime as dt

    from fleetscan._sinks import RunInfo, S3Sink

    run = RunInfo(run_id=run_id, started_at=dt.datetime.now(dt.UTC), version="bench")
    sink = S3Sink(dest, run, compress=compress, max_object_bytes=128 * MIB)  # type: ignore[arg-type]
    await sink.start()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    for record in _records(count, run_id):
        await sink.write(record)
    manifest = await sink.finish("complete", {})
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "rss_before_mb": baseline,
        "ndjson_bytes": sink.stats.ndjson_bytes,
        "stored_bytes": sum(entry["bytes"] for entry in manifest["files"]),
        "records": manifest["records"]["recovery_points"],
        "objects": len(manifest["files"]),
        "parts": sink.stats.parts,
        "requests": dict(sink.stats.requests),
        "retries": sink.stats.retries,
    }


def _child(count: int, compress: str, dest: str, run_id: str) -> None:
    import anyio

    result = anyio.run(_write, count, compress, dest, run_id, backend="asyncio")
    print(json.dumps(result))


# -- the driver ----------------------------------------------------------------------------------


def _measure(endpoint: str, count: int, compress: str, workdir: Path) -> dict[str, Any]:
    run_id = f"bench-{compress}-{count}"
    dest = f"s3://{BUCKET}/{run_id}/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | _ENV
    env["AWS_ENDPOINT_URL_S3"] = endpoint
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "benchmarks.bench_s3", "--child", str(count), compress, dest]
    out_path, err_path = workdir / f"{run_id}.out", workdir / f"{run_id}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        usage = run_measured(
            [*argv, run_id], env=env, cwd=workdir, stdout=out, stderr=err, timeout=RUN_TIMEOUT_S
        )
    if usage.returncode != 0:
        stderr = err_path.read_text(errors="replace")
        raise RuntimeError(f"the S3 writer exited {usage.returncode}: {stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    result.update(
        compress=compress,
        cpu_s=usage.cpu_s,
        peak_rss_mb=usage.peak_rss_mb,
        ndjson_mb_per_s=result["ndjson_bytes"] / MIB / result["wall_s"],
        stored_mb_per_s=result["stored_bytes"] / MIB / result["wall_s"],
        records_per_s=result["records"] / result["wall_s"],
    )
    _check(endpoint, dest, run_id, result, count)
    return result


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=_ENV["AWS_DEFAULT_REGION"],
    )


def _check(endpoint: str, dest: str, run_id: str, result: dict[str, Any], count: int) -> None:
    """The run is what it claims: every record counted, sizes add up, no upload left open."""
    s3 = _client(endpoint)
    prefix = dest.split("/", 3)[3]
    keys = []
    sizes = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            keys.append(item["Key"])
            if "/manifests/" not in item["Key"] and "/checkpoints/" not in item["Key"]:
                sizes += item["Size"]
    if result["records"] != count or sizes != result["stored_bytes"]:
        raise RuntimeError(f"{run_id}: the bucket does not hold what the manifest says")
    if s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads"):
        raise RuntimeError(f"{run_id}: a multipart upload was left open")
    # Free moto's memory and temporary files before the next run.
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": batch})


def main(quick: bool = False) -> dict[str, Any]:
    """Write each run into moto S3; print a table; return the figures."""
    runs = QUICK_RUNS if quick else RUNS
    results = []
    with moto_server() as endpoint, tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        _client(endpoint).create_bucket(Bucket=BUCKET)
        for count, compress in runs:
            results.append(_measure(endpoint, count, compress, Path(tmp)))
    _print(results)
    flat = [r for r in results if r["compress"] == "none"]
    growth = flat[-1]["peak_rss_mb"] - flat[0]["peak_rss_mb"]
    return {
        "runs": results,
        "peak_rss_growth_mb": growth,
        "records_ratio": flat[-1]["records"] / flat[0]["records"],
        "settings": {"part_bytes": 8 * MIB, "max_object_bytes": 128 * MIB, "checksum": "CRC32"},
    }


def _print(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'records':>10} {'compress':>8} {'objects':>7} {'parts':>5} {'wall s':>7} "
        f"{'NDJSON MB/s':>11} {'stored MB/s':>11} {'records/s':>10} {'CPU s':>6} "
        f"{'RSS before':>10} {'peak RSS':>9}"
    )
    print("S3 sink into moto S3 (own process), 8 MiB parts, 128 MiB objects, CRC32 per part")
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['records']:>10,} {r['compress']:>8} {r['objects']:>7} {r['parts']:>5} "
            f"{r['wall_s']:>7.1f} {r['ndjson_mb_per_s']:>11.1f} {r['stored_mb_per_s']:>11.1f} "
            f"{r['records_per_s']:>10,.0f} {r['cpu_s']:>6.1f} {r['rss_before_mb']:>8.0f}MB "
            f"{r['peak_rss_mb']:>7.0f}MB"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        main(quick="--quick" in sys.argv[1:])
