"""Reading configuration from files: a TOML config, an account list; merging them with flags.

Types are checked here, against what TOML says the user wrote; values are checked by
:class:`ScanConfig` once flags are merged in.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .._exceptions import ConfigError
from ._checks import REGION_KEYWORDS
from ._model import CONFIG_KEYS, ScanConfig
from ._organization import ORGANIZATION_KEYS
from ._values import check_account_id, show, type_name

# How each TOML key is read: what TOML type it takes, and how it becomes a ScanConfig value.
_BOOL_KEYS = frozenset({"org", "include_inactive", "assume_role", "dry_run", "bucket_key"})
_INT_KEYS = frozenset(
    {
        "role_duration_seconds",
        "concurrency",
        "burst",
        "max_attempts",
        "max_object_bytes",
        "file_mode",
    }
)
_FLOAT_KEYS = frozenset(
    {
        "rate",
        "retry_budget_ratio",
        "connect_timeout",
        "read_timeout",
        "call_timeout",
        "checkpoint_interval",
        "stop_grace_seconds",
    }
)
_STR_KEYS = frozenset(
    {
        "role_name",
        "role_arn_template",
        "external_id",
        "role_session_name",
        "hub_role_arn",
        "profile",
        "partition",
        "output",
        "compress",
        "run_id",
        "resume",
        "shard",
        "sse",
        "sse_kms_key_id",
        "expected_bucket_owner",
        "checksum_algorithm",
    }
)
_ACCOUNT_LIST_KEYS = frozenset({"accounts", "exclude_accounts"})
_SPECIAL_KEYS = frozenset({"ous", "accounts_file", "regions", "organizations"})
#: The string keys of an ``[[organizations]]`` table; its ``ous`` and ``exclude_accounts`` are
#: lists, read as the top-level keys are.
_ORGANIZATION_STR_KEYS = frozenset(
    {
        "name",
        "profile",
        "management_role_arn",
        "management_external_id",
        "role_name",
        "role_arn_template",
        "external_id",
    }
)
assert _ORGANIZATION_STR_KEYS | {"ous", "exclude_accounts"} == ORGANIZATION_KEYS, (
    "every [[organizations]] key needs a TOML reading rule"
)
assert CONFIG_KEYS == (
    _BOOL_KEYS | _INT_KEYS | _FLOAT_KEYS | _STR_KEYS | _ACCOUNT_LIST_KEYS | _SPECIAL_KEYS
), "every ScanConfig field needs a TOML reading rule"


def _wrong_type(key: str, expected: str, value: object, source: Path) -> ConfigError:
    return ConfigError(key, f"must be {expected}, not {type_name(value)} (in {source})")


def _string_list(key: str, value: object, source: Path, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _wrong_type(key, f"a list of {what}", value, source)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{key}[{i}]", f"must be a string, not {type_name(item)}")
    return tuple(value)


def _read_value(key: str, value: object, source: Path) -> object:
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise _wrong_type(key, "true or false", value, source)
        return value
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(key, "an integer", value, source)
        return value
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(key, "a number", value, source)
        return float(value)
    if key in _STR_KEYS:
        if not isinstance(value, str):
            raise _wrong_type(key, "a string", value, source)
        return value
    if key in _ACCOUNT_LIST_KEYS:
        if not isinstance(value, list):
            raise _wrong_type(key, "a list of account ids", value, source)
        return tuple(check_account_id(item, f"{key}[{i}]") for i, item in enumerate(value))
    if key == "ous":
        return _string_list(key, value, source, "OU ids")
    if key == "organizations":
        return _read_organizations(value, source)
    if key == "accounts_file":
        if not isinstance(value, str):
            raise _wrong_type(key, "a path string", value, source)
        # Relative to the config file, so a config and its account list travel together.
        return source.parent / value
    # regions: "all" | "enabled" | a list of names (a lone name or "a,b" is read as a list too).
    if isinstance(value, str):
        if value in REGION_KEYWORDS:
            return value
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return _string_list(key, value, source, "region names")


def _read_organizations(value: object, source: Path) -> tuple[dict[str, Any], ...]:
    """``[[organizations]]`` tables, their types checked; values are checked by ScanConfig."""
    if not isinstance(value, list):
        raise _wrong_type("organizations", "an array of tables ([[organizations]])", value, source)
    entries = []
    for i, table in enumerate(value):
        where = f"organizations[{i}]"
        if not isinstance(table, dict):
            raise _wrong_type(where, "a table ([[organizations]])", table, source)
        entry: dict[str, Any] = {}
        for key, item in table.items():
            if key not in ORGANIZATION_KEYS:
                close = difflib.get_close_matches(key, sorted(ORGANIZATION_KEYS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                shown = key if re.fullmatch(r"[\x21-\x7e]{1,64}", key) else show(key)
                raise ConfigError(
                    f"{where}.{shown}", f"unknown key of an organization in {source}{hint}"
                )
            if key in _ORGANIZATION_STR_KEYS:
                if not isinstance(item, str):
                    raise _wrong_type(f"{where}.{key}", "a string", item, source)
                entry[key] = item
            elif key == "ous":
                entry[key] = _string_list(f"{where}.ous", item, source, "OU ids")
            else:
                if not isinstance(item, list):
                    raise _wrong_type(f"{where}.{key}", "a list of account ids", item, source)
                entry[key] = tuple(
                    check_account_id(account, f"{where}.{key}[{n}]")
                    for n, account in enumerate(item)
                )
        entries.append(entry)
    return tuple(entries)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config into ScanConfig keyword arguments; refuse what ScanConfig cannot take.

    Types are checked here, against what TOML says the user wrote; values are checked by
    ScanConfig once flags are merged in. ``accounts_file`` is resolved against the file's folder.
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {source}: {exc.strerror}") from None
    except ValueError:  # a NUL byte, which no file name can hold
        raise ConfigError("config", f"{show(str(source))} is not a usable path") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config", f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line N, column M)".
        raise ConfigError("config", f"{source}: invalid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(key, sorted(CONFIG_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            # A quoted TOML key can hold anything, a newline included: name it on one line.
            shown = key if re.fullmatch(r"[\x21-\x7e]{1,64}", key) else show(key)
            raise ConfigError(shown, f"unknown key in {source}{hint}")
        values[key] = _read_value(key, value, source)
    return values


#: Settings that only make sense when roles are assumed (refused with assume_role = false).
_ASSUME_ROLE_ONLY: Final = (
    "org",
    "ous",
    "accounts",
    "accounts_file",
    "role_name",
    "role_arn_template",
    "external_id",
    "hub_role_arn",
    "organizations",
)


def build_config(file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> ScanConfig:
    """Merge a config file's values with flags (:func:`merge_values`) into a ScanConfig."""
    return ScanConfig(**given_values(file_values, overrides))


def given_values(file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a user gave, from a config file and flags, unknown settings refused."""
    for values in (file_values, overrides):
        _refuse_unknown(values.keys())
    return merge_values(file_values, overrides)


def merge_values(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a config file's values, or a resumed run's) with ``overrides`` (flags) on top.

    Where settings are alternatives, an override for one drops the base's others, as a user
    expects: ``--accounts`` (or ``--org`` / ``--accounts-file``) replaces the file's account
    sources, ``--role-name`` replaces its ``role_arn_template`` and vice versa, and
    ``--no-assume-role`` drops the file's accounts and roles.
    """
    merged = dict(base)
    given = overrides.keys()
    if given & {"org", "accounts", "accounts_file", "organizations"}:
        for key in ("org", "ous", "accounts", "accounts_file", "organizations"):
            merged.pop(key, None)
    if given & {"role_name", "role_arn_template"}:
        merged.pop("role_name", None)
        merged.pop("role_arn_template", None)
    if overrides.get("assume_role") is False:
        for key in _ASSUME_ROLE_ONLY:
            merged.pop(key, None)
    merged.update(overrides)
    return merged


def _refuse_unknown(keys: Iterable[str]) -> None:
    for key in keys:
        if key not in CONFIG_KEYS:
            raise ConfigError(key, "unknown setting")
