"""A fault-injecting loopback HTTP proxy in front of moto's S3 server.

Why a proxy: moto serves S3 faithfully but cannot fail on demand (no SlowDown, no 5xx, no
connection reset, no lost answer), and the sink must be shown to survive those on real HTTP with
the real aiobotocore client. So the client talks to this proxy, which forwards every request to
moto unchanged and, for the requests a test picks, answers an S3 error instead, drops the
connection, or holds the answer back. It also records what went over the wire (operation, key,
part, headers, the checksum of the bytes received), which is what the tests check the sink's
promises against. It is the only stand-in in these tests; S3 itself is moto, over HTTP.

It also checks the bucket's owner as S3 does, when told who owns it (``owner``): moto 5.2
ignores ``x-amz-expected-bucket-owner`` (checked: GetObject, HeadObject and ListObjectsV2 with
another account's id succeed), so without this no test could see S3 refuse a request whose
expected owner is not the bucket's.
"""

from __future__ import annotations

import base64
import hashlib
import io
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import anyio
from aiohttp import web

Action = Literal[
    "error",
    "slowdown",
    "reset",
    "hang",
    "lose_answer",
    "hang_after_forward",
    "trickle",
    "slow_read",
]
#: ``trickle``: seconds between two bytes of the answer; ``slow_read``: the request's body is
#: read in pieces of this many bytes, each after ``SLOW_READ_PAUSE`` seconds.
TRICKLE_PAUSE = 0.5
SLOW_READ_PIECE = 256 * 1024
SLOW_READ_PAUSE = 0.1

_DROP_REQUEST = {"host", "expect", "content-length", "transfer-encoding", "connection"}
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "date", "server"}
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"
)


@dataclass
class Fault:
    """Do ``action`` to the ``nth`` distinct target of ``operation`` (a part of an upload, an
    object key), for its first ``times`` attempts (None: every attempt, i.e. for good).

    error: 500 InternalError. slowdown: 503 SlowDown. reset: drop the connection before
    forwarding. hang: hold the request (not forwarded) until the proxy closes. lose_answer:
    forward (S3 acts), then drop the connection. hang_after_forward: forward, then hold the answer.
    trickle: forward, then send the answer's body a byte every ``TRICKLE_PAUSE`` seconds (with
    its Content-Length). slow_read: read the request's body slowly (a slow uplink), then forward.
    """

    operation: str
    nth: int
    action: Action
    times: int | None = 1
    key_contains: str = ""


@dataclass
class Seen:
    """One request as it reached the proxy."""

    operation: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    body_bytes: int
    body_crc32: str
    body_sha256: str
    #: The status answered (0: the connection was dropped or the answer held back).
    status: int = 0
    fault: str = ""

    @property
    def target(self) -> tuple[str, str, str]:
        return (self.key, self.query.get("uploadId", ""), self.query.get("partNumber", ""))


@dataclass
class FaultyS3Proxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    #: The account that owns every bucket behind the proxy (None: not checked). A request that
    #: names another one in ``x-amz-expected-bucket-owner`` is answered as S3 answers it: 403
    #: AccessDenied, "Access Denied" (a HEAD: 403 without a body), and never forwarded.
    owner: str | None = None

    def __post_init__(self) -> None:
        #: Set when a request starts being held (``hang`` or ``hang_after_forward``).
        self.holding = anyio.Event()
        self._release = anyio.Event()
        self._targets: dict[str, list[tuple[str, str, str]]] = {}
        self._attempts: dict[tuple[str, tuple[str, str, str]], int] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FaultyS3Proxy:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=False, shutdown_timeout=1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what the tests read -----------------------------------------------------------------

    def requests(self, operation: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.operation == operation]

    def expected_owners(self) -> set[str | None]:
        """The ``x-amz-expected-bucket-owner`` of every request seen (None: sent without one)."""
        return {seen.headers.get("x-amz-expected-bucket-owner") for seen in self.seen}

    # -- serving -----------------------------------------------------------------------------

    @staticmethod
    def _operation(method: str, key: str, query: dict[str, str]) -> str:
        if method == "PUT":
            if "uploadId" in query and "partNumber" in query:
                return "UploadPart"
            return "PutObject" if key else "CreateBucket"
        if method == "POST":
            return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        if method == "HEAD":
            return "HeadObject" if key else "HeadBucket"
        if "uploads" in query:
            return "ListMultipartUploads"
        if "list-type" in query:
            return "ListObjectsV2"
        return "GetObject" if key else "ListObjects"

    def _fault_for(self, operation: str, key: str, target: tuple[str, str, str]) -> Fault | None:
        targets = self._targets.setdefault(operation, [])
        if target not in targets:
            targets.append(target)
        attempt_key = (operation, target)
        self._attempts[attempt_key] = self._attempts.get(attempt_key, 0) + 1
        attempt = self._attempts[attempt_key]
        for fault in self.faults:
            if fault.operation != operation or fault.key_contains not in key:
                continue
            matching = [t for t in targets if fault.key_contains in t[0]]
            if target not in matching or matching.index(target) + 1 != fault.nth:
                continue
            if fault.times is None or attempt <= fault.times:
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path  # bucket/key, percent-decoded
        bucket_and_key = path.lstrip("/").split("/", 1)
        key = bucket_and_key[1] if len(bucket_and_key) > 1 else ""
        query = {k: v for k, v in urllib.parse.parse_qsl(request.query_string, True)}
        operation = self._operation(request.method, key, query)
        target = (key, query.get("uploadId", ""), query.get("partNumber", ""))
        fault = self._fault_for(operation, key, target)
        if fault is not None and fault.action == "slow_read":
            body = await self._read_slowly(request)
        else:
            body = await request.read()
        seen = Seen(
            operation=operation,
            key=key,
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body_bytes=len(body),
            body_crc32=base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode(),
            body_sha256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )
        self.seen.append(seen)
        expected = seen.headers.get("x-amz-expected-bucket-owner")
        if self.owner is not None and expected is not None and expected != self.owner:
            if request.method == "HEAD":
                seen.status = 403
                return web.Response(status=403)
            return self._error(seen, 403, "AccessDenied", "Access Denied")
        if fault is not None:
            seen.fault = fault.action
            if fault.action == "error":
                return self._error(seen, 500, "InternalError", "We encountered an internal error.")
            if fault.action == "slowdown":
                return self._error(seen, 503, "SlowDown", "Please reduce your request rate.")
            if fault.action == "reset":
                return self._drop(request)
            if fault.action == "hang":
                return await self._hold(request)
        status, headers, answer = await self._forward(request, body)
        if fault is not None and fault.action == "lose_answer":
            return self._drop(request)
        if fault is not None and fault.action == "hang_after_forward":
            return await self._hold(request)
        seen.status = status
        if fault is not None and fault.action == "trickle":
            return await self._trickle(request, status, headers, answer)
        return web.Response(status=status, headers=headers, body=answer)

    @staticmethod
    async def _read_slowly(request: web.Request) -> bytes:
        pieces = []
        while piece := await request.content.read(SLOW_READ_PIECE):
            pieces.append(piece)
            await anyio.sleep(SLOW_READ_PAUSE)
        return b"".join(pieces)

    @staticmethod
    async def _trickle(
        request: web.Request, status: int, headers: dict[str, str], answer: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(answer)
        await response.prepare(request)
        try:
            for index in range(len(answer)):
                await anyio.sleep(TRICKLE_PAUSE)
                await response.write(answer[index : index + 1])
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up (as it should)
        return response

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=io.BytesIO(body),
            allow_redirects=False,
        ) as response:
            answer = await response.read()
            kept = {k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE}
            return response.status, kept, answer

    @staticmethod
    def _error(seen: Seen, status: int, code: str, message: str) -> web.Response:
        seen.status = status
        return web.Response(
            status=status,
            content_type="application/xml",
            body=_ERROR_XML.format(code=code, message=message).encode(),
        )

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    async def _hold(self, request: web.Request) -> web.Response:
        self.holding.set()
        await self._release.wait()
        return self._drop(request)
