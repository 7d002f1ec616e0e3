"""Shards: one run over many processes or machines.

A run given ``shard = "K/N"`` is scanned by N processes started with the same run id, each
scanning the K-th share of the accounts. They agree through documents under the destination,
``shards/<run_id>/``, each written once by whoever comes first and then only read
(:class:`fleetscan._sinks.RunStore`):

* ``plan.json``, **the plan**: which shard scans which account, the run's start (its ``dt=``
  partition) and its settings. The first shard to start discovers the accounts and writes it; every
  other shard, and every retry of any shard, reads it, so all of them work from one split even if
  the organization changes meanwhile. Shares are balanced by expected work: each account weighs
  the API calls it took in the latest run under the destination (manifests record them per
  account), or the mean of the others when it is new; accounts are placed heaviest first on the
  lightest shard, ties broken by a hash of the account id, so the split is stable and even in count
  when there is no history.
* ``shard-K-of-N.json``, **a shard's manifest**: a shard writes its data files and checkpoint under
  its own run id (``<run_id>.shardKofN``), and its manifest here rather than under ``manifests/``,
  where readers would take it for a run.
* ``manifests/dt=…/<run_id>.json``, **the run's manifest**: written by whichever shard finds every
  shard finished, created only if absent, so exactly once however many finish together. It lists
  every shard's files, so every reader sees one run. ``fleetscan finalize`` writes it by hand for
  a run that lost a shard for good (then ``partial``, naming the missing shares).

Every document is read back as untrusted: a torn or edited plan or shard manifest is refused
(:class:`ConfigError`, naming it), and a plan carries a checksum of its own content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import os
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson

from ._config import ScanConfig, parse_shard, run_config, run_differences
from ._config._checks import MAX_SHARDS
from ._config._values import ACCOUNT_ID, show
from ._discovery import AccountTarget, account_weights
from ._exceptions import ConfigError, FleetscanError
from ._records import DATASETS, Dataset, format_time
from ._sinks import RunInfo, manifest_relpath
from ._sinks._common import FileEntry, build_manifest
from ._sinks._read import _parse_manifest
from ._sinks._runstore import RunStore

PLAN_VERSION: Final = 1
#: Worst last: a run's status is the worst of its shards'.
_STATUS_ORDER: Final = ("complete", "partial", "interrupted", "failed")
FINISHED: Final = ("complete", "partial")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_PLAN_FIELDS: Final = frozenset(
    {
        "plan_version",
        "run_id",
        "started_at",
        "shards",
        "balanced_by",
        "config",
        "accounts",
        "failed_organizations",
        "sha256",
    }
)
_ACCOUNT_FIELDS: Final = frozenset(
    {
        "id",
        "name",
        "status",
        "ou_ids",
        "ou_path",
        "organization_id",
        "organization_name",
        "problems",
        "shard",
        "weight",
    }
)
#: What the plan keeps of an organization that could not be listed: enough for its error record.
_FAILED_FIELDS: Final = frozenset({"name", "operation", "error_code", "message", "attempts"})
_TEXT_CHARS: Final = 2048


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (from 1) of ``count`` shards of a run."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def run_id(self, run_id: str) -> str:
        """The id the shard's files and checkpoint carry: the run's, then the shard."""
        return f"{run_id}.shard{self.index}of{self.count}"


def resolve_shard(value: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``K/N`` as given, or for ``auto`` the shard the job engine says this process is.

    Kubernetes Indexed Jobs set ``JOB_COMPLETION_INDEX`` (0-based) but not the count, which the
    manifest sets as ``FLEETSCAN_SHARD_COUNT``; AWS Batch array jobs set
    ``AWS_BATCH_JOB_ARRAY_INDEX`` (0-based) and ``AWS_BATCH_JOB_ARRAY_SIZE``. A missing,
    malformed or inconsistent value is bad input (:class:`ConfigError`), never a guess.
    """
    if value != "auto":
        return Shard(*parse_shard(value))
    env = os.environ if environ is None else environ
    kubernetes, batch = env.get("JOB_COMPLETION_INDEX"), env.get("AWS_BATCH_JOB_ARRAY_INDEX")
    if kubernetes is not None and batch is not None:
        raise ConfigError(
            "shard",
            "auto: both JOB_COMPLETION_INDEX (Kubernetes) and AWS_BATCH_JOB_ARRAY_INDEX (AWS "
            "Batch) are set: give --shard K/N",
        )
    if kubernetes is not None:
        index_name, count_name = "JOB_COMPLETION_INDEX", "FLEETSCAN_SHARD_COUNT"
    elif batch is not None:
        index_name, count_name = "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"
    else:
        raise ConfigError(
            "shard",
            "auto: neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor "
            "AWS_BATCH_JOB_ARRAY_INDEX (an AWS Batch array job) is set: give --shard K/N",
        )
    index = _env_number(env, index_name)
    count = _env_number(env, count_name)
    stated = env.get("FLEETSCAN_SHARD_COUNT")
    if count_name != "FLEETSCAN_SHARD_COUNT" and stated is not None and stated != str(count):
        raise ConfigError(
            "shard",
            f"auto: FLEETSCAN_SHARD_COUNT is {show(stated)} but {count_name} is {count}",
        )
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError("shard", f"auto: {count_name} must be 1 to {MAX_SHARDS}, not {count}")
    if not 0 <= index < count:
        raise ConfigError(
            "shard", f"auto: {index_name} is {index}, outside 0 to {count - 1} ({count_name})"
        )
    return Shard(index + 1, count)


def _env_number(env: Mapping[str, str], name: str) -> int:
    text = env.get(name)
    if text is None:
        raise ConfigError("shard", f"auto: {name} is not set")
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise ConfigError("shard", f"auto: {name} must be a whole number, not {show(text)}")
    return int(text)


def shards_dir(run_id: str) -> str:
    return f"shards/{run_id}"


def plan_relpath(run_id: str) -> str:
    return f"{shards_dir(run_id)}/plan.json"


def shard_manifest_relpath(run_id: str, shard: Shard) -> str:
    return f"{shards_dir(run_id)}/shard-{shard.index}-of-{shard.count}.json"


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedOrganization:
    """An organization the plan could not list: its entry's name and the failed call."""

    name: str
    operation: str
    error_code: str
    message: str
    attempts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "operation": self.operation,
            "error_code": self.error_code,
            "message": self.message,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class ShardPlan:
    """Which shard scans which account, read back and checked."""

    run_id: str
    started_at: dt.datetime
    count: int
    balanced_by: str
    #: The run's stored configuration (what every shard must scan with).
    config: dict[str, Any]
    #: (account, shard index) in the plan's order.
    accounts: tuple[tuple[AccountTarget, int], ...]
    #: ``[[organizations]]`` entries that could not be listed when the run was planned, with
    #: why: shard 1 writes their error records, so the run is partial and says which.
    failed_organizations: tuple[FailedOrganization, ...] = ()

    #: Each account's weight (its expected calls), as the plan balanced it.
    weights: Mapping[str, int] = field(default_factory=dict)
    #: The number of accounts of each shard (index 1 first), kept by :meth:`outline` too.
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.sizes:
            counted = Counter(index for _, index in self.accounts)
            object.__setattr__(self, "sizes", tuple(counted[i] for i in range(1, self.count + 1)))

    def share(self, shard: Shard) -> list[AccountTarget]:
        return [account for account, index in self.accounts if index == shard.index]

    def size(self, index: int) -> int:
        return self.sizes[index - 1]

    def outline(self) -> ShardPlan:
        """The plan without its accounts: what the run's manifest needs of it (the shards and
        their sizes, the settings). A shard keeps this while it scans, not the whole plan: at
        10,000 accounts, reading the plan again to write the run's manifest took ~13 MB for a
        moment, in every shard that finished."""
        return replace(self, accounts=(), weights={})


def make_plan(
    *,
    run_id: str,
    started_at: dt.datetime,
    count: int,
    config: dict[str, Any],
    accounts: Sequence[AccountTarget],
    calls: Mapping[str, int],
    balanced_by: str,
    failed_organizations: Sequence[FailedOrganization] = (),
) -> bytes:
    """The plan document: ``accounts`` split into ``count`` shares of about equal work.

    Each account weighs what :func:`account_weights` says. Heaviest first onto the lightest
    share (then the one with fewest accounts, then the lowest index); equal weights are ordered
    by a hash of the account id, so the same input always gives the same split.
    """
    weights = account_weights(accounts, calls)
    weighted = sorted(
        ((weights[a.id], a) for a in accounts),
        key=lambda item: (-item[0], hashlib.sha256(item[1].id.encode()).hexdigest()),
    )
    shares = [(0, 0, index) for index in range(1, count + 1)]  # (work, accounts, index)
    entries = []
    for weight, account in weighted:
        work, size, index = heapq.heappop(shares)
        heapq.heappush(shares, (work + weight, size + 1, index))
        entries.append(
            {
                **account.as_dict(),
                "problems": [list(p) for p in account.problems],
                "shard": index,
                "weight": weight,
            }
        )
    document: dict[str, Any] = {
        "plan_version": PLAN_VERSION,
        "run_id": run_id,
        "started_at": format_time(started_at),
        "shards": count,
        "balanced_by": balanced_by,
        "config": config,
        "accounts": entries,
        "failed_organizations": [failed.as_dict() for failed in failed_organizations],
    }
    document["sha256"] = _digest(document)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _digest(document: Mapping[str, Any]) -> str:
    content = {key: value for key, value in document.items() if key != "sha256"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


class _Invalid(Exception):
    """What is wrong with a document; the caller names it."""


def parse_plan(data: bytes, where: str, run_id: str) -> ShardPlan:
    """A plan read back, every field checked; :class:`ConfigError` naming ``where`` if not."""
    try:
        return _plan(data, run_id)
    except _Invalid as exc:
        raise ConfigError(
            "shard",
            f"the run's plan {where} {exc}: it was torn or changed; a run's shards cannot agree "
            "without it (start the run again under a new run id)",
        ) from None


def _plan(data: bytes, run_id: str) -> ShardPlan:
    document = _object(data)
    unknown = sorted(set(document) - _PLAN_FIELDS)
    if unknown:
        raise _Invalid(f"has an unknown field {show(unknown[0])}")
    missing = sorted(_PLAN_FIELDS - set(document))
    if missing:
        raise _Invalid(f"has no {missing[0]!r}")
    if document["plan_version"] != PLAN_VERSION or type(document["plan_version"]) is not int:
        raise _Invalid(f"is not a plan of version {PLAN_VERSION}")
    if document["sha256"] != _digest(document):
        raise _Invalid("does not match its own checksum (sha256)")
    if document["run_id"] != run_id:
        raise _Invalid(f"is run {show(document['run_id'])}'s, not run {run_id}'s")
    started = _time(document["started_at"])
    count = document["shards"]
    if type(count) is not int or not 1 <= count <= MAX_SHARDS:
        raise _Invalid(f"says {show(count)} shards")
    balanced_by = _text(document["balanced_by"], "balanced_by")
    config = document["config"]
    try:
        run_config(config)
    except ConfigError as exc:
        raise _Invalid(f"holds settings that are not valid ({exc})") from None
    accounts = document["accounts"]
    if not isinstance(accounts, list):
        raise _Invalid("has accounts that are not a list")
    seen: set[str] = set()
    placed: list[tuple[AccountTarget, int]] = []
    weights: dict[str, int] = {}
    for number, entry in enumerate(accounts, start=1):
        try:
            account, index, weight = _planned_account(entry, count)
        except _Invalid as exc:
            raise _Invalid(f"account {number} {exc}") from None
        if account.id in seen:
            raise _Invalid(f"lists account {account.id} twice")
        seen.add(account.id)
        placed.append((account, index))
        weights[account.id] = weight
    failed = document["failed_organizations"]
    if not isinstance(failed, list):
        raise _Invalid("has failed_organizations that are not a list")
    organizations = tuple(_failed_organization(entry) for entry in failed)
    return ShardPlan(
        run_id, started, count, balanced_by, config, tuple(placed), organizations, weights
    )


def _failed_organization(entry: object) -> FailedOrganization:
    if not isinstance(entry, dict) or set(entry) != _FAILED_FIELDS:
        fields = ", ".join(sorted(_FAILED_FIELDS))
        raise _Invalid(f"has a failed organization that is not an object with {fields}")
    attempts = entry["attempts"]
    if type(attempts) is not int or attempts < 0:
        raise _Invalid(f"has a failed organization with attempts {show(attempts)}")
    return FailedOrganization(
        name=_text(entry["name"], "failed_organizations"),
        operation=_text(entry["operation"], "failed_organizations"),
        error_code=_text(entry["error_code"], "failed_organizations"),
        message=_text(entry["message"], "failed_organizations"),
        attempts=attempts,
    )


def _planned_account(entry: object, count: int) -> tuple[AccountTarget, int, int]:
    if not isinstance(entry, dict) or set(entry) != _ACCOUNT_FIELDS:
        raise _Invalid(f"must be an object with {', '.join(sorted(_ACCOUNT_FIELDS))}")
    account_id = entry["id"]
    if not isinstance(account_id, str) or not ACCOUNT_ID.fullmatch(account_id):
        raise _Invalid(f"has id {show(account_id)}, not a 12-digit account id")
    index, weight = entry["shard"], entry["weight"]
    if type(index) is not int or not 1 <= index <= count:
        raise _Invalid(f"has shard {show(index)}, not 1 to {count}")
    if type(weight) is not int or weight < 1:
        raise _Invalid(f"has weight {show(weight)}")
    ou_ids = entry["ou_ids"]
    if not isinstance(ou_ids, list):
        raise _Invalid("has ou_ids that are not a list")
    problems = entry["problems"]
    if not isinstance(problems, list) or not all(
        isinstance(p, list) and len(p) == 2 for p in problems
    ):
        raise _Invalid("has problems that are not [operation, problem] pairs")
    # A shard keeps its accounts for its whole scan, and they share a handful of states, OUs
    # and organizations: one string for each (sys.intern), not one per account.
    account = AccountTarget(
        id=account_id,
        name=_optional_text(entry["name"], "name"),
        status=_shared(entry["status"], "status"),
        ou_ids=tuple(_shared(ou, "ou_ids") for ou in ou_ids),
        ou_path=_optional_shared(entry["ou_path"], "ou_path"),
        organization_id=_optional_shared(entry["organization_id"], "organization_id"),
        organization_name=_optional_shared(entry["organization_name"], "organization_name"),
        problems=tuple((_text(o, "problems"), _text(p, "problems")) for o, p in problems),
    )
    return account, index, weight


def _object(data: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _Invalid("is not JSON") from None
    if not isinstance(document, dict):
        raise _Invalid("is not a JSON object")
    return document


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > _TEXT_CHARS:
        raise _Invalid(f"has {what} {show(value)}, not a text")
    return value


def _optional_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _shared(value: object, what: str) -> str:
    return sys.intern(_text(value, what))


def _optional_shared(value: object, what: str) -> str | None:
    return None if value is None else _shared(value, what)


def _time(value: object) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    raise _Invalid(f"has started_at {show(value)}, not an RFC 3339 time")


#: Manifests read, newest first, to find the latest finished run's calls per account: a failed
#: or interrupted newest run is passed over, but a destination of years of runs is not read whole.
HISTORY_READS = 5


async def call_history(store: RunStore) -> tuple[str, dict[str, int]] | None:
    """The calls per account of the latest finished run under ``store`` that recorded them,
    and its id; None when there is none (or it cannot be read: a plan then falls back to the
    hash of account ids, a scan to discovery's order, which is slower but never wrong).

    Runs are ordered by their manifests' names (start date, then run id), so this lists the
    manifests and reads at most :data:`HISTORY_READS` of them.
    """
    try:
        newest = sorted(await store.manifests(), reverse=True)[:HISTORY_READS]
    except (FleetscanError, OSError):
        return None
    for relpath in newest:
        try:
            data = await store.read(relpath)
            if data is None:
                continue  # deleted since the listing
            manifest = _parse_manifest(data, store.where(relpath))
        except (FleetscanError, ValueError, OSError):
            continue  # torn, edited or unreadable: an older run may still tell
        if manifest.get("status") not in FINISHED:
            continue
        summary = manifest.get("summary")
        listed = summary.get("accounts_scanned") if isinstance(summary, dict) else None
        calls = {
            entry["id"]: entry["calls"]
            for entry in (listed if isinstance(listed, list) else ())
            if isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and type(entry.get("calls")) is int
        }
        if calls:
            return str(manifest["run_id"]), calls
    return None


async def load_plan(store: RunStore, run_id: str) -> ShardPlan | None:
    relpath = plan_relpath(run_id)
    data = await store.read(relpath)
    return None if data is None else parse_plan(data, store.where(relpath), run_id)


async def require_plan(store: RunStore, run_id: str) -> ShardPlan:
    """The run's plan; :class:`ConfigError` if it has none (not a sharded run, or not here)."""
    plan = await load_plan(store, run_id)
    if plan is None:
        raise ConfigError(
            "run_id",
            f"run {run_id} has no shard plan at {store.where(plan_relpath(run_id))}: it is not "
            "a sharded run under this destination, or none of its shards has started",
        )
    return plan


#: How a run writes its objects (encryption, checksum, the bucket's owner, local file
#: permissions), as its plan keeps them (:data:`fleetscan._config.RUN_KEYS`).
WRITE_KEYS: Final = (
    "sse",
    "sse_kms_key_id",
    "bucket_key",
    "checksum_algorithm",
    "expected_bucket_owner",
    "file_mode",
)


def write_settings(plan: ShardPlan, given: Mapping[str, object]) -> dict[str, Any]:
    """The :data:`WRITE_KEYS` with which a run's objects are written by someone other than
    its shards (``fleetscan finalize``): the run's own, from its plan, so that the run's
    manifest is written exactly as the last shard would have written it. A bucket policy that
    requires SSE-KMS would refuse it otherwise, or it would land under the bucket's default
    encryption, apart from every other object of the run.

    ``given`` holds what the caller set (None: not set). A setting that differs from the
    plan's is refused (:class:`ConfigError`, naming every such setting and both values)
    rather than one of them silently chosen; the same value is fine. An expected bucket owner
    where the run had none is kept: it only asks S3 to check the bucket's owner, and changes
    nothing of what is written. A setting the plan does not keep (a plan written before it
    was kept) is the caller's, or its default, as before plans kept it.
    """
    run = run_config(plan.config)
    settings: dict[str, Any] = {}
    differences: list[tuple[str, str]] = []
    for key in WRITE_KEYS:
        value = given.get(key)
        if key not in plan.config:
            settings[key] = value
            continue
        theirs = getattr(run, key)
        settings[key] = theirs
        if value is None or value == theirs:
            continue
        if key == "expected_bucket_owner" and theirs is None:
            settings[key] = value
            continue
        differences.append(
            (
                f"--{key.replace('_', '-')}",
                f"run {plan.run_id}'s is {_setting(key, theirs)}, this command gives "
                f"{_setting(key, value)}",
            )
        )
    if differences:
        (flag, first), *others = differences
        also = "".join(f"; {other}: {text}" for other, text in others)
        raise ConfigError(
            flag,
            f"{first}{also}. Every object of a run is written with the run's own settings, "
            f"which its plan ({plan_relpath(plan.run_id)}) keeps: drop the option (the run's "
            "own is used) or give the run's value",
        )
    return settings


def _setting(key: str, value: object) -> str:
    """A setting's value for a message, in full (a KMS key ARN is longer than :func:`show`
    keeps, and a key id is not a secret)."""
    if value is None:
        return "none (the bucket's default)" if key == "sse" else "none"
    if key == "file_mode" and type(value) is int:
        return f"{value:#o}"
    return repr(value)


async def write_plan(store: RunStore, run_id: str, document: bytes) -> ShardPlan:
    """Create the plan, or, if another shard created it first, read theirs."""
    relpath = plan_relpath(run_id)
    if not await store.create(relpath, document):
        data = await store.read(relpath)
        if data is None:
            raise FleetscanError(f"the plan {store.where(relpath)} was deleted while read")
        document = data
    return parse_plan(document, store.where(relpath), run_id)


def check_shard(plan: ShardPlan, shard: Shard, config: ScanConfig) -> None:
    """Refuse a shard that does not belong to ``plan``: another count, or other settings."""
    if plan.count != shard.count:
        raise ConfigError(
            "shard",
            f"{shard}: run {plan.run_id} is split into {plan.count} shards (its plan), not "
            f"{shard.count}; every shard of a run is given the same N",
        )
    differences = run_differences(plan.config, config, "shard")
    if differences:
        raise ConfigError(
            "shard",
            f"{shard} is given other settings than run {plan.run_id}'s plan: "
            f"{'; '.join(differences)}. Every shard of a run scans with the same settings",
        )


# -- shard manifests and the run's manifest ---------------------------------------------------


@dataclass(frozen=True)
class _ShardOutcome:
    shard: Shard
    status: str  # a run status, or "missing"
    manifest: dict[str, Any] | None
    relpath: str


def _shard_files(manifest: dict[str, Any], shard_run: RunInfo) -> list[FileEntry]:
    files = manifest.get("files")
    if not isinstance(files, list):
        raise _Invalid("has files that are not a list")
    name = re.compile(re.escape(shard_run.run_id) + r"-[0-9]{5,}\.ndjson(?:\.gz)?")
    entries = []
    for entry in files:
        if not isinstance(entry, dict):
            raise _Invalid("lists a file that is not an object")
        dataset, path = entry.get("dataset"), entry.get("path")
        if dataset not in DATASETS or not isinstance(path, str):
            raise _Invalid(f"lists a file of dataset {show(dataset)}")
        directory, _, base = path.rpartition("/")
        if directory != f"{dataset}/{shard_run.partition}" or not name.fullmatch(base):
            raise _Invalid(f"lists {show(path)}, which is not one of the shard's files")
        records, size, sha = entry.get("records"), entry.get("bytes"), entry.get("sha256")
        if type(records) is not int or records < 1 or type(size) is not int or size < 0:
            raise _Invalid(f"states records or bytes of {path} that are not counts")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise _Invalid(f"states a sha256 of {path} that is not one")
        dataset_name: Dataset = dataset
        entries.append(FileEntry(dataset_name, path, records, size, sha))
    return entries


async def _shard_outcome(
    store: RunStore, plan: ShardPlan, shard: Shard
) -> tuple[_ShardOutcome, list[FileEntry]]:
    relpath = shard_manifest_relpath(plan.run_id, shard)
    data = await store.read(relpath)
    if data is None:
        return _ShardOutcome(shard, "missing", None, relpath), []
    where = store.where(relpath)
    try:
        try:
            manifest = _parse_manifest(data, where)
        except ValueError as exc:
            raise _Invalid(f"is not a fleetscan manifest ({exc})") from None
        shard_run = RunInfo(
            run_id=shard.run_id(plan.run_id), started_at=plan.started_at, version=""
        )
        if manifest.get("run_id") != shard_run.run_id:
            raise _Invalid(f"is run {show(manifest.get('run_id'))}'s, not {shard_run.run_id}'s")
        status = manifest.get("status")
        if status not in _STATUS_ORDER:
            raise _Invalid(f"has status {show(status)}")
        if not isinstance(manifest.get("summary"), dict):
            raise _Invalid("has no summary")
        files = _shard_files(manifest, shard_run)
    except _Invalid as exc:
        raise ConfigError(
            "shard", f"the manifest of shard {shard}, {where}, {exc}: it was torn or changed"
        ) from None
    return _ShardOutcome(shard, str(status), manifest, relpath), files


async def read_shard_manifest(
    store: RunStore, plan: ShardPlan, shard: Shard
) -> dict[str, Any] | None:
    """The shard's own manifest, checked, or None if it has written none."""
    outcome, _ = await _shard_outcome(store, plan, shard)
    return outcome.manifest


def merge_summaries(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' summaries as one run's: counts added up (per key for tables of counts),
    lists joined (the accounts scanned), anything else the first shard's (the settings)."""
    merged: dict[str, Any] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key not in merged:
                merged[key] = (
                    dict(value)
                    if isinstance(value, dict)
                    else list(value)
                    if isinstance(value, list)
                    else value
                )
                continue
            current = merged[key]
            if _count(current) and _count(value):
                merged[key] = current + value
            elif isinstance(current, list) and isinstance(value, list):
                current.extend(value)
            elif isinstance(current, dict) and isinstance(value, dict):
                for name, number in value.items():
                    if _count(number) and _count(current.get(name, 0)):
                        current[name] = current.get(name, 0) + number
    return merged


def _with_organizations(
    summary: dict[str, Any], manifests: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``summary`` with the shards' ``organizations`` sections as one run's (the manifest lifts
    it to its top level): each organization's counts added up over the shards that scanned a
    share of it; failed if a shard found it failed; its records null if any shard's are."""
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    for manifest in manifests:
        section = manifest.get("organizations")
        for entry in section if isinstance(section, list) else ():
            key = (entry.get("name"), entry.get("id"))
            current = merged.get(key)
            if current is None:
                records = entry.get("records")
                merged[key] = {**entry, "records": dict(records) if records else records}
                continue
            for name, value in entry.items():
                if _count(value) and _count(current.get(name)):
                    current[name] += value
            if entry.get("status") == "failed":
                current["status"] = "failed"
            records, into = entry.get("records"), current.get("records")
            if records is None or into is None:
                current["records"] = None
            else:
                for dataset, count in records.items():
                    into[dataset] = into.get(dataset, 0) + count
    if not merged:
        return summary
    return {**summary, "organizations": list(merged.values())}


def _count(value: object) -> bool:
    return type(value) is int


async def write_run_manifest(
    store: RunStore,
    run_id: str,
    *,
    version: str,
    written_by: str,
    require_all: bool,
    plan: ShardPlan | None = None,
) -> dict[str, Any] | None:
    """Write the run's manifest from its shards' manifests, once; return the run's manifest.

    With ``require_all`` (a shard that just finished), only when every shard has finished
    (``complete`` or ``partial``); else None, and the last shard to finish writes it. Without
    (``fleetscan finalize``), whatever has finished: a shard missing or not finished leaves its
    share out, and the run is then ``partial`` and names it. Either way the manifest is created
    only if absent: when one is there already (another shard won, or finalize ran before), that
    one is returned. ``plan`` is the run's plan if the caller has read it already.
    """
    plan = plan or await require_plan(store, run_id)
    run = RunInfo(run_id=run_id, started_at=plan.started_at, version=version)
    target = manifest_relpath(run)
    existing = await store.read(target)
    if existing is not None:
        return _parse_existing(existing, store.where(target))
    outcomes: list[_ShardOutcome] = []
    files: list[FileEntry] = []
    for index in range(1, plan.count + 1):
        outcome, shard_files = await _shard_outcome(store, plan, Shard(index, plan.count))
        if outcome.status not in FINISHED:
            if require_all:
                return None
            shard_files = []
        outcomes.append(outcome)
        files += shard_files
    finished = [o for o in outcomes if o.status in FINISHED]
    missing = [str(o.shard) for o in outcomes if o.status not in FINISHED]
    statuses = [o.status for o in finished] + (["partial"] if missing else [])
    status = max(statuses or ["partial"], key=_STATUS_ORDER.index)
    records: dict[Dataset, int] = dict.fromkeys(DATASETS, 0)
    for entry in files:
        records[entry.dataset] += entry.records
    compress = plan.config.get("compress")
    section = {
        "count": plan.count,
        "plan": plan_relpath(run_id),
        "balanced_by": plan.balanced_by,
        "written_by": written_by,
        "shards": [
            {
                "shard": str(o.shard),
                "status": o.status,
                "accounts": plan.size(o.shard.index),
                "manifest": o.relpath if o.manifest is not None else None,
            }
            for o in outcomes
        ],
        "missing": missing,
    }
    manifest = build_manifest(
        run=run,
        status=status,
        destination=store.root,
        compression="gzip" if compress == "gzip" else "none",
        summary=_with_organizations(
            merge_summaries([o.manifest["summary"] for o in finished if o.manifest]),
            [o.manifest for o in finished if o.manifest],
        ),
        records=records,
        files=files,
        shards=section,
    )
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    if await store.create(target, data):
        return manifest
    written = await store.read(target)
    if written is None:
        raise FleetscanError(f"the run's manifest {store.where(target)} was deleted while read")
    return _parse_existing(written, store.where(target))


def _parse_existing(data: bytes, where: str) -> dict[str, Any]:
    try:
        return _parse_manifest(data, where)
    except ValueError as exc:
        raise ConfigError("run_id", f"{exc}: the run's manifest was torn or changed") from None
