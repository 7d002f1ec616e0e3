"""Account lists in a file: one id a line (``#`` comments), or CSV with an ``account_id`` column."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .._exceptions import ConfigError
from ._values import check_account_id, show


def _is_skipped(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def load_accounts_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Account ids from a file: one a line (``#`` comments), or CSV with an ``account_id`` column.

    The format is told by the first line that is not blank or a comment: a header naming
    ``account_id`` (or any line with a comma) means CSV, so a spreadsheet export with extra
    columns works as is. Each id appears once in the result, in file order.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("accounts_file", f"{source}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError("accounts_file", f"cannot read {source}: {exc.strerror}") from None
    except ValueError:  # a NUL byte, which no file name can hold
        raise ConfigError("accounts_file", f"{show(str(source))} is not a usable path") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if not _is_skipped(line)]
    if not lines:
        raise ConfigError("accounts_file", f"{source}: no account ids in the file")
    first = lines[0][1].strip()
    if "," in first or first.lower() == "account_id":
        ids = _csv_account_ids(source, lines)
    else:
        ids = []
        for number, line in lines:
            value = line.split("#", 1)[0].strip()
            ids.append(_file_account_id(value, source, number))
    return tuple(dict.fromkeys(ids))


def _file_account_id(value: str, source: Path, number: int) -> str:
    try:
        return check_account_id(value, "accounts_file")
    except ConfigError as exc:
        raise ConfigError("accounts_file", f"{source}:{number}: {exc.problem}") from None


def _csv_account_ids(source: Path, lines: list[tuple[int, str]]) -> list[str]:
    header_number, header_line = lines[0]
    header = [cell.strip().lower() for cell in next(csv.reader([header_line]))]
    if "account_id" not in header:
        raise ConfigError(
            "accounts_file",
            f"{source}:{header_number}: CSV header has no account_id column "
            f"(columns: {', '.join(header) or 'none'})",
        )
    column = header.index("account_id")
    ids = []
    for number, line in lines[1:]:
        row = next(csv.reader([line]))
        value = row[column].strip() if column < len(row) else ""
        ids.append(_file_account_id(value, source, number))
    if not ids:
        raise ConfigError("accounts_file", f"{source}: a CSV header but no account ids")
    return ids
