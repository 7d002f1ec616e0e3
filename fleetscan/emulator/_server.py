"""Storage Gateway over AWS JSON 1.1 on loopback, answering from a :class:`Fleet`.

Requests are what AWS expects: ``POST /`` with ``X-Amz-Target: StorageGateway_20130630.<Op>``
and a SigV4 ``Authorization`` header. The caller's account is decoded from the access key id in
the credential scope (AWS key ids encode the account, and moto's AssumeRole keys use the same
layout), the region is the credential scope's, and a gateway of any other account or region does
not exist for the caller, as on AWS.

Signatures are parsed but **not verified**: the secrets of keys that moto issues through
AssumeRole are unknown here, and verifying would only cost CPU without making a scanner's
behaviour any more faithful. Unsigned, malformed or undecodable credentials are refused with
the errors AWS gives.

Answers validate against botocore's output shapes; errors carry AWS's ``__type``, ``message``
and, for Storage Gateway's own exceptions, ``error.errorCode``. Fault injection
(:mod:`._faults`) and counters (:mod:`._counters`) make the bad days of a fleet reproducible, and
``/_emulator/*`` (unsigned, loopback only) reads counters and changes faults while it runs.

The request path is kept lean (a few hundred microseconds per call on one core, most of it
aiohttp): no regex compiled per call, orjson, per-(account, region) views of the fleet with
ready-made JSON fragments, and a cache of parsed credential scopes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import itertools
import random
import re
import socket
import struct
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import web

from ._counters import Counters
from ._faults import NO_FAULT, FaultRule, Faults, TokenBucket
from ._fleet import STORAGE_GATEWAY_REGIONS, Fleet, Gateway, account_id_from_access_key
from ._loop_thread import LoopThread
from ._tls import TLSMaterial

TARGET_PREFIX = "StorageGateway_20130630."
CONTENT_TYPE = "application/x-amz-json-1.1"
#: ListGateways and ListVolumes page size: the default and the most AWS returns.
MAX_PAGE_SIZE = 100

#: botocore 1.43's model gives GatewayARN only a length (50-500); the pattern is the one the model
#: gives VolumeARN, cut after the gateway id, as ``aws-facts.md`` states for both ARNs.
GATEWAY_ARN_PATTERN = (
    r"arn:(aws(|-cn|-us-gov|-iso[A-Za-z0-9_-]*|-eusc)):storagegateway:[a-z\-0-9]+:[0-9]+:"
    r"gateway\/(.+)"
)
_GATEWAY_ARN_RE = re.compile(GATEWAY_ARN_PATTERN)
_MARKER_MAX = 2000

_CORAL = "com.amazon.coral.service#"
_KNOWN_REGIONS = frozenset(STORAGE_GATEWAY_REGIONS)
_AUTH_CACHE_LIMIT = 100_000
_PAIR_CACHE_LIMIT = 16_384
_LINGER_RESET = struct.pack("ii", 1, 0)

Payload = dict[str, Any]


class ApiError(Exception):
    """An error answer in AWS JSON 1.1 form.

    ``type_`` goes to ``__type`` as AWS sends it (framework errors carry a ``prefix#``, which
    botocore strips). ``error_code`` adds Storage Gateway's ``error`` object, which botocore
    exposes as ``e.response["error"]`` for the modeled exceptions.
    """

    def __init__(
        self,
        status: int,
        type_: str,
        message: str | None,
        error_code: str | None = None,
        error_details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or type_)
        self.status = status
        self.type_ = type_
        self.message = message
        self.error_code = error_code
        self.error_details = error_details or {}

    @property
    def code(self) -> str:
        """What botocore reports as ``Error.Code`` (prefix stripped), with the errorCode."""
        code = self.type_.rsplit("#", 1)[-1]
        return f"{code}/{self.error_code}" if self.error_code else code

    def body(self) -> bytes:
        doc: dict[str, Any] = {"__type": self.type_}
        if self.message is not None:
            doc["message"] = self.message
        if self.error_code is not None:
            doc["error"] = {"errorCode": self.error_code, "errorDetails": self.error_details}
        return orjson.dumps(doc)


def _gateway_error(code: str, message: str, arn: str) -> ApiError:
    return ApiError(400, "InvalidGatewayRequestException", message, code, {"gatewayArn": arn})


def _gateway_not_found(arn: str) -> ApiError:
    return _gateway_error("GatewayNotFound", "The specified gateway was not found.", arn)


def _validation_error(problems: list[str]) -> ApiError:
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return ApiError(
        400,
        "com.amazon.coral.validate#ValidationException",
        f"{count} validation {noun} detected: " + "; ".join(problems),
    )


def _serialization_error(message: str) -> ApiError:
    return ApiError(400, _CORAL + "SerializationException", message)


_MISSING_TOKEN = ApiError(
    403, _CORAL + "MissingAuthenticationTokenException", "Request is missing Authentication Token"
)
_EXPIRED_TOKEN = ApiError(
    400, _CORAL + "ExpiredTokenException", "The security token included in the request is expired"
)
_UNRECOGNIZED_CLIENT = ApiError(
    400,
    _CORAL + "UnrecognizedClientException",
    "The security token included in the request is invalid.",
)
_THROTTLED = ApiError(400, "com.amazon.coral.availability#ThrottlingException", "Rate exceeded")
_INTERNAL_MESSAGE = "An internal server error has occurred during the request."


class _PairView:
    """One (account, region) as the API sees it: gateways in ARN order, lookups, JSON pieces."""

    __slots__ = ("by_arn", "gateways", "list_fragments", "lvrp_bodies")

    def __init__(self, gateways: Iterable[Gateway]) -> None:
        # ListGateways "is ordered by gateway Amazon Resource Name (ARN)" (the API reference).
        self.gateways: tuple[Gateway, ...] = tuple(sorted(gateways, key=lambda g: g.arn))
        self.by_arn: dict[str, Gateway] = {g.arn: g for g in self.gateways}
        self.list_fragments: list[bytes] = [orjson.dumps(_gateway_info(g)) for g in self.gateways]
        self.lvrp_bodies: dict[str, bytes] = {}


_EMPTY_PAIR = _PairView(())


def _gateway_info(gateway: Gateway) -> Payload:
    info: Payload = {
        "GatewayId": gateway.id,
        "GatewayARN": gateway.arn,
        "GatewayType": gateway.type,
        "GatewayOperationalState": gateway.operational_state,
        "GatewayName": gateway.name,
    }
    if gateway.ec2_instance_id is not None:
        info["Ec2InstanceId"] = gateway.ec2_instance_id
        info["Ec2InstanceRegion"] = gateway.region
    info["HostEnvironment"] = gateway.host_environment
    info["SoftwareVersion"] = gateway.software_version
    return info


def _recovery_points_body(gateway: Gateway) -> bytes:
    infos = []
    for volume in gateway.volumes:
        info: Payload = {
            "VolumeARN": volume.arn,
            "VolumeRecoveryPointTime": volume.recovery_point_time_text,
            # The API page's own sample sends the size as a JSON string; some volumes do too.
            "VolumeSizeInBytes": str(volume.size_bytes)
            if volume.size_as_string
            else volume.size_bytes,
        }
        if volume.usage_bytes is not None:  # absent for volumes created before May 2015
            info["VolumeUsageInBytes"] = volume.usage_bytes
        infos.append(info)
    return orjson.dumps({"GatewayARN": gateway.arn, "VolumeRecoveryPointInfos": infos})


def _describe_body(gateway: Gateway) -> bytes:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, gateway.arn).bytes
    doc: Payload = {
        "GatewayARN": gateway.arn,
        "GatewayId": gateway.id,
        "GatewayName": gateway.name,
        "GatewayTimezone": "GMT",
        "GatewayState": "RUNNING",
        "GatewayNetworkInterfaces": [
            {"Ipv4Address": f"10.{digest[0]}.{digest[1]}.{digest[2] or 1}"}
        ],
        "GatewayType": gateway.type,
        "HostEnvironment": gateway.host_environment,
        "EndpointType": "STANDARD",
        "SoftwareVersion": gateway.software_version,
        "Tags": [],
    }
    if gateway.ec2_instance_id is not None:
        doc["Ec2InstanceId"] = gateway.ec2_instance_id
        doc["Ec2InstanceRegion"] = gateway.region
    return orjson.dumps(doc)


def _volume_info(gateway: Gateway) -> list[tuple[str, Payload]]:
    volume_type = "CACHED iSCSI" if gateway.is_cached else "STORED iSCSI"
    return [
        (
            volume.arn,
            {
                "VolumeARN": volume.arn,
                "VolumeId": volume.id,
                "GatewayARN": gateway.arn,
                "GatewayId": gateway.id,
                "VolumeType": volume_type,
                "VolumeSizeInBytes": volume.size_bytes,
                "VolumeAttachmentStatus": "ATTACHED",
            },
        )
        for volume in gateway.volumes
    ]


def _page_limit(params: Payload, problems: list[str]) -> int:
    limit = params.get("Limit")
    if limit is None:
        return MAX_PAGE_SIZE
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise _serialization_error(
            f"{type(limit).__name__.upper()}_VALUE can not be converted to an Integer"
        )
    if limit < 1:
        problems.append(
            f"Value '{limit}' at 'limit' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1"
        )
    elif limit > MAX_PAGE_SIZE:
        problems.append(
            f"Value '{limit}' at 'limit' failed to satisfy constraint: "
            f"Member must have value less than or equal to {MAX_PAGE_SIZE}"
        )
    return int(limit)


def _marker(params: Payload, problems: list[str]) -> str | None:
    marker = params.get("Marker")
    if marker is None:
        return None
    if not isinstance(marker, str):
        raise _serialization_error(
            f"{type(marker).__name__.upper()}_VALUE can not be converted to a String"
        )
    if not 1 <= len(marker) <= _MARKER_MAX:
        bound = "greater than or equal to 1" if not marker else "less than or equal to 2000"
        problems.append(
            f"Value '{marker}' at 'marker' failed to satisfy constraint: "
            f"Member must have length {bound}"
        )
    return marker


def _gateway_arn(params: Payload, problems: list[str], required: bool) -> str | None:
    arn = params.get("GatewayARN")
    if arn is None:
        if required:
            problems.append(
                "Value null at 'gatewayARN' failed to satisfy constraint: Member must not be null"
            )
        return None
    if not isinstance(arn, str):
        raise _serialization_error(
            f"{type(arn).__name__.upper()}_VALUE can not be converted to a String"
        )
    if len(arn) < 50:
        problems.append(
            f"Value '{arn}' at 'gatewayARN' failed to satisfy constraint: "
            "Member must have length greater than or equal to 50"
        )
    elif len(arn) > 500:
        problems.append(
            f"Value '{arn}' at 'gatewayARN' failed to satisfy constraint: "
            "Member must have length less than or equal to 500"
        )
    if _GATEWAY_ARN_RE.fullmatch(arn) is None:
        problems.append(
            f"Value '{arn}' at 'gatewayARN' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {GATEWAY_ARN_PATTERN}"
        )
    return arn


def _page(fragments: list[bytes], start: int, limit: int, key: bytes, head: bytes) -> bytes:
    end = start + limit
    body = head + key + b":[" + b",".join(fragments[start:end]) + b"]"
    if end < len(fragments):
        body += b',"Marker":"' + str(end).encode() + b'"'
    return b"{" + body + b"}"


def _start_of(marker: str | None, total: int) -> int:
    """Markers are opaque to clients; here they are the index of the next item."""
    if marker is None:
        return 0
    if marker.isdigit() and int(marker) < max(total, 1):
        return int(marker)
    raise ApiError(
        400,
        "InvalidGatewayRequestException",
        "The specified request contains invalid parameters.",
        "InvalidParameters",
        {"marker": marker},
    )


class EmulatorServer:
    """The Storage Gateway emulator on an aiohttp server, on loopback.

    Use as an async context manager, or :meth:`start` / :meth:`stop`. ``faults`` may be
    reassigned at any time (token buckets start afresh); ``counters`` accumulate until reset.
    ``host`` must be a loopback address (an IP literal, so that ``port=0`` yields one port):
    the emulator is for this machine only.
    """

    def __init__(
        self,
        fleet: Fleet,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLSMaterial | None = None,
    ) -> None:
        _require_loopback(host)
        self.fleet = fleet
        self.host = host
        self.port = port
        self.tls = tls
        self.counters = Counters()
        #: Connections that have carried an API call (weak: a closed one is forgotten).
        self._seen_transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._faults = faults if faults is not None else Faults()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._random = random.Random()
        self._pairs: dict[tuple[str, str], _PairView] = {}
        self._auth_cache: dict[str, tuple[str, str] | ApiError] = {}
        #: Seconds a key works after its first use (None: forever); see ``credential_ttl``.
        self.credential_ttl: float | None = None
        self._key_first_seen: dict[str, float] = {}
        self._sleepers: set[asyncio.Task[Any]] = set()
        self._runner: web.ServerRunner | None = None
        self._endpoint_url: str | None = None
        self._request_ids = itertools.count(1)
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self._handlers: dict[str, Callable[[str, str, Payload], bytes]] = {
            TARGET_PREFIX + "ListGateways": self._list_gateways,
            TARGET_PREFIX + "ListVolumeRecoveryPoints": self._list_volume_recovery_points,
            TARGET_PREFIX + "DescribeGatewayInformation": self._describe_gateway_information,
            TARGET_PREFIX + "ListVolumes": self._list_volumes,
        }

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
        server = web.Server(self._handle, access_log=None)
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
            transport = request.transport
            if transport is not None and transport not in self._seen_transports:
                # A client's connection pool is visible here: each new connection, once.
                self._seen_transports.add(transport)
                counters.connection()
            try:
                return await self._api(request)
            finally:
                counters.leave()
        if request.path.startswith("/_emulator/"):
            return await self._admin(request)
        return self._json_response(
            404, {"message": f"no route for {request.method} {request.path}"}
        )

    def _response(self, status: int, body: bytes) -> web.Response:
        request_id = f"{self._request_id_prefix}{next(self._request_ids):012x}"
        return web.Response(
            body=body,
            status=status,
            headers={"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id},
        )

    def _error(self, error: ApiError) -> web.Response:
        self.counters.error(error.code)
        return self._response(error.status, error.body())

    async def _api(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        caller = self._caller(headers.get("Authorization"), headers)
        if isinstance(caller, ApiError):
            self.counters.reject(caller.code)
            return self._response(caller.status, caller.body())
        account_id, region = caller
        if self.credential_ttl is not None and self._expired(headers.get("Authorization", "")):
            self.counters.fault("expired_token")
            return self._error(_EXPIRED_TOKEN)
        target = headers.get("X-Amz-Target", "")
        handler = self._handlers.get(target)
        if handler is None:
            return self._error(ApiError(400, _CORAL + "UnknownOperationException", None))
        operation = target[len(TARGET_PREFIX) :]
        self.counters.call(operation, account_id, region)

        malformed = False
        rule = self._faults.for_call(account_id, region, operation)
        if rule is not NO_FAULT:
            outcome = await self._inject(request, rule, account_id, region, operation)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            malformed = outcome

        try:
            raw = await request.read()
        except ConnectionResetError:  # the client went away (killed, timed out): nobody to answer
            return web.Response(status=400)
        try:
            try:
                params = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                raise _serialization_error("Invalid JSON in request body") from None
            if not isinstance(params, dict):
                raise _serialization_error("Start of structure or map expected")
            body = handler(account_id, region, params)
            status = 200
        except ApiError as error:
            if not malformed:
                return self._error(error)
            body = error.body()
        if malformed:
            status = 200
            body = body[: len(body) // 2]
        return self._response(status, body)

    def _expired(self, authorization: str) -> bool:
        """Keys "expire" ``credential_ttl`` seconds after this server first saw them.

        Real session keys expire on a clock the scanner cannot see; this makes a scan longer
        than a session cheap to test (an AssumeRole session lasts at least 15 minutes).
        """
        start = authorization.find("Credential=") + len("Credential=")
        key = authorization[start : authorization.find("/", start)]
        now = time.monotonic()
        if len(self._key_first_seen) >= _AUTH_CACHE_LIMIT:
            self._key_first_seen.clear()
        first = self._key_first_seen.setdefault(key, now)
        return now - first > (self.credential_ttl or 0.0)

    def _caller(self, authorization: str | None, headers: Any) -> tuple[str, str] | ApiError:
        """(account, region) from the SigV4 credential scope, or the error AWS answers."""
        if not authorization or not authorization.startswith("AWS4-"):
            return _MISSING_TOKEN
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
    def _incomplete_signature(authorization: str, headers: Any) -> ApiError:
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
        return ApiError(400, _CORAL + "IncompleteSignatureException", " ".join(missing))

    async def _inject(
        self,
        request: web.BaseRequest,
        rule: FaultRule,
        account_id: str,
        region: str,
        operation: str,
    ) -> web.StreamResponse | bool:
        """Apply a rule's faults. A response ends the call; otherwise, whether to malform it."""
        counters = self.counters
        if rule.access_denied:
            counters.fault("access_denied")
            return self._error(
                ApiError(
                    400,
                    _CORAL + "AccessDeniedException",
                    f"User: arn:aws:sts::{account_id}:assumed-role/emulated/fleetscan is not "
                    f"authorized to perform: storagegateway:{operation} on resource: "
                    f"arn:aws:storagegateway:{region}:{account_id}:gateway/*",
                )
            )
        if rule.throttle_rate is not None:
            key = (account_id, region)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(rule.throttle_rate, rule.throttle_burst)
            else:
                bucket.reconfigure(rule.throttle_rate, rule.throttle_burst)
            if not bucket.take():
                counters.fault("throttle")
                return self._error(_THROTTLED)
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
            return self._error(
                ApiError(
                    rule.internal_error_status,
                    "InternalServerError",
                    _INTERNAL_MESSAGE,
                    "InternalError",
                )
            )
        threshold += rule.malformed_rate
        if draw < threshold:
            counters.fault("malformed")
            return True
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

    # -- operations ---------------------------------------------------------------------------

    def _pair(self, account_id: str, region: str) -> _PairView:
        key = (account_id, region)
        view = self._pairs.get(key)
        if view is None:
            gateways = self.fleet.gateways(account_id, region)
            if not gateways:
                return _EMPTY_PAIR
            view = _PairView(gateways)
            if len(self._pairs) >= _PAIR_CACHE_LIMIT:
                del self._pairs[next(iter(self._pairs))]
            self._pairs[key] = view
        return view

    def _gateway(self, account_id: str, region: str, arn: str) -> tuple[_PairView, Gateway]:
        view = self._pair(account_id, region)
        gateway = view.by_arn.get(arn)
        if gateway is None:  # includes gateways of other accounts and regions
            raise _gateway_not_found(arn)
        return view, gateway

    def _list_gateways(self, account_id: str, region: str, params: Payload) -> bytes:
        problems: list[str] = []
        marker = _marker(params, problems)
        limit = _page_limit(params, problems)
        if problems:
            raise _validation_error(problems)
        view = self._pair(account_id, region)
        fragments = view.list_fragments
        if not fragments and marker is None:
            return b'{"Gateways":[]}'
        return _page(fragments, _start_of(marker, len(fragments)), limit, b'"Gateways"', b"")

    def _list_volume_recovery_points(self, account_id: str, region: str, params: Payload) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(params, problems, required=True)
        if problems or arn is None:
            raise _validation_error(problems)
        view, gateway = self._gateway(account_id, region, arn)
        if not gateway.is_cached:
            raise _gateway_error(
                "NotSupported", "This operation is not valid for the specified gateway.", arn
            )
        if not gateway.connected:
            raise _gateway_error(
                "GatewayNotConnected", "The specified gateway is not connected.", arn
            )
        body = view.lvrp_bodies.get(arn)
        if body is None:
            body = view.lvrp_bodies[arn] = _recovery_points_body(gateway)
        return body

    def _describe_gateway_information(self, account_id: str, region: str, params: Payload) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(params, problems, required=True)
        if problems or arn is None:
            raise _validation_error(problems)
        _, gateway = self._gateway(account_id, region, arn)
        if not gateway.connected:
            raise _gateway_error(
                "GatewayNotConnected", "The specified gateway is not connected.", arn
            )
        return _describe_body(gateway)

    def _list_volumes(self, account_id: str, region: str, params: Payload) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(params, problems, required=False)
        marker = _marker(params, problems)
        limit = _page_limit(params, problems)
        if problems:
            raise _validation_error(problems)
        if arn is not None:
            _, gateway = self._gateway(account_id, region, arn)
            if gateway.type not in ("CACHED", "STORED"):
                raise _gateway_error(
                    "NotSupported", "This operation is not valid for the specified gateway.", arn
                )
            volumes = _volume_info(gateway)
        else:  # every volume gateway of the caller in this region
            volumes = [
                item
                for gateway in self._pair(account_id, region).gateways
                if gateway.type in ("CACHED", "STORED")
                for item in _volume_info(gateway)
            ]
        volumes.sort(key=lambda item: item[0])  # "sorted by volume ARN"
        fragments = [orjson.dumps(info) for _, info in volumes]
        head = b'"GatewayARN":' + orjson.dumps(arn) + b"," if arn is not None else b""
        return _page(fragments, _start_of(marker, len(fragments)), limit, b'"VolumeInfos"', head)

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


def _parse_credential(credential: str) -> tuple[str, str] | ApiError:
    """``AKID/date/region/service/aws4_request`` -> (account, region), or the error."""
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        return ApiError(
            400,
            _CORAL + "IncompleteSignatureException",
            f"Credential should be scoped to a valid region, not a malformed scope "
            f"'{'/'.join(parts[1:])}'.",
        )
    access_key_id, _date, region, service, terminator = parts
    if terminator != "aws4_request":
        return ApiError(
            400,
            _CORAL + "IncompleteSignatureException",
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator}'.",
        )
    if service != "storagegateway":
        return ApiError(
            400,
            _CORAL + "InvalidSignatureException",
            "Credential should be scoped to correct service: 'storagegateway'. ",
        )
    if region not in _KNOWN_REGIONS:
        return ApiError(
            400,
            _CORAL + "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{region}'. ",
        )
    account_id = account_id_from_access_key(access_key_id)
    if account_id is None:
        return _UNRECOGNIZED_CLIENT
    return account_id, region


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
    ) -> None:
        self.server = EmulatorServer(fleet, faults, host=host, port=port, tls=tls)
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
