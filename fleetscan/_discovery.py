"""Which accounts and which regions: the first stage of a scan.

Accounts come from AWS Organizations (the management account or a delegated administrator), from
a static list, or both (the organization then supplies names). Regions are resolved per account
because opt-in regions are enabled per account.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from ._config import ScanConfig, storage_gateway_regions
from ._exceptions import DiscoveryError

Call = Callable[[Callable[[], Awaitable[dict[str, Any]]], str], Awaitable[dict[str, Any]]]

#: Where global services (STS, Organizations, EC2's region list) are called in each partition.
HOME_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}


@dataclass(frozen=True, slots=True)
class AccountTarget:
    id: str
    name: str | None
    status: str  # ACTIVE | SUSPENDED | PENDING_CLOSURE | UNKNOWN (static list, no organization)
    #: The account's place in the organization, root first ("r-..", "ou-..", ...): audit
    #: policies by OU match on it. Empty when the account did not come from Organizations.
    ou_ids: tuple[str, ...] = ()
    ou_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "ou_ids": list(self.ou_ids),
            "ou_path": self.ou_path,
        }


async def discover_accounts(
    config: ScanConfig,
    clients: Any,
    call: Call,
    static_accounts: tuple[str, ...],
) -> list[AccountTarget]:
    """The accounts to scan, in a stable order, inactive ones removed unless asked for."""
    home = HOME_REGIONS.get(config.partition, "us-east-1")
    found: dict[str, AccountTarget] = {}
    if config.org:
        org = await clients.client("organizations", home)
        if config.ous:
            for ou in config.ous:
                for account in await _accounts_under(org, call, ou):
                    found[account.id] = account
        else:
            params: dict[str, Any] = {}
            while True:
                page = await call(functools.partial(org.list_accounts, **params), "ListAccounts")
                for item in page.get("Accounts", []):
                    found[item["Id"]] = _target(item)
                token = page.get("NextToken")
                if not token:  # a page may be empty while NextToken is still set
                    break
                params["NextToken"] = token
    if config.org and found:
        placement = await _placement(org, call)
        for account_id, account in found.items():
            if account_id in placement:
                ou_ids, ou_path = placement[account_id]
                found[account_id] = replace(account, ou_ids=ou_ids, ou_path=ou_path)
    for account_id in static_accounts:
        if account_id not in found:
            if config.org:
                raise DiscoveryError(
                    f"account {account_id} is not in the organization"
                    + (" (or not under the given OUs)" if config.ous else "")
                )
            found[account_id] = AccountTarget(account_id, None, "UNKNOWN")
    if not config.assume_role and not found:
        sts = await clients.client("sts", home)
        identity = await call(sts.get_caller_identity, "GetCallerIdentity")
        found[identity["Account"]] = AccountTarget(identity["Account"], None, "UNKNOWN")
    excluded = set(config.exclude_accounts)
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
            accounts.append(_target(item))
        for item in await _children(
            org, call, "ListOrganizationalUnitsForParent", "OrganizationalUnits", parent
        ):
            pending.append(str(item["Id"]))
    return accounts


async def _placement(org: Any, call: Call) -> dict[str, tuple[tuple[str, ...], str]]:
    """Every account's OU chain from the root, by walking the tree once (a few calls per OU).

    Records stay schema v1 (no OU field); the manifest carries this map, so an audit of old data
    judges each account by the OU it was in when it was scanned.
    """
    roots = await call(org.list_roots, "ListRoots")
    placement: dict[str, tuple[tuple[str, ...], str]] = {}
    pending: list[tuple[tuple[str, ...], str]] = [
        ((str(r["Id"]),), str(r.get("Name") or "Root")) for r in roots.get("Roots", [])
    ]
    while pending:
        chain, path = pending.pop()
        parent = chain[-1]
        for item in await _children(org, call, "ListAccountsForParent", "Accounts", parent):
            placement[str(item["Id"])] = (chain, path)
        for item in await _children(
            org, call, "ListOrganizationalUnitsForParent", "OrganizationalUnits", parent
        ):
            pending.append(((*chain, str(item["Id"])), f"{path}/{item.get('Name', item['Id'])}"))
    return placement


async def _children(
    org: Any, call: Call, operation: str, key: str, parent: str
) -> list[dict[str, Any]]:
    method = getattr(org, _snake(operation))
    params: dict[str, Any] = {"ParentId": parent}
    items: list[dict[str, Any]] = []
    while True:
        page = await call(functools.partial(method, **params), operation)
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items
        params["NextToken"] = token


def _target(item: dict[str, Any]) -> AccountTarget:
    status = item.get("State") or item.get("Status") or "ACTIVE"
    return AccountTarget(str(item["Id"]), item.get("Name"), str(status))


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
