"""AWS Organizations (JSON 1.1) from the fleet model: the read calls a scanner discovers with.

The organization a call sees is the organization of the caller's account. Any account of it may
describe it; only its management account or a delegated administrator may list its accounts and
walk its OU tree (``AccessDeniedException`` for the others), and an account of no organization
gets ``AWSOrganizationsNotInUseException``. Every List* call pages with ``MaxResults`` (1-20,
default 20) and an opaque ``NextToken``; the ``empty_page`` fault answers the documented empty
page that still carries a token. Each organization's answers are rendered once, on first use.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from ._fleet import Account, Fleet, Organization
from ._wire import ApiError, Call, JsonProtocol, Payload, Service, dumps_kept

TARGET_PREFIX = "AWSOrganizationsV20161128"
#: Every Organizations List* call returns at most 20 items a page.
MAX_RESULTS = 20

#: The model's ParentId pattern, anchored as intended (the model's ``^a|b$`` anchors each half).
_PARENT_ID = re.compile(r"r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}")
_NEXT_TOKEN_MAX = 100_000
_NOT_IN_USE = ApiError(
    400, "AWSOrganizationsNotInUseException", "Your account is not a member of an organization."
)
_ACCESS_DENIED = ApiError(
    400, "AccessDeniedException", "You don't have permissions to access this resource."
)
_PARENT_NOT_FOUND = ApiError(
    400,
    "ParentNotFoundException",
    "We can't find a root or OU with the ParentId that you specified.",
)


def _invalid_input(reason: str, message: str) -> ApiError:
    return ApiError(400, "InvalidInputException", message, fields={"Reason": reason})


def _serialization(message: str) -> ApiError:
    return ApiError(400, "com.amazon.coral.service#SerializationException", message)


def _account_info(organization: Organization, account: Account) -> Payload:
    return {
        "Id": account.id,
        "Arn": organization.account_arn(account.id),
        "Email": account.email,
        "Name": account.name,
        "Status": account.status,
        "State": account.status,
        "JoinedMethod": "CREATED",
        "JoinedTimestamp": account.joined.timestamp(),
    }


@dataclass
class _OrganizationView:
    """One organization as its List* calls page it: JSON fragments, rendered once."""

    accounts: list[bytes]
    #: parent id -> fragments of the accounts / OUs / children directly under it.
    accounts_under: dict[str, list[bytes]] = field(default_factory=dict)
    ous_under: dict[str, list[bytes]] = field(default_factory=dict)
    account_children: dict[str, list[bytes]] = field(default_factory=dict)
    ou_children: dict[str, list[bytes]] = field(default_factory=dict)
    root: list[bytes] = field(default_factory=list)
    description: bytes = b""


class Organizations(Service):
    """DescribeOrganization, ListAccounts, ListRoots, ListOrganizationalUnitsForParent,
    ListAccountsForParent and ListChildren, for every organization of the fleet."""

    name = "organizations"
    protocol = JsonProtocol("Message")

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self._views: dict[str, _OrganizationView] = {}
        self._tokens = itertools.count(1)
        self.handlers = {
            "DescribeOrganization": self._describe_organization,
            "ListAccounts": self._list_accounts,
            "ListRoots": self._list_roots,
            "ListOrganizationalUnitsForParent": self._list_ous_for_parent,
            "ListAccountsForParent": self._list_accounts_for_parent,
            "ListChildren": self._list_children,
        }

    # -- errors -------------------------------------------------------------------------------

    def throttled(self) -> ApiError:
        return ApiError(
            400,
            "TooManyRequestsException",
            "AWS Organizations can't complete your request because another request is already "
            "in progress. Try again later.",
        )

    def internal_error(self, status: int) -> ApiError:
        return ApiError(
            500,
            "ServiceException",
            "AWS Organizations can't complete your request because of an internal service "
            "error. Try again later.",
        )

    def access_denied(self, call: Call) -> ApiError:
        return _ACCESS_DENIED

    def prepare(self) -> None:
        """Render every organization's answers now rather than on its first call (at 10,000
        accounts, about 0.2 s that the first ListAccounts page would otherwise wait)."""
        for organization in self.fleet.organizations:
            if organization.id not in self._views:
                self._views[organization.id] = self._render(organization)

    # -- the organization -----------------------------------------------------------------------

    def _organization(self, call: Call, *, listing: bool) -> tuple[Organization, _OrganizationView]:
        organization = self.fleet.organization_of(call.account_id)
        if organization is None:
            raise _NOT_IN_USE
        if listing and not organization.may_list(call.account_id):
            raise _ACCESS_DENIED
        view = self._views.get(organization.id)
        if view is None:
            view = self._views[organization.id] = self._render(organization)
        return organization, view

    def _render(self, organization: Organization) -> _OrganizationView:
        accounts = self.fleet.organization_accounts(organization)
        view = _OrganizationView([dumps_kept(_account_info(organization, a)) for a in accounts])
        parents = [organization.root_id, *(ou.id for ou in organization.ous)]
        for parent in parents:
            under = [a for a in accounts if a.ou_id == parent]
            ous = [ou for ou in organization.ous if ou.parent_id == parent]
            view.accounts_under[parent] = [
                dumps_kept(_account_info(organization, a)) for a in under
            ]
            view.ous_under[parent] = [
                dumps_kept({"Id": ou.id, "Arn": organization.ou_arn(ou.id), "Name": ou.name})
                for ou in ous
            ]
            view.account_children[parent] = [
                dumps_kept({"Id": a.id, "Type": "ACCOUNT"}) for a in under
            ]
            view.ou_children[parent] = [
                dumps_kept({"Id": ou.id, "Type": "ORGANIZATIONAL_UNIT"}) for ou in ous
            ]
        view.root = [
            dumps_kept(
                {
                    "Id": organization.root_id,
                    "Arn": organization.root_arn(),
                    "Name": "Root",
                    "PolicyTypes": [],
                }
            )
        ]
        management = organization.management
        view.description = dumps_kept(
            {
                "Organization": {
                    "Id": organization.id,
                    "Arn": organization.arn,
                    "FeatureSet": "ALL",
                    "MasterAccountArn": organization.account_arn(management.id),
                    "MasterAccountId": management.id,
                    "MasterAccountEmail": management.email,
                    "AvailablePolicyTypes": [
                        {"Type": "SERVICE_CONTROL_POLICY", "Status": "ENABLED"}
                    ],
                }
            }
        )
        return view

    # -- paging -------------------------------------------------------------------------------

    def _page(
        self, call: Call, organization: Organization, key: str, items: list[bytes], scope: str
    ) -> bytes:
        """One page of ``items`` from the call's NextToken; ``scope`` ties tokens to the call
        (operation and parent) they were issued for, as AWS refuses a token from another."""
        params = call.params
        limit = params.get("MaxResults")
        if limit is None:
            limit = MAX_RESULTS
        elif isinstance(limit, bool) or not isinstance(limit, int):
            raise _serialization(
                f"{type(limit).__name__.upper()}_VALUE can not be converted to an Integer"
            )
        elif not 1 <= limit <= MAX_RESULTS:
            reason = "MIN_VALUE_EXCEEDED" if limit < 1 else "MAX_VALUE_EXCEEDED"
            raise _invalid_input(
                reason, f"You provided a value for MaxResults outside 1 to {MAX_RESULTS}."
            )
        start = self._start(params.get("NextToken"), organization.id, scope, len(items))
        if call.empty_page:
            return self._render_page(key, [], self._token(organization.id, scope, start))
        end = start + limit
        token = self._token(organization.id, scope, end) if end < len(items) else None
        return self._render_page(key, items[start:end], token)

    @staticmethod
    def _render_page(key: str, items: list[bytes], token: str | None) -> bytes:
        body = b'{"' + key.encode() + b'":[' + b",".join(items) + b"]"
        if token is not None:
            body += b',"NextToken":' + orjson.dumps(token)
        return body + b"}"

    def _token(self, organization_id: str, scope: str, position: int) -> str:
        # A serial makes every token distinct, even two for the same position (empty pages).
        raw = orjson.dumps([organization_id, scope, position, next(self._tokens)])
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def _start(token: object, organization_id: str, scope: str, total: int) -> int:
        if token is None:
            return 0
        if not isinstance(token, str):
            raise _serialization(
                f"{type(token).__name__.upper()}_VALUE can not be converted to a String"
            )
        invalid = _invalid_input("INVALID_NEXT_TOKEN", "The provided NextToken is not valid.")
        if len(token) > _NEXT_TOKEN_MAX:
            raise invalid
        try:
            fields = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, binascii.Error):
            raise invalid from None
        if (
            not isinstance(fields, list)
            or len(fields) != 4
            or fields[:2] != [organization_id, scope]
            or not isinstance(fields[2], int)
            or not 0 <= fields[2] <= total
        ):
            raise invalid
        position: int = fields[2]
        return position

    def _parent(self, call: Call, organization: Organization) -> str:
        parent = call.params.get("ParentId")
        if parent is None:
            raise _invalid_input("INPUT_REQUIRED", "You must specify a value for ParentId.")
        if not isinstance(parent, str):
            raise _serialization(
                f"{type(parent).__name__.upper()}_VALUE can not be converted to a String"
            )
        if len(parent) > 100 or _PARENT_ID.fullmatch(parent) is None:
            raise _invalid_input(
                "INVALID_PATTERN", "The ParentId does not match the required pattern."
            )
        return parent

    # -- operations ---------------------------------------------------------------------------

    def _describe_organization(self, call: Call) -> bytes:
        _, view = self._organization(call, listing=False)
        return view.description

    def _list_accounts(self, call: Call) -> bytes:
        organization, view = self._organization(call, listing=True)
        return self._page(call, organization, "Accounts", view.accounts, "ListAccounts")

    def _list_roots(self, call: Call) -> bytes:
        organization, view = self._organization(call, listing=True)
        return self._page(call, organization, "Roots", view.root, "ListRoots")

    def _list_ous_for_parent(self, call: Call) -> bytes:
        return self._list_under(call, "OrganizationalUnits", lambda view: view.ous_under)

    def _list_accounts_for_parent(self, call: Call) -> bytes:
        return self._list_under(call, "Accounts", lambda view: view.accounts_under)

    def _list_under(
        self,
        call: Call,
        key: str,
        table: Callable[[_OrganizationView], dict[str, list[bytes]]],
    ) -> bytes:
        """One page of what ``table`` holds directly under the call's ParentId."""
        organization, view = self._organization(call, listing=True)
        parent = self._parent(call, organization)
        items = table(view).get(parent)
        if items is None:
            raise _PARENT_NOT_FOUND
        return self._page(call, organization, key, items, f"{key}:{parent}")

    def _list_children(self, call: Call) -> bytes:
        organization, view = self._organization(call, listing=True)
        parent = self._parent(call, organization)
        child_type = call.params.get("ChildType")
        if child_type is None:
            raise _invalid_input("INPUT_REQUIRED", "You must specify a value for ChildType.")
        if child_type == "ACCOUNT":
            children = view.account_children.get(parent)
        elif child_type == "ORGANIZATIONAL_UNIT":
            children = view.ou_children.get(parent)
        else:
            raise _invalid_input(
                "INVALID_ENUM", "ChildType must be ACCOUNT or ORGANIZATIONAL_UNIT."
            )
        if children is None:
            raise _PARENT_NOT_FOUND
        return self._page(
            call, organization, "Children", children, f"Children:{child_type}:{parent}"
        )
