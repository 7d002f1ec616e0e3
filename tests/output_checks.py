"""What a reader of a run's output checks, written independently of fleetscan's own reader.

Used by tests that throw hostile input at a scan: whatever happened, the destination must hold a
valid manifest that lists every data file with its true size, sha256 and record count, and every
line of every file must be one JSON object valid against the shipped schema of its dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from fleetscan._records import DATASETS, load_schema

_VALIDATORS = {
    name: Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for name in (*DATASETS, "manifest")
}


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _problems(name: str, instance: Any) -> list[str]:
    """The schema violations of ``instance``, each cut short: a hostile value can be huge."""
    errors = _VALIDATORS[name].iter_errors(instance)
    return [f"{list(e.absolute_path)}: {_short(e.message)}" for e in errors]


def check_run_output(dest: Path, run_id: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The run's manifest and its records per dataset, after checking both byte by byte.

    Raises AssertionError naming the file and line of the first problem.
    """
    (manifest_path,) = dest.glob(f"manifests/dt=*/{run_id}.json")
    manifest = json.loads(manifest_path.read_bytes())  # strict UTF-8, strict JSON
    problems = _problems("manifest", manifest)
    assert not problems, f"{manifest_path}: {problems}"
    assert manifest["run_id"] == run_id

    records: dict[str, list[Any]] = {name: [] for name in DATASETS}
    listed: set[Path] = set()
    for entry in manifest["files"]:
        path = dest / entry["path"]
        listed.add(path.resolve())
        data = path.read_bytes()
        assert len(data) == entry["bytes"], f"{path}: size differs from the manifest"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path}: sha256 differs"
        assert data.endswith(b"\n") or not data, f"{path}: last line is not terminated"
        lines = data.split(b"\n")[:-1]
        assert len(lines) == entry["records"], f"{path}: record count differs from the manifest"
        for number, line in enumerate(lines, 1):
            record = json.loads(line.decode("utf-8"))
            problems = _problems(entry["dataset"], record)
            assert not problems, f"{path}:{number}: {problems}\n{_short(repr(record), 2000)}"
            records[entry["dataset"]].append(record)
    for name in DATASETS:
        assert manifest["records"][name] == len(records[name]), f"records[{name}] is wrong"
        on_disk = {p.resolve() for p in dest.glob(f"{name}/dt=*/*") if p.is_file()}
        unlisted = {p for p in on_disk if not p.name.startswith(".")} - listed
        assert not unlisted, f"data files the manifest does not list: {sorted(unlisted)}"
        partials = {p for p in on_disk if p.name.endswith(".partial")}
        assert not partials, f"temporary files left behind: {sorted(partials)}"
    return manifest, records
