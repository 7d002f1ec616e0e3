"""Values as users write them: how one is shown in a message, what type it is, an account id.

The base of the config package: the field checks, the account-list reader and the TOML reader
all name values the same way.
"""

from __future__ import annotations

import re

from .._exceptions import ConfigError

ACCOUNT_ID = re.compile(r"[0-9]{12}")


def show(value: object) -> str:
    """A value quoted for a message, cut short so a pasted file does not flood the terminal."""
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "...'"


def type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def check_account_id(value: object, where: str) -> str:
    """Return ``value`` if it is a 12-digit account id, else raise ConfigError naming ``where``."""
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, int) and not isinstance(value, bool):
            hint = ' (write account ids in quotes, e.g. "012345678901": numbers lose leading zeros)'
        raise ConfigError(where, f"must be a string of 12 digits, not {type_name(value)}{hint}")
    if ACCOUNT_ID.fullmatch(value):
        return value
    if not value:
        raise ConfigError(where, "is empty; an AWS account id has exactly 12 digits")
    if value.isascii() and value.isdigit():
        digits = f"{len(value)} digit" + ("" if len(value) == 1 else "s")
        raise ConfigError(where, f"{show(value)} has {digits}; an AWS account id has exactly 12")
    raise ConfigError(where, f"{show(value)} is not an AWS account id (exactly 12 digits)")
