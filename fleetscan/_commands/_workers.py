"""``fleetscan scan --workers N``: one run as N shard processes on this machine.

One fleetscan process uses at most about one core (the scan is one asyncio event loop), so a
machine with more cores runs more of them: the same command again, as shards ``1/N`` to ``N/N``
of one run id (the shard machinery in :mod:`fleetscan._shards` does the rest: the plan, each
shard's files, the run's one manifest). The children are ordinary subprocesses, each with the
same flags; this parent only starts them, relays a stop to all of them, waits, and prints one
summary and one exit code.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from .._config import ScanConfig
from .._exceptions import ConfigError
from ._loop import run_async

EXIT_USAGE = 2
EXIT_FATAL = 1
EXIT_PARTIAL = 3


def child_argv(command_line: Sequence[str], run_id: str, shard: str) -> list[str]:
    """The parent's own command line, for one shard: without ``--workers``, with the run id and
    the shard, quiet (the parent prints the one summary)."""
    argv: list[str] = []
    skip = False
    for part in command_line:
        if skip:
            skip = False
            continue
        if part == "--workers":
            skip = True
            continue
        if part.startswith("--workers="):
            continue
        argv.append(part)
    return [
        sys.executable, "-m", "fleetscan", *argv,
        "--run-id", run_id, "--shard", shard, "--quiet",
    ]  # fmt: skip


def run_workers(
    given: dict[str, Any],
    workers: int,
    command_line: Sequence[str],
    *,
    quiet: bool = False,
    log_format: str = "text",
) -> int:
    """Run ``workers`` shards of one run at once; the exit code a single process would give."""
    from .._scan import new_run_id
    from ._progress import say

    if given.get("shard") is not None:
        raise ConfigError("workers", "runs every shard itself: drop --shard")
    if given.get("resume") is not None:
        raise ConfigError(
            "workers", "resumes by itself: run the same command with the run's --run-id"
        )
    run_id = given.get("run_id") or new_run_id()
    # Everything a shard checks, checked once here: bad input starts no process.
    config = ScanConfig(**{**given, "run_id": run_id, "shard": f"1/{workers}"})
    if config.dry_run:
        raise ConfigError("workers", "and --dry-run do not go together")
    assert config.output is not None
    children = [
        subprocess.Popen(
            child_argv(command_line, run_id, f"{k}/{workers}"),
            # Their own process group: Ctrl-C reaches this parent only, which relays it once
            # (a second signal would make a shard stop without waiting for calls in flight).
            process_group=0,
        )
        for k in range(1, workers + 1)
    ]
    stopped: list[int] = []

    def relay(signum: int, frame: FrameType | None) -> None:
        stopped.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, relay) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _outcome(
        config.output,
        run_id,
        codes,
        stopped,
        quiet,
        log_format,
        say,
        expected_bucket_owner=config.expected_bucket_owner,
    )


def _outcome(
    output: str,
    run_id: str,
    codes: list[int],
    stopped: list[int],
    quiet: bool,
    log_format: str,
    say: Any,
    *,
    expected_bucket_owner: str | None = None,
) -> int:
    if stopped:
        say(
            f"interrupted: finished units are saved; run the same command with --run-id {run_id} "
            "to continue",
            log_format,
        )
        return 128 + stopped[0]
    if EXIT_USAGE in codes:
        return EXIT_USAGE
    if any(code not in (0, EXIT_PARTIAL) for code in codes):
        failed = [f"{k}/{len(codes)}" for k, c in enumerate(codes, 1) if c not in (0, EXIT_PARTIAL)]
        say(
            f"shard(s) {', '.join(failed)} of run {run_id} failed; run the same command with "
            f"--run-id {run_id} to continue them",
            log_format,
            error=True,
        )
        return EXIT_FATAL
    from .._runs import aread_manifest
    from .._sinks import manifest_location

    manifest = run_async(
        lambda: aread_manifest(output, run_id, expected_bucket_owner=expected_bucket_owner)
    )
    summary = manifest.get("summary", {})
    if not quiet:
        say(
            f"run {run_id}: {manifest['status']} ({len(codes)} workers); "
            f"{summary.get('accounts', 0)} accounts, {summary.get('units_done', 0)} units done, "
            f"{summary.get('units_failed', 0)} failed, {manifest['records']['recovery_points']} "
            f"recovery points, {manifest['records']['errors']} error records, "
            f"{summary.get('api_calls_total', 0)} API calls; "
            f"manifest: {manifest_location(manifest)}",
            log_format,
        )
    return 0 if manifest["status"] == "complete" else EXIT_PARTIAL
