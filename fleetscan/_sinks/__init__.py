"""Where a run's records go, and how they are read back.

Every destination has the same layout (``DATASET/dt=YYYY-MM-DD/RUN_ID-NNNNN.ndjson[.gz]`` plus
``manifests/dt=YYYY-MM-DD/RUN_ID.json``) and the same promise: a file appears under its final
name only once complete, and the manifest, written last, is what marks a run as finished.
:func:`open_sink` is the one place that maps a destination string to an implementation.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO, Any

from .._exceptions import ConfigError
from ._checkpoint import Checkpoint, load_checkpoint
from ._common import (
    BUFFER_BYTES,
    DEFAULT_MAX_OBJECT_BYTES,
    MANIFEST_VERSION,
    RUN_STATUSES,
    Compression,
    RunInfo,
    Sink,
    manifest_location,
    manifest_relpath,
    object_relpath,
)
from ._local import LocalSink
from ._read import (
    aiter_records,
    alatest_run,
    alist_runs,
    aread_manifest,
    find_manifest,
    iter_records,
    latest_run,
    read_manifest,
)
from ._runstore import RunStore
from ._s3 import S3Options, S3Sink
from ._stdout import StdoutSink

__all__ = [
    "DEFAULT_MAX_OBJECT_BYTES",
    "MANIFEST_VERSION",
    "RUN_STATUSES",
    "Checkpoint",
    "LocalSink",
    "RunInfo",
    "RunStore",
    "S3Options",
    "S3Sink",
    "Sink",
    "StdoutSink",
    "aiter_records",
    "alatest_run",
    "alist_runs",
    "aread_manifest",
    "find_manifest",
    "iter_records",
    "latest_run",
    "load_checkpoint",
    "manifest_location",
    "manifest_relpath",
    "object_relpath",
    "open_sink",
    "read_manifest",
]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def open_sink(
    destination: str,
    run: RunInfo,
    *,
    compress: Compression = "none",
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    file_mode: int = 0o600,
    stdout: IO[bytes] | None = None,
    buffer_bytes: int = BUFFER_BYTES,
    resume: Checkpoint | None = None,
    s3: S3Options | None = None,
    config: dict[str, Any] | None = None,
    manifest_at: str | None = None,
) -> Sink:
    """The sink for ``--output DEST``: a local directory, ``s3://bucket/prefix/``, or ``-``.

    Checks the destination now (a read-only directory raises :class:`SinkError` naming it) so
    that a scan never spends API calls on results it cannot keep; an S3 destination is checked
    by :meth:`S3Sink.start`, which needs the event loop. ``s3`` applies to S3 only. ``config``
    is the scan configuration a new run's checkpoint keeps (see
    :func:`fleetscan._config.stored_config`), for its resumes. ``manifest_at`` is where a
    shard's manifest goes (relative to the destination) instead of the run's place.
    """
    if compress not in ("none", "gzip"):
        raise ConfigError("compress", f"must be 'none' or 'gzip', not {compress!r}")
    if isinstance(max_object_bytes, bool) or max_object_bytes < 1:
        raise ConfigError("max_object_bytes", f"must be a positive size, not {max_object_bytes}")
    if not 0 <= file_mode <= 0o777:
        raise ConfigError("file_mode", f"must be a permission mode like 0o600, not {file_mode:o}")
    if not destination:
        raise ConfigError("output", "is empty: give a directory, or '-' for stdout")
    if destination == "-":
        if resume is not None:
            raise ConfigError("resume", "a run written to stdout keeps no checkpoint")
        if compress != "none":
            raise ConfigError("compress", "stdout output is plain NDJSON; pipe it to gzip instead")
        return StdoutSink(run, stdout or sys.stdout.buffer, buffer_bytes=buffer_bytes)
    if destination.startswith("s3://"):
        return S3Sink(
            destination,
            run,
            compress=compress,
            max_object_bytes=max_object_bytes,
            buffer_bytes=buffer_bytes,
            options=s3,
            resume=resume,
            config=config,
            manifest_at=manifest_at,
        )
    if _URL.match(destination):
        scheme = destination.split("://", 1)[0]
        raise ConfigError("output", f"{scheme}:// is not supported: give a local directory")
    return LocalSink(
        Path(os.path.abspath(destination)),
        run,
        compress=compress,
        max_object_bytes=max_object_bytes,
        file_mode=file_mode,
        buffer_bytes=buffer_bytes,
        resume=resume,
        config=config,
        manifest_at=manifest_at,
    )
