"""The lower bound of a scan's wall time on an emulated fleet, and the CPU floor of one call.

Why: a ratio to the boto3 baseline says how much better than a naive script fleetscan is, not how
far it is from what the fleet and the service allow. The bound says that. It is the largest of
three limits, each computed from the fleet's own model and the emulated network, with the costs
that are not the fleet's (interpreter start-up, the floor CPU of one HTTPS call) measured in the
same benchmark run:

(a) **the slowest unit**: an (account, region) pair's calls pass the service's token bucket
    (``rate`` per second after a ``burst``), and its ListVolumeRecoveryPoints calls can start only
    once its ListGateways answer is back. A pair reached no earlier than start-up ends no earlier
    than ``start-up + max((calls - burst) / rate, latency) + latency`` (one listing page, then the
    recovery-point calls), or ``start-up + pages x latency`` without a cached gateway. STS and
    Organizations calls before it are left out, so the figure stays a lower bound;
(b) **the CPU**: every call (Storage Gateway, AssumeRole, ListAccounts pages) at the floor CPU of
    a bare aiohttp POST with precomputed headers, plus start-up CPU, over the cores one process
    uses (one: an asyncio loop);
(c) **the calls in flight**: every call's mean latency, ``concurrency`` at a time, after
    start-up.

Only (a) and (b) can be made shorter by the scanner's design; (c) by more calls in flight.
"""

from __future__ import annotations

import resource
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from fleetscan.emulator import Fleet

#: The Organizations ListAccounts page size (AWS's maximum, what fleetscan asks for).
LIST_ACCOUNTS_PAGE = 20
#: Calls a round of the floor measurement makes, and how many are in flight.
FLOOR_CALLS = 3_000
FLOOR_IN_FLIGHT = 32


@dataclass(frozen=True)
class Bound:
    """The three limits of one fleet (seconds) and the largest of them."""

    slowest_unit_s: float
    cpu_s: float
    in_flight_s: float
    #: The (account, region) pair behind ``slowest_unit_s``, and its call count.
    slowest_unit: str
    slowest_unit_calls: int

    @property
    def bound_s(self) -> float:
        return max(self.slowest_unit_s, self.cpu_s, self.in_flight_s)

    @property
    def limit(self) -> str:
        limits = {
            "slowest unit": self.slowest_unit_s,
            "CPU": self.cpu_s,
            "calls in flight": self.in_flight_s,
        }
        return max(limits, key=lambda name: limits[name])

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()} | {
            "bound_s": round(self.bound_s, 3),
            "limit": self.limit,
        }


def lower_bound(
    fleet: Fleet,
    accounts: list[str],
    regions: tuple[str, ...],
    *,
    latency_s: float,
    jitter_s: float,
    rate: float,
    burst: int,
    concurrency: int,
    startup_wall_s: float,
    startup_cpu_s: float,
    floor_cpu_s_per_call: float,
    cores: int = 1,
) -> Bound:
    """The bound for a scan of ``accounts`` x ``regions`` (see the module's docstring)."""
    slowest, slowest_unit, slowest_calls = 0.0, "", 0
    storage_gateway_calls = 0
    for account_id in accounts:
        for region in regions:
            gateways = fleet.gateways(account_id, region)
            pages = max(1, -(-len(gateways) // 100))
            cached = sum(1 for g in gateways if g.is_cached)
            calls = pages + cached
            storage_gateway_calls += calls
            if cached:
                unit = max((calls - burst) / rate, latency_s) + latency_s
            else:
                unit = pages * latency_s
            if unit > slowest:
                slowest, slowest_unit, slowest_calls = unit, f"{account_id}/{region}", calls
    # One AssumeRole per member account (not the management account's own), ListAccounts pages.
    other_calls = (len(accounts) - 1) + -(-len(accounts) // LIST_ACCOUNTS_PAGE)
    all_calls = storage_gateway_calls + other_calls
    cpu = (startup_cpu_s + all_calls * floor_cpu_s_per_call) / cores
    in_flight = startup_wall_s + all_calls * (latency_s + jitter_s / 2) / concurrency
    return Bound(
        slowest_unit_s=startup_wall_s + slowest,
        cpu_s=cpu,
        in_flight_s=in_flight,
        slowest_unit=slowest_unit,
        slowest_unit_calls=slowest_calls,
    )


# -- the floor CPU of one call --------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def floor_cpu_ms_per_call(endpoint: str, ca_bundle: str, rounds: int) -> float:
    """CPU per ListGateways call of a bare aiohttp POST whose headers (SigV4 included) were
    computed once: what any Python HTTP client on asyncio pays at least, measured in this
    process against the emulator with no latency. Median of ``rounds`` rounds."""
    import ssl

    import aiohttp
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    url = endpoint.rstrip("/") + "/"
    body = b"{}"
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "StorageGateway_20130630.ListGateways",
        },
    )
    SigV4Auth(credentials, "storagegateway", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    context = ssl.create_default_context(cafile=ca_bundle)
    connector = aiohttp.TCPConnector(ssl=context, limit=FLOOR_IN_FLIGHT)
    per_call: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(limiter: anyio.CapacityLimiter) -> None:
            async with limiter, session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"the floor call was answered {answer.status}")

        limiter = anyio.CapacityLimiter(FLOOR_IN_FLIGHT)
        await one(limiter)  # warm: connections open
        for _ in range(rounds):
            before = _cpu_seconds()
            async with anyio.create_task_group() as tg:
                for _ in range(FLOOR_CALLS):
                    tg.start_soon(one, limiter)
            per_call.append((_cpu_seconds() - before) / FLOOR_CALLS * 1000)
    return round(statistics.median(per_call), 4)
