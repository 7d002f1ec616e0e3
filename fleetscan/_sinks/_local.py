"""A local directory: the same layout and guarantees as S3, with files instead of objects.

A file is written under a hidden temporary name (``.NAME.RANDOM.partial``, which Athena, Hive and
DuckDB's ``*.ndjson`` globs all skip), fsynced, and renamed into place only once complete, so a
reader never sees half a file under its final name. Every path below the output directory is
reached through :class:`fleetscan._localfs.Tree`: no link planted there is followed, temporary
names are fresh and created with ``O_EXCL``, and directories must be the user's own. The run's
checkpoint is locked for the session's life (:mod:`._checkpoint_file`), so a run has one writer.

Blocking I/O, gzip and hashing run in worker threads; each thread call does all of its own
bookkeeping, so a cancellation that lands while one runs (anyio lets the thread finish) never
leaves the sink's state behind the disk's.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from .._exceptions import ConfigError, FleetscanError, SinkError
from .._localfs import Tree, write_all
from .._records import DATASETS, Dataset, Record
from ._checkpoint import (
    Checkpoint,
    PendingUnits,
    UnitKey,
    checkpoint_relpath,
    header_line,
    session_line,
    stray_files,
)
from ._checkpoint_file import CheckpointFile, live_writer
from ._common import (
    ABORT_STATUSES,
    BUFFER_BYTES,
    Compression,
    Encoder,
    FileEntry,
    OrganizationDataset,
    RunInfo,
    Stream,
    build_manifest,
    check_status,
    manifest_relpath,
    object_relpath,
)


def _os_problem(action: str, path: Path | str, exc: OSError) -> SinkError:
    reason = exc.strerror or exc.__class__.__name__
    return SinkError(f"cannot {action} {path}: {reason} (errno {exc.errno})")


def _directory_mode(file_mode: int) -> int:
    """Directories readable by whoever may read the files (0600 -> 0700, 0644 -> 0755)."""
    return file_mode | ((file_mode & 0o444) >> 2) | 0o700


class _File:
    """A file being written under its temporary name (both relative to the root)."""

    __slots__ = ("encoder", "fd", "partial", "relpath")

    def __init__(self, relpath: str, partial: str, fd: int, encoder: Encoder) -> None:
        self.relpath = relpath
        self.partial = partial
        self.fd = fd
        self.encoder = encoder


_Stream = Stream[_File]


class LocalSink:
    """Writes a run into a local directory (see :func:`fleetscan._sinks.open_sink`).

    With ``resume`` (a checkpoint loaded, and locked, by
    :func:`fleetscan._sinks.load_checkpoint`), the sink takes the checkpoint over and releases it
    when the run ends. ``config`` is the scan configuration a new run's checkpoint keeps.
    ``manifest_at`` puts the manifest elsewhere than the run's place (a shard's manifest, which
    readers must not take for a run's).
    """

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
        config: dict[str, Any] | None = None,
        manifest_at: str | None = None,
    ) -> None:
        if resume is not None and resume.file is None:
            raise ValueError("a local resume needs its checkpoint loaded with its lock")
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
        self._manifest_relpath = manifest_at or manifest_relpath(run)
        self._checkpoint_relpath = checkpoint_relpath(run)
        #: Units whose records are written but not yet covered by a checkpoint line.
        self._pending_units = PendingUnits()
        #: self._files[:_checkpointed] are named by the checkpoint.
        self._checkpointed = 0
        #: Records were written since the last unit_done(): the open files hold part of a unit.
        self._open_batch = False
        self._resume = resume
        self._checkpoint: CheckpointFile | None = None
        try:
            self._tree = Tree(root, field="output", dir_mode=self._dir_mode)
        except OSError as exc:
            raise _os_problem("create directory", exc.filename or root, exc) from exc
        try:
            self._probe()
            self._start_checkpoint(config)
        except BaseException:
            self._release()
            raise

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

    def unit_done(self, key: UnitKey, records: Mapping[OrganizationDataset, int]) -> None:
        """Every record of ``key`` has been passed to :meth:`write`; ``records`` counts them
        per (organization key, dataset) for the checkpoint."""
        self._pending_units.add(key, records)
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
            manifest = await anyio.to_thread.run_sync(self._write_manifest, status, summary)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
            with contextlib.suppress(FleetscanError):  # the first error is the one to report
                await self.abort("interrupted" if cancelled else "failed", summary)
            raise
        self._release()
        return manifest

    async def abort(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Keep every file that can still be completed, drop the rest, and say why in the manifest.

        Shielded: the caller is usually being cancelled, and a run without a manifest would leave
        readers guessing. Raises :class:`SinkError` only when the manifest itself cannot be
        written. Releases the run's checkpoint either way.
        """
        check_status(status, ABORT_STATUSES)
        if self._manifest is not None:
            return self._manifest
        self._closed = True
        try:
            with anyio.CancelScope(shield=True):
                for stream in self._streams.values():
                    if stream.failure is None and stream.object_bytes:
                        # A failure is recorded in stream.failure, and handled below.
                        with contextlib.suppress(FleetscanError):
                            await anyio.to_thread.run_sync(self._close_file, stream)
                if any(stream.failure is not None for stream in self._streams.values()):
                    # Some pending unit lost records: keep only what a checkpoint covers, so a
                    # resumed run rescans those units without writing anything twice.
                    await anyio.to_thread.run_sync(self._drop_uncheckpointed)
                elif not self._open_batch:
                    # (With a unit cut half-way, the writer cancelled mid-batch, the files stay
                    # and the manifest lists them, but no checkpoint names them: a resumed run
                    # deletes them and scans their units again.)
                    with contextlib.suppress(SinkError, OSError):
                        await anyio.to_thread.run_sync(self._append_checkpoint)
                manifest = await anyio.to_thread.run_sync(self._write_manifest, status, summary)
        finally:
            self._release()
        return manifest

    def _release(self) -> None:
        """Close every descriptor; closing the checkpoint releases the run's lock."""
        for stream in self._streams.values():
            file = stream.current
            if file is not None and file.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(file.fd)
                file.fd = -1
        if self._resume is not None:
            self._resume.release()
        elif self._checkpoint is not None:
            self._checkpoint.close()
        self._checkpoint = None
        self._tree.close()

    # -- files (in worker threads, but for the start) ----------------------------------------

    def _probe(self) -> None:
        """Fail before the scan spends a single call if the run's directories are not usable
        (a link, another user's, read-only) or the manifest can never be written."""
        tree = self._tree
        try:
            for dataset in DATASETS:
                tree.directory(f"{dataset}/{self._run.partition}", create=False)
            for reldir in (self._manifest_relpath, self._checkpoint_relpath):
                tree.directory(reldir.rpartition("/")[0])
        except OSError as exc:
            raise _os_problem("create directory", exc.filename or self._root, exc) from exc
        if tree.lstat(self._manifest_relpath) is not None and self._resume is None:
            raise ConfigError(
                "run_id",
                f"run {self._run.run_id} already has a manifest at "
                f"{tree.path(self._manifest_relpath)}; choose another run id",
            )
        try:
            fd, probe = tree.create_temporary(self._manifest_relpath, self._file_mode)
            os.close(fd)
            tree.unlink(probe)
        except OSError as exc:
            directory = tree.path(self._manifest_relpath.rpartition("/")[0])
            raise _os_problem("write to directory", directory, exc) from exc

    def _start_checkpoint(self, config: dict[str, Any] | None) -> None:
        """A new run creates its checkpoint, locked; a resumed one cuts a torn tail off its own,
        drops what was not committed, and records its session."""
        relpath = self._checkpoint_relpath
        path = self._tree.path(relpath)
        resume = self._resume
        try:
            if resume is None:
                header = header_line(self._run, self._compress, config)
                try:
                    self._checkpoint = CheckpointFile.create(
                        self._tree, relpath, header, self._file_mode
                    )
                except FileExistsError:
                    raise live_writer(self._tree, relpath) or ConfigError(
                        "run_id",
                        f"run {self._run.run_id} already has a checkpoint at {path}; resume it "
                        f"(--resume {self._run.run_id}) or choose another run id",
                    ) from None
                return
            assert resume.file is not None
            resume.file.truncate(resume.intact_bytes)
            self._check_kept_files(resume)
            for stray in stray_files(self._tree, self._run, resume.files):
                self._tree.unlink(stray)
            self._files = list(resume.files)
            self._checkpointed = len(self._files)
            for name, stream in self._streams.items():
                stream.seq = resume.next_seq.get(name, 0)
            resume.file.append((session_line(),))
        except OSError as exc:
            raise _os_problem("write the checkpoint", path, exc) from exc

    def _check_kept_files(self, resume: Checkpoint) -> None:
        """Every file the checkpoint names must still be there, as it was committed: else the
        run would end ``complete`` with a manifest that no reader accepts."""
        for entry in resume.files:
            found = self._tree.lstat(entry.path)
            if found is not None and stat.S_ISREG(found.st_mode) and found.st_size == entry.bytes:
                continue
            if found is None:
                what = "is missing"
            elif not stat.S_ISREG(found.st_mode):
                what = "is not a regular file"
            else:
                what = f"has {found.st_size} bytes"
            raise ConfigError(
                "resume",
                f"{resume.named_by.get(entry.path, resume.where)} names "
                f"{self._tree.path(entry.path)} ({entry.bytes} bytes), which {what}: the run's "
                "files were changed since it was interrupted; it cannot be resumed",
            )

    def _append_checkpoint(self) -> None:
        files = self._files[self._checkpointed :]
        if not files and not self._pending_units.count:
            return
        next_seq: dict[str, int] = {name: stream.seq for name, stream in self._streams.items()}
        checkpoint = self._resume.file if self._resume is not None else self._checkpoint
        assert checkpoint is not None
        try:
            self._pending_units.write_entry(files, next_seq, checkpoint.append)
        except OSError as exc:
            raise _os_problem("write the checkpoint", checkpoint.path, exc) from exc
        self._checkpointed = len(self._files)
        self._pending_units.clear()

    def _drop_uncheckpointed(self) -> None:
        for stream in self._streams.values():
            self._discard(stream)
        for entry in self._files[self._checkpointed :]:
            with contextlib.suppress(OSError, FleetscanError):
                self._tree.unlink(entry.path)
        del self._files[self._checkpointed :]
        self._pending_units.clear()

    def _open_file(self, stream: _Stream) -> _File:
        relpath = object_relpath(stream.dataset, self._run, stream.seq, self._compress)
        try:
            fd, partial = self._tree.create_temporary(relpath, self._file_mode)
        except OSError as exc:
            path = exc.filename or self._tree.path(relpath)
            raise self._fail(stream, _os_problem("create", path, exc)) from exc
        except FleetscanError as exc:
            raise self._fail(stream, exc) from None
        stream.current = _File(relpath, partial, fd, Encoder(self._compress))
        return stream.current

    def _flush(self, stream: _Stream) -> None:
        if stream.failure is not None:
            raise stream.failure
        file = stream.current or self._open_file(stream)
        data = file.encoder.encode(stream)
        try:
            write_all(file.fd, data)
        except OSError as exc:
            path = self._tree.path(file.partial)
            raise self._fail(stream, _os_problem("write", path, exc)) from exc

    def _close_file(self, stream: _Stream) -> None:
        if stream.buffer:
            self._flush(stream)
        file = stream.current
        if file is None:
            return
        fd, file.fd = file.fd, -1
        try:
            self._publish(fd, file.encoder.finish(), file.partial, file.relpath)
        except OSError as exc:
            path = self._tree.path(file.partial)
            raise self._fail(stream, _os_problem("complete", path, exc)) from exc
        encoder = file.encoder
        self._files.append(
            FileEntry(
                stream.dataset, file.relpath, encoder.records, encoder.stored_bytes, encoder.sha256
            )
        )
        stream.current = None
        stream.object_bytes = 0
        stream.seq += 1

    def _publish(self, fd: int, last: bytes | bytearray, partial: str, relpath: str) -> None:
        """Write the last bytes, close, and rename into place, durably (data, then the rename)."""
        try:
            write_all(fd, last)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._tree.replace(partial, relpath)

    @staticmethod
    def _fail(stream: _Stream, error: FleetscanError) -> FleetscanError:
        stream.failure = error
        return error

    def _discard(self, stream: _Stream) -> None:
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
        with contextlib.suppress(OSError, FleetscanError):
            self._tree.unlink(file.partial)

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
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        path = self._tree.path(self._manifest_relpath)
        partial: str | None = None
        try:
            fd, partial = self._tree.create_temporary(self._manifest_relpath, self._file_mode)
            self._publish(fd, data, partial, self._manifest_relpath)
        except OSError as exc:
            if partial is not None:
                with contextlib.suppress(OSError):
                    self._tree.unlink(partial)
            raise _os_problem("write the manifest", path, exc) from exc
        self._manifest = manifest
        return manifest
