"""Who may assume which role in the emulated fleet, and the sessions its STS hands out.

The roles follow from the fleet and a few names, never from stored state, so a 10,000-account
fleet costs nothing until a role is assumed:

- every account of an organization (members and the management account) holds the organization's
  member role (``FleetscanReader`` unless configured otherwise), which may demand an external id;
- every management account also holds the management role (``FleetscanOrgReader``), through
  which a scanner reaches an organization other than its own; it may demand its own external id,
  and a "denied" organization's management role trusts nobody.

Trust policies check the external id only, not the calling principal: any caller may assume a
role of the fleet, as the emulator's moto-based stack always allowed (a hub role in a member
account included).

Sessions are stateless: the session token carries the account, role, session name and expiry, so
the server keeps nothing per AssumeRole (a long ``serve`` would otherwise grow with every scan),
and every service can tell an expired session from the token alone. Tokens of other issuers (moto's,
in the stack's moto identity mode) are not ours to judge and are accepted as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ._fleet import Fleet, access_key_for_account

DEFAULT_ROLE_NAME = "FleetscanReader"
#: The role in each management account that reaches its organization from outside it.
MANAGEMENT_ROLE_NAME = "FleetscanOrgReader"
#: The IAM user whose long-term keys any ``AKIA`` key id of an account stands for.
OPERATOR_USER_NAME = "fleetscan-operator"
#: AssumeRole's default, and the cap on a session assumed with a session's credentials.
DEFAULT_SESSION_SECONDS = 3600
CHAINED_SESSION_MAX_SECONDS = 3600
#: The emulated roles' MaxSessionDuration (AWS's largest).
MAX_SESSION_SECONDS = 43200

#: Starts every session token this emulator issues; looks like STS's, and tells ours apart.
TOKEN_PREFIX = "FwoGZXIvYXdzEFLEET"
_TOKEN_VERSION = 1


@dataclass(frozen=True)
class OrganizationAccess:
    """How one organization's roles differ from the stack's defaults (None: the default).

    ``denied``: the management role trusts nobody, so the organization cannot be reached from
    outside it (AssumeRole answers AccessDenied), as when its administrators never deployed the
    role or revoked the trust.
    """

    role_name: str | None = None
    external_id: str | None = None
    management_external_id: str | None = None
    denied: bool = False


@dataclass(frozen=True)
class OrganizationRoles:
    """The resolved roles of one organization."""

    organization_id: str
    member_role_name: str
    member_external_id: str | None
    management_role_name: str
    management_external_id: str | None
    denied: bool


@dataclass(frozen=True)
class Role:
    account_id: str
    name: str
    #: The ``sts:ExternalId`` the trust policy demands, if any.
    external_id: str | None
    #: False when the trust policy admits nobody (a denied organization's management role).
    assumable: bool

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.name}"


class Roles:
    """The roles of a fleet's accounts, from the member and management role names."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        role_name: str = DEFAULT_ROLE_NAME,
        external_id: str | None = None,
        management_role_name: str = MANAGEMENT_ROLE_NAME,
        organizations: Sequence[OrganizationAccess] = (),
    ) -> None:
        if len(organizations) > len(fleet.organizations):
            raise ValueError(
                f"access is configured for {len(organizations)} organizations, "
                f"but the fleet has {len(fleet.organizations)}"
            )
        self.fleet = fleet
        by_id: dict[str, OrganizationRoles] = {}
        for organization in fleet.organizations:
            access = (
                organizations[organization.index]
                if organization.index < len(organizations)
                else OrganizationAccess()
            )
            member_role = access.role_name or role_name
            if member_role == management_role_name:
                raise ValueError(
                    f"the member role and the management role cannot both be {member_role!r}"
                )
            by_id[organization.id] = OrganizationRoles(
                organization_id=organization.id,
                member_role_name=member_role,
                member_external_id=(
                    access.external_id if access.external_id is not None else external_id
                ),
                management_role_name=management_role_name,
                management_external_id=access.management_external_id,
                denied=access.denied,
            )
        self._by_organization = by_id

    def of(self, organization_id: str) -> OrganizationRoles:
        return self._by_organization[organization_id]

    def role(self, account_id: str, name: str) -> Role | None:
        """The role ``name`` in ``account_id``, or None when the account has no such role."""
        account = self.fleet.account(account_id)
        if account is None:
            return None
        roles = self._by_organization[account.organization_id]
        if name == roles.member_role_name:
            return Role(account_id, name, roles.member_external_id, True)
        organization = self.fleet.organization(account.organization_id)
        if (
            organization is not None
            and organization.management.id == account_id
            and name == roles.management_role_name
        ):
            return Role(account_id, name, roles.management_external_id, not roles.denied)
        return None


@dataclass(frozen=True, slots=True)
class Session:
    """An assumed-role session, as its token describes it."""

    access_key_id: str
    account_id: str
    role_name: str
    session_name: str
    #: Seconds since the epoch at which the credentials stop working.
    expires: int
    #: Assumed with another session's credentials (role chaining).
    chained: bool

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"

    @property
    def user_id(self) -> str:
        return f"{role_id(self.account_id, self.role_name)}:{self.session_name}"


#: What :func:`parse_token` returns for a token of ours that does not decode.
INVALID_TOKEN = object()


def role_id(account_id: str, role_name: str) -> str:
    """A stable ``AROA…`` unique id for a role, as AWS gives each role one."""
    digest = hashlib.sha256(f"{account_id}:{role_name}".encode()).digest()
    return "AROA" + base64.b32encode(digest).decode()[:17]


def user_id(account_id: str) -> str:
    """A stable ``AIDA…`` unique id for an account's operator user."""
    digest = hashlib.sha256(f"{account_id}:{OPERATOR_USER_NAME}".encode()).digest()
    return "AIDA" + base64.b32encode(digest).decode()[:17]


class SessionIssuer:
    """Makes session credentials whose key id encodes the role's account (as AWS's do)."""

    def __init__(self) -> None:
        # Unique across servers and restarts: two emulators never issue the same key.
        self._prefix = uuid.uuid4().hex[:12]
        self._serial = itertools.count(1)

    def issue(
        self, account_id: str, role_name: str, session_name: str, expires: int, chained: bool
    ) -> tuple[Session, str, str]:
        """(session, secret access key, session token). The secret is never checked: the
        emulator parses SigV4 signatures but does not verify them."""
        access_key_id = access_key_for_account(
            account_id, prefix="ASIA", tag=f"{self._prefix}:{next(self._serial)}"
        )
        session = Session(access_key_id, account_id, role_name, session_name, expires, chained)
        payload = orjson.dumps(
            [_TOKEN_VERSION, access_key_id, account_id, role_name, session_name, expires, chained]
        )
        token = TOKEN_PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")
        secret = base64.b64encode(hashlib.sha256(access_key_id.encode()).digest()).decode()[:40]
        return session, secret, token


def parse_token(token: str) -> Session | object | None:
    """The session a token of ours describes, :data:`INVALID_TOKEN` for one of ours that does not
    decode, or None for another issuer's token (not ours to judge)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    body = token[len(TOKEN_PREFIX) :]
    try:
        fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        return INVALID_TOKEN
    if not (
        isinstance(fields, list)
        and len(fields) == 7
        and fields[0] == _TOKEN_VERSION
        and all(isinstance(f, str) for f in fields[1:5])
        and isinstance(fields[5], int)
        and isinstance(fields[6], bool)
    ):
        return INVALID_TOKEN
    _, access_key_id, account_id, role_name, session_name, expires, chained = fields
    return Session(access_key_id, account_id, role_name, session_name, expires, chained)
