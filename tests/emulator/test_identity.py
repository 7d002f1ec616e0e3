"""STS, Organizations and EC2 DescribeRegions from the fleet model, over real HTTP on 127.0.0.1,
called by real aiobotocore clients (botocore's retries off): answers that validate against
botocore's model (XML for STS and EC2, JSON for Organizations) and match the fleet, errors as
each service sends them, sessions that expire as asked, and two organizations, the second reached
through its management role.

The one fake is the server's clock, moved forward to see sessions expire without waiting an hour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import botocore.exceptions
import pytest
from aiobotocore.session import get_session

from fleetscan.emulator import (
    NON_OPT_IN_REGIONS,
    OPT_IN_REGIONS,
    STORAGE_GATEWAY_REGIONS,
    EmulatorServer,
    FaultRule,
    Faults,
    Fleet,
    FleetSpec,
    OrganizationAccess,
    Roles,
    account_id_from_access_key,
)

Validate = Callable[..., list[str]]

EPOCH = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
#: Two organizations; gateways in two opt-in regions too, so opt-in status matters.
SPEC = FleetSpec(
    seed=11,
    accounts=10,
    organizations=2,
    regions=("us-east-1", "eu-west-1", "ap-east-1", "af-south-1"),
    epoch=EPOCH,
)
MEMBER_SECRET = "org2-members-external-id"
ADMIN_SECRET = "org2-admin-external-id"
ACCESS = (
    OrganizationAccess(),
    OrganizationAccess(external_id=MEMBER_SECRET, management_external_id=ADMIN_SECRET),
)
OUTSIDER = "999988887777"  # in no organization of the fleet


class Clock:
    """The server's clock, which a test moves; starts at the fleet's epoch."""

    def __init__(self) -> None:
        self.now = EPOCH.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(SPEC)


@pytest.fixture
async def emulated(fleet: Fleet) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(fleet, roles=Roles(fleet, organizations=ACCESS)) as server:
        server.clock = Clock()
        yield server


@pytest.fixture
def call(emulated: EmulatorServer, make_aws_client: Any) -> Any:
    """``await call(service, operation, account_id=..., credentials=..., bodies=..., **params)``:
    one call with a fresh client, as the account's long-term keys or the given session."""

    async def one(
        service: str,
        operation: str,
        *,
        account_id: str = "123456789012",
        credentials: dict[str, Any] | None = None,
        bodies: list[tuple[str, bytes]] | None = None,
        region: str = "us-east-1",
        **params: Any,
    ) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        if credentials is not None:
            keys = {
                "access_key_id": credentials["AccessKeyId"],
                "session_token": credentials["SessionToken"],
            }
        async with make_aws_client(
            service,
            emulated.endpoint_url,
            account_id,
            region,
            raw_bodies=bodies,
            parameter_validation=False,
            **keys,
        ) as client:
            method = getattr(client, _snake(operation))
            answer: dict[str, Any] = await method(**params)
            return answer

    return one


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


async def error_of(awaitable: Any) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await awaitable
    return info.value


def code_and_status(error: botocore.exceptions.ClientError) -> tuple[str, int]:
    return (
        error.response["Error"]["Code"],
        int(error.response["ResponseMetadata"]["HTTPStatusCode"]),
    )


# -- Organizations ------------------------------------------------------------------------------


async def test_each_management_account_discovers_exactly_its_organization(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    bodies: list[tuple[str, bytes]] = []
    for organization in fleet.organizations:
        management = organization.management.id

        async def org(operation: str, *, _management: str = management, **params: Any) -> Any:
            return await call(
                "organizations", operation, account_id=_management, bodies=bodies, **params
            )

        described = (await org("DescribeOrganization"))["Organization"]
        assert (described["Id"], described["MasterAccountId"]) == (organization.id, management)
        assert described["MasterAccountEmail"] == organization.management.email

        listed: list[dict[str, Any]] = []
        token: str | None = None
        pages = 0
        while True:
            page = await org(
                "ListAccounts", MaxResults=3, **({"NextToken": token} if token else {})
            )
            pages += 1
            assert len(page["Accounts"]) <= 3
            listed += page["Accounts"]
            token = page.get("NextToken")
            if not token:
                break
        accounts = fleet.organization_accounts(organization)
        assert pages == -(-len(accounts) // 3)
        assert [a["Id"] for a in listed] == [a.id for a in accounts]  # each once, in join order
        assert {a["Id"]: (a["Name"], a["Email"], a["Status"], a["State"]) for a in listed} == {
            a.id: (a.name, a.email, a.status, a.status) for a in accounts
        }
        assert [a["Status"] for a in listed].count("SUSPENDED") == 1

        roots = (await org("ListRoots"))["Roots"]
        assert [r["Id"] for r in roots] == [organization.root_id]

        # Walk the tree: every account under exactly the OU the fleet puts it in.
        placement: dict[str, str] = {}
        ou_parents: dict[str, str] = {}
        pending = [organization.root_id]
        while pending:
            parent = pending.pop()
            under = await org("ListAccountsForParent", ParentId=parent)
            placement.update((a["Id"], parent) for a in under["Accounts"])
            ous = await org("ListOrganizationalUnitsForParent", ParentId=parent)
            for ou in ous["OrganizationalUnits"]:
                ou_parents[ou["Id"]] = parent
                pending.append(ou["Id"])
            children = await org("ListChildren", ParentId=parent, ChildType="ACCOUNT")
            assert [c["Id"] for c in children["Children"]] == [a["Id"] for a in under["Accounts"]]
            children = await org("ListChildren", ParentId=parent, ChildType="ORGANIZATIONAL_UNIT")
            assert [c["Id"] for c in children["Children"]] == [
                ou["Id"] for ou in ous["OrganizationalUnits"]
            ]
        assert placement == {a.id: a.ou_id for a in accounts}
        assert ou_parents == {ou.id: ou.parent_id for ou in organization.ous}
        assert any(parent != organization.root_id for parent in ou_parents.values())  # nested

    assert {op for op, _ in bodies} == {
        "DescribeOrganization",
        "ListAccounts",
        "ListRoots",
        "ListAccountsForParent",
        "ListOrganizationalUnitsForParent",
        "ListChildren",
    }
    problems = [p for op, body in bodies for p in validate_body(op, body, "organizations")]
    assert problems == []


async def test_only_the_management_account_or_a_delegated_administrator_lists(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    organization = fleet.organizations[1]
    member = next(a for a in fleet.accounts if a.organization_id == organization.id and a.active)
    bodies: list[tuple[str, bytes]] = []
    for operation, params in (
        ("ListAccounts", {}),
        ("ListRoots", {}),
        ("ListOrganizationalUnitsForParent", {"ParentId": organization.root_id}),
        ("ListAccountsForParent", {"ParentId": organization.root_id}),
    ):
        error = await error_of(
            call("organizations", operation, account_id=member.id, bodies=bodies, **params)
        )
        assert code_and_status(error) == ("AccessDeniedException", 400)
    # A member may describe its organization, and sees its own.
    described = await call("organizations", "DescribeOrganization", account_id=member.id)
    assert described["Organization"]["Id"] == organization.id

    for operation in ("DescribeOrganization", "ListAccounts"):
        error = await error_of(call("organizations", operation, account_id=OUTSIDER, bodies=bodies))
        assert code_and_status(error) == ("AWSOrganizationsNotInUseException", 400)

    # The other organization's root is not a parent this one can see.
    error = await error_of(
        call(
            "organizations",
            "ListAccountsForParent",
            account_id=organization.management.id,
            bodies=bodies,
            ParentId=fleet.organizations[0].root_id,
        )
    )
    assert code_and_status(error) == ("ParentNotFoundException", 400)
    problems = [p for op, body in bodies for p in validate_body(op, body, "organizations")]
    assert problems == []


async def test_a_delegated_administrator_lists_like_the_management_account(
    make_aws_client: Any,
) -> None:
    fleet = Fleet(FleetSpec(seed=11, accounts=6, delegated_administrator=True, epoch=EPOCH))
    (organization,) = fleet.organizations
    (delegate,) = organization.delegated_administrators
    other = next(a.id for a in fleet.accounts if a.active and a.id != delegate)
    async with EmulatorServer(fleet) as server:
        async with make_aws_client(
            "organizations", server.endpoint_url, delegate, "us-east-1"
        ) as client:
            listed = (await client.list_accounts())["Accounts"]
        assert {a["Id"] for a in listed} == {
            a.id for a in fleet.organization_accounts(organization)
        }
        async with make_aws_client("organizations", server.endpoint_url, other, "us-east-1") as c:
            error = await error_of(c.list_accounts())
        assert code_and_status(error) == ("AccessDeniedException", 400)


async def test_next_tokens_are_checked_and_page_sizes_bounded(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    first, second = fleet.organizations
    bodies: list[tuple[str, bytes]] = []
    page = await call("organizations", "ListAccounts", account_id=first.management.id, MaxResults=2)
    token = page["NextToken"]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("ListRoots", first.management.id, {"NextToken": token}),  # another operation's token
        ("ListAccounts", second.management.id, {"NextToken": token}),  # another organization's
        ("ListAccounts", first.management.id, {"NextToken": "not-a-token"}),
        ("ListAccounts", first.management.id, {"MaxResults": 21}),
        ("ListAccounts", first.management.id, {"MaxResults": 0}),
        ("ListAccountsForParent", first.management.id, {"ParentId": "not-a-parent"}),
        ("ListChildren", first.management.id, {"ParentId": first.root_id, "ChildType": "USER"}),
    ]
    reasons = []
    for operation, account_id, params in cases:
        error = await error_of(
            call("organizations", operation, account_id=account_id, bodies=bodies, **params)
        )
        assert code_and_status(error) == ("InvalidInputException", 400)
        reasons.append(error.response["Reason"])
    assert reasons == [
        "INVALID_NEXT_TOKEN",
        "INVALID_NEXT_TOKEN",
        "INVALID_NEXT_TOKEN",
        "MAX_VALUE_EXCEEDED",
        "MIN_VALUE_EXCEEDED",
        "INVALID_PATTERN",
        "INVALID_ENUM",
    ]
    problems = [p for op, body in bodies for p in validate_body(op, body, "organizations")]
    assert problems == []


async def test_an_empty_page_with_a_next_token_continues_where_it_was(
    emulated: EmulatorServer, fleet: Fleet, call: Any
) -> None:
    organization = fleet.organizations[0]
    management = organization.management.id
    expected = [a.id for a in fleet.organization_accounts(organization)]

    # Forced: the first page is empty but carries a token; the listing is still complete.
    emulated.faults = Faults([FaultRule(operation="ListAccounts", empty_page_rate=1.0)])
    empty = await call("organizations", "ListAccounts", account_id=management, MaxResults=4)
    assert empty["Accounts"] == []
    token = empty["NextToken"]
    emulated.faults = Faults()
    listed: list[str] = []
    while token:
        page = await call(
            "organizations", "ListAccounts", account_id=management, MaxResults=4, NextToken=token
        )
        listed += [a["Id"] for a in page["Accounts"]]
        token = page.get("NextToken")
    assert listed == expected

    # At random, through botocore's own paginator: every account once, empty pages counted.
    emulated.faults = Faults([FaultRule(service="organizations", empty_page_rate=0.5)])
    emulated.counters.reset()
    empty_pages = 0
    for _ in range(5):
        listed = []
        token = None
        while True:
            extra: dict[str, str] = {"NextToken": token} if token else {}
            page = await call(
                "organizations", "ListAccounts", account_id=management, MaxResults=2, **extra
            )
            empty_pages += not page["Accounts"]
            listed += [a["Id"] for a in page["Accounts"]]
            token = page.get("NextToken")
            if not token:
                break
        assert listed == expected
    assert empty_pages == emulated.counters.faults()["empty_page"]


# -- STS ----------------------------------------------------------------------------------------


async def test_assume_role_gives_keys_of_the_role_account_that_expire_as_asked(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    clock = emulated.clock
    assert isinstance(clock, Clock)
    member = next(
        a for a in fleet.accounts if a.active and a.organization_id == fleet.organization_id
    )
    bodies: list[tuple[str, bytes]] = []
    answer = await call(
        "sts",
        "AssumeRole",
        bodies=bodies,
        RoleArn=f"arn:aws:iam::{member.id}:role/FleetscanReader",
        RoleSessionName="fleetscan-test",
        DurationSeconds=900,
        Policy='{"Version": "2012-10-17", "Statement": []}',
    )
    credentials = answer["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert account_id_from_access_key(credentials["AccessKeyId"]) == member.id
    assert credentials["Expiration"] == EPOCH + dt.timedelta(seconds=900)
    assert answer["AssumedRoleUser"]["Arn"] == (
        f"arn:aws:sts::{member.id}:assumed-role/FleetscanReader/fleetscan-test"
    )
    assert answer["PackedPolicySize"] >= 1

    identity = await call("sts", "GetCallerIdentity", credentials=credentials, bodies=bodies)
    assert (identity["Account"], identity["Arn"]) == (member.id, answer["AssumedRoleUser"]["Arn"])
    assert identity["UserId"] == answer["AssumedRoleUser"]["AssumedRoleId"]
    ambient = await call("sts", "GetCallerIdentity", bodies=bodies)
    assert ambient["Arn"] == "arn:aws:iam::123456789012:user/fleetscan-operator"
    # Without DurationSeconds a session lasts an hour.
    default = await call(
        "sts",
        "AssumeRole",
        RoleArn=f"arn:aws:iam::{member.id}:role/FleetscanReader",
        RoleSessionName="default-length",
    )
    assert default["Credentials"]["Expiration"] == EPOCH + dt.timedelta(hours=1)

    # Still valid a second before the end; then every service says the session expired.
    clock.now += 899
    await call("ec2", "DescribeRegions", credentials=credentials)
    clock.now += 1
    expired = {
        "sts": await error_of(call("sts", "GetCallerIdentity", credentials=credentials)),
        "ec2": await error_of(call("ec2", "DescribeRegions", credentials=credentials)),
        "storagegateway": await error_of(
            call("storagegateway", "ListGateways", credentials=credentials)
        ),
        "organizations": await error_of(
            call("organizations", "DescribeOrganization", credentials=credentials)
        ),
    }
    assert {service: code_and_status(e) for service, e in expired.items()} == {
        "sts": ("ExpiredToken", 400),
        "ec2": ("RequestExpired", 400),
        "storagegateway": ("ExpiredTokenException", 400),
        "organizations": ("ExpiredTokenException", 400),
    }
    problems = [p for op, body in bodies for p in validate_body(op, body, "sts")]
    assert problems == []


async def test_assume_role_refuses_what_aws_refuses(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    first, second = fleet.organizations
    suspended = next(a for a in fleet.accounts if not a.active)
    active = next(a for a in fleet.accounts if a.active and a.organization_id == first.id)
    guarded = next(a for a in fleet.accounts if a.active and a.organization_id == second.id)
    bodies: list[tuple[str, bytes]] = []

    async def refused(**params: Any) -> tuple[str, int, str]:
        params.setdefault("RoleSessionName", "fleetscan-test")
        error = await error_of(call("sts", "AssumeRole", bodies=bodies, **params))
        return (*code_and_status(error), str(error))

    denied = [
        {"RoleArn": f"arn:aws:iam::{suspended.id}:role/FleetscanReader"},
        {"RoleArn": f"arn:aws:iam::{active.id}:role/NotTheReaderRole"},
        {"RoleArn": f"arn:aws:iam::{OUTSIDER}:role/FleetscanReader"},
        # A member holds no management role; only management accounts do.
        {"RoleArn": f"arn:aws:iam::{active.id}:role/FleetscanOrgReader"},
        # The second organization's roles demand their external ids.
        {"RoleArn": f"arn:aws:iam::{guarded.id}:role/FleetscanReader"},
        {"RoleArn": f"arn:aws:iam::{guarded.id}:role/FleetscanReader", "ExternalId": "wrong-one"},
        {"RoleArn": f"arn:aws:iam::{second.management.id}:role/FleetscanOrgReader"},
        {
            "RoleArn": f"arn:aws:iam::{second.management.id}:role/FleetscanOrgReader",
            "ExternalId": MEMBER_SECRET,  # the members' id is not the management role's
        },
    ]
    for params in denied:
        code, status, message = await refused(**params)
        assert (code, status) == ("AccessDenied", 403), params
        for secret in (MEMBER_SECRET, ADMIN_SECRET, "wrong-one"):
            assert secret not in message

    # With the right external ids, both roles of the second organization can be assumed.
    member = await call(
        "sts",
        "AssumeRole",
        RoleArn=f"arn:aws:iam::{guarded.id}:role/FleetscanReader",
        RoleSessionName="fleetscan-test",
        ExternalId=MEMBER_SECRET,
    )
    assert account_id_from_access_key(member["Credentials"]["AccessKeyId"]) == guarded.id
    admin_answer = await call(
        "sts",
        "AssumeRole",
        RoleArn=f"arn:aws:iam::{second.management.id}:role/FleetscanOrgReader",
        RoleSessionName="org-reader",
        ExternalId=ADMIN_SECRET,
        DurationSeconds=7200,  # not chained: up to the role's maximum
    )
    admin = admin_answer["Credentials"]

    # Chained through a session: an hour at most.
    chained = {
        "RoleArn": f"arn:aws:iam::{guarded.id}:role/FleetscanReader",
        "RoleSessionName": "chained",
        "ExternalId": MEMBER_SECRET,
    }
    error = await error_of(
        call("sts", "AssumeRole", credentials=admin, bodies=bodies, DurationSeconds=3601, **chained)
    )
    assert code_and_status(error) == ("ValidationError", 400)
    assert "1 hour session limit" in str(error)
    ok = await call("sts", "AssumeRole", credentials=admin, DurationSeconds=3600, **chained)
    assert account_id_from_access_key(ok["Credentials"]["AccessKeyId"]) == guarded.id

    invalid: list[dict[str, Any]] = [
        {"RoleArn": f"arn:aws:iam::{active.id}:role/FleetscanReader", "RoleSessionName": "a b"},
        {"RoleArn": f"arn:aws:iam::{active.id}:role/FleetscanReader", "DurationSeconds": 899},
        {"RoleArn": f"arn:aws:iam::{active.id}:role/FleetscanReader", "DurationSeconds": 43201},
        {"RoleArn": "arn:aws:s3:::not-a-role-at-all"},
        {"RoleArn": f"arn:aws:iam::{active.id}:role/FleetscanReader", "ExternalId": "no spaces!"},
    ]
    for params in invalid:
        code, status, message = await refused(**params)
        assert (code, status) == ("ValidationError", 400), params
        assert "no spaces!" not in message  # an external id is never quoted back
    code, status, _ = await refused(
        RoleArn=f"arn:aws:iam::{active.id}:role/FleetscanReader", Policy="{not json"
    )
    assert (code, status) == ("MalformedPolicyDocument", 400)
    problems = [p for op, body in bodies for p in validate_body(op, body, "sts")]
    assert problems == []


async def test_a_session_token_works_only_with_its_own_key(
    emulated: EmulatorServer, fleet: Fleet, call: Any
) -> None:
    member = next(a for a in fleet.accounts if a.active)
    role = {"RoleArn": f"arn:aws:iam::{member.id}:role/FleetscanReader"}
    one = (await call("sts", "AssumeRole", RoleSessionName="one", **role))["Credentials"]
    two = (await call("sts", "AssumeRole", RoleSessionName="two", **role))["Credentials"]
    assert one["AccessKeyId"] != two["AccessKeyId"]
    swapped = {"AccessKeyId": one["AccessKeyId"], "SessionToken": two["SessionToken"]}
    tampered = {
        "AccessKeyId": one["AccessKeyId"],
        "SessionToken": one["SessionToken"][:-6] + "!!!!!!",
    }
    for credentials in (swapped, tampered):
        error = await error_of(call("sts", "GetCallerIdentity", credentials=credentials))
        assert code_and_status(error) == ("InvalidClientTokenId", 403)
        error = await error_of(call("storagegateway", "ListGateways", credentials=credentials))
        assert code_and_status(error) == ("UnrecognizedClientException", 400)
    # A session key id without any token is no credential either.
    error = await error_of(_no_token_call(emulated, one["AccessKeyId"]))
    assert code_and_status(error) == ("AuthFailure", 401)


async def _no_token_call(server: EmulatorServer, access_key_id: str) -> Any:
    async with get_session().create_client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key="emulated-secret-not-checked",
    ) as client:
        return await client.describe_regions()


# -- EC2 ----------------------------------------------------------------------------------------


async def test_describe_regions_answers_each_accounts_opt_in_status(
    emulated: EmulatorServer, fleet: Fleet, call: Any, validate_body: Validate
) -> None:
    bodies: list[tuple[str, bytes]] = []
    opted_in_sets = set()
    for account in [*fleet.accounts, *(o.management for o in fleet.organizations)]:
        answer = await call("ec2", "DescribeRegions", account_id=account.id, bodies=bodies)
        enabled = [r["RegionName"] for r in answer["Regions"]]
        assert enabled == list(fleet.enabled_regions(account.id))
        # Every region where the account holds gateways is enabled for it.
        assert {r for (a, r) in fleet.pairs if a == account.id} <= set(enabled)
        statuses = {r["RegionName"]: r["OptInStatus"] for r in answer["Regions"]}
        assert {r for r, s in statuses.items() if s == "opt-in-not-required"} == set(
            NON_OPT_IN_REGIONS
        )
        opted_in_sets.add(frozenset(r for r, s in statuses.items() if s == "opted-in"))
        everything = await call(
            "ec2", "DescribeRegions", account_id=account.id, bodies=bodies, AllRegions=True
        )
        assert [r["RegionName"] for r in everything["Regions"]] == list(STORAGE_GATEWAY_REGIONS)
        not_opted = {
            r["RegionName"] for r in everything["Regions"] if r["OptInStatus"] == "not-opted-in"
        }
        assert not_opted == set(OPT_IN_REGIONS) - set(enabled)
        assert all(
            r["Endpoint"] == f"ec2.{r['RegionName']}.amazonaws.com" for r in answer["Regions"]
        )
    assert len(opted_in_sets) > 1  # per account, not one answer for all

    outsider = await call("ec2", "DescribeRegions", account_id=OUTSIDER, bodies=bodies)
    assert {r["RegionName"] for r in outsider["Regions"]} == set(NON_OPT_IN_REGIONS)

    member = fleet.accounts[0].id
    named = await call(
        "ec2", "DescribeRegions", account_id=member, RegionNames=["eu-west-1", "us-east-1"]
    )
    assert [r["RegionName"] for r in named["Regions"]] == ["eu-west-1", "us-east-1"]
    filtered = await call(
        "ec2",
        "DescribeRegions",
        account_id=member,
        AllRegions=True,
        bodies=bodies,
        Filters=[{"Name": "opt-in-status", "Values": ["not-opted-in"]}],
    )
    assert {r["OptInStatus"] for r in filtered["Regions"]} == {"not-opted-in"}
    for params in (
        {"RegionNames": ["mars-north-1"]},
        {"Filters": [{"Name": "colour", "Values": ["blue"]}]},
    ):
        error = await error_of(
            call("ec2", "DescribeRegions", account_id=member, bodies=bodies, **params)
        )
        assert code_and_status(error) == ("InvalidParameterValue", 400)
    error = await error_of(call("ec2", "DescribeRegions", account_id=member, DryRun=True))
    assert code_and_status(error) == ("DryRunOperation", 412)
    problems = [p for op, body in bodies for p in validate_body(op, body, "ec2")]
    assert problems == []


# -- faults -------------------------------------------------------------------------------------


#: (service, operation, params as the management account) -> each fault's (code, status).
_FAULTED_CALLS: dict[str, tuple[str, str, dict[str, Any], dict[str, tuple[str, int]]]] = {
    "sts": (
        "sts",
        "GetCallerIdentity",
        {},
        {
            "throttle": ("Throttling", 400),
            "internal": ("InternalFailure", 500),
            "denied": ("AccessDenied", 403),
        },
    ),
    "organizations": (
        "organizations",
        "ListAccounts",
        {},
        {
            "throttle": ("TooManyRequestsException", 400),
            "internal": ("ServiceException", 500),
            "denied": ("AccessDeniedException", 400),
        },
    ),
    "ec2": (
        "ec2",
        "DescribeRegions",
        {},
        {
            "throttle": ("RequestLimitExceeded", 503),
            "internal": ("InternalError", 500),
            "denied": ("UnauthorizedOperation", 403),
        },
    ),
}
_FAULTS: dict[str, dict[str, Any]] = {
    "throttle": {"throttle_rate": 0},
    "internal": {"internal_error_rate": 1.0},
    "denied": {"access_denied": True},
}


@pytest.mark.parametrize("fault", sorted(_FAULTS))
@pytest.mark.parametrize("which", sorted(_FAULTED_CALLS))
async def test_faults_reach_the_client_as_each_service_sends_them(
    emulated: EmulatorServer, call: Any, validate_body: Validate, which: str, fault: str
) -> None:
    service, operation, params, expected = _FAULTED_CALLS[which]
    emulated.faults = Faults([FaultRule(operation=operation, **_FAULTS[fault])])
    bodies: list[tuple[str, bytes]] = []
    for _ in range(3):  # "for good": a throttle with rate 0 admits nothing, ever
        error = await error_of(call(service, operation, bodies=bodies, **params))
        assert code_and_status(error) == expected[fault]
    assert [p for op, body in bodies for p in validate_body(op, body, service)] == []
    # The fault is the operation's alone: the same account's other services answer.
    await call("storagegateway", "ListGateways")


async def test_a_rule_without_service_or_operation_stays_with_storage_gateway(
    emulated: EmulatorServer, call: Any
) -> None:
    emulated.faults = Faults([FaultRule(internal_error_rate=1.0)])
    await call("sts", "GetCallerIdentity")
    await call("organizations", "DescribeOrganization")
    error = await error_of(call("storagegateway", "ListGateways"))
    assert code_and_status(error) == ("InternalServerError", 500)
    emulated.faults = Faults([FaultRule(service=None, internal_error_rate=1.0)])
    for service, operation in (("sts", "GetCallerIdentity"), ("ec2", "DescribeRegions")):
        error = await error_of(call(service, operation))
        assert code_and_status(error)[1] == 500


async def test_faults_scoped_to_an_organization_touch_only_its_accounts(
    emulated: EmulatorServer, fleet: Fleet, call: Any
) -> None:
    first, second = fleet.organizations
    # The second organization's ListAccounts, throttled for good.
    emulated.faults = Faults(
        [FaultRule(organization_id=second.id, operation="ListAccounts", throttle_rate=0)]
    )
    admin = (
        await call(
            "sts",
            "AssumeRole",
            RoleArn=f"arn:aws:iam::{second.management.id}:role/FleetscanOrgReader",
            RoleSessionName="org-reader",
            ExternalId=ADMIN_SECRET,
        )
    )["Credentials"]
    for _ in range(3):
        error = await error_of(call("organizations", "ListAccounts", credentials=admin))
        assert code_and_status(error) == ("TooManyRequestsException", 400)
    described = await call("organizations", "DescribeOrganization", credentials=admin)
    assert described["Organization"]["Id"] == second.id
    listed = await call("organizations", "ListAccounts", account_id=first.management.id)
    assert len(listed["Accounts"]) == len(fleet.organization_accounts(first))
    assert emulated.counters.faults()["throttle"] == 3
