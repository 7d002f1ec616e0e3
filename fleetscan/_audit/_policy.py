"""Recovery-point objectives: one ``--max-age`` for everything, or a TOML policy with overrides.

A policy is a default objective plus rules. A rule selects volumes by organization, OU, account,
region and/or gateway name pattern (every selector it gives must match) and sets their objective.
When several rules match a volume, the most specific one applies; "specific" follows the
containment of AWS itself (a gateway is in an account, an account in an OU, an OU in an
organization), so an owner's exception always beats a blanket setting:

1. a rule with ``gateway_name`` beats any rule without one;
2. then a rule with ``account`` beats any rule without one;
3. then the rule whose ``ou`` is deepest in the account's OU chain (a nested OU beats its parent,
   any OU beats no OU);
4. then a rule with ``organization`` (an ``o-…`` id, or the name of the scan's
   ``[[organizations]]`` entry) beats one without;
5. then a rule with ``region`` beats one without.

Two matching rules equal on all five: the stricter (smaller) objective applies, so a tie never
loosens compliance; equal objectives too: the rule written first. Everything is checked when the
file is loaded, and every problem names the key, so a bad policy never produces a report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError

#: The rule name findings carry when no policy rule matched.
DEFAULT_RULE = "default"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[smhd])", re.IGNORECASE)
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_OU_ID = re.compile(r"(?:ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32})")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-[0-9]+")
#: An organization's id, or the name of a scan's ``[[organizations]]`` entry.
_ORGANIZATION = re.compile(r"o-[a-z0-9]{10,32}|[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,63}")
_RULE_KEYS = ("name", "max_age", "organization", "ou", "account", "region", "gateway_name")
_SELECTORS = ("organization", "ou", "account", "region", "gateway_name")
_TOP_KEYS = ("max_age", "rules")


def parse_duration(text: str) -> int:
    """Seconds in ``text`` (``90s``, ``30m``, ``4h``, ``7d``); ValueError says what is wrong.

    A unit is required: a bare ``24`` could mean hours to one reader and seconds to another.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: a whole number and a unit (90s, 30m, 4h, 7d)"
        )
    seconds = int(match["number"]) * _UNITS[match["unit"].lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float | None) -> str:
    """A short human form (``4h``, ``7d``, ``1d 2h``, ``90s``) for reports and the terminal."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.0f}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Rule:
    """An override: volumes matching every given selector get ``objective_seconds``."""

    name: str
    objective_seconds: int
    ous: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gateway_names: tuple[str, ...] = ()
    #: Organization ids or ``[[organizations]]`` entry names.
    organizations: tuple[str, ...] = ()
    #: Position in the file: the last tie-breaker.
    order: int = 0

    def specificity(self, ou_ids: Sequence[str]) -> tuple[int, int, int, int, int] | None:
        """How specific this rule is for an account in ``ou_ids`` (None: the OU does not match).

        Only the OU part depends on the account; the caller checks the other selectors.
        """
        depth = 0
        if self.ous:
            depths = [i + 1 for i, ou in enumerate(ou_ids) if ou in self.ous]
            if not depths:
                return None
            depth = max(depths)
        return (
            int(bool(self.gateway_names)),
            int(bool(self.accounts)),
            depth,
            int(bool(self.organizations)),
            int(bool(self.regions)),
        )

    def matches_gateway(self, gateway_name: str | None) -> bool:
        if not self.gateway_names:
            return True
        if gateway_name is None:
            return False
        return any(fnmatch.fnmatchcase(gateway_name, p) for p in self.gateway_names)

    def describe(self) -> str:
        """The selectors, as a reader of the report wants to see them."""
        parts = [
            f"{label} {' or '.join(values)}"
            for label, values in (
                ("organization", self.organizations),
                ("OU", self.ous),
                ("account", self.accounts),
                ("region", self.regions),
                ("gateway name", self.gateway_names),
            )
            if values
        ]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Objective:
    seconds: int
    rule: str


@dataclass(frozen=True)
class Policy:
    """The default objective and the override rules, in file order."""

    default_seconds: int
    rules: tuple[Rule, ...] = ()
    #: Where the policy came from, for the report's evidence: ``--max-age 24h`` or a file.
    source: str = ""
    #: sha256 of the policy file, so an auditor can tell which version judged the data.
    sha256: str | None = None

    @classmethod
    def single(cls, max_age: str) -> Policy:
        """``--max-age``: one objective for every volume."""
        try:
            seconds = parse_duration(max_age)
        except ValueError as exc:
            raise ConfigError("--max-age", str(exc)) from None
        return cls(default_seconds=seconds, source=f"--max-age {max_age.strip()}")

    @property
    def uses_ous(self) -> bool:
        return any(rule.ous for rule in self.rules)

    @property
    def uses_organizations(self) -> bool:
        return any(rule.organizations for rule in self.rules)

    def objective_for(
        self,
        *,
        account_id: str | None,
        ou_ids: Sequence[str],
        region: str | None,
        gateway_name: str | None,
        organization: Sequence[str] = (),
    ) -> Objective:
        """The objective of a volume (or of an unknown gateway or unit) and the rule that set it.

        ``organization`` is what names the account's organization: its id and the name of the
        ``[[organizations]]`` entry that reached it, as the run's manifest says (none for a
        static list or an older run, which no organization rule matches). A finding without a
        gateway (a unit that failed) is matched by no gateway_name rule; one without a region
        (an account whose role could not be assumed) by no region rule.
        """
        best: tuple[tuple[int, int, int, int, int], int, int] | None = None
        chosen: Rule | None = None
        for rule in self.rules:
            if rule.accounts and account_id not in rule.accounts:
                continue
            if rule.organizations and not set(rule.organizations) & set(organization):
                continue
            if rule.regions and region not in rule.regions:
                continue
            if not rule.matches_gateway(gateway_name):
                continue
            specificity = rule.specificity(ou_ids)
            if specificity is None:
                continue
            # Higher specificity first; then the smaller objective; then the earlier rule.
            key = (specificity, -rule.objective_seconds, -rule.order)
            if best is None or key > best:
                best, chosen = key, rule
        if chosen is None:
            return Objective(self.default_seconds, DEFAULT_RULE)
        return Objective(chosen.objective_seconds, chosen.name)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check a policy file; a problem raises ConfigError naming the file and the key."""
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ConfigError("--policy", f"cannot read {source}: {exc.strerror}") from None
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("--policy", f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--policy", f"{source}: invalid TOML: {exc}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key}", problem)

    for key in document:
        if key not in _TOP_KEYS:
            raise fail(key, f"unknown key; expected {' or '.join(_TOP_KEYS)}")
    if "max_age" not in document:
        raise fail("max_age", "missing: the objective of every volume no rule matches (e.g. '24h')")
    default_seconds = _duration(document["max_age"], "max_age", fail)
    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise fail("rules", "must be an array of tables: [[rules]]")
    rules: list[Rule] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _rule(raw, index, fail)
        if rule.name == DEFAULT_RULE:
            raise fail(f"rules[{index}].name", f"{DEFAULT_RULE!r} names volumes no rule selects")
        if rule.name in names:
            raise fail(
                f"rules[{index}].name", f"{rule.name!r} is used twice (names must be unique)"
            )
        names.add(rule.name)
        rules.append(rule)
    return Policy(
        default_seconds=default_seconds,
        rules=tuple(rules),
        source=f"--policy {source}",
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _duration(value: Any, key: str, fail: Any) -> int:
    if not isinstance(value, str):
        raise fail(key, f"must be a string with a unit, like '24h' (got {value!r})")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(key, str(exc)) from None


def _rule(raw: dict[str, Any], index: int, fail: Any) -> Rule:
    where = f"rules[{index}]"
    for key in raw:
        if key not in _RULE_KEYS:
            raise fail(f"{where}.{key}", f"unknown key; a rule takes {', '.join(_RULE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
        raise fail(
            f"{where}.name",
            "missing or invalid: 1-64 letters, digits, spaces or ._:/- (it is named on findings)",
        )
    if "max_age" not in raw:
        raise fail(f"{where}.max_age", "missing: the objective this rule sets (e.g. '4h')")
    seconds = _duration(raw["max_age"], f"{where}.max_age", fail)
    checks = {
        "organization": (
            _ORGANIZATION,
            "an organization id (o-xxxxxxxxxx) or the name of a scan's [[organizations]] entry",
        ),
        "ou": (_OU_ID, "an OU id (ou-xxxx-xxxxxxxx) or the root id (r-xxxx)"),
        "account": (_ACCOUNT_ID, "a 12-digit account id"),
        "region": (_REGION, "a region name like eu-west-1"),
        "gateway_name": (None, "a gateway name pattern (fnmatch: *, ?, [abc])"),
    }
    selected: dict[str, tuple[str, ...]] = {}
    for key, (pattern, what) in checks.items():
        if key not in raw:
            continue
        value = raw[key]
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise fail(f"{where}.{key}", f"must be {what}, or a non-empty list of them")
        for item in values:
            if (
                not isinstance(item, str)
                or not item
                or (pattern is not None and not pattern.fullmatch(item))
            ):
                raise fail(f"{where}.{key}", f"{item!r} is not {what}")
        selected[key] = tuple(values)
    if not selected:
        raise fail(where, f"selects nothing: give at least one of {', '.join(_SELECTORS)}")
    return Rule(
        name=name,
        objective_seconds=seconds,
        ous=selected.get("ou", ()),
        accounts=selected.get("account", ()),
        regions=selected.get("region", ()),
        gateway_names=selected.get("gateway_name", ()),
        organizations=selected.get("organization", ()),
        order=index,
    )
