"""A whole scan to a destination: the library's "do it all" entry point.

:func:`run_scan` scans, writes every record as it arrives, writes the manifest last, and says how
it went; :func:`plan_scan` says what a scan would cover without calling Storage Gateway. The
``fleetscan scan`` command only adds a terminal around them (``fleetscan._commands``).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import IO, Any

import anyio
import anyio.abc

from ._config import (
    OrganizationConfig,
    ScanConfig,
    check_bucket_owner,
    check_resume,
    check_s3_writes,
    parse_s3_url,
    resumed_config,
    storage_gateway_regions,
    stored_config,
)
from ._discovery import AccountTarget
from ._exceptions import ConfigError, FleetscanError
from ._records import DATASETS
from ._retry import CallFailed, Failure
from ._scan import Engine, ScanStats, UnitBatch, new_run_id
from ._shards import (
    FINISHED,
    FailedOrganization,
    Shard,
    ShardPlan,
    call_history,
    check_shard,
    load_plan,
    make_plan,
    read_shard_manifest,
    require_plan,
    resolve_shard,
    shard_manifest_relpath,
    write_plan,
    write_run_manifest,
    write_settings,
)
from ._sinks import (
    Checkpoint,
    RunInfo,
    RunStore,
    S3Options,
    S3Sink,
    load_checkpoint,
    manifest_relpath,
    open_sink,
)
from ._sinks._checkpoint import (
    MAX_PENDING_UNITS,
    OrganizationRecords,
    checkpoint_entry_relpath,
    checkpoint_relpath,
)

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
    #: A shard ("K/N"): ``manifest`` is then the shard's own, and ``run_manifest`` the run's,
    #: once every shard has finished (None before).
    shard: str | None = None
    run_manifest: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return 128 + self.signal  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        return {"complete": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FATAL)


def _organizations(engine: Engine, records: OrganizationRecords | None) -> list[dict[str, Any]]:
    """The manifest's ``organizations`` section: per organization, its accounts, units and
    records. ``records`` is None on a run resumed from a checkpoint written before fleetscan
    counted records per organization (the manifest's ``records`` still counts every one)."""
    accounts = Counter(engine.organization_key(a.id) for a in engine.accounts)
    section: list[dict[str, Any]] = []
    for name, organization_id in engine.organizations:
        key = name if name is not None else organization_id
        counts = engine.organization_counts.get(key, Counter())
        section.append(
            {
                "name": name,
                "id": organization_id,
                "status": "listed",
                "accounts": accounts[key],
                "accounts_failed": counts["accounts_failed"],
                "units_planned": counts["units_planned"],
                "units_done": counts["units_done"],
                "units_failed": counts["units_failed"],
                "records": (
                    None
                    if records is None
                    else {dataset: records[(key, dataset)] for dataset in DATASETS}
                ),
            }
        )
    for name in engine.failed_organizations:
        section.append(
            {
                "name": name,
                "id": None,
                "status": "failed",
                "accounts": 0,
                "accounts_failed": 0,
                "units_planned": 1,
                "units_done": 0,
                "units_failed": 1,
                "records": None,
            }
        )
    return section


def _summary(
    config: ScanConfig,
    engine: Engine,
    records: OrganizationRecords | None = None,
) -> dict[str, Any]:
    """What the manifest records about the run: counts, and the config without secrets."""
    echo = {
        "org": config.org,
        "ous": list(config.ous),
        "accounts": len(config.accounts),
        "role_name": config.role_name,
        "role_arn_template": config.role_arn_template,
        "external_id": "<set>" if config.external_id else None,
        "hub_role_arn": config.hub_role_arn,
        "organizations": [entry.name for entry in config.organizations],
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
        # calls: what the account cost this session, by which a sharded run's plan balances
        # the next run's shards.
        "accounts_scanned": [
            {**a.as_dict(), "calls": engine.account_calls[a.id]} for a in engine.accounts
        ],
        # Lifted to the manifest's top level (its ``organizations`` section).
        "organizations": _organizations(engine, records),
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

    With ``config.shard``, the scan is one shard of a run (see :mod:`fleetscan._shards`): its
    share of the run's plan, resumed from its own checkpoint if it was started before, and the
    run's manifest written once every shard has finished.
    """
    if not config.output:
        raise ConfigError("output", "an output destination is required (a directory or '-')")
    if config.shard is not None:
        return await _run_shard(
            config, stdout=stdout, on_stats=on_stats, handle_signals=handle_signals
        )
    checkpoint = (
        await load_checkpoint(
            config.output,
            config.resume,
            profile=config.profile,
            expected_bucket_owner=config.expected_bucket_owner,
        )
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
    except BaseException:
        if checkpoint is not None:
            checkpoint.release()
        raise
    return await _write_run(
        config,
        RunInfo(run_id=run_id, started_at=started, version=_version()),
        checkpoint,
        stdout=stdout,
        on_stats=on_stats,
        handle_signals=handle_signals,
        calls=await _calls_of_latest_run(config),
    )


async def _calls_of_latest_run(config: ScanConfig) -> dict[str, int] | None:
    """The calls per account of the latest finished run under the destination, by which the
    scan starts its heaviest accounts first (a sharded run's plan has them already)."""
    assert config.output is not None
    if config.output == "-":
        return None
    store = RunStore(
        config.output,
        profile=config.profile,
        file_mode=config.file_mode,
        options=S3Options.from_config(config),
        create=False,
    )
    try:
        async with store:
            history = await call_history(store)
    except FleetscanError:  # no destination yet, so no history; the sink says what else is wrong
        return None
    return history[1] if history else None


def _version() -> str:
    from . import __version__

    return __version__


async def _write_run(
    config: ScanConfig,
    run: RunInfo,
    checkpoint: Checkpoint | None,
    *,
    stdout: IO[bytes] | None,
    on_stats: Callable[[ScanStats], None] | None,
    handle_signals: bool,
    records_run_id: str | None = None,
    accounts: list[AccountTarget] | None = None,
    failed_organizations: tuple[tuple[OrganizationConfig, CallFailed], ...] = (),
    manifest_at: str | None = None,
    calls: Mapping[str, int] | None = None,
) -> ScanResult:
    """Scan into a sink for ``run``: the body of :func:`run_scan`, shared with shards.

    A shard's files carry its own id (``run``) while its records carry the run's
    (``records_run_id``); it scans ``accounts`` (its share) instead of discovering them, and
    writes its manifest at ``manifest_at``.
    """
    run_id = records_run_id or run.run_id
    try:
        engine = Engine(
            replace(config, run_id=run_id),
            run_id=run_id,
            done_units=frozenset(checkpoint.units) if checkpoint else frozenset(),
            accounts=accounts,
            failed_organizations=failed_organizations,
            calls=calls,
        )
        sink = open_sink(
            config.output or "-",
            run,
            compress=checkpoint.compression if checkpoint else config.compress,
            max_object_bytes=config.max_object_bytes,
            file_mode=config.file_mode,
            stdout=stdout,
            resume=checkpoint,
            s3=S3Options.from_config(config),
            config=stored_config(config),
            manifest_at=manifest_at,
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

    # Records per (organization key, dataset) of the whole run: a resumed run starts from
    # what its checkpoint made durable; None when that is unknown (see _organizations).
    per_organization: OrganizationRecords | None = Counter()
    if checkpoint is not None:
        earlier = checkpoint.organization_records
        per_organization = None if earlier is None else earlier.copy()

    async def write_all() -> None:
        last_commit = time.monotonic()
        # Units since the last commit: a sink holds them (encoded) until its next checkpoint
        # entry, so a commit also comes once there are MAX_PENDING_UNITS of them.
        pending = 0
        async with receive:
            async for batch in receive:
                # Then every batch already waiting: the stream's iterator yields to the loop
                # before each item, and with hundreds of tasks ready that left one batch
                # written per turn of the loop, the stream full and its senders waiting.
                while True:
                    counts: OrganizationRecords = Counter()
                    for record in batch.records:
                        await sink.write(record)
                        counts[(engine.organization_key(record.account_id), record.dataset)] += 1
                    sink.unit_done(batch.key, counts)
                    if per_organization is not None:
                        per_organization.update(counts)
                    engine.records_written(len(batch.records))
                    pending += 1
                    if (
                        pending >= MAX_PENDING_UNITS
                        or time.monotonic() - last_commit >= config.checkpoint_interval
                    ):
                        await sink.commit()
                        last_commit, pending = time.monotonic(), 0
                    try:
                        batch = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break

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
            await sink.abort(status, _summary(config, engine, per_organization))
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
    manifest = await sink.finish(status, _summary(config, engine, per_organization))
    return ScanResult(run.run_id, status, manifest, stats, stopped_by[0] if stopped_by else None)


async def _run_shard(
    config: ScanConfig,
    *,
    stdout: IO[bytes] | None,
    on_stats: Callable[[ScanStats], None] | None,
    handle_signals: bool,
) -> ScanResult:
    """One shard of a run: the plan (read, or made by the first shard), the shard's own share
    (resumed from its checkpoint if it was started before; nothing to do if it finished), then
    the run's manifest if this shard is the last to finish."""
    assert config.shard is not None
    assert config.run_id is not None
    assert config.output is not None
    shard = resolve_shard(config.shard)
    run_id = config.run_id
    shard_id = shard.run_id(run_id)
    options = S3Options.from_config(config)
    store = RunStore(
        config.output, profile=config.profile, file_mode=config.file_mode, options=options
    )
    async with store:
        plan = await load_plan(store, run_id)
        if plan is None:
            plan = await _make_plan(config, store, shard)
        check_shard(plan, shard, config)
        shard_run = RunInfo(run_id=shard_id, started_at=plan.started_at, version=_version())
        done = await read_shard_manifest(store, plan, shard)
        if done is not None and done["status"] in FINISHED:
            # Started again after it finished (an engine's retry, a re-run): nothing to scan,
            # but the run's manifest may still be due, if the earlier session died before it.
            run_manifest = await write_run_manifest(
                store,
                run_id,
                version=_version(),
                written_by=f"shard {shard}",
                require_all=True,
                plan=plan,
            )
            return ScanResult(
                run_id,
                done["status"],
                done,
                ScanStats(),
                shard=str(shard),
                run_manifest=run_manifest,
            )
        finalized = manifest_relpath(RunInfo(run_id=run_id, started_at=plan.started_at, version=""))
        if await store.exists(finalized):
            raise ConfigError(
                "shard",
                f"run {run_id} was finalized without shard {shard} (fleetscan finalize; its "
                f"manifest is {store.where(finalized)}): this shard's share can no longer be "
                "added to it; scan it in a new run",
            )
        started_before = await store.exists(_checkpoint_of(config.output, shard_run))
    share = plan.share(shard)
    failures = _failures(config, plan) if shard.index == 1 else ()
    weights = {a.id: plan.weights[a.id] for a in share}
    # The whole run's plan (every account of every shard) is not kept while this shard scans
    # its share, only its outline for the run's manifest: a shard's memory follows its own
    # accounts only.
    outline = plan.outline()
    del plan
    checkpoint = (
        await load_checkpoint(
            config.output,
            shard_id,
            profile=config.profile,
            expected_bucket_owner=config.expected_bucket_owner,
        )
        if started_before
        else None
    )
    result = await _write_run(
        config,
        shard_run,
        checkpoint,
        stdout=stdout,
        on_stats=on_stats,
        handle_signals=handle_signals,
        records_run_id=run_id,
        accounts=share,
        failed_organizations=failures,
        manifest_at=shard_manifest_relpath(run_id, shard),
        calls=weights,
    )
    run_manifest = None
    if result.status in FINISHED:
        async with store:
            run_manifest = await write_run_manifest(
                store,
                run_id,
                version=_version(),
                written_by=f"shard {shard}",
                require_all=True,
                plan=outline,
            )
    return replace(result, run_id=run_id, shard=str(shard), run_manifest=run_manifest)


def _failures(
    config: ScanConfig, plan: ShardPlan
) -> tuple[tuple[OrganizationConfig, CallFailed], ...]:
    """The organizations the plan could not list, as discovery reports them (shard 1 writes
    their error records, in every session, so the run stays partial and says which)."""
    entries = {entry.name: entry for entry in config.organization_settings()}
    failures = []
    for failed in plan.failed_organizations:
        entry = entries.get(failed.name)
        if entry is None:
            raise ConfigError(
                "shard",
                f"the run's plan names organization {failed.name!r}, which this configuration "
                "does not have: start every shard with the run's configuration",
            )
        failure = Failure(failed.error_code, failed.message, retryable=False)
        failures.append((entry, CallFailed(failed.operation, failure, failed.attempts)))
    return tuple(failures)


def _checkpoint_of(destination: str, run: RunInfo) -> str:
    """Where a session of ``run`` leaves its checkpoint (its file, or its S3 header entry)."""
    if destination.startswith("s3://"):
        return checkpoint_entry_relpath(run, 0)
    return checkpoint_relpath(run)


async def _make_plan(config: ScanConfig, store: RunStore, shard: Shard) -> ShardPlan:
    """The first shard to start discovers the accounts and writes the plan (or reads the one
    another shard wrote meanwhile)."""
    assert config.run_id is not None
    assert config.output is not None
    accounts, failed = await discover(config)
    history = await call_history(store)
    document = make_plan(
        run_id=config.run_id,
        started_at=dt.datetime.now(dt.UTC),
        count=shard.count,
        config=stored_config(config),
        accounts=accounts,
        calls=history[1] if history else {},
        balanced_by=f"calls of run {history[0]}" if history else "account id hash",
        failed_organizations=[
            FailedOrganization(
                name=entry.name,
                operation=exc.operation,
                error_code=exc.failure.error_code,
                message=exc.failure.message,
                attempts=exc.attempts,
            )
            for entry, exc in failed
        ],
    )
    return await write_plan(store, config.run_id, document)


async def finalize_run(
    destination: str,
    run_id: str,
    *,
    profile: str | None = None,
    file_mode: int | None = None,
    expected_bucket_owner: str | None = None,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
    bucket_key: bool | None = None,
    checksum_algorithm: str | None = None,
) -> dict[str, Any]:
    """Write the manifest of a sharded run from the shards that finished, if it has none yet,
    and return the run's manifest (idempotent).

    For a run that lost a shard for good: its share is missing from the run, which is then
    ``partial`` and names the missing shards (``manifest["shards"]["missing"]``). Once written,
    the run's manifest is never replaced, so a shard finishing later does not change it.

    The manifest is written as the run's last shard would have written it: with the run's own
    encryption (``sse``, ``sse_kms_key_id``, ``bucket_key``), checksum, expected bucket owner
    and file mode, as the run's plan keeps them, so a bucket policy that requires SSE-KMS
    accepts it. These arguments need not be given; one given with another value than the
    plan's is refused (:class:`ConfigError` naming it and both values), never silently
    preferred (:func:`fleetscan._shards.write_settings`). A setting the plan does not keep is
    taken from the arguments, as before plans kept it.

    With ``expected_bucket_owner`` (an S3 destination only), every request (the plan, the
    shards' manifests, the run's manifest, read or written) says which account must own the
    bucket; without it, the plan is read without one and the rest with the run's own, if any.
    """
    RunInfo(run_id=run_id, started_at=dt.datetime.now(dt.UTC), version="")  # a valid run id
    if destination.startswith("s3://"):
        parse_s3_url(destination)
    owner = check_bucket_owner(expected_bucket_owner, destination, "expected_bucket_owner")
    reading = RunStore(
        destination,
        profile=profile,
        options=S3Options(profile=profile, expected_bucket_owner=owner),
        create=False,
    )
    async with reading:
        plan = await require_plan(reading, run_id)
    settings = write_settings(
        plan,
        {
            "sse": sse,
            "sse_kms_key_id": sse_kms_key_id,
            "bucket_key": bucket_key,
            "checksum_algorithm": checksum_algorithm,
            "expected_bucket_owner": owner,
            "file_mode": file_mode,
        },
    )
    check_s3_writes(
        sse=settings["sse"],
        sse_kms_key_id=settings["sse_kms_key_id"],
        bucket_key=bool(settings["bucket_key"]),
        checksum_algorithm=settings["checksum_algorithm"],
    )
    options = S3Options(
        sse=settings["sse"],
        sse_kms_key_id=settings["sse_kms_key_id"],
        bucket_key_enabled=bool(settings["bucket_key"]),
        expected_bucket_owner=settings["expected_bucket_owner"],
        checksum_algorithm="SHA256" if settings["checksum_algorithm"] == "SHA256" else "CRC32",
        profile=profile,
    )
    mode = settings["file_mode"]
    store = RunStore(
        destination,
        profile=profile,
        file_mode=0o600 if mode is None else mode,
        options=options,
        create=False,
    )
    async with store:
        manifest = await write_run_manifest(
            store,
            run_id,
            version=_version(),
            written_by="fleetscan finalize",
            require_all=False,
            plan=plan,
        )
    assert manifest is not None
    return manifest


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
    if given.get("shard") is not None:
        ScanConfig(**given)  # refused: a shard resumes by itself (and names what to drop)
    output, resume = given.get("output"), given.get("resume")
    if not isinstance(output, str) or not output or output == "-":
        raise ConfigError("resume", "needs the output directory the run was written to")
    if not isinstance(resume, str):
        raise ConfigError("resume", "must be a run id or 'latest'")
    profile, owner = given.get("profile"), given.get("expected_bucket_owner")
    header = await load_checkpoint(
        output,
        resume,
        profile=profile if isinstance(profile, str) else None,
        lock=False,
        expected_bucket_owner=owner if isinstance(owner, str) else None,
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


async def discover(
    config: ScanConfig,
) -> tuple[list[AccountTarget], list[tuple[OrganizationConfig, CallFailed]]]:
    """The accounts ``config`` covers, as a scan would find them, with no Storage Gateway call,
    and the organizations that could not be listed (the others are listed in full).
    Organizations are listed as a scan lists them (a management role is assumed)."""
    from ._aws import AmbientCredentials, AwsClients

    engine = Engine(config, run_id="discovery")
    async with AwsClients(
        profile=config.profile,
        max_pool_connections=8,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        call_timeout=config.call_timeout,
    ) as clients:
        _, failed = await engine.discover(clients, AmbientCredentials(config.profile))
    return engine.accounts, failed


async def plan_scan(config: ScanConfig) -> dict[str, Any]:
    """Accounts x regions and the calls they need at least, with no Storage Gateway call.

    An organization that cannot be listed is named under ``organizations_failed``, the others
    planned in full.
    """
    accounts, failed = await discover(config)
    offered = storage_gateway_regions(config.partition)
    if config.regions == "all":
        regions: list[str] | str = list(offered)
    elif config.regions == "enabled":
        regions = f"enabled (resolved per account; up to {len(offered)})"
    else:
        regions = list(config.regions)
    n_regions = len(regions) if isinstance(regions, list) else len(offered)
    plan: dict[str, Any] = {
        "accounts": [{"id": a.id, "name": a.name, "status": a.status} for a in accounts],
        "regions": regions,
        "units": len(accounts) * n_regions,
        "minimum_calls": {
            "AssumeRole": len(accounts) if config.assume_role else 0,
            "ListGateways": len(accounts) * n_regions,
            "ListVolumeRecoveryPoints": "one per cached gateway found",
        },
    }
    if config.organizations:
        for entry, account in zip(plan["accounts"], accounts, strict=True):
            entry["organization_id"] = account.organization_id
        plan["organizations_failed"] = {entry.name: str(exc) for entry, exc in failed}
    return plan
