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

One format, two containers. A local checkpoint is one NDJSON file, appended and fsynced; a torn
last line (killed mid-append) is ignored, which rule 2 makes safe. S3 has no append, so each
entry is its own object, ``checkpoints/dt=YYYY-MM-DD/<run_id>/NNNNNN.json`` (``000000`` the
header), written with one atomic PutObject: an object that exists is whole. Either way the
entries are the same JSON documents, read by :func:`read_checkpoint` in order. A missing S3
entry (a gap) is harmless: an entry names only files closed since the entry before it and only
units whose records all lie in those files, so without it both its files (deleted as strays)
and its units (scanned again) are forgotten together.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from .._exceptions import ConfigError, FleetscanError
from .._records import DATASETS, Dataset, format_time
from ._common import Compression, FileEntry, RunInfo
from ._s3io import S3Reader

CHECKPOINT_VERSION = 1

#: (account, region, gateway ARN), with "*" for "all of them": see fleetscan._scan.UnitKey.
UnitKey = tuple[str, ...]


#: A run's data file name, the temporary local name included (``.NAME.partial``).
_RUN_FILE = r"\.?{run_id}-[0-9]{{5,}}\.ndjson(?:\.gz)?(?:\.partial)?"
#: An S3 checkpoint entry: ``checkpoints/dt=YYYY-MM-DD/<run_id>/NNNNNN.json``.
_S3_ENTRY = re.compile(
    r"checkpoints/(?P<partition>dt=[0-9]{4}-[0-9]{2}-[0-9]{2})/(?P<run_id>[^/]+)/"
    r"(?P<number>[0-9]{6,})\.json"
)
#: Checkpoint entries fetched at once when an S3 run is resumed.
_S3_READS = 8


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


@dataclass
class Checkpoint:
    """What the previous sessions of a run made durable."""

    run_id: str
    started_at: dt.datetime
    compression: Compression
    files: list[FileEntry] = field(default_factory=list)
    units: set[UnitKey] = field(default_factory=set)
    #: Next file number per dataset, so a resumed session never reuses a committed name.
    next_seq: dict[str, int] = field(default_factory=dict)
    sessions: int = 1
    #: S3: the number of the next checkpoint entry (one past the highest found).
    next_entry: int = 0


def header_line(run: RunInfo, compression: Compression) -> bytes:
    return orjson.dumps(
        {
            "checkpoint_version": CHECKPOINT_VERSION,
            "run_id": run.run_id,
            "started_at": format_time(run.started_at),
            "compression": compression,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def commit_line(
    files: Iterable[FileEntry], units: Iterable[UnitKey], next_seq: dict[str, int]
) -> bytes:
    return orjson.dumps(
        {
            "files": [
                {
                    "dataset": f.dataset,
                    "path": f.path,
                    "records": f.records,
                    "bytes": f.bytes,
                    "sha256": f.sha256,
                }
                for f in files
            ],
            "units": [list(u) for u in units],
            "next_seq": next_seq,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def parse_checkpoint(data: bytes, where: str) -> Checkpoint:
    """Read a local checkpoint file; a torn (unparseable) *last* line is a kill mid-append."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    entries = [(f"{where}: line {number}", line) for number, line in enumerate(lines, start=1)]
    return read_checkpoint(entries, where, torn_tail=True)


def read_checkpoint(
    entries: Sequence[tuple[str, bytes]], where: str, *, torn_tail: bool = False
) -> Checkpoint:
    """Merge a checkpoint's entries, in order: the header, then commits and session starts.

    ``entries`` are (name for messages, JSON document). With ``torn_tail``, an unparseable last
    entry is a commit that never happened (killed mid-append); anything else unparseable is
    corruption, refused.
    """
    if not entries:
        raise ConfigError("resume", f"{where} is empty: nothing of that run can be resumed")
    try:
        header = orjson.loads(entries[0][1])
        checkpoint = Checkpoint(
            run_id=str(header["run_id"]),
            started_at=dt.datetime.fromisoformat(str(header["started_at"]).replace("Z", "+00:00")),
            compression=header["compression"],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError("resume", f"{where} is not a fleetscan checkpoint ({exc})") from None
    for index, (name, document) in enumerate(entries[1:], start=2):
        try:
            entry: dict[str, Any] = orjson.loads(document)
        except orjson.JSONDecodeError:
            if torn_tail and index == len(entries):
                break  # torn by a kill while appending: that commit never happened
            raise ConfigError("resume", f"{name} is corrupt") from None
        if entry.get("session_start"):
            checkpoint.sessions += 1
            continue
        for f in entry["files"]:
            dataset: Dataset = f["dataset"]
            checkpoint.files.append(
                FileEntry(dataset, f["path"], f["records"], f["bytes"], f["sha256"])
            )
        checkpoint.units.update(tuple(str(part) for part in unit) for unit in entry["units"])
        for name_, seq in entry["next_seq"].items():
            checkpoint.next_seq[name_] = max(int(seq), checkpoint.next_seq.get(name_, 0))
    return checkpoint


def session_line() -> bytes:
    return orjson.dumps(
        {"session_start": format_time(dt.datetime.now(dt.UTC))}, option=orjson.OPT_APPEND_NEWLINE
    )


def stray_files(root: Path, run: RunInfo, keep: Iterable[FileEntry]) -> list[Path]:
    """Files of this run on disk that no checkpoint line names (to delete before resuming)."""
    kept = {root / f.path for f in keep}
    strays = []
    for dataset in DATASETS:
        directory = root / dataset / run.partition
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if is_run_file(path.name, run.run_id) and path not in kept:
                strays.append(path)
    return strays


def append_durably(path: Path, data: bytes, mode: int) -> None:
    """Append and fsync: a commit is only a commit once it is on disk."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        os.fchmod(fd, mode)  # exactly the mode asked for, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


async def load_checkpoint(
    destination: str, run_id: str, *, profile: str | None = None
) -> Checkpoint:
    """The checkpoint of ``run_id`` (or of the newest unfinished run, for ``latest``) under a
    local directory or ``s3://bucket/prefix/`` (read with ``profile``'s credentials).

    A run is finished, and cannot be resumed, once its manifest says ``complete`` or
    ``partial``; a ``failed`` or ``interrupted`` one (or none at all) can be.
    """
    if destination == "-":
        raise ConfigError("resume", "a run written to stdout keeps no checkpoint")
    if destination.startswith("s3://"):
        return await _load_s3_checkpoint(destination, run_id, profile)
    return await anyio.to_thread.run_sync(_load_local_checkpoint, destination, run_id)


def _load_local_checkpoint(destination: str, run_id: str) -> Checkpoint:
    root = Path(destination)
    candidates = sorted(root.glob("checkpoints/dt=*/*.ndjson"), key=lambda p: p.stem)
    if run_id == "latest":
        unfinished = [p for p in candidates if not _finished(root, p)]
        if not unfinished:
            raise ConfigError("resume", f"no unfinished run to resume under {root}")
        path = unfinished[-1]
    else:
        matches = [p for p in candidates if p.stem == run_id]
        if not matches:
            raise ConfigError("resume", f"run {run_id} has no checkpoint under {root}")
        path = matches[0]
        if _finished(root, path):
            raise ConfigError("resume", f"run {run_id} has finished: nothing to resume")
    return parse_checkpoint(path.read_bytes(), str(path))


def _finished(root: Path, checkpoint: Path) -> bool:
    manifest = root / "manifests" / checkpoint.parent.name / f"{checkpoint.stem}.json"
    if not manifest.is_file():
        return False
    return _says_finished(manifest.read_bytes())


def _says_finished(manifest: bytes) -> bool:
    try:
        document = orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and document.get("status") in ("complete", "partial")


async def _load_s3_checkpoint(destination: str, run_id: str, profile: str | None) -> Checkpoint:
    """List the checkpoint entries under the prefix, pick the run, read its entries in order."""
    async with S3Reader(destination, profile=profile) as reader:
        runs: dict[tuple[str, str], dict[int, str]] = {}
        async for relpath in reader.keys("checkpoints/"):
            match = _S3_ENTRY.fullmatch(relpath)
            if match is not None:
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
            for number in numbered:
                tg.start_soon(fetch, number)
    if refused:
        raise refused[0]
    if 0 not in documents:
        raise ConfigError("resume", f"{where} has no header entry (000000.json)")
    order = sorted(documents)
    entries = [(reader.url(numbered[n]), documents[n]) for n in order]
    checkpoint = read_checkpoint(entries, where)
    checkpoint.next_entry = max(numbered) + 1
    return checkpoint
