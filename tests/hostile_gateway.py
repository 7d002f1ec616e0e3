"""A Storage Gateway endpoint that answers whatever a test tells it to, for hostile-input tests.

The emulator answers like AWS; this server answers like a broken proxy, a buggy API release or an
attacker in the path would: any status, any bytes, any content type, at any pace (a trickle of
one byte a second, or a flood that never says how large it is). It runs on loopback in a
daemon thread with its own event loop (the scan under test runs in the test's thread), records
every request it gets, and takes its answers from :attr:`HostileGateway.responder`, which a test
replaces between scans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web

from fleetscan.emulator._loop_thread import LoopThread

TARGET_PREFIX = "StorageGateway_20130630."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, byte for byte. ``content_type`` None leaves it to aiohttp, which says
    application/octet-stream (it always sends one).

    With ``piece_bytes``, the body goes out chunked (no Content-Length) in pieces of that size,
    each after ``pause`` seconds: ``piece_bytes=1, pause=1.0`` trickles a byte a second. The
    body is then ``body`` with ``filler`` repeated ``filler_times`` times at ``filler_at``,
    produced piece by piece, so a 100 MB answer never exists whole on this side.
    """

    body: bytes
    status: int = 200
    content_type: str | None = JSON_CONTENT_TYPE
    piece_bytes: int | None = None
    pause: float = 0.0
    filler: bytes = b""
    filler_times: int = 0
    filler_at: int = 0

    def pieces(self) -> Iterator[bytes]:
        size = self.piece_bytes or len(self.body) or 1
        yield from _split(self.body[: self.filler_at], size)
        if self.filler_times:
            per_piece = max(1, size // max(1, len(self.filler)))
            left = self.filler_times
            while left:
                count = min(per_piece, left)
                yield self.filler * count
                left -= count
        yield from _split(self.body[self.filler_at :], size)


def _split(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def json_answer(payload: object, status: int = 200) -> Answer:
    return Answer(orjson.dumps(payload), status)


@dataclass(frozen=True)
class Request:
    operation: str
    params: Any  # what the scanner sent, as JSON (normally a dict)
    #: The request as it arrived: method, path with query, headers, body bytes.
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Responder = Callable[[Request], Answer]


def _no_answer(request: Request) -> Answer:
    return json_answer({"__type": "InternalServerError", "message": "no responder set"}, 500)


@dataclass
class HostileGateway:
    """The server; :meth:`start` it, point ``AWS_ENDPOINT_URL_STORAGE_GATEWAY`` at ``url``."""

    host: str = "127.0.0.1"
    responder: Responder = _no_answer
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _thread: LoopThread = field(default_factory=lambda: LoopThread("hostile-gateway"))
    _runner: web.AppRunner | None = None

    def reset(self, responder: Responder) -> None:
        """Answer the next scan with ``responder`` and forget the requests seen so far."""
        self.responder = responder
        self.requests = []

    async def _handle(self, http_request: web.Request) -> web.StreamResponse:
        target = http_request.headers.get("X-Amz-Target", "")
        operation = target.removeprefix(TARGET_PREFIX)
        raw = await http_request.read()
        try:
            params: Any = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            params = raw
        request = Request(
            operation,
            params,
            method=http_request.method,
            path=http_request.path_qs,
            headers=dict(http_request.headers),
            body=raw,
        )
        self.requests.append(request)
        answer = self.responder(request)
        if answer.piece_bytes is not None:
            return await self._stream(http_request, answer)
        response = web.Response(body=answer.body, status=answer.status)
        if answer.content_type is not None:
            response.headers["Content-Type"] = answer.content_type
        return response

    async def _stream(self, http_request: web.Request, answer: Answer) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status)
        if answer.content_type is not None:
            response.headers["Content-Type"] = answer.content_type
        response.enable_chunked_encoding()
        await response.prepare(http_request)
        try:
            for piece in answer.pieces():
                if answer.pause:
                    await asyncio.sleep(answer.pause)
                await response.write(piece)
            await response.write_eof()
        except ConnectionError:
            pass  # the client hung up (as it should on a trickle or a flood)
        return response

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        port = runner.addresses[0][1]
        self._runner = runner
        self.url = f"http://{self.host}:{port}"

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> Self:
        self._thread.start(self._start, self._cleanup)
        return self

    def stop(self) -> None:
        self._thread.stop(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
