"""How a scan reaches each organization: the credentials that list it, its accounts, and the
assumer its members' roles are taken with (discovery -> credentials, before the scan).

Kept apart from the engine because it is a stage of its own: an organization's listing and its
failure are decided here, and the engine only scans what was reached. A shard of a run reaches
its share from the run's plan (:meth:`Reacher.given`) without listing anything again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from botocore.exceptions import BotoCoreError

from ._aws import AmbientCredentials, AwsClients, FrozenCredentialSource, acting_as
from ._config import OrganizationConfig, ScanConfig
from ._credentials import MANAGEMENT_SESSION_POLICY, RoleAssumer
from ._discovery import AccountTarget, discover_accounts
from ._exceptions import DiscoveryError, FleetscanError
from ._retry import (
    MAX_MESSAGE_CHARS,
    CallFailed,
    Failure,
    MalformedResponse,
    Stopped,
    classify,
)

Call = Callable[[Callable[[], Awaitable[dict[str, Any]]], str], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class Reached:
    """One organization (or the static list) as discovery reached it: its accounts, the
    credentials its members' roles are assumed from, and the assumer that does it."""

    entry: OrganizationConfig | None
    accounts: list[AccountTarget]
    base: FrozenCredentialSource
    assumer: RoleAssumer
    #: As listed (None: a static list, or answers without ARNs).
    organization_id: str | None

    @property
    def key(self) -> str | None:
        """What the manifest counts it under: its entry's name, else its ``o-…`` id."""
        return self.entry.name if self.entry is not None else self.organization_id


class Reacher:
    """Reaches the organizations of ``config`` (or its static list) through ``clients``, every
    call made with ``call`` (the engine's limits and retries)."""

    def __init__(
        self,
        config: ScanConfig,
        clients: AwsClients,
        call: Call,
        *,
        home: str,
        static_accounts: tuple[str, ...],
        stopping: Callable[[], bool],
    ) -> None:
        self.config = config
        self._clients = clients
        self._plain_call = call
        self._home = home
        self.static_accounts = static_accounts
        self._stopping = stopping

    async def reach_all(
        self, ambient: FrozenCredentialSource
    ) -> tuple[list[Reached], list[tuple[OrganizationConfig, CallFailed]]]:
        """Every organization's accounts (or the static list's), each organization listed with
        the credentials that reach it, all at once; and the organizations that failed.

        One organization failing (its management role denied, its listing throttled for good)
        leaves the others to be scanned; only when every one fails does discovery fail
        (:class:`DiscoveryError`, nothing to scan). An account reached by two entries is scanned
        once, for the first entry.
        """
        entries: tuple[OrganizationConfig | None, ...] = self.config.organization_settings() or (
            None,
        )
        results: list[Reached | tuple[OrganizationConfig, CallFailed] | None] = [None] * len(
            entries
        )

        async def reach(index: int, entry: OrganizationConfig | None) -> None:
            try:
                results[index] = await self._reach(entry, ambient)
            except Stopped:
                return  # noticed below, once every organization's task has ended
            except CallFailed as exc:
                if entry is None:
                    raise DiscoveryError(f"cannot list the accounts to scan: {exc}") from None
                results[index] = (entry, exc)
            except (DiscoveryError, BotoCoreError, FleetscanError) as exc:
                if entry is None:
                    raise
                failure = classify(MalformedResponse(str(exc)))
                if not isinstance(exc, DiscoveryError):
                    failure = Failure("CredentialsError", str(exc)[:MAX_MESSAGE_CHARS], False)
                results[index] = (entry, CallFailed("ListAccounts", failure, 1))

        if len(entries) == 1:
            await reach(0, entries[0])
        else:
            async with anyio.create_task_group() as tg:
                for index, entry in enumerate(entries):
                    tg.start_soon(reach, index, entry)
        if self._stopping():
            raise Stopped
        reached = [r for r in results if isinstance(r, Reached)]
        failed = [r for r in results if isinstance(r, tuple)]
        if not reached:
            if len(failed) == 1:
                entry, exc = failed[0]
                raise DiscoveryError(
                    f"cannot list the accounts of organization {entry.name!r}: {exc}"
                )
            raise DiscoveryError(
                "no organization could be listed: "
                + "; ".join(f"{entry.name!r}: {exc}" for entry, exc in failed)
            )
        return reached, failed

    def given(
        self, accounts: list[AccountTarget], ambient: FrozenCredentialSource
    ) -> list[Reached]:
        """A shard's share of its run's plan, grouped as discovery reached it (by the
        ``[[organizations]]`` entry that listed each account), with no Organizations call."""
        entries = {entry.name: entry for entry in self.config.organization_settings()}
        groups: dict[str | None, Reached] = {}
        for account in accounts:
            name = account.organization_name
            group = groups.get(name)
            if group is None:
                entry = entries.get(name) if name is not None else None
                if name is not None and entry is None:
                    raise DiscoveryError(
                        f"the run's plan places account {account.id} in organization {name!r}, "
                        "which this configuration does not have"
                    )
                base = ambient
                if entry is not None and entry.profile is not None:
                    base = AmbientCredentials(entry.profile)
                external_id = self.config.external_id if entry is None else entry.external_id
                group = groups[name] = Reached(
                    entry=entry,
                    accounts=[],
                    base=base,
                    assumer=self._assumer(base, external_id, self.config.hub_role_arn),
                    organization_id=account.organization_id,
                )
            group.accounts.append(account)
        return list(groups.values())

    async def _reach(
        self, entry: OrganizationConfig | None, ambient: FrozenCredentialSource
    ) -> Reached:
        """One organization's accounts, listed as its entry says to reach it."""
        config = self.config
        base = ambient
        if entry is not None and entry.profile is not None:
            base = AmbientCredentials(entry.profile)
        lister: FrozenCredentialSource = base
        if entry is not None and entry.management_role_arn is not None:
            lister = self._assumer(base, entry.management_external_id, None).credentials_for(
                entry.management_role_arn, MANAGEMENT_SESSION_POLICY
            )
        with acting_as(lister):
            accounts = await discover_accounts(
                config, self._clients, self._plain_call, self.static_accounts, entry
            )
        external_id = config.external_id if entry is None else entry.external_id
        return Reached(
            entry=entry,
            accounts=accounts,
            base=base,
            assumer=self._assumer(base, external_id, config.hub_role_arn),
            organization_id=next((a.organization_id for a in accounts if a.organization_id), None),
        )

    def _assumer(
        self, caller: FrozenCredentialSource, external_id: str | None, hub_role_arn: str | None
    ) -> RoleAssumer:
        return RoleAssumer(
            self._clients,
            ambient=caller,
            sts_region=self._home,
            session_name=self.config.role_session_name,
            duration_seconds=self.config.role_duration_seconds,
            external_id=external_id,
            hub_role_arn=hub_role_arn,
            call=self._plain_call,
        )
