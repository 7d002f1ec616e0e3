"""S3 as both sides use it: the client every S3 call goes through, and an object reader.

The writer (:mod:`._s3`), the checkpoint loader and the run readers all build on this module and
on nothing of each other, so the sink package has no import cycle.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import anyio
import botocore.exceptions
from aiobotocore.config import AioConfig

from .._aws import (
    CALL_TIMEOUT,
    MAX_S3_ANSWER_BYTES,
    bounded_session_class,
    new_session,
    transfer_deadline,
)
from .._config import parse_s3_url
from .._exceptions import ConfigError, FleetscanError
from .._retry import Backoff, CallTimeout, RetryFailed, retry_call

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

#: Bytes read from a file or an object body at a time.
CHUNK = 1 << 20
#: Attempts per S3 read (and re-opens of a body that broke off).
READ_ATTEMPTS = 5


def create_s3_client(
    *,
    profile: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    call_timeout: float = CALL_TIMEOUT,
    max_pool_connections: int = 4,
) -> AbstractAsyncContextManager[Any]:
    """An S3 client from an ordinary aiobotocore session: ambient credentials, ``--profile``,
    ``AWS_ENDPOINT_URL_S3``, ``AWS_CA_BUNDLE`` and proxies as the SDK reads them.

    botocore's retries are off (fleetscan retries itself). Without a configured region the
    client signs for us-east-1; botocore follows S3's redirect to a bucket's own region. Each
    attempt is bounded like every AWS call (:class:`fleetscan._aws.BoundedHTTPSession`): a
    deadline of ``call_timeout`` plus the time its body needs at the slowest rate allowed,
    and answers other than object bodies capped at ``MAX_S3_ANSWER_BYTES``.
    """
    session = new_session(profile)
    region = session.get_config_variable("region") or "us-east-1"
    config = AioConfig(
        http_session_cls=bounded_session_class(call_timeout, MAX_S3_ANSWER_BYTES),
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )
    client: AbstractAsyncContextManager[Any] = session.create_client(
        "s3", region_name=region, config=config
    )
    return client


#: The files of configs/iam that grant what each kind of S3 user needs, for refusals to name.
WRITER_POLICY: Final = "s3-writer.json"
READER_POLICY: Final = "s3-reader.json"
RESUME_POLICY: Final = "s3-resume.json"


def describe_failure(
    exc: RetryFailed, where: str, *, policy: str, expected_bucket_owner: str | None = None
) -> str:
    """One line for people: what failed, where, how often, and S3's own words; a refusal names
    ``policy``, the file of ``configs/iam`` that grants what the failed request needed.

    S3 answers a request whose ``expected_bucket_owner`` is not the bucket's owner with the
    same 403 AccessDenied as a missing permission, so a refusal names both causes when an owner
    was expected: a bucket deleted and re-created by another account looks exactly like this.
    """
    failure = exc.failure
    text = f"S3 {exc.operation} of {where} failed"
    if exc.attempts > 1:
        text += f" after {exc.attempts} attempts"
    text += f": {failure.error_code}"
    if failure.message:
        text += f": {failure.message}"
    if failure.error_code in ("AccessDenied", "403") and expected_bucket_owner is not None:
        text += (
            f" (either the bucket is not owned by account {expected_bucket_owner}, the expected "
            f"bucket owner, or a permission is missing: see configs/iam/{policy})"
        )
    elif failure.error_code in ("AccessDenied", "403", "AllAccessDisabled"):
        text += f" (see configs/iam/{policy} for the permissions fleetscan needs)"
    elif failure.error_code == "NoSuchBucket":
        text += " (create the bucket first, or check the name)"
    return text


class S3Reader:
    """The objects under one ``s3://bucket/prefix/``, read with fleetscan's retries."""

    def __init__(
        self,
        dest: str,
        *,
        profile: str | None = None,
        call_timeout: float = CALL_TIMEOUT,
        expected_bucket_owner: str | None = None,
        policy: str = READER_POLICY,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(dest, "dest")
        #: The file of configs/iam a refusal names: the reader's, unless a writer or a resume
        #: reads through this.
        self._policy = policy
        self.dest = f"s3://{self.bucket}/{self.prefix}"
        self._profile = profile
        #: Sent with every call when set: a scan told which account owns its bucket reads
        #: nothing (plans, checkpoints, earlier runs) from a bucket someone else owns.
        self._expected_owner = expected_bucket_owner
        self._call_timeout = call_timeout
        self._backoff = Backoff()
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> Self:
        try:
            self._client = await self._stack.enter_async_context(
                create_s3_client(profile=self._profile, call_timeout=self._call_timeout)
            )
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError("profile", str(exc)) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client = None
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()

    def url(self, relpath: str) -> str:
        return self.dest + relpath

    @property
    def client(self) -> Any:
        """The open S3 client (inside ``async with``), for writers built on this reader."""
        if self._client is None:
            raise RuntimeError("S3Reader used outside its async with block")
        return self._client

    async def _call(self, operation: str, relpath: str, **params: Any) -> dict[str, Any]:
        method = getattr(self._client, _SNAKE[operation])
        params["Bucket"] = self.bucket
        if self._expected_owner is not None:
            params["ExpectedBucketOwner"] = self._expected_owner

        async def call() -> dict[str, Any]:
            answer: dict[str, Any] = await method(**params)
            return answer

        try:
            return await retry_call(
                call, operation=operation, max_attempts=READ_ATTEMPTS, backoff=self._backoff
            )
        except RetryFailed as exc:
            if exc.failure.error_code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.url(relpath)} does not exist") from None
            where = self.url(relpath)
            owner = self._expected_owner
            raise FleetscanError(
                describe_failure(exc, where, policy=self._policy, expected_bucket_owner=owner)
            ) from exc

    async def exists(self, relpath: str) -> bool:
        """Whether an object is there (HeadObject: needs s3:GetObject, not s3:ListBucket)."""
        try:
            await self._call("HeadObject", relpath, Key=self.prefix + relpath)
        except FileNotFoundError:
            return False
        return True

    async def read(self, relpath: str) -> bytes:
        """A whole (small) object."""
        return b"".join([chunk async for chunk in self.chunks(relpath)])

    async def chunks(self, relpath: str) -> AsyncGenerator[bytes, None]:
        """An object's bytes in order; a body that breaks off is re-opened where it stopped
        (and only if the object is still the same one).

        A body must keep arriving: each opening of it has ``call_timeout``, plus a second per
        64 KiB of what it says it holds (without a length, of what arrived plus a chunk), and
        breaks off at that deadline however steadily a trickle comes.
        """
        offset = 0
        etag: str | None = None
        reopened = 0
        while True:
            params: dict[str, Any] = {"Key": self.prefix + relpath}
            if etag is not None:
                params.update(Range=f"bytes={offset}-", IfMatch=etag)
            answer = await self._call("GetObject", relpath, **params)
            etag = etag or answer.get("ETag")
            body = answer["Body"]
            length = answer.get("ContentLength")
            declared = length if isinstance(length, int) else 0
            opened = anyio.current_time()
            received = 0
            try:
                async with body:
                    while True:
                        expected = declared if received < declared else received + CHUNK
                        seconds = transfer_deadline(self._call_timeout, expected)
                        chunk: bytes | None = None
                        with anyio.CancelScope(deadline=opened + seconds):
                            chunk = await body.read(CHUNK)
                        if chunk is None:
                            raise CallTimeout(endpoint_url=self.url(relpath), seconds=seconds)
                        if not chunk:
                            return
                        received += len(chunk)
                        offset += len(chunk)
                        yield chunk
            except Exception as exc:
                if not _broke_off(exc):
                    raise
                broke: Exception = exc
            reopened += 1
            if etag is None or reopened >= READ_ATTEMPTS:
                raise FleetscanError(f"reading {self.url(relpath)} broke off: {broke}") from broke
            await anyio.sleep(self._backoff.delay(reopened))

    async def keys(self, relprefix: str) -> AsyncIterator[str]:
        """The relpath of every object whose relpath starts with ``relprefix``, from a listing."""
        params: dict[str, Any] = {"Prefix": self.prefix + relprefix}
        while True:
            page = await self._call("ListObjectsV2", relprefix, **params)
            for item in page.get("Contents") or ():
                yield str(item["Key"])[len(self.prefix) :]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token


def _broke_off(exc: Exception) -> bool:
    """A connection lost while a body was read: aiohttp's payload errors, botocore's streaming
    and timeout errors, or a plain socket error."""
    module = type(exc).__module__.split(".", 1)[0]
    return isinstance(exc, OSError | EOFError) or module in ("aiohttp", "botocore", "aiobotocore")


_SNAKE = {
    "GetObject": "get_object",
    "HeadObject": "head_object",
    "ListObjectsV2": "list_objects_v2",
}
