"""One organization of a scan of several: how to reach it, and what differs for its members.

A module of its own so that the checks (``_checks``) can build entries from TOML tables without
importing the model that calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Final


@dataclass(frozen=True, kw_only=True)
class OrganizationConfig:
    """One organization of a scan of several (a ``[[organizations]]`` table of the TOML file).

    How to reach its management account (or delegated administrator), which lists its accounts:
    the ambient credentials, a ``profile``, and/or a ``management_role_arn`` assumed from them.
    The member settings left None take the top-level ScanConfig's, so a config states only what
    differs per organization. Checked by :class:`ScanConfig`, which names the entry and key.
    """

    #: Names the organization in messages, error records, the manifest and audit policies.
    name: str
    #: Shared-config profile whose credentials reach this organization (None: the ambient ones).
    profile: str | None = None
    #: A role in the management account (or a delegated administrator), assumed to list the
    #: organization; its members' roles are still assumed from ``profile`` or the ambient identity.
    management_role_arn: str | None = None
    #: The external id ``management_role_arn``'s trust policy demands.
    management_external_id: str | None = field(default=None, repr=False)
    #: Member settings of this organization; None: the top-level value.
    role_name: str | None = None
    role_arn_template: str | None = None
    external_id: str | None = field(default=None, repr=False)
    ous: tuple[str, ...] | None = None
    exclude_accounts: tuple[str, ...] | None = None


#: The keys an ``[[organizations]]`` table may set.
ORGANIZATION_KEYS: Final[frozenset[str]] = frozenset(
    f.name for f in fields(OrganizationConfig) if f.init
)
