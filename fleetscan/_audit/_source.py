"""Reading a run back, local or S3: the sinks' async readers, until they land a local-only shim."""

from __future__ import annotations

import glob
import os
from collections.abc import AsyncIterator
from typing import Any

from .._sinks import find_manifest, iter_records, read_manifest


async def aread_manifest(dest: str, run_id: str) -> dict[str, Any]:
    return read_manifest(find_manifest(dest, run_id))


async def aiter_records(dest: str, run_id: str, dataset: str) -> AsyncIterator[dict[str, Any]]:
    for record in iter_records(dest, run_id, dataset):
        yield record


async def alist_runs(dest: str) -> list[dict[str, Any]]:
    runs = []
    pattern = os.path.join(glob.escape(dest), "manifests", "dt=*", "*.json")
    for path in glob.glob(pattern):
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError):
            continue
        runs.append(
            {
                "run_id": manifest["run_id"],
                "status": manifest["status"],
                "started_at": manifest["started_at"],
            }
        )
    return sorted(runs, key=lambda r: (r["started_at"], r["run_id"]))


async def alatest_run(dest: str, *, complete_only: bool = True) -> str | None:
    runs = [r for r in await alist_runs(dest) if not complete_only or r["status"] == "complete"]
    return str(runs[-1]["run_id"]) if runs else None
