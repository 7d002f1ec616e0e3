"""The scan's own Storage Gateway calls send what aiobotocore sends and read what it reads.

Both clients talk over real HTTP on loopback to a scripted endpoint (``HostileGateway``) that
records each request as it arrived; the same scripted answer goes to each. The requests must be
the same (method, path, body, headers, a signature that botocore's signer verifies for the host
actually sent), and each answer must come back the same: the same dict, or an exception of the
same class that fleetscan classifies the same way.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import ReadOnlyCredentials
from hostile_gateway import Answer, HostileGateway, Request, json_answer
from lean_calls import assert_same_failure, clients_at, lowered, outcomes
from lean_calls import signature_verifies as verifies

from fleetscan._aws import AwsClients

REGION = "eu-west-1"
ARN = "arn:aws:storagegateway:eu-west-1:111122223333:gateway/sgw-12A3456B"
KEYS = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
SESSION_KEYS = ReadOnlyCredentials(
    "ASIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", "FwoGZXIvYXdzEJr//////token"
)
#: Headers that differ between any two requests: the time, the signature over it, and botocore's
#: per-invocation retry bookkeeping (fleetscan retries itself and does not send it).
VOLATILE = {"x-amz-date", "authorization"}
#: botocore writes the body with Python's json (spaces, \u escapes), fleetscan with orjson
#: (compact UTF-8): the same JSON (compared parsed), another length.
LENGTH = {"content-length"}
BOTOCORE_ONLY = {"amz-sdk-invocation-id", "amz-sdk-request"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[HostileGateway]:
    with HostileGateway() as running:
        yield running


@pytest.fixture
async def clients(
    gateway: HostileGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[AwsClients]:
    async with clients_at(
        "AWS_ENDPOINT_URL_STORAGE_GATEWAY", gateway.url, monkeypatch, tmp_path
    ) as running:
        yield running


async def both(
    clients: AwsClients,
    gateway: HostileGateway,
    answer: Answer,
    operation: str,
    params: dict[str, Any],
    keys: ReadOnlyCredentials = KEYS,
) -> tuple[tuple[Any, Request], tuple[Any, Request]]:
    """(outcome, request) through aiobotocore, then through fleetscan's client."""
    method = "list_gateways" if operation == "ListGateways" else "list_volume_recovery_points"
    botocore_client = await clients.client("storagegateway", REGION)
    ours = await clients.storage_gateway(REGION)
    theirs_, ours_ = await outcomes(
        gateway,
        answer,
        keys,
        [functools.partial(getattr(c, method), **params) for c in (botocore_client, ours)],
    )
    return theirs_, ours_


def signature_verifies(request: Request, url: str, keys: ReadOnlyCredentials) -> bool:
    return verifies(request, url, keys, "storagegateway", REGION)


@pytest.mark.parametrize("keys", [KEYS, SESSION_KEYS], ids=["keys", "session-keys"])
@pytest.mark.parametrize(
    ("operation", "params", "answer"),
    [
        ("ListGateways", {}, {"Gateways": []}),
        ("ListGateways", {"Marker": "page 2/ü", "Limit": 100}, {"Gateways": []}),
        (
            "ListVolumeRecoveryPoints",
            {"GatewayARN": ARN},
            {"GatewayARN": ARN, "VolumeRecoveryPointInfos": []},
        ),
    ],
)
async def test_requests_are_the_requests_aiobotocore_sends(
    clients: AwsClients,
    gateway: HostileGateway,
    keys: ReadOnlyCredentials,
    operation: str,
    params: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    (_, theirs), (_, ours) = await both(
        clients, gateway, json_answer(answer), operation, params, keys
    )
    assert (ours.method, ours.path, ours.operation, ours.params) == (
        theirs.method,
        theirs.path,
        theirs.operation,
        theirs.params,
    )
    assert ours.params == params
    ours_headers, their_headers = lowered(ours.headers), lowered(theirs.headers)
    assert {k: v for k, v in ours_headers.items() if k not in VOLATILE | LENGTH} == {
        k: v for k, v in their_headers.items() if k not in VOLATILE | LENGTH | BOTOCORE_ONLY
    }
    assert int(ours_headers["content-length"]) == len(ours.body)
    assert ("x-amz-security-token" in ours_headers) == (keys.token is not None)
    # Both signatures verify, for the Host header that was actually sent.
    assert signature_verifies(theirs, gateway.url, keys)
    assert signature_verifies(ours, gateway.url, keys)
    signed = [r.headers["Authorization"].split("SignedHeaders=")[1] for r in (ours, theirs)]
    assert signed[0].split(",")[0] == signed[1].split(",")[0]


def test_a_tampered_request_does_not_verify() -> None:
    """The verifier above can fail: a changed body or target breaks the signature."""
    from fleetscan._sigv4 import PostSigner, amz_date

    url = "http://127.0.0.1:8080"
    target = "StorageGateway_20130630.ListGateways"
    signer = PostSigner(
        url=url + "/",
        service="storagegateway",
        region=REGION,
        content_type="application/x-amz-json-1.1",
    )
    headers = {
        "Host": "127.0.0.1:8080",
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": target,
        **signer.headers(KEYS, target, b"{}", date=amz_date()),
    }
    sent = Request("ListGateways", {}, path="/", headers=headers, body=b"{}")
    assert signature_verifies(sent, url, KEYS)
    assert not signature_verifies(
        Request("ListGateways", {}, path="/", headers=headers, body=b'{"Limit":1}'), url, KEYS
    )
    other_target = {**headers, "X-Amz-Target": "StorageGateway_20130630.DeleteGateway"}
    assert not signature_verifies(
        Request("ListGateways", {}, path="/", headers=other_target, body=b"{}"), url, KEYS
    )


def gateway_error(kind: str, code: str, status: int = 400) -> Answer:
    return json_answer(
        {
            "__type": kind,
            "message": "The specified gateway is not connected.",
            "error": {"errorCode": code, "errorDetails": {"gatewayArn": ARN}},
        },
        status,
    )


ANSWERS = {
    "page": json_answer(
        {
            "Gateways": [
                {
                    "GatewayARN": ARN,
                    "GatewayId": "sgw-12A3456B",
                    "GatewayType": "CACHED",
                    "GatewayOperationalState": "ACTIVE",
                    "GatewayName": "ünïcode",
                    "HostEnvironment": "VMWARE",
                }
            ],
            "Marker": "next",
        }
    ),
    "empty body": Answer(b""),
    "Infinity (stdlib JSON only)": Answer(b'{"Gateways": [], "Marker": "m", "x": Infinity}'),
    "a number beyond 64 bits": Answer(b'{"Gateways": [], "Limit": 123456789012345678901234567890}'),
    "gateway not connected": gateway_error("InvalidGatewayRequestException", "GatewayNotConnected"),
    "prefixed __type": gateway_error(
        "com.amazonaws.storagegateway#InvalidGatewayRequestException", "GatewayNotFound"
    ),
    "internal error at 400": json_answer({"__type": "InternalServerError", "message": "x"}, 400),
    "internal error at 500": json_answer({"__type": "InternalServerError", "message": "x"}, 500),
    "throttled": json_answer({"__type": "ThrottlingException", "message": "Rate exceeded"}, 400),
    "access denied": json_answer({"__type": "AccessDeniedException", "Message": "no"}, 400),
    "unknown code": json_answer({"__type": "SomethingNew", "message": "?"}, 409),
    "HTML 503": Answer(b"<html><body>Service Unavailable</body></html>", 503, "text/html"),
    "empty 502": Answer(b"", 502, None),
    "null": Answer(b"null"),
    "a list": Answer(b"[1, 2]"),
    "truncated": Answer(b'{"Gateways": [{"GatewayARN": "arn:'),
    "invalid UTF-8": Answer(b'{"Gateways": [], "Marker": "\xff\xfe"}'),
    "__type not a string": json_answer({"__type": 7, "message": "x"}, 400),
}


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_answers_read_as_aiobotocore_reads_them(
    clients: AwsClients, gateway: HostileGateway, name: str
) -> None:
    (theirs, _), (ours, _) = await both(clients, gateway, ANSWERS[name], "ListGateways", {})
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), ours
        theirs.pop("ResponseMetadata")
        ours.pop("ResponseMetadata", None)
        # botocore keeps the members its model knows; the scan reads nothing else.
        assert {key: ours[key] for key in theirs} == theirs
        return
    assert_same_failure(theirs, ours)
