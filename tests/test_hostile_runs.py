"""Runs read back that someone tampered with: record lines and manifests of the wrong shape.

Every reader validates what it reads against the shipped JSON Schemas (``fleetscan._validate``)
and refuses a record or manifest that breaks them with a DataError naming the file and line,
never a TypeError deep inside the audit; ``fleetscan audit`` prints that one line and exits 1,
promptly. A run is written the way a scan writes it (``synthetic_run``), then edited with the
manifest's sizes and checksums updated to match, so only the shape check can catch the edit.
The command runs as a real subprocess, with a timeout: the defect this guards against hung.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import orjson
import pytest
import synthetic_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import fleetscan
from fleetscan import AuditResult
from fleetscan._records import SCHEMA_VERSION, ErrorRecord, GatewayRecord, load_schema
from fleetscan._sinks import find_manifest, iter_records, open_sink
from fleetscan._validate import Mismatch, checker, compile_schema
from fleetscan.emulator import FleetSpec, Stack, start_stack

#: Generous: the audit of a synthetic run takes well under a second; the defect hung forever.
HANG_GUARD_SECONDS = 60
BUCKET = "fleetscan-hostile-runs"
UNITS = 4
#: The fields a gateway record shares with its recovery points.
SHARED = (
    "schema_version", "run_id", "scanned_at", "partition", "account_id", "account_name",
    "region", "gateway_arn", "gateway_id", "gateway_name",
)  # fmt: skip


def write_run(dest: Path) -> None:
    """A complete run of every dataset, written through the local sink as a scan writes it."""

    async def session() -> None:
        sink = open_sink(str(dest), synthetic_run.RUN)
        for index in range(UNITS):
            points = synthetic_run.unit_records(index)
            for record in points:
                await sink.write(record)
            first = points[0]
            await sink.write(
                GatewayRecord(
                    **{name: getattr(first, name) for name in SHARED},
                    gateway_type="CACHED",
                    gateway_operational_state="ACTIVE",
                    host_environment="VMWARE",
                    status="scanned",
                    recovery_point_count=len(points),
                    error_code=None,
                )
            )
            await sink.write(
                ErrorRecord(
                    schema_version=SCHEMA_VERSION,
                    run_id=first.run_id,
                    at=first.scanned_at,
                    account_id=first.account_id,
                    region=first.region,
                    gateway_arn=None,
                    operation="DescribeRegions",
                    error_code="Timeout",
                    gateway_error_code=None,
                    message="no answer",
                    attempts=3,
                    retryable=True,
                )
            )
            sink.unit_done(synthetic_run.unit_key(index), {})
            await sink.commit()
        await sink.finish("complete", {})

    anyio.run(session)


def manifest_path(dest: Path) -> Path:
    return Path(find_manifest(dest, synthetic_run.RUN_ID))


def rewrite(dest: Path, dataset: str, line: int, edit: Callable[[bytes], bytes]) -> Path:
    """Line ``line`` (from 1) of the dataset's first file replaced by ``edit(line)``, and the
    manifest's bytes and sha256 of that file updated to match: only a shape check can tell."""
    path = manifest_path(dest)
    manifest = orjson.loads(path.read_bytes())
    entry = next(e for e in manifest["files"] if e["dataset"] == dataset)
    target: Path = dest / entry["path"]
    lines = target.read_bytes().split(b"\n")
    lines[line - 1] = edit(lines[line - 1])
    data = b"\n".join(lines)
    target.write_bytes(data)
    entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    path.write_bytes(orjson.dumps(manifest))
    return target


def set_field(name: str, value: Any) -> Callable[[bytes], bytes]:
    def edit(line: bytes) -> bytes:
        return orjson.dumps({**orjson.loads(line), name: value})

    return edit


def fleetscan_cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """``python -m fleetscan ARGS``: exit code, stderr and seconds taken (a hang fails the test
    with TimeoutExpired instead of blocking the suite)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | (env or {})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fleetscan", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        check=False,
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


#: The issue's two examples, and a few more shapes a record can break.
BROKEN_RECORDS: list[tuple[str, str, int, Callable[[bytes], bytes], str]] = [
    (
        "age as text",
        "recovery_points",
        2,
        set_field("recovery_point_age_seconds", "not a number"),
        "recovery_point_age_seconds: expected number or null, got string",
    ),
    ("region as object", "recovery_points", 2, set_field("region", {"a": [1]}), "region: expected"),
    ("array", "recovery_points", 3, lambda line: b"[1, 2]", "expected object, got array"),
    ("not json", "recovery_points", 1, lambda line: line[:-3], "not a JSON record"),
    ("extra field", "recovery_points", 2, set_field("injected", 1), "injected: not a field"),
    ("gateway status", "gateways", 1, set_field("status", 7), "status: expected string"),
]


@pytest.mark.parametrize(
    ("dataset", "line", "edit", "problem"),
    [b[1:] for b in BROKEN_RECORDS],
    ids=[b[0] for b in BROKEN_RECORDS],
)
def test_audit_of_a_broken_record_exits_1_with_one_line_naming_file_and_line(
    tmp_path: Path, dataset: str, line: int, edit: Callable[[bytes], bytes], problem: str
) -> None:
    write_run(tmp_path)
    target = rewrite(tmp_path, dataset, line, edit)
    code, stderr, seconds = fleetscan_cli("audit", "--input", tmp_path, "--max-age", "24h")
    print(f"audit refused a broken record in {seconds:.2f} s")
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"fleetscan: error: {target}, line {line}: "), stderr
    assert problem in stderr


def test_the_readers_raise_a_data_error_naming_file_and_line(tmp_path: Path) -> None:
    write_run(tmp_path)
    target = rewrite(tmp_path, "recovery_points", 3, set_field("volume_size_bytes", "10"))
    readers: list[Callable[[], list[dict[str, Any]]]] = [
        lambda: list(fleetscan.read_records(str(tmp_path))),
        lambda: list(iter_records(tmp_path, synthetic_run.RUN_ID, "recovery_points")),
    ]
    for read in readers:
        with pytest.raises(fleetscan.DataError) as caught:
            read()
        assert caught.value.where == str(target)
        assert caught.value.line == 3
        assert "volume_size_bytes: expected integer or null, got string" in str(caught.value)
        assert isinstance(caught.value, ValueError)  # what the readers raised before


def test_a_wrong_typed_manifest_is_refused_naming_the_field(tmp_path: Path) -> None:
    write_run(tmp_path)
    path = manifest_path(tmp_path)
    manifest = orjson.loads(path.read_bytes())
    manifest["files"][1]["records"] = "3"
    path.write_bytes(orjson.dumps(manifest))
    with pytest.raises(fleetscan.DataError, match=r"files\[1\]\.records: expected integer"):
        fleetscan.read_manifest(str(tmp_path), synthetic_run.RUN_ID)
    code, stderr, _ = fleetscan_cli(
        "audit", "--input", tmp_path, "--run", synthetic_run.RUN_ID, "--max-age", "1d"
    )
    assert code == 1, stderr
    assert stderr == f"fleetscan: error: {path}: breaks the manifest schema: files[1].records: " + (
        "expected integer, got string\n"
    )


def test_a_consumer_that_fails_mid_read_never_hangs_the_process(tmp_path: Path) -> None:
    """The hang at its root: whatever error stops the consumer of a reader (here a findings
    callback that raises), the reader's open file and worker thread are closed with it, so the
    process exits instead of waiting forever for a thread blocked on its queue."""
    write_run(tmp_path)
    script = textwrap.dedent(
        f"""
        import anyio
        from fleetscan import Policy, audit

        def explode(finding):
            raise RuntimeError("the consumer failed")

        anyio.run(lambda: audit({str(tmp_path)!r}, Policy.single("1d"), on_finding=explode))
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        check=False,
    )
    print(f"the failing consumer's process exited in {time.monotonic() - started:.2f} s")
    assert proc.returncode == 1
    assert proc.stderr.rstrip().endswith("RuntimeError: the consumer failed")


@pytest.fixture(scope="module")
def s3_stack() -> Iterator[Stack]:
    with start_stack(FleetSpec(seed=3, accounts=1, regions=("us-east-1",))) as stack:
        yield stack


@pytest.fixture
def s3_env(s3_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """This process's environment pointed at moto, and only at it (as conftest's stack_env)."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    env = s3_stack.env() | {
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_s3_runs_are_checked_the_same(s3_env: dict[str, str], tmp_path: Path) -> None:
    local = tmp_path / "run"
    write_run(local)
    target = rewrite(local, "recovery_points", 3, set_field("region", {"a": [1]}))
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"])
    s3.create_bucket(Bucket=BUCKET)
    for path in local.rglob("*"):
        if path.is_file():
            key = f"broken/{path.relative_to(local)}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    dest = f"s3://{BUCKET}/broken/"
    url = dest + str(target.relative_to(local))
    code, stderr, seconds = fleetscan_cli("audit", "--input", dest, "--max-age", "24h", env=s3_env)
    print(f"audit of a broken S3 run refused in {seconds:.2f} s")
    assert code == 1, stderr
    assert stderr == (
        f"fleetscan: error: {url}, line 3: breaks the recovery_points schema: region: expected "
        "string, got object\n"
    )

    async def read_all() -> list[dict[str, Any]]:
        return [record async for record in fleetscan.aread_records(dest)]

    with pytest.raises(fleetscan.DataError) as caught:
        anyio.run(read_all)
    assert (caught.value.where, caught.value.line) == (url, 3)


# -- the compiled checks agree with a JSON Schema validator ------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["us-east-1", "123456789012", "scanned", "error", "gzip", "", "aws"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def sample(name: str) -> dict[str, Any]:
    """A valid instance of each schema: a record of the synthetic run, or its manifest."""
    if name == "manifest":
        return {
            "manifest_version": 2, "run_id": "r1", "status": "complete",
            "started_at": "2026-01-02T03:04:00.000Z", "ended_at": "2026-01-02T03:05:00.000Z",
            "fleetscan_version": "t", "schema_version": 1, "destination": "/x",
            "compression": "none", "records": {"recovery_points": 3, "gateways": 1, "errors": 0},
            "summary": {},
            "files": [{
                "dataset": "gateways", "path": "gateways/dt=2026-01-02/r1-00000.ndjson",
                "records": 1, "bytes": 10, "sha256": "0" * 64,
            }],
            "shards": None,
        }  # fmt: skip
    if name == "recovery_points":
        record: dict[str, Any] = orjson.loads(orjson.dumps(synthetic_run.unit_records(1)[0]))
        return record
    if name == "gateways":
        return {
            "schema_version": 1, "run_id": "r1", "scanned_at": "2026-01-02T03:05:00.000Z",
            "partition": "aws", "account_id": "123456789012", "account_name": None,
            "region": "us-east-1",
            "gateway_arn": "arn:aws:storagegateway:us-east-1:123456789012:gateway/sgw-12A3456B",
            "gateway_id": "sgw-12A3456B", "gateway_name": "g", "gateway_type": "CACHED",
            "gateway_operational_state": "ACTIVE", "host_environment": "VMWARE",
            "status": "error", "recovery_point_count": None, "error_code": "GatewayNotConnected",
        }  # fmt: skip
    return {
        "schema_version": 1, "run_id": "r1", "at": "2026-01-02T03:05:00.000Z",
        "account_id": None, "region": None, "gateway_arn": None, "operation": "ListAccounts",
        "error_code": "AccessDenied", "gateway_error_code": None, "message": "no",
        "attempts": 1, "retryable": False,
    }  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with a few values replaced, removed or added, anywhere inside it."""
    value: Any = orjson.loads(orjson.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = value
        while isinstance(parent, dict | list) and parent and draw(st.booleans()):
            keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            key = draw(st.sampled_from(keys))
            if not isinstance(parent[key], dict | list):
                break
            parent = parent[key]
        if isinstance(parent, dict) and parent:
            key = draw(st.sampled_from(sorted(parent)))
            kind = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if kind == "replace":
                parent[key] = draw(JSON_VALUES)
            elif kind == "delete":
                del parent[key]
            else:
                parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif isinstance(parent, list) and parent:
            parent[draw(st.integers(0, len(parent) - 1))] = draw(JSON_VALUES)
        else:
            value = draw(JSON_VALUES)
    return value


SCHEMAS = ("recovery_points", "gateways", "errors", "manifest")


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_compiled_checks_agree_with_jsonschema(name: str, data: st.DataObject) -> None:
    """Both the fast predicate and the explaining closures say what a JSON Schema validator
    says (without format checks, as fleetscan's readers: the patterns fix each time's shape)."""
    instance = data.draw(mutated(sample(name)))
    reference = Draft202012Validator(load_schema(name))
    expected = reference.is_valid(instance)
    explain = compile_schema(load_schema(name))
    try:
        checker(name)(instance)
        fast = True
    except Mismatch:
        fast = False
    problem: Mismatch | None = None
    try:
        explain(instance)
    except Mismatch as exc:
        problem = exc
    assert fast == (problem is None)
    assert "\n" not in str(problem)
    assert fast == expected, (instance, list(reference.iter_errors(instance))[:1])


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_samples_are_valid(name: str) -> None:
    Draft202012Validator(load_schema(name)).validate(sample(name))
    checker(name)(sample(name))


def test_a_pattern_does_not_end_before_a_newline() -> None:
    record = {**sample("recovery_points"), "region": "us-east-1\n"}
    with pytest.raises(Mismatch, match="region: 'us-east-1\\\\n' does not match"):
        checker("recovery_points")(record)


def test_a_schema_keyword_the_checks_do_not_implement_is_refused() -> None:
    with pytest.raises(ValueError, match="not implemented: maxItems"):
        compile_schema({"type": "array", "maxItems": 3})


def test_records_of_the_wrong_dataset_are_refused(tmp_path: Path) -> None:
    """A gateway line in a recovery_points file is not a recovery point."""
    write_run(tmp_path)
    gateway = orjson.dumps(sample("gateways"))
    rewrite(tmp_path, "recovery_points", 1, lambda line: gateway)
    with pytest.raises(fleetscan.DataError, match=r"line 1: breaks the recovery_points schema: "):
        list(fleetscan.read_records(str(tmp_path)))


# -- any tampering of a run: a DataError naming where, or a clean result ----------------------


@pytest.fixture(scope="module")
def base_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("base-run")
    write_run(dest)
    return dest


@st.composite
def tampering(draw: st.DrawFn, manifest: dict[str, Any]) -> tuple[str, int, bytes | None, bool]:
    """(file to change, its line from 1 (0: the manifest), the new line or None to cut the file
    there, whether the manifest's size and checksum of that file are updated to match)."""
    if draw(st.integers(0, 4)) == 0:
        return ("manifest", 0, orjson.dumps(draw(mutated(manifest))), False)
    entry = draw(st.sampled_from(manifest["files"]))
    line = draw(st.integers(1, entry["records"]))
    kind = draw(st.sampled_from(["record", "record", "record", "value", "bytes", "cut"]))
    new: bytes | None = None
    if kind == "record":
        new = orjson.dumps(draw(mutated(sample(entry["dataset"]))))
    elif kind == "value":
        new = orjson.dumps(draw(JSON_VALUES))
    elif kind == "bytes":
        new = draw(st.binary(max_size=40))
    return (entry["path"], line, new, draw(st.booleans()) or kind == "record")


def _apply(dest: Path, change: tuple[str, int, bytes | None, bool]) -> None:
    where, line, new, fix_sums = change
    path = manifest_path(dest)
    if where == "manifest":
        assert new is not None
        path.write_bytes(new)
        return
    manifest = orjson.loads(path.read_bytes())
    lines = (dest / where).read_bytes().split(b"\n")
    if new is None:
        lines = [*lines[: line - 1], b'{"schema_version": 1, "run']
    else:
        lines[line - 1] = new
    data = b"\n".join(lines)
    (dest / where).write_bytes(data)
    if fix_sums:
        entry = next(e for e in manifest["files"] if e["path"] == where)
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        path.write_bytes(orjson.dumps(manifest))


def _outcome(read: Callable[[], object]) -> object:
    """What ``read`` returns, or the refusal it raises (DataError; ConfigError from the audit
    and FileNotFoundError from the readers when no valid manifest is left); anything else (a
    TypeError deep inside, a KeyError) fails the test."""
    try:
        return read()
    except (fleetscan.DataError, fleetscan.ConfigError, FileNotFoundError) as refused:
        return refused


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_tampering_of_a_run_is_read_cleanly_or_refused_naming_where(
    base_run_dir: Path, data: st.DataObject
) -> None:
    manifest = orjson.loads(manifest_path(base_run_dir).read_bytes())
    change = data.draw(tampering(manifest))
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "run"
        shutil.copytree(base_run_dir, dest)
        _apply(dest, change)

        async def audited() -> AuditResult:
            with anyio.fail_after(HANG_GUARD_SECONDS):
                return await fleetscan.audit(str(dest), fleetscan.Policy.single("1d"))

        def read_all(dataset: str) -> list[dict[str, Any]]:
            return list(fleetscan.read_records(str(dest), dataset))

        outcomes = [_outcome(lambda: anyio.run(audited))]
        outcomes += [_outcome(functools.partial(read_all, d)) for d in ("gateways", "errors")]
        outcomes.append(_outcome(functools.partial(read_all, "recovery_points")))
        for outcome in outcomes:
            if isinstance(outcome, fleetscan.DataError):
                assert outcome.where.startswith(str(dest)), outcome.where
                assert outcome.line is None or outcome.line >= 1
                assert "\n" not in str(outcome)
                if change[0] != "manifest" and outcome.line is not None:
                    assert outcome.where == str(dest / change[0])
            elif isinstance(outcome, fleetscan.ConfigError | FileNotFoundError):
                # The manifest no longer says it is one: there is no run to audit or read.
                assert change[0] == "manifest"
                assert "\n" not in str(outcome)
            else:
                assert isinstance(outcome, AuditResult | list), outcome
