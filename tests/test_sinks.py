"""Output to a local directory and to stdout: real files, real gzip, real OS errors.

Each test reads the run back the way a user or Athena would (the files, their bytes, the
manifest) and checks what they would check: counts, sizes and checksums match the manifest, no
half-written file is ever visible, and a failed run says so.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import duckdb
import orjson
import pytest
from fleet_records import DT, RUN, RUN_ID, STARTED, fleet_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetscan import ConfigError, SinkError
from fleetscan._records import DATASETS, SCHEMA_VERSION, ErrorRecord, Record
from fleetscan._sinks import RunInfo, iter_records, latest_run, open_sink, read_manifest

TESTS = Path(__file__).parent
MANIFEST = f"manifests/{DT}/{RUN_ID}.json"
SUMMARY: dict[str, Any] = {
    "accounts": 20,
    "units": {"planned": 320, "done": 319, "failed": 1},
    "calls": {"AssumeRole": 19, "ListGateways": 320, "ListVolumeRecoveryPoints": 70},
    "retries": 3,
    "throttles": 2,
}
RECORDS = fleet_records()


def as_stored(record: Record) -> dict[str, Any]:
    """What a record looks like once written and parsed back."""
    result: dict[str, Any] = orjson.loads(orjson.dumps(record))
    return result


def by_dataset(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    return {name: [as_stored(r) for r in records if r.dataset == name] for name in DATASETS}


def files_under(root: Path) -> set[str]:
    """Every data and manifest file under ``root``, hidden ones included, as relative paths.

    The checkpoint (``checkpoints/``, the resume log) is left out: tests/test_resume.py checks it.
    """
    found = set()
    for directory, _dirs, names in os.walk(root):
        for name in names:
            found.add((Path(directory) / name).relative_to(root).as_posix())
    return {path for path in found if not path.startswith("checkpoints/")}


def read_back(
    dest: Path, manifest: dict[str, Any], max_object_bytes: int, mode: int = 0o600
) -> dict[str, list[dict[str, Any]]]:
    """Check every file against the manifest and the layout; return the records per dataset.

    Reads with the standard library (gzip module, hashlib), independently of fleetscan's reader.
    """
    suffix = ".ndjson.gz" if manifest["compression"] == "gzip" else ".ndjson"
    listed = [entry["path"] for entry in manifest["files"]]
    assert files_under(dest) == {*listed, MANIFEST}, "a stray, partial or unlisted file"
    assert (dest / MANIFEST).stat().st_mode & 0o777 == mode
    records: dict[str, list[dict[str, Any]]] = {}
    for dataset in DATASETS:
        entries = [entry for entry in manifest["files"] if entry["dataset"] == dataset]
        assert [e["path"] for e in entries] == [
            f"{dataset}/{DT}/{RUN_ID}-{seq:05d}{suffix}" for seq in range(len(entries))
        ]
        raws = []
        for entry in entries:
            path = dest / entry["path"]
            assert path.stat().st_mode & 0o777 == mode
            stored = path.read_bytes()
            assert len(stored) == entry["bytes"]
            assert hashlib.sha256(stored).hexdigest() == entry["sha256"]
            raw = gzip.decompress(stored) if suffix.endswith(".gz") else stored
            assert raw.endswith(b"\n")
            lines = raw.splitlines()
            assert len(lines) == entry["records"]
            # Never above the limit, unless one record alone is.
            assert len(raw) <= max_object_bytes or len(lines) == 1
            raws.append(raw)
        # And never rolled over early: each file was closed because the next record did not fit.
        for raw, following in itertools.pairwise(raws):
            assert len(raw) + len(following.split(b"\n", 1)[0]) + 1 > max_object_bytes
        records[dataset] = [orjson.loads(line) for raw in raws for line in raw.splitlines()]
        assert manifest["records"][dataset] == len(records[dataset])
    return records


async def write_all(sink: Any, records: list[Record]) -> None:
    for record in records:
        await sink.write(record)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would strip group bits: the modes asked for must win over it."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("compress", "mode"), [("none", 0o600), ("gzip", 0o640)])
@pytest.mark.usefixtures("strict_umask")
async def test_files_roll_over_and_match_the_manifest(
    tmp_path: Path, compress: Any, mode: int
) -> None:
    dest = tmp_path / "out"  # created by the sink
    max_bytes = 16 * 1024
    sink = open_sink(str(dest), RUN, compress=compress, max_object_bytes=max_bytes, file_mode=mode)
    await write_all(sink, RECORDS)
    manifest = await sink.finish("complete", SUMMARY)

    assert read_manifest(dest / MANIFEST) == manifest
    assert manifest["run_id"] == RUN_ID
    assert manifest["status"] == "complete"
    assert manifest["started_at"] == "2025-03-01T22:30:00.000Z"
    assert manifest["ended_at"] >= manifest["started_at"]
    assert manifest["fleetscan_version"] == "0.1.0"
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["destination"] == str(dest)
    assert manifest["compression"] == compress
    assert manifest["summary"] == SUMMARY

    got = read_back(dest, manifest, max_bytes, mode)
    want = by_dataset(RECORDS)
    assert got == want
    for dataset in ("recovery_points", "gateways"):
        assert manifest["records"][dataset] > 0
        assert sum(e["dataset"] == dataset for e in manifest["files"]) >= 3
    for dataset in DATASETS:
        assert list(iter_records(dest, RUN_ID, dataset)) == want[dataset]
    # Directories the sink creates are as private as its files.
    dir_mode = mode | 0o700 | (mode & 0o444) >> 2
    for directory in (dest, dest / "recovery_points", dest / "recovery_points" / DT):
        assert directory.stat().st_mode & 0o777 == dir_mode
    assert latest_run(dest) == RUN_ID


async def test_gzip_output_is_read_by_duckdb_with_hive_partitions(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN, compress="gzip", max_object_bytes=32 * 1024)
    await write_all(sink, RECORDS)
    await sink.finish("complete", SUMMARY)
    relation = duckdb.sql(
        f"""
        SELECT dt::VARCHAR AS dt, count(*) AS n, count(DISTINCT volume_arn) AS volumes,
               sum(volume_size_bytes) AS size
        FROM read_json('{tmp_path}/recovery_points/*/*.ndjson.gz',
                       format = 'newline_delimited', hive_partitioning = true)
        GROUP BY dt
        """
    )
    assert relation is not None  # a SELECT always yields a relation
    rows = relation.fetchall()
    want = by_dataset(RECORDS)["recovery_points"]
    assert rows == [
        (
            "2025-03-01",
            len(want),
            len({r["volume_arn"] for r in want}),
            sum(r["volume_size_bytes"] for r in want),
        )
    ]


async def test_records_reach_disk_as_they_arrive_under_a_temporary_name(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN)  # default 1 MiB buffer, 128 MiB files
    points = [r for r in RECORDS if r.dataset == "recovery_points"]
    written = 0
    longest = 0
    while written < 3 * 1024 * 1024:
        for record in points:
            await sink.write(record)
            size = len(orjson.dumps(record)) + 1
            written += size
            longest = max(longest, size)
    final = tmp_path / "recovery_points" / DT / f"{RUN_ID}-00000.ndjson"
    # Hidden (a glob for *.ndjson skips it), and with a random part no one can predict.
    (partial,) = final.parent.glob(f".{final.name}.*.partial")
    assert re.fullmatch(rf"\.{final.name}\.[0-9a-f]{{8}}\.partial", partial.name)
    assert not final.exists(), "a file is visible under its final name before it is complete"
    on_disk = partial.stat().st_size
    # At most one buffer (about 1 MiB) is held in memory, whatever has been written.
    assert written - on_disk < 1024 * 1024 + longest
    manifest = await sink.finish("complete", SUMMARY)
    assert not partial.exists()
    assert final.stat().st_size == written == manifest["files"][0]["bytes"]


@pytest.mark.parametrize(("slack", "per_file"), [(0, [2, 2, 1]), (-1, [1, 1, 1, 1, 1])])
async def test_a_file_takes_records_up_to_the_limit_exactly(
    tmp_path: Path, slack: int, per_file: list[int]
) -> None:
    records: list[Record] = [_error(letter * 100) for letter in "abcde"]
    line = len(orjson.dumps(records[0])) + 1  # every record has this length
    sink = open_sink(str(tmp_path), RUN, max_object_bytes=2 * line + slack)
    await write_all(sink, records)
    manifest = await sink.finish("complete", SUMMARY)
    assert [entry["records"] for entry in manifest["files"]] == per_file
    assert read_back(tmp_path, manifest, 2 * line + slack)["errors"] == [
        as_stored(r) for r in records
    ]


async def test_datasets_without_records_get_no_file(tmp_path: Path) -> None:
    errors = [r for r in RECORDS if r.dataset == "errors"]
    sink = open_sink(str(tmp_path), RUN)
    await write_all(sink, errors)
    manifest = await sink.finish("partial", SUMMARY)
    assert manifest["records"] == {"recovery_points": 0, "gateways": 0, "errors": len(errors)}
    assert files_under(tmp_path) == {f"errors/{DT}/{RUN_ID}-00000.ndjson", MANIFEST}
    assert read_back(tmp_path, manifest, 1 << 30)["errors"] == by_dataset(errors)["errors"]


async def test_a_run_without_records_still_gets_its_manifest(tmp_path: Path) -> None:
    manifest = await open_sink(str(tmp_path), RUN).finish("complete", SUMMARY)
    assert manifest["files"] == []
    assert manifest["records"] == dict.fromkeys(DATASETS, 0)
    assert files_under(tmp_path) == {MANIFEST}
    assert list(iter_records(tmp_path, RUN_ID, "recovery_points")) == []


@pytest.mark.parametrize("status", ["interrupted", "failed"])
async def test_abort_mid_run_keeps_only_complete_files(tmp_path: Path, status: str) -> None:
    max_bytes = 8 * 1024
    sink = open_sink(str(tmp_path), RUN, max_object_bytes=max_bytes, buffer_bytes=2048)
    stop_at = len(RECORDS) // 2
    started = dict.fromkeys(DATASETS, 0)
    returned = dict.fromkeys(DATASETS, 0)

    async def produce(scope: anyio.CancelScope) -> None:
        for index, record in enumerate(RECORDS):
            if index == stop_at:
                if status == "failed":
                    raise RuntimeError("the scan failed")
                scope.cancel()
            started[record.dataset] += 1
            await sink.write(record)
            returned[record.dataset] += 1

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, tg.cancel_scope)
    except BaseException:
        pass  # the failure under test; what matters is what abort leaves behind
    with anyio.CancelScope(shield=True):
        manifest = await sink.abort(status, SUMMARY)

    assert manifest["status"] == status
    assert read_manifest(tmp_path / MANIFEST) == manifest
    got = read_back(tmp_path, manifest, max_bytes)  # also: no partial file left
    want = by_dataset(RECORDS)
    assert sum(returned.values()) >= stop_at
    for dataset in DATASETS:
        # Written in order, nothing lost that write() accepted, nothing after the stop.
        assert returned[dataset] <= len(got[dataset]) <= started[dataset]
        assert got[dataset] == want[dataset][: len(got[dataset])]
        assert list(iter_records(tmp_path, RUN_ID, dataset)) == got[dataset]


async def test_abort_completes_even_when_its_caller_is_cancelled(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN, max_object_bytes=4096, buffer_bytes=1024)
    await write_all(sink, RECORDS[:200])
    with anyio.CancelScope() as scope:
        scope.cancel()
        manifest = await sink.abort("interrupted", SUMMARY)
    assert read_manifest(tmp_path / MANIFEST)["status"] == "interrupted"
    got = read_back(tmp_path, manifest, 4096)
    assert got == by_dataset(RECORDS[:200])


async def test_a_finish_cut_short_leaves_an_interrupted_manifest(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN, max_object_bytes=4096)
    await write_all(sink, RECORDS[:200])
    with anyio.CancelScope() as scope:
        scope.cancel()  # finish() is cancelled at its first await
        await sink.finish("complete", SUMMARY)
    assert scope.cancelled_caught
    manifest = read_manifest(tmp_path / MANIFEST)
    assert manifest["status"] == "interrupted"
    assert read_back(tmp_path, manifest, 4096) == by_dataset(RECORDS[:200])


async def test_finish_is_final(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN)
    await write_all(sink, RECORDS[:10])
    manifest = await sink.finish("complete", SUMMARY)
    assert await sink.finish("complete", SUMMARY) == manifest
    # An abort after a successful finish must not turn a complete run into a failed one.
    assert await sink.abort("failed", SUMMARY) == manifest
    assert read_manifest(tmp_path / MANIFEST)["status"] == "complete"
    with pytest.raises(RuntimeError, match="after finish"):
        await sink.write(RECORDS[0])


async def test_status_values_are_checked(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN)
    with pytest.raises(ValueError, match="complete, partial, failed, interrupted"):
        await sink.finish("done", SUMMARY)
    with pytest.raises(ValueError, match="failed, interrupted"):
        await sink.abort("complete", SUMMARY)
    assert files_under(tmp_path) == set()


async def test_an_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN)
    await write_all(sink, RECORDS[:50])
    manifest = await sink.finish("complete", SUMMARY)
    before = {path: (tmp_path / path).read_bytes() for path in files_under(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        open_sink(str(tmp_path), RUN)
    assert caught.value.field == "run_id"
    assert str(tmp_path / MANIFEST) in caught.value.problem
    assert {path: (tmp_path / path).read_bytes() for path in files_under(tmp_path)} == before
    assert read_manifest(tmp_path / MANIFEST) == manifest


CHILD_KILLED_AFTER_START = """
import os, sys
sys.path.insert(0, sys.argv[1])
from fleet_records import RUN
from fleetscan._sinks import open_sink

open_sink(sys.argv[2], RUN)
os._exit(0)  # gone like a killed scan: a checkpoint, no manifest, nothing committed
"""


def test_a_new_run_never_reuses_an_existing_checkpoint(tmp_path: Path) -> None:
    done = run_child(CHILD_KILLED_AFTER_START, str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    checkpoint = tmp_path / "checkpoints" / DT / f"{RUN_ID}.ndjson"
    before = checkpoint.read_bytes()
    with pytest.raises(ConfigError) as caught:
        open_sink(str(tmp_path), RUN)
    assert caught.value.field == "run_id"
    assert caught.value.problem == (
        f"run {RUN_ID} already has a checkpoint at {checkpoint}; resume it "
        f"(--resume {RUN_ID}) or choose another run id"
    )
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize(
    ("destination", "options", "field", "words"),
    [
        ("s3://Bucket/prefix/", {}, "output", "not s3://BUCKET/PREFIX/ with a valid bucket"),
        ("s3://bucket/a//b/", {}, "output", "empty, '.' or '..' segment"),
        ("gs://bucket/prefix", {}, "output", "gs:// is not supported"),
        ("", {}, "output", "is empty"),
        ("{tmp}", {"max_object_bytes": 0}, "max_object_bytes", "positive"),
        ("{tmp}", {"compress": "zstd"}, "compress", "'none' or 'gzip'"),
        ("{tmp}", {"file_mode": 0o4755}, "file_mode", "permission mode"),
        ("-", {"compress": "gzip"}, "compress", "plain NDJSON"),
    ],
)
def test_bad_destinations_and_options_are_refused_before_any_write(
    tmp_path: Path, destination: str, options: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        open_sink(destination.format(tmp=tmp_path), RUN, **options)
    assert caught.value.field == field
    assert words in caught.value.problem
    assert files_under(tmp_path) == set()


def test_a_destination_below_a_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(b"data\n")
    with pytest.raises(ConfigError) as caught:
        open_sink(str(tmp_path / "afile" / "sub"), RUN)
    assert caught.value.field == "output"
    assert caught.value.problem == (
        f"{tmp_path / 'afile'} is not a directory, so {tmp_path / 'afile' / 'sub'} cannot be "
        "created in it"
    )
    assert (tmp_path / "afile").read_bytes() == b"data\n"


def test_run_ids_that_could_escape_the_destination_are_refused() -> None:
    for bad in ("../escape", "a/b", ".hidden", "", "x" * 129):
        with pytest.raises(ConfigError) as caught:
            RunInfo(run_id=bad, started_at=STARTED, version="0.1.0")
        assert caught.value.field == "run_id"
    with pytest.raises(ValueError, match="timezone-aware"):
        RunInfo(run_id=RUN_ID, started_at=dt.datetime(2026, 11, 27), version="0.1.0")


# -- stdout ----------------------------------------------------------------------------------


async def test_stdout_gets_exactly_the_recovery_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out_path = tmp_path / "stdout.ndjson"
    with out_path.open("wb") as out:
        sink = open_sink("-", RUN, stdout=out, buffer_bytes=4096)
        await write_all(sink, RECORDS)
        manifest = await sink.finish("complete", SUMMARY)
    want = by_dataset(RECORDS)
    lines = out_path.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == want["recovery_points"]
    assert manifest["destination"] == "-"
    assert manifest["files"] == []
    assert manifest["records"] == {name: len(want[name]) for name in DATASETS}
    assert files_under(tmp_path) == {"stdout.ndjson"}, "stdout mode wrote a file"


CHILD_STDOUT = """
import sys, anyio
sys.path.insert(0, sys.argv[1])
from fleet_records import RUN, fleet_records
from fleetscan._sinks import open_sink

async def main():
    sink = open_sink("-", RUN)
    for record in fleet_records():
        await sink.write(record)
    await sink.finish("complete", {})

anyio.run(main, backend="asyncio")
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``code`` in a Python process of its own, given the tests' folder and ``args``."""
    return subprocess.run(
        [sys.executable, "-c", code, str(TESTS), *args],
        capture_output=True,
        env=child_env(),
        timeout=120,
        check=False,
    )


def test_stdout_is_the_process_stdout_by_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD_STDOUT, str(TESTS)],
        capture_output=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.splitlines()
    assert [orjson.loads(line) for line in lines] == by_dataset(RECORDS)["recovery_points"]
    assert files_under(tmp_path) == set()


@pytest.fixture
def dev_full() -> Iterator[BinaryIO]:
    """A real device on which every write fails with ENOSPC, as on a full disk."""
    with open("/dev/full", "wb", buffering=0) as full:
        yield full


async def test_stdout_write_errors_are_sink_errors(dev_full: BinaryIO) -> None:
    sink = open_sink("-", RUN, stdout=dev_full, buffer_bytes=1024)
    with pytest.raises(SinkError, match="cannot write to stdout: No space left on device"):
        await write_all(sink, RECORDS)
    manifest = await sink.abort("failed", SUMMARY)
    assert manifest["status"] == "failed"


# -- OS errors on real files -----------------------------------------------------------------

CHILD_FILE_LIMIT = """
import json, resource, signal, sys, anyio
sys.path.insert(0, sys.argv[1])
from fleet_records import RUN, fleet_records
from fleetscan import SinkError
from fleetscan._sinks import open_sink

# Files may not grow past 20,000 bytes: writes beyond fail with EFBIG, as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

async def main():
    sink = open_sink(sys.argv[2], RUN, max_object_bytes=64 * 1024, buffer_bytes=4096)
    try:
        for record in fleet_records():
            await sink.write(record)
        await sink.finish("complete", {})
        print(json.dumps({"error": None}))
    except SinkError as exc:
        manifest = await sink.abort("failed", {"error": str(exc)})
        print(json.dumps({"error": str(exc), "manifest": manifest}))

anyio.run(main, backend="asyncio")
"""


def test_a_write_failure_mid_run_fails_cleanly(tmp_path: Path) -> None:
    done = run_child(CHILD_FILE_LIMIT, str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    partial = re.escape(f"{tmp_path}/recovery_points/{DT}/.{RUN_ID}-00000.ndjson.")
    assert re.fullmatch(
        rf"cannot write {partial}[0-9a-f]{{8}}\.partial: File too large \(errno 27\)",
        result["error"],
    )
    manifest = result["manifest"]
    assert manifest["status"] == "failed"
    assert read_manifest(tmp_path / MANIFEST) == manifest
    # Nothing had been checkpointed, and the units written since the last checkpoint lost some
    # records: every file of theirs is dropped (a resumed run scans those units again, so
    # keeping the other datasets' halves would write them twice). Nothing else is left behind.
    assert manifest["files"] == []
    assert files_under(tmp_path) == {MANIFEST}


CHILD_READ_ONLY = """
import json, sys, anyio
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fleet_records import RUN, fleet_records
from fleetscan import SinkError
from fleetscan._sinks import open_sink

result = {}
try:
    open_sink(sys.argv[2], RUN)
except SinkError as exc:
    result["open"] = str(exc)

async def main():
    sink = open_sink(sys.argv[3], RUN)
    try:
        for record in fleet_records():
            await sink.write(record)
        await sink.finish("complete", {})
    except SinkError as exc:
        result["finish"] = str(exc)
        # finish() itself leaves the failed run's manifest before raising
        result["after_finish"] = sorted(str(p) for p in Path(sys.argv[3]).glob("manifests/*/*"))
        result["manifest"] = await sink.abort("failed", {})

anyio.run(main, backend="asyncio")
print(json.dumps(result))
"""


# Root ignores file permissions (CAP_DAC_OVERRIDE). As root, the child first drops that
# capability from its bounding set and re-executes itself: it stays root, owns the files, and is
# refused by read-only directories like any user.
WITHOUT_PERMISSION_BYPASS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def run_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    prefix = ["-c", WITHOUT_PERMISSION_BYPASS] if os.geteuid() == 0 else []
    return subprocess.run(
        [sys.executable, *prefix, "-c", code, *args],
        capture_output=True,
        env=child_env(),
        timeout=120,
        check=False,
    )


def test_read_only_directories_give_sink_errors_naming_the_path(tmp_path: Path) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    writable = tmp_path / "writable"
    blocked = writable / "recovery_points" / DT
    blocked.mkdir(parents=True)
    blocked.chmod(0o555)

    done = run_unprivileged(CHILD_READ_ONLY, str(TESTS), str(read_only), str(writable))
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["open"] == (
        f"cannot create directory {read_only}/manifests: Permission denied (errno 13)"
    )
    partial = re.escape(f"{blocked}/.{RUN_ID}-00000.ndjson.")
    assert re.fullmatch(
        rf"cannot create {partial}[0-9a-f]{{8}}\.partial: Permission denied \(errno 13\)",
        result["finish"],
    )
    assert result["after_finish"] == [str(writable / MANIFEST)]
    manifest = result["manifest"]
    assert manifest["status"] == "failed"
    assert files_under(read_only) == set()
    # No unit was checkpointed and the recovery points could not be written: nothing of the
    # other datasets is kept either (a resumed run writes those units again).
    assert manifest["files"] == []
    assert files_under(writable) == {MANIFEST}


# -- rollover, whatever the sizes ------------------------------------------------------------


def _error(message: str) -> ErrorRecord:
    return ErrorRecord(
        SCHEMA_VERSION, RUN_ID, "2026-11-27T22:00:00.000Z", "111122223333", "us-east-1", None,
        "ListGateways", "InternalServerError", None, message, 3, True,
    )  # fmt: skip


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    # Messages within the schema's 500 characters: the readers refuse a longer one.
    sizes=st.lists(st.integers(min_value=0, max_value=490), max_size=60),
    max_bytes=st.integers(min_value=200, max_value=2000),
    buffer_bytes=st.integers(min_value=1, max_value=3000),
    compress=st.sampled_from(["none", "gzip"]),
)
def test_rollover_holds_for_any_record_and_limit_sizes(
    sizes: list[int], max_bytes: int, buffer_bytes: int, compress: Any
) -> None:
    records: list[Record] = [_error(f"{i}:" + "x" * size) for i, size in enumerate(sizes)]

    async def run(dest: str) -> dict[str, Any]:
        sink = open_sink(
            dest, RUN, compress=compress, max_object_bytes=max_bytes, buffer_bytes=buffer_bytes
        )
        await write_all(sink, records)
        return await sink.finish("complete", {})

    with tempfile.TemporaryDirectory() as dest:
        manifest = anyio.run(run, dest, backend="asyncio")
        got = read_back(Path(dest), manifest, max_bytes)
        assert got["errors"] == [as_stored(r) for r in records]
        assert list(iter_records(dest, RUN_ID, "errors")) == got["errors"]


# -- reading a run back ----------------------------------------------------------------------


async def test_reading_back_checks_the_files_against_the_manifest(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path), RUN, compress="gzip", max_object_bytes=4096)
    await write_all(sink, RECORDS[:300])
    manifest = await sink.finish("complete", SUMMARY)
    want = by_dataset(RECORDS[:300])["recovery_points"]
    entry = next(e for e in manifest["files"] if e["dataset"] == "recovery_points")
    path = tmp_path / entry["path"]
    # Replace the file with other valid records: it reads fine, but is not what was written.
    last = next(r for r in reversed(RECORDS) if r.dataset == "recovery_points")
    other = gzip.compress(orjson.dumps(last) + b"\n")
    path.write_bytes(other)
    with pytest.raises(ValueError, match=f"{path}: bytes is {len(other)}, the manifest says"):
        list(iter_records(tmp_path, RUN_ID, "recovery_points"))
    unverified = list(iter_records(tmp_path, RUN_ID, "recovery_points", verify=False))
    assert unverified[0] == as_stored(last)
    assert unverified[1:] == want[entry["records"] :]


def test_reading_a_run_that_never_finished_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest for run 'nope'"):
        list(iter_records(tmp_path, "nope", "recovery_points"))
    assert latest_run(tmp_path) is None
    not_ours = tmp_path / "notes.json"
    not_ours.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a fleetscan manifest"):
        read_manifest(not_ours)
    with pytest.raises(ValueError, match="unknown dataset 'volumes'"):
        list(iter_records(tmp_path, RUN_ID, "volumes"))


async def test_latest_run_is_the_one_that_started_last(tmp_path: Path) -> None:
    runs = [
        RunInfo(run_id=f"run-{n}", started_at=STARTED + dt.timedelta(days=days), version="0.1.0")
        for n, days in (("b", 0), ("a", 2), ("c", 1))
    ]
    for run in runs:
        await open_sink(str(tmp_path), run).finish("complete", SUMMARY)
    (tmp_path / "manifests" / DT / "someone-elses.json").write_text("[]")
    assert latest_run(tmp_path) == "run-a"
