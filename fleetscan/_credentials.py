"""Credentials per account: AssumeRole once, share across regions, refresh before expiry.

The comparable tools' users complain most about ``ExpiredToken`` an hour into a run. Here every
account's credentials are a small object that re-assumes the role when fewer than
``REFRESH_MARGIN`` seconds remain (one refresh at a time, under a lock), so a scan of any length
keeps valid keys. The same object backs a hub role when chaining.

Assumed sessions carry a session policy allowing only the read-only calls fleetscan makes: even a
broad role (say ReadOnlyAccess or worse) yields credentials that can do nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson
from botocore.credentials import ReadOnlyCredentials

from ._aws import AwsClients, FrozenCredentialSource, acting_as

#: Actions the member session needs: Storage Gateway reads and the enabled-regions lookup.
MEMBER_ACTIONS = (
    "storagegateway:ListGateways",
    "storagegateway:ListVolumeRecoveryPoints",
    "ec2:DescribeRegions",
)
#: A hub session only needs to assume the member roles.
HUB_ACTIONS = ("sts:AssumeRole",)
#: A member session importing audit findings (``fleetscan audit --security-hub``): nothing else.
SECURITY_HUB_ACTIONS = (
    "securityhub:DescribeHub",
    "securityhub:GetFindings",
    "securityhub:BatchImportFindings",
)
#: An organization's management role (``management_role_arn``) only lists the organization.
MANAGEMENT_ACTIONS = (
    "organizations:ListAccounts",
    "organizations:ListAccountsForParent",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:ListRoots",
)


def session_policy(actions: tuple[str, ...]) -> str:
    """An inline session policy; the effective rights are its intersection with the role's."""
    return orjson.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "FleetscanReadOnly",
                    "Effect": "Allow",
                    "Action": list(actions),
                    "Resource": "*",
                }
            ],
        }
    ).decode()


MEMBER_SESSION_POLICY = session_policy(MEMBER_ACTIONS)
HUB_SESSION_POLICY = session_policy(HUB_ACTIONS)
SECURITY_HUB_SESSION_POLICY = session_policy(SECURITY_HUB_ACTIONS)
MANAGEMENT_SESSION_POLICY = session_policy(MANAGEMENT_ACTIONS)

Fetch = Callable[[], Awaitable[dict[str, Any]]]


class AssumedRoleCredentials:
    """Refreshable credentials of one assumed role."""

    #: Refresh when less than this remains (AWS SDKs use 10-15 minutes for assumed roles).
    REFRESH_MARGIN = dt.timedelta(minutes=10)

    def __init__(self, fetch: Fetch, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._fetch = fetch
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._frozen: ReadOnlyCredentials | None = None
        self._expires: dt.datetime | None = None
        self._lock = anyio.Lock()
        self.refreshes = 0

    def _fresh(self) -> bool:
        return (
            self._frozen is not None
            and self._expires is not None
            and self._expires - self._clock() > self.REFRESH_MARGIN
        )

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._refresh()
        assert self._frozen is not None
        return self._frozen

    def expire(self, stale: ReadOnlyCredentials | None) -> None:
        """Refresh before the next call: the service said ``stale`` have expired.

        Only if they are still the current keys: a call that used keys already replaced
        (others failed with them first) must not throw the new ones away.
        """
        if stale is not None and stale == self._frozen:
            self._expires = None

    async def _refresh(self) -> None:
        answer = await self._fetch()
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if isinstance(expiration, str):
            expiration = dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.UTC)
        self._frozen = ReadOnlyCredentials(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds.get("SessionToken")
        )
        self._expires = expiration
        self.refreshes += 1


class RoleAssumer:
    """Builds :class:`AssumedRoleCredentials` for member accounts, optionally through a hub."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        ambient: FrozenCredentialSource,
        sts_region: str,
        session_name: str,
        duration_seconds: int,
        external_id: str | None,
        hub_role_arn: str | None,
        call: Callable[[Callable[[], Awaitable[dict[str, Any]]], str], Awaitable[dict[str, Any]]],
    ) -> None:
        self._clients = clients
        self._sts_region = sts_region
        self._session_name = session_name
        self._duration = duration_seconds
        self._external_id = external_id
        self._call = call
        self._caller: FrozenCredentialSource = ambient
        if hub_role_arn:
            # Chained sessions are capped at one hour by STS; the external id guards the members.
            self._caller = self._assume(
                hub_role_arn, HUB_SESSION_POLICY, min(3600, duration_seconds), external_id=None
            )

    def credentials_for(
        self, role_arn: str, policy: str = MEMBER_SESSION_POLICY
    ) -> AssumedRoleCredentials:
        """Credentials of ``role_arn`` (a member's role, or with ``policy`` another role),
        fetched lazily and kept fresh, limited to what ``policy`` allows (the scan's reads,
        unless told otherwise)."""
        return self._assume(role_arn, policy, self._duration, self._external_id)

    def _assume(
        self, role_arn: str, policy: str, duration: int, external_id: str | None
    ) -> AssumedRoleCredentials:
        caller = self._caller
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": self._session_name,
            "DurationSeconds": duration,
            "Policy": policy,
        }
        if external_id:
            params["ExternalId"] = external_id

        async def fetch() -> dict[str, Any]:
            sts = await self._clients.sts(self._sts_region)
            with acting_as(caller):
                return await self._call(lambda: sts.assume_role(**params), "AssumeRole")

        return AssumedRoleCredentials(fetch)
