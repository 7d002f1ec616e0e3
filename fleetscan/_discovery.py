"""Which accounts and which regions: the first stage of a scan.

Accounts come from AWS Organizations (the management account or a delegated administrator), from
a static list, or both (the organization then supplies names). Regions are resolved per account
because opt-in regions are enabled per account.

Organizations' answers are checked against its model like every answer: the ids a run is built
on (account, root and OU ids) must be what the API documents, or discovery stops with one line
naming the field; an account's name longer than the documented 128 characters is not data (the
account is scanned with no name, and an error record says why).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._config import OrganizationConfig, ScanConfig, storage_gateway_regions
from ._config._values import show
from ._exceptions import DiscoveryError
from ._records import ACCOUNT_NAME_LIMIT, overlong

Call = Callable[[Callable[[], Awaitable[dict[str, Any]]], str], Awaitable[dict[str, Any]]]

#: Where global services (STS, Organizations, EC2's region list) are called in each partition.
HOME_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}

#: Organizations' patterns and maxima (botocore's model) for what discovery keeps.
_ACCOUNT_ID = re.compile(r"[0-9]{12}", re.ASCII)
_PARENT_ID = re.compile(r"r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}", re.ASCII)
_OU_NAME_LIMIT = 128
#: The organization id inside the ARN of a root, OU or account of an organization.
_ORGANIZATION_ARN = re.compile(
    r"arn:aws[a-z-]*:organizations::[0-9]{12}:(?:root|ou|account)/(?P<id>o-[a-z0-9]{10,32})/",
    re.ASCII,
)
#: AccountStatus and AccountState are enums (longest value 18 characters).
_STATUS_LIMIT = 32


@dataclass(frozen=True, slots=True)
class AccountTarget:
    id: str
    name: str | None
    status: str  # ACTIVE | SUSPENDED | PENDING_CLOSURE | UNKNOWN (static list, no organization)
    #: The account's place in the organization, root first ("r-..", "ou-..", ...): audit
    #: policies by OU match on it. Empty when the account did not come from Organizations.
    ou_ids: tuple[str, ...] = ()
    ou_path: str | None = None
    #: The ``o-…`` id of its organization (from the organization's ARNs); None when the account
    #: did not come from Organizations, or the answers carried no ARN to read it from.
    organization_id: str | None = None
    #: The ``[[organizations]]`` entry that reached it (None: ``org``, or a static list).
    organization_name: str | None = None
    #: (operation, what is wrong) for each field of its Organizations entry that could not be
    #: kept; the scan writes an error record for each (the manifest's account list omits them).
    problems: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "ou_ids": list(self.ou_ids),
            "ou_path": self.ou_path,
            "organization_id": self.organization_id,
            "organization_name": self.organization_name,
        }


async def discover_accounts(
    config: ScanConfig,
    clients: Any,
    call: Call,
    static_accounts: tuple[str, ...],
    organization: OrganizationConfig | None = None,
) -> list[AccountTarget]:
    """The accounts to scan, in a stable order, inactive ones removed unless asked for.

    With ``organization`` (an entry of ``config.organization_settings()``), the accounts of that
    organization, with its own ``ous`` and ``exclude_accounts``, as its caller's credentials list
    them; else ``config``'s organization (``org``) and/or static list.
    """
    home = HOME_REGIONS.get(config.partition, "us-east-1")
    found: dict[str, AccountTarget] = {}
    use_org = config.org or organization is not None
    ous = config.ous if organization is None or organization.ous is None else organization.ous
    excluded_ids = (
        config.exclude_accounts
        if organization is None or organization.exclude_accounts is None
        else organization.exclude_accounts
    )
    if use_org:
        org = await clients.client("organizations", home)
        if ous:
            for ou in ous:
                for account in await _accounts_under(org, call, ou):
                    found[account.id] = account
        else:
            params: dict[str, Any] = {}
            while True:
                page = await call(functools.partial(org.list_accounts, **params), "ListAccounts")
                for item in _items(page, "Accounts", "ListAccounts"):
                    account = _target(item, "ListAccounts")
                    found[account.id] = account
                token = page.get("NextToken")
                if not token:  # a page may be empty while NextToken is still set
                    break
                params["NextToken"] = token
    if use_org and found:
        placement, organization_id = await _placement(org, call)
        if organization_id is None:
            organization_id = next(
                (a.organization_id for a in found.values() if a.organization_id), None
            )
        name = organization.name if organization is not None else None
        for account_id, account in found.items():
            ou_ids, ou_path = placement.get(account_id, (account.ou_ids, account.ou_path))
            found[account_id] = replace(
                account,
                ou_ids=ou_ids,
                ou_path=ou_path,
                organization_id=organization_id,
                organization_name=name,
            )
    for account_id in static_accounts:
        if account_id not in found:
            if use_org:
                raise DiscoveryError(
                    f"account {account_id} is not in the organization"
                    + (" (or not under the given OUs)" if ous else "")
                )
            found[account_id] = AccountTarget(account_id, None, "UNKNOWN")
    if not config.assume_role and not found:
        sts = await clients.client("sts", home)
        identity = await call(sts.get_caller_identity, "GetCallerIdentity")
        found[identity["Account"]] = AccountTarget(identity["Account"], None, "UNKNOWN")
    excluded = set(excluded_ids)
    return [
        a
        for a in sorted(found.values(), key=lambda a: a.id)
        if a.id not in excluded and (config.include_inactive or a.status in ("ACTIVE", "UNKNOWN"))
    ]


async def _accounts_under(org: Any, call: Call, ou_id: str) -> list[AccountTarget]:
    """Accounts in ``ou_id`` and, recursively, in every OU below it."""
    accounts: list[AccountTarget] = []
    pending = [ou_id]
    while pending:
        parent = pending.pop()
        for item in await _children(org, call, "ListAccountsForParent", "Accounts", parent):
            accounts.append(_target(item, "ListAccountsForParent"))
        for item in await _children(
            org, call, "ListOrganizationalUnitsForParent", "OrganizationalUnits", parent
        ):
            pending.append(_parent_id(item, "ListOrganizationalUnitsForParent"))
    return accounts


async def _placement(
    org: Any, call: Call
) -> tuple[dict[str, tuple[tuple[str, ...], str]], str | None]:
    """Every account's OU chain from the root, by walking the tree once (a few calls per OU),
    and the organization's id, read from its root's ARN (None: the answer carried none).

    Records carry no OU field; the manifest carries this map, so an audit of old data judges
    each account by the OU it was in when it was scanned.
    """
    roots = _items(await call(org.list_roots, "ListRoots"), "Roots", "ListRoots")
    placement: dict[str, tuple[tuple[str, ...], str]] = {}
    organization_id = next(
        (found for r in roots if (found := organization_id_of(r.get("Arn"))) is not None), None
    )
    pending: list[tuple[tuple[str, ...], str]] = [
        ((_parent_id(r, "ListRoots"),), _ou_name(r, "ListRoots", "Root")) for r in roots
    ]
    while pending:
        chain, path = pending.pop()
        parent = chain[-1]
        for item in await _children(org, call, "ListAccountsForParent", "Accounts", parent):
            placement[_target(item, "ListAccountsForParent").id] = (chain, path)
        operation = "ListOrganizationalUnitsForParent"
        for item in await _children(org, call, operation, "OrganizationalUnits", parent):
            ou_id = _parent_id(item, operation)
            pending.append(((*chain, ou_id), f"{path}/{_ou_name(item, operation, ou_id)}"))
    return placement, organization_id


def organization_id_of(arn: object) -> str | None:
    """The ``o-…`` id in the ARN of an organization's root, OU or account, else None."""
    if not isinstance(arn, str):
        return None
    match = _ORGANIZATION_ARN.match(arn)
    return match["id"] if match else None


async def _children(
    org: Any, call: Call, operation: str, key: str, parent: str
) -> list[dict[str, Any]]:
    method = getattr(org, _snake(operation))
    params: dict[str, Any] = {"ParentId": parent}
    items: list[dict[str, Any]] = []
    while True:
        page = await call(functools.partial(method, **params), operation)
        items.extend(_items(page, key, operation))
        token = page.get("NextToken")
        if not token:
            return items
        params["NextToken"] = token


def _items(page: dict[str, Any], key: str, operation: str) -> list[dict[str, Any]]:
    items = page.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise DiscoveryError(f"{operation} answered a {key} that is not a list of objects")
    return items


def _target(item: dict[str, Any], operation: str) -> AccountTarget:
    """An account of an Organizations answer: its id checked, its name and status kept if they
    are what the API documents (else left out, and said)."""
    account_id = item.get("Id")
    if not (isinstance(account_id, str) and _ACCOUNT_ID.fullmatch(account_id)):
        raise DiscoveryError(
            f"{operation} answered an account Id that is not 12 digits: {show(account_id)}"
        )
    problems: list[tuple[str, str]] = []
    name = item.get("Name")
    problem = overlong("the account's Name", name, ACCOUNT_NAME_LIMIT)
    if problem is not None:
        problems.append((operation, problem))
    if problem is not None or not isinstance(name, str):
        name = None
    status = item.get("State") or item.get("Status") or "ACTIVE"
    if not isinstance(status, str) or len(status) > _STATUS_LIMIT:
        problems.append((operation, f"the account's State is not a state: {show(status)}"))
        status = "UNKNOWN"
    # A scan keeps every account for its whole length, and 10,000 accounts share a handful of
    # states and organization ids: one string each, not one per account (~1 MB at 10,000).
    organization_id = organization_id_of(item.get("Arn"))
    return AccountTarget(
        account_id,
        name,
        sys.intern(status),
        organization_id=None if organization_id is None else sys.intern(organization_id),
        problems=tuple(problems),
    )


def _parent_id(item: dict[str, Any], operation: str) -> str:
    parent = item.get("Id")
    if not (isinstance(parent, str) and _PARENT_ID.fullmatch(parent)):
        raise DiscoveryError(
            f"{operation} answered an Id that is not a root or OU id: {show(parent)}"
        )
    return parent


def _ou_name(item: dict[str, Any], operation: str, default: str) -> str:
    name = item.get("Name") or default
    if not isinstance(name, str) or len(name) > _OU_NAME_LIMIT:
        raise DiscoveryError(
            f"{operation} answered a Name that is not a name of at most {_OU_NAME_LIMIT} "
            f"characters: {show(name)}"
        )
    return name


async def enabled_regions(clients: Any, call: Call, partition: str) -> tuple[str, ...]:
    """Regions enabled for the current account (EC2 DescribeRegions) that offer the service."""
    ec2 = await clients.client("ec2", HOME_REGIONS.get(partition, "us-east-1"))
    answer = await call(ec2.describe_regions, "DescribeRegions")
    enabled = {
        r["RegionName"]
        for r in answer.get("Regions", [])
        if r.get("OptInStatus", "opt-in-not-required") != "not-opted-in"
    }
    return tuple(r for r in storage_gateway_regions(partition) if r in enabled)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


def account_weights(accounts: Sequence[AccountTarget], calls: Mapping[str, int]) -> dict[str, int]:
    """Each account's expected work: its ``calls`` in an earlier run, or the mean of the known
    ones for an account new since (1 with no history at all).

    Shares are balanced by it, and a scan starts its heaviest accounts first: the run ends with
    its largest rate-limited unit, so that unit should start as early as it can.
    """
    known = [calls[a.id] for a in accounts if a.id in calls]
    default = max(1, round(sum(known) / len(known))) if known else 1
    return {a.id: max(1, calls.get(a.id, default)) for a in accounts}
