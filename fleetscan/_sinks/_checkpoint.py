"""The checkpoint: which units of a run are durably written, and in which files.

Exactly-once across an interruption rests on three rules:

1. A unit's records reach a sink together (:class:`fleetscan._scan.UnitBatch`), never half.
2. A commit first makes every open file durable (fsync, rename, fsync the directory), *then*
   appends one checkpoint line naming those files and the units now wholly inside them.
3. A resumed run keeps only files a checkpoint line names, deletes every other file of the run
   (renamed but not yet checkpointed, or still ``.partial``), and skips the checkpointed units.

A SIGKILL at any instant therefore leaves either a unit fully committed (kept, skipped) or not
(its records deleted, the unit scanned again). The checkpoint is NDJSON, appended and fsynced;
a torn last line (killed mid-append) is ignored, which rule 2 makes safe.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .._exceptions import ConfigError
from .._records import DATASETS, Dataset, format_time
from ._common import Compression, FileEntry, RunInfo

CHECKPOINT_VERSION = 1

UnitKey = tuple[str, str]


def checkpoint_relpath(run: RunInfo) -> str:
    return f"checkpoints/{run.partition}/{run.run_id}.ndjson"


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
    """Read a checkpoint's lines; a torn (unparseable) *last* line is a kill mid-append."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise ConfigError("resume", f"{where} is empty: nothing of that run can be resumed")
    try:
        header = orjson.loads(lines[0])
        checkpoint = Checkpoint(
            run_id=str(header["run_id"]),
            started_at=dt.datetime.fromisoformat(str(header["started_at"]).replace("Z", "+00:00")),
            compression=header["compression"],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError("resume", f"{where} is not a fleetscan checkpoint ({exc})") from None
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            if number == len(lines):
                break  # torn by a kill while appending: that commit never happened
            raise ConfigError("resume", f"{where}: line {number} is corrupt") from None
        if entry.get("session_start"):
            checkpoint.sessions += 1
            continue
        for f in entry["files"]:
            dataset: Dataset = f["dataset"]
            checkpoint.files.append(
                FileEntry(dataset, f["path"], f["records"], f["bytes"], f["sha256"])
            )
        checkpoint.units.update((str(a), str(r)) for a, r in entry["units"])
        checkpoint.next_seq.update(entry["next_seq"])
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
            name = path.name
            if (name.startswith(run.run_id + "-") or name.startswith("." + run.run_id + "-")) and (
                path not in kept
            ):
                strays.append(path)
    return strays


def append_durably(path: Path, data: bytes, mode: int) -> None:
    """Append and fsync: a commit is only a commit once it is on disk."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(destination: str, run_id: str) -> Checkpoint:
    """The checkpoint of ``run_id`` (or of the newest unfinished run, for ``latest``)."""
    root = Path(destination)
    if destination.startswith("s3://") or destination == "-":
        raise ConfigError("resume", "resuming needs the local directory the run was written to")
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
    try:
        return orjson.loads(manifest.read_bytes()).get("status") in ("complete", "partial")
    except orjson.JSONDecodeError:
        return False
