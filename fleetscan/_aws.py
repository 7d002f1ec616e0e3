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

The scan's own Storage Gateway calls (nine in ten of its calls) go through
:class:`~._storagegateway.StorageGatewayClient`, built on the region's client: same endpoint,
same HTTP session, same exceptions, without botocore's per-request pipeline.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar, Protocol

import aiobotocore
import anyio
import botocore
import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioCredentialResolver
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from botocore.credentials import ReadOnlyCredentials
from botocore.loaders import Loader

from ._exceptions import FleetscanError
from ._storagegateway import StorageGatewayClient


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


_current: contextvars.ContextVar[FrozenCredentialSource] = contextvars.ContextVar(
    "fleetscan_credentials"
)


@contextlib.contextmanager
def acting_as(source: FrozenCredentialSource) -> Iterator[None]:
    """Make every AWS call in this task (and tasks it starts) sign with ``source``."""
    token = _current.set(source)
    try:
        yield
    finally:
        _current.reset(token)


async def refresh_current() -> None:
    """Make sure the current task's credentials are fresh *before* it takes a call slot.

    A refresh is itself a call (AssumeRole); doing it while holding a slot could exhaust the
    slots with calls that all wait for a refresh.
    """
    source = _current.get(None)
    if source is not None:
        await source.get_frozen_credentials()


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
        self._session = new_session(profile)
        self._credentials: Any = None

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        if self._credentials is None:
            self._credentials = await self._session.get_credentials()
            if self._credentials is None:
                raise FleetscanError(
                    "no AWS credentials found (environment, profile or instance role)"
                )
        frozen: ReadOnlyCredentials = await self._credentials.get_frozen_credentials()
        return frozen


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


class _SharedPoolSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped
    """aiobotocore's HTTP session, with the connector of its scan instead of one of its own.

    The first client builds the connector exactly as aiobotocore would (same SSL verification,
    CA bundle, proxies and limits); every later client reuses it. A client closing its session
    may close the shared connector too; clients are only closed together, at the end of a scan.
    """

    connectors: ClassVar[_SharedConnectors]

    async def _create_connector(self, proxy_url: str | None) -> Any:
        create = functools.partial(super()._create_connector, proxy_url)
        return await self.connectors.get(proxy_url, create)


def _pooled_session_class(connectors: _SharedConnectors) -> type[AIOHTTPSession]:
    """aiobotocore takes a session *class*: one per scan carries that scan's connectors."""
    return type("FleetscanHTTPSession", (_SharedPoolSession,), {"connectors": connectors})


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
    ) -> None:
        self._session = new_session(profile)
        self._session.register_component(
            "credential_provider", AioCredentialResolver([_ContextProvider()])
        )
        self._connectors = _SharedConnectors()
        self._config = AioConfig(
            http_session_cls=_pooled_session_class(self._connectors),
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            parameter_validation=False,
            tcp_keepalive=True,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._storage_gateways: dict[str, StorageGatewayClient] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> AwsClients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._clients.clear()
        self._storage_gateways.clear()
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

    @property
    def open_clients(self) -> int:
        return len(self._clients)
