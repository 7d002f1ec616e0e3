"""A deterministic fleet of AWS organizations and their Storage Gateways, generated from a seed.

The fleet is the single source of truth for the emulator *and* for the tests: the server answers
from it (Storage Gateway, and STS, Organizations and EC2 ``DescribeRegions`` for the identity
side), and :meth:`Fleet.ground_truth` states exactly which records a correct scan must produce.

A fleet holds one or more organizations (:attr:`FleetSpec.organizations`). Each has its own
management account, root, OU tree (one OU nested) and members (one suspended); the member accounts
of all organizations together are :attr:`Fleet.accounts`, in generation order. With one
organization the fleet is exactly the single-organization fleet of earlier versions: same account,
OU, root and organization ids for the same seed.

Scale matters (10,000 accounts x 34 regions), so only the *shape* of the fleet is built eagerly:
which (account, region) pairs hold gateways, and how many. Gateways and volumes of a pair are
derived on demand from a per-pair random stream, so memory follows the number of non-empty pairs,
never accounts x regions, and two processes with the same :class:`FleetSpec` see the same fleet.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import random
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace

#: Regions where botocore 1.43 offers storagegateway in the ``aws`` partition.
STORAGE_GATEWAY_REGIONS: tuple[str, ...] = (
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
    "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-central-1",
    "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2",
    "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1",
    "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
)  # fmt: skip

#: The 16 regions every AWS account has enabled by default (no opt-in needed).
DEFAULT_REGIONS: tuple[str, ...] = (
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-southeast-1",
    "ap-southeast-2", "ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "sa-east-1", "us-east-1", "us-east-2", "us-west-1",
)  # fmt: skip

#: The regions an account can use without opting in (every other region in the ``aws`` partition
#: was launched after March 2019 and must be enabled per account first).
NON_OPT_IN_REGIONS: tuple[str, ...] = (
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-southeast-1",
    "ap-southeast-2", "ca-central-1", "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2",
)  # fmt: skip
#: The regions each account must opt in to (EC2 ``DescribeRegions`` says ``not-opted-in`` until).
OPT_IN_REGIONS: tuple[str, ...] = tuple(
    r for r in STORAGE_GATEWAY_REGIONS if r not in NON_OPT_IN_REGIONS
)

#: The first organization's management account: the identity of the stack's ambient keys (and
#: moto's default account, which unknown access keys map to).
MANAGEMENT_ACCOUNT_ID = "123456789012"

GATEWAY_TYPES: tuple[tuple[str, float], ...] = (
    ("CACHED", 0.55),
    ("STORED", 0.15),
    ("VTL", 0.10),
    ("FILE_S3", 0.15),
    ("FILE_FSX_SMB", 0.05),
)
HOST_ENVIRONMENTS = ("VMWARE", "HYPER-V", "EC2", "KVM")
_GIB = 1 << 30
_VOLUME_SIZES = tuple(n * _GIB for n in (1, 10, 50, 100, 150, 500, 1024, 4096))


@dataclass(frozen=True)
class Volume:
    """A cached volume and its one recovery point."""

    arn: str
    id: str
    recovery_point_time: dt.datetime
    size_bytes: int
    usage_bytes: int | None
    #: Sent as a JSON string, as in the API page's sample response.
    size_as_string: bool

    @property
    def recovery_point_time_text(self) -> str:
        """The wire form: RFC 3339 with milliseconds and ``Z``, as Storage Gateway sends it."""
        return self.recovery_point_time.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{self.recovery_point_time.microsecond // 1000:03d}Z"
        )


@dataclass(frozen=True)
class Gateway:
    account_id: str
    region: str
    id: str
    arn: str
    name: str
    type: str
    operational_state: str
    host_environment: str
    ec2_instance_id: str | None
    software_version: str
    #: An offline gateway answers GatewayNotConnected to ListVolumeRecoveryPoints.
    connected: bool
    volumes: tuple[Volume, ...]

    @property
    def is_cached(self) -> bool:
        return self.type == "CACHED"


@dataclass(frozen=True)
class Account:
    """A member or management account of one of the fleet's organizations."""

    id: str
    name: str
    email: str
    #: The OU the account sits in directly (the root's id for a management account).
    ou_id: str
    status: str  # ACTIVE | SUSPENDED
    organization_id: str
    #: When the account joined its organization (ListAccounts' ``JoinedTimestamp``).
    joined: dt.datetime

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


@dataclass(frozen=True)
class OrganizationalUnit:
    id: str
    name: str
    parent_id: str


@dataclass(frozen=True)
class Organization:
    """One AWS organization of the fleet: its ids, its management account and its members.

    ``index`` is its position in :attr:`Fleet.organizations` (0 is the organization whose
    management account the stack's ambient keys belong to).
    """

    index: int
    id: str
    name: str
    root_id: str
    management: Account
    ous: tuple[OrganizationalUnit, ...]
    #: Member account ids in generation order (the management account is not among them).
    member_ids: tuple[str, ...]
    #: Members that may call the Organizations read APIs as a delegated administrator.
    delegated_administrators: tuple[str, ...]

    @property
    def management_account_id(self) -> str:
        return self.management.id

    @property
    def arn(self) -> str:
        return f"arn:aws:organizations::{self.management.id}:organization/{self.id}"

    def account_arn(self, account_id: str) -> str:
        return f"arn:aws:organizations::{self.management.id}:account/{self.id}/{account_id}"

    def root_arn(self) -> str:
        return f"arn:aws:organizations::{self.management.id}:root/{self.id}/{self.root_id}"

    def ou_arn(self, ou_id: str) -> str:
        return f"arn:aws:organizations::{self.management.id}:ou/{self.id}/{ou_id}"

    def may_list(self, account_id: str) -> bool:
        """Whether ``account_id`` may call ListAccounts and walk the OU tree: the management
        account or a delegated administrator, as on AWS."""
        return account_id == self.management.id or account_id in self.delegated_administrators


@dataclass(frozen=True)
class FleetSpec:
    """Everything a fleet is generated from. Equal specs give equal fleets, in any process."""

    seed: int = 1
    #: Member accounts in all organizations together, split into contiguous blocks.
    accounts: int = 12
    #: How many organizations the members are split into; each has its own management account.
    organizations: int = 1
    regions: tuple[str, ...] = DEFAULT_REGIONS
    #: Fraction of member accounts that hold any gateway at all.
    populated_fraction: float = 0.6
    #: Scales the heavy tail of gateways per (account, region).
    max_gateways_per_pair: int = 250
    max_volumes_per_gateway: int = 24
    #: Fraction of volumes whose recovery point is older than a day.
    stale_fraction: float = 0.08
    offline_fraction: float = 0.06
    #: Chance that an account has opted in to each opt-in region (beyond those where it holds
    #: gateways, which it must have enabled): EC2 DescribeRegions answers per account.
    opt_in_fraction: float = 0.25
    #: Make each organization's first active member a delegated administrator, which may list
    #: the organization's accounts and OUs like the management account.
    delegated_administrator: bool = False
    #: The fleet's "now": recovery point times are this minus each volume's age.
    epoch: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0)
    )

    def __post_init__(self) -> None:
        if self.accounts < 1:
            raise ValueError("a fleet needs at least one member account")
        if self.organizations < 1:
            raise ValueError("a fleet needs at least one organization")
        if self.organizations > self.accounts:
            raise ValueError(
                f"{self.organizations} organizations need at least as many member accounts, "
                f"got {self.accounts}"
            )
        if not 0.0 <= self.opt_in_fraction <= 1.0:
            raise ValueError(f"opt_in_fraction must be between 0 and 1, got {self.opt_in_fraction}")
        unknown = set(self.regions) - set(STORAGE_GATEWAY_REGIONS)
        if unknown:
            raise ValueError(f"not Storage Gateway regions: {sorted(unknown)}")
        if self.epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware (UTC)")


@dataclass(frozen=True)
class ExpectedGateway:
    account_id: str
    region: str
    gateway_arn: str
    gateway_type: str
    status: str  # scanned | not_cached | error
    recovery_point_count: int | None
    error_code: str | None
    #: The ``o-…`` id of the account's organization.
    organization_id: str


@dataclass(frozen=True)
class ExpectedRecoveryPoint:
    account_id: str
    region: str
    gateway_arn: str
    volume_arn: str
    recovery_point_time: dt.datetime
    volume_size_bytes: int
    volume_usage_bytes: int | None
    #: Age at the fleet's epoch; a scan at time T sees ``age + (T - epoch)``.
    age_seconds: float
    #: The ``o-…`` id of the account's organization.
    organization_id: str


@dataclass(frozen=True)
class GroundTruth:
    """What a correct, complete scan of the fleet must produce, and nothing more."""

    recovery_points: tuple[ExpectedRecoveryPoint, ...]
    gateways: tuple[ExpectedGateway, ...]
    #: (account_id, region, gateway_arn, gateway_error_code) of each gateway that must fail.
    gateway_errors: tuple[tuple[str, str, str, str], ...]
    #: Accounts a scan must skip (suspended) unless asked to include inactive ones.
    skipped_accounts: tuple[str, ...]
    #: The organizations covered: ``o-…`` id -> the accounts a scan of that organization reaches
    #: (its management account and its active members, or every member with inactive ones).
    organizations: dict[str, tuple[str, ...]] = field(default_factory=dict)


def account_id_from_access_key(access_key_id: str) -> str | None:
    """Decode the owning account from an AWS access key id (AKIA/ASIA...), or None.

    AWS key ids carry the account in bits 1..40 of the base32 payload after the 4-letter prefix;
    moto's generated keys use the same layout, so keys from moto's AssumeRole decode correctly.
    """
    if len(access_key_id) < 16 or not access_key_id[:4].isalpha():
        return None
    try:
        raw = base64.b32decode(access_key_id[4:20].ljust(16, "A"))
    except ValueError:  # binascii.Error: not base32
        return None
    account = (int.from_bytes(raw[:6], "big") & 0x7FFFFFFFFF80) >> 7
    return f"{account:012d}"


def access_key_for_account(account_id: str, prefix: str = "AKIA", tag: str = "") -> str:
    """An access key id that decodes to ``account_id`` (the inverse of the function above)."""
    number = int(account_id)
    head = base64.b32encode((number // 2 + (1 << 39)).to_bytes(5, "big")).decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    middle = alphabet[16] if number % 2 else alphabet[0]
    filler = hashlib.sha256(f"{account_id}:{tag}".encode()).digest()
    tail = "".join(alphabet[b % 32] for b in filler[:7])
    return prefix + head + middle + tail


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


class Fleet:
    """Seeded organizations of member accounts, and the gateways and volumes the members hold.

    ``organization_id``, ``root_id``, ``ous`` and ``management_account_id`` are the first
    organization's (the one the stack's ambient keys manage); :attr:`organizations` has them all.
    """

    def __init__(self, spec: FleetSpec | None = None) -> None:
        self.spec = spec or FleetSpec()
        self._joined = self.spec.epoch - dt.timedelta(days=400)
        self.accounts: tuple[Account, ...]
        self.organizations: tuple[Organization, ...]
        self.accounts, self.organizations = self._make_organizations()
        first = self.organizations[0]
        self.management_account_id = first.management.id
        self.organization_id = first.id
        self.root_id = first.root_id
        self.ous = first.ous
        self._accounts_by_id: dict[str, Account] = {a.id: a for a in self.accounts}
        self._accounts_by_id.update((o.management.id, o.management) for o in self.organizations)
        self._organizations_by_id = {o.id: o for o in self.organizations}
        #: Only populated pairs are stored: {(account_id, region): gateway count}.
        self.pairs: dict[tuple[str, str], int] = self._make_pairs()
        self._gateway_index: dict[str, tuple[str, str, int]] = {}
        #: What changed since the fleet was generated (:meth:`advance` and the methods after it).
        self.generation = 0
        self._pinned: dict[str, dt.datetime] = {}
        self._removed: set[str] = set()
        self._disconnected: set[str] = set()
        self._added: Counter[str] = Counter()

    # -- organizations ------------------------------------------------------------------------

    def _make_organizations(self) -> tuple[tuple[Account, ...], tuple[Organization, ...]]:
        """Members first (the same ids, in the same order, whatever the number of
        organizations), then each organization's ids, OUs and management account."""
        spec = self.spec
        rng = _rng(spec.seed, "accounts")
        seen = {MANAGEMENT_ACCOUNT_ID}
        member_ids: list[str] = []
        for _ in range(spec.accounts):
            while True:
                account_id = f"{rng.randrange(10**11, 10**12):012d}"
                if account_id not in seen:
                    seen.add(account_id)
                    break
            member_ids.append(account_id)
        management_rng = _rng(spec.seed, "management")
        accounts: list[Account] = []
        organizations: list[Organization] = []
        count = spec.organizations
        for index in range(count):
            # Organization 0 keeps the ids a single-organization fleet always had.
            tag: tuple[object, ...] = () if index == 0 else (index,)
            root_id = "r-" + _hex(_rng(spec.seed, "root", *tag), 4).lower()
            organization_id = "o-" + _hex(_rng(spec.seed, "org", *tag), 10).lower()
            ous = _make_ous(_rng(spec.seed, "ous", *tag), root_id)
            if index == 0:
                management_id = MANAGEMENT_ACCOUNT_ID
            else:
                while True:
                    management_id = f"{management_rng.randrange(10**11, 10**12):012d}"
                    if management_id not in seen:
                        seen.add(management_id)
                        break
            suffix = "" if index == 0 else f"+{index + 1}"
            management = Account(
                management_id,
                "master" if index == 0 else f"master-{index + 1}",
                f"master{suffix}@example.com",
                root_id,
                "ACTIVE",
                organization_id,
                self._joined,
            )
            # Contiguous blocks of the members, as even as the count allows.
            block = range(index * spec.accounts // count, (index + 1) * spec.accounts // count)
            members: list[Account] = []
            for local, global_index in enumerate(block):
                ou = ous[local % len(ous)]
                # Exactly one suspended member (the second) per organization that has two.
                status = "SUSPENDED" if local == 1 and len(block) >= 2 else "ACTIVE"
                name = f"{ou.name.lower()}-{global_index:05d}"
                members.append(
                    Account(
                        member_ids[global_index],
                        name,
                        f"aws+{name}@example.com",
                        ou.id,
                        status,
                        organization_id,
                        self._joined + dt.timedelta(minutes=local + 1),
                    )
                )
            delegated: tuple[str, ...] = ()
            if spec.delegated_administrator:
                delegated = tuple(a.id for a in members if a.active)[:1]
            accounts += members
            organizations.append(
                Organization(
                    index=index,
                    id=organization_id,
                    name=f"org-{index + 1}",
                    root_id=root_id,
                    management=management,
                    ous=ous,
                    member_ids=tuple(a.id for a in members),
                    delegated_administrators=delegated,
                )
            )
        return tuple(accounts), tuple(organizations)

    def account(self, account_id: str) -> Account | None:
        """A member or management account of any of the fleet's organizations."""
        return self._accounts_by_id.get(account_id)

    def organization(self, organization_id: str) -> Organization | None:
        return self._organizations_by_id.get(organization_id)

    def organization_of(self, account_id: str) -> Organization | None:
        """The organization ``account_id`` belongs to (as member or management), or None."""
        account = self._accounts_by_id.get(account_id)
        return None if account is None else self._organizations_by_id[account.organization_id]

    def organization_accounts(self, organization: Organization) -> list[Account]:
        """Every account of ``organization``: the management account first, then its members
        in the order they joined (the order ListAccounts pages them in)."""
        return [
            organization.management,
            *(self._accounts_by_id[i] for i in organization.member_ids),
        ]

    def ou_accounts(self, ou_id: str) -> list[Account]:
        """Member accounts in ``ou_id`` (of any organization) and every OU below it."""
        ous = [ou for organization in self.organizations for ou in organization.ous]
        wanted = {ou_id}
        changed = True
        while changed:
            changed = False
            for ou in ous:
                if ou.parent_id in wanted and ou.id not in wanted:
                    wanted.add(ou.id)
                    changed = True
        return [a for a in self.accounts if a.ou_id in wanted]

    # -- regions ------------------------------------------------------------------------------

    def opted_in_regions(self, account_id: str) -> frozenset[str]:
        """Opt-in regions the account has enabled: drawn per account, plus every region where it
        holds gateways (an account cannot use a region it has not enabled)."""
        rng = _rng(self.spec.seed, "opt-in", account_id)
        chosen = {r for r in OPT_IN_REGIONS if rng.random() < self.spec.opt_in_fraction}
        chosen.update(
            r for r in self.spec.regions if r in OPT_IN_REGIONS and (account_id, r) in self.pairs
        )
        return frozenset(chosen)

    def enabled_regions(self, account_id: str) -> tuple[str, ...]:
        """The regions ``account_id`` can use (EC2 DescribeRegions without ``AllRegions``)."""
        opted_in = self.opted_in_regions(account_id)
        return tuple(r for r in STORAGE_GATEWAY_REGIONS if r in opted_in or r not in OPT_IN_REGIONS)

    # -- shape --------------------------------------------------------------------------------

    def _make_pairs(self) -> dict[tuple[str, str], int]:
        spec = self.spec
        pairs: dict[tuple[str, str], int] = {}
        for account in self.accounts:
            rng = _rng(spec.seed, "pairs", account.id)
            if rng.random() >= spec.populated_fraction:
                continue
            # Skewed: most populated accounts use one or two regions, a few use many.
            n_regions = min(len(spec.regions), int(rng.paretovariate(1.6)))
            for region in rng.sample(spec.regions, n_regions):
                # Heavy tail: usually a handful of gateways, sometimes hundreds.
                count = min(spec.max_gateways_per_pair, int(rng.paretovariate(1.1)))
                pairs[(account.id, region)] = max(1, count)
        return pairs

    def gateway_count(self, account_id: str, region: str) -> int:
        return self.pairs.get((account_id, region), 0)

    def gateways(self, account_id: str, region: str) -> tuple[Gateway, ...]:
        """The gateways of a pair, in generation order (the emulator pages them sorted by ARN)."""
        count = self.pairs.get((account_id, region), 0)
        if not count:
            return ()
        return self._gateways(account_id, region, count, self.generation)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the fleet lives as long as its cache
    def _gateways(
        self, account_id: str, region: str, count: int, generation: int
    ) -> tuple[Gateway, ...]:
        made = (self._make_gateway(account_id, region, i) for i in range(count))
        return tuple(self._changed(g) for g in made if g.arn not in self._removed)

    # -- change over time: a second scan of the same fleet sees what changed in between ------

    def advance(self, seconds: float) -> None:
        """Time passes: the epoch moves ``seconds`` on and every volume takes a new recovery
        point as old as its last one was (ages unchanged: a healthy fleet), except pinned ones."""
        self.spec = replace(self.spec, epoch=self.spec.epoch + dt.timedelta(seconds=seconds))
        self.generation += 1

    def pin_recovery_point(self, volume_arn: str, when: dt.datetime) -> None:
        """The volume's recovery point is ``when`` however time passes: its current time for a
        stuck snapshot pipeline, a recent one for a volume that caught up."""
        self._pinned[volume_arn] = when
        self.generation += 1

    def remove_gateway(self, gateway_arn: str) -> None:
        """The gateway is deleted: ListGateways no longer lists it."""
        self._removed.add(gateway_arn)
        self.generation += 1

    def disconnect_gateway(self, gateway_arn: str) -> None:
        """The gateway goes offline: GatewayNotConnected from now on."""
        self._disconnected.add(gateway_arn)
        self.generation += 1

    def add_volume(self, gateway_arn: str) -> None:
        """A new cached volume on the gateway (drawn like the others, from the seed)."""
        self._added[gateway_arn] += 1
        self.generation += 1

    def _changed(self, gateway: Gateway) -> Gateway:
        if not (self.generation and gateway.type in ("CACHED", "STORED")):
            return gateway
        added = tuple(
            self._make_volume(_rng(self.spec.seed, "added", gateway.arn, n), gateway.arn)
            for n in range(self._added[gateway.arn])
        )
        volumes = tuple(
            replace(v, recovery_point_time=self._pinned[v.arn]) if v.arn in self._pinned else v
            for v in gateway.volumes + added
        )
        return replace(
            gateway,
            connected=gateway.connected and gateway.arn not in self._disconnected,
            volumes=volumes,
        )

    def _make_gateway(self, account_id: str, region: str, index: int) -> Gateway:
        spec = self.spec
        rng = _rng(spec.seed, "gateway", account_id, region, index)
        gateway_id = "sgw-" + _hex(rng, 8)
        arn = f"arn:aws:storagegateway:{region}:{account_id}:gateway/{gateway_id}"
        gtype = rng.choices([t for t, _ in GATEWAY_TYPES], [w for _, w in GATEWAY_TYPES])[0]
        disabled = rng.random() < 0.03
        connected = not disabled and rng.random() >= spec.offline_fraction
        host = rng.choice(HOST_ENVIRONMENTS)
        volumes: tuple[Volume, ...] = ()
        if gtype in ("CACHED", "STORED"):
            n_volumes = rng.randint(0, spec.max_volumes_per_gateway)
            volumes = tuple(self._make_volume(rng, arn) for _ in range(n_volumes))
        return Gateway(
            account_id=account_id,
            region=region,
            id=gateway_id,
            arn=arn,
            name=f"{region}-gw-{index:04d}",
            type=gtype,
            operational_state="DISABLED" if disabled else "ACTIVE",
            host_environment=host,
            ec2_instance_id=("i-" + _hex(rng, 17).lower()) if host == "EC2" else None,
            software_version=f"2.{rng.randint(0, 9)}.{rng.randint(0, 99)}",
            connected=connected,
            volumes=volumes,
        )

    def _make_volume(self, rng: random.Random, gateway_arn: str) -> Volume:
        volume_id = "vol-" + _hex(rng, 8)
        if rng.random() < self.spec.stale_fraction:
            age = rng.uniform(26 * 3600, 45 * 86400)  # stale: more than a day old
        else:
            age = rng.uniform(5 * 60, 6 * 3600)  # fresh: minutes to hours
        age = round(age, 3)
        size = rng.choice(_VOLUME_SIZES)
        usage = None if rng.random() < 0.1 else int(size * rng.uniform(0.0, 1.0))
        return Volume(
            arn=f"{gateway_arn}/volume/{volume_id}",
            id=volume_id,
            recovery_point_time=self.spec.epoch - dt.timedelta(seconds=age),
            size_bytes=size,
            usage_bytes=usage,
            size_as_string=rng.random() < 0.15,
        )

    def gateway_by_arn(self, arn: str) -> Gateway | None:
        """The gateway with this ARN, whatever its account or region (the server checks those)."""
        try:
            _, _, _, region, account_id, rest = arn.split(":", 5)
        except ValueError:
            return None
        if not rest.startswith("gateway/"):
            return None
        gateway_id = rest[len("gateway/") :].split("/", 1)[0]
        for gateway in self.gateways(account_id, region):
            if gateway.id == gateway_id:
                return gateway
        return None

    # -- truth --------------------------------------------------------------------------------

    def iter_gateways(self, regions: tuple[str, ...] | None = None) -> Iterator[Gateway]:
        for (account_id, region), _count in sorted(self.pairs.items()):
            if regions is not None and region not in regions:
                continue
            yield from self.gateways(account_id, region)

    def ground_truth(
        self,
        accounts: list[str] | None = None,
        regions: tuple[str, ...] | None = None,
        include_inactive: bool = False,
        organizations: Collection[str] | None = None,
    ) -> GroundTruth:
        """What a correct scan of ``accounts`` (default: all) in ``regions`` must produce.

        ``organizations`` (``o-…`` ids, default: all) narrows it to the accounts of those
        organizations: what a run must produce when the others failed. A suspended account
        cannot be scanned: it is skipped unless ``include_inactive``, and then its role cannot be
        assumed, so it yields no gateway either way. Every record names its organization.
        """
        chosen = [o for o in self.organizations if organizations is None or o.id in organizations]
        in_scope = {a.id for o in chosen for a in self.organization_accounts(o)}
        wanted = in_scope if accounts is None else in_scope & set(accounts)
        members = [a for a in self.accounts if a.id in wanted]
        skipped = tuple(sorted(a.id for a in members if not a.active))
        reached = {
            o.id: tuple(
                a.id
                for a in self.organization_accounts(o)
                if a.id in wanted and (a.active or include_inactive)
            )
            for o in chosen
        }
        rps: list[ExpectedRecoveryPoint] = []
        gws: list[ExpectedGateway] = []
        errors: list[tuple[str, str, str, str]] = []
        for gw in self.iter_gateways(regions):
            account = self._accounts_by_id[gw.account_id]
            if gw.account_id not in wanted or not account.active:
                continue
            organization_id = account.organization_id
            if not gw.is_cached:
                gws.append(
                    ExpectedGateway(
                        gw.account_id,
                        gw.region,
                        gw.arn,
                        gw.type,
                        "not_cached",
                        None,
                        None,
                        organization_id,
                    )
                )
                continue
            if not gw.connected:
                gws.append(
                    ExpectedGateway(
                        gw.account_id,
                        gw.region,
                        gw.arn,
                        gw.type,
                        "error",
                        None,
                        # A gateway record names Storage Gateway's own code when there is one.
                        "GatewayNotConnected",
                        organization_id,
                    )
                )
                errors.append((gw.account_id, gw.region, gw.arn, "GatewayNotConnected"))
                continue
            gws.append(
                ExpectedGateway(
                    gw.account_id,
                    gw.region,
                    gw.arn,
                    gw.type,
                    "scanned",
                    len(gw.volumes),
                    None,
                    organization_id,
                )
            )
            for vol in gw.volumes:
                rps.append(
                    ExpectedRecoveryPoint(
                        account_id=gw.account_id,
                        region=gw.region,
                        gateway_arn=gw.arn,
                        volume_arn=vol.arn,
                        recovery_point_time=vol.recovery_point_time,
                        volume_size_bytes=vol.size_bytes,
                        volume_usage_bytes=vol.usage_bytes,
                        age_seconds=(self.spec.epoch - vol.recovery_point_time).total_seconds(),
                        organization_id=organization_id,
                    )
                )
        return GroundTruth(tuple(rps), tuple(gws), tuple(errors), skipped, reached)

    def scanned_accounts(self, organizations: Collection[str] | None = None) -> list[str]:
        """Accounts a fault-free scan of whole organizations reaches: each management account
        and every active member (default: of every organization)."""
        return [
            a.id
            for o in self.organizations
            if organizations is None or o.id in organizations
            for a in self.organization_accounts(o)
            if a.active
        ]

    def minimum_calls(
        self,
        accounts: list[str] | None = None,
        regions: tuple[str, ...] | None = None,
        page_size: int = 100,
    ) -> dict[str, int]:
        """The fewest Storage Gateway calls a fault-free scan of accounts x regions can make.

        One ListGateways page per 100 gateways (one for an empty pair) and one
        ListVolumeRecoveryPoints per cached gateway. ``accounts`` defaults to
        :meth:`scanned_accounts` (every organization); ``regions`` to each account's enabled
        regions (what a scan with ``--regions enabled`` covers).
        """
        list_pages = 0
        lvrp = 0
        for account_id in self.scanned_accounts() if accounts is None else accounts:
            for region in self.enabled_regions(account_id) if regions is None else regions:
                gateways = self.gateways(account_id, region)
                list_pages += max(1, -(-len(gateways) // page_size))
                lvrp += sum(1 for g in gateways if g.is_cached)
        return {"ListGateways": list_pages, "ListVolumeRecoveryPoints": lvrp}


def _make_ous(rng: random.Random, root_id: str) -> tuple[OrganizationalUnit, ...]:
    names = ("Production", "Staging", "Sandbox")
    ous = [
        OrganizationalUnit(f"ou-{root_id[2:]}-{_hex(rng, 8).lower()}", name, root_id)
        for name in names
    ]
    # A nested OU, so that `--ou` has to recurse to find its accounts.
    ous.append(
        OrganizationalUnit(f"ou-{root_id[2:]}-{_hex(rng, 8).lower()}", "Production-EU", ous[0].id)
    )
    return tuple(ous)


_HEX_DIGITS = "0123456789ABCDEF"


def _hex(rng: random.Random, n: int) -> str:
    """``n`` digits drawn exactly as ``rng.choice(_HEX_DIGITS)`` draws each (5 random bits, drawn
    again while they name no digit), without its two Python calls per digit: ids are most of
    the cost of deriving a gateway, and the fleet must stay the one every seed always gave."""
    bits = rng.getrandbits
    digits: list[str] = []
    while len(digits) < n:
        value = bits(5)
        if value < 16:
            digits.append(_HEX_DIGITS[value])
    return "".join(digits)
