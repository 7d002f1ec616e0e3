"""How fast is the Storage Gateway emulator, and how fast is a fleet built?

The emulator must never be what limits a scanner's benchmark, so it is measured alone: it runs
in its own process (one core, as ``fleetscan emulator serve`` does) and this process loads it
with bare aiohttp and fixed pre-signed headers (the emulator parses SigV4 but does not verify
it), many requests in flight over keep-alive connections. The request mix is scan-like but
heavier than a real scan: half ListGateways (half of those on populated pairs, the others empty),
half ListVolumeRecoveryPoints on cached gateways, all from a 10,000-account x 34-region fleet.

Reported: median calls/s over 3 runs of a few seconds, for plain HTTP and for TLS, with the
server's CPU time per call (what one core can serve when the client is not the limit), and the
time to build the fleet of 10,000 accounts x 34 regions.

Run: ``python -m benchmarks.bench_emulator`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import random
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from fleetscan.emulator import (
    STORAGE_GATEWAY_REGIONS,
    EmulatorServer,
    Fleet,
    FleetSpec,
    TLSMaterial,
    access_key_for_account,
)

ACCOUNTS = 10_000
RUNS = 3
RUN_SECONDS = 3.0
CONCURRENCY = 64
MIX_SIZE = 20_000
SEED = 2024
_TARGET = "StorageGateway_20130630."


def _fleet_spec() -> FleetSpec:
    return FleetSpec(seed=SEED, accounts=ACCOUNTS, regions=STORAGE_GATEWAY_REGIONS)


def _serve(conn: multiprocessing.connection.Connection, tls_dir: str | None) -> None:
    """The server process: build the fleet, serve, answer CPU-time queries until told to stop."""
    fleet = Fleet(_fleet_spec())
    tls = TLSMaterial.load(Path(tls_dir)) if tls_dir else None

    async def run() -> None:
        async with EmulatorServer(fleet, tls=tls) as server:
            conn.send(server.endpoint_url)
            loop = asyncio.get_running_loop()
            while True:
                message = await loop.run_in_executor(None, conn.recv)
                if message == "cpu":
                    conn.send(time.process_time())
                else:
                    break

    asyncio.run(run())


def _headers(account_id: str, region: str, operation: str) -> dict[str, str]:
    """Fixed, syntactically valid SigV4 headers: the credential scope is what the server reads."""
    akid = access_key_for_account(account_id)
    return {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": _TARGET + operation,
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={akid}/20260101/{region}/storagegateway/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64
        ),
    }


def request_mix(fleet: Fleet, size: int = MIX_SIZE) -> list[tuple[dict[str, str], bytes]]:
    """Half ListGateways (half on populated pairs), half ListVolumeRecoveryPoints."""
    rng = random.Random(SEED)
    populated = sorted(fleet.pairs)
    accounts = [a.id for a in fleet.accounts]
    regions = fleet.spec.regions
    cached = [
        g for pair in rng.sample(populated, min(500, len(populated))) for g in fleet.gateways(*pair)
    ]
    cached = [g for g in cached if g.is_cached and g.connected]
    mix: list[tuple[dict[str, str], bytes]] = []
    for index in range(size):
        if index % 2 == 0:
            if index % 4 == 0:
                account_id, region = rng.choice(populated)
            else:
                account_id, region = rng.choice(accounts), rng.choice(regions)
            mix.append((_headers(account_id, region, "ListGateways"), b"{}"))
        else:
            gateway = rng.choice(cached)
            body = orjson.dumps({"GatewayARN": gateway.arn})
            mix.append(
                (_headers(gateway.account_id, gateway.region, "ListVolumeRecoveryPoints"), body)
            )
    return mix


async def _load(
    endpoint_url: str,
    mix: list[tuple[dict[str, str], bytes]],
    seconds: float,
    ssl_context: ssl.SSLContext | None,
) -> tuple[int, int, float]:
    """(successful calls, failed calls, elapsed seconds) of ``seconds`` of closed-loop load."""
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=ssl_context or False)
    ok = failed = 0
    cursor = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def warm() -> None:
            async with session.post(endpoint_url + "/", headers=mix[0][0], data=mix[0][1]) as r:
                await r.read()

        # Open the connections (and do the TLS handshakes) before the clock starts.
        await asyncio.gather(*(warm() for _ in range(CONCURRENCY)))
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal ok, failed, cursor
            while time.perf_counter() < deadline:
                headers, body = mix[cursor % len(mix)]
                cursor += 1
                async with session.post(endpoint_url + "/", headers=headers, data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        failed += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
    return ok, failed, elapsed


def _bench_server(
    mix: list[tuple[dict[str, str], bytes]], tls: TLSMaterial | None
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_serve, args=(child, str(tls.directory) if tls else None), daemon=True
    )
    process.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the emulator process did not start")
        endpoint_url = parent.recv()
        ssl_context = tls.client_ssl_context() if tls else None
        runs = []
        for _ in range(RUNS):
            parent.send("cpu")
            cpu_before = parent.recv()
            ok, failed, elapsed = asyncio.run(_load(endpoint_url, mix, RUN_SECONDS, ssl_context))
            parent.send("cpu")
            cpu_used = parent.recv() - cpu_before
            if failed:
                raise RuntimeError(f"{failed} calls failed during the benchmark")
            runs.append(
                {
                    "calls": ok,
                    "seconds": round(elapsed, 3),
                    "calls_per_s": round(ok / elapsed),
                    "server_cpu_us_per_call": round(cpu_used / max(ok, 1) * 1e6, 1),
                }
            )
        parent.send("stop")
        process.join(timeout=30)
    finally:
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
    median_rate = statistics.median(r["calls_per_s"] for r in runs)
    median_cpu = statistics.median(r["server_cpu_us_per_call"] for r in runs)
    return {
        "calls_per_s": median_rate,
        "server_cpu_us_per_call": median_cpu,
        "calls_per_server_cpu_s": round(1e6 / median_cpu) if median_cpu else None,
        "runs": runs,
    }


def fleet_build_seconds() -> float:
    """Median time to build the 10,000-account x 34-region fleet (only populated pairs)."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        Fleet(_fleet_spec())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> dict[str, Any]:
    """Run the emulator benchmark, print a table and return the figures."""
    build = fleet_build_seconds()
    fleet = Fleet(_fleet_spec())
    mix = request_mix(fleet)
    results: dict[str, Any] = {
        "fleet": {
            "accounts": ACCOUNTS,
            "regions": len(STORAGE_GATEWAY_REGIONS),
            "populated_pairs": len(fleet.pairs),
            "gateways": sum(fleet.pairs.values()),
            "build_seconds": round(build, 3),
        },
        "load": {"concurrency": CONCURRENCY, "run_seconds": RUN_SECONDS, "runs": RUNS},
    }
    results["http"] = _bench_server(mix, None)
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-tls-") as directory:
        results["tls"] = _bench_server(mix, TLSMaterial.create(Path(directory)))
    _print_table(results)
    return results


def _print_table(results: dict[str, Any]) -> None:
    fleet = results["fleet"]
    load = results["load"]
    print(
        f"Storage Gateway emulator (server: 1 process; client: bare aiohttp, "
        f"{load['concurrency']} in flight, {load['runs']} x {load['run_seconds']:g} s; "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"{'mode':<6} {'calls/s (median)':>17} {'server CPU/call':>16} {'calls/CPU-s':>12}  runs")
    for mode in ("http", "tls"):
        r = results[mode]
        runs = ", ".join(str(run["calls_per_s"]) for run in r["runs"])
        print(
            f"{mode:<6} {r['calls_per_s']:>17,} {r['server_cpu_us_per_call']:>13.1f} us "
            f"{r['calls_per_server_cpu_s']:>12,}  {runs}"
        )
    print(
        f"fleet build: {fleet['accounts']:,} accounts x {fleet['regions']} regions -> "
        f"{fleet['populated_pairs']:,} populated pairs, {fleet['gateways']:,} gateways "
        f"in {fleet['build_seconds']:.3f} s"
    )


if __name__ == "__main__":
    main()
