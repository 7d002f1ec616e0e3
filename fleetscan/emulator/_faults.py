"""Fault injection for the emulator: Storage Gateway, and the STS, Organizations and EC2 calls
it serves from the fleet model.

A scanner is only as good as its behaviour on a bad day, so the emulator can misbehave the ways
AWS does: internal errors (Storage Gateway's InternalServerError is sent with HTTP 400 or 500: the
API pages and the older user guide disagree, and both happen), throttling from a token bucket per
(account, region, service), latency, connection resets, responses slower than any sane client
timeout, malformed bodies, access denied, and Organizations' documented empty page that still
carries a ``NextToken``. Each fault reaches the client in the form its service uses
(``ThrottlingException``, ``Throttling``, ``TooManyRequestsException``, ``RequestLimitExceeded``,
...).

Rules are scoped to a service, an organization, an account, a region, an operation, or any
combination, and can be changed while the server runs (from Python, over HTTP, from the CLI). A
call's account is the account it is made *as* (the caller's credentials): for ``AssumeRole``, the
account assuming the role, which is the account AWS counts the call against. A rule that names no
service and no operation applies to Storage Gateway only, as rules always did; ``service=None``
makes it apply to every service, and naming an operation implies its service.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

#: The operations the emulator answers, by service (the SigV4 credential scope's name).
SERVICE_OPERATIONS: dict[str, tuple[str, ...]] = {
    "storagegateway": (
        "ListGateways",
        "ListVolumeRecoveryPoints",
        "DescribeGatewayInformation",
        "ListVolumes",
    ),
    "sts": ("AssumeRole", "GetCallerIdentity"),
    "organizations": (
        "DescribeOrganization",
        "ListAccounts",
        "ListRoots",
        "ListOrganizationalUnitsForParent",
        "ListAccountsForParent",
        "ListChildren",
    ),
    "ec2": ("DescribeRegions",),
}
SERVICES: tuple[str, ...] = tuple(SERVICE_OPERATIONS)
#: Every operation the emulator answers (names are unique across its services).
OPERATIONS: tuple[str, ...] = tuple(op for ops in SERVICE_OPERATIONS.values() for op in ops)
#: The service of each operation.
OPERATION_SERVICE: dict[str, str] = {
    op: service for service, ops in SERVICE_OPERATIONS.items() for op in ops
}
#: The service a rule applies to when it names neither a service nor an operation.
DEFAULT_SERVICE = "storagegateway"

#: Field groups: a rule overrides a broader rule group by group, never field by field, so a
#: specific rule that sets an error rate also brings its own status code.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "internal_error": ("internal_error_rate", "internal_error_status"),
    "throttle": ("throttle_rate", "throttle_burst"),
    "latency": ("latency_ms", "jitter_ms"),
    "reset": ("reset_rate",),
    "slow": ("slow_rate", "slow_seconds"),
    "malformed": ("malformed_rate",),
    "access_denied": ("access_denied",),
    "empty_page": ("empty_page_rate",),
}

#: The fields that switch a group on; the others in the group (status, burst, slow_seconds) only
#: qualify it, so a rule that sets only ``internal_error_status`` does not override anything.
_PRIMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "internal_error": ("internal_error_rate",),
    "throttle": ("throttle_rate",),
    "latency": ("latency_ms", "jitter_ms"),
    "reset": ("reset_rate",),
    "slow": ("slow_rate",),
    "malformed": ("malformed_rate",),
    "access_denied": ("access_denied",),
    "empty_page": ("empty_page_rate",),
}

_SCOPE_FIELDS = ("service", "organization_id", "account_id", "region", "operation")
_RATE_FIELDS = (
    "reset_rate",
    "slow_rate",
    "internal_error_rate",
    "malformed_rate",
    "empty_page_rate",
)


@dataclass(frozen=True)
class FaultRule:
    """One fault rule. Scope fields left as None match any call (``service`` excepted: it
    defaults to Storage Gateway, and to the operation's service when an operation is named).

    The five response faults (reset, slow, internal error, malformed, empty page) are drawn from
    one random number per call, so each happens at its own configured rate as long as their sum
    is at most 1.
    """

    account_id: str | None = None
    region: str | None = None
    operation: str | None = None
    #: ``storagegateway``, ``sts``, ``organizations``, ``ec2``, or None for every service.
    service: str | None = DEFAULT_SERVICE
    #: Calls made as any account of this organization (``o-…``), its management account included.
    organization_id: str | None = None
    #: Probability of an internal error (Storage Gateway's InternalServerError, Organizations'
    #: ServiceException, STS's InternalFailure, EC2's InternalError).
    internal_error_rate: float = 0.0
    #: Storage Gateway's InternalServerError status: 400 (the API pages) or 500 (the older user
    #: guide); botocore retries only the 500. The other services always answer 500.
    internal_error_status: int = 500
    #: Token bucket per (account, region, service), in requests per second; None disables
    #: throttling, and 0 throttles every matching call ("throttled for good").
    throttle_rate: float | None = None
    throttle_burst: int = 10
    #: Added delay: ``latency_ms + uniform(0, jitter_ms)``.
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    #: Probability of aborting the TCP connection (RST) without a response.
    reset_rate: float = 0.0
    #: Probability of answering only after ``slow_seconds`` (beyond a client's read timeout).
    slow_rate: float = 0.0
    slow_seconds: float = 60.0
    #: Probability of an HTTP 200 whose body is truncated, hence not JSON.
    malformed_rate: float = 0.0
    #: Every matching call is refused as the service refuses a caller without the permission
    #: (AccessDeniedException, AccessDenied, UnauthorizedOperation).
    access_denied: bool = False
    #: Probability that an Organizations List* call answers an empty page that still carries a
    #: NextToken (the next call continues where this one was): AWS documents that a page may be
    #: empty before the last. Other operations ignore it.
    empty_page_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault rule {name}: expected a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rule {name}: must be between 0 and 1, got {value}")
        total = sum(getattr(self, name) for name in _RATE_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault rule: {' + '.join(_RATE_FIELDS)} must not exceed 1, got {total:g}"
            )
        if self.internal_error_status not in (400, 500):
            raise ValueError(
                f"fault rule internal_error_status: must be 400 or 500, "
                f"got {self.internal_error_status!r}"
            )
        if self.throttle_rate is not None and not (
            isinstance(self.throttle_rate, int | float)
            and not isinstance(self.throttle_rate, bool)
            and math.isfinite(self.throttle_rate)
            and self.throttle_rate >= 0
        ):
            raise ValueError(
                "fault rule throttle_rate: must be a number of requests per second >= 0 "
                f"(0: every call throttled) or null, got {self.throttle_rate!r}"
            )
        if (
            isinstance(self.throttle_burst, bool)
            or not isinstance(self.throttle_burst, int)
            or self.throttle_burst < 1
        ):
            raise ValueError(
                f"fault rule throttle_burst: must be an integer >= 1, got {self.throttle_burst!r}"
            )
        for name in ("latency_ms", "jitter_ms", "slow_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault rule {name}: expected a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"fault rule {name}: must be >= 0, got {value}")
        if not isinstance(self.access_denied, bool):
            raise ValueError(
                f"fault rule access_denied: expected true or false, got {self.access_denied!r}"
            )
        if self.service is not None and self.service not in SERVICES:
            raise ValueError(
                f"fault rule service: unknown service {self.service!r} "
                f"(one of {', '.join(SERVICES)}, or null for every service)"
            )
        if self.operation is not None:
            if self.operation not in OPERATIONS:
                raise ValueError(
                    f"fault rule operation: unknown operation {self.operation!r} "
                    f"(one of {', '.join(OPERATIONS)})"
                )
            service = OPERATION_SERVICE[self.operation]
            if self.service not in (None, DEFAULT_SERVICE, service):
                raise ValueError(
                    f"fault rule: operation {self.operation} belongs to {service}, "
                    f"not {self.service}"
                )
            object.__setattr__(self, "service", service)  # naming an operation names its service
        if self.organization_id is not None and not (
            isinstance(self.organization_id, str)
            and self.organization_id.startswith("o-")
            and len(self.organization_id) > 2
        ):
            raise ValueError(
                f"fault rule organization_id: expected an o-… id, got {self.organization_id!r}"
            )
        for name in ("account_id", "region"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"fault rule {name}: expected a non-empty string, got {value!r}")
        if self.account_id is not None and not (
            len(self.account_id) == 12 and self.account_id.isdigit()
        ):
            raise ValueError(f"fault rule account_id: expected 12 digits, got {self.account_id!r}")

    @property
    def specificity(self) -> int:
        """How many scope fields are set: the more, the narrower the rule."""
        return sum(getattr(self, name) is not None for name in _SCOPE_FIELDS)

    @property
    def is_noop(self) -> bool:
        """True when the rule injects nothing, whatever its scope."""
        return not any(self.sets(group) for group in FIELD_GROUPS)

    def sets(self, group: str) -> bool:
        """Whether this rule switches ``group`` on (and so overrides broader rules for it).

        A rule can only add faults to a scope, not exempt it from a broader rule: a group left
        off is taken from the next most specific rule that switches it on.
        """
        return any(getattr(self, name) != _DEFAULT_VALUES[name] for name in _PRIMARY_FIELDS[group])

    def matches(
        self, account_id: str, region: str, operation: str, organization_id: str | None = None
    ) -> bool:
        """Whether a call made as ``account_id`` (of ``organization_id``) falls in the scope."""
        return (
            (self.account_id is None or self.account_id == account_id)
            and (self.region is None or self.region == region)
            and (self.operation is None or self.operation == operation)
            and (self.service is None or self.service == OPERATION_SERVICE.get(operation))
            and (self.organization_id is None or self.organization_id == organization_id)
        )

    def to_dict(self) -> dict[str, Any]:
        """The rule's non-default fields: short, and stable as defaults evolve."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != _DEFAULT_VALUES[f.name]
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        if not isinstance(data, Mapping):
            raise ValueError(f"fault rule: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            raise ValueError(
                f"fault rule: unknown field(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(_FIELD_NAMES))})"
            )
        return cls(**dict(data))


_DEFAULT_VALUES: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(FaultRule)}
_FIELD_NAMES = frozenset(_DEFAULT_VALUES)

#: What a call gets when no rule injects anything.
NO_FAULT = FaultRule()


class Faults:
    """An ordered set of rules. For a call, the most specific matching rule wins per field group.

    Specificity is the number of scope fields a rule sets (account, region, operation); between
    equally specific rules the later one wins, so appending a rule overrides earlier ones.
    Instances are immutable: to change faults at runtime, assign a new :class:`Faults`.
    """

    _CACHE_LIMIT = 65_536

    def __init__(self, rules: Sequence[FaultRule] = ()) -> None:
        for rule in rules:
            if not isinstance(rule, FaultRule):
                raise TypeError(f"Faults takes FaultRule objects, got {type(rule).__name__}")
        self._rules: tuple[FaultRule, ...] = tuple(rules)
        self._active = tuple(rule for rule in self._rules if not rule.is_noop)
        #: Per call key, the effective rule; and per set of matching rules (their positions in
        #: ``_active``), the rule they merge into. A scan makes few calls per (account, region,
        #: operation), so the first cache mostly misses; the second makes the miss cheap: the
        #: merge (and a FaultRule's validation) runs once per distinct set, not once per key.
        self._cache: dict[tuple[str, str, str, str | None], FaultRule] = {}
        self._merged: dict[tuple[int, ...], FaultRule] = {}

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        return self._rules

    def __bool__(self) -> bool:
        return bool(self._active)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Faults) and other._rules == self._rules

    def __hash__(self) -> int:
        return hash(self._rules)

    def __repr__(self) -> str:
        return f"Faults({list(self._rules)!r})"

    def for_call(
        self, account_id: str, region: str, operation: str, organization_id: str | None = None
    ) -> FaultRule:
        """The effective rule for one call made as ``account_id``, a member of
        ``organization_id`` (None: of no organization). Returns :data:`NO_FAULT` itself when
        nothing applies, so the server's fast path is an identity check.

        The rule says what to inject, not whom: it carries no scope (every scope field None),
        and calls matched by the same rules get the same rule object."""
        if not self._active:
            return NO_FAULT
        key = (account_id, region, operation, organization_id)
        rule = self._cache.get(key)
        if rule is not None:
            return rule
        matching = tuple(
            index
            for index, candidate in enumerate(self._active)
            if candidate.matches(account_id, region, operation, organization_id)
        )
        rule = self._merged.get(matching)
        if rule is None:
            rule = self._merge(matching)
            if len(self._merged) >= self._CACHE_LIMIT:
                self._merged.clear()
            self._merged[matching] = rule
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = rule
        return rule

    def _merge(self, matching: tuple[int, ...]) -> FaultRule:
        """One rule from the rules at these positions of ``_active``: per field group, the most
        specific rule that sets it (the later one between equals)."""
        ranked = sorted(matching, key=lambda index: (self._active[index].specificity, index))
        values: dict[str, Any] = {}
        for group, names in FIELD_GROUPS.items():
            for index in reversed(ranked):
                rule = self._active[index]
                if rule.sets(group):
                    values.update({name: getattr(rule, name) for name in names})
                    break
        if not values:
            return NO_FAULT
        return FaultRule(service=None, **values)

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [rule.to_dict() for rule in self._rules]}

    def to_json(self) -> str:
        """``{"rules": [...]}`` with each rule's non-default fields; :meth:`from_json` reads it."""
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any] | Sequence[Any]) -> Faults:
        """Faults from JSON text or already-parsed JSON: ``{"rules": [...]}`` or a bare list.

        Raises ValueError naming what is wrong, so the CLI and the HTTP admin endpoint can
        report it as a usage error.
        """
        parsed: Any = data
        if isinstance(data, str | bytes | bytearray):
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"faults: not valid JSON ({exc})") from None
        if isinstance(parsed, Mapping):
            unknown = sorted(set(parsed) - {"rules"})
            if unknown:
                raise ValueError(
                    f"faults: unknown key(s) {', '.join(map(repr, unknown))} (expected 'rules')"
                )
            parsed = parsed.get("rules", [])
        if isinstance(parsed, str | bytes) or not isinstance(parsed, Sequence):
            raise ValueError('faults: expected {"rules": [...]} or a list of rules')
        rules = []
        for index, item in enumerate(parsed):
            try:
                rules.append(FaultRule.from_dict(item))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"faults: rule {index}: {exc}") from None
        return cls(rules)


class TokenBucket:
    """A classic token bucket: ``burst`` tokens, refilled at ``rate`` per second; a rate of 0
    admits nothing at all (a throttle "for good").

    Not thread-safe; the server uses its buckets from its event loop only.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def reconfigure(self, rate: float, burst: int) -> None:
        if rate != self.rate or burst != self.burst:
            self._refill()
            self.rate = rate
            self.burst = burst
            self._tokens = min(self._tokens, float(burst))

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self) -> bool:
        """Take one token; False means the call is throttled."""
        if self.rate == 0:
            return False
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
