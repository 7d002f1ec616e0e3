"""The scan's own AssumeRole sends what aiobotocore sends and reads what it reads.

As ``test_storagegateway.py`` does for the Storage Gateway calls: both clients talk over real
HTTP on loopback to a scripted endpoint (``HostileGateway``, here answering as STS) that records
each request as it arrived; the same scripted answer goes to each. The requests must be the same
(method, path, the form-encoded body byte for byte, headers, a signature that botocore's signer
verifies for the host actually sent), and each answer must come back the same: the same
credentials, or an exception of the same class that fleetscan classifies the same way.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import ReadOnlyCredentials
from hostile_gateway import Answer, HostileGateway, Request
from lean_calls import assert_same_failure, clients_at, lowered, outcomes
from lean_calls import signature_verifies as verifies

from fleetscan._aws import AwsClients
from fleetscan._credentials import MEMBER_SESSION_POLICY

REGION = "us-east-1"
KEYS = ReadOnlyCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None)
HUB_KEYS = ReadOnlyCredentials(
    "ASIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", "FwoGZXIvYXdzEJr//////token"
)
PARAMS: dict[str, Any] = {
    "RoleArn": "arn:aws:iam::111122223333:role/fleetscan-reader",
    "RoleSessionName": "fleetscan",
    "DurationSeconds": 3600,
    "Policy": MEMBER_SESSION_POLICY,
    "ExternalId": "ext id/ü+&=",
}
VOLATILE = {"x-amz-date", "authorization"}
BOTOCORE_ONLY = {"amz-sdk-invocation-id", "amz-sdk-request"}
XML = "text/xml"
NS = "https://sts.amazonaws.com/doc/2011-06-15/"


@pytest.fixture(scope="module")
def sts() -> Iterator[HostileGateway]:
    with HostileGateway() as running:
        yield running


@pytest.fixture
async def clients(
    sts: HostileGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[AwsClients]:
    async with clients_at("AWS_ENDPOINT_URL_STS", sts.url, monkeypatch, tmp_path) as running:
        yield running


def success(credentials: str, *, namespace: str = NS, extra: str = "") -> Answer:
    return Answer(
        (
            f'<AssumeRoleResponse xmlns="{namespace}"><AssumeRoleResult>'
            f"<Credentials>{credentials}</Credentials>{extra}"
            "<AssumedRoleUser><AssumedRoleId>AROA:fleetscan</AssumedRoleId>"
            "<Arn>arn:aws:sts::111122223333:assumed-role/fleetscan-reader/fleetscan</Arn>"
            "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r-1</RequestId>"
            "</ResponseMetadata></AssumeRoleResponse>"
        ).encode(),
        content_type=XML,
    )


CREDENTIALS = (
    "<AccessKeyId>ASIAEXAMPLEMEMBER</AccessKeyId><SecretAccessKey>secret/key+1</SecretAccessKey>"
    "<SessionToken>token+/=</SessionToken><Expiration>2026-12-02T18:04:05Z</Expiration>"
)


def error(code: str, status: int, message: str = "no") -> Answer:
    return Answer(
        (
            f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>r-2</RequestId></ErrorResponse>"
        ).encode(),
        status,
        XML,
    )


async def both(
    clients: AwsClients, sts: HostileGateway, answer: Answer, keys: ReadOnlyCredentials = KEYS
) -> tuple[tuple[Any, Request], tuple[Any, Request]]:
    """(outcome, request) through aiobotocore, then through fleetscan's client."""
    botocore_client = await clients.client("sts", REGION)
    ours = await clients.sts(REGION)
    theirs_, ours_ = await outcomes(
        sts,
        answer,
        keys,
        [functools.partial(c.assume_role, **PARAMS) for c in (botocore_client, ours)],
    )
    return theirs_, ours_


def signature_verifies(request: Request, url: str, keys: ReadOnlyCredentials) -> bool:
    return verifies(request, url, keys, "sts", REGION)


@pytest.mark.parametrize("keys", [KEYS, HUB_KEYS], ids=["keys", "hub-session-keys"])
async def test_the_request_is_the_request_aiobotocore_sends(
    clients: AwsClients, sts: HostileGateway, keys: ReadOnlyCredentials
) -> None:
    (_, theirs), (_, ours) = await both(clients, sts, success(CREDENTIALS), keys)
    assert (ours.method, ours.path, ours.body) == (theirs.method, theirs.path, theirs.body)
    assert ours.body.endswith(b"&ExternalId=ext+id%2F%C3%BC%2B%26%3D")  # form-encoded
    ours_headers, their_headers = lowered(ours.headers), lowered(theirs.headers)
    assert {k: v for k, v in ours_headers.items() if k not in VOLATILE} == {
        k: v for k, v in their_headers.items() if k not in VOLATILE | BOTOCORE_ONLY
    }
    assert ("x-amz-security-token" in ours_headers) == (keys.token is not None)
    assert signature_verifies(theirs, sts.url, keys)
    assert signature_verifies(ours, sts.url, keys)
    # The verifier can fail: another role in the body breaks the signature.
    tampered = Request(ours.operation, ours.params, ours.method, ours.path, ours.headers,
                       ours.body.replace(b"111122223333", b"444455556666"))  # fmt: skip
    assert not signature_verifies(tampered, sts.url, keys)


ANSWERS = {
    "success": success(CREDENTIALS),
    "success with fractional seconds and other fields": success(
        CREDENTIALS.replace("18:04:05Z", "18:04:05.123Z"),
        extra="<PackedPolicySize>7</PackedPolicySize>",
    ),
    "success without a namespace": success(CREDENTIALS, namespace=""),
    "no session token": success(CREDENTIALS.replace("<SessionToken>token+/=</SessionToken>", "")),
    "an expiry that is no time": success(CREDENTIALS.replace("2026-12-02T18:04:05Z", "soon")),
    "access denied": error("AccessDenied", 403, "not authorized to perform sts:AssumeRole"),
    "throttled": error("Throttling", 400, "Rate exceeded"),
    "expired token": error("ExpiredToken", 400, "The security token included is expired"),
    "region disabled": error("RegionDisabledException", 403),
    "unknown code": error("SomethingNew", 409),
    "HTML 503": Answer(b"<html><body>Service Unavailable</body></html>", 503, "text/html"),
    "empty 200": Answer(b"", 200, XML),
    "empty 502": Answer(b"", 502, None),
    "truncated": Answer(success(CREDENTIALS).body[:120], 200, XML),
    "JSON instead of XML": Answer(b'{"Credentials": {}}', 200, "application/json"),
    "an entity bomb": Answer(
        b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<AssumeRoleResponse>&b;</AssumeRoleResponse>",
        200,
        XML,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_answers_read_as_aiobotocore_reads_them(
    clients: AwsClients, sts: HostileGateway, name: str
) -> None:
    (theirs, _), (ours, _) = await both(clients, sts, ANSWERS[name])
    if isinstance(theirs, dict) and isinstance(ours, dict):
        assert ours["Credentials"] == theirs["Credentials"]  # Expiration: the same instant
        assert ours["Credentials"]["Expiration"].tzinfo is not None
        return
    if isinstance(theirs, dict):
        # botocore reads some answers the scan cannot use (no credentials at all): fleetscan
        # gives back what botocore gives, through botocore's own parser.
        assert ours == theirs
        return
    assert_same_failure(theirs, ours)
