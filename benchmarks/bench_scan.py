"""How fast is ``fleetscan scan``, how much CPU and memory does it use, and how does it compare
with the boto3 script people write today?

The emulated AWS stack runs in its own process (``fleetscan emulator serve --tls``), so whatever
CPU a scanner uses is its own; each scanner run is its own subprocess too, started by a small
launcher that measures it with ``os.wait4`` (CPU time, peak RSS: see :mod:`benchmarks._launcher`
for why not from here) and timed from spawn to exit, imports included. API calls are
the Storage Gateway calls the emulator counted (``GET /_emulator/counters``; throttled answers
and retries included), reset before every run. The minimum is :meth:`Fleet.minimum_calls` over
the accounts a scan must cover (the ACTIVE members and the management account, which
``ListAccounts`` returns too). The expected recovery point count comes from the fleet's own
model, built here from the same spec as the server's.

Scenarios (each prints a table and returns a JSON-able dict):

* ``side_by_side``: fleetscan versus :mod:`benchmarks.baseline_boto3` on the same organization,
  median of 3 runs each (1 with ``quick``);
* ``fleet_1000``: fleetscan alone on 1,000 accounts x 16 regions;
* ``memory``: peak RSS of scans that emit about 250,000 and 1,000,000 recovery points.

Everything listens on 127.0.0.1 only, every wait is bounded, and every subprocess is stopped in
a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetscan import ScanConfig
from fleetscan.emulator import DEFAULT_REGIONS, DEFAULT_ROLE_NAME, Fleet, FleetSpec

from ._bound import lower_bound
from ._measure import run_measured

SEED = 2024
#: Calls in flight at fleetscan's default (--concurrency), for the lower bound.
DEFAULT_CONCURRENCY: int = ScanConfig.concurrency
#: How long a server may take to start, and a single scanner run to finish.
START_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Network:
    """What every Storage Gateway call meets: TLS, latency, a throttle per (account, region)."""

    latency_ms: float = 50.0
    jitter_ms: float = 20.0
    #: The demo's "realistic day" throttle: 25 calls/s per (account, region), burst 10.
    throttle_rate: float = 25.0
    throttle_burst: int = 10

    def flags(self) -> list[str]:
        return [
            "--tls",
            f"--latency-ms={self.latency_ms:g}",
            f"--jitter-ms={self.jitter_ms:g}",
            f"--throttle-rate={self.throttle_rate:g}",
            f"--throttle-burst={self.throttle_burst}",
        ]

    def describe(self) -> str:
        return (
            f"TLS, {self.latency_ms:g} ms + 0..{self.jitter_ms:g} ms latency, throttle "
            f"{self.throttle_rate:g}/s burst {self.throttle_burst} per (account, region)"
        )


@dataclass(frozen=True)
class Shape:
    """The emulated organization: FleetSpec's knobs, as ``serve`` flags and as a spec."""

    accounts: int
    regions: tuple[str, ...] = DEFAULT_REGIONS
    populated_fraction: float = FleetSpec.populated_fraction
    max_gateways_per_pair: int = FleetSpec.max_gateways_per_pair
    max_volumes_per_gateway: int = FleetSpec.max_volumes_per_gateway
    seed: int = SEED

    def spec(self) -> FleetSpec:
        return FleetSpec(
            seed=self.seed,
            accounts=self.accounts,
            regions=self.regions,
            populated_fraction=self.populated_fraction,
            max_gateways_per_pair=self.max_gateways_per_pair,
            max_volumes_per_gateway=self.max_volumes_per_gateway,
        )

    def flags(self) -> list[str]:
        return [
            f"--seed={self.seed}",
            f"--accounts={self.accounts}",
            f"--regions={','.join(self.regions)}",
            f"--populated-fraction={self.populated_fraction:g}",
            f"--max-gateways-per-pair={self.max_gateways_per_pair}",
            f"--max-volumes-per-gateway={self.max_volumes_per_gateway}",
        ]


@dataclass(frozen=True)
class Expected:
    """What a correct, fault-free scan of a shape covers and produces."""

    accounts: int
    regions: int
    gateways: int
    cached_gateways: int
    recovery_points: int
    minimum_calls: dict[str, int]

    @property
    def minimum_total(self) -> int:
        return sum(self.minimum_calls.values())


def expectations(shape: Shape) -> Expected:
    """The fleet's own answer: scanned accounts are the ACTIVE members plus the management
    account (ListAccounts returns it; it holds no gateway, so it costs one empty ListGateways
    page per region)."""
    fleet = Fleet(shape.spec())
    accounts = [a.id for a in fleet.accounts if a.active] + [fleet.management_account_id]
    minimum = fleet.minimum_calls(accounts, shape.regions)
    truth = fleet.ground_truth(accounts)
    return Expected(
        accounts=len(accounts),
        regions=len(shape.regions),
        gateways=len(truth.gateways),
        cached_gateways=sum(1 for g in truth.gateways if g.gateway_type == "CACHED"),
        recovery_points=len(truth.recovery_points),
        minimum_calls=minimum,
    )


# -- the server ---------------------------------------------------------------------------------


def clean_env(home: Path) -> dict[str, str]:
    """This environment without the developer's AWS settings, proxies or retry overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy")
    }
    env["AWS_CONFIG_FILE"] = str(home / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws-credentials")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Emulator:
    """``fleetscan emulator serve`` in a subprocess: the whole AWS side, on loopback."""

    def __init__(self, shape: Shape, network: Network, workdir: Path) -> None:
        self.shape = shape
        self.network = network
        self.workdir = workdir
        self.argv = [
            sys.executable,
            "-m",
            "fleetscan",
            "emulator",
            "serve",
            "--host=127.0.0.1",
            *shape.flags(),
            *network.flags(),
        ]
        self.exports: dict[str, str] = {}
        self._process: subprocess.Popen[str] | None = None
        self._opener: urllib.request.OpenerDirector | None = None

    def __enter__(self) -> Emulator:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        stderr = open(self.workdir / "serve.stderr", "wb")  # noqa: SIM115 - the child owns it
        with stderr:
            self._process = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=clean_env(self.workdir),
                cwd=self.workdir,
            )
        lines: queue.Queue[str | None] = queue.Queue()
        process = self._process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, name="serve-stdout", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the emulator did not start in {START_TIMEOUT_S:g} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                err = (self.workdir / "serve.stderr").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the emulator exited early ({process.wait()}): {err}")
            if line.startswith("export "):
                key, _, value = shlex.split(line)[1].partition("=")
                self.exports[key] = value
            elif line.startswith("# role "):
                break
        context = ssl.create_default_context(cafile=self.exports["AWS_CA_BUNDLE"])
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    def env(self, home: Path) -> dict[str, str]:
        return clean_env(home) | self.exports

    def _admin(self, method: str, path: str) -> dict[str, Any]:
        assert self._opener is not None
        url = self.exports["AWS_ENDPOINT_URL_STORAGE_GATEWAY"] + path
        with self._opener.open(urllib.request.Request(url, method=method), timeout=30) as answer:
            doc: dict[str, Any] = json.loads(answer.read())
        return doc

    def counters(self) -> dict[str, Any]:
        return self._admin("GET", "/_emulator/counters")

    def reset_counters(self) -> None:
        self._admin("POST", "/_emulator/counters/reset")

    def cpu_seconds(self) -> float:
        """CPU time of the server process so far (all its threads), from /proc."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- a client run -------------------------------------------------------------------------------


@dataclass
class ClientRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr_tail: str


def run_client(
    argv: Sequence[str], env: dict[str, str], workdir: Path, timeout: float = RUN_TIMEOUT_S
) -> ClientRun:
    """Run one scanner as its own process; CPU time and peak RSS are its own (see _launcher)."""
    out_path, err_path = workdir / "client.stdout", workdir / "client.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        usage = run_measured(argv, env=env, cwd=workdir, stdout=out, stderr=err, timeout=timeout)
    return ClientRun(
        wall_s=usage.wall_s,
        cpu_s=usage.cpu_s,
        peak_rss_mb=usage.peak_rss_mb,
        returncode=usage.returncode,
        stdout=out_path.read_text(errors="replace")[-4000:],
        stderr_tail=err_path.read_text(errors="replace")[-2000:],
    )


def count_lines(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                total += chunk.count(b"\n")
    return total


@dataclass
class Measured:
    """One scanner run against the emulator: the client's own costs and the server's view."""

    tool: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    calls: int
    calls_by_operation: dict[str, int]
    throttles: int
    recovery_points: int
    server_cpu_s: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s / max(self.calls, 1) * 1000

    def as_dict(self, expected: Expected) -> dict[str, Any]:
        return asdict(self) | {
            "cpu_ms_per_call": round(self.cpu_ms_per_call, 3),
            "calls_per_s": round(self.calls / self.wall_s, 1),
            "recovery_points_per_s": round(self.recovery_points / self.wall_s, 1),
            "calls_over_minimum": round(self.calls / expected.minimum_total, 4),
            "recovery_points_match": self.recovery_points == expected.recovery_points,
            "server_cpu_share": round(self.server_cpu_s / self.wall_s, 3),
        }


def fleetscan_argv(shape: Shape, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fleetscan",
        "scan",
        "--org",
        f"--role-name={DEFAULT_ROLE_NAME}",
        f"--regions={','.join(shape.regions)}",
        f"--output={output}",
        "--quiet",
        *extra,
    ]


def baseline_argv(shape: Shape, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.baseline_boto3",
        f"--role-name={DEFAULT_ROLE_NAME}",
        f"--regions={','.join(shape.regions)}",
        f"--output={output}",
    ]


def measure(
    tool: str, emulator: Emulator, workdir: Path, *extra: str, history: bool = False
) -> Measured:
    """Run ``tool`` (fleetscan or baseline) once against a freshly reset emulator; ``extra``
    flags go to fleetscan.

    With ``history``, fleetscan writes where its earlier runs are (``out-scheduled``, kept
    across calls), as a scan run on a schedule does: it then starts its heaviest accounts
    first. Otherwise every run starts from an empty destination.
    """
    output = workdir / ("out-scheduled" if history else f"out-{tool}")
    before = set(output.glob("manifests/dt=*/*.json"))
    if not history:
        shutil.rmtree(output, ignore_errors=True)
    if tool == "fleetscan":
        argv = fleetscan_argv(emulator.shape, output, *extra)
    else:
        argv = baseline_argv(emulator.shape, output)
    env = emulator.env(workdir)
    # The baseline is a module of this package: run it from the repository root.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    emulator.reset_counters()
    server_cpu = emulator.cpu_seconds()
    run = run_client(argv, env, workdir)
    server_cpu = emulator.cpu_seconds() - server_cpu
    counters = emulator.counters()
    try:
        if run.returncode not in (0, 3):
            raise RuntimeError(f"{tool} exited {run.returncode}: {run.stderr_tail}")
        detail: dict[str, Any] = {}
        if tool == "fleetscan":
            manifests = sorted(set(output.glob("manifests/dt=*/*.json")) - before)
            if len(manifests) != 1:
                raise RuntimeError(f"fleetscan wrote {len(manifests)} manifests")
            manifest = json.loads(manifests[0].read_text())
            files = [
                output / entry["path"]
                for entry in manifest["files"]
                if entry["dataset"] == "recovery_points"
            ]
            summary = manifest["summary"]
            detail = {
                "status": manifest["status"],
                "client_calls": summary["api_calls"],
                "retries": summary["retries"],
                "client_throttles": summary["throttles"],
                "errors": summary["errors"],
                "peak_calls_in_flight": summary["peak_calls_in_flight"],
            }
        else:
            files = [output / "recovery_points.ndjson"]
            report = json.loads(run.stdout.strip().splitlines()[-1])
            detail = {"client_calls": report["calls"], "failures": report["failures"]}
        records = count_lines(files)
    finally:
        if not history:
            shutil.rmtree(output, ignore_errors=True)
    return Measured(
        tool=tool,
        wall_s=round(run.wall_s, 3),
        cpu_s=round(run.cpu_s, 3),
        peak_rss_mb=round(run.peak_rss_mb, 1),
        returncode=run.returncode,
        calls=counters["calls_by_service"].get("storagegateway", 0),
        calls_by_operation=counters["calls_by_operation"],
        throttles=counters["throttles"],
        recovery_points=records,
        server_cpu_s=round(server_cpu, 3),
        detail=detail,
    )


def startup(workdir: Path) -> dict[str, ClientRun]:
    """What each tool spends before its first call (interpreter and imports): part of every
    run's CPU and wall time, shown so the per-call figures can be read without it."""
    env = clean_env(workdir)
    probes = {
        "fleetscan": "import fleetscan._run, fleetscan._commands",
        "baseline": "import boto3, concurrent.futures, json; boto3.session.Session()",
    }
    return {
        tool: run_client([sys.executable, "-c", code], env, workdir, 120)
        for tool, code in probes.items()
    }


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-") as directory:
        yield Path(directory)


def _median_run(runs: list[Measured], expected: Expected) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    calls = statistics.median(r.calls for r in runs)
    cpu_per_call = statistics.median(r.cpu_ms_per_call for r in runs)
    return {
        "wall_s": round(med("wall_s"), 3),
        "cpu_s": round(med("cpu_s"), 3),
        "cpu_ms_per_call": round(cpu_per_call, 3),
        "peak_rss_mb": round(med("peak_rss_mb"), 1),
        "calls": calls,
        "calls_over_minimum": round(calls / expected.minimum_total, 4),
        "throttles": statistics.median(r.throttles for r in runs),
        "recovery_points_match": all(r.recovery_points == expected.recovery_points for r in runs),
        "server_cpu_share": round(statistics.median(r.server_cpu_s / r.wall_s for r in runs), 3),
        "server_cpu_ms_per_call": round(
            statistics.median(r.server_cpu_s / max(r.calls, 1) * 1000 for r in runs), 3
        ),
        "runs": [r.as_dict(expected) for r in runs],
    }


def _expected_dict(expected: Expected) -> dict[str, Any]:
    return asdict(expected) | {"minimum_total": expected.minimum_total}


# -- scenarios ----------------------------------------------------------------------------------

SIDE_BY_SIDE = Shape(accounts=200)
FLEET_1000 = Shape(accounts=1000)
FLEET_10000 = Shape(accounts=10000)
#: Every account holds gateways, and volumes per gateway go past AWS's 32 per cached gateway:
#: the number of records grows while accounts, gateways and calls stay the same (only the size
#: of each ListVolumeRecoveryPoints answer grows with it, the harder case for memory).
MEMORY_SHAPES = {
    name: Shape(
        accounts=1000,
        populated_fraction=1.0,
        max_gateways_per_pair=250,
        max_volumes_per_gateway=volumes,
    )
    for name, volumes in (("250k", 108), ("1m", 430))  # 253,766 and 1,005,771 recovery points
}
MEMORY_NETWORK = Network(latency_ms=5.0, jitter_ms=5.0)


def side_by_side(quick: bool = False) -> dict[str, Any]:
    """fleetscan and the boto3 baseline, alternating, on the same emulated organization."""
    shape, network = SIDE_BY_SIDE, Network()
    rounds = 1 if quick else 3
    expected = expectations(shape)
    runs: dict[str, list[Measured]] = {"fleetscan": [], "scheduled": [], "baseline": []}
    with _workdir() as workdir:
        started = startup(workdir)
        with Emulator(shape, network, workdir) as emulator:
            measure("fleetscan", emulator, workdir, history=True)  # the schedule's first run
            for _ in range(rounds):
                for tool in ("fleetscan", "scheduled", "baseline"):
                    if tool == "scheduled":
                        runs[tool].append(measure("fleetscan", emulator, workdir, history=True))
                    else:
                        runs[tool].append(measure(tool, emulator, workdir))
    from . import bench_calls  # it builds on this module's Emulator

    floor_ms = bench_calls.floor(quick)
    fleetscan = _median_run(runs["fleetscan"], expected)
    scheduled = _median_run(runs["scheduled"], expected)
    baseline = _median_run(runs["baseline"], expected)
    fleet = Fleet(shape.spec())
    bound = lower_bound(
        fleet,
        [a.id for a in fleet.accounts if a.active] + [fleet.management_account_id],
        shape.regions,
        latency_s=network.latency_ms / 1000,
        jitter_s=network.jitter_ms / 1000,
        rate=network.throttle_rate,
        burst=network.throttle_burst,
        concurrency=DEFAULT_CONCURRENCY,
        startup_wall_s=started["fleetscan"].wall_s,
        startup_cpu_s=started["fleetscan"].cpu_s,
        floor_cpu_s_per_call=floor_ms / 1000,
    )
    # CPU per call without start-up, against the floor: what the scanner adds to each call.
    scan_cpu_ms = (fleetscan["cpu_s"] - started["fleetscan"].cpu_s) / fleetscan["calls"] * 1000
    result = {
        "shape": asdict(shape),
        "network": asdict(network),
        "expected": _expected_dict(expected),
        "rounds": rounds,
        "startup_cpu_s": {tool: round(run.cpu_s, 3) for tool, run in started.items()},
        "startup_wall_s": {tool: round(run.wall_s, 3) for tool, run in started.items()},
        "fleetscan": fleetscan,
        "scheduled": scheduled,
        "baseline": baseline,
        "wall_time_ratio": round(baseline["wall_s"] / fleetscan["wall_s"], 2),
        "scheduled_wall_time_ratio": round(baseline["wall_s"] / scheduled["wall_s"], 2),
        "cpu_per_call_ratio": round(baseline["cpu_ms_per_call"] / fleetscan["cpu_ms_per_call"], 2),
        "lower_bound": bound.as_dict(),
        "wall_over_bound": round(fleetscan["wall_s"] / bound.bound_s, 2),
        "scheduled_wall_over_bound": round(scheduled["wall_s"] / bound.bound_s, 2),
        "floor_cpu_ms_per_call": floor_ms,
        "scan_cpu_ms_per_call": round(scan_cpu_ms, 3),
        "cpu_over_floor": round(scan_cpu_ms / floor_ms, 2),
    }
    _print_side_by_side(result, network)
    return result


def fleet_1000(quick: bool = False) -> dict[str, Any]:
    """fleetscan alone on a 1,000-account organization (one run either way)."""
    shape, network = FLEET_1000, Network()
    expected = expectations(shape)
    with _workdir() as workdir, Emulator(shape, network, workdir) as emulator:
        run = measure("fleetscan", emulator, workdir)
    result = {
        "shape": asdict(shape),
        "network": asdict(network),
        "expected": _expected_dict(expected),
        "fleetscan": run.as_dict(expected),
    }
    _print_single("(2) fleetscan alone: 1,000 accounts x 16 regions", network, expected, run)
    return result


def memory(quick: bool = False) -> dict[str, Any]:
    """Peak RSS while emitting ~250k and ~1M recovery points (``quick``: the 250k run only)."""
    network = MEMORY_NETWORK
    names = ["250k"] if quick else ["250k", "1m"]
    result: dict[str, Any] = {"network": asdict(network), "runs": {}}
    measured: list[tuple[str, Expected, Measured]] = []
    for name in names:
        shape = MEMORY_SHAPES[name]
        expected = expectations(shape)
        with _workdir() as workdir, Emulator(shape, network, workdir) as emulator:
            run = measure("fleetscan", emulator, workdir)
        result["runs"][name] = {
            "shape": asdict(shape),
            "expected": _expected_dict(expected),
            "fleetscan": run.as_dict(expected),
        }
        measured.append((name, expected, run))
    _print_memory(measured, network)
    return result


#: --concurrency values compared, and the latencies they are compared at.
CONCURRENCY_LEVELS = (64, 96, 128, 160, 192, 256)
CONCURRENCY_LATENCIES_MS = (50.0, 200.0)


def concurrency(quick: bool = False) -> dict[str, Any]:
    """Why the default --concurrency: wall time at two latencies (the side-by-side organization)
    and peak RSS at 1M recovery points, for each level (one run each)."""
    levels = (96, 256) if quick else CONCURRENCY_LEVELS
    result: dict[str, Any] = {"levels": list(levels), "wall_s": {}, "peak_rss_mb_1m": {}}
    for latency in CONCURRENCY_LATENCIES_MS:
        network = Network(latency_ms=latency)
        with _workdir() as workdir, Emulator(SIDE_BY_SIDE, network, workdir) as emulator:
            for level in levels:
                run = measure("fleetscan", emulator, workdir, f"--concurrency={level}")
                result["wall_s"].setdefault(str(level), {})[f"{latency:g}ms"] = run.wall_s
    shape = MEMORY_SHAPES["1m"]
    with _workdir() as workdir, Emulator(shape, MEMORY_NETWORK, workdir) as emulator:
        for level in levels:
            run = measure("fleetscan", emulator, workdir, f"--concurrency={level}")
            result["peak_rss_mb_1m"][str(level)] = run.peak_rss_mb
    _print_concurrency(result)
    return result


#: Processes compared by the shards benchmark: one, then ``--workers 2``.
SHARD_WORKERS = (1, 2)


def shards(quick: bool = False) -> dict[str, Any]:
    """One process against ``--workers 2`` (two shard processes of one run), alternating, on the
    1,000-account organization (median of 2 rounds) and the 10,000-account one (1 round; not
    with ``quick``). Peak RSS is that of the largest process (wait4 reports the largest of the
    process tree), CPU that of all of them; the emulator's CPU per call says whether it, not
    fleetscan, set the pace."""
    network = Network()
    plans = [(FLEET_1000, 1 if quick else 2)] + ([] if quick else [(FLEET_10000, 1)])
    result: dict[str, Any] = {"network": asdict(network), "cpus": os.cpu_count(), "fleets": {}}
    for shape, rounds in plans:
        expected = expectations(shape)
        runs: dict[int, list[Measured]] = {n: [] for n in SHARD_WORKERS}
        with _workdir() as workdir, Emulator(shape, network, workdir) as emulator:
            for _ in range(rounds):
                for n in SHARD_WORKERS:
                    extra = [f"--workers={n}"] if n > 1 else []
                    runs[n].append(measure("fleetscan", emulator, workdir, *extra))
        fleet: dict[str, Any] = {
            "shape": asdict(shape),
            "expected": _expected_dict(expected),
            "rounds": rounds,
            "workers": {str(n): _median_run(runs[n], expected) for n in SHARD_WORKERS},
        }
        one, two = (fleet["workers"][str(n)] for n in SHARD_WORKERS)
        fleet["speedup"] = round(one["wall_s"] / two["wall_s"], 2)
        result["fleets"][str(shape.accounts)] = fleet
        _print_shards(fleet, network, result["cpus"])
    return result


SCENARIOS = {
    "side_by_side": side_by_side,
    "fleet_1000": fleet_1000,
    "memory": memory,
    "concurrency": concurrency,
    "shards": shards,
}


# -- tables -------------------------------------------------------------------------------------


def _fmt_calls(expected: Expected) -> str:
    minimum = expected.minimum_calls
    return (
        f"{expected.accounts:,} accounts x {expected.regions} regions; "
        f"{expected.gateways:,} gateways ({expected.cached_gateways:,} cached), "
        f"{expected.recovery_points:,} recovery points; minimum Storage Gateway calls "
        f"{expected.minimum_total:,} ({minimum['ListGateways']:,} ListGateways + "
        f"{minimum['ListVolumeRecoveryPoints']:,} ListVolumeRecoveryPoints)"
    )


def _print_side_by_side(result: dict[str, Any], network: Network) -> None:
    exp = result["expected"]
    print()
    print(f"(1) side by side, median of {result['rounds']} run(s): {network.describe()}")
    print(
        f"    fleet: {exp['accounts']:,} accounts x {exp['regions']} regions; "
        f"{exp['recovery_points']:,} recovery points; minimum calls {exp['minimum_total']:,}"
    )
    header = (
        f"    {'tool':<10} {'wall s':>8} {'CPU s':>7} {'CPU ms/call':>12} {'peak RSS MB':>12} "
        f"{'calls':>7} {'/min':>6} {'throttled':>9} {'RPs ok':>6} {'server CPU':>10}"
    )
    print(header)
    for tool in ("fleetscan", "scheduled", "baseline"):
        r = result[tool]
        print(
            f"    {tool:<10} {r['wall_s']:>8.2f} {r['cpu_s']:>7.2f} {r['cpu_ms_per_call']:>12.3f} "
            f"{r['peak_rss_mb']:>12.1f} {r['calls']:>7,.0f} {r['calls_over_minimum']:>6.3f} "
            f"{r['throttles']:>9,.0f} {('yes' if r['recovery_points_match'] else 'NO'):>6} "
            f"{r['server_cpu_share']:>9.0%}"
        )
    print(
        f"    wall-time ratio baseline/fleetscan: {result['wall_time_ratio']:.2f}x (target >= 5x); "
        f"CPU per call ratio: {result['cpu_per_call_ratio']:.2f}x; startup CPU (imports): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in result["startup_cpu_s"].items())
    )
    print(
        "    scheduled: fleetscan with its earlier runs under the destination (it starts the "
        f"heaviest accounts first): {result['scheduled_wall_time_ratio']:.2f}x the baseline"
    )
    tools = ("fleetscan", "scheduled", "baseline")
    walls = {t: [run["wall_s"] for run in result[t]["runs"]] for t in tools}
    print(f"    runs (wall s): {walls}")
    bound = result["lower_bound"]
    print(
        f"    lower bound {bound['bound_s']:.2f} s (set by {bound['limit']}: slowest unit "
        f"{bound['slowest_unit_s']:.2f} s ({bound['slowest_unit_calls']} calls), CPU "
        f"{bound['cpu_s']:.2f} s, calls in flight {bound['in_flight_s']:.2f} s); fleetscan's wall "
        f"{result['wall_over_bound']:.2f}x the bound, scheduled "
        f"{result['scheduled_wall_over_bound']:.2f}x (target <= 1.25x)"
    )
    print(
        f"    CPU per call after start-up {result['scan_cpu_ms_per_call']:.3f} ms vs the floor "
        f"(bare aiohttp POST) {result['floor_cpu_ms_per_call']:.3f} ms: "
        f"{result['cpu_over_floor']:.2f}x (target <= 2x)"
    )


def _print_single(title: str, network: Network, expected: Expected, run: Measured) -> None:
    r = run.as_dict(expected)
    print()
    print(f"{title}: {network.describe()}")
    print(f"    fleet: {_fmt_calls(expected)}")
    print(
        f"    {'wall s':>8} {'calls/s':>8} {'CPU s':>7} {'CPU ms/call':>12} {'peak RSS MB':>12} "
        f"{'calls':>7} {'/min':>6} {'throttled':>9} {'RPs':>9} {'RPs ok':>6} {'server CPU':>10}"
    )
    print(
        f"    {r['wall_s']:>8.2f} {r['calls_per_s']:>8,.0f} {r['cpu_s']:>7.2f} "
        f"{r['cpu_ms_per_call']:>12.3f} {r['peak_rss_mb']:>12.1f} {r['calls']:>7,} "
        f"{r['calls_over_minimum']:>6.3f} {r['throttles']:>9,} {r['recovery_points']:>9,} "
        f"{('yes' if r['recovery_points_match'] else 'NO'):>6} {r['server_cpu_share']:>9.0%}"
    )


def _print_memory(measured: list[tuple[str, Expected, Measured]], network: Network) -> None:
    print()
    print(f"(3) memory as records grow (target <= 150 MB at 1M): {network.describe()}")
    print(
        f"    {'run':<5} {'accounts':>8} {'max vol/gw':>10} {'RPs':>10} {'RPs ok':>6} "
        f"{'wall s':>8} {'RPs/s':>8} {'calls':>7} {'CPU s':>7} {'peak RSS MB':>12} "
        f"{'server CPU':>10}"
    )
    for name, expected, run in measured:
        r = run.as_dict(expected)
        shape = MEMORY_SHAPES[name]
        print(
            f"    {name:<5} {shape.accounts:>8,} {shape.max_volumes_per_gateway:>10} "
            f"{r['recovery_points']:>10,} {('yes' if r['recovery_points_match'] else 'NO'):>6} "
            f"{r['wall_s']:>8.2f} {r['recovery_points_per_s']:>8,.0f} {r['calls']:>7,} "
            f"{r['cpu_s']:>7.2f} {r['peak_rss_mb']:>12.1f} {r['server_cpu_share']:>9.0%}"
        )


def _print_concurrency(result: dict[str, Any]) -> None:
    print()
    print(
        "(4) calls in flight (--concurrency): wall s on 200 accounts x 16 regions (TLS, latency "
        "+ 0..20 ms jitter, throttle 25/s), and peak RSS at 1M recovery points"
    )
    latencies = [f"{latency:g}ms" for latency in CONCURRENCY_LATENCIES_MS]
    print(f"    {'level':>6} " + " ".join(f"{name:>9}" for name in latencies) + "  peak RSS MB")
    for level in result["levels"]:
        walls = result["wall_s"][str(level)]
        print(
            f"    {level:>6} "
            + " ".join(f"{walls[name]:>9.2f}" for name in latencies)
            + f"  {result['peak_rss_mb_1m'][str(level)]:>11.1f}"
        )


def _print_shards(result: dict[str, Any], network: Network, cpus: int | None) -> None:
    exp = result["expected"]
    print()
    print(
        f"(5) one process vs --workers 2, median of {result['rounds']} run(s) on "
        f"{cpus} CPUs: {network.describe()}"
    )
    print(
        f"    fleet: {exp['accounts']:,} accounts x {exp['regions']} regions; "
        f"{exp['recovery_points']:,} recovery points; minimum calls {exp['minimum_total']:,}"
    )
    print(
        f"    {'processes':<10} {'wall s':>8} {'calls/s':>8} {'CPU s':>7} {'CPU ms/call':>12} "
        f"{'/min':>6} {'peak RSS MB/process':>20} {'RPs ok':>6} {'server CPU':>10} "
        f"{'server ms/call':>14}"
    )
    for n, r in result["workers"].items():
        print(
            f"    {n:<10} {r['wall_s']:>8.2f} {r['calls'] / r['wall_s']:>8,.0f} "
            f"{r['cpu_s']:>7.2f} {r['cpu_ms_per_call']:>12.3f} {r['calls_over_minimum']:>6.3f} "
            f"{r['peak_rss_mb']:>20.1f} {('yes' if r['recovery_points_match'] else 'NO'):>6} "
            f"{r['server_cpu_share']:>9.0%} {r['server_cpu_ms_per_call']:>14.3f}"
        )
    print(f"    speed-up of --workers 2: {result['speedup']:.2f}x (target >= 1.5x)")
