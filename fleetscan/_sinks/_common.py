"""What every destination shares: the run's identity, the layout, the encoding and the manifest.

The layout and the manifest are the contract with readers (Athena, DuckDB, ``fleetscan audit``),
so they are defined once here and every destination (local directory, stdout, S3) builds on them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from .._exceptions import ConfigError, FleetscanError
from .._records import DATASETS, SCHEMA_VERSION, Dataset, Record, format_time

Compression = Literal["none", "gzip"]
#: What records are counted by for the manifest's ``organizations`` section: (organization key,
#: dataset). The key is an ``[[organizations]]`` entry's name, else the ``o-…`` id; None for an
#: account of a static list.
OrganizationDataset = tuple[str | None, str]

#: 2 added the ``organizations`` section and the ``shards`` section of a run written by several
#: shards; readers accept every version of MANIFEST_VERSIONS (a version-1 manifest is a
#: version-2 one without those sections).
MANIFEST_VERSION = 2
MANIFEST_VERSIONS: Final[tuple[int, ...]] = (1, 2)
#: Sections a run's summary carries that the manifest puts at its top level.
MANIFEST_SECTIONS: Final[tuple[str, ...]] = ("organizations",)
#: Records are gathered up to about this many bytes per dataset before a write: few, large
#: writes keep the event loop free, and memory stays bounded whatever the record count.
BUFFER_BYTES = 1 << 20
#: Athena reads files of this size efficiently (and S3 multipart parts add up to it easily).
DEFAULT_MAX_OBJECT_BYTES = 128 << 20
RUN_STATUSES = ("complete", "partial", "failed", "interrupted")
ABORT_STATUSES = ("failed", "interrupted")
#: gzip's own default: the ratio users expect from ``.gz`` files.
GZIP_LEVEL = 6

# The run id becomes part of every file name, so it must not be able to name another path.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class RunInfo:
    """The identity of one scan, stamped on its file names and its manifest."""

    run_id: str
    #: Timezone-aware; its UTC date is the ``dt=`` partition of every file of the run.
    started_at: dt.datetime
    #: fleetscan's version, recorded in the manifest.
    version: str

    def __post_init__(self) -> None:
        if not _RUN_ID.fullmatch(self.run_id):
            raise ConfigError(
                "run_id",
                f"{self.run_id!r} cannot be used in file names: use 1-128 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit",
            )
        if self.started_at.tzinfo is None:
            raise ValueError("RunInfo.started_at must be timezone-aware")

    @property
    def partition(self) -> str:
        """The ``dt=YYYY-MM-DD`` partition (UTC start date): one run never spans two."""
        return "dt=" + self.started_at.astimezone(dt.UTC).strftime("%Y-%m-%d")


def object_relpath(dataset: Dataset, run: RunInfo, seq: int, compress: Compression) -> str:
    """Where the ``seq``-th file of a dataset goes, relative to the destination."""
    suffix = ".ndjson.gz" if compress == "gzip" else ".ndjson"
    return f"{dataset}/{run.partition}/{run.run_id}-{seq:05d}{suffix}"


def manifest_relpath(run: RunInfo) -> str:
    return f"manifests/{run.partition}/{run.run_id}.json"


def manifest_location(manifest: Mapping[str, Any]) -> str:
    """Where a written manifest is (a manifest does not name itself): its destination, then
    :func:`manifest_relpath` of its run."""
    started = dt.datetime.fromisoformat(str(manifest["started_at"]).replace("Z", "+00:00"))
    run = RunInfo(run_id=str(manifest["run_id"]), started_at=started, version="")
    return f"{str(manifest['destination']).rstrip('/')}/{manifest_relpath(run)}"


_Current = TypeVar("_Current")


class Stream(Generic[_Current]):
    """One dataset of a destination: lines buffered for its current file (local) or object (S3),
    and that file or object once started.

    Lines are copied into one buffer as they are encoded rather than kept as a list: orjson
    returns each line in an allocation of about 8 KiB, so a list of 1,750 lines (a 1 MiB buffer)
    held about 14 MiB of memory per dataset (measured: 20,000 lines, 155 MB of RSS).
    """

    __slots__ = (
        "buffer",
        "buffered_records",
        "current",
        "dataset",
        "failure",
        "object_bytes",
        "seq",
    )

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.seq = 0
        self.buffer = bytearray()
        self.buffered_records = 0
        #: Uncompressed bytes of the current file, buffered lines included (0: no current file).
        self.object_bytes = 0
        self.current: _Current | None = None
        #: Set once a write failed: the current file is unusable and is dropped on abort.
        self.failure: FleetscanError | None = None


class Sink(Protocol):
    """A destination for one run's records.

    ``write`` is called from a single writer task; ``finish`` or ``abort`` is called once at the
    end. Only the manifest, written last, marks a run as complete.
    """

    async def write(self, record: Record) -> None: ...

    def unit_done(self, key: tuple[str, ...], records: Mapping[OrganizationDataset, int]) -> None:
        """All records of unit ``key`` (account, region) have been written; ``records`` counts
        them per (organization key, dataset), for a resumed run's manifest."""

    async def commit(self) -> None:
        """Make everything written durable and checkpoint the units it completes."""

    async def finish(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]: ...

    async def abort(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]: ...


def check_status(status: str, allowed: tuple[str, ...] = RUN_STATUSES) -> None:
    if status not in allowed:
        raise ValueError(f"run status must be one of {', '.join(allowed)}, not {status!r}")


class Encoder:
    """Turns NDJSON lines into the bytes stored for one file, and counts what the manifest reports.

    gzip goes through zlib directly: a streaming compressor with bounded memory, and a header
    without timestamp or file name, so the same records always give the same bytes.
    """

    __slots__ = ("_sha", "_zlib", "raw_bytes", "records", "stored_bytes")

    def __init__(self, compress: Compression) -> None:
        self._zlib = (
            zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            if compress == "gzip"
            else None
        )
        self._sha = hashlib.sha256()
        self.records = 0
        self.raw_bytes = 0
        self.stored_bytes = 0

    def encode(self, stream: Stream[Any]) -> bytes | bytearray:
        """Take the stream's buffered lines (the stream's buffer starts empty again)."""
        data: bytes | bytearray = stream.buffer
        self.records += stream.buffered_records
        self.raw_bytes += len(data)
        stream.buffer, stream.buffered_records = bytearray(), 0
        if self._zlib is not None:
            data = self._zlib.compress(data)
        return self._stored(data)

    def finish(self) -> bytes | bytearray:
        """The last bytes of the file (the gzip trailer); the encoder is spent afterwards."""
        return self._stored(self._zlib.flush() if self._zlib is not None else b"")

    def _stored(self, data: bytes | bytearray) -> bytes | bytearray:
        self._sha.update(data)
        self.stored_bytes += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One complete file of a run, as the manifest lists it."""

    dataset: Dataset
    #: Relative to the destination, ``/``-separated.
    path: str
    records: int
    #: As stored (after compression).
    bytes: int
    #: Of the stored bytes.
    sha256: str

    def as_json(self) -> dict[str, Any]:
        """The file as the manifest and the checkpoint name it."""
        return {
            "dataset": self.dataset,
            "path": self.path,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


def build_manifest(
    *,
    run: RunInfo,
    status: str,
    destination: str,
    compression: Compression,
    summary: Mapping[str, Any],
    records: Mapping[Dataset, int],
    files: Iterable[FileEntry],
    shards: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    order = {name: index for index, name in enumerate(DATASETS)}
    listed = sorted(files, key=lambda f: (order[f.dataset], f.path))
    return {
        "manifest_version": MANIFEST_VERSION,
        "run_id": run.run_id,
        "status": status,
        "started_at": format_time(run.started_at),
        "ended_at": format_time(dt.datetime.now(dt.UTC)),
        "fleetscan_version": run.version,
        "schema_version": SCHEMA_VERSION,
        "destination": destination,
        "compression": compression,
        "records": {name: records.get(name, 0) for name in DATASETS},
        "summary": {k: v for k, v in summary.items() if k not in MANIFEST_SECTIONS},
        **{k: summary[k] for k in MANIFEST_SECTIONS if k in summary},
        "files": [f.as_json() for f in listed],
        # A run written by several shards: how it was split (see fleetscan._shards).
        "shards": dict(shards) if shards is not None else None,
    }
