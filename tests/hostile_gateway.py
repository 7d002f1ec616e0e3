"""A Storage Gateway endpoint that answers whatever a test tells it to, for hostile-input tests.

The emulator answers like AWS; this server answers like a broken proxy, a buggy API release or an
attacker in the path would: any status, any bytes, any content type. It runs on loopback in a
daemon thread with its own event loop (the scan under test runs in the test's thread), records
every request it gets, and takes its answers from :attr:`HostileGateway.responder`, which a test
replaces between scans.
"""

from __future__ import annotations

from collections.abc import Callable
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
    application/octet-stream (it always sends one)."""

    body: bytes
    status: int = 200
    content_type: str | None = JSON_CONTENT_TYPE


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
        response = web.Response(body=answer.body, status=answer.status)
        if answer.content_type is not None:
            response.headers["Content-Type"] = answer.content_type
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
