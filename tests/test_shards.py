"""Shards (``--shard K/N``): one run over several processes, each its share of the accounts.

Every scan here is a real ``python -m fleetscan scan`` subprocess against the emulated
organization over HTTP, writing to a local directory or to moto's S3 server; shards run at the
same time. The run they write is checked as a reader checks it: one manifest that lists every
shard's files (sizes, checksums, record counts, the schemas), and records that are exactly the
emulated fleet's, none twice.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import boto3
import orjson
import pytest
from ground_truth import assert_matches_truth, run_records
from output_checks import check_run_output
from s3_proxy import FaultyS3Proxy
from scan_runs import command, env, slow

from fleetscan import ConfigError, ScanConfig, finalize_run
from fleetscan._config import stored_config
from fleetscan._records import DATASETS
from fleetscan._shards import (
    Shard,
    make_plan,
    plan_relpath,
    resolve_shard,
    write_plan,
    write_run_manifest,
)
from fleetscan._sinks import RunStore, find_manifest, read_manifest
from fleetscan.emulator import Stack

BUCKET = "fleetscan-shards"
DEST = f"s3://{BUCKET}/lake/"


def shard_command(
    stack: Stack, output: Path | str, run_id: str, shard: str, *extra: str
) -> list[str]:
    return command(stack, output, "--run-id", run_id, "--shard", shard, *extra)


def run_shards(
    stack: Stack, stack_env: dict[str, str], output: Path | str, run_id: str, shards: list[str]
) -> list[subprocess.CompletedProcess[bytes]]:
    """Start every shard at once, wait for all of them."""
    procs = [
        subprocess.Popen(
            shard_command(stack, output, run_id, shard),
            env=env(stack_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for shard in shards
    ]
    done = []
    for proc, shard in zip(procs, shards, strict=True):
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        assert proc.returncode in (0, 3), f"shard {shard}: {err.decode()}"
    return done


def shard_manifests(output: Path, run_id: str) -> list[dict[str, Any]]:
    return [
        json.loads(path.read_bytes())
        for path in sorted((output / "shards" / run_id).glob("shard-*.json"))
    ]


def test_three_shards_at_once_write_one_run_that_is_the_ground_truth(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "nightly-1", ["1/3", "2/3", "3/3"])

    manifest, _ = check_run_output(out, "nightly-1")
    assert manifest["status"] == "complete"
    assert manifest["manifest_version"] == 2
    assert manifest["shards"]["count"] == 3
    assert manifest["shards"]["missing"] == []
    assert [s["status"] for s in manifest["shards"]["shards"]] == ["complete"] * 3
    assert len(list(out.glob("manifests/dt=*/*.json"))) == 1, "one run, one manifest"
    rows = run_records(str(out), "nightly-1")
    assert_matches_truth(stack.fleet, rows)
    assert {r["run_id"] for rs in rows.values() for r in rs} == {"nightly-1"}

    # The shares are disjoint and cover the organization; each shard's files carry its name.
    shares = [
        {a["id"] for a in m["summary"]["accounts_scanned"]}
        for m in shard_manifests(out, "nightly-1")
    ]
    assert sum(len(s) for s in shares) == len(set().union(*shares))
    scanned = {a["id"] for a in manifest["summary"]["accounts_scanned"]}
    assert scanned == set().union(*shares)
    assert all(shares), "12 accounts over 3 shards: every shard has some"
    for entry in manifest["files"]:
        assert ".shard" in entry["path"].rpartition("/")[2]
    # Every account's calls are recorded, for the next run's plan.
    assert all(a["calls"] > 0 for a in manifest["summary"]["accounts_scanned"])


def test_a_shard_killed_and_started_again_completes_the_run_exactly(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    slow(stack)
    out = tmp_path / "out"
    argv = {k: shard_command(stack, out, "r-kill", f"{k}/3") for k in (1, 2, 3)}
    procs = {k: subprocess.Popen(argv[k], env=env(stack_env), stderr=subprocess.PIPE) for k in argv}
    # Shard 2 is killed once it has committed something (a checkpoint line past its header).
    checkpoints = out / "checkpoints"
    wait_for(lambda: _lines(checkpoints, "r-kill.shard2of3") >= 2, procs[2])
    procs[2].send_signal(signal.SIGKILL)
    procs[2].communicate(timeout=60)
    for k in (1, 3):
        _, err = procs[k].communicate(timeout=300)
        assert procs[k].returncode == 0, err.decode()
    assert not list(out.glob("manifests/dt=*/*.json")), (
        "no run manifest while a shard is unfinished"
    )

    again = subprocess.run(
        argv[2], env=env(stack_env), capture_output=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr.decode()
    manifest, _ = check_run_output(out, "r-kill")  # no file of the killed session is left unlisted
    assert manifest["status"] == "complete"
    assert manifest["shards"]["written_by"] == "shard 2/3"
    rows = run_records(str(out), "r-kill")
    assert_matches_truth(stack.fleet, rows)
    (second,) = [m for m in shard_manifests(out, "r-kill") if m["run_id"] == "r-kill.shard2of3"]
    assert second["summary"]["units_skipped_as_done"] > 0, "the retry resumed its checkpoint"
    # The killed shard's first session counted too: per organization, every record of the run.
    (organization,) = manifest["organizations"]
    assert organization["records"] == {dataset: len(rows[dataset]) for dataset in DATASETS}


def _lines(checkpoints: Path, shard_id: str) -> int:
    found = list(checkpoints.glob(f"dt=*/{shard_id}.ndjson"))
    return found[0].read_bytes().count(b"\n") if found else 0


def wait_for(condition: Any, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, "the shard ended before it got that far"
        assert time.monotonic() < deadline, "the shard never got that far"
        time.sleep(0.01)


def test_a_finished_shard_started_again_does_nothing_and_succeeds(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "r-again", ["1/2", "2/2"])
    first = check_run_output(out, "r-again")[0]
    calls = stack.emulator.counters.snapshot()
    again = subprocess.run(
        shard_command(stack, out, "r-again", "2/2"), env=env(stack_env), capture_output=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()
    assert stack.emulator.counters.snapshot() == calls, "no AWS call at all"
    assert check_run_output(out, "r-again")[0] == first, "the run's manifest is untouched"


def test_shards_finishing_at_the_same_instant_write_one_run_manifest(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """The last step of every shard, finalize with require_all, run by 8 threads released at
    once after every shard has finished: one creates the manifest, the others read it."""
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "r-race", ["1/2", "2/2"])
    (written,) = out.glob("manifests/dt=*/r-race.json")
    written.unlink()
    results = race_finalize(str(out), "r-race", 8)
    assert len({orjson.dumps(r) for r in results}) == 1, "every finisher sees the same manifest"
    assert json.loads(written.read_bytes()) == results[0]
    assert [p.name for p in written.parent.iterdir()] == ["r-race.json"], "no temporary left"


def race_finalize(dest: str, run_id: str, writers: int) -> list[dict[str, Any]]:
    barrier = threading.Barrier(writers)
    results: list[dict[str, Any]] = []

    async def finish(who: int) -> None:
        async with RunStore(dest) as store:
            barrier.wait()
            manifest = await write_run_manifest(
                store, run_id, version="test", written_by=f"shard {who}", require_all=True
            )
        assert manifest is not None
        results.append(manifest)

    threads = [
        threading.Thread(target=anyio.run, args=(finish, n), kwargs={"backend": "asyncio"})
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == writers
    return results


def _finalize(
    out: Path, run_id: str, stack_env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """``fleetscan finalize --output OUT --run-id RUN_ID``, as a user runs it."""
    argv = [sys.executable, "-m", "fleetscan", "finalize", "--output", str(out), "--run-id", run_id]
    return subprocess.run(argv, env=env(stack_env), capture_output=True, timeout=120, check=False)


def test_finalize_a_run_that_lost_a_shard_says_partial_and_names_it(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "r-lost", ["1/3", "3/3"])
    assert not list(out.glob("manifests/dt=*/*.json"))
    done = _finalize(out, "r-lost", stack_env)
    assert done.returncode == 3, done.stderr.decode()
    assert "partial" in done.stderr.decode()
    assert "2/3" in done.stderr.decode()
    manifest, _rows = check_run_output(out, "r-lost")
    assert manifest["status"] == "partial"
    assert manifest["shards"]["missing"] == ["2/3"]
    assert manifest["shards"]["written_by"] == "fleetscan finalize"
    plan = json.loads((out / plan_relpath("r-lost")).read_bytes())
    kept = {a["id"] for a in plan["accounts"] if a["shard"] != 2}
    assert_matches_truth(stack.fleet, run_records(str(out), "r-lost"), accounts=kept)
    # Idempotent: again, the same manifest, and the same answer.
    twice = _finalize(out, "r-lost", stack_env)
    assert twice.returncode == 3
    assert check_run_output(out, "r-lost")[0] == manifest
    # The lost shard coming back later is refused: the run is final, and its files would not be.
    calls = stack.emulator.counters.snapshot()
    late = subprocess.run(
        shard_command(stack, out, "r-lost", "2/3"), env=env(stack_env), capture_output=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert late.returncode == 2, late.stderr.decode()
    assert "finalized without shard 2/3" in late.stderr.decode()
    assert stack.emulator.counters.snapshot() == calls
    assert check_run_output(out, "r-lost")[0] == manifest


def test_finalize_refuses_a_run_that_is_not_sharded(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    done = _finalize(tmp_path, "nope", stack_env)
    assert done.returncode == 2
    assert "no shard plan" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


# -- S3 ----------------------------------------------------------------------------------------


def s3_client(stack: Stack) -> Any:
    client = boto3.client("s3", endpoint_url=stack.moto_endpoint_url)
    client.create_bucket(Bucket=BUCKET)
    return client


def test_three_shards_to_s3_write_one_run_and_race_to_one_manifest(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    s3 = s3_client(stack)
    run_shards(stack, stack_env, DEST, "s3-run", ["1/3", "2/3", "3/3"])
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="lake/")
        for item in page.get("Contents", [])
    ]
    (manifest_key,) = [k for k in keys if k.startswith("lake/manifests/")]
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["status"] == "complete"
    assert manifest["destination"] == DEST
    assert len(manifest["shards"]["shards"]) == 3
    rows = run_records(DEST, "s3-run")
    assert_matches_truth(stack.fleet, rows)
    listed = {"lake/" + f["path"] for f in manifest["files"]}
    data = {k for k in keys if k.split("/")[1] in ("recovery_points", "gateways", "errors")}
    assert data == listed, "every data object of every shard is in the run's manifest"

    # Eight finishers at once on S3: PutObject with If-None-Match, one wins.
    s3.delete_object(Bucket=BUCKET, Key=manifest_key)
    results = race_finalize(DEST, "s3-run", 8)
    assert len({orjson.dumps(r) for r in results}) == 1
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert stored == results[0]


# -- what a shard refuses ------------------------------------------------------------------------


def run_cli(
    stack_env: dict[str, str], *argv: str, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *argv], env=env(stack_env) | extra,
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--shard", "1/3"], "needs run_id"),
        (["--shard", "4/3", "--run-id", "r"], "the shard must be 1 to 3"),
        (["--shard", "0/3", "--run-id", "r"], "the shard must be 1 to 3"),
        (["--shard", "one", "--run-id", "r"], "is not K/N"),
        (["--shard", "1/3", "--run-id", "r", "--resume", "r"], "drop --resume"),
    ],
)
def test_bad_shard_flags_are_usage_errors(
    stack_env: dict[str, str], tmp_path: Path, argv: list[str], problem: str
) -> None:
    done = run_cli(stack_env, "scan", "--org", "--role-name", "R", "--output", str(tmp_path), *argv)
    assert done.returncode == 2
    assert problem in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


@pytest.mark.parametrize(
    ("environ", "shard"),
    [
        ({"JOB_COMPLETION_INDEX": "0", "FLEETSCAN_SHARD_COUNT": "4"}, Shard(1, 4)),
        ({"JOB_COMPLETION_INDEX": "3", "FLEETSCAN_SHARD_COUNT": "4"}, Shard(4, 4)),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "2", "AWS_BATCH_JOB_ARRAY_SIZE": "3"}, Shard(3, 3)),
        (
            {
                "AWS_BATCH_JOB_ARRAY_INDEX": "0",
                "AWS_BATCH_JOB_ARRAY_SIZE": "2",
                "FLEETSCAN_SHARD_COUNT": "2",
            },
            Shard(1, 2),
        ),
    ],
)
def test_shard_auto_reads_the_engines_index(environ: dict[str, str], shard: Shard) -> None:
    assert resolve_shard("auto", environ) == shard


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, "neither JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "0"}, "FLEETSCAN_SHARD_COUNT is not set"),
        ({"JOB_COMPLETION_INDEX": "4", "FLEETSCAN_SHARD_COUNT": "4"}, "outside 0 to 3"),
        ({"JOB_COMPLETION_INDEX": "-1", "FLEETSCAN_SHARD_COUNT": "4"}, "whole number"),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "0"}, "AWS_BATCH_JOB_ARRAY_SIZE is not set"),
        (
            {
                "AWS_BATCH_JOB_ARRAY_INDEX": "0",
                "AWS_BATCH_JOB_ARRAY_SIZE": "3",
                "FLEETSCAN_SHARD_COUNT": "4",
            },
            "FLEETSCAN_SHARD_COUNT is '4' but AWS_BATCH_JOB_ARRAY_SIZE is 3",
        ),
        (
            {
                "AWS_BATCH_JOB_ARRAY_INDEX": "0",
                "AWS_BATCH_JOB_ARRAY_SIZE": "3",
                "JOB_COMPLETION_INDEX": "0",
            },
            "both",
        ),
    ],
)
def test_shard_auto_refuses_missing_or_inconsistent_values(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        resolve_shard("auto", environ)


def test_shard_auto_without_an_engine_is_a_usage_error(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_cli(stack_env, *shard_command(stack, tmp_path, "r", "auto")[3:])
    assert done.returncode == 2, done.stderr.decode()
    assert "neither JOB_COMPLETION_INDEX" in done.stderr.decode()


def test_a_shard_of_another_count_or_other_settings_is_refused(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_cli(stack_env, *shard_command(stack, out, "r-n", "1/3")[3:])
    assert first.returncode == 0, first.stderr.decode()
    other_n = run_cli(stack_env, *shard_command(stack, out, "r-n", "2/4")[3:])
    assert other_n.returncode == 2
    assert "split into 3 shards" in other_n.stderr.decode()
    other_regions = run_cli(
        stack_env, *shard_command(stack, out, "r-n", "2/3")[3:], "--regions", "us-east-1"
    )
    assert other_regions.returncode == 2
    assert "other settings than run r-n's plan: regions" in other_regions.stderr.decode()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: data[: len(data) // 2], "is not JSON"),
        (lambda data: data.replace(b'"shard": 1', b'"shard": 2', 1), "checksum"),
        (lambda data: b"[]", "is not a JSON object"),
    ],
)
def test_a_torn_or_changed_plan_is_refused_naming_it(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path, damage: Any, problem: str
) -> None:
    out = tmp_path / "out"
    first = run_cli(stack_env, *shard_command(stack, out, "r-p", "1/2")[3:])
    assert first.returncode == 0, first.stderr.decode()
    plan = out / plan_relpath("r-p")
    plan.write_bytes(damage(plan.read_bytes()))
    calls = stack.emulator.counters.snapshot()
    second = run_cli(stack_env, *shard_command(stack, out, "r-p", "2/2")[3:])
    assert second.returncode == 2
    assert str(plan) in second.stderr.decode()
    assert problem in second.stderr.decode()
    assert stack.emulator.counters.snapshot() == calls, "refused before any AWS call"


def test_a_changed_shard_manifest_is_refused_by_finalize(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "r-m", ["1/2"])
    (shard_manifest,) = (out / "shards" / "r-m").glob("shard-1-of-2.json")
    document = json.loads(shard_manifest.read_bytes())
    document["files"][0]["path"] = "recovery_points/dt=2020-01-01/other-00000.ndjson"
    shard_manifest.write_text(json.dumps(document))
    done = run_cli(stack_env, "finalize", "--output", str(out), "--run-id", "r-m")
    assert done.returncode == 2
    assert str(shard_manifest) in done.stderr.decode()
    assert "not one of the shard's files" in done.stderr.decode()
    assert not list(out.glob("manifests/dt=*/*.json"))


# -- the plan: balanced by the previous run's calls ----------------------------------------------


def test_the_next_runs_plan_balances_by_each_accounts_calls(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_shards(stack, stack_env, out, "first", ["1/2", "2/2"])
    plan = json.loads((out / plan_relpath("first")).read_bytes())
    assert plan["balanced_by"] == "account id hash"
    sizes = [sum(1 for a in plan["accounts"] if a["shard"] == k) for k in (1, 2)]
    assert abs(sizes[0] - sizes[1]) <= 1, "without history, even counts"

    run_shards(stack, stack_env, out, "second", ["1/2", "2/2"])
    plan = json.loads((out / plan_relpath("second")).read_bytes())
    assert plan["balanced_by"] == "calls of run first"
    first = read_manifest(find_manifest(out, "first"))
    calls = {a["id"]: a["calls"] for a in first["summary"]["accounts_scanned"]}
    assert {a["id"]: a["weight"] for a in plan["accounts"]} == calls
    work = [sum(a["weight"] for a in plan["accounts"] if a["shard"] == k) for k in (1, 2)]
    assert abs(work[0] - work[1]) <= max(calls.values()), "balanced by calls, within one account"
    assert_matches_truth(stack.fleet, run_records(str(out), "second"))


# -- audit ---------------------------------------------------------------------------------------


def test_audit_of_a_sharded_run_equals_audit_of_the_same_fleet_unsharded(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    run_shards(stack, stack_env, sharded, "sharded", ["1/3", "2/3", "3/3"])
    plain = run_cli(stack_env, *command(stack, whole, "--run-id", "whole")[3:])
    assert plain.returncode == 0, plain.stderr.decode()
    reports = {}
    for name, source in (("sharded", sharded), ("whole", whole)):
        report = tmp_path / f"audit-{name}"
        done = run_cli(
            stack_env, "audit", "--input", str(source), "--max-age", "24h",
            "--report-dir", str(report),
        )  # fmt: skip
        assert done.returncode == 4, done.stderr.decode()  # the fleet has stale volumes
        findings = [
            {k: v for k, v in json.loads(line).items() if k not in ("run_id", "age_seconds")}
            for line in (report / "findings.ndjson").read_text().splitlines()
        ]
        reports[name] = sorted(findings, key=lambda f: json.dumps(f, sort_keys=True))
    assert reports["sharded"] == reports["whole"]
    assert reports["whole"]


# -- --workers: N shards as local processes ------------------------------------------------------


def test_workers_scan_one_run_in_several_processes(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [a for a in command(stack, out, "--workers", "3")[3:] if a != "--quiet"]
    done = run_cli(stack_env, *argv)
    assert done.returncode == 0, done.stderr.decode()
    (manifest_path,) = out.glob("manifests/dt=*/*.json")
    run_id = manifest_path.stem
    manifest = check_run_output(out, run_id)[0]
    assert manifest["status"] == "complete"
    assert manifest["shards"]["count"] == 3
    assert f"run {run_id}: complete (3 workers)" in done.stderr.decode()
    assert_matches_truth(stack.fleet, run_records(str(out), run_id))


def test_ctrl_c_stops_every_worker_and_the_same_command_finishes_the_run(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    slow(stack)
    out = tmp_path / "out"
    argv = command(stack, out, "--workers", "2", "--run-id", "r-stop")
    parent = subprocess.Popen(argv, env=env(stack_env), stderr=subprocess.PIPE)
    wait_for(lambda: _lines(out / "checkpoints", "r-stop.shard1of2") >= 2, parent)
    parent.send_signal(signal.SIGINT)
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, err.decode()
    assert "--run-id r-stop" in err.decode()
    statuses = {m["run_id"]: m["status"] for m in shard_manifests(out, "r-stop")}
    assert "interrupted" in statuses.values(), statuses
    assert not list(out.glob("manifests/dt=*/*.json"))

    again = run_cli(stack_env, *argv[3:])
    assert again.returncode == 0, again.stderr.decode()
    assert check_run_output(out, "r-stop")[0]["status"] == "complete"
    assert_matches_truth(stack.fleet, run_records(str(out), "r-stop"))


def test_workers_refuse_shard_and_resume(stack_env: dict[str, str], tmp_path: Path) -> None:
    base = ("scan", "--org", "--role-name", "R", "--output", str(tmp_path), "--workers", "2")
    with_shard = run_cli(stack_env, *base, "--shard", "1/2", "--run-id", "r")
    assert with_shard.returncode == 2
    assert "drop --shard" in with_shard.stderr.decode()
    with_resume = run_cli(stack_env, *base, "--resume", "latest")
    assert with_resume.returncode == 2
    assert "Traceback" not in with_resume.stderr.decode()


def test_a_version_1_manifest_is_still_read(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Runs written before manifest version 2 (no ``shards``) stay readable."""
    out = tmp_path / "out"
    done = run_cli(stack_env, *command(stack, out, "--run-id", "old")[3:])
    assert done.returncode == 0, done.stderr.decode()
    path = find_manifest(out, "old")
    document = json.loads(path.read_bytes())
    assert document["manifest_version"] == 2
    assert document["shards"] is None
    del document["shards"]
    path.write_text(json.dumps({**document, "manifest_version": 1}))
    assert read_manifest(path)["run_id"] == "old"
    assert_matches_truth(stack.fleet, run_records(str(out), "old"))


def _s3_keys(s3: Any, under: str) -> list[str]:
    return [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix="lake/" + under
        )
        for item in page.get("Contents", [])
    ]


def test_on_s3_a_killed_shard_resumes_and_finalize_names_a_lost_one(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    s3 = s3_client(stack)
    slow(stack)
    argv = {k: shard_command(stack, DEST, "s3-kill", f"{k}/3") for k in (1, 2, 3)}
    procs = {k: subprocess.Popen(argv[k], env=env(stack_env), stderr=subprocess.PIPE) for k in argv}

    def entries() -> int:
        return sum("/s3-kill.shard2of3/" in key for key in _s3_keys(s3, "checkpoints/"))

    wait_for(lambda: entries() >= 1, procs[2])
    procs[2].send_signal(signal.SIGKILL)
    procs[2].communicate(timeout=60)
    for k in (1, 3):
        _, err = procs[k].communicate(timeout=300)
        assert procs[k].returncode == 0, err.decode()
    assert not _s3_keys(s3, "manifests/"), "no run manifest while a shard is unfinished"

    again = subprocess.run(
        argv[2], env=env(stack_env), capture_output=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr.decode()
    (key,) = _s3_keys(s3, "manifests/")
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert manifest["status"] == "complete"
    assert manifest["shards"]["written_by"] == "shard 2/3"
    assert_matches_truth(stack.fleet, run_records(DEST, "s3-kill"))
    listed = {"lake/" + f["path"] for f in manifest["files"]}
    data = {k for d in ("recovery_points/", "gateways/", "errors/") for k in _s3_keys(s3, d)}
    assert data == listed, "nothing of the killed session is left outside the manifest"

    # Another run that loses shard 2 for good: finalize writes it partial, naming the share.
    run_shards(stack, stack_env, DEST, "s3-lost", ["1/3", "3/3"])
    done = run_cli(stack_env, "finalize", "--output", DEST, "--run-id", "s3-lost")
    assert done.returncode == 3, done.stderr.decode()
    (key,) = [k for k in _s3_keys(s3, "manifests/") if k.endswith("/s3-lost.json")]
    partial = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert (partial["status"], partial["shards"]["missing"]) == ("partial", ["2/3"])
    plan_key = "lake/" + plan_relpath("s3-lost")
    plan = json.loads(s3.get_object(Bucket=BUCKET, Key=plan_key)["Body"].read())
    kept = {a["id"] for a in plan["accounts"] if a["shard"] != 2}
    assert_matches_truth(stack.fleet, run_records(DEST, "s3-lost"), accounts=kept)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


# -- finalize writes with the run's own settings ----------------------------------------------

#: A KMS key the run's objects are encrypted with (moto's S3 keeps the id it is given).
KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _encryption(head: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"), head.get("BucketKeyEnabled"))


async def test_finalize_writes_a_kms_run_s_manifest_with_the_run_s_own_s3_settings(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    """A run scanned with SSE-KMS, a Bucket Key, SHA-256 checksums and an expected owner loses
    shard 2 for good; `finalize` given none of these flags writes the run's manifest exactly as
    the shard wrote its objects (a bucket policy requiring aws:kms would refuse it otherwise),
    and refuses flags that disagree with the run's plan, naming each and both values."""
    s3 = s3_client(stack)
    owner = stack.management_account_id
    settings = [
        "--sse", "aws:kms", "--sse-kms-key-id", KMS_KEY, "--bucket-key",
        "--checksum-algorithm", "SHA256", "--expected-bucket-owner", owner,
    ]  # fmt: skip
    shard = await anyio.to_thread.run_sync(
        lambda: run_cli(stack_env, *shard_command(stack, DEST, "s3-kms", "1/2", *settings)[3:])
    )
    assert shard.returncode == 0, shard.stderr.decode()

    # Flags that disagree with the plan: exit 2 before anything is written, naming them.
    disagreeing = ["--sse", "AES256", "--expected-bucket-owner", "999988887777"]
    refused = await anyio.to_thread.run_sync(
        lambda: run_cli(stack_env, "finalize", "--output", DEST, "--run-id", "s3-kms", *disagreeing)
    )
    error = refused.stderr.decode()
    assert refused.returncode == 2, error
    assert "error: --sse: run s3-kms's is 'aws:kms', this command gives 'AES256'" in error
    assert f"--expected-bucket-owner: run s3-kms's is '{owner}', this command gives " in error
    assert "Traceback" not in error
    assert not _s3_keys(s3, "manifests/")

    async with FaultyS3Proxy(stack.moto_endpoint_url, owner=owner) as proxy:
        argv = ["finalize", "--output", DEST, "--run-id", "s3-kms"]
        done = await anyio.to_thread.run_sync(
            lambda: run_cli(stack_env, *argv, AWS_ENDPOINT_URL_S3=proxy.url)
        )
    assert done.returncode == 3, done.stderr.decode()
    (key,) = _s3_keys(s3, "manifests/")
    (put,) = [seen for seen in proxy.requests("PutObject") if seen.status == 200]
    assert put.key == key
    assert put.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert put.headers["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY
    assert put.headers["x-amz-server-side-encryption-bucket-key-enabled"] == "true"
    assert put.headers["x-amz-checksum-sha256"] == put.body_sha256
    # The plan is read before the run's owner is known; every request after it names the owner.
    assert proxy.seen[0].key == "lake/" + plan_relpath("s3-kms")
    assert {seen.headers.get("x-amz-expected-bucket-owner") for seen in proxy.seen[1:]} == {owner}

    def head(key: str) -> dict[str, Any]:
        answer: dict[str, Any] = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        return answer

    manifest = head(key)
    # The shard's objects: its data, its manifest, the run's plan (which the shard wrote).
    shard_written = [head(k) for k in _s3_keys(s3, "shards/") + _s3_keys(s3, "recovery_points/")]
    assert len(shard_written) >= 3
    assert _encryption(manifest) == ("aws:kms", KMS_KEY, True)
    assert all(_encryption(h) == _encryption(manifest) for h in shard_written)
    assert all("ChecksumSHA256" in h for h in [manifest, *shard_written])

    # The same values again are fine (and the manifest, once written, stays).
    again = await anyio.to_thread.run_sync(
        lambda: run_cli(stack_env, "finalize", "--output", DEST, "--run-id", "s3-kms", *settings)
    )
    assert again.returncode == 3, again.stderr.decode()
    assert _s3_keys(s3, "manifests/") == [key]


async def _plan_without(dest: str, run_id: str, dropped: tuple[str, ...], **settings: Any) -> None:
    """A plan of one shard that never finished, whose stored settings lack ``dropped`` (as a
    plan written before fleetscan kept them would)."""
    config = stored_config(ScanConfig(org=True, role_name="R", **settings))
    document = make_plan(
        run_id=run_id,
        started_at=dt.datetime(2026, 12, 2, tzinfo=dt.UTC),
        count=1,
        config={key: value for key, value in config.items() if key not in dropped},
        accounts=[],
        calls={},
        balanced_by="account id hash",
    )
    async with RunStore(dest) as store:
        await write_plan(store, run_id, document)


async def test_finalize_writes_a_local_run_s_manifest_with_the_run_s_file_mode(
    tmp_path: Path,
) -> None:
    """The run's --file-mode, as its plan keeps it; a plan that keeps none: the argument's, or
    0600 as before; another mode than the plan's is refused, naming both."""
    await _plan_without(str(tmp_path), "kept", (), file_mode=0o640)
    await _plan_without(str(tmp_path), "older", ("file_mode",), file_mode=0o640)
    await _plan_without(str(tmp_path), "older-given", ("file_mode",), file_mode=0o640)

    with pytest.raises(ConfigError) as refused:
        await finalize_run(str(tmp_path), "kept", file_mode=0o600)
    assert refused.value.field == "--file-mode"
    assert "run kept's is 0o640, this command gives 0o600" in refused.value.problem
    kept = await finalize_run(str(tmp_path), "kept")
    older = await finalize_run(str(tmp_path), "older")
    given = await finalize_run(str(tmp_path), "older-given", file_mode=0o604)
    assert {m["status"] for m in (kept, older, given)} == {"partial"}
    modes = {
        run_id: find_manifest(tmp_path, run_id).stat().st_mode & 0o777
        for run_id in ("kept", "older", "older-given")
    }
    assert modes == {"kept": 0o640, "older": 0o600, "older-given": 0o604}


async def test_finalize_of_a_run_whose_plan_keeps_no_s3_settings_writes_with_its_arguments(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    """Older runs keep today's behaviour: what the plan does not keep is the arguments'."""
    s3 = s3_client(stack)
    s3_keys = ("sse", "sse_kms_key_id", "bucket_key", "checksum_algorithm")
    await _plan_without(DEST, "older", (*s3_keys, "expected_bucket_owner"))
    manifest = await finalize_run(
        DEST, "older", sse="aws:kms", sse_kms_key_id=KMS_KEY, checksum_algorithm="SHA256"
    )
    assert manifest["status"] == "partial"
    (key,) = _s3_keys(s3, "manifests/")
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert _encryption(head)[:2] == ("aws:kms", KMS_KEY)
    assert "ChecksumSHA256" in head
