"""The emulated AWS services over HTTP on loopback, answering from a :class:`Fleet`.

One aiohttp server answers Storage Gateway and Organizations (AWS JSON 1.1, ``X-Amz-Target``),
and STS and EC2 ``DescribeRegions`` (query protocols, form bodies, XML answers). Every request
needs a SigV4 ``Authorization`` header whose credential scope names the service it calls. The
caller's account is decoded from the access key id in the scope (AWS key ids encode the account,
and the emulator's and moto's session keys use the same layout), the region is the scope's; a
session token the emulator issued also tells the caller's role and when the session expires.

Signatures are parsed but **not verified**: verifying would only cost CPU without making a
scanner's behaviour any more faithful (and moto's session secrets are unknown here). Unsigned,
malformed or undecodable credentials, expired sessions and tokens that do not belong to their key
are refused with the errors each service gives.

Answers validate against botocore's shapes. Fault injection (:mod:`._faults`) and counters
(:mod:`._counters`) make the bad days of a fleet reproducible, and ``/_emulator/*`` (unsigned,
loopback only) reads counters and changes faults while it runs.

The request path is kept lean (a few hundred microseconds per call on one core, most of it
aiohttp, asyncio's TLS and the event loop): no regex compiled per call, orjson, ready-made answers
per (account, region) and per organization, which :meth:`EmulatorServer.prepare` renders before
the first call, and caches of parsed credential scopes, session tokens and effective fault rules.
Nothing costs more per call as the fleet or the run grows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import itertools
import random
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, NamedTuple, Self

import orjson
from aiohttp import web

from ._counters import Counters
from ._ec2 import Ec2
from ._faults import NO_FAULT, FaultRule, Faults, TokenBucket
from ._fleet import STORAGE_GATEWAY_REGIONS, Fleet, account_id_from_access_key
from ._identity import INVALID_TOKEN, Roles, Session, SessionIssuer, parse_token
from ._loop_thread import LoopThread
from ._organizations import TARGET_PREFIX as ORGANIZATIONS_PREFIX
from ._organizations import Organizations
from ._storage_gateway import TARGET_PREFIX as STORAGE_GATEWAY_PREFIX
from ._storage_gateway import StorageGateway
from ._sts import VERSION as STS_VERSION
from ._sts import Sts
from ._tls import TLSMaterial
from ._wire import ApiError, Call, Service, parse_form

_EC2_VERSION = "2016-11-15"
_KNOWN_REGIONS = frozenset(STORAGE_GATEWAY_REGIONS)
_AUTH_CACHE_LIMIT = 100_000
_LINGER_RESET = struct.pack("ii", 1, 0)
_MISSING_TOKEN_MESSAGE = "Request is missing Authentication Token"
_INVALID_TOKEN_MESSAGE = "The security token included in the request is invalid."
_EXPIRED_TOKEN_MESSAGE = "The security token included in the request is expired"


class Caller(NamedTuple):
    """Whom a request's credentials name, from the SigV4 credential scope."""

    account_id: str
    region: str
    service: str
    access_key_id: str


class AuthFailure(NamedTuple):
    """Why a request's credentials cannot be used; each service words it its own way."""

    kind: str  # missing, incomplete, invalid_signature, unrecognized or expired
    message: str


class _Server(web.Server):
    """aiohttp's low-level server, which also tells ``on_lost`` of each closed connection."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        on_lost: Callable[[web.RequestHandler], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._on_lost = on_lost

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        self._on_lost(handler)
        super().connection_lost(handler, exc)


class EmulatorServer:
    """The emulated services on an aiohttp server, on loopback.

    Use as an async context manager, or :meth:`start` / :meth:`stop`. ``faults`` may be
    reassigned at any time (token buckets start afresh); ``counters`` accumulate until reset.
    ``host`` must be a loopback address (an IP literal, so that ``port=0`` yields one port):
    the emulator is for this machine only. ``roles`` says which roles the fleet's accounts hold
    (default: ``FleetscanReader`` everywhere and ``FleetscanOrgReader`` in each management
    account, no external id). ``clock`` (seconds since the epoch) dates the sessions STS issues
    and judges their expiry; tests may move it.
    """

    def __init__(
        self,
        fleet: Fleet,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSMaterial | None = None,
        roles: Roles | None = None,
    ) -> None:
        _require_loopback(host)
        self.fleet = fleet
        self.host = host
        self.port = port
        self.tls = tls
        self.roles = roles if roles is not None else Roles(fleet)
        self.counters = Counters()
        self.clock: Callable[[], float] = time.time
        #: Connections (their aiohttp protocol objects) that have carried an API call; a closed
        #: one is forgotten (:class:`_Server` says when). Not weak references: uvloop's
        #: transports and aiohttp's protocols take none.
        self._api_connections: set[web.RequestHandler] = set()
        self._faults = faults if faults is not None else Faults()
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._random = random.Random()
        self._auth_cache: dict[str, Caller | AuthFailure] = {}
        self._token_cache: dict[str, Session | object | None] = {}
        #: Seconds a session key works after its first use (None: until it expires); see
        #: ``credential_ttl``.
        self.credential_ttl: float | None = None
        self._key_first_seen: dict[str, float] = {}
        self._sleepers: set[asyncio.Task[Any]] = set()
        self._runner: web.ServerRunner | None = None
        self._endpoint_url: str | None = None
        self._request_ids = itertools.count(1)
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self.storage_gateway = StorageGateway(fleet)
        self.sts = Sts(fleet, self.roles, SessionIssuer(), lambda: self.clock())
        self.organizations = Organizations(fleet)
        self.ec2 = Ec2(fleet)
        self._by_target: dict[str, Service] = {
            STORAGE_GATEWAY_PREFIX: self.storage_gateway,
            ORGANIZATIONS_PREFIX: self.organizations,
        }
        self._by_version: dict[str, Service] = {STS_VERSION: self.sts, _EC2_VERSION: self.ec2}

    def prepare(self) -> None:
        """Render now the answers each service would otherwise render on first use (every
        populated pair's gateways and recovery points, every organization's pages), so that a
        scan against a fresh emulator meets its per-call cost only. ``fleetscan emulator serve``
        does this before it announces itself; call it before :meth:`start`."""
        self.storage_gateway.prepare()
        self.organizations.prepare()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        if not isinstance(faults, Faults):
            raise TypeError(f"faults must be a Faults, got {type(faults).__name__}")
        self._faults = faults
        self._buckets = {}

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("the emulator is not running: start() it first")
        return self._endpoint_url

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server(self._handle, self._api_connections.discard, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        ssl_context = self.tls.server_ssl_context() if self.tls is not None else None
        site = web.TCPSite(runner, self.host, self.port, ssl_context=ssl_context, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        self._endpoint_url = f"{scheme}://{host}:{port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._sleepers):  # slow and delayed calls: do not wait them out
            task.cancel()
        await runner.cleanup()
        self._endpoint_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/" and request.method == "POST":
            counters = self.counters
            counters.enter()
            connection = request.protocol
            if connection not in self._api_connections:
                # A client's connection pool is visible here: each new connection, once.
                self._api_connections.add(connection)
                counters.connection()
            try:
                return await self._api(request)
            except ConnectionResetError:  # the client went away (killed, timed out)
                return web.Response(status=400)  # nobody to answer
            finally:
                counters.leave()
        if request.path.startswith("/_emulator/"):
            return await self._admin(request)
        return self._json_response(
            404, {"message": f"no route for {request.method} {request.path}"}
        )

    def _request_id(self) -> str:
        return f"{self._request_id_prefix}{next(self._request_ids):012x}"

    @staticmethod
    def _response(service: Service, status: int, body: bytes, request_id: str) -> web.Response:
        return web.Response(
            body=body,
            status=status,
            headers={"Content-Type": service.protocol.content_type, "x-amzn-RequestId": request_id},
        )

    def _error(self, service: Service, error: ApiError, request_id: str) -> web.Response:
        self.counters.error(error.code)
        return self._response(
            service, error.status, service.protocol.error_body(error, request_id), request_id
        )

    def _reject(self, service: Service, error: ApiError, request_id: str) -> web.Response:
        """Refuse a request before it became a call (unsigned, unknown key, bad scope)."""
        self.counters.reject(error.code)
        return self._response(
            service, error.status, service.protocol.error_body(error, request_id), request_id
        )

    async def _api(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        request_id = self._request_id()
        raw: bytes | None = None
        target = headers.get("X-Amz-Target")
        if target is not None:  # AWS JSON 1.1: the target names the service and operation
            prefix, _, operation = target.partition(".")
            service = self._by_target.get(prefix, self.storage_gateway)
        else:  # the query protocols: the form's Version names the service
            raw = await request.read()
            form = parse_form(raw)
            service = self._by_version.get(form.get("Version", ""), self.sts)
            operation = form.get("Action", "")

        authorization = headers.get("Authorization")
        caller = self._caller(authorization, headers)
        if isinstance(caller, AuthFailure):
            return self._reject(service, service.auth_error(*caller), request_id)
        account_id, region, scope, access_key_id = caller
        if scope != service.name:
            error = service.auth_error(
                "invalid_signature",
                f"Credential should be scoped to correct service: '{service.name}'. ",
            )
            return self._reject(service, error, request_id)
        session = self._session(headers.get("X-Amz-Security-Token"), access_key_id)
        if session is INVALID_TOKEN:
            error = service.auth_error("unrecognized", _INVALID_TOKEN_MESSAGE)
            return self._reject(service, error, request_id)
        if isinstance(session, Session) and session.expires <= self.clock():
            error = service.auth_error("expired", _EXPIRED_TOKEN_MESSAGE)
            return self._error(service, error, request_id)
        if (
            self.credential_ttl is not None
            and access_key_id.startswith("ASIA")
            and self._expired(access_key_id)
        ):
            self.counters.fault("expired_token")
            error = service.auth_error("expired", _EXPIRED_TOKEN_MESSAGE)
            return self._error(service, error, request_id)
        handler = service.handlers.get(operation)
        if handler is None:
            return self._error(service, service.unknown_operation(operation), request_id)
        self.counters.call(operation, account_id, region)

        call = Call(
            account_id,
            region,
            operation,
            {},
            access_key_id,
            session if isinstance(session, Session) else None,
            request_id,
        )
        malformed = False
        faults = self._faults
        if faults:
            organization = self.fleet.organization_of(account_id)
            rule = faults.for_call(
                account_id, region, operation, None if organization is None else organization.id
            )
            if rule is not NO_FAULT:
                outcome = await self._inject(request, rule, service, call)
                if isinstance(outcome, web.StreamResponse):
                    return outcome
                malformed = outcome

        try:
            if raw is None:
                raw = await request.read()
            call.params = service.protocol.parse(raw)
            body = handler(call)
            status = 200
        except ApiError as error:
            if not malformed:
                return self._error(service, error, request_id)
            body = service.protocol.error_body(error, request_id)
        if malformed:
            status = 200
            body = body[: len(body) // 2]
        return self._response(service, status, body, request_id)

    def _session(self, token: str | None, access_key_id: str) -> Session | object | None:
        """The caller's session: a :class:`Session` for a token the emulator issued to this key,
        :data:`INVALID_TOKEN` for a token of ours that is not this key's (or a session key sent
        without a token), None for long-term keys and other issuers' tokens."""
        if token is None:
            return INVALID_TOKEN if access_key_id.startswith("ASIA") else None
        session = self._token_cache.get(token)
        if session is None and token not in self._token_cache:
            session = parse_token(token)
            if len(self._token_cache) >= _AUTH_CACHE_LIMIT:
                self._token_cache.clear()
            self._token_cache[token] = session
        if isinstance(session, Session) and session.access_key_id != access_key_id:
            return INVALID_TOKEN
        return session

    def _expired(self, access_key_id: str) -> bool:
        """Session keys "expire" ``credential_ttl`` seconds after this server first saw them.

        Real session keys expire on a clock the scanner cannot see; this makes a scan longer
        than a session cheap to test (an AssumeRole session lasts at least 15 minutes).
        """
        now = time.monotonic()
        if len(self._key_first_seen) >= _AUTH_CACHE_LIMIT:
            self._key_first_seen.clear()
        first = self._key_first_seen.setdefault(access_key_id, now)
        return now - first > (self.credential_ttl or 0.0)

    def _caller(self, authorization: str | None, headers: Any) -> Caller | AuthFailure:
        """Whom the SigV4 credential scope names, or why it cannot be used."""
        if not authorization or not authorization.startswith("AWS4-"):
            return AuthFailure("missing", _MISSING_TOKEN_MESSAGE)
        start = authorization.find("Credential=")
        if start < 0:
            return self._incomplete_signature(authorization, headers)
        start += len("Credential=")
        end = authorization.find(",", start)
        credential = authorization[start : end if end >= 0 else len(authorization)].strip()
        if (
            "SignedHeaders=" not in authorization
            or "Signature=" not in authorization
            or ("X-Amz-Date" not in headers and "Date" not in headers)
        ):
            return self._incomplete_signature(authorization, headers)
        cached = self._auth_cache.get(credential)
        if cached is None:
            cached = _parse_credential(credential)
            if len(self._auth_cache) >= _AUTH_CACHE_LIMIT:
                self._auth_cache.clear()
            self._auth_cache[credential] = cached
        return cached

    @staticmethod
    def _incomplete_signature(authorization: str, headers: Any) -> AuthFailure:
        missing = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if f"{name}=" not in authorization
        ]
        if "X-Amz-Date" not in headers and "Date" not in headers:
            missing.append(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                "header."
            )
        return AuthFailure("incomplete", " ".join(missing))

    async def _inject(
        self, request: web.BaseRequest, rule: FaultRule, service: Service, call: Call
    ) -> web.StreamResponse | bool:
        """Apply a rule's faults. A response ends the call; otherwise, whether to malform it."""
        counters = self.counters
        if rule.access_denied:
            counters.fault("access_denied")
            return self._error(service, service.access_denied(call), call.request_id)
        if rule.throttle_rate is not None:
            key = (call.account_id, call.region, service.name)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(rule.throttle_rate, rule.throttle_burst)
            else:
                bucket.reconfigure(rule.throttle_rate, rule.throttle_burst)
            if not bucket.take():
                counters.fault("throttle")
                return self._error(service, service.throttled(), call.request_id)
        if rule.latency_ms or rule.jitter_ms:
            counters.fault("latency")
            delay = rule.latency_ms + self._random.uniform(0.0, rule.jitter_ms)
            await self._sleep(delay / 1000.0)
        draw = self._random.random()
        threshold = rule.reset_rate
        if draw < threshold:
            counters.fault("reset")
            _reset_connection(request)
            return web.Response(status=500)  # never sent: the connection is gone
        threshold += rule.slow_rate
        if draw < threshold:
            counters.fault("slow")
            await self._sleep(rule.slow_seconds)
            return False
        threshold += rule.internal_error_rate
        if draw < threshold:
            counters.fault("internal_error")
            error = service.internal_error(rule.internal_error_status)
            return self._error(service, error, call.request_id)
        threshold += rule.malformed_rate
        if draw < threshold:
            counters.fault("malformed")
            return True
        threshold += rule.empty_page_rate
        if draw < threshold and call.operation.startswith("List") and service is self.organizations:
            counters.fault("empty_page")
            call.empty_page = True
        return False

    async def _sleep(self, seconds: float) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - handlers always run in a task
            await asyncio.sleep(seconds)
            return
        self._sleepers.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._sleepers.discard(task)

    # -- admin --------------------------------------------------------------------------------

    def _json_response(self, status: int, doc: Any) -> web.Response:
        return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")

    async def _admin(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/_emulator/counters" and method == "GET":
            return self._json_response(200, self.counters.snapshot())
        if path == "/_emulator/counters/reset" and method == "POST":
            self.counters.reset()
            return self._json_response(200, self.counters.snapshot())
        if path == "/_emulator/faults" and method == "GET":
            return self._json_response(200, self._faults.to_dict())
        if path == "/_emulator/faults" and method == "PUT":
            try:
                faults = Faults.from_json(await request.read())
            except ValueError as exc:
                return self._json_response(400, {"message": str(exc)})
            self.faults = faults
            return self._json_response(200, faults.to_dict())
        return self._json_response(404, {"message": f"no route for {method} {path}"})


def _require_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"emulator host {host!r} is not an IP address: use 127.0.0.1 or ::1"
        ) from None
    if not address.is_loopback:
        raise ValueError(f"emulator host {host} is not a loopback address: use 127.0.0.1 or ::1")


def _parse_credential(credential: str) -> Caller | AuthFailure:
    """``AKID/date/region/service/aws4_request`` -> the caller, or why it cannot be used."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        return AuthFailure(
            "incomplete",
            f"Credential should be scoped to a valid region, not a malformed scope "
            f"'{'/'.join(parts[1:])}'.",
        )
    access_key_id, _date, region, service, terminator = parts
    if terminator != "aws4_request":
        return AuthFailure(
            "incomplete",
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator}'.",
        )
    if region not in _KNOWN_REGIONS:
        return AuthFailure(
            "invalid_signature", f"Credential should be scoped to a valid region, not '{region}'. "
        )
    account_id = account_id_from_access_key(access_key_id)
    if account_id is None:
        return AuthFailure("unrecognized", _INVALID_TOKEN_MESSAGE)
    return Caller(account_id, region, service, access_key_id)


def _reset_connection(request: web.BaseRequest) -> None:
    """Abort with SO_LINGER 0, so the client sees a TCP RST rather than a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class EmulatorThread:
    """The same server in a daemon thread with its own event loop: for sync code, pytest
    fixtures shared across tests, and the stack. ``faults`` can be set from any thread."""

    def __init__(
        self,
        fleet: Fleet,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSMaterial | None = None,
        roles: Roles | None = None,
    ) -> None:
        self.server = EmulatorServer(fleet, faults, host=host, port=port, tls=tls, roles=roles)
        # asyncio's loop, not uvloop's: a uvloop loop in this (daemon) thread crashed the
        # process (SIGSEGV) once when a signal ended serve while it started.
        self._thread = LoopThread("fleetscan-emulator")

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def counters(self) -> Counters:
        return self.server.counters

    @property
    def fleet(self) -> Fleet:
        return self.server.fleet

    @property
    def credential_ttl(self) -> float | None:
        return self.server.credential_ttl

    @credential_ttl.setter
    def credential_ttl(self, seconds: float | None) -> None:
        self.server.credential_ttl = seconds  # one attribute write: safe across threads

    @property
    def faults(self) -> Faults:
        return self.server.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        loop = self._thread.loop
        if loop is None or not self._thread.running:
            self.server.faults = faults
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def assign() -> None:
            try:
                self.server.faults = faults
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(assign)
        done.result(timeout=10)

    def start(self) -> Self:
        self._thread.start(self.server.start, self.server.stop)
        return self

    def stop(self) -> None:
        self._thread.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
