"""The scan: accounts -> credentials -> (account, region) units -> gateways -> records.

Structure (anyio, structured concurrency):

* one task per account, which assumes the role once and resolves the account's regions;
* one task per (account, region) unit, paging ListGateways;
* one task per cached gateway, calling ListVolumeRecoveryPoints;

each level bounded, so memory does not follow the organization's size (see ``Engine``).

Every AWS call goes through :meth:`Engine.call`: the unit's adaptive token bucket, the record
budget (for ListVolumeRecoveryPoints), a global cap on calls in flight, fleetscan's retry policy
and the run's retry budget. Records go to the writer through a bounded memory object stream, and
stay within the record budget until written, so a slow writer slows the scan instead of growing
memory. Nothing here raises for a failed account, region or gateway: failures become error
records, and one account failing never stops the others.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import secrets
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._aws import (
    AmbientCredentials,
    AwsClients,
    FrozenCredentialSource,
    acting_as,
    call_keys,
    current_source,
)
from ._backpressure import RecordBudget, Reservation
from ._config import OrganizationConfig, ScanConfig, storage_gateway_regions
from ._credentials import AssumedRoleCredentials
from ._discovery import (
    HOME_REGIONS,
    AccountTarget,
    account_weights,
    enabled_regions,
)
from ._ratelimit import START_RATE, AdaptiveBucket, RateLimiter
from ._reach import Reached, Reacher
from ._records import (
    GATEWAY_TEXT_LIMITS,
    SCHEMA_VERSION,
    ErrorRecord,
    GatewayRecord,
    Record,
    RecoveryPointRecord,
    format_time,
    is_gateway_arn,
    is_volume_arn,
    overlong,
    parse_bytes,
    parse_time,
    text_or_none,
)
from ._retry import (
    EXPIRED_CODES,
    MAX_MESSAGE_CHARS,
    Backoff,
    CallFailed,
    MalformedResponse,
    RetryBudget,
    Stopped,
    classify,
)
from ._storagegateway import StorageGatewayClient

#: A pair with a million gateways (10,000 pages of 100) is not a real fleet: an endpoint that
#: keeps answering new Markers past it would otherwise keep a scan from ever ending.
MAX_LIST_GATEWAYS_PAGES = 10_000

#: Records (about 1 KiB each in memory, with the answer they came from) that a scan may hold at
#: once: in answers in flight, in batches being built, and waiting for the writer.
RECORD_BUDGET = 10_000

#: Gateway failures that describe the gateway, not the scan: the unit still counts as done.
GATEWAY_STATE_ERRORS = frozenset({"InvalidGatewayRequestException"})

#: Times one call may have its credentials refreshed after an expired-token answer, on top of
#: its attempts: enough for keys that expire again while the call waits out other faults,
#: and a bound for an STS that hands out keys already expired.
MAX_REFRESHES_PER_CALL = 5


#: A unit of resumption: (account_id, region, gateway_arn). "*" means "all of them": a gateway's
#: records are (account, region, arn); (account, region, "*") marks the region done (its listing
#: and every gateway), (account, "*", "*") the whole account.
UnitKey = tuple[str, ...]
ALL = "*"

#: The account a task works for: set by the account's task, inherited by its units' tasks, so
#: each call is counted against its account (a sharded run's next plan balances by these counts).
_ACCOUNT: ContextVar[str | None] = ContextVar("fleetscan_account", default=None)


@dataclass(slots=True)
class UnitBatch:
    """Every record of one finished unit (a gateway, or a region's or account's own records).

    A unit's records reach the writer all at once or not at all, so a checkpoint can say "these
    units are durably written" and a resumed run can skip exactly those: nothing lost, nothing
    written twice. Units are gateways, not regions, so memory holds at most a gateway's records
    per call in flight, however large a region is.
    """

    key: UnitKey
    records: list[Record]


@dataclass
class ScanStats:
    """Live counters of a scan: the progress display reads them, the manifest stores them."""

    accounts: int = 0
    accounts_failed: int = 0
    #: Organizations of ``[[organizations]]`` that could not be listed (each an error record).
    organizations_failed: int = 0
    units_planned: int = 0
    units_done: int = 0
    units_failed: int = 0
    gateways: Counter[str] = field(default_factory=Counter)
    recovery_points: int = 0
    errors: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    retries_denied: int = 0
    units_skipped: int = 0
    throttles: int = 0
    #: The retries and throttles above, by operation (for dashboards: ``--metrics-file``).
    retries_by_operation: Counter[str] = field(default_factory=Counter)
    throttles_by_operation: Counter[str] = field(default_factory=Counter)
    #: Attempts answered "expired token", made again with refreshed keys at no attempt's cost.
    expired_tokens: int = 0
    credential_refreshes: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    open_clients: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts,
            "accounts_failed": self.accounts_failed,
            "organizations_failed": self.organizations_failed,
            "units_planned": self.units_planned,
            "units_done": self.units_done,
            "units_failed": self.units_failed,
            "units_skipped_as_done": self.units_skipped,
            "gateways_by_type": dict(sorted(self.gateways.items())),
            "recovery_points": self.recovery_points,
            "errors": self.errors,
            "api_calls": dict(sorted(self.calls.items())),
            "api_calls_total": self.total_calls,
            "retries": self.retries,
            "retries_denied_by_budget": self.retries_denied,
            "throttles": self.throttles,
            "retries_by_operation": dict(sorted(self.retries_by_operation.items())),
            "throttles_by_operation": dict(sorted(self.throttles_by_operation.items())),
            "expired_tokens": self.expired_tokens,
            "credential_refreshes": self.credential_refreshes,
            "peak_calls_in_flight": self.peak_in_flight,
            "open_clients": self.open_clients,
        }


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable and unique: ``20261127T205709Z-3f9a1c``."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def role_arn_for(
    config: ScanConfig, account_id: str, organization: OrganizationConfig | None = None
) -> str:
    """The member role of ``account_id``: ``organization``'s (resolved) role, else config's."""
    roles = organization if organization is not None else config
    if roles.role_arn_template:
        return roles.role_arn_template.format(partition=config.partition, account_id=account_id)
    return f"arn:{config.partition}:iam::{account_id}:role/{roles.role_name}"


class Engine:
    """One scan's shared machinery: clients, limits, retries, counters, the record stream."""

    def __init__(
        self,
        config: ScanConfig,
        *,
        run_id: str,
        static_accounts: tuple[str, ...] = (),
        done_units: frozenset[UnitKey] = frozenset(),
        accounts: list[AccountTarget] | None = None,
        failed_organizations: tuple[tuple[OrganizationConfig, CallFailed], ...] = (),
        calls: Mapping[str, int] | None = None,
    ) -> None:
        self.config = config
        #: API calls per account in an earlier run (see :meth:`_in_order`); None: none known.
        self._history = calls
        #: The accounts to scan, already discovered (a shard's share of its run's plan); None:
        #: discover them.
        self._given_accounts = accounts
        #: With given accounts: the organizations that could not be listed when the run was
        #: planned (this shard writes their error records).
        self._given_failures = failed_organizations
        #: Units a previous session of this run already wrote (resume skips them).
        self.done_units = done_units
        self._stopping = False
        self.run_id = run_id
        self.static_accounts = static_accounts or config.accounts
        self.stats = ScanStats()
        self._home = HOME_REGIONS.get(config.partition, "us-east-1")
        self._calls_in_flight = anyio.CapacityLimiter(config.concurrency)
        #: Work in flight is bounded at each level, so memory does not follow the fleet's size:
        #: accounts being prepared (role, regions), then (account, region) units, then gateways
        #: per unit, then calls. An account holds its slot only until its units have started:
        #: one account with a slow region must not keep the next accounts from starting.
        #: (fast_acquire: taking a free slot does not yield to the loop; most find one.)
        self._account_slots = anyio.Semaphore(max(4, config.concurrency // 2), fast_acquire=True)
        #: Two units per call slot: a unit pages ListGateways one call at a time.
        self._unit_slots = anyio.Semaphore(max(4, 2 * config.concurrency), fast_acquire=True)
        #: Records in memory: a ListVolumeRecoveryPoints call reserves room for its answer
        #: before it is sent and the writer releases it, so memory stays flat however many
        #: records the fleet holds.
        self.record_budget = RecordBudget(RECORD_BUDGET)
        #: Gateway tasks per (account, region): what its bucket admits in a second. More would
        #: only wait for tokens, each holding a task and its gateway.
        self._gateways_per_unit = max(2, config.burst + math.ceil(config.rate or START_RATE))
        self._limiter = RateLimiter(config.rate, config.burst)
        self._backoff = Backoff()
        #: A retry budget per operation, i.e. per service endpoint: STS timing out must not
        #: spend the retries of Storage Gateway calls (it once failed 352 units of a soak).
        self._budgets: dict[str, RetryBudget] = {}
        self._send: MemoryObjectSendStream[UnitBatch] | None = None
        #: The accounts discovered (the manifest lists them, with their OU placement).
        self.accounts: list[AccountTarget] = []
        #: (entry name, ``o-…`` id) of each organization listed; the manifest counts per one.
        self.organizations: list[tuple[str | None, str | None]] = []
        #: The organization key of each account (see :meth:`organization_key`), only when the
        #: run reaches several organizations; else the one key every account is counted under.
        self._key_of: dict[str, str | None] = {}
        self._sole_key: str | None = None
        #: Units per organization (by :meth:`organization_key`) of this session: the manifest
        #: reports them.
        self.organization_counts: dict[str | None, Counter[str]] = {}
        #: Entries of ``[[organizations]]`` that could not be listed.
        self.failed_organizations: list[str] = []
        #: API calls made for each account (its AssumeRole, regions, gateways, recovery points).
        self.account_calls: Counter[str] = Counter()
        #: Gateway failures per unit that were not about the gateway's own state.
        self._unit_failures: Counter[tuple[str, str]] = Counter()

    # -- calls ---------------------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[[], Awaitable[dict[str, Any]]],
        operation: str,
        *,
        bucket: AdaptiveBucket | None = None,
        check: Callable[[dict[str, Any]], object] | None = None,
        reservation: Reservation | None = None,
    ) -> dict[str, Any]:
        """Call ``fn`` with limits and retries; raise :class:`CallFailed` when it fails for good.

        ``check`` rejects a 200 answer that breaks the API model (raise MalformedResponse): such
        an answer is retried like a 5xx rather than written as data. ``reservation`` claims room
        for the answer's records once the bucket has admitted the call, before it is sent.

        Two answers are not the call's fault, and do not spend its attempts (``max_attempts``
        counts the others). An expired token: the task's credentials are refreshed and the call
        sent again at once (the service refused it before counting it against any rate),
        without spending the retry budget or another token of the bucket, up to
        :data:`MAX_REFRESHES_PER_CALL` times. A throttle: the bucket slows down for every call
        sharing it, and the call waits for its turn again; a call may be throttled
        ``max_attempts`` times so, since a bucket probing for the service's rate is throttled
        now and then by design, and one unlucky call must not run out of attempts for it.
        Beyond either allowance such answers count like any failure. ``attempts`` in an error
        record is every time the call was sent.
        """
        failures = 0  # the ones counted against max_attempts
        sent = 0
        refreshes = 0
        throttled = 0
        admitted = False
        admitted_at = 0.0
        stats = self.stats
        max_attempts = self.config.max_attempts
        budget = self._budgets.get(operation)
        if budget is None:
            budget = self._budgets[operation] = RetryBudget(self.config.retry_budget_ratio)
        while True:
            if self._stopping:
                raise Stopped
            if not admitted:
                if bucket is not None:
                    admitted_at = await bucket.acquire()
                if reservation is not None:
                    await reservation.reserve()
            admitted = False
            # The keys this attempt signs with, fetched (refreshed if need be) *before* it takes
            # a call slot: a refresh is itself a call (AssumeRole), and calls holding every slot
            # while waiting for a refresh would never give one back. Signing reads them from
            # ``call_keys``, so it never waits for a refresh that another call started meanwhile.
            source = current_source()
            keys = await source.get_frozen_credentials() if source is not None else None
            signing_keys = call_keys.set(keys)
            try:
                # A token per call, not per task: a call made while signing another (a hub's
                # refresh) must not count as the same borrower.
                slot = object()
                try:  # without a checkpoint when a slot is free: most calls find one
                    self._calls_in_flight.acquire_on_behalf_of_nowait(slot)
                except anyio.WouldBlock:
                    await self._calls_in_flight.acquire_on_behalf_of(slot)
                try:
                    sent += 1
                    stats.calls[operation] += 1
                    account = _ACCOUNT.get()
                    if account is not None:
                        self.account_calls[account] += 1
                    budget.record_call()
                    stats.in_flight += 1
                    stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                    try:
                        answer = await fn()
                        if check is not None:
                            check(answer)
                        return answer
                    except Exception as exc:  # every failure is classified; none unrecorded
                        failure = classify(exc)
                    finally:
                        stats.in_flight -= 1
                finally:
                    self._calls_in_flight.release_on_behalf_of(slot)
            finally:
                call_keys.reset(signing_keys)
            if failure.throttled:
                stats.throttles += 1
                stats.throttles_by_operation[operation] += 1
                if bucket is not None:
                    bucket.on_throttle(admitted_at)
            if failure.error_code in EXPIRED_CODES and source is not None:
                source.expire(keys)  # a retry with the same keys would only be refused again
                if refreshes < MAX_REFRESHES_PER_CALL:
                    refreshes += 1
                    stats.expired_tokens += 1
                    admitted = True
                    continue
            if failure.throttled and throttled < max_attempts:
                throttled += 1
            else:
                failures += 1
                if not failure.retryable or failures >= max_attempts:
                    raise CallFailed(operation, failure, sent)
            if not budget.try_spend():
                stats.retries_denied += 1
                raise CallFailed(operation, failure, sent)
            stats.retries += 1
            stats.retries_by_operation[operation] += 1
            if not (failure.throttled and bucket is not None):
                # A throttled call waits for its bucket instead: the bucket has just slowed
                # down for every task sharing it, which is the backoff that matters.
                await anyio.sleep(self._backoff.delay(sent))

    async def _plain_call(
        self, fn: Callable[[], Awaitable[dict[str, Any]]], operation: str
    ) -> dict[str, Any]:
        return await self.call(fn, operation)

    # -- records -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Start no new call; units still running are abandoned (and rescanned on resume)."""
        self._stopping = True

    async def _send_batch(
        self, key: UnitKey, records: list[Record], reservation: Reservation | None = None
    ) -> None:
        assert self._send is not None
        if reservation is not None:
            reservation.settle(len(records))
        else:
            self.record_budget.hold(len(records))
        batch = UnitBatch(key, records)
        try:  # without a checkpoint while the writer keeps up
            self._send.send_nowait(batch)
        except anyio.WouldBlock:
            await self._send.send(batch)

    def records_written(self, count: int) -> None:
        """The consumer wrote ``count`` records of a batch: their memory is free again."""
        self.record_budget.release(count)

    def _error(
        self,
        exc: CallFailed,
        *,
        account: AccountTarget | None,
        region: str | None,
        gateway_arn: str | None = None,
    ) -> ErrorRecord:
        self.stats.errors += 1
        f = exc.failure
        return ErrorRecord(
            schema_version=SCHEMA_VERSION,
            run_id=self.run_id,
            at=format_time(dt.datetime.now(dt.UTC)),
            account_id=account.id if account is not None else None,
            region=region,
            gateway_arn=gateway_arn,
            operation=exc.operation,
            error_code=f.error_code,
            gateway_error_code=f.gateway_error_code,
            message=f.message,
            attempts=exc.attempts,
            retryable=f.retryable,
            organization_id=account.organization_id if account is not None else None,
        )

    def _malformed(
        self,
        operation: str,
        problem: str,
        account: AccountTarget,
        region: str | None,
        gateway_arn: str | None = None,
    ) -> ErrorRecord:
        """Part of an answer that cannot be data (an item without a valid ARN, a field longer
        than AWS documents): named in an error record, never silently dropped."""
        return self._error(
            CallFailed(operation, classify(MalformedResponse(problem)), 1),
            account=account,
            region=region,
            gateway_arn=gateway_arn,
        )

    def _unusable(
        self,
        operation: str,
        count: int,
        account: AccountTarget,
        region: str,
        gateway_arn: str | None = None,
    ) -> ErrorRecord:
        return self._malformed(
            operation,
            f"{count} item(s) without a valid ARN in the answer were skipped",
            account,
            region,
            gateway_arn,
        )

    def _checked_gateway(
        self, account: AccountTarget, region: str, gateway: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Record]]:
        """The gateway without its over-long text fields, and an error record naming each."""
        problems: list[Record] = []
        for name, limit in GATEWAY_TEXT_LIMITS.items():
            problem = overlong(name, gateway.get(name), limit)
            if problem is not None:
                if not problems:
                    gateway = dict(gateway)
                gateway[name] = None
                arn = gateway["GatewayARN"]
                problems.append(self._malformed("ListGateways", problem, account, region, arn))
        return gateway, problems

    # -- the scan ------------------------------------------------------------------------------

    async def run(self, send: MemoryObjectSendStream[UnitBatch]) -> None:
        """Scan everything; each finished unit's records go to ``send``, closed at the end."""
        self._send = send
        async with send:
            await self._run()

    async def _run(self) -> None:
        clients = AwsClients(
            profile=self.config.profile,
            # One pool for every client: a connection per call that may be in flight.
            max_pool_connections=self.config.concurrency,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            call_timeout=self.config.call_timeout,
        )
        async with clients:
            self._clients = clients
            ambient = AmbientCredentials(self.config.profile)
            try:
                if self._given_accounts is not None:
                    reacher = self._reacher(clients)
                    reached = self._adopt(reacher.given(self._given_accounts, ambient))
                    failed = list(self._given_failures)
                else:
                    reached, failed = await self.discover(clients, ambient)
            except Stopped:
                return  # asked to stop while the accounts were being listed: none scanned
            for entry, problem in failed:
                await self._organization_failed(entry, problem)
            async with anyio.create_task_group() as tg:
                for account, group in self._in_order(reached):
                    if (account.id, ALL, ALL) in self.done_units:
                        self.stats.units_skipped += 1
                        continue
                    await self._account_slots.acquire()
                    if self._stopping:
                        self._account_slots.release()
                        break
                    tg.start_soon(self._account, account, group)
            self.stats.open_clients = clients.open_clients

    def _in_order(self, reached: list[Reached]) -> Iterator[tuple[AccountTarget, Reached]]:
        """Every account to scan, with the group that reached it, heaviest first.

        A scan ends when its slowest (account, region) unit ends, and that unit's calls are
        paced by the service's rate limit, whatever the concurrency: the sooner it starts, the
        sooner the scan can end. Its account is known by the calls it took in the latest run
        (the plan's weights, for a shard); without history, discovery's order stands.

        The pairs are made, or given up, one at a time: the scan's loop over them lasts the
        whole scan, and 10,000 accounts' pairs held that long took ~0.6 MB (tracemalloc).
        """
        pairs = ((account, group) for group in reached for account in group.accounts)
        if not self._history:
            yield from pairs
            return
        order = list(pairs)
        weights = account_weights([account for account, _ in order], self._history)
        self._history = None  # every account's calls: not kept once the order is made
        order.sort(key=lambda item: -weights[item[0].id])  # stable: ties keep their order
        weights.clear()
        order.reverse()
        while order:
            yield order.pop()

    async def discover(
        self, clients: AwsClients, ambient: FrozenCredentialSource
    ) -> tuple[list[Reached], list[tuple[OrganizationConfig, CallFailed]]]:
        """Every organization's accounts, reached as :meth:`Reacher.reach_all` says, taken as
        the accounts this engine scans; and the organizations that failed."""
        self._clients = clients
        reached, failed = await self._reacher(clients).reach_all(ambient)
        return self._adopt(reached), failed

    def _reacher(self, clients: AwsClients) -> Reacher:
        return Reacher(
            self.config,
            clients,
            self._plain_call,
            home=self._home,
            static_accounts=self.static_accounts,
            stopping=lambda: self._stopping,
        )

    def _adopt(self, reached: list[Reached]) -> list[Reached]:
        """Take ``reached`` as the accounts this engine scans (each once, for the first group
        that reached it) and count them per organization."""
        seen: set[str] = set()
        for group in reached:
            group.accounts = [a for a in group.accounts if a.id not in seen]
            seen.update(a.id for a in group.accounts)
            self.accounts.extend(group.accounts)
        if len({group.key for group in reached}) == 1:
            self._sole_key = reached[0].key
        else:
            self._key_of = {a.id: group.key for group in reached for a in group.accounts}
        self.stats.accounts = len(self.accounts)
        self.organizations = [
            (group.entry.name if group.entry else None, group.organization_id)
            for group in reached
            if group.key is not None
        ]
        self.organization_counts = {group.key: Counter() for group in reached if group.key}
        return reached

    def organization_key(self, account_id: str | None) -> str | None:
        """The organization a discovered account is counted under in the manifest: the name of
        the ``[[organizations]]`` entry that reached it, else its ``o-…`` id (None: a static
        list's account, or none)."""
        if not account_id:
            return None
        return self._key_of.get(account_id) if self._key_of else self._sole_key

    async def _organization_failed(self, entry: OrganizationConfig, exc: CallFailed) -> None:
        """An organization that could not be listed: one error record naming it, and a failed
        unit, so the run is partial. A resumed run lists it again; failing again, it stays
        failed, its error record the one an earlier session wrote."""
        key = ("organization", entry.name)
        self.stats.organizations_failed += 1
        self.failed_organizations.append(entry.name)
        self.stats.units_planned += 1
        self.stats.units_failed += 1
        if key in self.done_units:
            return
        failure = exc.failure
        message = f"organization {entry.name!r}: {failure.message}"[:MAX_MESSAGE_CHARS]
        error = self._error(
            CallFailed(exc.operation, replace(failure, message=message), exc.attempts),
            account=None,
            region=None,
        )
        await self._send_batch(key, [error])

    async def _account(self, account: AccountTarget, group: Reached) -> None:
        _ACCOUNT.set(account.id)
        preparing = True
        # Held by this task alone (and the contexts of its units' tasks), so the keys, the
        # lock and the AssumeRole closure are freed as soon as the account's last unit ends:
        # at 10,000 accounts, keeping them all to the end grew the scan's peak memory.
        assumed: AssumedRoleCredentials | None = None
        try:
            credentials: FrozenCredentialSource = group.base
            if self.config.assume_role:
                role_arn = role_arn_for(self.config, account.id, group.entry)
                assumed = group.assumer.credentials_for(role_arn)
                credentials = assumed
            with acting_as(credentials):
                try:
                    await credentials.get_frozen_credentials()
                    regions = await self._regions()
                except CallFailed as exc:
                    self.stats.accounts_failed += 1
                    self._count_units(account, planned=1, failed=1, accounts_failed=1)
                    error = self._error(exc, account=account, region=None)
                    await self._send_batch(
                        (account.id, ALL, ALL), [error, *self._account_problems(account)]
                    )
                    return
                self._count_units(account, planned=len(regions))
                async with anyio.create_task_group() as tg:
                    for region in regions:
                        if (account.id, region, ALL) in self.done_units:
                            self.stats.units_skipped += 1
                            continue
                        await self._unit_slots.acquire()
                        tg.start_soon(self._unit, account, region)
                    preparing = False
                    self._account_slots.release()
            if not self._stopping:
                # Every region is written: a resumed run need not even assume the role.
                problems = self._account_problems(account)
                if problems:
                    self._count_units(account, planned=1, failed=1)
                await self._send_batch((account.id, ALL, ALL), problems)
        except Stopped:
            pass
        finally:
            if preparing:
                self._account_slots.release()
            if assumed is not None:
                # The first AssumeRole of the account is not a refresh.
                self.stats.credential_refreshes += max(0, assumed.refreshes - 1)

    def _account_problems(self, account: AccountTarget) -> list[Record]:
        """What Organizations said of the account that could not be kept (its own unit fails)."""
        return [
            self._malformed(operation, problem, account, None)
            for operation, problem in account.problems
        ]

    async def _regions(self) -> tuple[str, ...]:
        regions = self.config.regions
        if regions == "all":
            return storage_gateway_regions(self.config.partition)
        if regions == "enabled":
            return await enabled_regions(self._clients, self._plain_call, self.config.partition)
        return tuple(regions)

    async def _unit(self, account: AccountTarget, region: str) -> None:
        """One (account, region), in its account's credential context (see ``acting_as``)."""
        key = (account.id, region)
        bucket = self._limiter.bucket(key)
        #: The region's own records (listing failures); each gateway sends its own batch.
        batch: list[Record] = []
        failed = False
        # A hostile or broken endpoint may repeat a gateway or a Marker: record each gateway
        # once, and stop paging (as a failure) rather than loop forever.
        seen_gateways: set[str] = set()
        seen_markers: set[str] = set()
        gateway_slots = anyio.Semaphore(self._gateways_per_unit, fast_acquire=True)
        try:
            sgw = await self._clients.storage_gateway(region)
            params: dict[str, Any] = {}
            async with anyio.create_task_group() as tg:
                while True:
                    try:
                        page = await self.call(
                            functools.partial(sgw.list_gateways, **params),
                            "ListGateways",
                            bucket=bucket,
                            check=_gateway_list,
                        )
                    except CallFailed as exc:
                        failed = True
                        batch.append(self._error(exc, account=account, region=region))
                        break
                    except Stopped:
                        break  # noticed below, once the gateway tasks have ended
                    gateways, unusable = _gateway_list(page)
                    if unusable:
                        failed = True
                        batch.append(self._unusable("ListGateways", unusable, account, region))
                    for gateway in gateways:
                        arn = gateway["GatewayARN"]
                        if arn in seen_gateways:
                            continue
                        seen_gateways.add(arn)
                        if (account.id, region, arn) in self.done_units:
                            continue  # written by an earlier session of this run
                        gateway, problems = self._checked_gateway(account, region, gateway)
                        if problems:
                            failed = True
                        if gateway.get("GatewayType") == "CACHED":
                            await gateway_slots.acquire()
                            await self.record_budget.room()
                            tg.start_soon(
                                self._gateway,
                                account,
                                region,
                                gateway,
                                sgw,
                                bucket,
                                gateway_slots,
                                problems,
                            )
                        else:
                            record = self._gateway_record(account, region, gateway, "not_cached")
                            await self._send_batch((account.id, region, arn), [record, *problems])
                    marker = page.get("Marker")
                    if not marker:
                        break
                    if (
                        not isinstance(marker, str)
                        or marker in seen_markers
                        or len(seen_markers) >= MAX_LIST_GATEWAYS_PAGES
                    ):
                        failed = True
                        batch.append(
                            self._error(
                                CallFailed(
                                    "ListGateways",
                                    classify(
                                        MalformedResponse(
                                            "ListGateways repeated a Marker or paged past "
                                            f"{MAX_LIST_GATEWAYS_PAGES} pages: paging stopped"
                                        )
                                    ),
                                    1,
                                ),
                                account=account,
                                region=region,
                            )
                        )
                        break
                    seen_markers.add(marker)
                    params["Marker"] = marker
            if self._stopping:
                # Some gateway may have been stopped before its call: the region is not done,
                # so no marker says it is (a resumed run lists it again, skips done gateways).
                raise Stopped
            # Gateways that failed for a reason other than their own state fail the unit too.
            failed = failed or self._unit_failures.pop(key, 0) > 0
            await self._send_batch((account.id, region, ALL), batch)
        except Stopped:
            return
        finally:
            self._limiter.release(key)
            self._unit_failures.pop(key, None)
            self._unit_slots.release()
        if failed:
            self._count_units(account, failed=1)
        else:
            self._count_units(account, done=1)

    def _count_units(
        self,
        account: AccountTarget,
        *,
        planned: int = 0,
        done: int = 0,
        failed: int = 0,
        accounts_failed: int = 0,
    ) -> None:
        """Count units for the run and for the account's organization (the manifest's
        ``organizations`` section)."""
        self.stats.units_planned += planned
        self.stats.units_done += done
        self.stats.units_failed += failed
        counts = self.organization_counts.get(self.organization_key(account.id))
        if counts is not None:
            counts["units_planned"] += planned
            counts["units_done"] += done
            counts["units_failed"] += failed
            counts["accounts_failed"] += accounts_failed

    async def _gateway(
        self,
        account: AccountTarget,
        region: str,
        gateway: dict[str, Any],
        sgw: StorageGatewayClient,
        bucket: AdaptiveBucket,
        slots: anyio.Semaphore,
        problems: list[Record],
    ) -> None:
        """One cached gateway: its recovery points, its gateway record and the ``problems`` of
        its listing, sent as one batch."""
        arn = gateway["GatewayARN"]
        reservation = Reservation(self.record_budget)
        try:
            try:
                answer = await self.call(
                    functools.partial(sgw.list_volume_recovery_points, GatewayARN=arn),
                    "ListVolumeRecoveryPoints",
                    bucket=bucket,
                    check=_recovery_point_list,
                    reservation=reservation,
                )
            except Stopped:
                return  # nothing of it is sent: a resumed run scans this gateway again
            except CallFailed as exc:
                error = self._error(exc, account=account, region=region, gateway_arn=arn)
                if exc.failure.error_code not in GATEWAY_STATE_ERRORS:
                    self._unit_failures[(account.id, region)] += 1
                code = exc.failure.gateway_error_code or exc.failure.error_code
                record = self._gateway_record(account, region, gateway, "error", error_code=code)
                batch: list[Record] = [error, record]
            else:
                # Built in a function of its own so the parsed answer is freed before the send,
                # which may wait for the writer.
                batch = self._recovery_points(account, region, gateway, answer)
                del answer
            batch.extend(problems)
            await self._send_batch((account.id, region, arn), batch, reservation)
        finally:
            reservation.cancel()
            slots.release()

    def _recovery_points(
        self, account: AccountTarget, region: str, gateway: dict[str, Any], answer: dict[str, Any]
    ) -> list[Record]:
        """A scanned gateway's batch: its recovery points, then its own gateway record."""
        arn = gateway["GatewayARN"]
        infos, unusable = _recovery_point_list(answer, arn)
        batch: list[Record] = []
        if unusable:
            self._unit_failures[(account.id, region)] += 1
            batch.append(self._unusable("ListVolumeRecoveryPoints", unusable, account, region, arn))
        now = dt.datetime.now(dt.UTC)
        scanned_at = format_time(now)
        gateway_id = arn.rsplit("/", 1)[-1]
        gateway_name = text_or_none(gateway.get("GatewayName"))
        for info in infos:
            volume_arn = str(info["VolumeARN"])
            point = parse_time(info.get("VolumeRecoveryPointTime"))
            batch.append(
                RecoveryPointRecord(
                    schema_version=SCHEMA_VERSION,
                    run_id=self.run_id,
                    scanned_at=scanned_at,
                    partition=self.config.partition,
                    account_id=account.id,
                    account_name=account.name,
                    region=region,
                    gateway_arn=arn,
                    gateway_id=gateway_id,
                    gateway_name=gateway_name,
                    volume_arn=volume_arn,
                    volume_id=volume_arn.rsplit("/", 1)[-1],
                    recovery_point_time=format_time(point) if point else None,
                    volume_size_bytes=parse_bytes(info.get("VolumeSizeInBytes")),
                    volume_usage_bytes=parse_bytes(info.get("VolumeUsageInBytes")),
                    recovery_point_age_seconds=(
                        round((now - point).total_seconds(), 3) if point else None
                    ),
                    organization_id=account.organization_id,
                )
            )
        self.stats.recovery_points += len(infos)
        batch.append(
            self._gateway_record(
                account, region, gateway, "scanned", recovery_point_count=len(infos)
            )
        )
        return batch

    def _gateway_record(
        self,
        account: AccountTarget,
        region: str,
        gateway: dict[str, Any],
        status: Any,
        *,
        recovery_point_count: int | None = None,
        error_code: str | None = None,
    ) -> GatewayRecord:
        gateway_type = text_or_none(gateway.get("GatewayType"))
        self.stats.gateways[str(gateway_type)] += 1
        arn = str(gateway["GatewayARN"])
        return GatewayRecord(
            schema_version=SCHEMA_VERSION,
            run_id=self.run_id,
            scanned_at=format_time(dt.datetime.now(dt.UTC)),
            partition=self.config.partition,
            account_id=account.id,
            account_name=account.name,
            region=region,
            gateway_arn=arn,
            gateway_id=arn.rsplit("/", 1)[-1],  # the ARN's, which is validated
            gateway_name=text_or_none(gateway.get("GatewayName")),
            gateway_type=gateway_type,
            gateway_operational_state=text_or_none(gateway.get("GatewayOperationalState")),
            host_environment=text_or_none(gateway.get("HostEnvironment")),
            status=status,
            recovery_point_count=recovery_point_count,
            error_code=error_code,
            organization_id=account.organization_id,
        )


def _gateway_list(page: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The usable gateways of a ListGateways page, and how many items were unusable.

    Raises MalformedResponse on a page that breaks the model (retried like a 5xx).
    """
    gateways = page.get("Gateways")
    if not isinstance(gateways, list):
        raise MalformedResponse("ListGateways answer has no Gateways list")
    usable = [g for g in gateways if isinstance(g, dict) and is_gateway_arn(g.get("GatewayARN"))]
    return usable, len(gateways) - len(usable)


def _recovery_point_list(
    answer: dict[str, Any], gateway_arn: str = ""
) -> tuple[list[dict[str, Any]], int]:
    """The usable items of a ListVolumeRecoveryPoints answer, each volume once, and how many
    items were unusable (not a volume of this gateway).

    Raises MalformedResponse for an answer that breaks the model (retried like a 5xx).
    """
    infos = answer.get("VolumeRecoveryPointInfos", [])
    if not isinstance(infos, list) or "GatewayARN" not in answer:
        raise MalformedResponse("ListVolumeRecoveryPoints answer is malformed")
    unique: dict[str, dict[str, Any]] = {}
    unusable = 0
    for info in infos:
        arn = info.get("VolumeARN") if isinstance(info, dict) else None
        if is_volume_arn(arn) and arn.startswith(gateway_arn + "/volume/"):
            unique.setdefault(arn, info)
        else:
            unusable += 1
    return list(unique.values()), unusable


async def scan(config: ScanConfig, *, run_id: str | None = None) -> AsyncGenerator[Record, None]:
    """Every record of a scan, as it is produced.

    Use it with ``contextlib.aclosing`` if you may stop early, so the scan's tasks are cancelled
    in the task that started them::

        async with aclosing(fleetscan.scan(config)) as records:
            async for record in records: ...
    """
    engine = Engine(config, run_id=run_id or config.run_id or new_run_id())
    send, receive = anyio.create_memory_object_stream[UnitBatch](64)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, send)
        async with receive:
            async for batch in receive:
                try:
                    for record in batch.records:
                        yield record
                    engine.records_written(len(batch.records))
                except GeneratorExit:
                    # The consumer stopped early (aclose): stop the scan, then end quietly.
                    tg.cancel_scope.cancel()
                    break
