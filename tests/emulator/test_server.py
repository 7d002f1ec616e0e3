"""The Storage Gateway emulator over real HTTP on 127.0.0.1, called by real aiobotocore clients
(and by the AWS CLI): answers that validate against botocore's model and match the fleet's
ground truth, errors as AWS sends them, SigV4 required, TLS, the API page's sample, counters."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError, SSLError

from fleetscan.emulator import (
    MANAGEMENT_ACCOUNT_ID,
    EmulatorServer,
    EmulatorThread,
    FaultRule,
    Faults,
    Fleet,
    FleetSpec,
    Gateway,
    TLSMaterial,
    access_key_for_account,
)
from fleetscan.emulator._wire import dumps_kept

Validate = Callable[[str, bytes], list[str]]


async def client_error(call: Awaitable[Any]) -> ClientError:
    with pytest.raises(ClientError) as info:
        await call
    return info.value


def status_of(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


def signed_headers(
    account_id: str,
    region: str,
    operation: str,
    *,
    access_key_id: str | None = None,
    service: str = "storagegateway",
) -> dict[str, str]:
    """Headers of a SigV4-signed call, as bare HTTP sends them (the emulator reads the scope)."""
    akid = access_key_id or access_key_for_account(account_id)
    return {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"StorageGateway_20130630.{operation}",
        "X-Amz-Date": "20260115T120000Z",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={akid}/20260115/{region}/{service}/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "ab" * 32
        ),
    }


async def raw_post(
    url: str, headers: dict[str, str], body: bytes = b"{}"
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/", headers=headers, data=body) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def populated_gateway(fleet: Fleet, predicate: Callable[[Gateway], bool]) -> Gateway:
    for gateway in fleet.iter_gateways():
        if predicate(gateway):
            return gateway
    raise AssertionError("the test fleet has no such gateway; pick another seed")


# -- answers ------------------------------------------------------------------------------------


async def test_a_full_scan_validates_against_the_model_and_matches_ground_truth(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any, validate_body: Validate
) -> None:
    bodies: list[tuple[str, bytes]] = []
    points: set[tuple[Any, ...]] = set()
    gateway_errors: set[tuple[str, str, str, str]] = set()
    not_supported: set[str] = set()
    active = {a.id for a in fleet.accounts if a.active}

    async def scan_pair(account_id: str, region: str) -> None:
        async with make_client(
            emulator.endpoint_url, account_id, region, raw_bodies=bodies
        ) as client:
            listed: list[dict[str, Any]] = []
            async for page in client.get_paginator("list_gateways").paginate():
                listed += page["Gateways"]
            expected = fleet.gateways(account_id, region)
            assert sorted(g["GatewayARN"] for g in listed) == sorted(g.arn for g in expected)
            by_arn = {g.arn: g for g in expected}
            for info in listed:
                gateway = by_arn[info["GatewayARN"]]
                assert info["GatewayType"] == gateway.type
                assert info["GatewayId"] == gateway.id
                await _check_gateway(client, gateway, info)
                try:
                    answer = await client.list_volume_recovery_points(GatewayARN=gateway.arn)
                except ClientError as exc:
                    code = exc.response["error"]["errorCode"]
                    if code == "NotSupported":
                        not_supported.add(gateway.arn)
                    elif account_id in active:
                        gateway_errors.add((account_id, region, gateway.arn, code))
                    continue
                if account_id not in active:
                    continue
                for rp in answer["VolumeRecoveryPointInfos"]:
                    points.add(
                        (
                            account_id,
                            region,
                            answer["GatewayARN"],
                            rp["VolumeARN"],
                            parse_time(rp["VolumeRecoveryPointTime"]),
                            int(rp["VolumeSizeInBytes"]),
                            rp.get("VolumeUsageInBytes"),
                        )
                    )

    # A client per populated pair (a client costs tens of milliseconds: its SSL context) ...
    await asyncio.gather(*(scan_pair(*pair) for pair in sorted(fleet.pairs)))
    # ... and bare signed HTTP for the many empty pairs, which must list nothing.
    async with aiohttp.ClientSession() as http:
        for account in fleet.accounts:
            for region in fleet.spec.regions:
                if (account.id, region) in fleet.pairs:
                    continue
                headers = signed_headers(account.id, region, "ListGateways")
                async with http.post(emulator.endpoint_url + "/", headers=headers) as response:
                    assert response.status == 200
                    body = await response.read()
                assert orjson.loads(body) == {"Gateways": []}
                bodies.append(("ListGateways", body))

    truth = fleet.ground_truth()
    assert points == {
        (
            rp.account_id,
            rp.region,
            rp.gateway_arn,
            rp.volume_arn,
            rp.recovery_point_time,
            rp.volume_size_bytes,
            rp.volume_usage_bytes,
        )
        for rp in truth.recovery_points
    }
    assert gateway_errors == set(truth.gateway_errors)
    assert not_supported == {g.arn for g in fleet.iter_gateways() if not g.is_cached}

    problems = [p for operation, body in bodies for p in validate_body(operation, body)]
    assert problems == []
    operations = {operation for operation, _ in bodies}
    assert operations == {
        "ListGateways",
        "DescribeGatewayInformation",
        "ListVolumes",
        "ListVolumeRecoveryPoints",
    }
    # The fleet exercises the model's edges: string sizes, absent usage (checked equal to the
    # ground truth's None above), error bodies.
    raw = b"".join(body for _, body in bodies)
    assert b'"VolumeSizeInBytes":"' in raw
    assert any(rp.volume_usage_bytes is None for rp in truth.recovery_points)
    assert b"GatewayNotConnected" in raw


async def _check_gateway(client: Any, gateway: Gateway, info: dict[str, Any]) -> None:
    """DescribeGatewayInformation and ListVolumes agree with the fleet and ListGateways."""
    if gateway.connected:
        described = await client.describe_gateway_information(GatewayARN=gateway.arn)
        assert described["GatewayARN"] == gateway.arn
        assert described["GatewayName"] == info["GatewayName"]
        assert described["GatewayType"] == gateway.type
    else:
        error = await client_error(client.describe_gateway_information(GatewayARN=gateway.arn))
        assert error.response["error"]["errorCode"] == "GatewayNotConnected"
    if gateway.type in ("CACHED", "STORED"):
        volumes = await client.list_volumes(GatewayARN=gateway.arn)
        assert sorted(v["VolumeARN"] for v in volumes["VolumeInfos"]) == sorted(
            v.arn for v in gateway.volumes
        )
        assert {v["VolumeSizeInBytes"] for v in volumes["VolumeInfos"]} <= {
            v.size_bytes for v in gateway.volumes
        }
    else:
        error = await client_error(client.list_volumes(GatewayARN=gateway.arn))
        assert error.response["error"]["errorCode"] == "NotSupported"


async def test_list_gateways_paging_returns_every_gateway_exactly_once(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    (account_id, region), count = max(fleet.pairs.items(), key=lambda item: item[1])
    assert count > 100  # the seed is chosen so that the default page size pages
    expected = sorted(g.arn for g in fleet.gateways(account_id, region))
    async with make_client(emulator.endpoint_url, account_id, region) as client:
        for limit in (None, 1, 7, 100):
            arns: list[str] = []
            sizes: list[int] = []
            marker: str | None = None
            while True:
                kwargs: dict[str, Any] = {} if limit is None else {"Limit": limit}
                if marker is not None:
                    kwargs["Marker"] = marker
                page = await client.list_gateways(**kwargs)
                arns += [g["GatewayARN"] for g in page["Gateways"]]
                sizes.append(len(page["Gateways"]))
                marker = page.get("Marker")
                if marker is None:
                    break
            page_size = limit or 100
            assert arns == expected  # every gateway once, ordered by ARN as AWS documents
            assert all(size == page_size for size in sizes[:-1])
            assert 0 < sizes[-1] <= page_size
            assert len(sizes) == -(-count // page_size)

        empty = await client.list_gateways(Limit=5)
        assert len(empty["Gateways"]) == 5


async def test_list_volumes_pages_every_volume_once(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    gateway = max(
        (g for g in fleet.iter_gateways() if g.type in ("CACHED", "STORED")),
        key=lambda g: len(g.volumes),
    )
    assert len(gateway.volumes) > 6
    async with make_client(emulator.endpoint_url, gateway.account_id, gateway.region) as client:
        pages = client.get_paginator("list_volumes").paginate(
            GatewayARN=gateway.arn, PaginationConfig={"PageSize": 3}
        )
        arns = [v["VolumeARN"] async for page in pages for v in page["VolumeInfos"]]
        assert arns == sorted(v.arn for v in gateway.volumes)
        # Without a gateway: every volume of the caller's volume gateways in the region.
        every = [
            v["VolumeARN"]
            async for page in client.get_paginator("list_volumes").paginate()
            for v in page["VolumeInfos"]
        ]
        assert every == sorted(
            v.arn
            for g in fleet.gateways(gateway.account_id, gateway.region)
            if g.type in ("CACHED", "STORED")
            for v in g.volumes
        )


async def test_an_account_without_gateways_lists_none(
    emulator: EmulatorThread, make_client: Any
) -> None:
    async with make_client(emulator.endpoint_url, MANAGEMENT_ACCOUNT_ID, "eu-west-1") as client:
        answer = await client.list_gateways()
    assert answer["Gateways"] == []
    assert "Marker" not in answer


# -- errors -------------------------------------------------------------------------------------


async def test_gateway_errors_arrive_as_botocore_exceptions_with_the_error_code(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    cached = populated_gateway(fleet, lambda g: g.is_cached and g.connected)
    offline = populated_gateway(fleet, lambda g: g.is_cached and not g.connected)
    not_cached = populated_gateway(fleet, lambda g: g.type == "FILE_S3")
    other_account = next(a.id for a in fleet.accounts if a.id != cached.account_id and a.active)
    other_region = next(r for r in fleet.spec.regions if r != cached.region)
    missing = f"arn:aws:storagegateway:{cached.region}:{cached.account_id}:gateway/sgw-00000000"

    cases = [
        (cached.account_id, cached.region, missing, "GatewayNotFound"),
        (other_account, cached.region, cached.arn, "GatewayNotFound"),  # not the caller's
        (cached.account_id, other_region, cached.arn, "GatewayNotFound"),  # not this region
        (offline.account_id, offline.region, offline.arn, "GatewayNotConnected"),
        (not_cached.account_id, not_cached.region, not_cached.arn, "NotSupported"),
    ]
    messages = {
        "GatewayNotFound": "The specified gateway was not found.",
        "GatewayNotConnected": "The specified gateway is not connected.",
        "NotSupported": "This operation is not valid for the specified gateway.",
    }
    for account_id, region, arn, code in cases:
        async with make_client(emulator.endpoint_url, account_id, region) as client:
            error = await client_error(client.list_volume_recovery_points(GatewayARN=arn))
            assert isinstance(error, client.exceptions.InvalidGatewayRequestException)
        assert error.response["Error"]["Code"] == "InvalidGatewayRequestException"
        assert error.response["Error"]["Message"] == messages[code]
        # botocore parses the modeled `error` member to the top of the response dict.
        assert error.response["error"]["errorCode"] == code
        assert error.response["error"]["errorDetails"] == {"gatewayArn": arn}
        assert "errorCode" not in error.response["Error"]
        assert status_of(error) == 400
    errors = emulator.counters.errors()
    assert errors["InvalidGatewayRequestException/GatewayNotFound"] == 3
    assert errors["InvalidGatewayRequestException/GatewayNotConnected"] == 1
    assert errors["InvalidGatewayRequestException/NotSupported"] == 1


async def test_invalid_parameters_are_validation_errors_as_aws_gives_them(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    cached = populated_gateway(fleet, lambda g: g.is_cached)
    not_an_arn = "arn:aws:s3:::a-bucket-whose-name-makes-this-longer-than-fifty-chars"
    async with make_client(
        emulator.endpoint_url, cached.account_id, cached.region, parameter_validation=False
    ) as client:
        short = "arn:aws:storagegateway:us-east-1:1:gateway/sgw-1"  # the pattern, too short
        cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
            (
                lambda: client.list_volume_recovery_points(GatewayARN=short),
                "Member must have length greater than or equal to 50",
            ),
            (
                lambda: client.list_volume_recovery_points(GatewayARN=cached.arn + "x" * 500),
                "Member must have length less than or equal to 500",
            ),
            (
                lambda: client.describe_gateway_information(GatewayARN=not_an_arn),
                "Member must satisfy regular expression pattern",
            ),
            (lambda: client.list_volume_recovery_points(), "Member must not be null"),
            (lambda: client.list_gateways(Limit=0), "greater than or equal to 1"),
            (lambda: client.list_gateways(Limit=101), "less than or equal to 100"),
            (lambda: client.list_volumes(Limit=0), "greater than or equal to 1"),
        ]
        for call, expected in cases:
            error = await client_error(call())
            assert error.response["Error"]["Code"] == "ValidationException"
            assert error.response["Error"]["Message"].startswith("1 validation error detected: ")
            assert expected in error.response["Error"]["Message"]
            assert "error" not in error.response  # a framework error: no Storage Gateway code
            assert status_of(error) == 400

        bad_marker = await client_error(client.list_gateways(Marker="not-a-marker"))
        assert bad_marker.response["Error"]["Code"] == "InvalidGatewayRequestException"
        assert bad_marker.response["error"]["errorCode"] == "InvalidParameters"


async def test_unsigned_requests_are_refused(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    account_id, region = next(iter(fleet.pairs))
    async with make_client(
        emulator.endpoint_url, account_id, region, signature_version=UNSIGNED
    ) as client:
        error = await client_error(client.list_gateways())
    assert error.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert error.response["Error"]["Message"] == "Request is missing Authentication Token"
    assert status_of(error) == 403

    headers = signed_headers(account_id, region, "ListGateways")
    del headers["Authorization"]
    status, response_headers, body = await raw_post(emulator.endpoint_url, headers)
    assert status == 403
    assert orjson.loads(body)["__type"].endswith("#MissingAuthenticationTokenException")
    assert response_headers["Content-Type"] == "application/x-amz-json-1.1"
    assert response_headers["x-amzn-RequestId"]

    # Signed-looking but incomplete: no Signature, no SignedHeaders.
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key_for_account(account_id)}/20260115/"
        f"{region}/storagegateway/aws4_request"
    )
    status, _, body = await raw_post(emulator.endpoint_url, headers)
    doc = orjson.loads(body)
    assert status == 400
    assert doc["__type"].endswith("#IncompleteSignatureException")
    assert "'Signature'" in doc["message"]
    assert "'SignedHeaders'" in doc["message"]

    # Scoped to another service.
    headers = signed_headers(account_id, region, "ListGateways", service="s3")
    status, _, body = await raw_post(emulator.endpoint_url, headers)
    assert status == 400
    assert orjson.loads(body)["__type"].endswith("#InvalidSignatureException")

    assert emulator.counters.calls() == 0  # refused before they became calls
    assert emulator.counters.snapshot()["rejected"] == 4


async def test_an_undecodable_access_key_is_an_unrecognized_client(
    emulator: EmulatorThread, make_client: Any
) -> None:
    async with make_client(
        emulator.endpoint_url,
        MANAGEMENT_ACCOUNT_ID,
        "us-east-1",
        access_key_id="AKIA" + "1" * 16,  # '1' is not base32: no account in it
    ) as client:
        error = await client_error(client.list_gateways())
    assert error.response["Error"]["Code"] == "UnrecognizedClientException"
    assert error.response["Error"]["Message"] == (
        "The security token included in the request is invalid."
    )
    assert status_of(error) == 400


async def test_an_unknown_operation_is_refused_as_aws_does(
    emulator: EmulatorThread, fleet: Fleet
) -> None:
    account_id, region = next(iter(fleet.pairs))
    headers = signed_headers(account_id, region, "DeleteGateway")
    status, _, body = await raw_post(emulator.endpoint_url, headers)
    assert status == 400
    assert orjson.loads(body)["__type"].endswith("#UnknownOperationException")

    headers["X-Amz-Target"] = "DynamoDB_20120810.ListTables"
    status, _, body = await raw_post(emulator.endpoint_url, headers)
    assert status == 400
    assert orjson.loads(body)["__type"].endswith("#UnknownOperationException")


async def test_a_body_that_is_not_a_json_object_is_a_serialization_error(
    emulator: EmulatorThread, fleet: Fleet
) -> None:
    account_id, region = next(iter(fleet.pairs))
    headers = signed_headers(account_id, region, "ListGateways")
    for body in (b"{not json", b"[1, 2]", b'{"Limit": "ten"}'):
        status, _, answer = await raw_post(emulator.endpoint_url, headers, body)
        assert status == 400
        assert orjson.loads(answer)["__type"].endswith("#SerializationException")


# -- the API page's sample ----------------------------------------------------------------------


async def test_the_api_page_sample_round_trips_over_bare_http(
    emulator: EmulatorThread, sample: SimpleNamespace
) -> None:
    akid = access_key_for_account(sample.account_id)
    headers = {  # the page's sample request, with a key id of the sample's account
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={akid}/20120425/us-east-2/storagegateway/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
            "Signature=9cd5a3584d1d67d57e61f120f35102d6b3649066abdd4bf4bbcf05bd9f2f8fe2"
        ),
        "x-amz-date": "20120912T120000Z",
        "x-amz-target": "StorageGateway_20130630.ListVolumeRecoveryPoints",
    }
    body = orjson.dumps({"GatewayARN": sample.gateway_arn})
    status, response_headers, answer = await raw_post(emulator.endpoint_url, headers, body)
    assert status == 200
    assert response_headers["Content-Type"] == "application/x-amz-json-1.1"
    assert response_headers["x-amzn-RequestId"]
    assert int(response_headers["Content-Length"]) == len(answer)
    assert orjson.loads(answer) == sample.response
    assert b'"VolumeSizeInBytes":"536870912000"' in answer  # a JSON string, as on the page


async def test_the_api_page_sample_through_aiobotocore(
    emulator: EmulatorThread, sample: SimpleNamespace, make_client: Any
) -> None:
    async with make_client(emulator.endpoint_url, sample.account_id, sample.region) as client:
        answer = await client.list_volume_recovery_points(GatewayARN=sample.gateway_arn)
    answer.pop("ResponseMetadata")
    assert answer == sample.response


def test_the_aws_cli_gets_the_api_page_sample_back(
    emulator: EmulatorThread, sample: SimpleNamespace, tmp_path: Path
) -> None:
    aws = Path(sys.executable).with_name("aws")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ACCESS_KEY_ID": access_key_for_account(sample.account_id),
        "AWS_SECRET_ACCESS_KEY": "emulated-secret-not-checked",
        "AWS_DEFAULT_REGION": sample.region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }
    result = subprocess.run(
        [
            str(aws),
            "storagegateway",
            "list-volume-recovery-points",
            "--endpoint-url",
            emulator.endpoint_url,
            "--gateway-arn",
            sample.gateway_arn,
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == sample.response
    assert emulator.counters.calls("ListVolumeRecoveryPoints", sample.account_id) == 1


# -- TLS ----------------------------------------------------------------------------------------


async def test_tls_works_for_a_client_trusting_only_the_ca_bundle(
    fleet: Fleet, sample: SimpleNamespace, make_client: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    tls = TLSMaterial.create(tmp_path / "tls")
    assert tls.ca_bundle == tmp_path / "tls" / "ca.pem"
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    for host in ("127.0.0.1", "::1"):
        with EmulatorThread(fleet, tls=tls, host=host) as emulator:
            assert emulator.endpoint_url.startswith("https://")
            url = emulator.endpoint_url
            async with make_client(
                url, sample.account_id, sample.region, verify=str(tls.ca_bundle)
            ) as client:
                answer = await client.list_volume_recovery_points(GatewayARN=sample.gateway_arn)
                assert answer["GatewayARN"] == sample.gateway_arn

            # The standard way: AWS_CA_BUNDLE, no client option at all.
            monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.ca_bundle))
            async with make_client(url, sample.account_id, sample.region) as client:
                answer = await client.list_gateways()
                assert [g["GatewayARN"] for g in answer["Gateways"]] == [sample.gateway_arn]
            monkeypatch.delenv("AWS_CA_BUNDLE")

            # Without the CA, the certificate is not trusted.
            async with make_client(url, sample.account_id, sample.region) as client:
                with pytest.raises(SSLError):
                    await client.list_gateways()


# -- counters and admin -------------------------------------------------------------------------


async def test_counters_and_faults_over_http(
    emulator: EmulatorThread, fleet: Fleet, make_client: Any
) -> None:
    (first, region), _ = sorted(fleet.pairs.items())[0]
    second = next(a.id for a in fleet.accounts if a.id != first)
    url = emulator.endpoint_url
    async with make_client(url, first, region) as client:
        for _ in range(3):
            await client.list_gateways()
    async with make_client(url, second, region) as client:
        await client.list_gateways()
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/_emulator/counters") as response:
            assert response.status == 200
            snapshot = await response.json()
        assert snapshot == emulator.counters.snapshot()
        assert snapshot["calls"]["ListGateways"][first][region] == 3
        assert snapshot["calls"]["ListGateways"][second][region] == 1
        assert snapshot["calls_total"] == 4
        assert emulator.counters.calls("ListGateways", first) == 3
        assert emulator.counters.calls(region=region) == 4
        assert emulator.counters.calls("ListVolumeRecoveryPoints") == 0

        async with http.post(url + "/_emulator/counters/reset") as response:
            assert response.status == 200
            assert (await response.json())["calls_total"] == 0
        assert emulator.counters.calls() == 0

        faults: dict[str, list[dict[str, Any]]] = {
            "rules": [
                {"account_id": first, "internal_error_rate": 1.0, "internal_error_status": 400}
            ]
        }
        async with http.put(url + "/_emulator/faults", data=orjson.dumps(faults)) as response:
            assert response.status == 200
        async with http.get(url + "/_emulator/faults") as response:
            assert await response.json() == faults
        assert emulator.faults == Faults([FaultRule(**faults["rules"][0])])

        bad = {"rules": [{"account_id": first, "internal_error_rate": 2}]}
        async with http.put(url + "/_emulator/faults", data=orjson.dumps(bad)) as response:
            assert response.status == 400
            assert "internal_error_rate" in (await response.json())["message"]
        assert emulator.faults == Faults([FaultRule(**faults["rules"][0])])  # unchanged

    async with make_client(url, first, region) as client:
        error = await client_error(client.list_gateways())
    assert error.response["Error"]["Code"] == "InternalServerError"
    assert error.response["error"]["errorCode"] == "InternalError"
    assert status_of(error) == 400
    async with make_client(url, second, region) as client:
        await client.list_gateways()  # another account: unaffected
    assert emulator.counters.faults()["internal_error"] == 1


async def test_in_flight_calls_are_counted(
    server: EmulatorServer, fleet: Fleet, make_client: Any
) -> None:
    account_id, region = next(iter(fleet.pairs))
    server.faults = Faults([FaultRule(latency_ms=300)])
    async with make_client(server.endpoint_url, account_id, region) as client:
        await asyncio.gather(*(client.list_gateways() for _ in range(16)))
    counters = server.counters
    assert counters.in_flight == 0
    assert 1 < counters.peak_in_flight <= 16
    assert counters.faults()["latency"] == 16
    assert counters.calls("ListGateways", account_id, region) == 16


async def test_the_server_is_an_async_context_manager_on_loopback(fleet: Fleet) -> None:
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):
        with pytest.raises(ValueError, match=r"loopback|IP address"):
            EmulatorServer(fleet, host=host)
    server = EmulatorServer(fleet)
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url
    async with server:
        assert server.endpoint_url.startswith("http://127.0.0.1:")
        url = server.endpoint_url
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url
    with pytest.raises(aiohttp.ClientConnectionError):
        await raw_post(url, {})


# -- answers rendered ahead of use (``fleetscan emulator serve`` prepares them) ------------------

_PREPARED_SPEC = FleetSpec(seed=32, accounts=12, epoch=dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC))


class CountingFleet(Fleet):
    """A fleet that counts how often the server asks it for a populated pair's gateways."""

    def __init__(self, spec: FleetSpec) -> None:
        super().__init__(spec)
        self.derived = 0

    def gateways(self, account_id: str, region: str) -> tuple[Gateway, ...]:
        self.derived += (account_id, region) in self.pairs
        return super().gateways(account_id, region)


async def _answers(url: str, fleet: Fleet) -> dict[tuple[str, ...], bytes]:
    """Every answer a scan of ``fleet`` gets, by call: ListGateways of every pair (empty ones
    too), ListVolumeRecoveryPoints of every cached gateway."""
    answers: dict[tuple[str, ...], bytes] = {}
    for account in fleet.accounts:
        for region in fleet.spec.regions:
            headers = signed_headers(account.id, region, "ListGateways")
            status, _, answers[("ListGateways", account.id, region)] = await raw_post(url, headers)
            assert status == 200
    for gateway in fleet.iter_gateways():
        if gateway.is_cached:
            operation = "ListVolumeRecoveryPoints"
            headers = signed_headers(gateway.account_id, gateway.region, operation)
            body = orjson.dumps({"GatewayARN": gateway.arn})
            _, _, answers[(operation, gateway.arn)] = await raw_post(url, headers, body)
    return answers


async def test_a_prepared_server_answers_as_a_lazy_one_without_deriving_anything() -> None:
    lazy_fleet, prepared_fleet = CountingFleet(_PREPARED_SPEC), CountingFleet(_PREPARED_SPEC)
    prepared = EmulatorServer(prepared_fleet)
    prepared.prepare()
    derived = prepared_fleet.derived
    assert derived == len(prepared_fleet.pairs)
    calls = Fleet(_PREPARED_SPEC)  # says which calls to make, without counting
    async with EmulatorServer(lazy_fleet) as lazy, prepared:
        expected = await _answers(lazy.endpoint_url, calls)
        assert await _answers(prepared.endpoint_url, calls) == expected
    assert any(b"GatewayNotConnected" in body for body in expected.values())
    assert prepared_fleet.derived == derived  # every answer was rendered before the first call
    assert lazy_fleet.derived > 0


async def test_a_prepared_server_answers_the_fleet_as_it_changes() -> None:
    """Prepared answers are dropped when the fleet changes between scans: a stale one would
    still list the removed gateway, miss the added volume and keep last hour's times."""
    fleet = Fleet(_PREPARED_SPEC)
    server = EmulatorServer(fleet)
    server.prepare()
    readable = [g for g in fleet.iter_gateways() if g.is_cached and g.connected and g.volumes]
    removed, grown = readable[0], readable[1]
    async with server:
        before = await _answers(server.endpoint_url, fleet)
        fleet.remove_gateway(removed.arn)
        fleet.add_volume(grown.arn)
        fleet.advance(3600)
        after = await _answers(server.endpoint_url, fleet)

    def listed(answers: dict[tuple[str, ...], bytes], gateway: Gateway) -> list[str]:
        body = orjson.loads(answers[("ListGateways", gateway.account_id, gateway.region)])
        return [g["GatewayARN"] for g in body["Gateways"]]

    def points(answers: dict[tuple[str, ...], bytes], gateway: Gateway) -> list[dict[str, Any]]:
        body = orjson.loads(answers[("ListVolumeRecoveryPoints", gateway.arn)])
        infos: list[dict[str, Any]] = body["VolumeRecoveryPointInfos"]
        return infos

    assert removed.arn in listed(before, removed)
    assert removed.arn not in listed(after, removed)
    assert ("ListVolumeRecoveryPoints", removed.arn) not in after
    assert len(points(after, grown)) == len(points(before, grown)) + 1
    hour_later = {
        v["VolumeARN"]: parse_time(v["VolumeRecoveryPointTime"]) for v in points(after, grown)
    }
    for volume in points(before, grown):
        moved = hour_later[volume["VolumeARN"]] - parse_time(volume["VolumeRecoveryPointTime"])
        assert moved == dt.timedelta(hours=1)


def test_kept_answers_hold_their_json_and_no_more() -> None:
    """orjson's bytes keep the buffer they were written into (4 KiB and more); the fragments
    and answers the emulator keeps for its whole life must not."""
    doc = {"GatewayARN": "arn:aws:storagegateway:us-east-1:111122223333:gateway/sgw-12A3456B"}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [dumps_kept(doc) for _ in range(1_000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(doc)
    assert held < 1_000 * (len(kept[0]) + 100)


async def test_each_connection_that_carried_a_call_counts_once_and_is_forgotten_when_closed(
    emulator: EmulatorThread, fleet: Fleet
) -> None:
    """Counted per aiohttp connection, not per transport (uvloop's take no weak reference), and
    a closed connection leaves nothing behind."""
    (account_id, region), _ = next(iter(fleet.pairs.items()))
    headers = signed_headers(account_id, region, "ListGateways")
    url = emulator.endpoint_url + "/"
    connector = aiohttp.TCPConnector(limit=3)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call() -> None:
            async with http.post(url, headers=headers, data=b"{}") as response:
                assert response.status == 200
                await response.read()

        for _ in range(4):  # three connections, each reused for four rounds of calls
            await asyncio.gather(*(call() for _ in range(3)))
        assert emulator.counters.connections == 3
        assert len(emulator.server._api_connections) == 3
    for _ in range(100):
        if not emulator.server._api_connections:
            break
        await asyncio.sleep(0.05)
    assert emulator.server._api_connections == set()
    assert emulator.counters.connections == 3
