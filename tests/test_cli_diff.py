"""`fleetscan diff`, run as a real subprocess over three scans of an emulated fleet that changes
between them.

Between run 1 and run 2 an hour passes on the fleet (every volume takes a new recovery point, as
old as its last one was), except one volume whose recovery point is pinned (a stuck snapshot
pipeline); a gateway is deleted and a volume is added. Between run 2 and run 3 another hour
passes and a gateway goes offline. The expected changes come from the fleet's ground truth
before and after each change, never from fleetscan's own output.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from fleetscan_cli import run_cli as _fleetscan
from ground_truth import assert_matches_truth, run_records

from fleetscan._records import parse_time
from fleetscan._sinks import find_manifest, read_manifest
from fleetscan.emulator import (
    FaultRule,
    Faults,
    Fleet,
    FleetSpec,
    GroundTruth,
    Stack,
    start_stack,
)

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
HOUR = 3600
#: How far apart the pinned volume's age must be from every other volume's, so that an objective
#: set between its ages at run 1 and run 2 separates it from them (each scan takes seconds).
SEPARATION = 30.0


@dataclass
class Snapshot:
    """One run, and the fleet as it was while the run scanned it."""

    run_id: str
    truth: GroundTruth
    epoch: dt.datetime
    started: dt.datetime
    ended: dt.datetime

    def stale(self, objective: float) -> dict[str, bool]:
        """Each volume's verdict from ground truth: its age at the fleet's epoch plus the time
        from the epoch to the scan (which read it somewhere between the run's start and end)."""
        low = (self.started - self.epoch).total_seconds()
        high = (self.ended - self.epoch).total_seconds() + 0.002
        verdicts = {}
        for rp in self.truth.recovery_points:
            early, late = rp.age_seconds + low > objective, rp.age_seconds + high > objective
            assert early == late, f"{objective}s is too close to the age of {rp.volume_arn}"
            verdicts[rp.volume_arn] = early
        return verdicts

    @property
    def volumes(self) -> set[str]:
        return {rp.volume_arn for rp in self.truth.recovery_points}


@dataclass
class Runs:
    stack: Stack
    env: dict[str, str]
    output: Path
    runs: list[Snapshot]
    #: The volume whose recovery point stops advancing after run 1.
    pinned: str
    pinned_time: dt.datetime
    removed_gateway: str
    added_volume: str
    offline_gateway: str


def _snapshot(fleet: Fleet, output: Path, run_id: str) -> Snapshot:
    manifest = read_manifest(find_manifest(output, run_id))
    started, ended = parse_time(manifest["started_at"]), parse_time(manifest["ended_at"])
    assert started is not None
    assert ended is not None
    truth = fleet.ground_truth(regions=REGIONS)
    return Snapshot(run_id, truth, fleet.spec.epoch, started, ended)


def _pick_pinned(truth: GroundTruth) -> tuple[str, dt.datetime]:
    """The volume whose age is farthest from every other volume's, now and an hour later (when
    every other volume is an hour younger relative to it)."""
    ages = [rp.age_seconds for rp in truth.recovery_points]

    def distance(age: float) -> float:
        return min(abs(a - shift - age) for a in ages if a != age for shift in (0, HOUR))

    best = max(truth.recovery_points, key=lambda rp: distance(rp.age_seconds))
    assert distance(best.age_seconds) > SEPARATION
    return best.volume_arn, best.recovery_point_time


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    home = tmp_path_factory.mktemp("aws-home")
    output = tmp_path_factory.mktemp("cli-diff") / "inventory"
    # The fleet starts two hours in the past, so two hours passing on it stay before now.
    epoch = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    with start_stack(FleetSpec(seed=7, accounts=12, regions=REGIONS, epoch=epoch)) as stack:
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
        fleet = stack.fleet

        def scan() -> Snapshot:
            run_id = f"20261202T0{len(snapshots)}0000Z-d1ff00"
            proc = _fleetscan(
                "scan", "--org", "--role-name", stack.role_name, "--regions", ",".join(REGIONS),
                "--output", output, "--run-id", run_id, "--quiet",
                env=env,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            # The emulator served the fleet as changed so far, exactly.
            assert_matches_truth(fleet, run_records(str(output), run_id))
            return _snapshot(fleet, output, run_id)

        snapshots: list[Snapshot] = []
        snapshots.append(scan())
        pinned, pinned_time = _pick_pinned(snapshots[0].truth)
        readable = [
            g
            for g in fleet.iter_gateways(REGIONS)
            if g.is_cached and g.connected and len(g.volumes) >= 2
            and not any(v.arn == pinned for v in g.volumes)
        ]  # fmt: skip
        removed, grown, offline = readable[0], readable[1], readable[2]
        fleet.pin_recovery_point(pinned, pinned_time)
        fleet.remove_gateway(removed.arn)
        fleet.add_volume(grown.arn)
        fleet.advance(HOUR)
        time.sleep(2)  # the pinned volume's age at run 2 is seconds past its age at run 1
        snapshots.append(scan())
        (added,) = snapshots[1].volumes - snapshots[0].volumes
        fleet.disconnect_gateway(offline.arn)
        fleet.advance(HOUR)
        snapshots.append(scan())
        yield Runs(
            stack, env, output, snapshots, pinned, pinned_time, removed.arn, added, offline.arn
        )


def _changes(stdout: str) -> dict[str, set[str]]:
    """The NDJSON on stdout: for each kind of change, the volumes (or gateways) it names."""
    found: dict[str, set[str]] = {}
    for line in stdout.splitlines():
        change = orjson.loads(line)
        found.setdefault(change["change"], set()).add(change["volume_arn"] or change["gateway_arn"])
    return found


def _expected(
    before: Snapshot, after: Snapshot, objective: float, runs: Runs
) -> dict[str, set[str]]:
    was, now = before.stale(objective), after.stale(objective)
    both = before.volumes & after.volumes
    offline_before = {arn for (_, _, arn, _) in before.truth.gateway_errors}
    offline_after = {arn for (_, _, arn, _) in after.truth.gateway_errors}
    gateways_before = {g.gateway_arn for g in before.truth.gateways}
    gateways_after = {g.gateway_arn for g in after.truth.gateways}
    expected = {
        "stuck": {runs.pinned},
        "new-stale": {v for v in both if now[v] and not was[v]},
        "recovered": {v for v in both if was[v] and not now[v]},
        "gone": {
            rp.volume_arn
            for rp in before.truth.recovery_points
            if rp.volume_arn not in after.volumes and rp.gateway_arn not in offline_after
        },
        "appeared": after.volumes - before.volumes,
        "gateway-gone": gateways_before - gateways_after,
        "gateway-appeared": gateways_after - gateways_before,
        "gateway-unreachable": (offline_after - offline_before) & gateways_before,
    }
    return {kind: arns for kind, arns in expected.items() if arns}


def test_from_to_reports_exactly_the_fleet_changes(runs: Runs) -> None:
    first, second, _ = runs.runs
    # An objective between the pinned volume's age at run 1 and at run 2: it turns stale.
    objective = round((first.ended - runs.pinned_time).total_seconds()) + 1
    assert objective < (second.started - runs.pinned_time).total_seconds()
    proc = _fleetscan(
        "diff", "--input", runs.output, "--from", first.run_id, "--to", second.run_id,
        "--max-age", f"{objective}s",
        env={},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = _changes(proc.stdout)
    want = _expected(first, second, objective, runs)
    assert got == want
    # What the fleet did between the runs, named:
    assert want["stuck"] == {runs.pinned}
    assert runs.pinned in want["new-stale"]
    assert want["gateway-gone"] == {runs.removed_gateway}
    assert want["gone"]
    assert all(v.startswith(runs.removed_gateway + "/") for v in want["gone"])
    assert want["appeared"] == {runs.added_volume}
    # The terminal summary counts the same.
    assert f"1 stuck, {len(want['new-stale'])} new-stale" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_default_compares_the_two_newest_runs(runs: Runs) -> None:
    _, second, third = runs.runs
    proc = _fleetscan("diff", "--input", runs.output, env={})
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert {(c["from_run_id"], c["to_run_id"]) for c in lines} == {(second.run_id, third.run_id)}
    got = _changes(proc.stdout)
    assert got == _expected(second, third, 24 * HOUR, runs)
    # The offline gateway is unreachable, and its volumes are not "gone": they are unknown.
    assert got["gateway-unreachable"] == {runs.offline_gateway}
    assert "gone" not in got
    (unreachable,) = [c for c in lines if c["change"] == "gateway-unreachable"]
    assert unreachable["error_code"] == "GatewayNotConnected"
    # Stable keys, in order, on every line.
    from fleetscan._audit import CHANGE_FIELDS

    assert {tuple(c) for c in lines} == {CHANGE_FIELDS}
    assert f"fleetscan diff: run {second.run_id} -> {third.run_id}" in proc.stderr


def test_to_alone_compares_with_the_run_before_it(runs: Runs) -> None:
    first, second, _ = runs.runs
    proc = _fleetscan(
        "diff", "--input", runs.output, "--to", second.run_id, "--log-format", "json", env={}
    )
    assert proc.returncode == 0, proc.stderr
    (event,) = [orjson.loads(line) for line in proc.stderr.splitlines()]
    assert (event["from_run_id"], event["to_run_id"]) == (first.run_id, second.run_id)
    assert event["changes"]["gateway-gone"] == 1
    assert event["volumes_before"] == len(first.volumes)
    assert event["volumes_after"] == len(second.volumes)


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [("stuck", 1), ("gone,gateway-gone", 0), ("gone,gateway-unreachable", 1), ("appeared", 0)],
)
def test_fail_on_exits_1_when_such_a_change_exists(runs: Runs, fail_on: str, code: int) -> None:
    # Run 2 -> run 3: the pinned volume is stuck and a gateway went offline; nothing is gone.
    proc = _fleetscan("diff", "--input", runs.output, "--fail-on", fail_on, "--quiet", env={})
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout  # the changes are written whatever the exit code


def test_output_file_is_the_ndjson(runs: Runs, tmp_path: Path) -> None:
    target = tmp_path / "changes.ndjson"
    proc = _fleetscan("diff", "--input", runs.output, "--output", target, "--quiet", env={})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    stdout = _fleetscan("diff", "--input", runs.output, "--quiet", env={}).stdout
    assert target.read_text() == stdout
    assert [p.name for p in tmp_path.iterdir()] == ["changes.ndjson"]  # no temporary left


def test_a_link_planted_at_output_is_refused(runs: Runs, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "changes.ndjson").symlink_to(victim)
    proc = _fleetscan(
        "diff", "--input", runs.output, "--output", tmp_path / "changes.ndjson", env={}
    )
    assert proc.returncode == 2, proc.stderr
    assert "symbolic link" in proc.stderr.splitlines()[-1]
    assert victim.read_text() == "precious\n"


BAD_INPUT: list[tuple[str, list[str], str]] = [
    ("unknown from", ["--from", "nope"], "--from: no run 'nope'"),
    ("unknown to", ["--to", "20991231T000000Z-000000"], "--to: no run"),
    (
        "same run",
        ["--from", "20261202T000000Z-d1ff00", "--to", "20261202T000000Z-d1ff00"],
        "itself",
    ),
    ("nothing before", ["--to", "20261202T000000Z-d1ff00"], "--from: no finished"),
    ("fail-on", ["--fail-on", "stuck,bogus"], "--fail-on: unknown change 'bogus'"),
    ("max-age", ["--max-age", "24x"], "--max-age"),
    ("two objectives", ["--max-age", "1d", "--policy", "p.toml"], "not allowed"),
    ("policy file", ["--policy", "/nonexistent/policy.toml"], "--policy"),
]


@pytest.mark.parametrize(
    ("args", "names"), [(b[1], b[2]) for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_exits_2_naming_it(runs: Runs, args: list[str], names: str) -> None:
    proc = _fleetscan("diff", "--input", runs.output, *args, env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert re.match(r"fleetscan( diff)?: error: ", last), last
    assert names in last
    assert proc.stdout == ""


def test_fewer_than_two_runs_exits_2(runs: Runs, tmp_path: Path) -> None:
    single = tmp_path / "single"
    shutil.copytree(runs.output, single)
    for run in runs.runs[1:]:
        find_manifest(single, run.run_id).unlink()
    proc = _fleetscan("diff", "--input", single, env={})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert f"no finished (complete or partial) run before run {runs.runs[0].run_id}" in last


def _copy(runs: Runs, tmp_path: Path) -> tuple[Path, dict[str, Any], Path]:
    """A copy of the runs; the newest run's manifest, and its recovery-point file."""
    copy = tmp_path / "copy"
    shutil.copytree(runs.output, copy)
    manifest_path = find_manifest(copy, runs.runs[2].run_id)
    manifest = read_manifest(manifest_path)
    (entry,) = [f for f in manifest["files"] if f["dataset"] == "recovery_points"]
    return copy, manifest, copy / entry["path"]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (
            lambda body: body.replace(b'"recovery_point_time":"2', b'"recovery_point_time":"1', 1),
            "sha256",
        ),
        (lambda body: body[: len(body) // 2], "ends in the middle of a record"),
    ],
    ids=["tampered", "torn"],
)
def test_a_tampered_or_torn_data_file_is_a_clear_error(
    runs: Runs, tmp_path: Path, damage: Callable[[bytes], bytes], named: str
) -> None:
    copy, _, data = _copy(runs, tmp_path)
    data.write_bytes(damage(data.read_bytes()))
    proc = _fleetscan("diff", "--input", copy, env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("fleetscan: error: --input: cannot compare runs under")
    assert data.name in last
    assert named in last


def test_a_torn_manifest_hides_its_run(runs: Runs, tmp_path: Path) -> None:
    copy, _, _ = _copy(runs, tmp_path)
    manifest_path = find_manifest(copy, runs.runs[2].run_id)
    manifest_path.write_bytes(manifest_path.read_bytes()[:100])
    proc = _fleetscan("diff", "--input", copy, "--to", runs.runs[2].run_id, env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert runs.runs[2].run_id in proc.stderr.splitlines()[-1]
    # Without --to, the newest readable runs are compared.
    proc = _fleetscan("diff", "--input", copy, "--log-format", "json", env={})
    assert proc.returncode == 0, proc.stderr
    event = orjson.loads(proc.stderr)
    assert (event["from_run_id"], event["to_run_id"]) == (runs.runs[0].run_id, runs.runs[1].run_id)


def test_a_wrong_typed_record_is_a_clear_error(runs: Runs, tmp_path: Path) -> None:
    # A record whose volume ARN is a number, in a file whose manifest agrees with it (sha256,
    # size and count rewritten): the reader's schema check names the file and line. Exit 2, not
    # the audit's 1: the diff's exit 1 means "a --fail-on change exists".
    copy, manifest, data = _copy(runs, tmp_path)
    lines = data.read_bytes().splitlines(keepends=True)
    record = orjson.loads(lines[0])
    record["volume_arn"] = 12345
    lines[0] = orjson.dumps(record) + b"\n"
    body = b"".join(lines)
    data.write_bytes(body)
    for entry in manifest["files"]:
        if copy / entry["path"] == data:
            entry["bytes"], entry["sha256"] = len(body), hashlib.sha256(body).hexdigest()
    find_manifest(copy, runs.runs[2].run_id).write_bytes(orjson.dumps(manifest))
    proc = _fleetscan("diff", "--input", copy, env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert f"{data.name}, line 1: breaks the recovery_points schema: volume_arn" in last


def test_audit_reports_show_the_changes_since_the_previous_run(runs: Runs, tmp_path: Path) -> None:
    _, second, third = runs.runs
    reports = tmp_path / "reports"
    proc = _fleetscan(
        "audit", "--input", runs.output, "--max-age", "24h", "--report-dir", reports, env={}
    )
    assert proc.returncode in (4, 5), proc.stderr
    diff = _fleetscan("diff", "--input", runs.output, "--log-format", "json", env={})
    counts = orjson.loads(diff.stderr)["changes"]
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert f"## Changes since run {second.run_id}" in markdown
    for kind, count in counts.items():
        assert f"| {kind} | {count:,} |" in markdown
    assert counts["stuck"] == 1
    assert runs.pinned.replace("_", "\\_") in markdown
    html = (reports / "report.html").read_text(encoding="utf-8")
    assert f"Changes since run {second.run_id}" in html
    assert runs.offline_gateway.rsplit("/", 1)[-1] in html
    assert third.run_id in markdown


def test_the_first_run_has_no_changes_section(runs: Runs, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first = runs.runs[0].run_id
    proc = _fleetscan(
        "audit", "--input", runs.output, "--run", first, "--max-age", "24h",
        "--report-dir", reports,
        env={},
    )  # fmt: skip
    assert proc.returncode in (4, 5), proc.stderr
    assert "Changes since" not in (reports / "report.md").read_text(encoding="utf-8")


def test_a_unit_the_later_run_could_not_read_is_not_gone(runs: Runs, tmp_path: Path) -> None:
    # A fourth run, in a copy, with one (account, region) denied: its gateways and volumes are
    # unknown in that run, never gone. Nothing changed on the fleet since run 3, so every other
    # volume's recovery point is the same: stuck.
    third = runs.runs[2]
    copy = tmp_path / "copy"
    shutil.copytree(runs.output, copy)
    units = [(rp.account_id, rp.region, rp.volume_arn) for rp in third.truth.recovery_points]
    pinned_unit = next((a, r) for a, r, v in units if v == runs.pinned)
    denied = next((a, r) for a, r, _ in units if (a, r) != pinned_unit)
    runs.stack.emulator.faults = Faults(
        [FaultRule(account_id=denied[0], region=denied[1], access_denied=True)]
    )
    try:
        proc = _fleetscan(
            "scan", "--org", "--role-name", runs.stack.role_name, "--regions", ",".join(REGIONS),
            "--output", copy, "--quiet",
            env=runs.env,
        )  # fmt: skip
    finally:
        runs.stack.emulator.faults = Faults()
    assert proc.returncode == 3, proc.stderr  # partial: the denied unit failed
    proc = _fleetscan("diff", "--input", copy, env={})
    assert proc.returncode == 0, proc.stderr
    readable = {v for a, r, v in units if (a, r) != denied}
    assert _changes(proc.stdout) == {"stuck": readable}


def test_s3_input_gives_the_same_changes(runs: Runs) -> None:
    env = runs.env
    s3 = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    s3.create_bucket(Bucket="fleetscan-diff")
    # The runs as a scan writes them to S3: the same keys under a prefix.
    for path in runs.output.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            key = f"fleet/{path.relative_to(runs.output).as_posix()}"
            s3.put_object(Bucket="fleetscan-diff", Key=key, Body=path.read_bytes())
    from_s3 = _fleetscan("diff", "--input", "s3://fleetscan-diff/fleet/", "--quiet", env=env)
    assert from_s3.returncode == 0, from_s3.stderr
    local = _fleetscan("diff", "--input", runs.output, "--quiet", env={})
    assert from_s3.stdout == local.stdout
    assert from_s3.stdout


def test_the_library_call_gives_what_the_command_prints(runs: Runs) -> None:
    import anyio

    import fleetscan

    seen: list[fleetscan.Change] = []
    result = anyio.run(
        lambda: fleetscan.diff_runs(
            str(runs.output), fleetscan.Policy.single("24h"), on_change=seen.append
        ),
        backend="asyncio",
    )
    printed = _fleetscan("diff", "--input", runs.output, "--quiet", env={}).stdout
    assert [orjson.loads(line) for line in printed.splitlines()] == [c.as_json() for c in seen]
    assert result.total == len(seen)
    assert result.changes == seen  # fewer than KEEP_PER_KIND of each kind: all kept
    assert (result.from_run_id, result.to_run_id) == (runs.runs[1].run_id, runs.runs[2].run_id)


def test_a_policy_judges_staleness_as_the_audit_does(runs: Runs, tmp_path: Path) -> None:
    # The pinned volume's gateway gets an objective of one second: its volumes are stale in both
    # runs, so none of them is new-stale or recovered; every other volume keeps 24 hours.
    second, third = runs.runs[1], runs.runs[2]
    (gateway,) = {
        rp.gateway_arn for rp in second.truth.recovery_points if rp.volume_arn == runs.pinned
    }
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'max_age = "24h"\n[[rules]]\nname = "strict"\n'
        f'account = "{gateway.split(":")[4]}"\nmax_age = "1s"\n'
    )
    proc = _fleetscan("diff", "--input", runs.output, "--policy", policy, env={})
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(line) for line in proc.stdout.splitlines()]
    (stuck,) = [c for c in lines if c["change"] == "stuck"]
    assert (stuck["rule"], stuck["objective_seconds"]) == ("strict", 1)
    default = _fleetscan("diff", "--input", runs.output, env={})
    assert (
        _changes(proc.stdout)
        == _changes(default.stdout)
        == _expected(second, third, 24 * HOUR, runs)
    )
