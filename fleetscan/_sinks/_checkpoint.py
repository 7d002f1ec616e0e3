"""The checkpoint: which units of a run are durably written, and in which files.

Exactly-once across an interruption rests on three rules:

1. A unit's records reach a sink together (:class:`fleetscan._scan.UnitBatch`), never half.
2. A commit first makes every open file durable (fsync, rename, fsync the directory; on S3,
   complete the object), *then* records one checkpoint entry naming those files and the units
   now wholly inside them.
3. A resumed run keeps only files a checkpoint entry names, deletes every other file of the run
   (renamed but not yet checkpointed, or still ``.partial``; on S3, completed but not named, and
   every open multipart upload), and skips the checkpointed units.

A SIGKILL at any instant therefore leaves either a unit fully committed (kept, skipped) or not
(its records deleted, the unit scanned again).

One format, two containers. A local checkpoint is one NDJSON file, appended and fsynced, and
locked by the session writing it (:mod:`._checkpoint_file`); a line counts once it ends with its
newline, and a torn or unreadable last line (killed mid-append) is a commit that never happened,
which rule 2 makes safe: a resumed session cuts it off before it appends. S3 has no append, so
each entry is its own object, ``checkpoints/dt=YYYY-MM-DD/<run_id>/NNNNNN.json`` (``000000`` the
header), written with one atomic PutObject: an object that exists is whole. Either way the
entries are the same JSON documents, read by :func:`read_checkpoint` in order. A missing S3
entry (a gap) is harmless: an entry names only files closed since the entry before it and only
units whose records all lie in those files, so without it both its files (deleted as strays)
and its units (scanned again) are forgotten together.

A checkpoint is read back as untrusted input: every field of every entry is checked (types,
datasets, paths that can only be the run's own data files, the run id and partition its name
says, counters that never let a resumed session reuse a committed file name, and the stored
scan configuration), and anything wrong is refused as bad input naming the file and line, or
the S3 object.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import orjson

from .._config import run_config
from .._config._values import show
from .._exceptions import ConfigError, FleetscanError
from .._localfs import Tree
from .._records import DATASETS, Dataset, format_time
from ._checkpoint_file import CheckpointFile, writer_identity
from ._common import (
    Compression,
    FileEntry,
    OrganizationDataset,
    RunInfo,
    manifest_relpath,
    object_relpath,
)
from ._s3io import RESUME_POLICY, S3Reader

CHECKPOINT_VERSION = 1

#: (account, region, gateway ARN), with "*" for "all of them": see fleetscan._scan.UnitKey.
UnitKey = tuple[str, ...]
#: Records per (organization key, dataset), as the manifest's ``organizations`` section counts.
OrganizationRecords = Counter[OrganizationDataset]
#: The units an entry named: (their encoded length, their number, their records).
Mark = tuple[int, int, OrganizationRecords]


#: A run's data file name, and its temporary local names (``.NAME.RANDOM.partial``; earlier
#: versions wrote the predictable ``.NAME.partial``).
_RUN_FILE = (
    r"{run_id}-[0-9]{{5,}}\.ndjson(?:\.gz)?"
    r"|\.{run_id}-[0-9]{{5,}}\.ndjson(?:\.gz)?(?:\.[0-9a-f]{{8}})?\.partial"
)
#: A run id, as it appears in file names (see fleetscan._sinks._common.RunInfo).
_RUN_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PARTITION: Final = re.compile(r"dt=[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: An S3 checkpoint entry: ``checkpoints/dt=YYYY-MM-DD/<run_id>/NNNNNN.json``.
_S3_ENTRY = re.compile(
    r"checkpoints/(?P<partition>dt=[0-9]{4}-[0-9]{2}-[0-9]{2})/(?P<run_id>[^/]+)/"
    r"(?P<number>[0-9]{6,})\.json"
)
#: Checkpoint entries fetched at once when an S3 run is resumed.
_S3_READS = 8
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
#: Largest count or size a checkpoint may state (a file's bytes, records, next sequence number).
_MAX_COUNT: Final = (1 << 63) - 1
#: A unit key is a few names (account, region, gateway ARN): bounded, so a tampered checkpoint
#: cannot make the engine hold megabytes per unit.
_UNIT_PARTS: Final = 8
_UNIT_PART_CHARS: Final = 2048
#: An organization key (an ``[[organizations]]`` name or an ``o-…`` id) read back: bounded too.
_ORGANIZATION_KEY_CHARS: Final = 256
_HOST_CHARS: Final = 255

_HEADER_FIELDS: Final = frozenset(
    {"checkpoint_version", "run_id", "started_at", "compression", "config", "pid", "host"}
)
_SESSION_FIELDS: Final = frozenset({"session_start", "pid", "host"})
_COMMIT_FIELDS: Final = frozenset({"files", "units", "next_seq"})
#: Entries written before fleetscan counted records per organization have no such field.
_COMMIT_OPTIONAL: Final = frozenset({"organization_records"})
_FILE_FIELDS: Final = ("dataset", "path", "records", "bytes", "sha256")


def checkpoint_relpath(run: RunInfo) -> str:
    """The local checkpoint file."""
    return f"checkpoints/{run.partition}/{run.run_id}.ndjson"


def checkpoint_entry_relpath(run: RunInfo, number: int) -> str:
    """The ``number``-th checkpoint entry of an S3 run (0: the header)."""
    return f"checkpoints/{run.partition}/{run.run_id}/{number:06d}.json"


def is_run_file(name: str, run_id: str) -> bool:
    """Whether a file name (no directory) is one of ``run_id``'s data files, and not another
    run's whose id merely starts with the same characters (``r1`` and ``r1-b``)."""
    return re.fullmatch(_RUN_FILE.format(run_id=re.escape(run_id)), name) is not None


def is_temporary_of(name: str, final: str) -> bool:
    """Whether a file name is a temporary file of ``final`` (a manifest or a checkpoint) that a
    killed session left behind (``.FINAL.RANDOM.partial``, or ``.FINAL.partial`` from earlier
    versions)."""
    pattern = r"\.{final}(?:\.[0-9a-f]{{8}})?\.partial"
    return re.fullmatch(pattern.format(final=re.escape(final)), name) is not None


@dataclass
class Checkpoint:
    """What the previous sessions of a run made durable."""

    run_id: str
    started_at: dt.datetime
    compression: Compression
    #: The scan configuration the run started with (see fleetscan._config.stored_config);
    #: None in checkpoints written before fleetscan kept it.
    config: dict[str, Any] | None = None
    files: list[FileEntry] = field(default_factory=list)
    units: set[UnitKey] = field(default_factory=set)
    #: Next file number per dataset, so a resumed session never reuses a committed name.
    next_seq: dict[str, int] = field(default_factory=dict)
    sessions: int = 1
    #: S3: the number of the next checkpoint entry (one past the highest found).
    next_entry: int = 0
    #: Where it was read (the file, or the S3 prefix of its entries), for messages.
    where: str = ""
    #: The entry that names each file (by its path), for messages.
    named_by: dict[str, str] = field(default_factory=dict)
    #: Local: the checkpoint file, locked for the session that loaded it (see :meth:`release`).
    file: CheckpointFile | None = None
    #: Local: the bytes of whole, valid lines; a torn tail after them is cut before appending.
    intact_bytes: int = 0
    #: Entries read, a torn last one left out.
    entries: int = 0
    #: The records the entries made durable, per organization and dataset, so that a resumed
    #: run's manifest still counts every session's; None when an entry written before
    #: fleetscan counted them leaves the sum unknown.
    organization_records: OrganizationRecords | None = field(default_factory=Counter)

    def release(self) -> None:
        """Close the local checkpoint file, releasing the run's lock."""
        file, self.file = self.file, None
        if file is not None:
            file.close()
            file.tree.close()


def header_line(
    run: RunInfo, compression: Compression, config: dict[str, Any] | None = None
) -> bytes:
    """The checkpoint's first entry: the run, the scan configuration, and who writes it."""
    header: dict[str, Any] = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "run_id": run.run_id,
        "started_at": format_time(run.started_at),
        "compression": compression,
        **writer_identity(),
    }
    if config is not None:
        header["config"] = config
    return orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE)


#: Units a sink holds for its next checkpoint entry before the writer asks for a commit, whatever
#: the checkpoint interval: the pending units take ~45 bytes each until a commit, and a scan of
#: 10,000 accounts finishes ~40,000 in a 30-second interval, so without a bound this memory
#: would grow with the fleet and its speed (~1 MB here; a commit is a few fsyncs, or on S3 the
#: completion of its open objects).
MAX_PENDING_UNITS: Final = 20_000


class PendingUnits:
    """Units written since the last checkpoint entry, kept already encoded for that entry, and
    their records per organization.

    Why not a list of keys: a commit comes every ``checkpoint_interval`` seconds, and a scan
    finishes thousands of units in between (~40,000 at 10,000 accounts). Kept as tuples, each
    took ~100 bytes of small objects scattered over the interpreter's arenas until the commit
    freed them all at once, and the commit then built a list per unit and the entry's bytes
    on top: a peak of several MB per commit, and arenas left part-empty afterwards. Encoded as
    they come, a unit costs its ~45 bytes of JSON in one buffer, and an entry takes them from
    there as they are (joined for an S3 object, appended in parts to a local checkpoint).
    """

    __slots__ = ("_encoded", "_records", "count")

    def __init__(self) -> None:
        self._encoded = bytearray()
        self._records: OrganizationRecords = Counter()
        self.count = 0

    @property
    def full(self) -> bool:
        """Whether a commit is due for memory's sake (:data:`MAX_PENDING_UNITS`)."""
        return self.count >= MAX_PENDING_UNITS

    def add(self, key: UnitKey, records: Mapping[OrganizationDataset, int]) -> None:
        """``key`` is done; ``records`` are its records per (organization key, dataset)."""
        if self.count:
            self._encoded += b","
        self._encoded += orjson.dumps(key)
        self._records.update(records)
        self.count += 1

    def entry(self, files: Iterable[FileEntry], next_seq: dict[str, int]) -> tuple[bytes, Mark]:
        """The checkpoint entry naming ``files`` and every pending unit, and a mark of those
        units for :meth:`drop` (units added while the entry is being written are not in it).
        The units are spliced in without a copy of their own."""
        with memoryview(self._encoded) as units:
            line = b"".join(commit_parts(files, units, self._records, next_seq))
        return line, (len(self._encoded), self.count, self._records.copy())

    def write_entry(
        self,
        files: Iterable[FileEntry],
        next_seq: dict[str, int],
        write: Callable[[Sequence[bytes | memoryview]], None],
    ) -> None:
        """Hand the entry to ``write`` in parts, the units straight from their buffer: a local
        checkpoint appends them one after the other, and the entry is never built whole."""
        with memoryview(self._encoded) as units:
            write(commit_parts(files, units, self._records, next_seq))

    def drop(self, mark: Mark) -> None:
        """Forget the units ``mark`` (from :meth:`entry`) covers, now checkpointed; units added
        since stay pending."""
        length, count, records = mark
        if count == self.count:
            self.clear()
        elif count:
            del self._encoded[: length + 1]  # and the comma after them
            self.count -= count
            self._records -= records

    def clear(self) -> None:
        self._encoded = bytearray()
        self._records = Counter()
        self.count = 0


def commit_parts(
    files: Iterable[FileEntry],
    units: bytes | memoryview,
    records: Mapping[OrganizationDataset, int],
    next_seq: dict[str, int],
) -> tuple[bytes, bytes | memoryview, bytes]:
    """A checkpoint entry in three parts, the units (encoded by :class:`PendingUnits`) in the
    middle as given: ``files`` closed since the last entry, the units wholly inside them, their
    ``records`` per (organization key, dataset) as ``[key, dataset, count]`` rows, and the next
    file number per dataset. Joined, the same bytes as ``orjson.dumps({"files": [...], "units":
    [...], "organization_records": [...], "next_seq": ...})`` with its newline."""
    listed = orjson.dumps([f.as_json() for f in files])
    rows = sorted(
        ([key, dataset, count] for (key, dataset), count in records.items() if count),
        key=lambda row: (row[0] is not None, row[0] or "", row[1]),
    )
    return (
        b'{"files":' + listed + b',"units":[',
        units,
        b'],"organization_records":'
        + orjson.dumps(rows)
        + b',"next_seq":'
        + orjson.dumps(next_seq)
        + b"}\n",
    )


def session_line() -> bytes:
    """A resumed session's first entry: when it started, and who writes it."""
    return orjson.dumps(
        {"session_start": format_time(dt.datetime.now(dt.UTC)), **writer_identity()},
        option=orjson.OPT_APPEND_NEWLINE,
    )


# -- reading ----------------------------------------------------------------------------------


def parse_checkpoint(data: bytes, where: str, *, run_id: str, partition: str) -> Checkpoint:
    """Read a local checkpoint file: its whole lines (a line is whole once its newline is
    written), of which an unreadable last one is a commit that never happened (torn)."""
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    if not lines:
        problem = "is empty" if not data else "line 1 is incomplete"
        raise ConfigError(
            "resume",
            f"{where} {problem}: the run stopped before it wrote its first checkpoint line, "
            "so nothing of it was kept; start a new run",
        )
    entries = [(f"{where}: line {number}", line) for number, line in enumerate(lines, start=1)]
    checkpoint = read_checkpoint(entries, where, run_id=run_id, partition=partition, torn_tail=True)
    checkpoint.intact_bytes = sum(len(line) + 1 for line in lines[: checkpoint.entries])
    return checkpoint


class _Invalid(Exception):
    """What is wrong with one entry; the caller names the entry."""


def read_checkpoint(
    entries: Sequence[tuple[str, bytes]],
    where: str,
    *,
    run_id: str,
    partition: str,
    torn_tail: bool = False,
) -> Checkpoint:
    """Merge a checkpoint's entries, in order: the header, then commits and session starts.

    ``entries`` are (name for messages, JSON document); ``run_id`` and ``partition`` are the
    run and ``dt=`` partition the checkpoint's name places it in. With ``torn_tail``, an
    unparseable last entry is a commit that never happened (killed mid-append); anything else
    wrong is refused (:class:`ConfigError` naming the entry).
    """
    if not entries:
        raise ConfigError("resume", f"{where} is empty: nothing of that run can be resumed")
    name, document = entries[0]
    try:
        checkpoint = _header(_document(document), run_id, partition)
    except _Invalid as exc:
        raise ConfigError("resume", f"{name}: {exc}") from None
    checkpoint.where = where
    checkpoint.entries = 1
    run = RunInfo(run_id=run_id, started_at=checkpoint.started_at, version="")
    for index, (name, document) in enumerate(entries[1:], start=2):
        try:
            entry = _document(document)
        except _Invalid as exc:
            if torn_tail and index == len(entries):
                break  # torn by a kill while appending: that commit never happened
            raise ConfigError("resume", f"{name}: {exc}") from None
        try:
            if "session_start" in entry:
                _session(entry)
                checkpoint.sessions += 1
            else:
                _commit(entry, checkpoint, run, name)
        except _Invalid as exc:
            raise ConfigError("resume", f"{name}: {exc}") from None
        checkpoint.entries = index
    return checkpoint


def _document(data: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _Invalid("is corrupt (not JSON)") from None
    if not isinstance(document, dict):
        raise _Invalid("is corrupt (not a JSON object)")
    return document


def _fields(entry: dict[str, Any], allowed: Iterable[str], required: Iterable[str]) -> None:
    known = frozenset(allowed)
    for key in entry:
        if key not in known:
            raise _Invalid(f"has an unknown field {show(key)}")
    for key in required:
        if key not in entry:
            raise _Invalid(f"has no {key!r}")


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise _Invalid(f"{what} must be a whole number from 0, not {show(value)}")
    return value


def _time(value: object, what: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                parsed.astimezone(dt.UTC)  # an instant UTC can hold
                return parsed
        except (ValueError, OverflowError):
            pass
    raise _Invalid(f"{what} must be an RFC 3339 time with its time zone, not {show(value)}")


def _writer(entry: dict[str, Any]) -> None:
    pid, host = entry.get("pid"), entry.get("host")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
        raise _Invalid(f"pid must be a process id, not {show(pid)}")
    if host is not None and (not isinstance(host, str) or len(host) > _HOST_CHARS):
        raise _Invalid(f"host must be a host name, not {show(host)}")


def _header(entry: dict[str, Any], run_id: str, partition: str) -> Checkpoint:
    _fields(entry, _HEADER_FIELDS, ("checkpoint_version", "run_id", "started_at", "compression"))
    version = entry["checkpoint_version"]
    if type(version) is not int or version != CHECKPOINT_VERSION:
        raise _Invalid(
            f"is not a fleetscan checkpoint of version {CHECKPOINT_VERSION} "
            f"(checkpoint_version {show(version)})"
        )
    if entry["run_id"] != run_id:
        raise _Invalid(
            f"says run {show(entry['run_id'])}, but this is the checkpoint of run {run_id!r}"
        )
    started = _time(entry["started_at"], "started_at")
    if RunInfo(run_id=run_id, started_at=started, version="").partition != partition:
        raise _Invalid(
            f"started_at {entry['started_at']!r} is not in {partition}, where the checkpoint is"
        )
    compression = entry["compression"]
    if compression != "none" and compression != "gzip":
        raise _Invalid(f"compression must be 'none' or 'gzip', not {show(compression)}")
    _writer(entry)
    config = entry.get("config")
    if config is not None:
        try:
            run_config(config)
        except ConfigError as exc:
            raise _Invalid(f"the run's stored configuration is not valid: {exc}") from None
    return Checkpoint(run_id=run_id, started_at=started, compression=compression, config=config)


def _session(entry: dict[str, Any]) -> None:
    _fields(entry, _SESSION_FIELDS, ("session_start",))
    _time(entry["session_start"], "session_start")
    _writer(entry)


def _commit(entry: dict[str, Any], checkpoint: Checkpoint, run: RunInfo, name: str) -> None:
    """Check one commit entry against the checkpoint so far, then merge it in."""
    _fields(entry, _COMMIT_FIELDS | _COMMIT_OPTIONAL, _COMMIT_FIELDS)
    files, units, next_seq = entry["files"], entry["units"], entry["next_seq"]
    if not isinstance(files, list):
        raise _Invalid(f"files must be a list, not {show(files)}")
    if not isinstance(units, list):
        raise _Invalid(f"units must be a list, not {show(units)}")
    if not isinstance(next_seq, dict):
        raise _Invalid(f"next_seq must be an object, not {show(next_seq)}")
    seqs: dict[str, int] = {}
    for dataset, value in next_seq.items():
        if dataset not in DATASETS:
            raise _Invalid(f"next_seq names an unknown dataset {show(dataset)}")
        seqs[dataset] = _count(value, f"next_seq.{dataset}")
    new_files = [_file(item, i, checkpoint, run) for i, item in enumerate(files)]
    named: set[str] = set()
    for i, (f, _) in enumerate(new_files):
        if f.path in named:
            raise _Invalid(f"files[{i}] names {f.path} twice")
        named.add(f.path)
    new_units: set[UnitKey] = set()
    for i, unit in enumerate(units):
        key = _unit(unit, f"units[{i}]")
        if key in checkpoint.units or key in new_units:
            raise _Invalid(f"units[{i}] {show(unit)} was already checkpointed")
        new_units.add(key)
    for f, seq in new_files:
        if seq >= seqs.get(f.dataset, 0):
            raise _Invalid(
                f"next_seq.{f.dataset} is {seqs.get(f.dataset, 0)}, but {f.path} is named: a "
                "resumed session would write over it"
            )
    records = _organization_records(entry.get("organization_records"))
    for f, _ in new_files:
        checkpoint.files.append(f)
        checkpoint.named_by[f.path] = name
    checkpoint.units.update(new_units)
    for dataset, seq in seqs.items():
        checkpoint.next_seq[dataset] = max(seq, checkpoint.next_seq.get(dataset, 0))
    if records is None:
        checkpoint.organization_records = None
    elif checkpoint.organization_records is not None:
        checkpoint.organization_records.update(records)


def _organization_records(rows: object) -> OrganizationRecords | None:
    """An entry's ``organization_records`` (``[key, dataset, count]`` rows); None if absent."""
    if rows is None:
        return None
    if not isinstance(rows, list):
        raise _Invalid(f"organization_records must be a list, not {show(rows)}")
    records: OrganizationRecords = Counter()
    for i, row in enumerate(rows):
        what = f"organization_records[{i}]"
        if not isinstance(row, list) or len(row) != 3:
            raise _Invalid(f"{what} must be [organization, dataset, count], not {show(row)}")
        key, dataset, count = row
        if key is not None and (not isinstance(key, str) or len(key) > _ORGANIZATION_KEY_CHARS):
            raise _Invalid(f"{what} names organization {show(key)}, not a name or an id")
        if not isinstance(dataset, str) or dataset not in DATASETS:
            raise _Invalid(
                f"{what} names dataset {show(dataset)}, not one of {', '.join(DATASETS)}"
            )
        records[(key, dataset)] += _count(count, f"{what} count")
    return records


def _file(item: object, index: int, checkpoint: Checkpoint, run: RunInfo) -> tuple[FileEntry, int]:
    what = f"files[{index}]"
    if not isinstance(item, dict):
        raise _Invalid(f"{what} must be an object, not {show(item)}")
    try:
        _fields(item, _FILE_FIELDS, _FILE_FIELDS)
    except _Invalid as exc:
        raise _Invalid(f"{what} {exc}") from None
    dataset, path, sha256 = item["dataset"], item["path"], item["sha256"]
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise _Invalid(f"{what}.dataset {show(dataset)} is not one of {', '.join(DATASETS)}")
    seq = _file_seq(path, dataset, run, checkpoint.compression)
    if seq is None or not isinstance(path, str):
        example = object_relpath(dataset, run, 0, checkpoint.compression)
        raise _Invalid(
            f"{what}.path {show(path)} is not a data file of run {run.run_id} (like {example})"
        )
    if path in checkpoint.named_by:
        raise _Invalid(f"{what} names {path} again ({checkpoint.named_by[path]} named it)")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _Invalid(f"{what}.sha256 must be 64 lowercase hex digits, not {show(sha256)}")
    entry = FileEntry(
        dataset,
        path,
        _count(item["records"], f"{what}.records"),
        _count(item["bytes"], f"{what}.bytes"),
        sha256,
    )
    return entry, seq


def _file_seq(path: object, dataset: Dataset, run: RunInfo, compression: Compression) -> int | None:
    """The sequence number of ``path`` if it is exactly the name fleetscan gives that file of
    ``run`` (so it can name nothing else: no ``..``, no other directory), else None."""
    if not isinstance(path, str):
        return None
    prefix = f"{dataset}/{run.partition}/{run.run_id}-"
    digits = path[len(prefix) :].partition(".")[0] if path.startswith(prefix) else ""
    if not (5 <= len(digits) <= 12 and digits.isascii() and digits.isdigit()):
        return None
    seq = int(digits)
    return seq if object_relpath(dataset, run, seq, compression) == path else None


def _unit(unit: object, what: str) -> UnitKey:
    if (
        not isinstance(unit, list)
        or not 1 <= len(unit) <= _UNIT_PARTS
        or not all(isinstance(part, str) and 0 < len(part) <= _UNIT_PART_CHARS for part in unit)
    ):
        raise _Invalid(f"{what} must be a list of 1 to {_UNIT_PARTS} names, not {show(unit)}")
    return tuple(unit)


# -- finding and loading a run's checkpoint ---------------------------------------------------


def stray_files(tree: Tree, run: RunInfo, keep: Iterable[FileEntry]) -> list[str]:
    """Files of this run no checkpoint entry names (to delete before resuming): data files
    renamed but not committed, and every temporary file of the run, as relpaths."""
    kept = {f.path for f in keep}
    strays = []
    for dataset in DATASETS:
        directory = f"{dataset}/{run.partition}"
        for name in tree.names(directory):
            relpath = f"{directory}/{name}"
            if is_run_file(name, run.run_id) and relpath not in kept:
                strays.append(relpath)
    for final in (manifest_relpath(run), checkpoint_relpath(run)):
        directory, _, final_name = final.rpartition("/")
        strays += [
            f"{directory}/{name}"
            for name in tree.names(directory)
            if is_temporary_of(name, final_name)
        ]
    return strays


async def load_checkpoint(
    destination: str,
    run_id: str,
    *,
    profile: str | None = None,
    lock: bool = True,
    expected_bucket_owner: str | None = None,
) -> Checkpoint:
    """The checkpoint of ``run_id`` (or of the newest unfinished run, for ``latest``) under a
    local directory or ``s3://bucket/prefix/`` (read with ``profile``'s credentials).

    A run is finished, and cannot be resumed, once its manifest says ``complete`` or
    ``partial``; a ``failed`` or ``interrupted`` one (or none at all) can be. On S3, every read
    carries ``expected_bucket_owner`` when given. A local checkpoint
    is returned locked (see :meth:`Checkpoint.release`): refused while another process writes
    that run. ``lock=False`` reads only what a resume starts from, the run and its stored
    configuration, and takes no lock (on S3, only the header entry is read).
    """
    if destination == "-":
        raise ConfigError("resume", "a run written to stdout keeps no checkpoint")
    if destination.startswith("s3://"):
        return await _load_s3_checkpoint(
            destination,
            run_id,
            profile,
            header_only=not lock,
            expected_bucket_owner=expected_bucket_owner,
        )
    return await anyio.to_thread.run_sync(_load_local_checkpoint, destination, run_id, lock)


def _load_local_checkpoint(destination: str, run_id: str, lock: bool) -> Checkpoint:
    root = Path(destination)
    try:
        tree = Tree(root, field="output", create=False)
    except FileNotFoundError:
        raise ConfigError("resume", f"{root} does not exist: there is no run to resume") from None
    try:
        relpath = _choose_local(tree, run_id)
        if not lock:
            data = tree.read(relpath)
            file = None
        else:
            file, data = CheckpointFile.open(tree, relpath)
        try:
            _, partition, name = relpath.split("/")
            checkpoint = parse_checkpoint(
                data,
                str(tree.path(relpath)),
                run_id=name.removesuffix(".ndjson"),
                partition=partition,
            )
        except BaseException:
            if file is not None:
                file.close()
            raise
    except BaseException:
        tree.close()
        raise
    if file is None:
        tree.close()
    checkpoint.file = file
    return checkpoint


def _choose_local(tree: Tree, run_id: str) -> str:
    """The relpath of the checkpoint to resume."""
    candidates = sorted(
        (name.removesuffix(".ndjson"), partition)
        for partition in tree.names("checkpoints")
        if _PARTITION.fullmatch(partition)
        for name in tree.names(f"checkpoints/{partition}")
        if name.endswith(".ndjson") and _RUN_ID.fullmatch(name.removesuffix(".ndjson"))
    )
    if run_id == "latest":
        unfinished = [c for c in candidates if not _finished_local(tree, *c)]
        if not unfinished:
            raise ConfigError("resume", f"no unfinished run to resume under {tree.root}")
        chosen = unfinished[-1]
    else:
        matches = [c for c in candidates if c[0] == run_id]
        if not matches:
            raise ConfigError("resume", f"run {run_id} has no checkpoint under {tree.root}")
        chosen = matches[0]
        if _finished_local(tree, *chosen):
            raise ConfigError("resume", f"run {run_id} has finished: nothing to resume")
    return f"checkpoints/{chosen[1]}/{chosen[0]}.ndjson"


def _finished_local(tree: Tree, run_id: str, partition: str) -> bool:
    try:
        return _says_finished(tree.read(f"manifests/{partition}/{run_id}.json"))
    except FileNotFoundError:
        return False


def _says_finished(manifest: bytes) -> bool:
    try:
        document = orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and document.get("status") in ("complete", "partial")


async def _load_s3_checkpoint(
    destination: str,
    run_id: str,
    profile: str | None,
    *,
    header_only: bool,
    expected_bucket_owner: str | None,
) -> Checkpoint:
    """List the checkpoint entries under the prefix, pick the run, read its entries in order."""
    async with S3Reader(
        destination,
        profile=profile,
        expected_bucket_owner=expected_bucket_owner,
        policy=RESUME_POLICY,
    ) as reader:
        runs: dict[tuple[str, str], dict[int, str]] = {}
        async for relpath in reader.keys("checkpoints/"):
            match = _S3_ENTRY.fullmatch(relpath)
            if match is not None and _RUN_ID.fullmatch(match["run_id"]):
                run = (match["run_id"], match["partition"])
                runs.setdefault(run, {})[int(match["number"])] = relpath

        async def finished(run: tuple[str, str]) -> bool:
            rid, partition = run
            try:
                return _says_finished(await reader.read(f"manifests/{partition}/{rid}.json"))
            except FileNotFoundError:
                return False

        where = reader.dest
        if run_id == "latest":
            for run in sorted(runs, reverse=True):
                if not await finished(run):
                    break
            else:
                raise ConfigError("resume", f"no unfinished run to resume under {where}")
        else:
            matches = [run for run in runs if run[0] == run_id]
            if not matches:
                raise ConfigError("resume", f"run {run_id} has no checkpoint under {where}")
            run = min(matches)
            if await finished(run):
                raise ConfigError("resume", f"run {run_id} has finished: nothing to resume")
        numbered = runs[run]
        where = reader.url(f"checkpoints/{run[1]}/{run[0]}/")
        if 0 not in numbered:
            raise ConfigError("resume", f"{where} has no header entry (000000.json)")
        documents: dict[int, bytes] = {}
        refused: list[FleetscanError] = []
        limiter = anyio.CapacityLimiter(_S3_READS)

        async def fetch(number: int) -> None:
            async with limiter:
                try:
                    documents[number] = await reader.read(numbered[number])
                except FileNotFoundError:
                    return  # deleted since the listing: a gap, like any missing entry
                except FleetscanError as exc:
                    refused.append(exc)

        async with anyio.create_task_group() as tg:
            for number in [0] if header_only else numbered:
                tg.start_soon(fetch, number)
    if refused:
        raise refused[0]
    if 0 not in documents:
        raise ConfigError("resume", f"{where} has no header entry (000000.json)")
    order = sorted(documents)
    entries = [(reader.url(numbered[n]), documents[n]) for n in order]
    checkpoint = read_checkpoint(entries, where, run_id=run[0], partition=run[1])
    checkpoint.next_entry = max(numbered) + 1
    return checkpoint
