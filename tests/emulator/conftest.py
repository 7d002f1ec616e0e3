"""Fixtures for the Storage Gateway emulator's tests: a seeded fleet that also holds the API
page's sample gateway, the emulator serving it on 127.0.0.1, real aiobotocore clients, and a
validator of response bodies against botocore's model.

Helpers reach the tests as fixtures (never imported from here), so these tests do not depend on
how pytest puts conftest modules on ``sys.path``."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import botocore.session
import orjson
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from fleetscan.emulator import (
    EmulatorServer,
    EmulatorThread,
    Faults,
    Fleet,
    FleetSpec,
    Gateway,
    Volume,
    access_key_for_account,
)

#: The API page's sample (ListVolumeRecoveryPoints-api.txt): gateway, and the exact response.
SAMPLE_ACCOUNT = "111122223333"
SAMPLE_REGION = "us-east-2"
SAMPLE_GATEWAY_ARN = "arn:aws:storagegateway:us-east-2:111122223333:gateway/sgw-12A3456B"
SAMPLE_RESPONSE: dict[str, Any] = {
    "GatewayARN": "arn:aws:storagegateway:us-east-2:111122223333:gateway/sgw-12A3456B",
    "VolumeRecoveryPointInfos": [
        {
            "VolumeARN": "arn:aws:storagegateway:us-east-2:111122223333:gateway/sgw-12A3456B"
            "/volume/vol-1122AABB",
            "VolumeRecoveryPointTime": "2012-09-04T21:08:44.627Z",
            "VolumeSizeInBytes": "536870912000",
        }
    ],
}

#: Seed 32 gives a pair with 250 gateways (three default pages), cached gateways that are
#: offline, and a suspended account that holds gateways.
FLEET_SPEC = FleetSpec(seed=32, accounts=12, epoch=dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC))

NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}


class SampleFleet(Fleet):
    """A seeded fleet plus the API page's sample gateway in 111122223333 / us-east-2.

    Test-only: the sample account is not a member of the organization, so the fleet's ground
    truth (and every seeded pair) is unchanged; only the server sees the extra gateway.
    """

    def __init__(self, spec: FleetSpec | None = None) -> None:
        super().__init__(spec)
        volume = Volume(
            arn=SAMPLE_GATEWAY_ARN + "/volume/vol-1122AABB",
            id="vol-1122AABB",
            recovery_point_time=dt.datetime(2012, 9, 4, 21, 8, 44, 627_000, tzinfo=dt.UTC),
            size_bytes=536_870_912_000,
            usage_bytes=None,  # the sample has no VolumeUsageInBytes
            size_as_string=True,  # the sample sends the size as a JSON string
        )
        self.sample_gateway = Gateway(
            account_id=SAMPLE_ACCOUNT,
            region=SAMPLE_REGION,
            id="sgw-12A3456B",
            arn=SAMPLE_GATEWAY_ARN,
            name="sample-gateway",
            type="CACHED",
            operational_state="ACTIVE",
            host_environment="VMWARE",
            ec2_instance_id=None,
            software_version="2.0.0",
            connected=True,
            volumes=(volume,),
        )

    def gateways(self, account_id: str, region: str) -> tuple[Gateway, ...]:
        if (account_id, region) == (SAMPLE_ACCOUNT, SAMPLE_REGION):
            return (self.sample_gateway,)
        return super().gateways(account_id, region)


@pytest.fixture(scope="session")
def fleet() -> SampleFleet:
    return SampleFleet(FLEET_SPEC)


@pytest.fixture(scope="session")
def shared_emulator(fleet: SampleFleet) -> Iterator[EmulatorThread]:
    with EmulatorThread(fleet) as emulator:
        yield emulator


@pytest.fixture
def emulator(shared_emulator: EmulatorThread) -> Iterator[EmulatorThread]:
    """The session's emulator, with no faults and zeroed counters before and after the test."""
    shared_emulator.faults = Faults()
    shared_emulator.counters.reset()
    yield shared_emulator
    shared_emulator.faults = Faults()
    shared_emulator.counters.reset()


@pytest.fixture
async def server(fleet: SampleFleet) -> AsyncIterator[EmulatorServer]:
    """A fresh emulator in the test's own event loop: for tests whose faults leave calls
    pending (slow responses), or that read in-flight counts, so nothing leaks into others."""
    async with EmulatorServer(fleet) as emulator:
        yield emulator


ClientFactory = Callable[..., AbstractAsyncContextManager[Any]]

#: One botocore session for every client: a session loads the service model once, and loading
#: it per client would cost more than the calls the tests make.
_SESSION = get_session()


@asynccontextmanager
async def aws_client(
    service: str,
    endpoint_url: str,
    account_id: str,
    region: str,
    *,
    access_key_id: str | None = None,
    session_token: str | None = None,
    verify: bool | str | None = None,
    raw_bodies: list[tuple[str, bytes]] | None = None,
    **config: Any,
) -> AsyncIterator[Any]:
    """A real aiobotocore client of ``service`` whose key id encodes ``account_id`` (or the
    given session keys).

    botocore's retries are off, so every fault arrives as it was sent. ``raw_bodies`` collects
    (operation, body) of each response as it came off the wire, before botocore parses (and
    filters) it.
    """
    options: dict[str, Any] = {"retries": NO_RETRIES, "max_pool_connections": 64}
    options.update(config)
    async with _SESSION.create_client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id or access_key_for_account(account_id),
        aws_secret_access_key="emulated-secret-not-checked",
        aws_session_token=session_token,
        verify=verify,
        config=AioConfig(**options),
    ) as client:
        if raw_bodies is not None:

            def capture(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
                raw_bodies.append((operation_model.name, response_dict["body"]))

            event = client.meta.service_model.service_id.hyphenize()
            client.meta.events.register(f"before-parse.{event}", capture)
        yield client


def storage_gateway_client(
    endpoint_url: str, account_id: str, region: str, **options: Any
) -> AbstractAsyncContextManager[Any]:
    """:func:`aws_client` for Storage Gateway."""
    return aws_client("storagegateway", endpoint_url, account_id, region, **options)


@pytest.fixture
def make_client() -> ClientFactory:
    return storage_gateway_client


@pytest.fixture
def make_aws_client() -> ClientFactory:
    """``make_aws_client(service, endpoint_url, account_id, region, **options)``."""
    return aws_client


# -- validation against botocore's model --------------------------------------------------------

_BOTOCORE = botocore.session.get_session()
_MODELS = {
    name: _BOTOCORE.get_service_model(name)
    for name in ("storagegateway", "organizations", "sts", "ec2")
}
_SERVICE_MODEL = _MODELS["storagegateway"]

#: The one place AWS itself departs from its model: the API page's sample response sends
#: VolumeSizeInBytes (a long) as a JSON string, and the emulator does so for some volumes.
STRING_LONGS = frozenset({("VolumeRecoveryPointInfo", "VolumeSizeInBytes")})


def output_shape(operation: str) -> Any:
    return _SERVICE_MODEL.operation_model(operation).output_shape


def error_shape(name: str) -> Any:
    return _SERVICE_MODEL.shape_for(name)


def _pattern(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # Java-only syntax such as \p{L}: not checkable with Python's re
        return None


def shape_problems(value: Any, shape: Any, path: str = "$", parent: str = "") -> list[str]:
    """Every way ``value`` (decoded JSON) departs from a botocore shape: unknown or missing
    members, wrong types, lengths, ranges, enums and patterns. Empty when it validates."""
    problems: list[str] = []
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        for name in value:
            if name not in shape.members:
                problems.append(f"{path}.{name}: not a member of {shape.name}")
        for name in meta.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: required member missing")
        for name, member in shape.members.items():
            if name in value:
                problems += shape_problems(value[name], member, f"{path}.{name}", shape.name)
        return problems
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        problems += _bounds(len(value), meta, path, "length")
        for index, item in enumerate(value):
            problems += shape_problems(item, shape.member, f"{path}[{index}]", shape.name)
        return problems
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        for key, item in value.items():
            problems += shape_problems(key, shape.key, f"{path}<key>", shape.name)
            problems += shape_problems(item, shape.value, f"{path}.{key}", shape.name)
        return problems
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {type(value).__name__}"]
        problems += _bounds(len(value), meta, path, "length")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in enum {shape.name}")
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and pattern.fullmatch(value) is None:
            problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
        return problems
    if kind in ("integer", "long"):
        member = path.rsplit(".", 1)[-1]
        if isinstance(value, str) and (parent, member) in STRING_LONGS and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: expected an integer, got {type(value).__name__}"]
        return _bounds(value, meta, path, "value")
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if kind in ("double", "float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number"]
    if kind == "timestamp":
        ok = isinstance(value, int | float | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a timestamp"]
    return [f"{path}: unhandled shape type {kind}"]


def _bounds(measure: int, meta: dict[str, Any], path: str, what: str) -> list[str]:
    problems = []
    if "min" in meta and measure < meta["min"]:
        problems.append(f"{path}: {what} {measure} below min {meta['min']}")
    if "max" in meta and measure > meta["max"]:
        problems.append(f"{path}: {what} {measure} above max {meta['max']}")
    return problems


def body_problems(operation: str, body: bytes, service: str = "storagegateway") -> list[str]:
    """Problems of a raw response body: an error against its exception's shape (``__type``
    must name an exception of the service or a well-known AWS framework error), a success
    against the operation's output shape. The XML protocols (STS, EC2) go to
    :func:`xml_body_problems`."""
    model = _MODELS[service]
    if model.protocol in ("query", "ec2"):
        return xml_body_problems(operation, body, service)
    doc = orjson.loads(body)
    if isinstance(doc, dict) and "__type" in doc:
        code = doc.pop("__type").rsplit("#", 1)[-1]
        if code in model.shape_names:
            return shape_problems(doc, model.shape_for(code), f"{operation}<{code}>")
        # Framework errors (throttling, validation, auth) have no shape in the model; botocore
        # reads only __type and message from them.
        unknown = set(doc) - {"message", "Message"}
        return [f"{operation}<{code}>: unexpected members {sorted(unknown)}"] if unknown else []
    return shape_problems(doc, model.operation_model(operation).output_shape, operation)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def xml_problems(element: Any, shape: Any, path: str, ec2: bool) -> list[str]:
    """Every way an XML element departs from a botocore shape, as the query protocol (``ec2``:
    EC2's variant) serializes it: members by their wire names, lists of ``member`` (EC2: the
    member's ``item``), and the same checks on values as :func:`shape_problems`."""
    kind = shape.type_name
    children = list(element)
    if kind == "structure":
        by_wire = {
            m.serialization.get("name", name): (name, m) for name, m in shape.members.items()
        }
        seen = set()
        problems: list[str] = []
        for child in children:
            tag = _local(child.tag)
            if tag not in by_wire:
                problems.append(f"{path}.{tag}: not a member of {shape.name}")
                continue
            name, member = by_wire[tag]
            seen.add(name)
            problems += xml_problems(child, member, f"{path}.{name}", ec2)
        for name in shape.metadata.get("required", []):
            if name not in seen:
                problems.append(f"{path}.{name}: required member missing")
        return problems
    if kind == "list":
        wanted = shape.member.serialization.get("name", "item" if ec2 else "member")
        problems = _bounds(len(children), shape.metadata, path, "length")
        for index, child in enumerate(children):
            if _local(child.tag) != wanted:
                problems.append(f"{path}[{index}]: <{_local(child.tag)}>, expected <{wanted}>")
            problems += xml_problems(child, shape.member, f"{path}[{index}]", ec2)
        return problems
    if children:
        return [f"{path}: a {kind} cannot have child elements"]
    text = element.text or ""
    if kind == "string":
        return shape_problems(text, shape, path)
    if kind in ("integer", "long"):
        if not text.lstrip("-").isdigit():
            return [f"{path}: {text!r} is not an integer"]
        return shape_problems(int(text), shape, path)
    if kind == "boolean":
        return [] if text in ("true", "false") else [f"{path}: {text!r} is not a boolean"]
    if kind == "timestamp":
        try:
            dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return [f"{path}: {text!r} is not an ISO 8601 timestamp"]
        return []
    return [f"{path}: unhandled shape type {kind}"]


def xml_body_problems(operation: str, body: bytes, service: str) -> list[str]:
    """An STS or EC2 answer against the model: the result element against the output shape
    (inside ``<OpResult>`` for STS), errors in the form each protocol's parser reads."""
    model = _MODELS[service]
    ec2 = model.protocol == "ec2"
    root = ElementTree.fromstring(body)
    tag = _local(root.tag)
    if ec2 and tag == "Response":
        errors = root.find("Errors")
        if errors is None or [_local(e.tag) for e in root] != ["Errors", "RequestID"]:
            return [f"{operation}: an EC2 error needs Errors and RequestID"]
        return [
            f"{operation}<error>: {_local(e.tag)} is not Code or Message"
            for error in errors
            for e in error
            if _local(e.tag) not in ("Code", "Message")
        ]
    if tag == "ErrorResponse":
        error = root.find(f"{{{model.metadata['xmlNamespace']}}}Error")
        if error is None:
            return [f"{operation}: ErrorResponse without Error"]
        members = {_local(e.tag) for e in error}
        return (
            []
            if members <= {"Type", "Code", "Message"} and "Code" in members
            else [f"{operation}: Error members {sorted(members)}"]
        )
    if tag != f"{operation}Response":
        return [f"{operation}: root element <{tag}>"]
    output = model.operation_model(operation).output_shape
    if ec2:
        result = [e for e in root if _local(e.tag) != "requestId"]
        holder = ElementTree.Element("result")
        holder.extend(result)
        return xml_problems(holder, output, operation, ec2=True)
    wrapper = output.serialization["resultWrapper"]
    found = [e for e in root if _local(e.tag) == wrapper]
    metadata = [e for e in root if _local(e.tag) == "ResponseMetadata"]
    if len(found) != 1 or len(metadata) != 1 or len(root) != 2:
        return [f"{operation}: expected <{wrapper}> and <ResponseMetadata>"]
    return xml_problems(found[0], output, operation, ec2=False)


@pytest.fixture
def validate_body() -> Callable[..., list[str]]:
    """``validate_body(operation, body, service="storagegateway")``: see :func:`body_problems`."""
    return body_problems


@pytest.fixture(scope="session")
def sample() -> SimpleNamespace:
    """The API page's sample: its gateway, account, region and exact response."""
    return SimpleNamespace(
        account_id=SAMPLE_ACCOUNT,
        region=SAMPLE_REGION,
        gateway_arn=SAMPLE_GATEWAY_ARN,
        response=SAMPLE_RESPONSE,
    )
