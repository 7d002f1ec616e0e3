"""Small documents that several processes of one run share: read, listed, and created once.

The shards of a run agree through a few small files under the destination (the plan, each
shard's manifest, the run's manifest), written by whichever process gets there first and never
replaced: a local file is created under a temporary name and then linked to its name (``link``
fails if the name exists, whatever is there), an S3 object is put with ``If-None-Match: *`` (S3
answers 412 if the key exists). Either way exactly one writer wins, and the others read the
winner's document instead.
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread

from .._exceptions import ConfigError, FleetscanError, SinkError
from .._localfs import Tree, write_all
from .._retry import RetryFailed, retry_call
from ._read import MANIFEST_KEY
from ._s3 import CHECKSUM_PARAM, S3_TRANSIENT_CODES, S3Options, checksum_digest
from ._s3io import WRITER_POLICY, S3Reader, describe_failure


class RunStore:
    """The destination of a run (a directory or ``s3://bucket/prefix/``), for shared documents.

    Use as an async context manager. ``options`` (S3 only) gives the encryption, checksum and
    expected bucket owner of every object written, as the run's data objects get them. The run
    id and destination are checked as a scan checks them: bad ones raise :class:`ConfigError`.
    """

    def __init__(
        self,
        destination: str,
        *,
        profile: str | None = None,
        file_mode: int = 0o600,
        options: S3Options | None = None,
        create: bool = True,
    ) -> None:
        self.destination = destination
        self._s3 = destination.startswith("s3://")
        self._root = Path(os.path.abspath(destination))
        self._profile = profile
        self._file_mode = file_mode
        self._options = options or S3Options(profile=profile)
        #: Create a local destination that does not exist (False: refuse it).
        self._create = create
        self._reader: S3Reader | None = None
        self._tree: Tree | None = None

    async def __aenter__(self) -> Self:
        if self._s3:
            reader = S3Reader(
                self.destination,
                profile=self._profile,
                expected_bucket_owner=self._options.expected_bucket_owner,
                policy=WRITER_POLICY,
            )
            self._reader = await reader.__aenter__()
        else:
            mode = self._file_mode | ((self._file_mode & 0o444) >> 2) | 0o700
            root = self._root
            try:
                self._tree = await anyio.to_thread.run_sync(
                    lambda: Tree(root, field="output", dir_mode=mode, create=self._create)
                )
            except FileNotFoundError:
                raise ConfigError("output", f"{root} does not exist") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            await self._reader.__aexit__(exc_type, exc, tb)
            self._reader = None
        if self._tree is not None:
            self._tree.close()
            self._tree = None

    @property
    def root(self) -> str:
        """The destination as manifests name it: an absolute directory, or the S3 URL."""
        if self._reader is not None:
            return self._reader.dest
        assert self._tree is not None
        return str(self._tree.root)

    def where(self, relpath: str) -> str:
        """``relpath`` for messages: a path or an ``s3://`` URL."""
        if self._reader is not None:
            return self._reader.url(relpath)
        assert self._tree is not None
        return str(self._tree.path(relpath))

    async def read(self, relpath: str) -> bytes | None:
        """The document at ``relpath``, or None if there is none."""
        if self._reader is not None:
            try:
                return await self._reader.read(relpath)
            except FileNotFoundError:
                return None
        tree = self._tree
        assert tree is not None

        def read() -> bytes | None:
            try:
                return tree.read(relpath)
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(read)

    async def manifests(self) -> list[str]:
        """The relpath of every run manifest (``manifests/dt=…/<run id>.json``), by name only:
        from a listing (``s3:ListBucket``), none of them read. A local entry of ``manifests/``
        that is not a directory of ours (a file, a planted link) is passed over."""
        if self._reader is not None:
            keys = [key async for key in self._reader.keys("manifests/")]
        else:
            tree = self._tree
            assert tree is not None

            def listed() -> list[str]:
                found: list[str] = []
                for day in tree.names("manifests"):
                    try:
                        names = tree.names(f"manifests/{day}")
                    except (ConfigError, OSError):
                        continue  # a stray file, or a link (never followed): no run's day
                    found.extend(f"manifests/{day}/{name}" for name in names)
                return found

            keys = await anyio.to_thread.run_sync(listed)
        return [key for key in keys if MANIFEST_KEY.fullmatch(key)]

    async def exists(self, relpath: str) -> bool:
        if self._reader is not None:
            return await self._reader.exists(relpath)
        tree = self._tree
        assert tree is not None
        return await anyio.to_thread.run_sync(tree.lstat, relpath) is not None

    async def create(self, relpath: str, data: bytes) -> bool:
        """Write ``data`` at ``relpath`` unless something is there: True if this call wrote it.

        A local file is complete and durable before it gets its name; an S3 object is put whole.
        """
        if self._reader is not None:
            return await self._put_if_absent(relpath, data)
        tree = self._tree
        assert tree is not None
        return await anyio.to_thread.run_sync(self._link_if_absent, tree, relpath, data)

    def _link_if_absent(self, tree: Tree, relpath: str, data: bytes) -> bool:
        try:
            tree.directory(relpath.rpartition("/")[0])
            fd, temporary = tree.create_temporary(relpath, self._file_mode)
            try:
                try:
                    write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    tree.link(temporary, relpath)
                except FileExistsError:
                    return False
            finally:
                with contextlib.suppress(OSError):
                    tree.unlink(temporary)
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise SinkError(f"cannot write {tree.path(relpath)}: {reason}") from exc
        return True

    async def _put_if_absent(self, relpath: str, data: bytes) -> bool:
        reader = self._reader
        assert reader is not None
        options = self._options
        params: dict[str, Any] = {
            "Bucket": reader.bucket,
            "Key": reader.prefix + relpath,
            "Body": data,
            "ContentType": "application/json",
            "IfNoneMatch": "*",
            # Checksummed as the run's data objects are: S3 refuses a body damaged on the way.
            "ChecksumAlgorithm": options.checksum_algorithm,
            CHECKSUM_PARAM[options.checksum_algorithm]: base64.b64encode(
                checksum_digest(options.checksum_algorithm, data)
            ).decode("ascii"),
        }
        if options.sse:
            params["ServerSideEncryption"] = options.sse
        if options.sse_kms_key_id:
            params["SSEKMSKeyId"] = options.sse_kms_key_id
        if options.bucket_key_enabled:
            params["BucketKeyEnabled"] = True
        if options.expected_bucket_owner:
            params["ExpectedBucketOwner"] = options.expected_bucket_owner
        client = reader.client

        async def put() -> dict[str, Any]:
            answer: dict[str, Any] = await client.put_object(**params)
            return answer

        try:
            await retry_call(
                put,
                operation="PutObject",
                max_attempts=options.max_attempts,
                backoff=options.backoff,
                retryable_codes=S3_TRANSIENT_CODES,
            )
        except RetryFailed as exc:
            # 412: the key exists. (An earlier attempt of this very call may have created it,
            # its answer lost: then the document there is ours, and reading it gives the same.)
            if exc.failure.error_code in ("PreconditionFailed", "412"):
                return False
            # 409: another conditional write of the key was in progress; the other one wins.
            if exc.failure.error_code in ("ConditionalRequestConflict", "409"):
                return False
            where, owner = reader.url(relpath), options.expected_bucket_owner
            raise FleetscanError(
                describe_failure(exc, where, policy=WRITER_POLICY, expected_bucket_owner=owner)
            ) from exc
        return True
