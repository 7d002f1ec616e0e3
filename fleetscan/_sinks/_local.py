"""A local directory: the same layout and guarantees as S3, with files instead of objects.

A file is written under a hidden temporary name (``.NAME.partial``, which Athena, Hive and
DuckDB's ``*.ndjson`` globs all skip), fsynced, and renamed into place only once complete, so a
reader never sees half a file under its final name. Blocking I/O, gzip and hashing run in worker
threads; each thread call does all of its own bookkeeping, so a cancellation that lands while one
runs (anyio lets the thread finish) never leaves the sink's state behind the disk's.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from .._exceptions import ConfigError, SinkError
from .._records import DATASETS, Dataset, Record
from ._checkpoint import (
    Checkpoint,
    UnitKey,
    append_durably,
    checkpoint_relpath,
    commit_line,
    header_line,
    session_line,
    stray_files,
)
from ._common import (
    ABORT_STATUSES,
    BUFFER_BYTES,
    Compression,
    Encoder,
    FileEntry,
    RunInfo,
    Stream,
    build_manifest,
    check_status,
    manifest_relpath,
    object_relpath,
)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _os_problem(action: str, path: Path, exc: OSError) -> SinkError:
    reason = exc.strerror or exc.__class__.__name__
    return SinkError(f"cannot {action} {path}: {reason} (errno {exc.errno})")


def _directory_mode(file_mode: int) -> int:
    """Directories readable by whoever may read the files (0600 -> 0700, 0644 -> 0755)."""
    return file_mode | ((file_mode & 0o444) >> 2) | 0o700


def _make_directories(path: Path, mode: int) -> None:
    """Like ``mkdir -p``, but every directory created gets exactly ``mode``, whatever the umask."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by someone else: theirs to set
        directory.chmod(mode)


def _fsync_directory(path: Path) -> None:
    """Make a rename durable: without it a crash can forget that the file was renamed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _partial(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def _publish(fd: int, partial: Path, final: Path) -> None:
    """Close a complete file and rename it into place, durably (data first, then the rename)."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, final)
    _fsync_directory(final.parent)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _File:
    """A file being written under its temporary name."""

    __slots__ = ("encoder", "fd", "final", "partial", "relpath")

    def __init__(self, relpath: str, final: Path, partial: Path, fd: int, encoder: Encoder) -> None:
        self.relpath = relpath
        self.final = final
        self.partial = partial
        self.fd = fd
        self.encoder = encoder


_Stream = Stream[_File]


class LocalSink:
    """Writes a run into a local directory (see :func:`fleetscan._sinks.open_sink`)."""

    def __init__(
        self,
        root: Path,
        run: RunInfo,
        *,
        compress: Compression,
        max_object_bytes: int,
        file_mode: int,
        buffer_bytes: int = BUFFER_BYTES,
        resume: Checkpoint | None = None,
    ) -> None:
        self._root = root
        self._run = run
        self._compress: Compression = compress
        self._max_object_bytes = max_object_bytes
        self._file_mode = file_mode
        self._dir_mode = _directory_mode(file_mode)
        self._buffer_bytes = buffer_bytes
        self._streams = {name: _Stream(name) for name in DATASETS}
        self._files: list[FileEntry] = []
        self._closed = False
        self._manifest: dict[str, Any] | None = None
        self._manifest_path = root / manifest_relpath(run)
        self._checkpoint_path = root / checkpoint_relpath(run)
        #: Units whose records are written but not yet covered by a checkpoint line.
        self._pending_units: list[UnitKey] = []
        #: self._files[:_checkpointed] are named by the checkpoint.
        self._checkpointed = 0
        #: Records were written since the last unit_done(): the open files hold part of a unit.
        self._open_batch = False
        self._resume = resume
        self._probe()
        self._start_checkpoint()

    # -- the hot path ------------------------------------------------------------------------

    async def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("write() after finish() or abort()")
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        stream = self._streams[record.dataset]
        size = len(line)
        self._open_batch = True
        if stream.object_bytes and stream.object_bytes + size > self._max_object_bytes:
            await anyio.to_thread.run_sync(self._close_file, stream)
        stream.buffer += line
        stream.buffered_records += 1
        stream.object_bytes += size
        if len(stream.buffer) >= self._buffer_bytes:
            await anyio.to_thread.run_sync(self._flush, stream)

    def unit_done(self, key: UnitKey) -> None:
        """Every record of ``key`` has been passed to :meth:`write`."""
        self._pending_units.append(key)
        self._open_batch = False

    async def commit(self) -> None:
        """Make every record written so far durable, and checkpoint the units it completes."""
        if self._closed:
            raise RuntimeError("commit() after finish() or abort()")
        for stream in self._streams.values():
            if stream.object_bytes:
                await anyio.to_thread.run_sync(self._close_file, stream)
        await anyio.to_thread.run_sync(self._append_checkpoint)

    # -- the end of a run --------------------------------------------------------------------

    async def finish(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Complete every file, then write the manifest; the manifest's presence marks the end.

        If that fails (or is cancelled) half-way, the run is aborted before the error propagates,
        so the destination never holds finished data files without a manifest saying why.
        """
        check_status(status)
        if self._manifest is not None:
            return self._manifest
        self._closed = True
        try:
            for stream in self._streams.values():
                if stream.object_bytes:
                    await anyio.to_thread.run_sync(self._close_file, stream)
            await anyio.to_thread.run_sync(self._append_checkpoint)
            return await anyio.to_thread.run_sync(self._write_manifest, status, summary)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
            with contextlib.suppress(SinkError):  # the first error is the one to report
                await self.abort("interrupted" if cancelled else "failed", summary)
            raise

    async def abort(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Keep every file that can still be completed, drop the rest, and say why in the manifest.

        Shielded: the caller is usually being cancelled, and a run without a manifest would leave
        readers guessing. Raises :class:`SinkError` only when the manifest itself cannot be
        written.
        """
        check_status(status, ABORT_STATUSES)
        if self._manifest is not None:
            return self._manifest
        self._closed = True
        with anyio.CancelScope(shield=True):
            for stream in self._streams.values():
                if stream.failure is None and stream.object_bytes:
                    # A failure is recorded in stream.failure, and handled below.
                    with contextlib.suppress(SinkError):
                        await anyio.to_thread.run_sync(self._close_file, stream)
            if any(stream.failure is not None for stream in self._streams.values()):
                # Some pending unit lost records: keep only what a checkpoint covers, so a
                # resumed run rescans those units without writing anything twice.
                await anyio.to_thread.run_sync(self._drop_uncheckpointed)
            elif not self._open_batch:
                # (With a unit cut half-way, the writer cancelled mid-batch, the files stay and
                # the manifest lists them, but no checkpoint names them: a resumed run deletes
                # them and scans their units again.)
                with contextlib.suppress(SinkError, OSError):
                    await anyio.to_thread.run_sync(self._append_checkpoint)
            manifest = await anyio.to_thread.run_sync(self._write_manifest, status, summary)
        return manifest

    # -- files (in worker threads, but for the probe) -----------------------------------------

    def _probe(self) -> None:
        """Fail before the scan spends a single call if the manifest can never be written."""
        directory = self._manifest_path.parent
        try:
            _make_directories(directory, self._dir_mode)
        except OSError as exc:
            path = Path(exc.filename) if exc.filename else directory
            raise _os_problem("create directory", path, exc) from exc
        if self._manifest_path.exists() and self._resume is None:
            raise ConfigError(
                "run_id",
                f"run {self._run.run_id} already has a manifest at {self._manifest_path}; "
                "choose another run id",
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".fleetscan-probe-", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise _os_problem("write to directory", directory, exc) from exc

    def _start_checkpoint(self) -> None:
        """A new run writes the checkpoint's header; a resumed one drops what was not committed."""
        try:
            _make_directories(self._checkpoint_path.parent, self._dir_mode)
            if self._resume is None:
                append_durably(
                    self._checkpoint_path, header_line(self._run, self._compress), self._file_mode
                )
                return
            for path in stray_files(self._root, self._run, self._resume.files):
                path.unlink(missing_ok=True)
            self._files = list(self._resume.files)
            self._checkpointed = len(self._files)
            for name, stream in self._streams.items():
                stream.seq = self._resume.next_seq.get(name, 0)
            append_durably(self._checkpoint_path, session_line(), self._file_mode)
        except OSError as exc:
            raise _os_problem("write the checkpoint", self._checkpoint_path, exc) from exc

    def _append_checkpoint(self) -> None:
        files = self._files[self._checkpointed :]
        if not files and not self._pending_units:
            return
        next_seq: dict[str, int] = {name: stream.seq for name, stream in self._streams.items()}
        line = commit_line(files, self._pending_units, next_seq)
        try:
            _make_directories(self._checkpoint_path.parent, self._dir_mode)
            append_durably(self._checkpoint_path, line, self._file_mode)
        except OSError as exc:
            raise _os_problem("write the checkpoint", self._checkpoint_path, exc) from exc
        self._checkpointed = len(self._files)
        self._pending_units = []

    def _drop_uncheckpointed(self) -> None:
        for stream in self._streams.values():
            self._discard(stream)
        for entry in self._files[self._checkpointed :]:
            with contextlib.suppress(OSError):
                (self._root / entry.path).unlink(missing_ok=True)
        del self._files[self._checkpointed :]
        self._pending_units = []

    def _create(self, partial: Path) -> int:
        _make_directories(partial.parent, self._dir_mode)
        fd = os.open(partial, _OPEN_FLAGS, self._file_mode)
        try:
            os.fchmod(fd, self._file_mode)  # exactly the mode asked for, whatever the umask
        except OSError:
            os.close(fd)
            raise
        return fd

    def _open_file(self, stream: _Stream) -> _File:
        relpath = object_relpath(stream.dataset, self._run, stream.seq, self._compress)
        final = self._root / relpath
        partial = _partial(final)
        try:
            fd = self._create(partial)
        except OSError as exc:
            path = Path(exc.filename) if exc.filename else partial
            raise self._fail(stream, _os_problem("create", path, exc)) from exc
        stream.current = _File(relpath, final, partial, fd, Encoder(self._compress))
        return stream.current

    def _flush(self, stream: _Stream) -> None:
        if stream.failure is not None:
            raise stream.failure
        file = stream.current or self._open_file(stream)
        data = file.encoder.encode(stream)
        try:
            _write_all(file.fd, data)
        except OSError as exc:
            raise self._fail(stream, _os_problem("write", file.partial, exc)) from exc

    def _close_file(self, stream: _Stream) -> None:
        if stream.buffer:
            self._flush(stream)
        file = stream.current
        if file is None:
            return
        fd, file.fd = file.fd, -1
        try:
            try:
                _write_all(fd, file.encoder.finish())
            except OSError:
                os.close(fd)
                raise
            _publish(fd, file.partial, file.final)
        except OSError as exc:
            raise self._fail(stream, _os_problem("complete", file.partial, exc)) from exc
        encoder = file.encoder
        self._files.append(
            FileEntry(
                stream.dataset, file.relpath, encoder.records, encoder.stored_bytes, encoder.sha256
            )
        )
        stream.current = None
        stream.object_bytes = 0
        stream.seq += 1

    @staticmethod
    def _fail(stream: _Stream, error: SinkError) -> SinkError:
        stream.failure = error
        return error

    @staticmethod
    def _discard(stream: _Stream) -> None:
        """Remove what is left of a file that cannot be completed (best effort: we are failing)."""
        file = stream.current
        stream.buffer, stream.buffered_records = bytearray(), 0
        stream.object_bytes = 0
        stream.current = None
        if file is None:
            return
        if file.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(file.fd)
            file.fd = -1
        with contextlib.suppress(OSError):
            file.partial.unlink(missing_ok=True)

    def _write_manifest(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        records: dict[Dataset, int] = dict.fromkeys(DATASETS, 0)
        for entry in self._files:
            records[entry.dataset] += entry.records
        manifest = build_manifest(
            run=self._run,
            status=status,
            destination=str(self._root),
            compression=self._compress,
            summary=summary,
            records=records,
            files=self._files,
        )
        path = self._manifest_path
        partial = _partial(path)
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        try:
            fd = self._create(partial)
            try:
                _write_all(fd, data)
            except OSError:
                os.close(fd)
                raise
            _publish(fd, partial, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise _os_problem("write the manifest", path, exc) from exc
        self._manifest = manifest
        return manifest
