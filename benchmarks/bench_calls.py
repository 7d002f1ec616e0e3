"""CPU per call: an aiobotocore client against fleetscan's lean clients (ListGateways through
StorageGatewayClient, AssumeRole through AssumeRoleClient), and the floor (a bare aiohttp POST
with headers computed once: see :mod:`benchmarks._bound`).

Why it is measured: the listing phase of a scan is bound by the CPU each call costs, and
``fleetscan/_storagegateway.py`` exists to cut it. Both clients run in this process, built by the
same ``AwsClients`` (same endpoint, same shared TLS pool), against the emulator in a subprocess
over TLS with no latency and no throttle, so the client's CPU is all that is measured
(``getrusage`` of this process). They alternate, 3,000 ListGateways calls a round with 32 in
flight; the figure is the median round, and the ratio comes from the same run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import statistics
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio

from fleetscan._credentials import MEMBER_SESSION_POLICY
from fleetscan.emulator import DEFAULT_ROLE_NAME, Fleet

from ._bound import floor_cpu_ms_per_call
from .bench_scan import Emulator, Network, Shape, _workdir

CALLS_PER_ROUND = 3_000
IN_FLIGHT = 32
NETWORK = Network(latency_ms=0.0, jitter_ms=0.0, throttle_rate=1e6, throttle_burst=1_000_000)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """This process's environment pointed at the emulator, restored afterwards."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _cpu_ms_per_call(call: Callable[[], Awaitable[Any]]) -> float:
    limiter = anyio.CapacityLimiter(IN_FLIGHT)

    async def one() -> None:
        async with limiter:
            await call()

    before = _cpu_seconds()
    async with anyio.create_task_group() as tg:
        for _ in range(CALLS_PER_ROUND):
            tg.start_soon(one)
    return (_cpu_seconds() - before) / CALLS_PER_ROUND * 1000


async def _measure(rounds: int) -> dict[str, Any]:
    from fleetscan._aws import AmbientCredentials, AwsClients, acting_as

    per_call: dict[str, list[float]] = {
        "aiobotocore": [],
        "fleetscan": [],
        "assume_role_aiobotocore": [],
        "assume_role_fleetscan": [],
    }
    member = Fleet(Shape(accounts=20).spec()).accounts[0].id
    role = {
        "RoleArn": f"arn:aws:iam::{member}:role/{DEFAULT_ROLE_NAME}",
        "RoleSessionName": "fleetscan-bench",
        "DurationSeconds": 3600,
        "Policy": MEMBER_SESSION_POLICY,
    }
    async with AwsClients(
        profile=None, max_pool_connections=IN_FLIGHT, connect_timeout=10, read_timeout=30
    ) as clients:
        with acting_as(AmbientCredentials(None)):
            botocore_client = await clients.client("storagegateway", "us-east-1")
            ours = await clients.storage_gateway("us-east-1")
            botocore_sts = await clients.client("sts", "us-east-1")
            our_sts = await clients.sts("us-east-1")
            calls = {
                "aiobotocore": botocore_client.list_gateways,
                "fleetscan": ours.list_gateways,
                "assume_role_aiobotocore": functools.partial(botocore_sts.assume_role, **role),
                "assume_role_fleetscan": functools.partial(our_sts.assume_role, **role),
            }
            for call in calls.values():  # warm: connections open, credentials resolved
                await call()
            for _ in range(rounds):
                for name, call in calls.items():
                    per_call[name].append(await _cpu_ms_per_call(call))
    medians = {name: round(statistics.median(values), 3) for name, values in per_call.items()}
    endpoint = os.environ["AWS_ENDPOINT_URL_STORAGE_GATEWAY"]
    medians["floor"] = await floor_cpu_ms_per_call(endpoint, os.environ["AWS_CA_BUNDLE"], rounds)
    return {
        "calls_per_round": CALLS_PER_ROUND,
        "in_flight": IN_FLIGHT,
        "rounds": rounds,
        "cpu_ms_per_call": medians,
        "ratio": round(medians["aiobotocore"] / medians["fleetscan"], 2),
        "assume_role_ratio": round(
            medians["assume_role_aiobotocore"] / medians["assume_role_fleetscan"], 2
        ),
        "fleetscan_over_floor": round(medians["fleetscan"] / medians["floor"], 2),
        "runs_cpu_ms_per_call": {k: [round(v, 3) for v in vs] for k, vs in per_call.items()},
    }


def floor(quick: bool = False) -> float:
    """The floor CPU per call (ms), measured alone: for a benchmark that needs it in its own run."""
    rounds = 1 if quick else 3
    with (
        _workdir() as workdir,
        Emulator(Shape(accounts=20), NETWORK, workdir) as emulator,
        _environment(emulator.env(workdir)),
    ):
        endpoint, ca_bundle = (
            os.environ["AWS_ENDPOINT_URL_STORAGE_GATEWAY"],
            os.environ["AWS_CA_BUNDLE"],
        )
        return anyio.run(floor_cpu_ms_per_call, endpoint, ca_bundle, rounds, backend="asyncio")


def main(quick: bool = False) -> dict[str, Any]:
    rounds = 1 if quick else 3
    with (
        _workdir() as workdir,
        Emulator(Shape(accounts=20), NETWORK, workdir) as emulator,
        _environment(emulator.env(workdir)),
    ):
        result = anyio.run(_measure, rounds, backend="asyncio")
    medians = result["cpu_ms_per_call"]
    print()
    print(
        f"(calls) CPU per ListGateways call, median of {rounds} round(s) of "
        f"{CALLS_PER_ROUND:,} calls, {IN_FLIGHT} in flight, TLS, no latency:"
    )
    print(
        f"    aiobotocore client {medians['aiobotocore']:.3f} ms; fleetscan's "
        f"StorageGatewayClient {medians['fleetscan']:.3f} ms; ratio {result['ratio']:.2f}x; "
        f"floor (bare aiohttp POST) {medians['floor']:.3f} ms: fleetscan's client "
        f"{result['fleetscan_over_floor']:.2f}x the floor"
    )
    print(
        f"    AssumeRole: aiobotocore client {medians['assume_role_aiobotocore']:.3f} ms; "
        f"fleetscan's AssumeRoleClient {medians['assume_role_fleetscan']:.3f} ms; ratio "
        f"{result['assume_role_ratio']:.2f}x"
    )
    return result
