"""What changed between two runs: volumes newly stale, recovered, stuck, appeared or gone, and
gateways that appeared, went or became unreachable.

A single run says which volumes are past their objective; two runs say which are heading there.
A recovery point that did not move between two scans of a gateway that answered both times is a
stuck snapshot pipeline, visible a day or more before the volume breaches its objective.

Only what both runs could see is compared. A volume or gateway is ``gone`` only when the later
run read its account and region (no error for the unit, inside the run's scope), and
``appeared`` only when the earlier run did; a gateway that could not be read makes its volumes
unknown, never gone. Staleness is judged as the audit judges it (the same policy, each volume's
age at its own scan).

Records arrive checked by the readers (sizes and SHA-256 against the manifest, each record
against its schema), so a torn, tampered or wrong-typed file fails there, naming it.

Memory: the earlier run's volumes are held in flat arrays, 17 bytes each (:class:`_Volumes`);
the later run is streamed against them, and the earlier run is read a second time only to name
the volumes gone.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
from array import array
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .._exceptions import ConfigError
from .._records import format_time, parse_time
from .._sinks._read import aiter_records, alist_runs, aread_manifest
from ._evaluate import Finding, _Accounts, _volume_finding
from ._policy import Policy

ChangeKind = Literal[
    "new-stale",
    "recovered",
    "stuck",
    "appeared",
    "gone",
    "gateway-appeared",
    "gateway-gone",
    "gateway-unreachable",
]
#: Every kind of change, in the order reports list them.
CHANGE_KINDS: tuple[ChangeKind, ...] = (
    "stuck",
    "new-stale",
    "recovered",
    "gateway-unreachable",
    "gateway-gone",
    "gone",
    "gateway-appeared",
    "appeared",
)
#: The keys of each line of ``fleetscan diff``'s NDJSON, in order.
CHANGE_FIELDS: tuple[str, ...] = (
    "change",
    "from_run_id",
    "to_run_id",
    "organization_id",
    "account_id",
    "account_name",
    "region",
    "gateway_arn",
    "gateway_name",
    "volume_arn",
    "recovery_point_time_before",
    "recovery_point_time_after",
    "age_seconds_after",
    "objective_seconds",
    "rule",
    "error_code",
)
#: Runs a default comparison picks from: those that finished writing every unit they reached.
FINISHED: Final = ("complete", "partial")
#: Changes of each kind a :class:`RunDiff` keeps for the terminal and the reports (all of them
#: go to ``on_change``).
KEEP_PER_KIND: Final = 1000

_MS: Final = dt.timedelta(milliseconds=1)
_ORIGIN: Final = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Change:
    """One change between two runs (``None`` where a field does not apply).

    ``organization_id`` is the organization (``o-…``) of the change's account, so that a diff of
    runs of several organizations says whose each change is; None for a run of a static account
    list (or written before records carried it). It is taken from the records compared: the
    later run's when both runs have the volume or gateway (an account that moved is where it
    is now), the earlier run's for ``gone`` and ``gateway-gone`` (the only side there is).
    """

    change: ChangeKind
    from_run_id: str
    to_run_id: str
    account_id: str | None
    account_name: str | None
    region: str | None
    gateway_arn: str | None
    gateway_name: str | None = None
    volume_arn: str | None = None
    recovery_point_time_before: str | None = None
    recovery_point_time_after: str | None = None
    age_seconds_after: float | None = None
    objective_seconds: int | None = None
    rule: str | None = None
    error_code: str | None = None
    organization_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CHANGE_FIELDS}


@dataclass
class RunDiff:
    """Two runs compared: every change went to ``on_change``; counts and the first
    :data:`KEEP_PER_KIND` changes of each kind are kept here."""

    source: str
    from_run_id: str
    to_run_id: str
    from_started_at: str
    to_started_at: str
    policy: Policy
    volumes_before: int = 0
    volumes_after: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    #: The bucket owner the runs were read with: a command that reads them again needs it too.
    expected_bucket_owner: str | None = None

    def __post_init__(self) -> None:
        for kind in CHANGE_KINDS:
            self.counts[kind] += 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def resolve_runs(
    source: str,
    from_run: str | None,
    to_run: str | None,
    *,
    expected_bucket_owner: str | None = None,
) -> tuple[str, str]:
    """``--from`` and ``--to`` as given; a missing one is the newest finished run before the
    other (``--to``: the newest finished run). ConfigError names what is missing or unknown."""
    runs = await alist_runs(source, expected_bucket_owner=expected_bucket_owner)
    known = {str(r["run_id"]): r for r in runs}
    for flag, run_id in (("--from", from_run), ("--to", to_run)):
        if run_id is not None and run_id not in known:
            raise ConfigError(flag, f"no run {run_id!r} under {source}")
    finished = [str(r["run_id"]) for r in runs if r.get("status") in FINISHED]
    if to_run is None:
        candidates = [r for r in finished if r != from_run and _after(known, r, from_run)]
        if not candidates:
            raise ConfigError("--to", _too_few(source, runs, "after --from" if from_run else ""))
        to_run = candidates[-1]
    if from_run is None:
        candidates = [r for r in finished if r != to_run and _after(known, to_run, r)]
        if not candidates:
            raise ConfigError("--from", _too_few(source, runs, f"before run {to_run}"))
        from_run = candidates[-1]
    if from_run == to_run:
        raise ConfigError("--to", f"compares run {to_run} with itself: name two runs")
    return from_run, to_run


def _after(known: Mapping[str, Mapping[str, Any]], later: str, earlier: str | None) -> bool:
    if earlier is None:
        return True
    key = (str(known[later]["started_at"]), later)
    return key > (str(known[earlier]["started_at"]), earlier)


def _too_few(source: str, runs: list[dict[str, Any]], where: str) -> str:
    statuses = Counter(str(r.get("status")) for r in runs)
    listed = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "none"
    where = f" {where}" if where else ""
    return (
        f"no finished (complete or partial) run{where} to compare under {source} (runs: "
        f"{listed}); name them with --from and --to"
    )


@dataclass(slots=True)
class _Gateway:
    account_id: str | None
    region: str | None
    name: str | None
    status: str
    error_code: str | None
    organization_id: str | None


class _Side:
    """What one run says about its gateways and its (account, region) units."""

    def __init__(
        self,
        source: str,
        run_id: str,
        manifest: Mapping[str, Any],
        expected_bucket_owner: str | None = None,
    ) -> None:
        self.source = source
        self.run_id = run_id
        self.expected_bucket_owner = expected_bucket_owner
        self.status = str(manifest.get("status"))
        self.started_at = str(manifest.get("started_at"))
        summary = manifest.get("summary")
        summary = summary if isinstance(summary, dict) else {}
        self.accounts = _Accounts(summary)
        config = summary.get("config")
        regions = config.get("regions") if isinstance(config, dict) else None
        #: The regions the run was asked for, when it names them (not "all" or "enabled").
        self.regions = frozenset(map(str, regions)) if isinstance(regions, list) else None
        self.gateways: dict[str, _Gateway] = {}
        self.unit_errors: set[tuple[str | None, str | None]] = set()
        self.units_seen: set[tuple[str | None, str | None]] = set()

    @classmethod
    async def read(cls, source: str, run_id: str, expected_bucket_owner: str | None) -> _Side:
        try:
            manifest = await aread_manifest(
                source, run_id, expected_bucket_owner=expected_bucket_owner
            )
        except FileNotFoundError:
            raise ConfigError("--input", f"no run {run_id!r} under {source}") from None
        side = cls(source, run_id, manifest, expected_bucket_owner)
        gateway_errors: dict[str, str | None] = {}
        async for row in side.records("errors"):
            arn = row.get("gateway_arn")
            if isinstance(arn, str) and arn:
                code = _text(row, "gateway_error_code") or _text(row, "error_code")
                gateway_errors.setdefault(arn, code)
            else:
                side.unit_errors.add((_text(row, "account_id"), _text(row, "region")))
        async for row in side.records("gateways"):
            arn = str(row["gateway_arn"])
            account, region = _text(row, "account_id"), _text(row, "region")
            status = str(row.get("status"))
            code = gateway_errors.get(arn) or _text(row, "error_code")
            side.gateways[arn] = _Gateway(
                account, region, _text(row, "gateway_name"), status, code,
                _text(row, "organization_id"),
            )  # fmt: skip
            side.units_seen.add((account, region))
        return side

    def records(self, dataset: str) -> AsyncGenerator[dict[str, Any], None]:
        """The run's records of ``dataset``, read as every read of this side is (its owner)."""
        return aiter_records(
            self.source, self.run_id, dataset, expected_bucket_owner=self.expected_bucket_owner
        )

    def read_unit(self, account_id: str | None, region: str | None) -> bool:
        """Whether this run read the (account, region) unit: it listed a gateway there, or it
        finished, had the unit in its scope and recorded no error for it."""
        if (account_id, region) in self.units_seen:
            return True
        if self.status not in FINISHED:
            return False
        if (account_id, region) in self.unit_errors or (account_id, None) in self.unit_errors:
            return False
        if self.accounts.by_id and account_id not in self.accounts.by_id:
            return False
        return self.regions is None or region in self.regions

    def scanned(self, gateway_arn: str | None) -> bool:
        gateway = self.gateways.get(gateway_arn or "")
        return gateway is not None and gateway.status == "scanned"


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) else None


class _Volumes:
    """The earlier run's volumes, 17 bytes each: a 64-bit hash of the ARN and the packed state
    (:func:`_pack`) in two flat arrays sorted by hash, and a byte saying it was matched.

    A dict of Python ints took 175 bytes a volume (measured at 1,000,000). While the run is read,
    each volume is one 128-bit int in a list (about 52 bytes), sorted once at the end. Two ARNs
    share a hash with a chance of about n^2 / 2^65 (3e-8 for a million volumes).
    """

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._keys = array("Q")
        self._values = array("Q")
        self._matched = bytearray()
        #: Volumes not matched yet (all of them until :meth:`pop` is called).
        self.left = 0

    def add(self, volume_arn: str, packed: int) -> None:
        self._pending.append(_key(volume_arn) << 64 | packed)

    def freeze(self) -> int:
        """Done adding: sort, and keep the two arrays only. Returns the number of volumes."""
        pending, self._pending = self._pending, []
        pending.sort()
        self._keys = array("Q", (item >> 64 for item in pending))
        self._values = array("Q", (item & _LOW64 for item in pending))
        self._matched = bytearray(len(pending))
        self.left = len(pending)
        return self.left

    def pop(self, volume_arn: str) -> int | None:
        """The volume's packed state the first time it is asked for; None after, or if absent."""
        key = _key(volume_arn)
        index = bisect.bisect_left(self._keys, key)
        if index == len(self._keys) or self._keys[index] != key or self._matched[index]:
            return None
        self._matched[index] = 1
        self.left -= 1
        return self._values[index]


_LOW64: Final = (1 << 64) - 1


def _key(volume_arn: str) -> int:
    return int.from_bytes(hashlib.blake2b(volume_arn.encode(), digest_size=8).digest(), "big")


def _point_ms(text: object) -> int:
    """A recovery point time as milliseconds since year 1, plus one (0: none or unreadable)."""
    when = parse_time(text)
    return 0 if when is None else (when - _ORIGIN) // _MS + 1


def _point_text(ms: int) -> str | None:
    return None if ms == 0 else format_time(_ORIGIN + (ms - 1) * _MS)


def _pack(point_ms: int, scanned: bool, stale: bool) -> int:
    return point_ms << 2 | scanned << 1 | stale


def _unpack(packed: int) -> tuple[int, bool, bool]:
    return packed >> 2, bool(packed & 2), bool(packed & 1)


def _judge(policy: Policy, side: _Side, finding: Finding) -> bool:
    """The audit's verdict on a volume (True: stale), with its objective filled in."""
    objective = policy.objective_for(
        account_id=finding.account_id,
        ou_ids=side.accounts.ou_ids(finding.account_id),
        region=finding.region,
        gateway_name=finding.gateway_name,
    )
    finding.objective_seconds = objective.seconds
    finding.rule = objective.rule
    return finding.age_seconds is None or finding.age_seconds > objective.seconds


async def diff_runs(
    source: str,
    policy: Policy,
    *,
    from_run: str | None = None,
    to_run: str | None = None,
    on_change: Callable[[Change], None] | None = None,
    expected_bucket_owner: str | None = None,
) -> RunDiff:
    """Compare two runs under ``source`` (default: the two newest finished ones).

    Changes go to ``on_change`` as they are found: gateways first, then volumes in the later
    run's order, then the volumes gone. Staleness is judged against ``policy``, as the audit
    judges it. Raises ConfigError for an unknown or missing run, ValueError for a damaged file.
    With ``expected_bucket_owner`` (an S3 ``source`` only), every request says which account
    must own the bucket, and S3 refuses it otherwise (:class:`FleetscanError`).
    """
    owner = expected_bucket_owner
    from_id, to_id = await resolve_runs(source, from_run, to_run, expected_bucket_owner=owner)
    before = await _Side.read(source, from_id, owner)
    after = await _Side.read(source, to_id, owner)
    result = RunDiff(
        source,
        from_id,
        to_id,
        before.started_at,
        after.started_at,
        policy,
        expected_bucket_owner=expected_bucket_owner,
    )

    def emit(change: Change) -> None:
        result.counts[change.change] += 1
        if result.counts[change.change] <= KEEP_PER_KIND:
            result.changes.append(change)
        if on_change is not None:
            on_change(change)

    def gateway_change(kind: ChangeKind, arn: str, gateway: _Gateway) -> Change:
        """``gateway``: the later run's, but the earlier run's for ``gateway-gone``."""
        return Change(
            kind, from_id, to_id, gateway.account_id,
            after.accounts.name(gateway.account_id) or before.accounts.name(gateway.account_id),
            gateway.region, arn, gateway.name,
            error_code=gateway.error_code if kind == "gateway-unreachable" else None,
            organization_id=gateway.organization_id,
        )  # fmt: skip

    for arn in sorted(before.gateways.keys() | after.gateways.keys()):
        old, new = before.gateways.get(arn), after.gateways.get(arn)
        if new is None and old is not None and after.read_unit(old.account_id, old.region):
            emit(gateway_change("gateway-gone", arn, old))
        elif old is None and new is not None and before.read_unit(new.account_id, new.region):
            emit(gateway_change("gateway-appeared", arn, new))
        elif old and new and new.status == "error" and old.status != "error":
            emit(gateway_change("gateway-unreachable", arn, new))

    # The earlier run, 17 bytes a volume (see _Volumes).
    points = _Volumes()
    async for row in before.records("recovery_points"):
        arn = str(row["volume_arn"])
        finding = _volume_finding(from_id, row)
        stale = _judge(policy, before, finding)
        point = _point_ms(row.get("recovery_point_time"))
        points.add(arn, _pack(point, before.scanned(finding.gateway_arn), stale))
    result.volumes_before = points.freeze()

    async for row in after.records("recovery_points"):
        arn = str(row["volume_arn"])
        result.volumes_after += 1
        finding = _volume_finding(to_id, row)
        stale = _judge(policy, after, finding)
        point = _point_ms(row.get("recovery_point_time"))
        packed = points.pop(arn)
        name = finding.account_name or after.accounts.name(finding.account_id)
        organization = _text(row, "organization_id")
        if packed is None:
            gateway = finding.gateway_arn or ""
            known = before.scanned(gateway) or (
                gateway not in before.gateways
                and before.read_unit(finding.account_id, finding.region)
            )
            if known:
                emit(_volume_change("appeared", result, finding, name, organization, None, point))
            continue
        old_point, old_scanned, old_stale = _unpack(packed)
        if old_point and old_point == point and old_scanned and after.scanned(finding.gateway_arn):
            emit(_volume_change("stuck", result, finding, name, organization, old_point, point))
        if stale and not old_stale:
            emit(_volume_change("new-stale", result, finding, name, organization, old_point, point))
        elif old_stale and not stale:
            emit(_volume_change("recovered", result, finding, name, organization, old_point, point))

    if points.left:  # volumes of the earlier run the later one did not list: gone, or not read
        async for row in before.records("recovery_points"):
            arn = str(row["volume_arn"])
            if points.pop(arn) is None:
                continue
            finding = _volume_finding(from_id, row)
            listed = after.gateways.get(finding.gateway_arn or "")
            unreadable = listed is not None and listed.status != "scanned"
            if unreadable or not after.read_unit(finding.account_id, finding.region):
                continue
            _judge(policy, before, finding)
            name = finding.account_name or before.accounts.name(finding.account_id)
            point = _point_ms(row.get("recovery_point_time"))
            organization = _text(row, "organization_id")
            emit(_volume_change("gone", result, finding, name, organization, point, None))
    return result


def _volume_change(
    kind: ChangeKind,
    result: RunDiff,
    finding: Finding,
    account_name: str | None,
    organization_id: str | None,
    before_ms: int | None,
    after_ms: int | None,
) -> Change:
    """A volume's change; ``finding`` and ``organization_id`` are the later run's record's (the
    earlier one's for ``gone``)."""
    return Change(
        change=kind,
        from_run_id=result.from_run_id,
        to_run_id=result.to_run_id,
        account_id=finding.account_id,
        account_name=account_name,
        region=finding.region,
        gateway_arn=finding.gateway_arn,
        gateway_name=finding.gateway_name,
        volume_arn=finding.volume_arn,
        recovery_point_time_before=None if before_ms is None else _point_text(before_ms),
        recovery_point_time_after=None if after_ms is None else _point_text(after_ms),
        age_seconds_after=None if after_ms is None else finding.age_seconds,
        objective_seconds=finding.objective_seconds,
        rule=finding.rule,
        organization_id=organization_id,
    )
