"""A deterministic Storage Gateway fleet, generated from a seed.

The fleet is the single source of truth for the emulator *and* for the tests: the server answers
from it, and :meth:`Fleet.ground_truth` states exactly which records a correct scan must produce.

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
from collections.abc import Iterator
from dataclasses import dataclass, field

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

#: moto's default account: unknown access keys map to it, so it is the management account.
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
    id: str
    name: str
    email: str
    ou_id: str
    status: str  # ACTIVE | SUSPENDED

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


@dataclass(frozen=True)
class OrganizationalUnit:
    id: str
    name: str
    parent_id: str


@dataclass(frozen=True)
class FleetSpec:
    """Everything a fleet is generated from. Equal specs give equal fleets, in any process."""

    seed: int = 1
    accounts: int = 12
    regions: tuple[str, ...] = DEFAULT_REGIONS
    #: Fraction of member accounts that hold any gateway at all.
    populated_fraction: float = 0.6
    #: Scales the heavy tail of gateways per (account, region).
    max_gateways_per_pair: int = 250
    max_volumes_per_gateway: int = 24
    #: Fraction of volumes whose recovery point is older than a day.
    stale_fraction: float = 0.08
    offline_fraction: float = 0.06
    #: The fleet's "now": recovery point times are this minus each volume's age.
    epoch: dt.datetime = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0)
    )

    def __post_init__(self) -> None:
        if self.accounts < 1:
            raise ValueError("a fleet needs at least one member account")
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


@dataclass(frozen=True)
class GroundTruth:
    """What a correct, complete scan of the fleet must produce, and nothing more."""

    recovery_points: tuple[ExpectedRecoveryPoint, ...]
    gateways: tuple[ExpectedGateway, ...]
    #: (account_id, region, gateway_arn, gateway_error_code) of each gateway that must fail.
    gateway_errors: tuple[tuple[str, str, str, str], ...]
    #: Accounts a scan must skip (suspended) unless asked to include inactive ones.
    skipped_accounts: tuple[str, ...]


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
    """A seeded organization of member accounts, and the gateways and volumes they hold."""

    def __init__(self, spec: FleetSpec | None = None) -> None:
        self.spec = spec or FleetSpec()
        self.management_account_id = MANAGEMENT_ACCOUNT_ID
        self.root_id = "r-" + _hex(_rng(self.spec.seed, "root"), 4).lower()
        self.organization_id = "o-" + _hex(_rng(self.spec.seed, "org"), 10).lower()
        self.ous = self._make_ous()
        self.accounts: tuple[Account, ...] = self._make_accounts()
        self._accounts_by_id = {a.id: a for a in self.accounts}
        #: Only populated pairs are stored: {(account_id, region): gateway count}.
        self.pairs: dict[tuple[str, str], int] = self._make_pairs()
        self._gateway_index: dict[str, tuple[str, str, int]] = {}

    # -- organization -------------------------------------------------------------------------

    def _make_ous(self) -> tuple[OrganizationalUnit, ...]:
        rng = _rng(self.spec.seed, "ous")
        names = ("Production", "Staging", "Sandbox")
        ous = [
            OrganizationalUnit(f"ou-{self.root_id[2:]}-{_hex(rng, 8).lower()}", name, self.root_id)
            for name in names
        ]
        # A nested OU, so that `--ou` has to recurse to find its accounts.
        prod = ous[0]
        ous.append(
            OrganizationalUnit(
                f"ou-{self.root_id[2:]}-{_hex(rng, 8).lower()}", "Production-EU", prod.id
            )
        )
        return tuple(ous)

    def _make_accounts(self) -> tuple[Account, ...]:
        rng = _rng(self.spec.seed, "accounts")
        seen = {MANAGEMENT_ACCOUNT_ID}
        accounts = []
        for index in range(self.spec.accounts):
            while True:
                account_id = f"{rng.randrange(10**11, 10**12):012d}"
                if account_id not in seen:
                    seen.add(account_id)
                    break
            ou = self.ous[index % len(self.ous)]
            # Exactly one suspended member (the second), when there are at least two.
            status = "SUSPENDED" if index == 1 and self.spec.accounts >= 2 else "ACTIVE"
            name = f"{ou.name.lower()}-{index:05d}"
            accounts.append(Account(account_id, name, f"aws+{name}@example.com", ou.id, status))
        return tuple(accounts)

    def account(self, account_id: str) -> Account | None:
        return self._accounts_by_id.get(account_id)

    def ou_accounts(self, ou_id: str) -> list[Account]:
        """Accounts in ``ou_id`` and every OU below it."""
        wanted = {ou_id}
        changed = True
        while changed:
            changed = False
            for ou in self.ous:
                if ou.parent_id in wanted and ou.id not in wanted:
                    wanted.add(ou.id)
                    changed = True
        return [a for a in self.accounts if a.ou_id in wanted]

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
        return self._gateways(account_id, region, count)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the fleet lives as long as its cache
    def _gateways(self, account_id: str, region: str, count: int) -> tuple[Gateway, ...]:
        return tuple(self._make_gateway(account_id, region, i) for i in range(count))

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
    ) -> GroundTruth:
        """What a correct scan of ``accounts`` (default: all) in ``regions`` must produce.

        A suspended account cannot be scanned: it is skipped unless ``include_inactive``, and
        then its role cannot be assumed, so it yields no gateway either way.
        """
        wanted = set(accounts) if accounts is not None else {a.id for a in self.accounts}
        skipped = tuple(sorted(a.id for a in self.accounts if a.id in wanted and not a.active))
        rps: list[ExpectedRecoveryPoint] = []
        gws: list[ExpectedGateway] = []
        errors: list[tuple[str, str, str, str]] = []
        for gw in self.iter_gateways(regions):
            account = self._accounts_by_id[gw.account_id]
            if gw.account_id not in wanted or not account.active:
                continue
            if not gw.is_cached:
                gws.append(
                    ExpectedGateway(
                        gw.account_id, gw.region, gw.arn, gw.type, "not_cached", None, None
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
                    )
                )
                errors.append((gw.account_id, gw.region, gw.arn, "GatewayNotConnected"))
                continue
            gws.append(
                ExpectedGateway(
                    gw.account_id, gw.region, gw.arn, gw.type, "scanned", len(gw.volumes), None
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
                    )
                )
        return GroundTruth(tuple(rps), tuple(gws), tuple(errors), skipped)

    def minimum_calls(
        self, accounts: list[str], regions: tuple[str, ...], page_size: int = 100
    ) -> dict[str, int]:
        """The fewest Storage Gateway calls a fault-free scan of accounts x regions can make.

        One ListGateways page per 100 gateways (one for an empty pair) and one
        ListVolumeRecoveryPoints per cached gateway.
        """
        list_pages = 0
        lvrp = 0
        for account_id in accounts:
            for region in regions:
                gateways = self.gateways(account_id, region)
                list_pages += max(1, -(-len(gateways) // page_size))
                lvrp += sum(1 for g in gateways if g.is_cached)
        return {"ListGateways": list_pages, "ListVolumeRecoveryPoints": lvrp}


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789ABCDEF") for _ in range(n))
