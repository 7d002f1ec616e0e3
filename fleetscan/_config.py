"""What to scan and how: one immutable value, validated before any AWS call.

The CLI builds a :class:`ScanConfig` from a TOML file and flags; library users build it directly.
Either way, bad input raises :class:`~fleetscan.ConfigError` naming the field, before the scan
touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Compression = Literal["none", "gzip"]


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    # -- accounts ------------------------------------------------------------------------------
    #: Enumerate the organization (ListAccounts with the ambient credentials).
    org: bool = False
    #: Restrict ``org`` to these OUs, recursively.
    ous: tuple[str, ...] = ()
    #: A static list of 12-digit account ids (instead of, or on top of, ``org``).
    accounts: tuple[str, ...] = ()
    #: One id a line, or CSV with an ``account_id`` column.
    accounts_file: Path | None = None
    exclude_accounts: tuple[str, ...] = ()
    #: Also scan SUSPENDED / PENDING_CLOSURE accounts (their role usually cannot be assumed).
    include_inactive: bool = False

    # -- credentials ---------------------------------------------------------------------------
    #: Role to assume in each account; the ARN is built per account and partition.
    role_name: str | None = None
    #: Alternative to ``role_name``: ``arn:{partition}:iam::{account_id}:role/X``.
    role_arn_template: str | None = None
    external_id: str | None = field(default=None, repr=False)
    role_session_name: str = "fleetscan"
    role_duration_seconds: int = 3600
    #: Assume this role first and chain from it into every member (sessions capped at 1 hour).
    hub_role_arn: str | None = None
    #: False scans the ambient account only, with the ambient credentials.
    assume_role: bool = True
    #: AWS shared-config profile for the ambient credentials (None: the SDK's default chain).
    profile: str | None = None
    #: Partition of the organization (aws, aws-cn, aws-us-gov).
    partition: str = "aws"

    # -- regions -------------------------------------------------------------------------------
    #: "enabled" (per account, from EC2 DescribeRegions), "all" (botocore's list), or names.
    regions: tuple[str, ...] | Literal["all", "enabled"] = "enabled"

    # -- the scan ------------------------------------------------------------------------------
    #: Cap on Storage Gateway / STS calls in flight across the whole scan.
    concurrency: int = 256
    #: Requests per second per (account, region) token bucket, and its burst.
    rate: float = 20.0
    burst: int = 20
    #: Attempts per call (first try included) for retryable failures.
    max_attempts: int = 8
    #: Retries the whole run may spend, as a fraction of the calls made (plus a floor of 100).
    retry_budget_ratio: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0

    # -- output --------------------------------------------------------------------------------
    #: A local directory, ``s3://bucket/prefix/`` (later), or "-" for recovery points on stdout.
    output: str | None = None
    compress: Compression = "none"
    #: Roll an output file over at this size (uncompressed bytes written).
    max_object_bytes: int = 128 * 1024 * 1024
    #: Explicit run id (default: a fresh, sortable one).
    run_id: str | None = None
    #: Plan only: list accounts x regions and the expected calls; no Storage Gateway call.
    dry_run: bool = False
