"""Reading a run back through its manifest: what audits and tests rely on.

Readers go through the manifest, never a directory listing: only the manifest says which files
belong to a run and that they are complete, and it carries their sizes and checksums.

The ``a*`` functions are the async readers, for a local directory and for ``s3://bucket/prefix/``
alike (same layout, same checks); the plain ones read a local directory synchronously.

Every async reader takes ``expected_bucket_owner``: with it, each request to S3 (listings,
manifests, record files) says which account must own the bucket, and S3 refuses it otherwise.
A verdict read from a bucket that was deleted and re-created by another account is what this
prevents; it is refused for a local directory (there is nothing to check).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.to_thread
import orjson

from .._config import check_bucket_owner
from .._exceptions import DataError
from .._records import DATASETS
from .._validate import Mismatch, checker
from ._common import MANIFEST_VERSIONS
from ._s3io import CHUNK, S3Reader

#: The longest line a record file may hold: a record is a few KiB at most (every text field is
#: bounded), so a longer line is not a record, and reading it would hold it all in memory.
MAX_RECORD_BYTES = 1 << 20


def find_manifest(dest: str | os.PathLike[str], run_id: str) -> Path:
    """The manifest of ``run_id`` under ``dest``, whatever its ``dt=`` partition."""
    pattern = os.path.join(glob.escape(os.fspath(dest)), "manifests", "dt=*", "")
    matches = sorted(glob.glob(pattern + glob.escape(f"{run_id}.json")))
    if not matches:
        raise FileNotFoundError(f"no manifest for run {run_id!r} under {dest} (run incomplete?)")
    if len(matches) > 1:
        raise ValueError(f"run {run_id!r} has several manifests under {dest}: {matches}")
    return Path(matches[0])


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a manifest file, refusing anything that is not a fleetscan manifest (DataError)."""
    return _parse_manifest(Path(path).read_bytes(), str(path))


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DataError(where, None, f"not valid JSON: {exc}") from None
    version = manifest.get("manifest_version") if isinstance(manifest, dict) else None
    if type(version) is not int or version not in MANIFEST_VERSIONS:
        versions = " or ".join(map(str, MANIFEST_VERSIONS))
        raise DataError(where, None, f"not a fleetscan manifest (version {versions})")
    if version == 1:
        # A version-1 manifest is a version-2 one of a run without shards.
        manifest = {**manifest, "shards": None}
    try:
        checker("manifest")(manifest)
    except Mismatch as exc:
        raise DataError(where, None, f"breaks the manifest schema: {exc}") from None
    checked: dict[str, Any] = manifest
    return checked


def latest_run(dest: str | os.PathLike[str]) -> str | None:
    """The id of the run under ``dest`` that started last (None: no run has finished there).

    Only runs with a manifest count: a run without one never finished, whatever it left behind.
    """
    newest: tuple[str, str] | None = None
    pattern = os.path.join(glob.escape(os.fspath(dest)), "manifests", "dt=*", "*.json")
    for path in glob.glob(pattern):
        try:
            manifest = read_manifest(path)
            key = (str(manifest["started_at"]), str(manifest["run_id"]))
        except (OSError, ValueError, KeyError):
            continue  # not a fleetscan manifest: someone else's file
        if newest is None or key > newest:
            newest = key
    return newest[1] if newest else None


def iter_records(
    dest: str | os.PathLike[str], run_id: str, dataset: str, *, verify: bool = True
) -> Iterator[dict[str, Any]]:
    """Every record of one dataset of a run, in the order it was written.

    Memory stays bounded (files are streamed). Each record is checked against its dataset's
    schema as it is read, and with ``verify`` each file's size, sha256 and record count against
    the manifest once the file has been read: :class:`DataError` naming the file (and the line),
    after the records before it have been yielded.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(dest)
    manifest = read_manifest(find_manifest(root, run_id))
    for entry in manifest["files"]:
        if entry["dataset"] != dataset:
            continue
        relpath = _safe_relpath(entry, run_id, dest)
        yield from _read_file(root.joinpath(*relpath.parts), entry, verify)


def _safe_relpath(entry: dict[str, Any], run_id: str, dest: object) -> PurePosixPath:
    relpath = PurePosixPath(entry["path"])
    if relpath.is_absolute() or ".." in relpath.parts or not relpath.parts:
        raise DataError(
            f"manifest of run {run_id!r}", None, f"lists a path outside {dest}: {relpath}"
        )
    return relpath


def _read_file(path: Path, entry: dict[str, Any], verify: bool) -> Iterator[dict[str, Any]]:
    parser = _RecordFile(entry, str(path))
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield from parser.feed(chunk)
    yield from parser.finish(verify=verify)


class _RecordFile:
    """One record file's bytes in, its records out: each line parsed and checked against its
    dataset's schema (a DataError naming the file and line otherwise), then the whole file
    against its manifest entry (size, sha256, record count).

    Readers validate instead of trusting: the file may be torn, tampered or wrong-typed, and
    a record that breaks the schema would otherwise fail far away, in code that trusted it.
    """

    def __init__(self, entry: dict[str, Any], where: str) -> None:
        self.entry = entry
        self.where = where
        self.check = checker(entry["dataset"])
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if where.endswith(".gz") else None
        self.sha = hashlib.sha256()
        self.stored = 0
        self.records = 0
        self.tail = b""

    def feed(self, raw: bytes) -> list[dict[str, Any]]:
        self.sha.update(raw)
        self.stored += len(raw)
        return self._lines(self._inflate(raw) if self.inflate is not None else raw)

    def finish(self, *, verify: bool = True) -> list[dict[str, Any]]:
        """The last records, then the checks of the file as a whole."""
        records = self._lines(self._inflate(b"")) if self.inflate is not None else []
        if self.tail:
            raise DataError(self.where, self.records + 1, "the file ends in the middle of a record")
        if verify:
            found = {"bytes": self.stored, "sha256": self.sha.hexdigest(), "records": self.records}
            for key, value in found.items():
                if self.entry[key] != value:
                    problem = f"{key} is {value}, the manifest says {self.entry[key]}"
                    raise DataError(self.where, None, problem)
        return records

    def _inflate(self, raw: bytes) -> bytes:
        assert self.inflate is not None
        try:
            return self.inflate.decompress(raw) if raw else self.inflate.flush()
        except zlib.error as exc:
            raise DataError(self.where, None, f"not a valid gzip file: {exc}") from None

    def _lines(self, chunk: bytes) -> list[dict[str, Any]]:
        lines = (self.tail + chunk).split(b"\n")
        self.tail = lines.pop()
        if len(self.tail) > MAX_RECORD_BYTES:
            problem = f"a record longer than {MAX_RECORD_BYTES} bytes: not a fleetscan record file"
            raise DataError(self.where, self.records + 1, problem)
        return [self._record(line) for line in lines]

    def _record(self, line: bytes) -> dict[str, Any]:
        self.records += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DataError(self.where, self.records, f"not a JSON record: {exc}") from None
        try:
            self.check(record)
        except Mismatch as exc:
            problem = f"breaks the {self.entry['dataset']} schema: {exc}"
            raise DataError(self.where, self.records, problem) from None
        result: dict[str, Any] = record
        return result


# -- async readers: a local directory or s3://bucket/prefix/ ---------------------------------

MANIFEST_KEY = re.compile(r"manifests/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/(?P<run_id>[^/]+)\.json")
# The run ids fleetscan makes (20261127T205709Z-3f9a1c) name their start date: the manifest's key.
_RUN_DATE = re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})T[0-9]{6}Z-")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Manifests fetched at once when listing the runs under an S3 destination.
_MANIFEST_READS = 8


def _is_s3(dest: str) -> bool:
    return str(dest).startswith("s3://")


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r} is not a fleetscan run id")


class _S3RunReader(S3Reader):
    """An S3 destination's objects, and its runs' manifests."""

    @classmethod
    def checked(cls, dest: str, expected_bucket_owner: str | None) -> _S3RunReader:
        """A reader of ``dest`` whose every request carries ``expected_bucket_owner`` (checked:
        12 digits, else ConfigError)."""
        owner = check_bucket_owner(expected_bucket_owner, dest, "expected_bucket_owner")
        return cls(dest, expected_bucket_owner=owner)

    async def manifest_keys(self) -> AsyncIterator[tuple[str, str]]:
        """(run id, relpath) of every manifest under the destination, from a listing."""
        async for relpath in self.keys("manifests/"):
            match = MANIFEST_KEY.fullmatch(relpath)
            if match is not None:
                yield match["run_id"], relpath

    async def find_manifest(self, run_id: str) -> str:
        """The relpath of ``run_id``'s manifest: named by the run id's date when fleetscan chose
        the id (one GET, no listing permission needed), else found by listing."""
        _check_run_id(run_id)
        date = _RUN_DATE.match(run_id)
        if date is not None:
            guess = f"manifests/dt={date['y']}-{date['m']}-{date['d']}/{run_id}.json"
            if await self.exists(guess):
                return guess
        found = [relpath async for rid, relpath in self.manifest_keys() if rid == run_id]
        if not found:
            raise FileNotFoundError(
                f"no manifest for run {run_id!r} under {self.dest} (run incomplete?)"
            )
        if len(found) > 1:
            raise ValueError(f"run {run_id!r} has several manifests under {self.dest}: {found}")
        return found[0]

    async def manifest(self, run_id: str) -> dict[str, Any]:
        relpath = await self.find_manifest(run_id)
        return _parse_manifest(await self.read(relpath), self.url(relpath))


async def _file_chunks(path: Path) -> AsyncGenerator[bytes, None]:
    async with await anyio.open_file(path, "rb") as handle:
        while chunk := await handle.read(CHUNK):
            yield chunk


async def _parse_records(
    chunks: AsyncGenerator[bytes, None], entry: dict[str, Any], where: str
) -> AsyncGenerator[dict[str, Any], None]:
    """The records of one file, then the file checked against the manifest (DataError)."""
    parser = _RecordFile(entry, where)
    async with aclosing(chunks):
        async for raw in chunks:
            for record in parser.feed(raw):
                yield record
    for record in parser.finish():
        yield record


async def aread_manifest(
    dest: str, run_id: str, *, expected_bucket_owner: str | None = None
) -> dict[str, Any]:
    """The manifest of ``run_id`` under ``dest`` (a directory or ``s3://bucket/prefix/``).

    Raises FileNotFoundError when the run has no manifest (it never finished), DataError (a
    ValueError) when the file is not a valid fleetscan manifest, ValueError for a bad run id,
    :class:`FleetscanError` when S3 refuses the read (as it does every read when
    ``expected_bucket_owner`` is not the bucket's owner), ConfigError for a bad owner.
    """
    if _is_s3(dest):
        async with _S3RunReader.checked(dest, expected_bucket_owner) as reader:
            return await reader.manifest(run_id)
    check_bucket_owner(expected_bucket_owner, dest, "expected_bucket_owner")
    _check_run_id(run_id)
    return await anyio.to_thread.run_sync(lambda: read_manifest(find_manifest(dest, run_id)))


async def aiter_records(
    dest: str, run_id: str, dataset: str, *, expected_bucket_owner: str | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Every record of one dataset of a run, in the order written, local or S3.

    Files are streamed (memory stays bounded) and checked as :func:`iter_records` does: each
    record against its schema, each file against the manifest; DataError naming the file and
    line, after the records before it have been yielded. On S3, the manifest and every file
    are read with ``expected_bucket_owner`` when given.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if _is_s3(dest):
        async with _S3RunReader.checked(dest, expected_bucket_owner) as reader:
            manifest = await reader.manifest(run_id)
            for entry in manifest["files"]:
                if entry["dataset"] != dataset:
                    continue
                relpath = str(_safe_relpath(entry, run_id, dest))
                records = _parse_records(reader.chunks(relpath), entry, reader.url(relpath))
                async with aclosing(records):
                    async for record in records:
                        yield record
        return
    manifest = await aread_manifest(dest, run_id, expected_bucket_owner=expected_bucket_owner)
    root = Path(dest)
    for entry in manifest["files"]:
        if entry["dataset"] != dataset:
            continue
        path = root.joinpath(*_safe_relpath(entry, run_id, dest).parts)
        records = _parse_records(_file_chunks(path), entry, str(path))
        async with aclosing(records):
            async for record in records:
                yield record


def _run_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": str(manifest["run_id"]),
        "status": str(manifest["status"]),
        "started_at": str(manifest["started_at"]),
    }


def _local_runs(dest: str) -> list[dict[str, Any]]:
    runs = []
    pattern = os.path.join(glob.escape(os.fspath(dest)), "manifests", "dt=*", "*.json")
    for path in glob.glob(pattern):
        try:
            runs.append(_run_summary(read_manifest(path)))
        except (OSError, ValueError, KeyError):
            continue  # not a fleetscan manifest: someone else's file
    return runs


async def _s3_runs(dest: str, expected_bucket_owner: str | None) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    async with _S3RunReader.checked(dest, expected_bucket_owner) as reader:
        relpaths = [relpath async for _, relpath in reader.manifest_keys()]
        limiter = anyio.CapacityLimiter(_MANIFEST_READS)

        async def load(relpath: str) -> None:
            async with limiter:
                try:
                    data = await reader.read(relpath)
                    runs.append(_run_summary(_parse_manifest(data, reader.url(relpath))))
                except (FileNotFoundError, ValueError, KeyError):
                    return  # deleted meanwhile, or not a fleetscan manifest

        async with anyio.create_task_group() as tg:
            for relpath in relpaths:
                tg.start_soon(load, relpath)
    return runs


async def alist_runs(
    dest: str, *, expected_bucket_owner: str | None = None
) -> list[dict[str, Any]]:
    """Every run under ``dest`` that has a manifest, oldest first: ``run_id``, ``status``
    (complete, partial, failed, interrupted) and ``started_at`` (UTC RFC 3339).

    A run without a manifest never finished and is not listed, whatever it left behind. On S3,
    the listing and every manifest are read with ``expected_bucket_owner`` when given.
    """
    if _is_s3(dest):
        runs = await _s3_runs(dest, expected_bucket_owner)
    else:
        check_bucket_owner(expected_bucket_owner, dest, "expected_bucket_owner")
        runs = await anyio.to_thread.run_sync(_local_runs, dest)
    return sorted(runs, key=lambda run: (run["started_at"], run["run_id"]))


async def alatest_run(
    dest: str, *, complete_only: bool = True, expected_bucket_owner: str | None = None
) -> str | None:
    """The id of the run under ``dest`` that started last (None: there is none).

    With ``complete_only`` (the default) only runs whose manifest says ``complete`` count;
    otherwise any run with a manifest (partial, failed and interrupted ones too).
    """
    runs = await alist_runs(dest, expected_bucket_owner=expected_bucket_owner)
    if complete_only:
        runs = [run for run in runs if run["status"] == "complete"]
    return str(runs[-1]["run_id"]) if runs else None
