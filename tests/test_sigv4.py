"""fleetscan's POST signer signs exactly as botocore's SigV4 signer does.

botocore is the reference: for the same request, keys and second, both must produce the same
signed headers, byte for byte, whatever the endpoint looks like (ports, default ports, IPv6,
paths, upper-case hosts), the keys (with and without a session token), the body, and the kind of
call (a JSON call naming its operation in ``X-Amz-Target``, a form-encoded query call without
it). The one thing replaced is botocore's clock, so both sign the same second.
"""

from __future__ import annotations

import datetime as dt
import string

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetscan._sigv4 import PostSigner, amz_date

CONTENT_TYPE = "application/x-amz-json-1.1"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
#: (service, content type, X-Amz-Target or None) of each kind of call the scan signs.
CALLS = [
    ("storagegateway", CONTENT_TYPE, "StorageGateway_20130630.ListGateways"),
    ("storagegateway", CONTENT_TYPE, "StorageGateway_20130630.ListVolumeRecoveryPoints"),
    ("sts", FORM, None),
]

ENDPOINTS = [
    "https://storagegateway.us-east-1.amazonaws.com/",
    "https://storagegateway-fips.us-gov-west-1.amazonaws.com/",
    "https://storagegateway.cn-north-1.amazonaws.com.cn/",
    "http://127.0.0.1:38827/",
    "https://EXAMPLE.com:443/sgw/",
    "https://example.com:8443/sgw",
    "http://example.com:80/a/./b/../c",
    "http://[::1]:80/",
    "http://[::1]:8080/",
    "https://proxy.internal/storage gateway/?b=2&a=1",
]

TOKEN_CHARS = string.ascii_letters + string.digits + "+/=  "


def botocore_headers(
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    credentials: ReadOnlyCredentials,
    region: str,
    call: tuple[str, str, str | None],
    body: bytes,
    date: str,
) -> dict[str, str]:
    """The headers botocore's SigV4Auth adds to this request, signed at ``date``."""
    service, content_type, target = call
    when = dt.datetime.strptime(date, "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: when)
    headers = {"Content-Type": content_type, "User-Agent": "test"}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, service, region).add_auth(request)
    wanted = ("X-Amz-Date", "X-Amz-Security-Token", "Authorization")
    return {name: str(request.headers[name]) for name in wanted if name in request.headers}


@settings(max_examples=300, deadline=None)
@given(
    url=st.sampled_from(ENDPOINTS),
    region=st.sampled_from(["us-east-1", "eu-west-3", "us-gov-west-1", "cn-north-1"]),
    access_key=st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=20),
    secret_key=st.text(string.ascii_letters + string.digits + "+/", min_size=1, max_size=40),
    token=st.none() | st.text(TOKEN_CHARS, min_size=1, max_size=60).filter(str.strip),
    call=st.sampled_from(CALLS),
    body=st.binary(max_size=300),
    when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
)
def test_signatures_equal_botocores(
    url: str,
    region: str,
    access_key: str,
    secret_key: str,
    token: str | None,
    call: tuple[str, str, str | None],
    body: bytes,
    when: dt.datetime,
) -> None:
    credentials = ReadOnlyCredentials(access_key, secret_key, token)
    service, content_type, target = call
    date = when.strftime("%Y%m%dT%H%M%SZ")
    signer = PostSigner(url=url, service=service, region=region, content_type=content_type)
    ours = signer.headers(credentials, target, body, date=date)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert ours == botocore_headers(monkeypatch, url, credentials, region, call, body, date)


def test_the_signing_key_cache_follows_the_secret_and_the_day() -> None:
    """The key is cached per (secret, day): a rotated secret or a new day signs differently."""
    signer = PostSigner(
        url="https://storagegateway.us-east-1.amazonaws.com/",
        service="storagegateway",
        region="us-east-1",
        content_type=CONTENT_TYPE,
    )
    target = "StorageGateway_20130630.ListGateways"

    def signature(secret: str, date: str) -> str:
        headers = signer.headers(
            ReadOnlyCredentials("AKID", secret, None), target, b"{}", date=date
        )
        return headers["Authorization"].rsplit("Signature=", 1)[1]

    first = signature("secret-1", "20261128T235959Z")
    assert signature("secret-1", "20261128T235959Z") == first
    assert signature("secret-2", "20261128T235959Z") != first
    assert signature("secret-1", "20261129T235959Z") != first


def test_amz_date_is_utc_seconds() -> None:
    assert amz_date(0) == "19700101T000000Z"
    moment = dt.datetime(2026, 11, 28, 2, 5, 23, 900_000, tzinfo=dt.UTC)
    assert amz_date(moment.timestamp()) == "20261128T020523Z"
