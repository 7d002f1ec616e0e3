"""How fast is the emulator, how fast is a fleet built, and does a call cost more as runs grow?

The emulator must never be what limits a scanner's benchmark, so it is measured alone: it runs
in its own process (one core, as ``fleetscan emulator serve`` does) and this process loads it
with bare aiohttp and fixed pre-signed headers (the emulator parses SigV4 but does not verify
it), many requests in flight over keep-alive connections. The request mix is scan-like but
heavier than a real scan: half ListGateways (half of those on populated pairs, the others empty),
half ListVolumeRecoveryPoints on cached gateways, all from a 10,000-account x 34-region fleet.

Reported: median calls/s over 3 runs of a few seconds, for plain HTTP and for TLS, with the
server's CPU time per call (what one core can serve when the client is not the limit), and the
time to build the fleet of 10,000 accounts x 34 regions.

Then, at scale (:func:`identity_scale`): the server's CPU per call of what a scan of every account
makes, in the order it makes them, on fleets of 1,000 and 10,000 accounts x 16 regions: an
AssumeRole into every account (the session keys it returns then sign that account's calls), every
ListAccounts page, a DescribeRegions and a ListGateways per account. Each operation's calls run in
ten consecutive slices; a cost that grew with the run (moto's STS searched every key it had issued
for each call) would show as a last slice dearer than the first, and 10,000 accounts dearer than
1,000. Outside ``--quick`` the same AssumeRole and ListAccounts calls go to moto seeded with 1,000
accounts (the stack's ``identity="moto"``), for comparison.

Run: ``python -m benchmarks.bench_emulator`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import shlex
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from fleetscan.emulator import (
    DEFAULT_REGIONS,
    MANAGEMENT_ACCOUNT_ID,
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


def _fleet_spec(
    accounts: int = ACCOUNTS, regions: tuple[str, ...] = STORAGE_GATEWAY_REGIONS
) -> FleetSpec:
    return FleetSpec(seed=SEED, accounts=accounts, regions=regions)


def _serve(
    conn: multiprocessing.connection.Connection,
    tls_dir: str | None,
    accounts: int = ACCOUNTS,
    regions: tuple[str, ...] = STORAGE_GATEWAY_REGIONS,
) -> None:
    """The server process: build the fleet, serve, answer CPU-time queries until told to stop."""
    fleet = Fleet(_fleet_spec(accounts, regions))
    tls = TLSMaterial.load(Path(tls_dir)) if tls_dir else None
    emulator = EmulatorServer(fleet, tls=tls)
    emulator.prepare()  # as ``fleetscan emulator serve`` does: per-call costs only
    gc.freeze()

    async def run() -> None:
        async with emulator as server:
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


@contextlib.contextmanager
def _emulator_process(
    tls_dir: str | None = None,
    accounts: int = ACCOUNTS,
    regions: tuple[str, ...] = STORAGE_GATEWAY_REGIONS,
) -> Iterator[tuple[str, Callable[[], float]]]:
    """The emulator in its own process (:func:`_serve`): (its URL, a reader of its CPU time)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, tls_dir, accounts, regions), daemon=True)
    process.start()
    try:
        if not parent.poll(300):
            raise RuntimeError("the emulator process did not start")
        endpoint_url: str = parent.recv()

        def cpu() -> float:
            parent.send("cpu")
            seconds: float = parent.recv()
            return seconds

        yield endpoint_url, cpu
        parent.send("stop")
        process.join(timeout=30)
    finally:
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)


def _bench_server(
    mix: list[tuple[dict[str, str], bytes]], tls: TLSMaterial | None
) -> dict[str, Any]:
    ssl_context = tls.client_ssl_context() if tls else None
    runs = []
    with _emulator_process(str(tls.directory) if tls else None) as (endpoint_url, cpu):
        for _ in range(RUNS):
            cpu_before = cpu()
            ok, failed, elapsed = asyncio.run(_load(endpoint_url, mix, RUN_SECONDS, ssl_context))
            cpu_used = cpu() - cpu_before
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


# -- at scale: identity calls and Storage Gateway, per account ----------------------------------

SCALE_ACCOUNTS = (1_000, 10_000)
SCALE_REGIONS = DEFAULT_REGIONS
SLICES = 10
MOTO_ACCOUNTS = 1_000
_ROLE = "FleetscanReader"
_CREDENTIALS = re.compile(
    rb"<AccessKeyId>([^<]+)</AccessKeyId>.*<SessionToken>([^<]+)</SessionToken>"
)

Request = tuple[dict[str, str], bytes]


def _signed(
    service: str,
    access_key_id: str,
    region: str,
    *,
    target: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Headers of a signed-looking call: what the emulator (and moto) read from a request."""
    headers = {
        "Content-Type": "application/x-amz-json-1.1"
        if target
        else "application/x-www-form-urlencoded; charset=utf-8",
        "X-Amz-Date": "20260101T000000Z",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{region}/{service}/"
            "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
        ),
    }
    if target is not None:
        headers["X-Amz-Target"] = target
    if token is not None:
        headers["X-Amz-Security-Token"] = token
    return headers


def _assume_role(account_id: str) -> Request:
    body = urllib.parse.urlencode(
        {
            "Action": "AssumeRole",
            "Version": "2011-06-15",
            "RoleArn": f"arn:aws:iam::{account_id}:role/{_ROLE}",
            "RoleSessionName": "fleetscan-bench",
            "DurationSeconds": "3600",
        }
    ).encode()
    return _signed(
        "sts", access_key_for_account(MANAGEMENT_ACCOUNT_ID, tag="stack"), "us-east-1"
    ), body


async def _slices(
    url: str, requests: list[Request], cpu: Callable[[], float], concurrency: int = CONCURRENCY
) -> tuple[list[float], list[bytes]]:
    """Send every request once, in ``SLICES`` consecutive slices: the server's CPU microseconds
    per call of each slice, and every answer body in request order."""
    answers: list[bytes] = [b""] * len(requests)
    per_call: list[float] = []
    size = -(-len(requests) // SLICES)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for first in range(0, len(requests), size):
            indexes = iter(range(first, min(first + size, len(requests))))
            before = cpu()

            async def worker(indexes: Iterator[int] = indexes) -> None:
                for index in indexes:
                    headers, body = requests[index]
                    async with session.post(url + "/", headers=headers, data=body) as response:
                        answers[index] = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"call {index} failed: {answers[index][:300]!r}")

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            per_call.append((cpu() - before) / (min(first + size, len(requests)) - first) * 1e6)
    return per_call, answers


async def _walk_accounts(
    url: str,
    headers: dict[str, str],
    cpu: Callable[[], float],
    min_pages: int = 1,
    stride: int = 5,
) -> list[float]:
    """Every ListAccounts page, one after the other (each needs the last one's NextToken), walk
    after walk until ``min_pages`` pages, in ``SLICES`` slices: the server's CPU microseconds per
    page of each slice. The server's CPU is read every ``stride`` pages, not after each: a
    reading costs the server CPU of its own (a thread wakes up to answer it), which the pages'
    figure would include."""
    marks: list[tuple[int, float]] = [(0, cpu())]  # (pages so far, server CPU seconds)
    pages = 0
    async with aiohttp.ClientSession() as session:
        while pages < min_pages:
            body: dict[str, Any] = {"MaxResults": 20}
            while True:
                async with session.post(url + "/", headers=headers, data=orjson.dumps(body)) as r:
                    page = orjson.loads(await r.read())
                    if r.status != 200:
                        raise RuntimeError(f"ListAccounts failed: {page}")
                pages += 1
                if pages % stride == 0:
                    marks.append((pages, cpu()))
                if not page.get("NextToken"):
                    break
                body["NextToken"] = page["NextToken"]
    if marks[-1][0] != pages:
        marks.append((pages, cpu()))
    size = -(-(len(marks) - 1) // SLICES)
    bounds = [*marks[::size], *([marks[-1]] if (len(marks) - 1) % size else [])]
    return [(c1 - c0) / (p1 - p0) * 1e6 for (p0, c0), (p1, c1) in itertools.pairwise(bounds)]


def _summary(per_call: list[float]) -> dict[str, Any]:
    return {
        "first_slice_us": round(per_call[0], 1),
        "last_slice_us": round(per_call[-1], 1),
        "median_us": round(statistics.median(per_call), 1),
        "slices_us": [round(x, 1) for x in per_call],
    }


async def _scale_run(url: str, fleet: Fleet, cpu: Callable[[], float]) -> dict[str, Any]:
    """The calls a scan of every account makes, per operation, against a running emulator."""
    accounts = [MANAGEMENT_ACCOUNT_ID, *(a.id for a in fleet.accounts if a.active)]
    results: dict[str, Any] = {"accounts": len(fleet.accounts), "regions": len(fleet.spec.regions)}
    per_call, answers = await _slices(url, [_assume_role(a) for a in accounts], cpu)
    results["AssumeRole"] = _summary(per_call)
    sessions: list[tuple[str, str, str]] = []
    for account_id, answer in zip(accounts, answers, strict=True):
        found = _CREDENTIALS.search(answer)
        if found is None:
            raise RuntimeError(f"AssumeRole into {account_id} answered {answer[:300]!r}")
        sessions.append((account_id, found[1].decode(), found[2].decode()))

    management = access_key_for_account(MANAGEMENT_ACCOUNT_ID, tag="stack")
    list_accounts = _signed(
        "organizations", management, "us-east-1", target="AWSOrganizationsV20161128.ListAccounts"
    )
    # The first walk renders the organization's pages (once per server); then walks repeat
    # until 500 pages, so that each slice holds enough pages to measure.
    results["ListAccounts first walk"] = _summary(await _walk_accounts(url, list_accounts, cpu))
    results["ListAccounts"] = _summary(await _walk_accounts(url, list_accounts, cpu, 500))

    regions = urllib.parse.urlencode(
        {"Action": "DescribeRegions", "Version": "2016-11-15"}
    ).encode()
    describe = [
        (_signed("ec2", key, "us-east-1", token=token), regions) for _, key, token in sessions
    ]
    results["DescribeRegions"] = _summary((await _slices(url, describe, cpu))[0])
    rng = random.Random(SEED)
    list_gateways = [
        (
            _signed(
                "storagegateway",
                key,
                rng.choice(fleet.enabled_regions(account_id)),
                target=_TARGET + "ListGateways",
                token=token,
            ),
            b"{}",
        )
        for account_id, key, token in sessions
    ]
    results["ListGateways"] = _summary((await _slices(url, list_gateways, cpu))[0])
    return results


def _emulator_at_scale(accounts: int) -> dict[str, Any]:
    fleet = Fleet(_fleet_spec(accounts, SCALE_REGIONS))
    with _emulator_process(None, accounts, SCALE_REGIONS) as (url, cpu):
        return asyncio.run(_scale_run(url, fleet, cpu))


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _moto_at_scale(accounts: int) -> dict[str, Any]:
    """AssumeRole into every account and every ListAccounts page, answered by moto seeded with
    the fleet (``fleetscan emulator serve --identity moto``), for comparison."""
    argv = [sys.executable, "-m", "fleetscan.emulator", "serve", "--identity", "moto"]
    argv += ["--accounts", str(accounts), "--seed", str(SEED)]
    argv += ["--regions", ",".join(SCALE_REGIONS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        exports: dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("export "):
                key, _, value = shlex.split(line)[1].partition("=")
                exports[key] = value
            if line.startswith("# role "):
                break
        else:
            raise RuntimeError(f"moto did not start: exit {process.wait()}")
        seeded = time.perf_counter() - started
        url = exports["AWS_ENDPOINT_URL_STS"]
        fleet = Fleet(_fleet_spec(accounts, SCALE_REGIONS))
        members = [MANAGEMENT_ACCOUNT_ID, *(a.id for a in fleet.accounts if a.active)]

        def cpu() -> float:
            return _process_cpu(process.pid)

        async def run() -> dict[str, Any]:
            results: dict[str, Any] = {"accounts": accounts, "start_seconds": round(seeded, 1)}
            per_call, _ = await _slices(url, [_assume_role(a) for a in members], cpu, 8)
            results["AssumeRole"] = _summary(per_call)
            headers = _signed(
                "organizations",
                exports["AWS_ACCESS_KEY_ID"],
                "us-east-1",
                target="AWSOrganizationsV20161128.ListAccounts",
            )
            results["ListAccounts"] = _summary(await _walk_accounts(url, headers, cpu))
            return results

        return asyncio.run(run())
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def identity_scale(quick: bool = False) -> dict[str, Any]:
    """The emulator's CPU per call at 1,000 and 10,000 accounts (and moto's, unless quick)."""
    results: dict[str, Any] = {
        "emulator": {str(n): _emulator_at_scale(n) for n in SCALE_ACCOUNTS},
    }
    if not quick:
        results["moto"] = {str(MOTO_ACCOUNTS): _moto_at_scale(MOTO_ACCOUNTS)}
    _print_scale(results)
    return results


def _print_scale(results: dict[str, Any]) -> None:
    print(
        f"Emulator CPU per call at scale (us; first slice / last slice of {SLICES}, one call per "
        f"account; {len(SCALE_REGIONS)} regions)"
    )
    sizes = list(results["emulator"])
    header = f"{'operation':<25}" + "".join(f"{int(n):>10,} accounts     " for n in sizes)
    print(header)
    for operation in (
        "AssumeRole",
        "ListAccounts first walk",
        "ListAccounts",
        "DescribeRegions",
        "ListGateways",
    ):
        cells = "".join(
            f"{results['emulator'][n][operation]['first_slice_us']:>10.0f} / "
            f"{results['emulator'][n][operation]['last_slice_us']:<10.0f}"
            for n in sizes
        )
        print(f"{operation:<25}{cells}")
    for n, moto in results.get("moto", {}).items():
        print(
            f"moto at {int(n):,} accounts (started in {moto['start_seconds']} s): AssumeRole "
            f"{moto['AssumeRole']['first_slice_us']:.0f} / "
            f"{moto['AssumeRole']['last_slice_us']:.0f} us, "
            f"ListAccounts page {moto['ListAccounts']['first_slice_us']:.0f} / "
            f"{moto['ListAccounts']['last_slice_us']:.0f} us"
        )


def main(quick: bool = False) -> dict[str, Any]:
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
    results["scale"] = identity_scale(quick)
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
    main("--quick" in sys.argv[1:])
