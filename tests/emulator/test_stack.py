"""The whole stack over real HTTP, configured only through environment variables: the emulator
(Storage Gateway, STS, Organizations, EC2) and moto (S3), and the same with moto's STS and
Organizations seeded with the fleet's organizations (``identity="moto"``). Most tests run in both
modes: the fleet model must answer a client exactly as moto, seeded with the same fleet, does.

Every client here is built with no endpoint, key or region argument: what a user's unchanged
script gets from ``stack.env()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import botocore.exceptions
import certifi
import pytest
from aiobotocore.session import get_session
from botocore.config import Config

import fleetscan
from fleetscan import ConfigError
from fleetscan.emulator import (
    IDENTITY_MODES,
    Fleet,
    FleetSpec,
    OrganizationAccess,
    Stack,
    account_id_from_access_key,
    start_stack,
    verify_run,
)


@pytest.fixture(params=IDENTITY_MODES)
def stack(request: pytest.FixtureRequest, fleet_spec: FleetSpec) -> Iterator[Stack]:
    """The stack for ``fleet_spec``, once with each identity mode."""
    with start_stack(fleet_spec, identity=request.param) as running:
        yield running


def _fleet_accounts(fleet: Fleet) -> dict[str, tuple[str, str, str]]:
    expected = {a.id: (a.name, a.email, a.status) for a in fleet.accounts}
    expected[fleet.management_account_id] = ("master", "master@example.com", "ACTIVE")
    return expected


def _busiest_pair(fleet: Fleet) -> tuple[str, str]:
    """The (active account, region) holding the most gateways: ListGateways must page there."""
    return max(
        (pair for pair in fleet.pairs if fleet.account(pair[0]) and fleet.account(pair[0]).active),  # type: ignore[union-attr]
        key=lambda pair: fleet.pairs[pair],
    )


def _assume(stack: Stack, account_id: str, **extra: Any) -> dict[str, str]:
    credentials: dict[str, str] = boto3.client("sts").assume_role(
        RoleArn=stack.role_arn(account_id), RoleSessionName="fleetscan-test", **extra
    )["Credentials"]
    return credentials


def _member_session(credentials: dict[str, str], region: str) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


def test_list_accounts_pages_through_the_fleet_with_statuses(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    organizations = boto3.client("organizations")
    pages = list(
        organizations.get_paginator("list_accounts").paginate(PaginationConfig={"PageSize": 5})
    )

    assert len(pages) == 3  # 13 accounts (12 members + management) in pages of 5
    listed = {a["Id"]: (a["Name"], a["Email"], a["Status"]) for p in pages for a in p["Accounts"]}
    assert sum(len(p["Accounts"]) for p in pages) == len(listed)  # no account twice
    assert listed == _fleet_accounts(stack.fleet)
    suspended = [account_id for account_id, (_, _, status) in listed.items() if status != "ACTIVE"]
    assert suspended == [a.id for a in stack.fleet.accounts if not a.active]
    assert len(suspended) == 1


def test_organization_ids_and_ou_tree_are_the_fleets(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    fleet = stack.fleet
    organizations = boto3.client("organizations")
    organization = organizations.describe_organization()["Organization"]
    assert organization["Id"] == fleet.organization_id
    assert organization["MasterAccountId"] == fleet.management_account_id
    assert [r["Id"] for r in organizations.list_roots()["Roots"]] == [fleet.root_id]

    ou_pages = organizations.get_paginator("list_organizational_units_for_parent")
    account_pages = organizations.get_paginator("list_accounts_for_parent")
    ous: dict[str, tuple[str, str]] = {}
    placement: dict[str, str] = {}

    def walk(parent_id: str) -> list[str]:
        """Account ids under ``parent_id``, recursively, as a scanner's --ou must find them."""
        found = [
            a["Id"]
            for page in account_pages.paginate(ParentId=parent_id, PaginationConfig={"PageSize": 2})
            for a in page["Accounts"]
        ]
        placement.update(dict.fromkeys(found, parent_id))
        for page in ou_pages.paginate(ParentId=parent_id, PaginationConfig={"PageSize": 1}):
            for ou in page["OrganizationalUnits"]:
                ous[ou["Id"]] = (ou["Name"], parent_id)
                found += walk(ou["Id"])
        return found

    everything = walk(fleet.root_id)

    assert ous == {ou.id: (ou.name, ou.parent_id) for ou in fleet.ous}
    assert any(parent != fleet.root_id for _, parent in ous.values())  # the nested OU
    assert placement == {a.id: a.ou_id for a in fleet.accounts} | {
        fleet.management_account_id: fleet.root_id
    }
    assert sorted(everything) == sorted(_fleet_accounts(fleet))
    production = next(ou for ou in fleet.ous if ou.name == "Production")
    assert sorted(walk(production.id)) == sorted(a.id for a in fleet.ou_accounts(production.id))


def test_assume_role_into_a_member_lists_its_gateways(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    account_id, region = _busiest_pair(stack.fleet)
    assert stack.fleet.gateway_count(account_id, region) > 3  # so Limit=3 must page

    credentials = _assume(stack, account_id)
    assert account_id_from_access_key(credentials["AccessKeyId"]) == account_id
    session = _member_session(credentials, region)
    assert session.client("sts").get_caller_identity()["Account"] == account_id
    assert boto3.client("sts").get_caller_identity()["Account"] == stack.management_account_id

    pages = session.client("storagegateway").get_paginator("list_gateways")
    listed = [g for p in pages.paginate(PaginationConfig={"PageSize": 3}) for g in p["Gateways"]]

    # Sorted: ListGateways promises no order, only every gateway exactly once across pages.
    assert sorted(
        (g["GatewayARN"], g["GatewayId"], g["GatewayType"], g["GatewayName"]) for g in listed
    ) == sorted((g.arn, g.id, g.type, g.name) for g in stack.fleet.gateways(account_id, region))
    # The management account owns no gateway: the emulator answers per caller account.
    management = boto3.client("storagegateway", region_name=region).list_gateways()
    assert management["Gateways"] == []


async def test_aiobotocore_discovers_assumes_and_lists_from_env_only(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    fleet = stack.fleet
    account_id, region = _busiest_pair(fleet)
    session = get_session()
    async with session.create_client("organizations") as organizations:
        ids = [
            a["Id"]
            async for page in organizations.get_paginator("list_accounts").paginate(
                PaginationConfig={"PageSize": 4}
            )
            for a in page["Accounts"]
        ]
    assert sorted(ids) == sorted(_fleet_accounts(fleet))

    async with session.create_client("sts") as sts:
        response = await sts.assume_role(
            RoleArn=stack.role_arn(account_id), RoleSessionName="fleetscan-aio"
        )
    credentials = response["Credentials"]
    async with session.create_client(
        "storagegateway",
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    ) as storagegateway:
        arns = [
            g["GatewayARN"]
            async for page in storagegateway.get_paginator("list_gateways").paginate()
            for g in page["Gateways"]
        ]
    assert sorted(arns) == sorted(g.arn for g in fleet.gateways(account_id, region))


def test_suspended_account_and_missing_role_cannot_be_assumed(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    suspended = next(a for a in stack.fleet.accounts if not a.active)
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        _assume(stack, suspended.id)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    active = next(a for a in stack.fleet.accounts if a.active)
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        boto3.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{active.id}:role/NotTheReaderRole", RoleSessionName="test"
        )
    assert missing.value.response["Error"]["Code"] == "AccessDenied"
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert account_id_from_access_key(_assume(stack, active.id)["AccessKeyId"]) == active.id
    if stack.identity == "moto":
        # moto's IAM holds the role in the member account, with the management account trusted.
        role = (
            _member_session(_assume(stack, active.id), "us-east-1")
            .client("iam")
            .get_role(RoleName=stack.role_name)["Role"]
        )
        principal = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
        assert principal == f"arn:aws:iam::{stack.management_account_id}:root"


@pytest.mark.parametrize("identity", IDENTITY_MODES)
def test_external_id_is_required_when_the_stack_sets_one(
    fleet_spec: FleetSpec, monkeypatch: pytest.MonkeyPatch, identity: Any
) -> None:
    with start_stack(
        fleet_spec, external_id="correct-horse", role_name="AuditReader", identity=identity
    ) as stack:
        for key, value in stack.env().items():
            monkeypatch.setenv(key, value)
        member = next(a for a in stack.fleet.accounts if a.active)
        for external_id in (None, "wrong-battery"):
            extra = {} if external_id is None else {"ExternalId": external_id}
            with pytest.raises(botocore.exceptions.ClientError) as denied:
                _assume(stack, member.id, **extra)
            assert denied.value.response["Error"]["Code"] == "AccessDenied"
            assert "correct-horse" not in str(denied.value)
        credentials = _assume(stack, member.id, ExternalId="correct-horse")
        assert stack.role_arn(member.id).endswith(":role/AuditReader")
        assert account_id_from_access_key(credentials["AccessKeyId"]) == member.id


def test_regions_s3_and_only_the_served_services_point_at_the_stack(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    regions = {r["RegionName"] for r in boto3.client("ec2").describe_regions()["Regions"]}
    assert set(stack.fleet.spec.regions) <= regions
    assert regions == set(stack.fleet.enabled_regions(stack.management_account_id))

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fleetscan-records")
    s3.put_object(Bucket="fleetscan-records", Key="dt=2026-01-01/part-0.ndjson", Body=b"{}\n")
    body = s3.get_object(Bucket="fleetscan-records", Key="dt=2026-01-01/part-0.ndjson")["Body"]
    assert body.read() == b"{}\n"

    identity = stack.endpoint_url if stack.identity == "fleet" else stack.moto_endpoint_url
    for service in ("sts", "organizations"):
        assert boto3.client(service).meta.endpoint_url == identity
    for service in ("s3", "iam"):
        assert boto3.client(service).meta.endpoint_url == stack.moto_endpoint_url
    for service in ("storagegateway", "ec2"):
        assert boto3.client(service).meta.endpoint_url == stack.endpoint_url
    # No global AWS_ENDPOINT_URL: a service the stack does not serve is not routed to it.
    # (The client is only built, never called.)
    assert "AWS_ENDPOINT_URL" not in stack_env
    dynamodb = boto3.client("dynamodb").meta.endpoint_url
    assert dynamodb == "https://dynamodb.us-east-1.amazonaws.com"


def test_tls_stack_is_trusted_through_aws_ca_bundle_only(
    fleet_spec: FleetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_stack(fleet_spec, tls=True) as stack:
        env = stack.env()
        assert env["AWS_ENDPOINT_URL_STORAGE_GATEWAY"].startswith("https://127.0.0.1:")
        assert stack.ca_bundle is not None
        assert env["AWS_CA_BUNDLE"] == str(stack.ca_bundle)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        account_id, region = _busiest_pair(stack.fleet)
        session = _member_session(_assume(stack, account_id), region)

        pages = session.client("storagegateway").get_paginator("list_gateways").paginate()
        listed = [g["GatewayARN"] for page in pages for g in page["Gateways"]]
        assert sorted(listed) == sorted(g.arn for g in stack.fleet.gateways(account_id, region))

        # The server's certificate is the throwaway CA's: the public trust store rejects it.
        untrusting = session.client(
            "storagegateway",
            verify=certifi.where(),
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(botocore.exceptions.SSLError):
            untrusting.list_gateways()
        ca_dir = stack.ca_bundle.parent
    assert not ca_dir.exists()  # the throwaway CA does not outlive the stack


def test_moto_state_does_not_leak_between_stacks(
    fleet_spec: FleetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_stack(fleet_spec, identity="moto") as first:
        with pytest.raises(RuntimeError, match="already running"):
            start_stack(fleet_spec)
        for key, value in first.env().items():
            monkeypatch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="left-behind")
        assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == ["left-behind"]

    other = FleetSpec(seed=8, accounts=3, regions=fleet_spec.regions)
    with start_stack(other, identity="moto") as second:
        for key, value in second.env().items():
            monkeypatch.setenv(key, value)
        assert boto3.client("s3").list_buckets()["Buckets"] == []
        accounts = boto3.client("organizations").list_accounts()["Accounts"]
        assert sorted(a["Id"] for a in accounts) == sorted(_fleet_accounts(second.fleet))


#: Two organizations: the second reached through its management role, with external ids.
TWO_ORGANIZATIONS = (
    OrganizationAccess(),
    OrganizationAccess(external_id="org2-members", management_external_id="org2-admin"),
)


def _discover_organizations(stack: Stack) -> dict[str, Any]:
    """What a client learns of each organization: the first through the ambient keys, the others
    through their management role; and whom a member role of each makes it."""
    found: dict[str, Any] = {}
    ambient_sts = boto3.client("sts")
    for organization in stack.organizations:
        if organization.index == 0:
            session = boto3.Session()
        else:
            credentials = ambient_sts.assume_role(
                RoleArn=organization.management_role_arn,
                RoleSessionName="org-reader",
                ExternalId=organization.management_external_id or "",
            )["Credentials"]
            session = _member_session(credentials, "us-east-1")
        client = session.client("organizations")
        described = client.describe_organization()["Organization"]
        pages = client.get_paginator("list_accounts").paginate(PaginationConfig={"PageSize": 4})
        accounts = {
            a["Id"]: (a["Name"], a["Email"], a["Status"]) for p in pages for a in p["Accounts"]
        }
        roots = [r["Id"] for r in client.list_roots()["Roots"]]
        ous = {
            ou["Id"]: ou["Name"]
            for root in roots
            for ou in client.list_organizational_units_for_parent(ParentId=root)[
                "OrganizationalUnits"
            ]
        }
        member = next(
            a for a in stack.fleet.accounts if a.active and a.organization_id == organization.id
        )
        extra = (
            {"ExternalId": organization.member_external_id}
            if organization.member_external_id
            else {}
        )
        member_credentials = ambient_sts.assume_role(
            RoleArn=organization.member_role_arn(member.id), RoleSessionName="scan", **extra
        )["Credentials"]
        caller = (
            _member_session(member_credentials, "us-east-1")
            .client("sts")
            .get_caller_identity()["Account"]
        )
        found[organization.id] = {
            "id": described["Id"],
            "management": described["MasterAccountId"],
            "accounts": accounts,
            "roots": roots,
            "top_ous": ous,
            "member_caller": (member.id, caller),
        }
    return found


def test_two_organizations_look_the_same_through_the_fleet_model_and_moto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = FleetSpec(seed=5, accounts=9, organizations=2, regions=("us-east-1", "eu-west-1"))
    seen: dict[str, Any] = {}
    for identity in IDENTITY_MODES:
        with start_stack(spec, organizations=TWO_ORGANIZATIONS, identity=identity) as stack:
            for key, value in stack.env().items():
                monkeypatch.setenv(key, value)
            seen[identity] = _discover_organizations(stack)
            fleet = stack.fleet
            # Without its external id, the second organization's management role refuses.
            with pytest.raises(botocore.exceptions.ClientError) as refused:
                boto3.client("sts").assume_role(
                    RoleArn=stack.organizations[1].management_role_arn, RoleSessionName="nope"
                )
            assert refused.value.response["Error"]["Code"] == "AccessDenied"

    assert seen["fleet"] == seen["moto"]
    assert len(seen["fleet"]) == 2
    for organization in fleet.organizations:
        view = seen["fleet"][organization.id]
        assert view["id"] == organization.id
        assert view["management"] == organization.management.id
        assert view["roots"] == [organization.root_id]
        assert set(view["accounts"]) == {a.id for a in fleet.organization_accounts(organization)}
        statuses = [status for _, _, status in view["accounts"].values()]
        assert statuses.count("SUSPENDED") == 1  # one suspended member in each organization
        assert view["top_ous"] == {
            ou.id: ou.name for ou in organization.ous if ou.parent_id == organization.root_id
        }
        member, caller = view["member_caller"]
        assert caller == member


def test_a_scan_of_the_ambient_organization_is_exactly_its_ground_truth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Today's scanner, ``--org`` with the exported keys, against two organizations: it sees the
    first organization (the keys' own) and nothing of the second, record for record."""
    spec = FleetSpec(seed=5, accounts=8, organizations=2, regions=("us-east-1", "eu-west-1"))
    with start_stack(spec) as stack:
        for key, value in stack.env().items():
            monkeypatch.setenv(key, value)
        config = fleetscan.ScanConfig(
            org=True, role_name=stack.role_name, regions=spec.regions, output=str(tmp_path)
        )
        result = anyio.run(fleetscan.run_scan, config, backend="asyncio")
        first, second = stack.organizations
        assert result.status == "complete"
        assert result.stats.accounts == len(stack.fleet.ground_truth().organizations[first.id])
        mine = verify_run(stack.fleet, str(tmp_path), result.run_id, organizations={first.id})
        assert mine.exact
        assert mine.expected > 0
        everything = verify_run(stack.fleet, str(tmp_path), result.run_id)
        theirs = stack.fleet.ground_truth(organizations={second.id}).recovery_points
        assert everything.missing == len(theirs) > 0


@pytest.mark.parametrize("identity", IDENTITY_MODES)
def test_a_denied_organization_cannot_be_reached_through_its_management_role(
    monkeypatch: pytest.MonkeyPatch, identity: Any
) -> None:
    spec = FleetSpec(seed=5, accounts=4, organizations=2, regions=("us-east-1",))
    access = (OrganizationAccess(), OrganizationAccess(denied=True))
    with start_stack(spec, organizations=access, identity=identity) as stack:
        for key, value in stack.env().items():
            monkeypatch.setenv(key, value)
        first, denied = stack.organizations
        assert (first.denied, denied.denied) == (False, True)
        sts = boto3.client("sts")
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sts.assume_role(RoleArn=denied.management_role_arn, RoleSessionName="org-reader")
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        # The first organization's management role still works.
        credentials = sts.assume_role(
            RoleArn=first.management_role_arn, RoleSessionName="org-reader"
        )["Credentials"]
        assert account_id_from_access_key(credentials["AccessKeyId"]) == first.management_account_id


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "192.168.1.20", "example.com"])
def test_hosts_off_loopback_are_refused_before_binding(fleet_spec: FleetSpec, host: str) -> None:
    with pytest.raises(ConfigError) as refused:
        start_stack(fleet_spec, host=host)
    assert refused.value.field == "host"
    assert host in refused.value.problem
    # Refused before anything started: a loopback stack can start right after.
    with start_stack(fleet_spec, host="127.0.0.1"):
        pass
