"""Reading a run back through its manifest: what audits and tests rely on.

Readers go through the manifest, never a directory listing: only the manifest says which files
belong to a run and that they are complete, and it carries their sizes and checksums.
"""

from __future__ import annotations

import glob
import hashlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from .._records import DATASETS
from ._common import MANIFEST_VERSION

_CHUNK = 1 << 20


def find_manifest(dest: str | os.PathLike[str], run_id: str) -> Path:
    """The manifest of ``run_id`` under ``dest``, whatever its ``dt=`` partition."""
    pattern = os.path.join(glob.escape(os.fspath(dest)), "manifests", "dt=*", "")
    matches = sorted(glob.glob(pattern + glob.escape(f"{run_id}.json")))
    if not matches:
        raise FileNotFoundError(f"no manifest for run {run_id!r} under {dest} (run incomplete?)")
    if len(matches) > 1:
        raise ValueError(f"run {run_id!r} has several manifests under {dest}: {matches}")
    return Path(matches[0])


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a manifest file, refusing anything that is not a fleetscan manifest."""
    try:
        manifest = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"{path} is not a fleetscan manifest (version {MANIFEST_VERSION})")
    return manifest


def latest_run(dest: str | os.PathLike[str]) -> str | None:
    """The id of the run under ``dest`` that started last (None: no run has finished there).

    Only runs with a manifest count: a run without one never finished, whatever it left behind.
    """
    newest: tuple[str, str] | None = None
    pattern = os.path.join(glob.escape(os.fspath(dest)), "manifests", "dt=*", "*.json")
    for path in glob.glob(pattern):
        try:
            manifest = read_manifest(path)
            key = (str(manifest["started_at"]), str(manifest["run_id"]))
        except (OSError, ValueError, KeyError):
            continue  # not a fleetscan manifest: someone else's file
        if newest is None or key > newest:
            newest = key
    return newest[1] if newest else None


def iter_records(
    dest: str | os.PathLike[str], run_id: str, dataset: str, *, verify: bool = True
) -> Iterator[dict[str, Any]]:
    """Every record of one dataset of a run, in the order it was written.

    Memory stays bounded (files are streamed). With ``verify``, each file's size, sha256 and
    record count are checked against the manifest once the file has been read: a mismatch
    raises :class:`ValueError` naming the file, after that file's records have been yielded.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    root = Path(dest)
    manifest = read_manifest(find_manifest(root, run_id))
    for entry in manifest["files"]:
        if entry["dataset"] != dataset:
            continue
        relpath = PurePosixPath(entry["path"])
        if relpath.is_absolute() or ".." in relpath.parts:
            raise ValueError(f"manifest of run {run_id!r} lists a path outside {dest}: {relpath}")
        yield from _read_file(root.joinpath(*relpath.parts), entry, verify)


def _read_file(path: Path, entry: dict[str, Any], verify: bool) -> Iterator[dict[str, Any]]:
    sha = hashlib.sha256()
    stored = 0
    records = 0
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if path.name.endswith(".gz") else None
    tail = b""
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            last = not chunk
            sha.update(chunk)
            stored += len(chunk)
            if inflate is not None:
                chunk = inflate.flush() if last else inflate.decompress(chunk)
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                records += 1
                yield orjson.loads(line)
            if last:
                break
    if tail:
        raise ValueError(f"{path} ends in the middle of a record")
    if not verify:
        return
    found = {"bytes": stored, "sha256": sha.hexdigest(), "records": records}
    for key, value in found.items():
        if entry[key] != value:
            raise ValueError(f"{path}: {key} is {value}, the manifest says {entry[key]}")
