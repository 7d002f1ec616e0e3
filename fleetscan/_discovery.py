"""Which accounts and which regions: the first stage of a scan.

Accounts come from AWS Organizations (the management account or a delegated administrator), from
a static list, or both (the organization then supplies names). Regions are resolved per account
because opt-in regions are enabled per account.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import botocore.session

from ._config import ScanConfig
from ._exceptions import DiscoveryError

Call = Callable[[Callable[[], Awaitable[dict[str, Any]]], str], Awaitable[dict[str, Any]]]

#: Where global services (STS, Organizations, EC2's region list) are called in each partition.
HOME_REGIONS = {"aws": "us-east-1", "aws-cn": "cn-north-1", "aws-us-gov": "us-gov-west-1"}


@dataclass(frozen=True, slots=True)
class AccountTarget:
    id: str
    name: str | None
    status: str  # ACTIVE | SUSPENDED | PENDING_CLOSURE | UNKNOWN (static list, no organization)


@functools.cache
def service_regions(partition: str) -> tuple[str, ...]:
    """Every region botocore knows Storage Gateway in, for the partition."""
    session = botocore.session.get_session()
    return tuple(session.get_available_regions("storagegateway", partition_name=partition))


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
        for operation, key in (
            ("ListAccountsForParent", "Accounts"),
            ("ListOrganizationalUnitsForParent", "OrganizationalUnits"),
        ):
            method = getattr(org, _snake(operation))
            params: dict[str, Any] = {"ParentId": parent}
            while True:
                page = await call(functools.partial(method, **params), operation)
                for item in page.get(key, []):
                    if key == "Accounts":
                        accounts.append(_target(item))
                    else:
                        pending.append(item["Id"])
                token = page.get("NextToken")
                if not token:
                    break
                params["NextToken"] = token
    return accounts


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
    return tuple(r for r in service_regions(partition) if r in enabled)


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
