"""``--output -``: recovery points as NDJSON on stdout, for pipes (``| jq``, ``| duckdb``).

Only recovery points are printed: one record shape per stream is what a pipe consumer can parse.
Gateways and errors are still counted, so the returned manifest accounts for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import IO, Any

import anyio
import anyio.to_thread
import orjson

from .._exceptions import SinkError
from .._records import DATASETS, Dataset, Record
from ._common import (
    ABORT_STATUSES,
    BUFFER_BYTES,
    OrganizationDataset,
    RunInfo,
    build_manifest,
    check_status,
)


class StdoutSink:
    """Writes recovery points to a binary stream; no file, no manifest file."""

    def __init__(self, run: RunInfo, out: IO[bytes], *, buffer_bytes: int = BUFFER_BYTES) -> None:
        self._run = run
        self._out = out
        self._buffer_bytes = buffer_bytes
        #: One buffer, not a list of lines: see :class:`Stream` for why.
        self._buffer = bytearray()
        self._records: dict[Dataset, int] = dict.fromkeys(DATASETS, 0)
        self._closed = False
        self._manifest: dict[str, Any] | None = None

    async def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("write() after finish() or abort()")
        self._records[record.dataset] += 1
        if record.dataset != "recovery_points":
            return
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self._buffer += line
        if len(self._buffer) >= self._buffer_bytes:
            # A slow reader blocks the pipe: block a worker thread, never the event loop.
            await anyio.to_thread.run_sync(self._flush)

    def unit_done(self, key: tuple[str, ...], records: Mapping[OrganizationDataset, int]) -> None:
        """stdout keeps no checkpoint: a run to stdout cannot be resumed."""

    async def commit(self) -> None:
        if self._buffer:
            await anyio.to_thread.run_sync(self._flush)

    async def finish(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        check_status(status)
        if self._manifest is None:
            self._closed = True
            await anyio.to_thread.run_sync(self._flush)
            self._manifest = self._build(status, summary)
        return self._manifest

    async def abort(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Print what was buffered (those records are complete), unless stdout itself failed."""
        check_status(status, ABORT_STATUSES)
        if self._manifest is None:
            self._closed = True
            with anyio.CancelScope(shield=True), contextlib.suppress(SinkError):
                await anyio.to_thread.run_sync(self._flush)
            self._manifest = self._build(status, summary)
        return self._manifest

    def _flush(self) -> None:
        data, self._buffer = self._buffer, bytearray()
        view = memoryview(data)
        try:
            while view:
                # Buffered streams take everything; a raw one may take part of it.
                written = self._out.write(view)
                if not written:
                    raise SinkError("cannot write to stdout: it accepts no more data")
                view = view[written:]
            self._out.flush()
        except BrokenPipeError as exc:
            raise SinkError("cannot write to stdout: the reading end of the pipe closed") from exc
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise SinkError(f"cannot write to stdout: {reason} (errno {exc.errno})") from exc

    def _build(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        return build_manifest(
            run=self._run,
            status=status,
            destination="-",
            compression="none",
            summary=summary,
            records=self._records,
            files=(),
        )
