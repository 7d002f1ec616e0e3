"""Storage Gateway over AWS JSON 1.1, answering from the fleet.

A gateway of any account or region other than the caller's does not exist for the caller, as on
AWS. Answers validate against botocore's output shapes; errors carry AWS's ``__type``,
``message`` and, for Storage Gateway's own exceptions, ``error.errorCode``. The hot path is kept
lean: per-(account, region) views of the fleet with ready-made JSON fragments.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable

import orjson

from ._fleet import Fleet, Gateway
from ._wire import (
    ApiError,
    Call,
    JsonProtocol,
    Payload,
    Service,
    dumps_kept,
    validation_message,
)

TARGET_PREFIX = "StorageGateway_20130630"
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
_PAIR_CACHE_LIMIT = 16_384
_INTERNAL_MESSAGE = "An internal server error has occurred during the request."
_THROTTLED = ApiError(400, "com.amazon.coral.availability#ThrottlingException", "Rate exceeded")


def _gateway_error(code: str, message: str, arn: str) -> ApiError:
    return ApiError(400, "InvalidGatewayRequestException", message, code, {"gatewayArn": arn})


def _gateway_not_found(arn: str) -> ApiError:
    return _gateway_error("GatewayNotFound", "The specified gateway was not found.", arn)


def _validation_error(problems: list[str]) -> ApiError:
    return ApiError(
        400, "com.amazon.coral.validate#ValidationException", validation_message(problems)
    )


def _serialization_error(message: str) -> ApiError:
    return ApiError(400, "com.amazon.coral.service#SerializationException", message)


class _PairView:
    """One (account, region) as the API sees it: gateways in ARN order, lookups, JSON pieces."""

    __slots__ = ("by_arn", "gateways", "list_fragments", "lvrp_bodies")

    def __init__(self, gateways: Iterable[Gateway]) -> None:
        # ListGateways "is ordered by gateway Amazon Resource Name (ARN)" (the API reference).
        self.gateways: tuple[Gateway, ...] = tuple(sorted(gateways, key=lambda g: g.arn))
        self.by_arn: dict[str, Gateway] = {g.arn: g for g in self.gateways}
        self.list_fragments: list[bytes] = [dumps_kept(_gateway_info(g)) for g in self.gateways]
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
    return dumps_kept({"GatewayARN": gateway.arn, "VolumeRecoveryPointInfos": infos})


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


class StorageGateway(Service):
    """The four Storage Gateway operations a scanner (and its tests) use."""

    name = "storagegateway"
    protocol = JsonProtocol("message")

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self._pairs: dict[tuple[str, str], _PairView] = {}
        #: The fleet's generation the views were made from: a change to the fleet drops them.
        self._generation = fleet.generation
        self.handlers = {
            "ListGateways": self._list_gateways,
            "ListVolumeRecoveryPoints": self._list_volume_recovery_points,
            "DescribeGatewayInformation": self._describe_gateway_information,
            "ListVolumes": self._list_volumes,
        }

    # -- errors -------------------------------------------------------------------------------

    def throttled(self) -> ApiError:
        return _THROTTLED

    def internal_error(self, status: int) -> ApiError:
        return ApiError(status, "InternalServerError", _INTERNAL_MESSAGE, "InternalError")

    def access_denied(self, call: Call) -> ApiError:
        return ApiError(
            400,
            "com.amazon.coral.service#AccessDeniedException",
            f"User: arn:aws:sts::{call.account_id}:assumed-role/emulated/fleetscan is not "
            f"authorized to perform: storagegateway:{call.operation} on resource: "
            f"arn:aws:storagegateway:{call.region}:{call.account_id}:gateway/*",
        )

    # -- answers rendered ahead of use ----------------------------------------------------------

    def prepare(self) -> None:
        """Render every populated pair's view now, with its ListVolumeRecoveryPoints answers:
        the work a scan's first call to each pair and gateway would otherwise pay while the
        scanner waits (the fleet derives a pair's gateways on demand, volumes and all). Up to
        the views cache's size; a change to the fleet drops them all, and each is then made
        again on first use."""
        for account_id, region in itertools.islice(self.fleet.pairs, _PAIR_CACHE_LIMIT):
            view = self._pair(account_id, region)
            for gateway in view.gateways:
                if gateway.is_cached and gateway.connected:
                    view.lvrp_bodies[gateway.arn] = _recovery_points_body(gateway)

    # -- operations ---------------------------------------------------------------------------

    def _pair(self, account_id: str, region: str) -> _PairView:
        key = (account_id, region)
        if self._generation != self.fleet.generation:
            self._pairs.clear()
            self._generation = self.fleet.generation
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

    def _list_gateways(self, call: Call) -> bytes:
        problems: list[str] = []
        marker = _marker(call.params, problems)
        limit = _page_limit(call.params, problems)
        if problems:
            raise _validation_error(problems)
        view = self._pair(call.account_id, call.region)
        fragments = view.list_fragments
        if not fragments and marker is None:
            return b'{"Gateways":[]}'
        return _page(fragments, _start_of(marker, len(fragments)), limit, b'"Gateways"', b"")

    def _list_volume_recovery_points(self, call: Call) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(call.params, problems, required=True)
        if problems or arn is None:
            raise _validation_error(problems)
        view, gateway = self._gateway(call.account_id, call.region, arn)
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

    def _describe_gateway_information(self, call: Call) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(call.params, problems, required=True)
        if problems or arn is None:
            raise _validation_error(problems)
        _, gateway = self._gateway(call.account_id, call.region, arn)
        if not gateway.connected:
            raise _gateway_error(
                "GatewayNotConnected", "The specified gateway is not connected.", arn
            )
        return _describe_body(gateway)

    def _list_volumes(self, call: Call) -> bytes:
        problems: list[str] = []
        arn = _gateway_arn(call.params, problems, required=False)
        marker = _marker(call.params, problems)
        limit = _page_limit(call.params, problems)
        if problems:
            raise _validation_error(problems)
        if arn is not None:
            _, gateway = self._gateway(call.account_id, call.region, arn)
            if gateway.type not in ("CACHED", "STORED"):
                raise _gateway_error(
                    "NotSupported", "This operation is not valid for the specified gateway.", arn
                )
            volumes = _volume_info(gateway)
        else:  # every volume gateway of the caller in this region
            volumes = [
                item
                for gateway in self._pair(call.account_id, call.region).gateways
                if gateway.type in ("CACHED", "STORED")
                for item in _volume_info(gateway)
            ]
        volumes.sort(key=lambda item: item[0])  # "sorted by volume ARN"
        fragments = [orjson.dumps(info) for _, info in volumes]
        head = b'"GatewayARN":' + orjson.dumps(arn) + b"," if arn is not None else b""
        return _page(fragments, _start_of(marker, len(fragments)), limit, b'"VolumeInfos"', head)
