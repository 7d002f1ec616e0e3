"""The scan's own machinery: CPU per call with Storage Gateway answered inside the process.

Why: a whole scan costs ~4x the floor of a bare aiohttp call, and the question of issue 16 is
which part of that is the HTTP stack (the lean client, aiohttp, TLS, the event loop) and which is
the scan's own (tasks per unit and gateway, limits, retries, credentials, signing, records, the
writer, the checkpoint). This benchmark takes the HTTP stack out: a scan of the side-by-side
fleet runs as usual, except that its two Storage Gateway calls are answered by the emulator's own
service object in the scanner's process (the same answers, errors rendered as the server renders
them, a sleep for the network's latency); the request is still built and signed. STS and
Organizations still go over HTTP to the emulator, as do ListAccounts and AssumeRole in a real
scan. The per-call figure is the slope between a 2-account and a 200-account scan, so start-up
and the fixed costs (clients, models) are out of it.

Only this benchmark patches fleetscan's internals, and only in its own child process: it measures
a part, never stands in for the scanner's figures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .bench_scan import Emulator, Network, Shape, _workdir, fleetscan_argv

#: The small and the measured fleet: the slope between them is the CPU per call.
SMALL, LARGE = 2, 200
CHILD_TIMEOUT_S = 300


def _child(accounts: int, output: str) -> None:
    """Run one scan with Storage Gateway in this process; print its CPU and calls as JSON."""
    import orjson

    from fleetscan import _scan
    from fleetscan._commands import main
    from fleetscan._storagegateway import StorageGatewayClient
    from fleetscan.emulator._fleet import Fleet
    from fleetscan.emulator._storage_gateway import StorageGateway
    from fleetscan.emulator._wire import ApiError, Call

    shape = Shape(accounts=accounts)
    service = StorageGateway(Fleet(shape.spec()))
    service.prepare()  # as ``serve`` does: answers rendered before the clock starts
    latency = Network().latency_ms / 1000
    calls = 0

    class Answer:
        def __init__(self, status: int) -> None:
            self.status_code = status
            self.headers = {"content-type": service.protocol.content_type}

    async def send(
        self: StorageGatewayClient,
        body: bytes,
        *,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, bytes]:
        nonlocal calls
        assert target is not None
        keys = await self._credentials()
        self._signer.headers(keys, target, body, date="20261202T000000Z")
        operation = target.rsplit(".", 1)[1]
        call = Call(
            account_id=_scan._ACCOUNT.get() or "",
            region=self._signer._region,
            operation=operation,
            params=orjson.loads(body),
            access_key_id=keys.access_key,
            session=None,
            request_id="bench",
        )
        calls += 1
        await asyncio.sleep(latency)
        try:
            return Answer(200), service.handlers[operation](call)
        except ApiError as error:
            return Answer(error.status), service.protocol.error_body(error, "bench")

    StorageGatewayClient._send = send  # type: ignore[method-assign, assignment]
    before = resource.getrusage(resource.RUSAGE_SELF)
    # fleetscan's own argv, without the interpreter and ``-m fleetscan``: run in this process.
    argv = fleetscan_argv(shape, Path(output))[3:]
    code = main(argv)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(json.dumps({"returncode": code, "cpu_s": cpu, "calls": calls}))


def _scan_cpu(emulator: Emulator, workdir: Path, accounts: int, run: int) -> dict[str, Any]:
    output = workdir / f"out-{accounts}-{run}"
    env = emulator.env(workdir) | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [sys.executable, "-m", "benchmarks.bench_machinery", str(accounts), str(output)]
    done = subprocess.run(
        argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the machinery scan failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["returncode"] != 0:
        raise RuntimeError(f"the machinery scan exited {figures['returncode']}")
    return figures


def main(quick: bool = False) -> dict[str, Any]:
    rounds = 1 if quick else 3
    cpu: dict[int, list[float]] = {SMALL: [], LARGE: []}
    calls: dict[int, int] = {}
    with _workdir() as workdir:
        for accounts in (SMALL, LARGE):
            # The emulator serves the organization (and its STS) the scan lists; the scanner's
            # process answers Storage Gateway for the same fleet.
            with Emulator(Shape(accounts=accounts), Network(), workdir) as emulator:
                for run in range(rounds):
                    figures = _scan_cpu(emulator, workdir, accounts, run)
                    cpu[accounts].append(figures["cpu_s"])
                    calls[accounts] = figures["calls"]
    small, large = (statistics.median(cpu[n]) for n in (SMALL, LARGE))
    per_call = [
        (big - little) / (calls[LARGE] - calls[SMALL]) * 1000
        for little, big in zip(cpu[SMALL], cpu[LARGE], strict=True)
    ]
    slope = (large - small) / (calls[LARGE] - calls[SMALL])
    result = {
        "accounts": [SMALL, LARGE],
        "rounds": rounds,
        "machinery_cpu_ms_per_call": round(slope * 1000, 3),
        "fixed_cpu_s": round(small, 3),
        "runs_cpu_ms_per_call": [round(v, 3) for v in per_call],
        "storage_gateway_calls": calls,
    }
    print()
    print(
        f"(machinery) a scan with Storage Gateway answered in its own process (signing kept; "
        f"STS and Organizations over HTTP), median of {rounds}:"
    )
    print(
        f"    {result['machinery_cpu_ms_per_call']:.3f} ms of CPU per call (the slope between "
        f"{SMALL} and {LARGE} accounts; fixed CPU after imports {result['fixed_cpu_s']:.2f} s)"
    )
    return result


if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2])
