"""The transport boundary: every AWS client fleetscan uses comes from one :class:`AwsClients`.

Why one set of clients for a whole organization: a botocore client costs ~5 ms CPU and its SSL
context 20-45 ms more. A client per (account, region) would spend more CPU constructing clients
than calling APIs at 10,000 accounts x 34 regions. So clients are keyed by (service, region) only,
and *which account* a call acts as is chosen per task: the client's credential provider reads a
context variable that each task sets to its account's (refreshable) credentials. anyio copies the
context into every child task, so a unit's gateway tasks inherit their account automatically.

Why one connection pool for all of them: aiobotocore gives each client its own SSL context and
pool. With a client per region, a scan would build 34 SSL contexts and keep up to 34 pools of idle
TLS connections open (each holds read buffers of up to 256 KiB); one shared pool, as large as the
calls the scan may have in flight, bounds the connections by ``--concurrency`` instead.

Standard SDK configuration is honoured because clients come from an ordinary aiobotocore session:
``AWS_ENDPOINT_URL[_<SERVICE>]``, ``AWS_CA_BUNDLE``, profiles, proxies. botocore's own retries are
off (``total_max_attempts=1``): fleetscan retries itself, per (account, region) and with a budget,
and botocore would not retry the InternalServerError that Storage Gateway sends with HTTP 400.

The scan's own Storage Gateway calls (nine in ten of its calls) and its AssumeRole calls go
through lean clients (:mod:`._lean`), built on the region's client: same endpoint, same HTTP
session, same exceptions, without botocore's per-request pipeline.

Every request of every client (the S3 sink's and readers' too) is bounded in time and size where
all of them pass, in the HTTP session (:class:`BoundedHTTPSession`): a total deadline per
attempt, since a read timeout restarts with every byte and an endpoint trickling its answer
would hold a call for ever; and a cap on the answer's bytes, read as it arrives, since an
answer is parsed whole and a hostile one could be any size.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar, Protocol

import aiobotocore
import aiohttp
import anyio
import botocore
import botocore.exceptions
import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentialResolver
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore.awsrequest import AWSPreparedRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.loaders import Loader
from botocore.utils import determine_content_length

from ._exceptions import FleetscanError
from ._retry import CallTimeout, ResponseTooLarge
from ._storagegateway import StorageGatewayClient
from ._sts import AssumeRoleClient

#: Default total deadline of one attempt of an AWS call, in seconds (``call_timeout``).
CALL_TIMEOUT = 60.0
#: The slowest transfer a deadline allows for on top of ``call_timeout``: a request sending a
#: body (an S3 part) gets one more second per 64 KiB of it, so an 8 MiB part has 60 + 128 s,
#: enough for an uplink of 0.4 Mbit/s; a 1 MiB chunk of an object being read, 16 s more.
MIN_TRANSFER_BYTES_PER_SECOND = 64 * 1024
#: The largest answer body read from an API call (STS, Organizations, EC2, Storage Gateway).
#: The largest legitimate ones are a fraction of it: a ListGateways page of 100 gateways with
#: every field at its documented maximum is about 250 KB (a GatewayARN 500 characters, a
#: GatewayName 255, a HostEnvironmentId 1,024, a Marker 2,000), a ListVolumeRecoveryPoints
#: answer about 700 bytes a volume (a cached gateway has at most 32 volumes; the cap holds
#: 1,500), a ListAccounts page 20 accounts and a NextToken of up to 100,000 characters. A scan
#: holds at most ``concurrency`` answers at once, so the cap also bounds that memory.
MAX_ANSWER_BYTES = 1 << 20
#: The same for S3's answers (S3 object bodies are streamed, not capped): a ListObjectsV2 or
#: ListMultipartUploads page of 1,000 keys of up to 1,024 bytes each, XML-escaped, fits.
MAX_S3_ANSWER_BYTES = 16 << 20


def transfer_deadline(call_timeout: float, body_bytes: int) -> float:
    """Seconds one attempt may take to send or receive ``body_bytes`` (see above)."""
    return call_timeout + body_bytes / MIN_TRANSFER_BYTES_PER_SECOND


@functools.cache
def _data_loader() -> Loader:
    """botocore's data files (endpoints, service models), parsed once per process.

    Every botocore session parses them again otherwise: endpoints.json alone is about 1 MB of
    JSON, 45-90 ms of CPU here, paid by each of the sessions a scan opens (config checks,
    ambient credentials, clients, the S3 sink).
    """
    loader: Loader = botocore.session.Session().get_component("data_loader")
    return loader


def botocore_session() -> botocore.session.Session:
    """A plain (synchronous) botocore session sharing the process's parsed data files."""
    session = botocore.session.Session()
    session.register_component("data_loader", _data_loader())
    return session


def new_session(profile: str | None) -> AioSession:
    """An aiobotocore session for ``profile``, sharing the process's parsed data files."""
    session = AioSession(profile=profile)
    session.register_component("data_loader", _data_loader())
    return session


class FrozenCredentialSource(Protocol):
    """Anything that can hand out a current set of keys (ambient, assumed, chained)."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials: ...

    def expire(self, stale: ReadOnlyCredentials | None) -> None:
        """The service called ``stale`` expired: fetch new keys before the next call.

        Calls that failed together with the same keys ask together; only the first, while
        ``stale`` are still the current keys, causes a refresh.
        """


_current: contextvars.ContextVar[FrozenCredentialSource] = contextvars.ContextVar(
    "fleetscan_credentials"
)
#: The keys the call being made signs with, when its caller fetched them beforehand (Engine.call
#: does, before it takes a call slot); unset, the call asks its task's source.
call_keys: contextvars.ContextVar[ReadOnlyCredentials | None] = contextvars.ContextVar(
    "fleetscan_call_keys", default=None
)


@contextlib.contextmanager
def acting_as(source: FrozenCredentialSource) -> Iterator[None]:
    """Make every AWS call in this task (and tasks it starts) sign with ``source``."""
    token = _current.set(source)
    try:
        yield
    finally:
        _current.reset(token)


def current_source() -> FrozenCredentialSource | None:
    """The credentials the calling task acts as (see :func:`acting_as`), if any."""
    return _current.get(None)


class _ContextCredentials:
    """Credentials whose keys are those of the task making the call."""

    method = "fleetscan-context"

    def get_deferred_property(self, property_name: str) -> Callable[[], None]:
        """botocore asks for the account id to pick account-based endpoints (DynamoDB only).

        It differs per call here, and no service fleetscan calls uses it, so it stays unset.
        """
        return lambda: None

    def get_account_id(self) -> None:
        return None

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return await current_credentials()


async def current_credentials() -> ReadOnlyCredentials:
    """The keys of the account the calling task acts as (see :func:`acting_as`)."""
    keys = call_keys.get()
    if keys is not None:
        return keys
    try:
        source = _current.get()
    except LookupError:
        raise FleetscanError("internal: an AWS call was made outside an account context") from None
    return await source.get_frozen_credentials()


class _ContextProvider:
    METHOD = "fleetscan-context"
    CANONICAL_NAME = "fleetscan-context"

    async def load(self) -> _ContextCredentials:
        return _ContextCredentials()


class AmbientCredentials:
    """The credentials the SDK finds by itself (env, profile, SSO, instance role...)."""

    def __init__(self, profile: str | None) -> None:
        self._profile = profile
        self._session = new_session(profile)
        self._credentials: Any = None
        self._frozen: ReadOnlyCredentials | None = None

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        if self._credentials is None:
            self._credentials = await self._session.get_credentials()
            if self._credentials is None:
                raise FleetscanError(
                    "no AWS credentials found (environment, profile or instance role)"
                )
        frozen: ReadOnlyCredentials = await self._credentials.get_frozen_credentials()
        self._frozen = frozen
        return frozen

    def expire(self, stale: ReadOnlyCredentials | None) -> None:
        """Look for credentials again, as the SDK would in a new process.

        A session caches what it found: a fresh one reads the environment, the profile (an
        assumed role, an SSO cache refreshed meanwhile) or the instance role anew. Keys that
        are simply stale come back the same, and the call's own attempts then run out.
        """
        if stale is not None and stale == self._frozen:
            self._session = new_session(self._profile)
            self._credentials = None
            self._frozen = None


class BoundedHTTPSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped
    """aiobotocore's HTTP session, with every attempt bounded in time and its answer in size.

    aiobotocore takes a session *class*, so the limits are class attributes of a subclass made
    per use (:func:`bounded_session_class`). The deadline covers the whole attempt (a free
    connection, connecting, TLS, sending, the answer's headers and body): a trickling answer
    is cut there and the call fails with :class:`~._retry.CallTimeout`. The answer's body is
    read here, not by aiobotocore, so that reading stops at the cap (and does not start when
    the Content-Length is beyond it); a longer answer fails with
    :class:`~._retry.ResponseTooLarge` and its connection is closed. Bodies a client streams
    (S3 objects) are left to their reader, which has a deadline of its own.
    """

    call_timeout: ClassVar[float] = CALL_TIMEOUT
    max_answer_bytes: ClassVar[int] = MAX_ANSWER_BYTES

    async def send(self, request: AWSPreparedRequest) -> Any:
        body = request.body
        body_bytes = len(body) if isinstance(body, bytes) else determine_content_length(body)
        seconds = transfer_deadline(self.call_timeout, body_bytes or 0)
        streamed = request.stream_output
        response: Any = None
        # asyncio's clock, as anyio's scope reads it (aiobotocore's transport is asyncio-only).
        with anyio.CancelScope(deadline=asyncio.get_running_loop().time() + seconds):
            request.stream_output = True  # so that aiobotocore leaves the body to this method
            try:
                response = await super().send(request)
            finally:
                request.stream_output = streamed
            if not streamed:
                response._content = await self._read_answer(request, response.raw)
            return response
        if response is not None:
            response.raw.close()
        raise CallTimeout(endpoint_url=request.url, seconds=seconds)

    async def _read_answer(self, request: AWSPreparedRequest, raw: aiohttp.ClientResponse) -> bytes:
        """The body, read as it arrives and never beyond the cap.

        Failures are reported as aiobotocore reports them while it reads a body, so that
        :func:`~._retry.classify` sees the same exceptions either way.
        """
        cap = self.max_answer_bytes
        # A HEAD answer's Content-Length is the object's size; it has no body.
        declared = raw.content_length if request.method != "HEAD" else None
        if declared is not None and declared > cap:
            raw.close()
            raise ResponseTooLarge(_too_large(declared, cap))
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await raw.content.readany():
                size += len(chunk)
                if size > cap:
                    raw.close()
                    raise ResponseTooLarge(_too_large(None, cap))
                chunks.append(chunk)
        except TimeoutError as exc:  # aiohttp's read timeout (``read_timeout``) between bytes
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=request.url, error=exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise botocore.exceptions.ConnectionClosedError(
                error=exc, request=request, endpoint_url=request.url
            ) from exc
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(declared: int | None, cap: int) -> str:
    size = f"of {declared:,} bytes " if declared is not None else ""
    return f"the answer {size}is larger than {cap:,} bytes, more than the API sends: not read"


def bounded_session_class(
    call_timeout: float,
    max_answer_bytes: int,
    base: type[BoundedHTTPSession] = BoundedHTTPSession,
    **attributes: Any,
) -> type[AIOHTTPSession]:
    """A ``base`` class with these limits (and ``attributes``), for ``AioConfig``."""
    limits = {"call_timeout": call_timeout, "max_answer_bytes": max_answer_bytes}
    return type("FleetscanHTTPSession", (base,), {**limits, **attributes})


class _SharedConnectors:
    """One aiohttp connector (SSL context and connection pool) per proxy URL, for every client."""

    def __init__(self) -> None:
        self._connectors: dict[str | None, Any] = {}
        self._lock = anyio.Lock()

    async def get(self, proxy_url: str | None, create: Callable[[], Awaitable[Any]]) -> Any:
        async with self._lock:
            connector = self._connectors.get(proxy_url)
            if connector is None:
                connector = self._connectors[proxy_url] = await create()
            return connector

    async def aclose(self) -> None:
        connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            await connector.close()


class _SharedPoolSession(BoundedHTTPSession):
    """The bounded HTTP session, with the connector of its scan instead of one of its own.

    The first client builds the connector exactly as aiobotocore would (same SSL verification,
    CA bundle, proxies and limits); every later client reuses it. A client closing its session
    may close the shared connector too; clients are only closed together, at the end of a scan.
    """

    connectors: ClassVar[_SharedConnectors]

    async def _create_connector(self, proxy_url: str | None) -> Any:
        create = functools.partial(super()._create_connector, proxy_url)
        return await self.connectors.get(proxy_url, create)


def _fix_user_agent(client: Any) -> str:
    """Build the client's User-Agent once instead of twice per request; return it.

    botocore rebuilds it for every request (to add per-request feature flags that fleetscan's
    calls never set), sanitising each component character by character: about a tenth of the
    CPU an aiobotocore call costs here (measured with py-spy). The string is the same for
    every call of a client, so the client's builder returns the first one it built (and so does
    this function, called again on the same client). If a botocore release renames the
    builder, requests keep botocore's own and fleetscan's Storage Gateway calls send the short
    form: correctness does not depend on it.
    """
    creator = getattr(client, "_user_agent_creator", None)
    if creator is None or not callable(getattr(creator, "to_string", None)):
        return f"aiobotocore/{aiobotocore.__version__} botocore/{botocore.__version__}"
    user_agent: str = creator.to_string()
    creator.to_string = lambda: user_agent
    return user_agent


class AwsClients:
    """Owns the session and the (service, region) clients of one scan; an async context manager."""

    def __init__(
        self,
        *,
        profile: str | None,
        max_pool_connections: int,
        connect_timeout: float,
        read_timeout: float,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._session = new_session(profile)
        self._session.register_component(
            "credential_provider", AioCredentialResolver([_ContextProvider()])
        )
        self._connectors = _SharedConnectors()
        self._config = AioConfig(
            # A session class per scan: it carries the scan's connectors and limits.
            http_session_cls=bounded_session_class(
                call_timeout, MAX_ANSWER_BYTES, _SharedPoolSession, connectors=self._connectors
            ),
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            parameter_validation=False,
            tcp_keepalive=True,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._storage_gateways: dict[str, StorageGatewayClient] = {}
        self._assumers: dict[str, AssumeRoleClient] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> AwsClients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._clients.clear()
        self._storage_gateways.clear()
        self._assumers.clear()
        try:
            await self._stack.__aexit__(None, None, None)
        finally:
            await self._connectors.aclose()

    async def client(self, service: str, region: str) -> Any:
        """The shared client for ``service`` in ``region`` (created on first use)."""
        key = (service, region)
        client = self._clients.get(key)
        if client is None:
            client = await self._stack.enter_async_context(
                self._session.create_client(service, region_name=region, config=self._config)
            )
            _fix_user_agent(client)
            # Another task may have created it while we awaited; keep the first, close ours later.
            client = self._clients.setdefault(key, client)
        return client

    async def storage_gateway(self, region: str) -> StorageGatewayClient:
        """The scan's Storage Gateway calls in ``region`` (see :mod:`._storagegateway`)."""
        fast = self._storage_gateways.get(region)
        if fast is None:
            client = await self.client("storagegateway", region)
            fast = self._storage_gateways.setdefault(
                region,
                # The client's User-Agent is already built: this only reads it back.
                StorageGatewayClient(client, current_credentials, _fix_user_agent(client)),
            )
        return fast

    async def sts(self, region: str) -> AssumeRoleClient:
        """The scan's AssumeRole calls through ``region``'s STS endpoint (see :mod:`._sts`)."""
        fast = self._assumers.get(region)
        if fast is None:
            client = await self.client("sts", region)
            fast = self._assumers.setdefault(
                region, AssumeRoleClient(client, current_credentials, _fix_user_agent(client))
            )
        return fast

    @property
    def open_clients(self) -> int:
        return len(self._clients)
