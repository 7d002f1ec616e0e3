"""What the lean-client tests share (``test_storagegateway.py``, ``test_sts.py``): fixed keys to
act as, clients pointed at one scripted endpoint, and botocore's signer as the judge of a
request that arrived."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from hostile_gateway import Answer, HostileGateway, Request

from fleetscan._aws import AwsClients, acting_as
from fleetscan._retry import classify


class Keys:
    """Fixed keys, as the credential source a task acts as."""

    def __init__(self, credentials: ReadOnlyCredentials) -> None:
        self.credentials = credentials

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return self.credentials

    def expire(self, stale: ReadOnlyCredentials | None) -> None:
        """Fixed keys: nothing to refresh."""


@asynccontextmanager
async def clients_at(
    endpoint_variable: str, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[AwsClients]:
    """AwsClients whose ``endpoint_variable`` (``AWS_ENDPOINT_URL_STS``...) is ``url``, with no
    AWS setting of the developer's."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv(endpoint_variable, url)
    async with AwsClients(
        profile=None, max_pool_connections=4, connect_timeout=5, read_timeout=5
    ) as running:
        yield running


def signature_verifies(
    request: Request, url: str, keys: ReadOnlyCredentials, service: str, region: str
) -> bool:
    """Whether botocore's signer, given the headers that arrived, computes the same signature."""
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {name: value for name, value in request.headers.items() if name.lower() in signed}
    when = dt.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    rebuilt = AWSRequest(method=request.method, url=url + request.path, data=request.body)
    for name, value in headers.items():
        rebuilt.headers[name] = value
    with pytest.MonkeyPatch.context() as clock:  # sign the second the request was signed
        clock.setattr("botocore.auth.get_current_datetime", lambda: when)
        SigV4Auth(keys, service, region).add_auth(rebuilt)
    return bool(rebuilt.headers["Authorization"] == authorization)


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


async def outcomes(
    server: HostileGateway,
    answer: Answer,
    keys: ReadOnlyCredentials,
    calls: Sequence[Callable[[], Awaitable[Any]]],
) -> list[tuple[Any, Request]]:
    """(outcome, request) of each call in turn, acting as ``keys``, each answered ``answer``:
    the outcome is the answer or the exception raised."""
    results = []
    with acting_as(Keys(keys)):
        for call in calls:
            server.reset(lambda request: answer)
            try:
                outcome: Any = await call()
            except Exception as exc:  # the outcome under comparison
                outcome = exc
            (request,) = server.requests
            results.append((outcome, request))
    return results


def assert_same_failure(theirs: Exception, ours: object) -> None:
    """fleetscan classifies both alike; a service's error is also the same exception class with
    the same message (a malformed answer may fail inside another parser's code)."""
    assert isinstance(ours, Exception), ours
    their_failure, our_failure = classify(theirs), classify(ours)
    assert our_failure.error_code == their_failure.error_code
    assert our_failure.retryable == their_failure.retryable
    assert our_failure.throttled == their_failure.throttled
    assert our_failure.gateway_error_code == their_failure.gateway_error_code
    assert our_failure.http_status == their_failure.http_status
    if their_failure.error_code != "MalformedResponse":
        assert type(ours) is type(theirs)
        assert our_failure.message == their_failure.message
