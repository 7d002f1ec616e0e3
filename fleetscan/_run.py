"""A whole scan to a destination: the library's "do it all" entry point.

:func:`run_scan` scans, writes every record as it arrives, writes the manifest last, and says how
it went; :func:`plan_scan` says what a scan would cover without calling Storage Gateway. The
``fleetscan scan`` command only adds a terminal around them (``fleetscan._commands``).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

import anyio
import anyio.abc

from ._config import (
    ScanConfig,
    check_resume,
    resumed_config,
    storage_gateway_regions,
    stored_config,
)
from ._exceptions import ConfigError, FleetscanError
from ._scan import Engine, ScanStats, UnitBatch, new_run_id
from ._sinks import Checkpoint, RunInfo, S3Options, S3Sink, load_checkpoint, open_sink

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_PARTIAL = 3


@dataclass(frozen=True)
class ScanResult:
    run_id: str
    status: str  # complete | partial | failed | interrupted
    manifest: dict[str, Any]
    stats: ScanStats
    #: The signal that stopped the run (SIGINT, SIGTERM), if one did.
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        return {"complete": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FATAL)


def _summary(config: ScanConfig, engine: Engine) -> dict[str, Any]:
    """What the manifest records about the run: counts, and the config without secrets."""
    echo = {
        "org": config.org,
        "ous": list(config.ous),
        "accounts": len(config.accounts),
        "role_name": config.role_name,
        "role_arn_template": config.role_arn_template,
        "external_id": "<set>" if config.external_id else None,
        "hub_role_arn": config.hub_role_arn,
        "assume_role": config.assume_role,
        "partition": config.partition,
        "regions": config.regions if isinstance(config.regions, str) else list(config.regions),
        "concurrency": config.concurrency,
        "rate": config.rate,
        "burst": config.burst,
        "max_attempts": config.max_attempts,
    }
    return {
        **engine.stats.as_dict(),
        "config": echo,
        # One entry per account: id, name, status, ou_ids (root first), ou_path. Audit policies
        # by OU read it, so old data is judged by the OU each account was in when scanned.
        "accounts_scanned": [a.as_dict() for a in engine.accounts],
    }


async def run_scan(
    config: ScanConfig,
    *,
    stdout: IO[bytes] | None = None,
    on_stats: Callable[[ScanStats], None] | None = None,
    handle_signals: bool = False,
) -> ScanResult:
    """Scan and write to ``config.output``; the manifest is written last, whatever happens.

    ``on_stats`` is called about four times a second with the live counters (for a progress
    display). Cancellation or an error mid-run still finalises what was written and records the
    run as ``interrupted`` or ``failed`` before the exception propagates.

    With ``handle_signals`` (the CLI), SIGINT and SIGTERM stop the scan gracefully: no new call
    starts, calls in flight get ``config.stop_grace_seconds`` to finish, every finished unit is
    written and checkpointed, and the run ends ``interrupted`` (exit code 130 or 143), resumable.
    """
    if not config.output:
        raise ConfigError("output", "an output destination is required (a directory or '-')")
    checkpoint = (
        await load_checkpoint(config.output, config.resume, profile=config.profile)
        if config.resume
        else None
    )
    try:
        if checkpoint is not None:
            _check_resumed(config, checkpoint)
            started, run_id = checkpoint.started_at, checkpoint.run_id
        else:
            started = dt.datetime.now(dt.UTC)
            run_id = config.run_id or new_run_id(started)
        from . import __version__

        engine = Engine(
            replace(config, run_id=run_id),
            run_id=run_id,
            done_units=frozenset(checkpoint.units) if checkpoint else frozenset(),
        )
        sink = open_sink(
            config.output,
            RunInfo(run_id=run_id, started_at=started, version=__version__),
            compress=checkpoint.compression if checkpoint else config.compress,
            max_object_bytes=config.max_object_bytes,
            file_mode=config.file_mode,
            stdout=stdout,
            resume=checkpoint,
            s3=S3Options.from_config(config),
            config=stored_config(config),
        )
    except BaseException:
        if checkpoint is not None:
            checkpoint.release()
        raise
    if isinstance(sink, S3Sink):
        # Credentials, bucket, write and KMS access: checked before the scan spends a call.
        await sink.start()
    send, receive = anyio.create_memory_object_stream[UnitBatch](64)
    finished = anyio.Event()
    stopped_by: list[int] = []

    async def write_all() -> None:
        last_commit = time.monotonic()
        async with receive:
            async for batch in receive:
                for record in batch.records:
                    await sink.write(record)
                sink.unit_done(batch.key)
                engine.records_written(len(batch.records))
                if time.monotonic() - last_commit >= config.checkpoint_interval:
                    await sink.commit()
                    last_commit = time.monotonic()

    async def report() -> None:
        assert on_stats is not None
        while not finished.is_set():
            on_stats(engine.stats)
            with anyio.move_on_after(0.25):
                await finished.wait()

    async def end_grace(scope: anyio.CancelScope) -> None:
        with anyio.move_on_after(config.stop_grace_seconds):
            await finished.wait()
        scope.cancel()

    async def watch_signals(scope: anyio.CancelScope, watchers: anyio.abc.TaskGroup) -> None:
        # asyncio's handlers only wake the loop (signal.set_wakeup_fd): they take no lock, and
        # the signals are handled here, in a task. The grace runs beside this loop, so that a
        # second signal still ends it at once (waiting it out here left that signal unread).
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if stopped_by:  # a second signal: stop waiting for calls in flight
                    scope.cancel()
                    return
                stopped_by.append(signum)
                engine.request_stop()
                watchers.start_soon(end_grace, scope)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_all)
            if on_stats is not None:
                tg.start_soon(report)
            async with anyio.create_task_group() as watchers:
                with anyio.CancelScope() as engine_scope:
                    if handle_signals:
                        watchers.start_soon(watch_signals, engine_scope, watchers)
                    try:
                        await engine.run(send)
                    finally:
                        finished.set()
                        send.close()  # the writer drains what finished units sent, then ends
                watchers.cancel_scope.cancel()
    except BaseException as exc:
        status = "interrupted" if _is_interruption(exc) else "failed"
        with anyio.CancelScope(shield=True):
            await sink.abort(status, _summary(config, engine))
        if isinstance(exc, BaseExceptionGroup):
            cause = _first_leaf(exc)
            if isinstance(cause, FleetscanError):
                raise cause from None
        raise
    stats = engine.stats
    if stopped_by:
        status = "interrupted"
    elif stats.units_failed == 0 and stats.accounts_failed == 0:
        status = "complete"
    else:
        status = "partial"
    if on_stats is not None:
        on_stats(stats)
    manifest = await sink.finish(status, _summary(config, engine))
    return ScanResult(run_id, status, manifest, stats, stopped_by[0] if stopped_by else None)


def _check_resumed(config: ScanConfig, checkpoint: Checkpoint) -> None:
    """Refuse a resume that would scan something else than its run started to scan.

    A checkpoint written before fleetscan kept the run's configuration is resumed with
    ``config`` as given, as then; only its compression is the checkpoint's.
    """
    if config.run_id is not None and config.run_id != checkpoint.run_id:
        raise ConfigError(
            "run_id",
            f"is {config.run_id}, but the run to resume is {checkpoint.run_id}: give one of them",
        )
    if checkpoint.config is not None:
        check_resume(checkpoint.config, config, checkpoint.run_id)


async def resume_config(given: Mapping[str, Any]) -> tuple[ScanConfig, bool]:
    """The configuration to resume a run with, and whether the run kept its own.

    ``given`` is what the user set (a config file's values and flags, merged; ``output`` and
    ``resume`` at least). What it does not set is the run's, as its checkpoint keeps it; what it
    sets must not change what the run scans (refused, naming the difference). A run whose
    checkpoint predates stored configurations is resumed with ``given`` alone (False).
    """
    output, resume = given.get("output"), given.get("resume")
    if not isinstance(output, str) or not output or output == "-":
        raise ConfigError("resume", "needs the output directory the run was written to")
    if not isinstance(resume, str):
        raise ConfigError("resume", "must be a run id or 'latest'")
    profile = given.get("profile")
    header = await load_checkpoint(
        output, resume, profile=profile if isinstance(profile, str) else None, lock=False
    )
    # The run found now, by its id: "latest" must not name another run by the time it starts.
    pinned = {**given, "resume": header.run_id}
    if header.config is None:
        return ScanConfig(**pinned), False
    return resumed_config(header.config, pinned, header.run_id), True


def _is_interruption(exc: BaseException) -> bool:
    leaf = _first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return isinstance(leaf, KeyboardInterrupt | anyio.get_cancelled_exc_class())


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def plan_scan(config: ScanConfig) -> dict[str, Any]:
    """Accounts x regions and the calls they need at least, with no Storage Gateway call."""
    from ._aws import AmbientCredentials, AwsClients, acting_as
    from ._discovery import discover_accounts

    engine = Engine(config, run_id="dry-run")
    async with AwsClients(
        profile=config.profile,
        max_pool_connections=8,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        call_timeout=config.call_timeout,
    ) as clients:
        with acting_as(AmbientCredentials(config.profile)):
            accounts = await discover_accounts(config, clients, engine._plain_call, config.accounts)
    offered = storage_gateway_regions(config.partition)
    if config.regions == "all":
        regions: list[str] | str = list(offered)
    elif config.regions == "enabled":
        regions = f"enabled (resolved per account; up to {len(offered)})"
    else:
        regions = list(config.regions)
    n_regions = len(regions) if isinstance(regions, list) else len(offered)
    return {
        "accounts": [{"id": a.id, "name": a.name, "status": a.status} for a in accounts],
        "regions": regions,
        "units": len(accounts) * n_regions,
        "minimum_calls": {
            "AssumeRole": len(accounts) if config.assume_role else 0,
            "ListGateways": len(accounts) * n_regions,
            "ListVolumeRecoveryPoints": "one per cached gateway found",
        },
    }
