"""A checkpoint entry built from units encoded as they finish is the entry a dict would give.

The sinks keep the units written since the last commit already encoded (``PendingUnits``), and
an S3 commit names only the units pending when it started: units finished while its PutObject
was in flight stay for the next entry. Both are checked here on any unit keys, including
organization names (user text) with the characters JSON arrays are made of.
"""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fleetscan._sinks._checkpoint import PendingUnits
from fleetscan._sinks._common import FileEntry

KEYS = st.lists(
    st.tuples(st.text(), st.text(), st.text()) | st.tuples(st.just("organization"), st.text())
)
FILES = [
    FileEntry(
        dataset="recovery_points",
        path="recovery_points/dt=2026-12-02/run=r/part-000000.ndjson",
        records=3,
        bytes=120,
        sha256="0" * 64,
    )
]


def entry(files: list[FileEntry], units: list[tuple[str, ...]], next_seq: dict[str, int]) -> bytes:
    """The entry as one orjson document (how the sinks wrote it until 2026-12)."""
    return orjson.dumps(
        {
            "files": [f.as_json() for f in files],
            "units": [list(u) for u in units],
            "next_seq": next_seq,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


@given(first=KEYS, later=KEYS, with_files=st.booleans())
def test_an_entry_names_exactly_the_units_pending_when_it_was_made(
    first: list[tuple[str, ...]], later: list[tuple[str, ...]], with_files: bool
) -> None:
    files = FILES if with_files else []
    next_seq = {"recovery_points": 1, "gateways": 0, "errors": 0}
    pending = PendingUnits()
    for key in first:
        pending.add(key)
    line, mark = pending.entry(files, next_seq)
    assert line == entry(files, first, next_seq)
    written: list[bytes] = []  # a local checkpoint's append: the entry in parts, never joined
    pending.write_entry(files, next_seq, lambda parts: written.extend(bytes(p) for p in parts))
    assert b"".join(written) == line
    for key in later:  # finished while the entry was being written
        pending.add(key)

    pending.drop(mark)
    assert pending.count == len(later)
    assert pending.entry([], next_seq)[0] == entry([], later, next_seq)
    pending.clear()
    assert pending.count == 0
    assert pending.entry([], next_seq)[0] == entry([], [], next_seq)
