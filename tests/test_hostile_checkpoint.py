"""A checkpoint read back is untrusted input: torn, tampered or wrong-typed, it is either a
checkpoint whose every field is sound, or refused as bad input naming the file and line (on S3,
the object), never a traceback and never a run resumed into something else.

The cases the adversarial review found go through the real command (``fleetscan scan --resume``,
exit 2, one line, nothing on disk touched); the property tests throw arbitrary mutations of a real
checkpoint at the reader, in the style of test_hostile_config.py and test_hostile_responses.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import boto3
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic_run import DT, RUN, RUN_ID, session, unit_key, unit_records

from fleetscan import ConfigError, ScanConfig
from fleetscan._config import run_config, stored_config
from fleetscan._sinks import S3Options, S3Sink
from fleetscan._sinks._checkpoint import Checkpoint, parse_checkpoint, read_checkpoint
from fleetscan.emulator import Stack

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = stored_config(
    ScanConfig(org=True, role_name="Reader", regions=("us-east-1", "eu-west-1"), rate=5.0)
)
Mutation = Callable[[list[Any]], None]


def base_run(dest: Path) -> Path:
    """An interrupted run of four committed units, its configuration kept: its checkpoint."""
    anyio.run(lambda: session(dest, range(4), resume=False, end="interrupted", config=CONFIG))
    return dest / "checkpoints" / DT / f"{RUN_ID}.ndjson"


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return base_run(tmp_path_factory.mktemp("base")).read_bytes()


def entries_of(data: bytes) -> list[Any]:
    return [orjson.loads(line) for line in data.splitlines()]


def encode(entries: list[Any]) -> bytes:
    """One JSON document a line (json, not orjson: a tampered integer may exceed 64 bits)."""
    return b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)


# -- the review's cases, through the command ---------------------------------------------------

PATH = f"recovery_points/{DT}/{RUN_ID}-00000.ndjson"
WHERE = f"/somewhere/checkpoints/{DT}/{RUN_ID}.ndjson"
PATH_ENTRY = {
    "dataset": "recovery_points",
    "path": PATH,
    "records": 3,
    "bytes": 9,
    "sha256": "0" * 64,
}


def _set(line: int, *keys: str | int, value: Any) -> Mutation:
    def mutate(entries: list[Any]) -> None:
        target = entries[line - 1]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _delete(line: int, key: str) -> Mutation:
    def mutate(entries: list[Any]) -> None:
        del entries[line - 1][key]

    return mutate


def _replace(line: int, value: Any) -> Mutation:
    def mutate(entries: list[Any]) -> None:
        entries[line - 1] = value

    return mutate


#: (what the review did, the line it did it on, the words of the refusal)
TAMPERED: list[tuple[Mutation, int, str]] = [
    (_delete(2, "files"), 2, "has no 'files'"),
    (_replace(3, [{"files": []}]), 3, "not a JSON object"),
    (_set(2, "next_seq", value="abc"), 2, "next_seq must be an object"),
    (_set(2, "next_seq", "recovery_points", value="abc"), 2, "next_seq.recovery_points must be"),
    (_set(2, "units", value=5), 2, "units must be a list"),
    (_set(2, "files", 0, "dataset", value="volumes"), 2, "'volumes' is not one of"),
    (_set(2, "files", 0, "path", value="../../../../outside.txt"), 2, "is not a data file of run"),
    (_set(1, "run_id", value="another-run"), 1, "says run 'another-run'"),
    (_set(3, "files", 0, "path", value=PATH), 3, f"names {PATH} again"),
    (_set(2, "files", value=[PATH_ENTRY, PATH_ENTRY]), 2, f"files[1] names {PATH} twice"),
    (_set(2, "files", value=[PATH_ENTRY, None]), 2, "files[1] must be an object, not None"),
    (_set(3, "next_seq", "recovery_points", value=1), 3, "a resumed session would write over it"),
    (_set(1, "started_at", value="2025-12-31T23:00:00.000Z"), 1, "is not in dt=2026-01-02"),
    (_set(1, "config", "regions", value=["us-east-1", "../etc"]), 1, "config.regions[1]"),
    (_set(1, "config", "external_id", value="the secret itself"), 1, "config.external_id"),
    (_set(2, "units", value=[["111111111111", "eu-west-1", "*"]] * 2), 2, "already checkpointed"),
    (_set(2, "organization_records", value="abc"), 2, "organization_records must be a list"),
    (_set(2, "organization_records", value=[[None, "errors"]]), 2, "must be [organization, "),
    (_set(2, "organization_records", value=[[5, "errors", 1]]), 2, "names organization 5"),
    (_set(2, "organization_records", value=[["o-1", "volumes", 1]]), 2, "dataset 'volumes'"),
    (_set(2, "organization_records", value=[["o-1", "errors", -1]]), 2, "count must be a whole"),
]


@pytest.mark.parametrize(
    ("mutate", "line", "words"), TAMPERED, ids=[words for _, _, words in TAMPERED]
)
def test_a_tampered_checkpoint_is_refused_naming_its_line(
    base_checkpoint: bytes, mutate: Mutation, line: int, words: str
) -> None:
    entries = entries_of(base_checkpoint)
    mutate(entries)
    with pytest.raises(ConfigError) as refused:
        parse_checkpoint(encode(entries), WHERE, run_id=RUN_ID, partition=DT)
    assert refused.value.field == "resume"
    assert refused.value.problem.startswith(f"{WHERE}: line {line}: ")
    assert words in refused.value.problem
    assert "the secret itself" not in refused.value.problem


def test_the_records_per_organization_are_those_of_the_files_or_unknown_for_older_entries(
    base_checkpoint: bytes,
) -> None:
    """Each entry counts the records it made durable per organization, so a resumed run's
    manifest counts every session's; an entry written before fleetscan counted them (no such
    field) leaves the count unknown rather than short."""
    checkpoint = parse_checkpoint(base_checkpoint, WHERE, run_id=RUN_ID, partition=DT)
    files: Counter[tuple[str | None, str]] = Counter()
    for f in checkpoint.files:
        files[(None, f.dataset)] += f.records
    assert checkpoint.organization_records == +files
    assert sum(files.values()) > 0

    entries = entries_of(base_checkpoint)
    del entries[2]["organization_records"]
    older = parse_checkpoint(encode(entries), WHERE, run_id=RUN_ID, partition=DT)
    assert older.organization_records is None
    assert older.units == checkpoint.units


#: Through the command: a traceback before (KeyError), accepted then unreadable, another run.
COMMAND_CASES = [TAMPERED[0], TAMPERED[6], TAMPERED[7]]


@pytest.mark.parametrize(
    ("mutate", "line", "words"), COMMAND_CASES, ids=[words for _, _, words in COMMAND_CASES]
)
def test_the_command_refuses_a_tampered_checkpoint_with_one_line_and_touches_nothing(
    base_checkpoint: bytes, tmp_path: Path, mutate: Mutation, line: int, words: str
) -> None:
    dest = tmp_path / "out"
    checkpoint = base_run(dest)
    entries = entries_of(base_checkpoint)
    mutate(entries)
    checkpoint.write_bytes(encode(entries))
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    done = subprocess.run(
        [sys.executable, "-m", "fleetscan", "scan", "--output", str(dest), "--resume", "latest"],
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSCAN_"))},
        capture_output=True,
        timeout=120,
        check=False,
    )

    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    (message,) = stderr.splitlines()
    assert message.startswith(f"fleetscan: error: resume: {checkpoint}: line {line}: "), message
    assert words in message
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fifo_at", ["checkpoint", "manifest"])
def test_a_fifo_at_a_checkpoint_or_manifest_name_is_refused_not_waited_on(
    tmp_path: Path, fifo_at: str
) -> None:
    """Reading a FIFO waits for a writer that never comes: the resume would hang for good."""
    dest = tmp_path / "out"
    checkpoint = base_run(dest)
    name = checkpoint if fifo_at == "checkpoint" else dest / "manifests" / DT / f"{RUN_ID}.json"
    name.unlink()
    os.mkfifo(name)

    done = subprocess.run(
        [sys.executable, "-m", "fleetscan", "scan", "--output", str(dest), "--resume", RUN_ID],
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETSCAN_"))},
        capture_output=True,
        timeout=120,  # a hang guard: the refusal takes a second or two
        check=False,
    )

    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr == f"fleetscan: error: output: {name} is not a regular file\n"


# -- S3: the same reader, the object named ------------------------------------------------------

BUCKET = "fleetscan-tampered"
DEST = f"s3://{BUCKET}/lake/"


async def test_a_tampered_s3_checkpoint_entry_is_refused_naming_the_object(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.moto_endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    options = S3Options(commit_min_bytes=0)
    sink = S3Sink(
        DEST, RUN, compress="none", max_object_bytes=64 << 20, options=options, config=CONFIG
    )
    await sink.start()
    for index in range(3):
        for record in unit_records(index):
            await sink.write(record)
        sink.unit_done(unit_key(index), {})
        await sink.commit()
    await sink.abort("interrupted", {})
    key = f"lake/checkpoints/{DT}/{RUN_ID}/000002.json"
    entry = orjson.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    entry["files"][0]["path"] = "../../../../outside.txt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=orjson.dumps(entry))

    done = await anyio.run_process(
        [sys.executable, "-m", "fleetscan", "scan", "--output", DEST, "--resume", RUN_ID],
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack_env,
        check=False,
    )  # fmt: skip

    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    (message,) = stderr.splitlines()
    assert message.startswith(f"fleetscan: error: resume: s3://{BUCKET}/{key}: files[0].path")
    assert "is not a data file of run" in message


# -- properties -----------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        ["none", "gzip", "recovery_points", "errors", "*", "2026-01-02T03:04:00Z", RUN_ID, PATH]
    ),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def tampered(draw: st.DrawFn, base: bytes) -> bytes:
    """A real checkpoint with a few mutations: a value replaced, a key removed or added, a line
    replaced by any JSON or any bytes, lines dropped or repeated, the file cut or spliced."""
    entries = entries_of(base)
    for _ in range(draw(st.integers(1, 3))):
        line = draw(st.integers(0, len(entries) - 1))
        kind = draw(st.sampled_from(["replace", "replace", "delete", "add", "line", "drop", "dup"]))
        places = _paths(entries[line])
        place = draw(st.sampled_from(places))
        if kind in ("replace", "delete", "add") and place:
            parent = entries[line]
            for key in place[:-1]:
                parent = parent[key]
            if kind == "replace":
                parent[place[-1]] = draw(JSON_VALUES)
            elif kind == "delete" and isinstance(parent, dict):
                del parent[place[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif kind == "line":
            entries[line] = draw(JSON_VALUES)
        elif kind == "drop" and len(entries) > 1:
            del entries[line]
        elif kind == "dup":
            entries.insert(line, entries[line])
    data = encode(entries)
    surgery = draw(st.sampled_from(["none", "none", "cut", "splice"]))
    at = draw(st.integers(0, len(data)))
    if surgery == "cut":
        data = data[:at]
    elif surgery == "splice":
        data = data[:at] + draw(st.binary(max_size=12)) + data[at:]
    return data


def _assert_sound(checkpoint: Checkpoint, data: bytes) -> None:
    """What a resume relies on, whatever the checkpoint said."""
    assert checkpoint.run_id == RUN_ID
    assert checkpoint.compression in ("none", "gzip")
    suffix = ".ndjson.gz" if checkpoint.compression == "gzip" else ".ndjson"
    pattern = re.compile(
        rf"(recovery_points|gateways|errors)/{DT}/{RUN_ID}-([0-9]{{5,}}){re.escape(suffix)}"
    )
    paths = [f.path for f in checkpoint.files]
    assert len(paths) == len(set(paths))
    for f in checkpoint.files:
        match = pattern.fullmatch(f.path)
        assert match is not None, f.path
        assert match[1] == f.dataset
        assert int(match[2]) < checkpoint.next_seq[f.dataset], "a committed name would be reused"
        assert min(f.records, f.bytes) >= 0
        assert re.fullmatch("[0-9a-f]{64}", f.sha256)
    for unit in checkpoint.units:
        assert isinstance(unit, tuple)
        assert unit
        assert all(isinstance(p, str) and p for p in unit)
    assert data[: checkpoint.intact_bytes].endswith(b"\n")
    if checkpoint.organization_records is not None:
        for (key, dataset), count in checkpoint.organization_records.items():
            assert key is None or isinstance(key, str)
            assert dataset in ("recovery_points", "gateways", "errors")
            assert isinstance(count, int)
            assert count >= 0
    if checkpoint.config is not None:
        assert isinstance(run_config(checkpoint.config), ScanConfig)


def attempt(read: Callable[[], Checkpoint]) -> Checkpoint | ConfigError:
    """What ``read`` returns, or the ConfigError it raises (any other exception fails the test)."""
    try:
        return read()
    except ConfigError as refused:
        return refused


@pytest.mark.parametrize("container", ["file", "s3"])
@SETTINGS
@given(data=st.data())
def test_any_tampering_of_a_checkpoint_is_read_soundly_or_refused_naming_where(
    base_checkpoint: bytes, container: str, data: st.DataObject
) -> None:
    """A local file (lines) or S3 entries (one object each, named by its URL)."""
    content = data.draw(tampered(base_checkpoint))
    if container == "file":
        named = rf"{re.escape(WHERE)}(: line [0-9]+: | is empty| line 1 is incomplete)"
        outcome = attempt(lambda: parse_checkpoint(content, WHERE, run_id=RUN_ID, partition=DT))
    else:
        where = f"s3://bucket/lake/checkpoints/{DT}/{RUN_ID}/"
        documents = content.split(b"\n")
        if documents[-1] == b"":
            documents.pop()
        entries = [(f"{where}{n:06d}.json", document) for n, document in enumerate(documents)]
        named = rf"{re.escape(where)}([0-9]{{6}}\.json: | is empty)"
        outcome = attempt(lambda: read_checkpoint(entries, where, run_id=RUN_ID, partition=DT))
        content = b"".join(document + b"\n" for document in documents)
        if isinstance(outcome, Checkpoint):
            outcome.intact_bytes = len(content)
    if isinstance(outcome, Checkpoint):
        _assert_sound(outcome, content)
        return
    assert outcome.field == "resume"
    assert "\n" not in outcome.problem
    assert re.match(named, outcome.problem), outcome.problem
