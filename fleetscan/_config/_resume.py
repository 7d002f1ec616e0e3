"""A run's configuration, as its checkpoint keeps it, and what a resume may change of it.

A resumed run must scan what it started to scan: a resume given other regions, accounts or roles
would end ``complete`` with part of the fleet never scanned, or scanned under two definitions.
So the checkpoint's header keeps the run's configuration (:func:`stored_config`); a resume starts
from it, with what the user gives on top (:func:`resumed_config`); a setting that changes *what*
is scanned or how the output is written (:data:`RUN_KEYS`) must stay the run's
(:func:`check_resume`), while how fast and how patiently it is scanned (:data:`PACE_KEYS`) may
change. Secrets are not stored: of ``external_id`` only whether one was set, so a resume that
needs it is given it again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from .._exceptions import ConfigError
from ._files import merge_values
from ._model import CONFIG_KEYS, ScanConfig
from ._organization import OrganizationConfig
from ._values import show, type_name

#: What is scanned (accounts, roles, regions) and how the output is written: fixed for a run.
RUN_KEYS: Final = (
    "org",
    "organizations",
    "ous",
    "accounts",
    "exclude_accounts",
    "include_inactive",
    "assume_role",
    "role_name",
    "role_arn_template",
    "external_id",
    "hub_role_arn",
    "role_session_name",
    "partition",
    "regions",
    "compress",
    "file_mode",
    "sse",
    "sse_kms_key_id",
    "bucket_key",
    "expected_bucket_owner",
    "checksum_algorithm",
)
#: How fast and how patiently: stored, so a resume reuses them, but a resume may set others.
PACE_KEYS: Final = (
    "role_duration_seconds",
    "concurrency",
    "rate",
    "burst",
    "max_attempts",
    "retry_budget_ratio",
    "connect_timeout",
    "read_timeout",
    "call_timeout",
    "max_object_bytes",
    "checkpoint_interval",
    "stop_grace_seconds",
)
#: Not the run's but the session's: where the run is, which one, the ambient credentials'
#: profile (a profile name is local to a machine), the account list's file (its ids are
#: part of ``accounts``), and which shard of the run this session scans.
SESSION_KEYS: Final = (
    "output",
    "run_id",
    "resume",
    "dry_run",
    "profile",
    "accounts_file",
    "shard",
)
STORED_KEYS: Final = frozenset(RUN_KEYS) | frozenset(PACE_KEYS)
assert STORED_KEYS | frozenset(SESSION_KEYS) == CONFIG_KEYS, (
    "every ScanConfig field is either the run's, its pace, or the session's"
)
assert not frozenset(RUN_KEYS) & frozenset(PACE_KEYS), "a setting is the run's or its pace"
assert not STORED_KEYS & frozenset(SESSION_KEYS), "a session's setting is not stored"
#: How a stored configuration says an external id was set (the value itself is never stored).
SECRET_SET: Final = "<set>"
#: Items of a list shown in a message before it says how many more there are.
_SHOWN_ITEMS: Final = 3


#: The secrets of an ``[[organizations]]`` entry, stored as :data:`SECRET_SET` when set.
_ENTRY_SECRETS: Final = ("external_id", "management_external_id")


def _stored_organization(entry: OrganizationConfig) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    for item in dataclasses.fields(entry):
        value = getattr(entry, item.name)
        if item.name in _ENTRY_SECRETS:
            value = None if value is None else SECRET_SET
        elif isinstance(value, tuple):
            value = list(value)
        stored[item.name] = value
    return stored


def stored_config(config: ScanConfig) -> dict[str, Any]:
    """The run's configuration as the checkpoint keeps it (JSON values, no secret)."""
    stored: dict[str, Any] = {}
    for key in sorted(STORED_KEYS):
        value = getattr(config, key)
        if key == "external_id":
            value = None if value is None else SECRET_SET
        elif key == "organizations":
            value = [_stored_organization(entry) for entry in value]
        elif isinstance(value, tuple):
            value = list(value)
        stored[key] = value
    return stored


def config_values(stored: object) -> dict[str, Any]:
    """ScanConfig keyword arguments from a stored configuration (``external_id`` left out).

    Types and values are checked by ScanConfig itself; here only the shape: a table of known
    settings. Raises :class:`ConfigError` naming the setting (``config.KEY``).
    """
    if not isinstance(stored, dict):
        raise ConfigError("config", f"must be a table, not {type_name(stored)}")
    values: dict[str, Any] = {}
    for key, value in stored.items():
        if key not in STORED_KEYS:
            raise ConfigError(f"config.{show(key)}", "is not a setting a run keeps")
        if key == "external_id":
            if value is not None and value != SECRET_SET:
                raise ConfigError("config.external_id", f"must be {SECRET_SET!r} or null")
            continue
        if key == "organizations" and isinstance(value, list):
            value = [
                _entry_values(entry, f"config.organizations[{i}]") for i, entry in enumerate(value)
            ]
        values[key] = tuple(value) if isinstance(value, list) else value
    return values


def _entry_values(entry: object, where: str) -> object:
    """A stored ``[[organizations]]`` entry without its secrets (ScanConfig checks the rest)."""
    if not isinstance(entry, dict):
        return entry
    values = dict(entry)
    for key in _ENTRY_SECRETS:
        if key in values:
            if values[key] is not None and values[key] != SECRET_SET:
                raise ConfigError(f"{where}.{key}", f"must be {SECRET_SET!r} or null")
            del values[key]
    return values


def _entry_secrets(stored: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(organization name, key) of every secret a stored configuration says was set."""
    entries = stored.get("organizations")
    if not isinstance(entries, list):
        return set()
    return {
        (str(entry.get("name")), key)
        for entry in entries
        if isinstance(entry, dict)
        for key in _ENTRY_SECRETS
        if entry.get(key) == SECRET_SET
    }


def external_id_was_set(stored: Mapping[str, Any]) -> bool:
    return stored.get("external_id") == SECRET_SET


def run_config(stored: object) -> ScanConfig:
    """The stored configuration as a ScanConfig (without its external id), fully checked.

    Raises :class:`ConfigError` naming the setting (``config.KEY``).
    """
    values = config_values(stored)
    try:
        return ScanConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"config.{exc.field}", exc.problem) from None


def resumed_config(stored: Mapping[str, Any], given: Mapping[str, Any], run: str) -> ScanConfig:
    """What a resume of ``run`` scans with: the run's configuration, with ``given`` (a config
    file's values and flags, merged) on top; refused if ``given`` changes what is scanned."""
    merged = merge_values(config_values(stored), given)
    if external_id_was_set(stored) and merged.get("external_id") is None:
        raise ConfigError(
            "external_id",
            f"run {run} assumed its roles with an external id, which fleetscan does not store: "
            "give it again (FLEETSCAN_EXTERNAL_ID, or --external-id)",
        )
    candidate = ScanConfig(**merged)
    missing = sorted(_entry_secrets(stored) - _entry_secrets(stored_config(candidate)))
    if missing:
        name, key = missing[0]
        raise ConfigError(
            "organizations",
            f"run {run} reached organization {name!r} with its {key}, which fleetscan does not "
            "store: give the run's [[organizations]] again (--config)",
        )
    check_resume(stored, candidate, run)
    return candidate


def check_resume(stored: Mapping[str, Any], config: ScanConfig, run: str) -> None:
    """Refuse ``config`` for a resume of ``run`` if it scans something else than the run's
    stored configuration, naming every difference."""
    differences = run_differences(stored, config, "resume")
    if differences:
        raise ConfigError(
            "resume",
            f"run {run} was started with other settings: {'; '.join(differences)}. A resume "
            "scans what its run started to scan: drop these settings (the run's own are used), "
            "or start a new run",
        )


def run_differences(stored: Mapping[str, Any], config: ScanConfig, who: str) -> list[str]:
    """Every setting of :data:`RUN_KEYS` in which ``config`` differs from a run's stored
    configuration, said for people (``who`` is what is compared: "this resume", "this shard")."""
    original = run_config(stored)
    differences = []
    for key in RUN_KEYS:
        if key == "external_id":
            was, now = external_id_was_set(stored), config.external_id is not None
            if was != now:
                differences.append(
                    f"external_id (the run was scanned {'with' if was else 'without'} one, this "
                    f"{who} {'gives none' if was else 'gives one'})"
                )
            continue
        if key == "organizations":
            # Compared as stored: of secrets, only whether they were set.
            if (stored.get("organizations") or []) != stored_config(config)["organizations"]:
                differences.append(
                    f"organizations (the run's [[organizations]] differ from this {who}'s)"
                )
            continue
        before, after = getattr(original, key), getattr(config, key)
        if before != after:
            differences.append(f"{key} ({_difference(key, before, after, who)})")
    return differences


def _difference(key: str, before: object, after: object, who: str) -> str:
    if key == "file_mode" and isinstance(before, int) and isinstance(after, int):
        return f"the run's is {before:#o}, this {who}'s {after:#o}"
    if isinstance(before, tuple) and isinstance(after, tuple):
        added = [item for item in after if item not in before]
        dropped = [item for item in before if item not in after]
        parts = []
        if added:
            parts.append(f"adds {_items(added)}")
        if dropped:
            parts.append(f"drops {_items(dropped)}")
        if parts:
            return f"this {who} " + " and ".join(parts)
    return f"the run's is {_value(before)}, this {who}'s {_value(after)}"


def _items(items: list[Any]) -> str:
    shown = ", ".join(show(item) for item in items[:_SHOWN_ITEMS])
    more = len(items) - _SHOWN_ITEMS
    return shown + (f" and {more} more" if more > 0 else "")


def _value(value: object) -> str:
    if isinstance(value, tuple):
        return f"[{_items(list(value))}]" if value else "none"
    return show(value)
