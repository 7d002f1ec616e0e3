"""moto, seeded with the fleet's organizations, for the stack's ``identity="moto"`` mode.

The default stack serves STS, Organizations and EC2 from the fleet model; this mode keeps moto's
STS and Organizations (and its IAM, which holds the roles) for what needs moto's fidelity: tests
that read the sessions moto's STS recorded, that change trust policies in moto's IAM, or that
deploy CloudFormation StackSets and scan through the roles they create. moto maps each request's
access key to an account by scanning every key it has issued, so its cost per call grows with the
run: it is not the mode for 10,000 accounts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from moto.backends import get_backend
from moto.core.exceptions import AccessDeniedError
from moto.organizations import utils as moto_org_utils
from moto.server import ThreadedMotoServer
from moto.sts import urls as moto_sts_urls
from moto.sts.models import STSBackend

from ._fleet import Fleet
from ._identity import OPERATOR_USER_NAME, Roles

#: The region the stack's SDK configuration names; every emulated service answers in any region.
STACK_REGION = "us-east-1"

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/(?:.*/)?([^/]+)$")


class _AssumeRoleGuard:
    """Refuses AssumeRole where AWS would: the fleet's suspended accounts, roles that do not exist
    in moto's IAM, trust policies whose ``sts:ExternalId`` condition the caller does not meet,
    and a denied organization's management role.

    moto itself lets any role ARN be assumed, which would let a scanner "succeed" against accounts
    that a real organization cannot reach, and the fleet's ground truth says it must not.
    """

    def __init__(self, fleet: Fleet, roles: Roles) -> None:
        self._fleet = fleet
        self._roles = roles

    def check(self, caller_account_id: str, role_arn: str, external_id: str | None) -> None:
        match = _ROLE_ARN.match(role_arn or "")
        if match is None:
            return
        account_id, role_name = match.groups()
        account = self._fleet.account(account_id)
        if account is None:
            return  # Not a fleet account: moto's own behaviour.
        denied = AccessDeniedError(
            user_arn=f"arn:aws:iam::{caller_account_id}:root",
            action=f"sts:AssumeRole on resource: {role_arn}",
        )
        if not account.active:
            raise denied
        modeled = self._roles.role(account_id, role_name)
        if modeled is not None and not modeled.assumable:
            raise denied
        iam = get_backend("iam")[account_id]["global"]
        role = next((r for r in iam.roles.values() if r.name == role_name), None)
        if role is None:
            raise denied
        required = _required_external_ids(role.assume_role_policy_document)
        if required and external_id not in required:
            raise denied


def _required_external_ids(policy_document: str) -> set[str]:
    """The ``sts:ExternalId`` values a role's trust policy demands (empty: none demanded)."""
    try:
        policy = json.loads(policy_document)
    except (TypeError, ValueError):
        return set()
    required: set[str] = set()
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        condition = statement.get("Condition", {}).get("StringEquals", {})
        value = condition.get("sts:ExternalId")
        if isinstance(value, str):
            required.add(value)
        elif isinstance(value, list):
            required.update(v for v in value if isinstance(v, str))
    return required


class _GuardedSTSBackend(STSBackend):
    """moto's STS, with :class:`_AssumeRoleGuard` in front of AssumeRole, for every account
    (a hub role in a member account assumes roles too)."""

    guard: _AssumeRoleGuard | None = None

    @property
    def _url_module(self) -> Any:
        # moto finds a backend's URL table next to the backend's module; ours is moto's STS.
        return moto_sts_urls

    def assume_role(
        self,
        region_name: str,
        role_session_name: str,
        role_arn: str,
        policy: str,
        duration: int,
        external_id: str,
    ) -> Any:
        if self.guard is not None:
            self.guard.check(self.account_id, role_arn, external_id)
        return super().assume_role(
            region_name=region_name,
            role_session_name=role_session_name,
            role_arn=role_arn,
            policy=policy,
            duration=duration,
            external_id=external_id,
        )


@contextlib.contextmanager
def _moto_ids(name: str, ids: list[str]) -> Iterator[None]:
    """Make moto's Organizations hand out ``ids`` (in order) instead of random ones.

    moto's API has no way to choose an account, OU or root id, and the organization must carry
    the fleet's: those are the ids the emulator's gateways belong to.
    """
    original: Callable[..., str] = getattr(moto_org_utils, name)
    queue = iter(ids)

    def take(*_args: object) -> str:
        return next(queue)

    setattr(moto_org_utils, name, take)
    try:
        yield
    finally:
        setattr(moto_org_utils, name, original)


def trust_policy(management_account_id: str, external_id: str | None) -> dict[str, Any]:
    """A fleet role's trust policy: the management account, with the external id if any."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{management_account_id}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _add_operator(management_account_id: str, access_key_id: str, secret: str) -> None:
    """Make the management credentials an IAM user's access key in moto.

    moto maps every request's access key to an account by searching each account's IAM keys in
    creation order, falling back to the management account after searching them all. With
    10,000 member accounts that search made each management-account call (ListAccounts,
    AssumeRole) cost tens of milliseconds; a key owned by the first account ends it at once.
    It also gives GetCallerIdentity a real user ARN, as AWS would.
    """
    iam = get_backend("iam")[management_account_id]["global"]
    iam.create_user(region_name=STACK_REGION, user_name=OPERATOR_USER_NAME, path="/")
    key = iam.create_access_key(user_name=OPERATOR_USER_NAME)
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id = access_key_id
    key.secret_access_key = secret
    iam.access_keys[key.physical_resource_id] = key


def _create_role(account_id: str, name: str, policy: dict[str, Any]) -> None:
    get_backend("iam")[account_id]["global"].create_role(
        role_name=name,
        assume_role_policy_document=json.dumps(policy),
        path="/",
        permissions_boundary=None,
        description="",
        tags=[],
        max_session_duration="43200",
    )


def seed_moto(fleet: Fleet, roles: Roles, *, access_key_id: str, secret_access_key: str) -> None:
    """Create the fleet's organizations in this process's (freshly reset) moto backends, with
    the roles ``roles`` describes, and guard moto's AssumeRole with them.

    Accounts get distinct join times in fleet order, because moto pages ListAccounts by join time
    and equal times would make pages skip or repeat accounts. ``access_key_id`` becomes the first
    management account's operator key.
    """
    _add_operator(fleet.management_account_id, access_key_id, secret_access_key)
    iam = get_backend("iam")
    for organization in fleet.organizations:
        management = organization.management.id
        access = roles.of(organization.id)
        orgs = get_backend("organizations")[management]["aws"]
        with (
            _moto_ids("make_random_org_id", [organization.id]),
            _moto_ids("make_random_root_id", [organization.root_id]),
            _moto_ids("make_random_account_id", [management]),
        ):
            orgs.create_organization(region=STACK_REGION, FeatureSet="ALL")
        seeded = orgs.get_account_by_id(management)
        seeded.create_time = _naive(organization.management.joined)
        seeded.name = organization.management.name
        seeded.email = organization.management.email
        assert orgs.org is not None
        orgs.org.master_account_email = organization.management.email

        with _moto_ids("make_random_ou_id", [ou.id for ou in organization.ous]):
            for ou in organization.ous:  # Parents come before their children.
                orgs.create_organizational_unit(Name=ou.name, ParentId=ou.parent_id)

        member_role = access.member_role_name
        member_policy = trust_policy(management, access.member_external_id)
        members = [fleet.account(i) for i in organization.member_ids]
        with _moto_ids("make_random_account_id", list(organization.member_ids)):
            for account in members:
                assert account is not None
                orgs.create_account(
                    AccountName=account.name, Email=account.email, RoleName=member_role
                )
                created = orgs.accounts[-1]
                # Direct attribute writes: moto's move_account is a linear search per call,
                # which makes seeding quadratic in the number of accounts.
                created.parent_id = account.ou_id
                created.create_time = _naive(account.joined)
                if access.member_external_id is not None:
                    iam[account.id]["global"].update_assume_role_policy(
                        member_role, json.dumps(member_policy)
                    )
        for account in members:
            if account is not None and not account.active:
                orgs.close_account(AccountId=account.id)
        # The management account holds the member role too (scans include it), and the role
        # through which the first organization's management account reaches this one.
        _create_role(management, member_role, member_policy)
        _create_role(
            management,
            access.management_role_name,
            trust_policy(fleet.management_account_id, access.management_external_id),
        )

    _GuardedSTSBackend.guard = _AssumeRoleGuard(fleet, roles)
    get_backend("sts").backend = _GuardedSTSBackend


def unguard_moto() -> None:
    """Give moto its own STS back (the stack stopped)."""
    _GuardedSTSBackend.guard = None
    get_backend("sts").backend = STSBackend


def _naive(moment: dt.datetime) -> dt.datetime:
    """moto keeps naive UTC datetimes."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def stop_moto(server: ThreadedMotoServer) -> None:
    """Stop moto without waiting out its accept loop's half-second poll.

    The loop notices a shutdown request only when its select() returns, so connections are made
    until it has: each wakes it up at once. Stopping in 0.5 s per test adds up across a suite.
    """
    host, port = server.get_host_and_port()
    stopper = threading.Thread(target=server.stop, name="moto-stop", daemon=True)
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=0.2).close()
        stopper.join(0.01)
