"""``--output s3://bucket/prefix/``: the local layout and guarantees, with S3 objects for files.

Each file is an S3 multipart upload fed as records arrive: lines are encoded (and gzipped) in a
worker thread, gathered into parts of at least 5 MiB, and each part is uploaded with a checksum
S3 verifies, so memory holds about one part per dataset whatever the fleet size, and nothing
touches the local disk. An object exists only once its upload is completed (S3 makes
CompleteMultipartUpload and PutObject atomic); a file smaller than one part is a single
PutObject. The manifest, written last, is what marks the run finished.

On failure or cancellation every open multipart upload is aborted in a shielded scope, and uploads
this run may have created without learning their id (a CreateMultipartUpload whose answer was
lost) are found with ListMultipartUploads and aborted too: orphaned parts cost money and never
show up in a bucket listing. Every S3 call is retried with fleetscan's own policy
(:func:`fleetscan._retry.retry_call`); botocore's retries are off, as for every other client.

Checkpoints (see :mod:`fleetscan._sinks._checkpoint`): S3 has no append, so a commit completes
every open upload (each becomes a whole object, as at a rollover), *then* puts one checkpoint
entry object naming those objects and the units now wholly inside them. Completing objects early
costs small objects, so the sink carries a commit out only once ``commit_min_bytes`` (32 MiB) of
NDJSON were written since the last one, or the last one is ``commit_max_age`` old (ten
checkpoint intervals, 5 minutes by default); :meth:`S3Sink.finish` always commits. A resumed
session aborts every open upload of the run, deletes every object of the run no checkpoint
names, skips the checkpointed units and numbers its objects after theirs.

Uploads are sequential: the writer awaits each part. A scan produces records far slower than one
connection uploads them, and a single writer keeps cancellation and abort simple: at any moment
at most one request of the sink is in flight.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import math
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.to_thread
import botocore.exceptions
import orjson

from .._aws import CALL_TIMEOUT
from .._config import parse_s3_url
from .._exceptions import ConfigError, SinkError
from .._records import DATASETS, Dataset, Record
from .._retry import Backoff, Failure, RetryFailed, retry_call
from ._checkpoint import (
    Checkpoint,
    PendingUnits,
    UnitKey,
    checkpoint_entry_relpath,
    header_line,
    is_run_file,
    session_line,
)
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
from ._s3io import WRITER_POLICY, create_s3_client, describe_failure

if TYPE_CHECKING:
    from .._config import ScanConfig

ChecksumAlgorithm = Literal["CRC32", "SHA256"]

#: S3's smallest part (all but the last part of an upload).
MIN_PART_BYTES: Final = 5 << 20
#: Default part size: few requests per 128 MiB object, little memory per dataset.
PART_BYTES: Final = 8 << 20
MAX_PARTS: Final = 10_000
#: S3's largest object.
MAX_S3_OBJECT_BYTES: Final = 5 << 40
#: How long an abort may take (aborting uploads, writing the manifest) before it gives up; the
#: bucket's AbortIncompleteMultipartUpload lifecycle rule is the backstop after that.
ABORT_SECONDS: Final = 120.0
#: A commit completes every open object: below this much NDJSON written since the last commit
#: (and before ``COMMIT_AGE_INTERVALS`` checkpoint intervals), it is skipped.
COMMIT_MIN_BYTES: Final = 32 << 20
#: ... unless the last commit is this many checkpoint intervals old (5 min at the default 30 s).
COMMIT_AGE_INTERVALS: Final = 10
#: S3 codes that mean "send it again" though classify() does not know them: the bytes were
#: damaged on the way (S3 checked the checksum or the Content-MD5 and refused the request).
S3_TRANSIENT_CODES: Final = frozenset({"BadDigest", "XAmzContentSHA256Mismatch"})
CHECKSUM_PARAM: Final[dict[str, str]] = {"CRC32": "ChecksumCRC32", "SHA256": "ChecksumSHA256"}
_CONTENT_TYPE: Final[dict[str, str]] = {"none": "application/x-ndjson", "gzip": "application/gzip"}
_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound"})


def checksum_digest(algorithm: str, data: bytes) -> bytes:
    """The raw checksum S3 computes for ``data`` (big-endian CRC32, or SHA-256)."""
    if algorithm == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    return hashlib.sha256(data).digest()


def composite_checksum(algorithm: str, part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: the checksum of its parts' raw checksums, base64."""
    return _b64(checksum_digest(algorithm, b"".join(part_digests)))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, kw_only=True)
class S3Options:
    """How objects are written: encryption, ownership check, checksum, part size, retries."""

    sse: str | None = None
    sse_kms_key_id: str | None = None
    bucket_key_enabled: bool = False
    expected_bucket_owner: str | None = None
    checksum_algorithm: ChecksumAlgorithm = "CRC32"
    #: At least 5 MiB; raised if needed so that ``max_object_bytes`` fits in 10,000 parts.
    part_bytes: int = PART_BYTES
    profile: str | None = None
    max_attempts: int = 8
    backoff: Backoff = field(default_factory=Backoff)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Total deadline of an attempt, plus a second per 64 KiB it sends (an 8 MiB part: 188 s).
    call_timeout: float = CALL_TIMEOUT
    abort_seconds: float = ABORT_SECONDS
    #: A commit (see :meth:`S3Sink.commit`) is carried out once this much NDJSON was written
    #: since the last one, or the last one is ``commit_max_age`` seconds old; else skipped.
    commit_min_bytes: int = COMMIT_MIN_BYTES
    commit_max_age: float = COMMIT_AGE_INTERVALS * 30.0

    @classmethod
    def from_config(cls, config: ScanConfig) -> S3Options:
        algorithm: ChecksumAlgorithm = (
            "SHA256" if config.checksum_algorithm == "SHA256" else "CRC32"
        )
        return cls(
            sse=config.sse,
            sse_kms_key_id=config.sse_kms_key_id,
            bucket_key_enabled=config.bucket_key,
            expected_bucket_owner=config.expected_bucket_owner,
            checksum_algorithm=algorithm,
            profile=config.profile,
            max_attempts=config.max_attempts,
            connect_timeout=config.connect_timeout,
            # A part takes longer than an API answer on a slow link.
            read_timeout=max(config.read_timeout, 60.0),
            call_timeout=config.call_timeout,
            commit_max_age=COMMIT_AGE_INTERVALS * config.checkpoint_interval,
        )


@dataclass
class S3Stats:
    """What the sink did: requests per operation, retries, throttles (SlowDown), bytes sent."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    throttles: int = 0
    parts: int = 0
    objects: int = 0
    #: NDJSON written, before compression.
    ndjson_bytes: int = 0
    bytes_sent: int = 0


class _Object:
    """One object being written: its encoder, the bytes not yet sent, the parts already sent."""

    __slots__ = ("chunks", "digests", "encoder", "key", "parts", "pending", "relpath", "upload_id")

    def __init__(self, relpath: str, key: str, encoder: Encoder) -> None:
        self.relpath = relpath
        self.key = key
        self.encoder = encoder
        self.chunks: list[bytes | bytearray] = []
        self.pending = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.digests: list[bytes] = []


_Stream = Stream[_Object]


class S3Sink:
    """Writes a run under ``s3://bucket/prefix/`` (see :func:`fleetscan._sinks.open_sink`).

    :meth:`start` checks the destination (credentials, bucket, write and KMS access, no manifest
    for this run id yet) before the scan spends a call; :meth:`write` starts it if needed. With
    ``resume`` (the checkpoint of an earlier session of the same run), :meth:`start` first
    removes what that session left uncommitted.
    """

    def __init__(
        self,
        url: str,
        run: RunInfo,
        *,
        compress: Compression,
        max_object_bytes: int,
        buffer_bytes: int = BUFFER_BYTES,
        options: S3Options | None = None,
        resume: Checkpoint | None = None,
        config: dict[str, Any] | None = None,
        manifest_at: str | None = None,
    ) -> None:
        options = options or S3Options()
        self._bucket, self._prefix = parse_s3_url(url)
        self.url = f"s3://{self._bucket}/{self._prefix}"
        if options.part_bytes < MIN_PART_BYTES:
            raise ConfigError("part_bytes", f"is {options.part_bytes}; S3 parts are at least 5 MiB")
        if max_object_bytes > MAX_S3_OBJECT_BYTES:
            raise ConfigError("max_object_bytes", "S3 objects are at most 5 TiB")
        if options.checksum_algorithm not in CHECKSUM_PARAM:
            raise ConfigError(
                "checksum_algorithm", f"{options.checksum_algorithm!r} is not CRC32 or SHA256"
            )
        self._run = run
        self._compress: Compression = compress
        self._max_object_bytes = max_object_bytes
        self._buffer_bytes = buffer_bytes
        self._options = options
        #: Named in a refusal: S3 refuses another account's bucket as it refuses a permission.
        self._owner = options.expected_bucket_owner
        # Large objects need larger parts to fit S3's 10,000; gzip can grow incompressible data a
        # little, so keep a margin.
        self._part_bytes = max(
            options.part_bytes, math.ceil(max_object_bytes * 1.01 / (MAX_PARTS - 100))
        )
        self._checksum = options.checksum_algorithm
        self._checksum_param = CHECKSUM_PARAM[options.checksum_algorithm]
        self._streams = {name: _Stream(name) for name in DATASETS}
        self._files: list[FileEntry] = []
        #: A shard's manifest is not at the run's place (readers must not take it for a run's).
        self._manifest_key = self._prefix + (manifest_at or manifest_relpath(run))
        self._manifest: dict[str, Any] | None = None
        self._closed = False
        self._client: Any = None
        self._client_stack: contextlib.AsyncExitStack | None = None
        #: A CreateMultipartUpload failed at least once: S3 may hold an upload we have no id for.
        self._unknown_uploads = False
        self.stats = S3Stats()
        self._resume = resume
        #: The scan configuration a new run's checkpoint header keeps, for its resumes.
        self._config = config
        #: Number of the next checkpoint entry object.
        self._next_entry = 0
        #: Units whose records are written but not yet named by a checkpoint entry.
        self._pending_units = PendingUnits()
        #: self._files[:_checkpointed] are named by checkpoint entries.
        self._checkpointed = 0
        #: Records were written since the last unit_done(): the open objects hold part of a unit.
        self._open_batch = False
        #: A checkpoint entry could not be written: nothing more can be committed.
        self._checkpoint_failure: SinkError | None = None
        #: ``stats.ndjson_bytes`` and the time at the last commit (commit cadence).
        self._committed_bytes = 0
        self._last_commit = 0.0

    # -- the hot path ------------------------------------------------------------------------

    async def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("write() after finish() or abort()")
        stream = self._streams[record.dataset]
        if stream.failure is not None:
            raise stream.failure
        if self._client is None:
            await self.start()
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        size = len(line)
        self._open_batch = True
        self.stats.ndjson_bytes += size
        if stream.object_bytes and stream.object_bytes + size > self._max_object_bytes:
            await self._guarded(stream, self._close_object(stream))
        stream.buffer += line
        stream.buffered_records += 1
        stream.object_bytes += size
        if len(stream.buffer) >= self._buffer_bytes:
            await self._guarded(stream, self._flush(stream))

    def unit_done(self, key: UnitKey, records: Mapping[OrganizationDataset, int]) -> None:
        """Every record of ``key`` has been passed to :meth:`write`; ``records`` counts them
        per (organization key, dataset) for the checkpoint."""
        self._pending_units.add(key, records)
        self._open_batch = False

    async def commit(self) -> None:
        """Complete every open object, then checkpoint the units written so far, if worth it.

        Each commit turns the open uploads into (possibly small) objects, and Athena reads many
        small objects slowly, so a commit is carried out only once ``commit_min_bytes`` of NDJSON
        were written since the last one, the last one is ``commit_max_age`` seconds old, or the
        pending units are many enough to weigh in memory (:data:`MAX_PENDING_UNITS`: a fleet of
        mostly empty units writes few bytes), and skipped otherwise: a kill then costs at most
        that much rescanning. :meth:`finish` always commits.
        """
        if self._closed:
            raise RuntimeError("commit() after finish() or abort()")
        if not self._pending_units.count and self._checkpointed == len(self._files):
            return
        written = self.stats.ndjson_bytes - self._committed_bytes
        age = time.monotonic() - self._last_commit
        if (
            written < self._options.commit_min_bytes
            and age < self._options.commit_max_age
            and not self._pending_units.full
        ):
            return
        if self._client is None:
            await self.start()
        await self._commit()

    async def _commit(self) -> None:
        """Complete every open object, *then* name them and the pending units in an entry."""
        for stream in self._streams.values():
            if stream.failure is not None:
                raise stream.failure
        if self._checkpoint_failure is not None:
            raise self._checkpoint_failure
        for stream in self._streams.values():
            if stream.object_bytes:
                await self._guarded(stream, self._close_object(stream))
        files = self._files[self._checkpointed :]
        if files or self._pending_units.count:
            next_seq: dict[str, int] = {n: stream.seq for n, stream in self._streams.items()}
            line, units = self._pending_units.entry(files, next_seq)
            try:
                await self._put_entry(line)
            except SinkError as exc:
                self._checkpoint_failure = exc
                raise
            self._checkpointed += len(files)
            self._pending_units.drop(units)
        self._committed_bytes = self.stats.ndjson_bytes
        self._last_commit = time.monotonic()

    async def _put_entry(self, body: bytes) -> None:
        key = self._prefix + checkpoint_entry_relpath(self._run, self._next_entry)
        await self._put(key, body, "application/json")
        self._next_entry += 1

    # -- the end of a run --------------------------------------------------------------------

    async def finish(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Complete every object, then write the manifest; the manifest's presence marks the end.

        If that fails (or is cancelled) half-way, the run is aborted before the error propagates:
        open uploads are aborted and the manifest says ``failed`` or ``interrupted``.
        """
        check_status(status)
        if self._manifest is not None:
            return self._manifest
        self._closed = True
        try:
            if self._client is None:
                await self.start()
            await self._commit()
            if self._unknown_uploads or self._resume is not None:
                # A resumed run also catches what a killed session's last requests created after
                # this session had tidied up.
                leftovers = await self._sweep()
                if leftovers:
                    raise SinkError(
                        f"{len(leftovers)} multipart upload(s) of this run could not be aborted"
                    )
            if self._resume is not None:
                await self._delete_unnamed(self._files)
            manifest = await self._put_manifest(status, summary)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class() | KeyboardInterrupt)
            with contextlib.suppress(SinkError):  # the first error is the one to report
                await self.abort("interrupted" if cancelled else "failed", summary)
            raise
        await self._close_client()
        return manifest

    async def abort(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Abort every open upload, then write the manifest (``failed`` or ``interrupted``).

        If every dataset is intact and no unit is half-written, the open objects are first
        completed and checkpointed (within half of ``abort_seconds``), so a resumed run skips
        their units. Otherwise objects completed earlier stay, listed in the manifest (a resumed
        run keeps only those a checkpoint names), and data not yet in a completed object is
        dropped. Shielded, and bounded by ``abort_seconds``. Raises :class:`SinkError`
        only when the manifest itself cannot be written; uploads that could not be aborted are
        named in the manifest's summary (``s3_uploads_not_aborted``).
        """
        check_status(status, ABORT_STATUSES)
        if self._manifest is not None:
            return self._manifest
        self._closed = True
        manifest: dict[str, Any] | None = None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = time.monotonic() + self._options.abort_seconds
            try:
                if self._client is None:
                    await self.start()
                intact = not self._open_batch and all(
                    stream.failure is None for stream in self._streams.values()
                )
                if intact and self._checkpoint_failure is None:
                    with anyio.move_on_after(self._options.abort_seconds / 2):
                        with contextlib.suppress(SinkError):  # then aborted below
                            await self._commit()
                leftovers = await self._abort_open_uploads()
                leftovers |= await self._sweep()
                if leftovers:
                    summary = {**summary, "s3_uploads_not_aborted": sorted(leftovers)}
                manifest = await self._put_manifest(status, summary)
            finally:
                await self._close_client()
        if manifest is None:
            raise SinkError(
                f"aborting the run under {self.url} took more than "
                f"{self._options.abort_seconds:g} s; multipart uploads may remain (an "
                "AbortIncompleteMultipartUpload lifecycle rule on the bucket removes them)"
            )
        return manifest

    # -- the client, and the check before a scan ----------------------------------------------

    async def start(self) -> None:
        """Open the client and check the destination, before the scan spends a single call.

        Looks for a manifest of this run id (refused, as for a local directory; a writer
        without s3:GetObject cannot tell, and goes on), then creates and aborts a multipart
        upload of the manifest's key: that proves the bucket exists, the credentials may write
        and abort there, the bucket owner is the expected one and the KMS key can be used.
        """
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                create_s3_client(
                    profile=self._options.profile,
                    connect_timeout=self._options.connect_timeout,
                    read_timeout=self._options.read_timeout,
                    call_timeout=self._options.call_timeout,
                )
            )
        except botocore.exceptions.ProfileNotFound as exc:
            await stack.aclose()
            raise ConfigError("profile", str(exc)) from None
        self._client, self._client_stack = client, stack
        try:
            await self._probe()
            await self._start_checkpoint()
        except BaseException:
            await self._close_client()
            raise
        self._last_commit = time.monotonic()

    async def _probe(self) -> None:
        key = self._manifest_key
        if self._resume is None:
            if await self._exists(key):
                raise ConfigError(
                    "run_id",
                    f"run {self._run.run_id} already has a manifest at {self._where(key)}; "
                    "choose another run id",
                )
            header = self._prefix + checkpoint_entry_relpath(self._run, 0)
            if await self._exists(header):
                raise ConfigError(
                    "run_id",
                    f"run {self._run.run_id} already has a checkpoint at {self._where(header)}; "
                    f"resume it (--resume {self._run.run_id}) or choose another run id",
                )
        created = await self._call(
            "CreateMultipartUpload",
            self._client.create_multipart_upload,
            on_failure=self._create_failed,
            Key=key,
            ChecksumAlgorithm=self._checksum,
            **self._encryption(),
        )
        await self._abort_upload(key, created["UploadId"])

    async def _exists(self, key: str) -> bool:
        """Whether ``key`` exists; False also when the writer may not read it (no s3:GetObject)."""
        try:
            await self._attempt("HeadObject", self._client.head_object, Key=key)
        except RetryFailed as exc:
            if exc.failure.error_code not in _NOT_FOUND | {"403", "AccessDenied"}:
                raise SinkError(
                    describe_failure(
                        exc,
                        self._where(key),
                        policy=WRITER_POLICY,
                        expected_bucket_owner=self._owner,
                    )
                ) from exc
            return False
        return True

    async def _start_checkpoint(self) -> None:
        """A new run puts the checkpoint's header; a resumed one first drops what the earlier
        sessions did not commit: every open upload of the run, every object no entry names."""
        resume = self._resume
        if resume is None:
            await self._put_entry(header_line(self._run, self._compress, self._config))
            return
        leftovers = await self._sweep()
        if leftovers:
            raise SinkError(
                f"cannot resume run {self._run.run_id}: multipart upload(s) "
                f"{', '.join(sorted(leftovers))} could not be aborted"
            )
        await self._delete_unnamed(resume.files, check=resume)
        self._files = list(resume.files)
        self._checkpointed = len(self._files)
        for name, stream in self._streams.items():
            stream.seq = resume.next_seq.get(name, 0)
        self._next_entry = max(resume.next_entry, 1)
        await self._put_entry(session_line())

    async def _delete_unnamed(self, keep: list[FileEntry], check: Checkpoint | None = None) -> None:
        """Delete every object of this run that ``keep`` does not list.

        With ``check`` (a resume's checkpoint), each object it names must be there with the size
        it was committed with, or the resume is refused: the run would end ``complete`` with a
        manifest that no reader accepts.
        """
        kept = {self._prefix + entry.path for entry in keep}
        sizes: dict[str, int] = {}
        for dataset in DATASETS:
            params: dict[str, Any] = {"Prefix": self._run_directory(dataset) + self._run.run_id}
            strays: list[str] = []
            while True:
                page = await self._call("ListObjectsV2", self._client.list_objects_v2, **params)
                for item in page.get("Contents") or ():
                    key = str(item["Key"])
                    if key in kept:
                        sizes[key] = int(item.get("Size", -1))
                    elif self._is_run_key(key):
                        strays.append(key)
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                params["ContinuationToken"] = token
            for key in strays:
                await self._call("DeleteObject", self._client.delete_object, Key=key)
        for entry in check.files if check is not None else ():
            key = self._prefix + entry.path
            if sizes.get(key) == entry.bytes:
                continue
            what = "is missing" if key not in sizes else f"has {sizes[key]} bytes"
            assert check is not None
            raise ConfigError(
                "resume",
                f"{check.named_by.get(entry.path, check.where)} names {self._where(key)} "
                f"({entry.bytes} bytes), which {what}: the run's objects were changed since it "
                "was interrupted; it cannot be resumed",
            )

    async def _close_client(self) -> None:
        stack, self._client_stack, self._client = self._client_stack, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    # -- calls -------------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    def _encryption(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self._options.sse:
            params["ServerSideEncryption"] = self._options.sse
        if self._options.sse_kms_key_id:
            params["SSEKMSKeyId"] = self._options.sse_kms_key_id
        if self._options.bucket_key_enabled:
            params["BucketKeyEnabled"] = True
        return params

    def _checksum_header(self, checksum: str) -> dict[str, Any]:
        return {self._checksum_param: checksum}

    def _on_failure(self, failure: Failure) -> None:
        if failure.throttled:
            self.stats.throttles += 1
        if failure.retryable:
            self.stats.retries += 1

    async def _attempt(
        self,
        operation: str,
        method: Callable[..., Awaitable[dict[str, Any]]],
        on_failure: Callable[[Failure], None] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """One S3 call with retries; raises :class:`RetryFailed` when it fails for good."""
        params["Bucket"] = self._bucket
        if self._options.expected_bucket_owner:
            params["ExpectedBucketOwner"] = self._options.expected_bucket_owner
        stats = self.stats

        async def call() -> dict[str, Any]:
            stats.requests[operation] += 1
            body = params.get("Body")
            if isinstance(body, bytes):
                # A fresh stream per attempt: aiohttp sends a file-like body in chunks, where a
                # large bytes body is one write (and a ResourceWarning).
                answer: dict[str, Any] = await method(**{**params, "Body": io.BytesIO(body)})
            else:
                answer = await method(**params)
            return answer

        def failed(failure: Failure) -> None:
            self._on_failure(failure)
            if on_failure is not None:
                on_failure(failure)

        return await retry_call(
            call,
            operation=operation,
            max_attempts=self._options.max_attempts,
            backoff=self._options.backoff,
            retryable_codes=S3_TRANSIENT_CODES,
            on_failure=failed,
        )

    async def _call(
        self,
        operation: str,
        method: Callable[..., Awaitable[dict[str, Any]]],
        *,
        part: int | None = None,
        on_failure: Callable[[Failure], None] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """:meth:`_attempt`, with a failure for good turned into a :class:`SinkError`."""
        try:
            return await self._attempt(operation, method, on_failure, **params)
        except RetryFailed as exc:
            where = self._where(params.get("Key") or params.get("Prefix", ""))
            if part is not None:
                where += f" (part {part})"
            raise SinkError(
                describe_failure(
                    exc, where, policy=WRITER_POLICY, expected_bucket_owner=self._owner
                )
            ) from exc

    def _check_checksum(self, answer: Mapping[str, Any], expected: str, where: str) -> None:
        """S3 verified our checksum before answering; make sure it also says it stored it.

        A multipart object's checksum comes back as ``BASE64-N`` (N parts); only a composite
        one is comparable (S3 may also report a full-object CRC for some algorithms).
        """
        got = answer.get(self._checksum_param)
        if got is None or answer.get("ChecksumType") not in (None, "COMPOSITE"):
            return
        if str(got).split("-", 1)[0] != expected:
            raise SinkError(f"S3 reports checksum {got} for {where}, fleetscan sent {expected}")

    # -- objects -----------------------------------------------------------------------------

    async def _guarded(self, stream: _Stream, work: Awaitable[None]) -> None:
        """Run an upload step; if it fails or is cut, the dataset's current object is lost."""
        try:
            await work
        except SinkError as exc:
            stream.failure = exc
            raise
        except BaseException:
            stream.failure = SinkError(f"an upload of {stream.dataset} was interrupted")
            raise

    def _new_object(self, stream: _Stream) -> _Object:
        relpath = object_relpath(stream.dataset, self._run, stream.seq, self._compress)
        stream.current = _Object(relpath, self._prefix + relpath, Encoder(self._compress))
        return stream.current

    @staticmethod
    def _encode(stream: _Stream, obj: _Object, last: bool) -> None:
        """In a worker thread: move the buffered lines into the object's pending bytes."""
        data = obj.encoder.encode(stream) if stream.buffer else b""
        if last:
            data += obj.encoder.finish()
        if data:
            obj.chunks.append(data)
            obj.pending += len(data)

    def _take(self, obj: _Object) -> tuple[bytes, bytes]:
        """In a worker thread: the pending bytes as one body, and its checksum."""
        body = b"".join(obj.chunks)
        obj.chunks = []
        obj.pending = 0
        return body, checksum_digest(self._checksum, body)

    async def _flush(self, stream: _Stream) -> None:
        obj = stream.current or self._new_object(stream)
        await anyio.to_thread.run_sync(self._encode, stream, obj, False)
        if obj.pending >= self._part_bytes:
            await self._upload_part(obj)

    async def _upload_part(self, obj: _Object) -> None:
        body, digest = await anyio.to_thread.run_sync(self._take, obj)
        if obj.upload_id is None:
            created = await self._call(
                "CreateMultipartUpload",
                self._client.create_multipart_upload,
                on_failure=self._create_failed,
                Key=obj.key,
                ChecksumAlgorithm=self._checksum,
                ContentType=_CONTENT_TYPE[self._compress],
                **self._encryption(),
            )
            obj.upload_id = str(created["UploadId"])
        number = len(obj.parts) + 1
        checksum = _b64(digest)
        answer = await self._call(
            "UploadPart",
            self._client.upload_part,
            part=number,
            Key=obj.key,
            UploadId=obj.upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm=self._checksum,
            **self._checksum_header(checksum),
        )
        self._check_checksum(answer, checksum, f"{self._where(obj.key)} (part {number})")
        obj.parts.append(
            {"PartNumber": number, "ETag": answer["ETag"], self._checksum_param: checksum}
        )
        obj.digests.append(digest)
        self.stats.parts += 1
        self.stats.bytes_sent += len(body)

    def _create_failed(self, failure: Failure) -> None:
        self._unknown_uploads = True

    async def _close_object(self, stream: _Stream) -> None:
        obj = stream.current or self._new_object(stream)
        await anyio.to_thread.run_sync(self._encode, stream, obj, True)
        where = self._where(obj.key)
        if obj.upload_id is None:
            # Smaller than a part: one PutObject, as atomic as completing an upload.
            body, digest = await anyio.to_thread.run_sync(self._take, obj)
            checksum = _b64(digest)
            answer = await self._call(
                "PutObject",
                self._client.put_object,
                Key=obj.key,
                Body=body,
                ContentType=_CONTENT_TYPE[self._compress],
                ChecksumAlgorithm=self._checksum,
                **self._checksum_header(checksum),
                **self._encryption(),
            )
            self._check_checksum(answer, checksum, where)
            self.stats.bytes_sent += len(body)
        else:
            if obj.pending:
                await self._upload_part(obj)
            answer = await self._call(
                "CompleteMultipartUpload",
                self._client.complete_multipart_upload,
                Key=obj.key,
                UploadId=obj.upload_id,
                MultipartUpload={"Parts": obj.parts},
            )
            obj.upload_id = None
            self._check_checksum(answer, composite_checksum(self._checksum, obj.digests), where)
        encoder = obj.encoder
        self._files.append(
            FileEntry(
                stream.dataset, obj.relpath, encoder.records, encoder.stored_bytes, encoder.sha256
            )
        )
        self.stats.objects += 1
        stream.current = None
        stream.object_bytes = 0
        stream.seq += 1

    # -- failure -----------------------------------------------------------------------------

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload; one that S3 no longer knows is already gone, which is the point."""
        try:
            await self._attempt(
                "AbortMultipartUpload",
                self._client.abort_multipart_upload,
                Key=key,
                UploadId=upload_id,
            )
        except RetryFailed as exc:
            if exc.failure.error_code not in ("NoSuchUpload", "404"):
                raise SinkError(
                    describe_failure(
                        exc,
                        self._where(key),
                        policy=WRITER_POLICY,
                        expected_bucket_owner=self._owner,
                    )
                ) from exc

    async def _abort_open_uploads(self) -> set[str]:
        """Abort the upload of every object in progress; return the keys that stay open."""
        leftovers: set[str] = set()
        for stream in self._streams.values():
            obj = stream.current
            stream.current = None
            stream.buffer, stream.buffered_records = bytearray(), 0
            stream.object_bytes = 0
            if obj is None or obj.upload_id is None:
                continue
            try:
                await self._abort_upload(obj.key, obj.upload_id)
            except SinkError:
                leftovers.add(obj.key)
        return leftovers

    def _run_directory(self, dataset: Dataset) -> str:
        return f"{self._prefix}{dataset}/{self._run.partition}/"

    def _is_run_key(self, key: str) -> bool:
        """The manifest or a data object of this run (not of a run whose id extends this one)."""
        if key == self._manifest_key:
            return True
        for dataset in DATASETS:
            directory = self._run_directory(dataset)
            if key.startswith(directory) and is_run_file(key[len(directory) :], self._run.run_id):
                return True
        return False

    async def _sweep(self) -> set[str]:
        """Abort every upload of this run that S3 lists (other runs' uploads are left alone).

        Catches uploads whose CreateMultipartUpload succeeded but whose answer never arrived.
        Returns the keys still open (listing or aborting failed).
        """
        leftovers: set[str] = set()
        params: dict[str, Any] = {"Prefix": self._prefix}
        while True:
            try:
                page = await self._attempt(
                    "ListMultipartUploads", self._client.list_multipart_uploads, **params
                )
            except RetryFailed:
                return {f"{self._where(self._prefix)}* (ListMultipartUploads failed)"}
            for upload in page.get("Uploads") or ():
                key = str(upload.get("Key", ""))
                if not self._is_run_key(key):
                    continue
                try:
                    await self._abort_upload(key, str(upload["UploadId"]))
                except SinkError:
                    leftovers.add(key)
            if not page.get("IsTruncated"):
                return leftovers
            params["KeyMarker"] = page.get("NextKeyMarker", "")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    # -- the manifest ------------------------------------------------------------------------

    async def _put_manifest(self, status: str, summary: Mapping[str, Any]) -> dict[str, Any]:
        records: dict[Dataset, int] = dict.fromkeys(DATASETS, 0)
        for entry in self._files:
            records[entry.dataset] += entry.records
        manifest = build_manifest(
            run=self._run,
            status=status,
            destination=self.url,
            compression=self._compress,
            summary=summary,
            records=records,
            files=self._files,
        )
        body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        await self._put(self._manifest_key, body, "application/json")
        self._manifest = manifest
        return manifest

    async def _put(self, key: str, body: bytes, content_type: str) -> None:
        """A small object in one PutObject (atomic), checksummed and encrypted like the data."""
        checksum = _b64(checksum_digest(self._checksum, body))
        answer = await self._call(
            "PutObject",
            self._client.put_object,
            Key=key,
            Body=body,
            ContentType=content_type,
            ChecksumAlgorithm=self._checksum,
            **self._checksum_header(checksum),
            **self._encryption(),
        )
        self._check_checksum(answer, checksum, self._where(key))
