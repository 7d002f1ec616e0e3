"""A checkpoint entry built from units encoded as they finish names exactly those units, and
counts their records per organization.

The sinks keep the units written since the last commit already encoded (``PendingUnits``), and
an S3 commit names only the units pending when it started: units finished while its PutObject
was in flight stay for the next entry, their records with them. Both are checked here on any
unit keys and organization keys, including organization names (user text) with the characters
JSON arrays are made of.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fleetscan._records import DATASETS
from fleetscan._sinks._checkpoint import PendingUnits
from fleetscan._sinks._common import FileEntry

UNIT_KEYS = st.tuples(st.text(), st.text(), st.text()) | st.tuples(
    st.just("organization"), st.text()
)
#: A unit's records per (organization key, dataset): a key is a name, an o-... id, or None.
UNIT_RECORDS = st.dictionaries(
    st.tuples(st.none() | st.text(), st.sampled_from(DATASETS)), st.integers(0, 10**9), max_size=3
)
UNITS = st.lists(st.tuples(UNIT_KEYS, UNIT_RECORDS))
FILES = [
    FileEntry(
        dataset="recovery_points",
        path="recovery_points/dt=2026-12-02/run=r/part-000000.ndjson",
        records=3,
        bytes=120,
        sha256="0" * 64,
    )
]

Unit = tuple[tuple[str, ...], dict[tuple[str | None, str], int]]


def check_entry(line: bytes, files: list[FileEntry], units: list[Unit], next_seq: Any) -> None:
    """``line`` is one compact JSON document with its newline, naming ``files``, the keys of
    ``units`` in order, the sum of their records per (organization, dataset), and ``next_seq``."""
    document = orjson.loads(line)
    assert line == orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)
    assert list(document) == ["files", "units", "organization_records", "next_seq"]
    assert document["files"] == [f.as_json() for f in files]
    assert document["units"] == [list(key) for key, _ in units]
    assert document["next_seq"] == next_seq
    expected: Counter[tuple[str | None, str]] = Counter()
    for _, records in units:
        expected.update(records)
    rows = document["organization_records"]
    assert len({(key, dataset) for key, dataset, _ in rows}) == len(rows)
    assert {(key, dataset): count for key, dataset, count in rows} == +expected


@given(first=UNITS, later=UNITS, with_files=st.booleans())
def test_an_entry_names_exactly_the_units_pending_when_it_was_made(
    first: list[Unit], later: list[Unit], with_files: bool
) -> None:
    files = FILES if with_files else []
    next_seq = {"recovery_points": 1, "gateways": 0, "errors": 0}
    pending = PendingUnits()
    for key, records in first:
        pending.add(key, records)
    line, mark = pending.entry(files, next_seq)
    check_entry(line, files, first, next_seq)
    written: list[bytes] = []  # a local checkpoint's append: the entry in parts, never joined
    pending.write_entry(files, next_seq, lambda parts: written.extend(bytes(p) for p in parts))
    assert b"".join(written) == line
    for key, records in later:  # finished while the entry was being written
        pending.add(key, records)

    pending.drop(mark)
    assert pending.count == len(later)
    check_entry(pending.entry([], next_seq)[0], [], later, next_seq)
    pending.clear()
    assert pending.count == 0
    check_entry(pending.entry([], next_seq)[0], [], [], next_seq)
