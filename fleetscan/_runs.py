"""Reading runs back: the public readers, for a local directory and ``s3://bucket/prefix/`` alike.

Every reader goes through a run's manifest, never a directory listing: only the manifest says
which files belong to a run and that they are complete, and it carries their sizes, record
counts and SHA-256, which the readers check. A run without a manifest never finished and is not
seen. ``run="latest"`` is the run that started last among those with a manifest, whatever its
status (``complete``, ``partial``, ``failed`` or ``interrupted``: the manifest says which).

Each reader has an async form (``a``-prefixed, for code already on an event loop) and a plain
one. The plain readers of an S3 destination run the async ones on an event loop of their own.

Each takes ``expected_bucket_owner`` (a 12-digit account id, S3 only): every request then names
the account that must own the bucket, and S3 refuses it if another account does, so data is
never read from a bucket that was deleted and re-created by someone else under the same name.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.from_thread

from ._records import DATASETS
from ._sinks import _read

#: What ``run=`` takes besides a run id.
LATEST = "latest"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Run:
    """A run that has a manifest."""

    run_id: str
    #: ``complete``, ``partial``, ``failed`` or ``interrupted``.
    status: str
    #: UTC RFC 3339, from the manifest.
    started_at: str


async def alist_runs(dest: str, *, expected_bucket_owner: str | None = None) -> list[Run]:
    """Every run under ``dest`` that has a manifest, oldest first."""
    runs = await _read.alist_runs(dest, expected_bucket_owner=expected_bucket_owner)
    return [Run(r["run_id"], r["status"], r["started_at"]) for r in runs]


async def alatest_run(
    dest: str, *, complete_only: bool = False, expected_bucket_owner: str | None = None
) -> str | None:
    """The id of the run that started last (None: no run has a manifest there).

    With ``complete_only``, only runs whose manifest says ``complete`` count.
    """
    return await _read.alatest_run(
        dest, complete_only=complete_only, expected_bucket_owner=expected_bucket_owner
    )


async def aread_manifest(
    dest: str, run: str = LATEST, *, expected_bucket_owner: str | None = None
) -> dict[str, Any]:
    """The manifest of a run (``run``: its id, or ``"latest"``).

    Raises FileNotFoundError when the run has no manifest (it never finished, or there is no
    run), :class:`~fleetscan.DataError` (a ValueError) when the file is not a valid fleetscan
    manifest, :class:`~fleetscan.FleetscanError` when S3 refuses the read (another account owns
    the bucket than ``expected_bucket_owner``, for one).
    """
    run_id = await _resolve(dest, run, expected_bucket_owner)
    return await _read.aread_manifest(dest, run_id, expected_bucket_owner=expected_bucket_owner)


async def aread_records(
    dest: str,
    dataset: str = "recovery_points",
    *,
    run: str = LATEST,
    expected_bucket_owner: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Every record of one dataset of a run, in the order written.

    Files are streamed, so memory stays bounded. Nothing read is trusted: each record is
    checked against its dataset's JSON Schema, and each file's size, SHA-256 and record count
    against the manifest once it is read. Either failing raises :class:`~fleetscan.DataError`
    naming the file and line, after the records before it were yielded (so count what you
    consume before trusting it). Leaving the loop early closes the run's files.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    run_id = await _resolve(dest, run, expected_bucket_owner)
    records = _read.aiter_records(
        dest, run_id, dataset, expected_bucket_owner=expected_bucket_owner
    )
    async with aclosing(records):
        async for record in records:
            yield record


def list_runs(dest: str, *, expected_bucket_owner: str | None = None) -> list[Run]:
    """:func:`alist_runs`, for code without an event loop."""
    return _blocking(lambda: alist_runs(dest, expected_bucket_owner=expected_bucket_owner))


def latest_run(
    dest: str, *, complete_only: bool = False, expected_bucket_owner: str | None = None
) -> str | None:
    """:func:`alatest_run`, for code without an event loop."""
    return _blocking(
        lambda: alatest_run(
            dest, complete_only=complete_only, expected_bucket_owner=expected_bucket_owner
        )
    )


def read_manifest(
    dest: str, run: str = LATEST, *, expected_bucket_owner: str | None = None
) -> dict[str, Any]:
    """:func:`aread_manifest`, for code without an event loop."""
    return _blocking(lambda: aread_manifest(dest, run, expected_bucket_owner=expected_bucket_owner))


def read_records(
    dest: str,
    dataset: str = "recovery_points",
    *,
    run: str = LATEST,
    expected_bucket_owner: str | None = None,
) -> Generator[dict[str, Any], None, None]:
    """:func:`aread_records`, for code without an event loop (a generator: stop it early with
    ``close()`` or by leaving the loop, and the run's files are closed)."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        records = aread_records(dest, dataset, run=run, expected_bucket_owner=expected_bucket_owner)

        async def next_record() -> dict[str, Any]:
            return await anext(records)

        try:
            while True:
                try:
                    record = portal.call(next_record)
                except StopAsyncIteration:
                    return
                yield record
        finally:
            portal.call(records.aclose)


async def _resolve(dest: str, run: str, expected_bucket_owner: str | None) -> str:
    if run != LATEST:
        return run
    run_id = await _read.alatest_run(
        dest, complete_only=False, expected_bucket_owner=expected_bucket_owner
    )
    if run_id is None:
        raise FileNotFoundError(f"no run with a manifest under {dest}")
    return run_id


def _blocking(fn: Callable[[], Awaitable[_T]]) -> _T:
    return anyio.run(fn, backend="asyncio")
