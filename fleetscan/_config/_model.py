"""What to scan and how: one immutable value, validated before any AWS call.

The CLI builds a :class:`ScanConfig` from a TOML file and flags; library users build it directly.
Either way, bad input raises :class:`~fleetscan.ConfigError` naming the field, before the scan
touches the network: a typo found after an hour of scanning 10,000 accounts is an hour lost.

Field names are the TOML keys, so an error names what the user wrote. Values that can be secret
(``external_id``) are never quoted back in a message, only what is wrong with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Final, Literal

from ._checks import validate
from ._organization import OrganizationConfig

Compression = Literal["none", "gzip"]


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    # -- accounts ------------------------------------------------------------------------------
    #: Enumerate the organization (ListAccounts with the ambient credentials).
    org: bool = False
    #: Restrict ``org`` (and, by default, every organization) to these OUs, recursively.
    ous: tuple[str, ...] = ()
    #: A static list of 12-digit account ids (instead of, or on top of, ``org``).
    accounts: tuple[str, ...] = ()
    #: One id a line, or CSV with an ``account_id`` column. Read when the config is built: its
    #: ids are appended to ``accounts`` (so the engine sees one list), a bad line fails early.
    accounts_file: Path | None = None
    exclude_accounts: tuple[str, ...] = ()
    #: Several organizations in one run (``[[organizations]]`` tables), instead of ``org``: the
    #: top-level role, external id, ous and exclude_accounts are each one's defaults.
    organizations: tuple[OrganizationConfig, ...] = ()
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
    #: Cap on Storage Gateway / STS calls in flight across the whole scan. Each holds a TLS
    #: connection (about 0.35 MB); 128 keep one core busy at in-region latencies (see README).
    concurrency: int = 128
    #: Requests per second per (account, region) token bucket: a ceiling it never exceeds. None
    #: (the default): AWS does not publish Storage Gateway's rate, so each bucket starts at 20/s
    #: and probes upward while no throttle comes back (see ``fleetscan/_ratelimit.py``).
    rate: float | None = None
    #: The bucket's burst: calls it sends at once after a quiet spell.
    burst: int = 10
    #: Attempts per call (first try included) for retryable failures.
    max_attempts: int = 8
    #: Retries the whole run may spend, as a fraction of the calls made (plus a floor of 100).
    retry_budget_ratio: float = 0.5
    connect_timeout: float = 10.0
    #: Longest wait between two bytes of an answer (it restarts with every byte).
    read_timeout: float = 30.0
    #: Total deadline of one attempt of any AWS call, however the answer trickles in; a request
    #: sending a body (an S3 part) gets a second more per 64 KiB of it. Past it: ``Timeout``.
    call_timeout: float = 60.0

    # -- output --------------------------------------------------------------------------------
    #: A local directory, ``s3://bucket/prefix/``, or "-" for recovery points on stdout.
    output: str | None = None
    compress: Compression = "none"
    #: Roll an output file over at this size (uncompressed bytes written).
    max_object_bytes: int = 128 * 1024 * 1024
    #: Explicit run id (default: a fresh, sortable one).
    run_id: str | None = None
    #: Plan only: list accounts x regions and the expected calls; no Storage Gateway call.
    dry_run: bool = False
    #: Permission bits of every output file.
    file_mode: int = 0o600
    #: Continue an interrupted run (a run id, or "latest") in the same output directory.
    resume: str | None = None
    #: Seconds between checkpoints (a commit makes files durable and records finished units).
    checkpoint_interval: float = 30.0
    #: On SIGINT/SIGTERM, how long calls in flight may take to finish before they are cut.
    stop_grace_seconds: float = 10.0
    #: Scan one share of the run's accounts: "K/N" (K from 1 to N), or "auto" to take K and N
    #: from a Kubernetes Indexed Job or an AWS Batch array job. Every shard of a run is given
    #: the same ``run_id``; a shard started again resumes its own checkpoint.
    shard: str | None = None

    # -- S3 output (only with an s3:// output) ---------------------------------------------------
    #: Server-side encryption of every object: "AES256" (SSE-S3) or "aws:kms" (SSE-KMS); None
    #: leaves it to the bucket's default encryption.
    sse: str | None = None
    #: The KMS key for "aws:kms" (key id, key ARN or alias); None: the account's aws/s3 key.
    sse_kms_key_id: str | None = None
    #: S3 Bucket Key for SSE-KMS: fewer KMS requests (and KMS charges) per object.
    bucket_key: bool = False
    #: 12-digit account that must own the bucket; S3 refuses every request otherwise.
    expected_bucket_owner: str | None = None
    #: Checksum sent with every part and object and verified by S3: "CRC32" or "SHA256".
    checksum_algorithm: str = "CRC32"

    def __post_init__(self) -> None:
        validate(self)

    def static_account_ids(self) -> tuple[str, ...]:
        """The listed accounts (``accounts``, which includes ``accounts_file``'s ids), each once,
        minus ``exclude_accounts``: what a scan without ``org`` covers."""
        excluded = set(self.exclude_accounts)
        return tuple(a for a in self.accounts if a not in excluded)

    def organization_settings(self) -> tuple[OrganizationConfig, ...]:
        """Each organization of ``organizations`` with every member setting resolved: its own,
        else the top-level one (a role given as a name or a template replaces both)."""
        resolved = []
        for entry in self.organizations:
            own_role = entry.role_name is not None or entry.role_arn_template is not None
            resolved.append(
                replace(
                    entry,
                    role_name=entry.role_name if own_role else self.role_name,
                    role_arn_template=(
                        entry.role_arn_template if own_role else self.role_arn_template
                    ),
                    external_id=(
                        entry.external_id if entry.external_id is not None else self.external_id
                    ),
                    ous=entry.ous if entry.ous is not None else self.ous,
                    exclude_accounts=(
                        entry.exclude_accounts
                        if entry.exclude_accounts is not None
                        else self.exclude_accounts
                    ),
                )
            )
        return tuple(resolved)


#: The TOML keys a config file may set: every ScanConfig field, nothing else.
CONFIG_KEYS: Final[frozenset[str]] = frozenset(f.name for f in fields(ScanConfig) if f.init)
