"""Every exception fleetscan raises on purpose, in one module (as httpx does).

Callers catch :class:`FleetscanError`; the CLI maps :class:`ConfigError` to exit code 2.
Messages never carry credentials: they name the field, account or operation, nothing secret.
"""

from __future__ import annotations


class FleetscanError(Exception):
    """Base class of fleetscan's own errors."""


class ConfigError(FleetscanError):
    """Bad input: a flag, a config file, an account list. Raised before any AWS call."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DiscoveryError(FleetscanError):
    """The accounts to scan could not be established (e.g. ListAccounts was denied)."""


class SinkError(FleetscanError):
    """Records could not be written to the destination."""


class DataError(FleetscanError, ValueError):
    """A file read back (a record file, a manifest) that is torn, tampered or wrong-typed.

    ``where`` is the file (a path or ``s3://`` URL) and ``line`` the line of it, counted from 1
    (None: the file as a whole, as for a manifest or a checksum). Also a ValueError, which is
    what the readers raised for a damaged file before this class existed.
    """

    def __init__(self, where: str, line: int | None, problem: str) -> None:
        super().__init__(f"{where}{f', line {line}' if line is not None else ''}: {problem}")
        self.where = where
        self.line = line
        self.problem = problem
