"""`fleetscan audit` and the demo's audit summary, run as real subprocesses.

One module-wide emulated stack: the first audit scans the organization itself (scan flags and
--output), and later tests audit what it wrote, scan again (an OU, S3) or feed bad input.
Objectives sit hours away from every recovery point of the fleet (fresh ones are under 6 h old,
stale ones over 26 h), so the scan's timing cannot change an answer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from fleetscan_cli import run_cli as _fleetscan

from fleetscan._records import parse_time
from fleetscan._sinks import find_manifest, latest_run, read_manifest
from fleetscan.emulator import Fleet, FleetSpec, Stack, start_stack
from fleetscan.emulator._faults import FaultRule, Faults

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
HOUR = 3600
BUCKET = "fleetscan-audit"


@dataclass
class CliRun:
    stack: Stack
    env: dict[str, str]
    output: Path
    reports: Path
    proc: subprocess.CompletedProcess[str]

    @property
    def fleet(self) -> Fleet:
        return self.stack.fleet

    def scan_args(self, *extra: str) -> list[str]:
        return _scan_args(self.stack, *extra)


def _scan_args(stack: Stack, *extra: str) -> list[str]:
    return ["--org", "--role-name", stack.role_name, "--regions", ",".join(REGIONS), *extra]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    """The emulated stack, and `fleetscan audit` scanning it first, at 12 hours."""
    home = tmp_path_factory.mktemp("aws-home")
    root = tmp_path_factory.mktemp("cli-audit")
    with start_stack(FleetSpec(seed=7, accounts=12, regions=REGIONS)) as stack:
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
        output, reports = root / "inventory", root / "reports"
        proc = _fleetscan(
            "audit", *_scan_args(stack, "--output", str(output)), "--max-age", "12h",
            "--report-dir", reports,
            env=env,
        )  # fmt: skip
        yield CliRun(stack, env, output, reports, proc)


def _findings(reports: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (reports / "findings.ndjson").read_bytes().splitlines()]


def _expected_stale(fleet: Fleet, output: Path, run_id: str, objective: int) -> dict[str, str]:
    """Each volume's status from ground truth: its age at the epoch plus the scan's offset."""
    manifest = read_manifest(find_manifest(output, run_id))
    started, ended = parse_time(manifest["started_at"]), parse_time(manifest["ended_at"])
    assert started is not None
    assert ended is not None
    low = (started - fleet.spec.epoch).total_seconds()
    high = (ended - fleet.spec.epoch).total_seconds() + 0.002
    want = {}
    for rp in fleet.ground_truth(regions=REGIONS).recovery_points:
        early, late = rp.age_seconds + low > objective, rp.age_seconds + high > objective
        assert early == late, f"{objective}s is too close to the age of {rp.volume_arn}"
        want[rp.volume_arn] = "stale" if early else "compliant"
    return want


def test_audit_scans_first_then_judges_the_fresh_run(cli_run: CliRun) -> None:
    proc = cli_run.proc
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    run_id = latest_run(cli_run.output)
    assert run_id is not None
    findings = _findings(cli_run.reports)
    assert {f["run_id"] for f in findings} == {run_id}
    got = {f["volume_arn"]: f["status"] for f in findings if f["volume_arn"]}
    want = _expected_stale(cli_run.fleet, cli_run.output, run_id, 12 * HOUR)
    assert got == want
    assert "stale" in want.values()
    truth = cli_run.fleet.ground_truth(regions=REGIONS)
    unknown = {f["gateway_arn"] for f in findings if f["status"] == "unknown"}
    assert unknown == {arn for (_, _, arn, _) in truth.gateway_errors}
    # The scan's own summary, then the audit's: the verdict with the same numbers.
    stale, compliant = Counter(want.values())["stale"], Counter(want.values())["compliant"]
    assert f"fleetscan audit of run {run_id}" in proc.stderr
    assert f"{stale} stale, {len(unknown)} unknown, {compliant:,} compliant" in proc.stderr
    assert "(exit code 4)" in proc.stderr
    for name in ("findings.ndjson", "report.md", "report.html", "junit.xml"):
        assert (cli_run.reports / name).is_file()


@pytest.mark.parametrize(
    ("max_age", "extra", "code"),
    [
        ("12h", [], 4),
        ("12h", ["--fail-on", "stale"], 4),
        ("12h", ["--fail-on", "none"], 0),
        ("2000h", [], 5),
        ("2000h", ["--fail-on", "unknown"], 5),
        ("2000h", ["--fail-on", "stale"], 0),
    ],
)
def test_exit_codes(
    cli_run: CliRun, tmp_path: Path, max_age: str, extra: list[str], code: int
) -> None:
    # The run has stale volumes at 12 h, none at 2000 h (the oldest is 45 days), and offline
    # gateways (unknown) either way.
    truth = cli_run.fleet.ground_truth(regions=REGIONS)
    assert truth.gateway_errors
    assert max(rp.age_seconds for rp in truth.recovery_points) < 2000 * HOUR
    proc = _fleetscan(
        "audit", "--input", cli_run.output, "--max-age", max_age, "--log-format", "json", *extra,
        env={},
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    (event,) = [orjson.loads(line) for line in proc.stderr.splitlines()]
    assert event["event"] == "audit_finished"
    assert event["exit_code"] == code
    assert event["unknown"] == len(truth.gateway_errors)
    assert (event["stale"] > 0) == (max_age == "12h")


def test_every_volume_compliant_exits_0(cli_run: CliRun, tmp_path: Path) -> None:
    fleet = cli_run.fleet
    production_eu = fleet.ous[3]
    accounts = {a.id for a in fleet.ou_accounts(production_eu.id)}
    truth = fleet.ground_truth(accounts=sorted(accounts), regions=REGIONS)
    assert truth.recovery_points  # volumes to judge, and no gateway that cannot be read
    assert not truth.gateway_errors
    reports = tmp_path / "reports"
    proc = _fleetscan(
        "audit", *cli_run.scan_args("--ou", production_eu.id, "--output", str(tmp_path / "out")),
        "--max-age", "2000h", "--report-dir", reports, "--quiet",
        env=cli_run.env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet
    findings = _findings(reports)
    assert {f["volume_arn"] for f in findings} == {rp.volume_arn for rp in truth.recovery_points}
    assert {f["status"] for f in findings} == {"compliant"}
    suite = ET.parse(reports / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "0"
    # The OU's accounts, and the management account listed by the scan, all pass.
    names = {str(c.get("name")).split(" ")[0] for c in suite.findall("testcase")}
    assert accounts <= names


def test_s3_input_gives_the_same_answer_as_local(cli_run: CliRun, tmp_path: Path) -> None:
    env = cli_run.env
    s3 = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    s3.create_bucket(Bucket=BUCKET)
    dest = f"s3://{BUCKET}/fleet/"
    scan = _fleetscan("scan", *cli_run.scan_args("--output", dest, "--quiet"), env=env)
    assert scan.returncode == 0, scan.stderr
    reports = tmp_path / "reports"
    proc = _fleetscan(
        "audit", "--input", dest, "--max-age", "12h", "--report-dir", reports, env=env
    )
    assert proc.returncode == 4, proc.stderr

    def answer(findings: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {
            f["volume_arn"] or f["gateway_arn"] or f"{f['account_id']}/{f['region']}": (
                f["status"],
                f["rule"],
                f["objective_seconds"],
                f["recovery_point_time"],
            )
            for f in findings
        }

    from_s3, local = _findings(reports), _findings(cli_run.reports)
    assert len({f["run_id"] for f in from_s3 + local}) == 2  # two scans, one answer
    assert answer(from_s3) == answer(local)
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert f"| data | {dest} |" in markdown


def _audit_event(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    (event,) = [orjson.loads(line) for line in proc.stderr.splitlines()]
    assert event["event"] == "audit_finished"
    return dict(event)


def test_s3_complete_then_partial_judges_the_partial_run(cli_run: CliRun, tmp_path: Path) -> None:
    """The user's report: a complete run, then a newer partial one; the audit must judge the
    newer one (its gaps unknown), and say which run it judged when told to use an older one."""
    env, stack = cli_run.env, cli_run.stack
    s3 = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
    bucket = f"{BUCKET}-newest"
    s3.create_bucket(Bucket=bucket)
    dest = f"s3://{bucket}/inv/"
    first = _fleetscan("scan", *cli_run.scan_args("--output", dest, "--quiet"), env=env)
    assert first.returncode == 0, first.stderr
    (complete_key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
                       if o["Key"].startswith("inv/manifests/")]  # fmt: skip
    complete = complete_key.rsplit("/", 1)[1].removesuffix(".json")
    denied = sorted(cli_run.fleet.pairs)[1]
    stack.emulator.faults = Faults(
        [FaultRule(account_id=denied[0], region=denied[1], access_denied=True)]
    )
    try:
        second = _fleetscan("scan", *cli_run.scan_args("--output", dest, "--quiet"), env=env)
    finally:
        stack.emulator.faults = Faults([])
    assert second.returncode == 3, second.stderr  # partial

    audit = ["audit", "--input", dest, "--max-age", "2000h", "--log-format", "json"]
    newest = _audit_event(_fleetscan(*audit, env=env))
    assert newest["run_id"] != complete
    assert newest["run_status"] == "partial"
    assert newest["newer_runs_not_judged"] == []
    assert newest["exit_code"] == 5
    assert newest["unknown"] > len(cli_run.fleet.ground_truth(regions=REGIONS).gateway_errors)
    assert (
        _audit_event(_fleetscan(*audit, "--run", "latest", env=env))["run_id"] == newest["run_id"]
    )
    for extra in (["--run", complete], ["--require-complete"]):
        older = _audit_event(_fleetscan(*audit, *extra, env=env))
        assert (older["run_id"], older["run_status"]) == (complete, "complete")
        (skipped,) = older["newer_runs_not_judged"]
        assert (skipped["run_id"], skipped["status"]) == (newest["run_id"], "partial")
        assert extra[0] in skipped["reason"]
    reports = tmp_path / "reports"
    text = _fleetscan(
        "audit", "--input", dest, "--max-age", "2000h", "--run", complete, "--report-dir", reports,
        env=env,
    )  # fmt: skip
    assert f"newer run {newest['run_id']} (partial" in text.stderr
    assert f"evidence: run {complete} (complete), scanned" in text.stderr
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert f"| newer run {newest['run_id']} | not judged (partial, started " in markdown
    assert "| evidence age | " in markdown
    assert f"newer run {newest['run_id']}" in (reports / "report.html").read_text(encoding="utf-8")


def test_only_an_old_complete_run_is_unknown_evidence_too_old(
    cli_run: CliRun, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(cli_run.output, old)
    (path,) = old.glob("manifests/dt=*/*.json")
    manifest = orjson.loads(path.read_bytes())
    path.write_bytes(
        orjson.dumps(
            manifest
            | {"started_at": "2026-01-02T03:04:05.000Z", "ended_at": "2026-01-02T03:09:05.000Z"}
        )
    )
    reports = tmp_path / "reports"
    proc = _fleetscan("audit", "--input", old, "--max-age", "12h", "--report-dir", reports, env={})
    assert proc.returncode == 5, proc.stderr
    assert "evidence too old" in proc.stderr
    assert {f["status"] for f in _findings(reports)} == {"unknown"}
    assert "evidence too old" in (reports / "report.html").read_text(encoding="utf-8")
    judged = _fleetscan(
        "audit", "--input", old, "--max-age", "12h", "--max-scan-age", "none", env={}
    )
    assert judged.returncode == 4, judged.stderr  # its stale volumes, as judged back then


def test_the_cli_default_scan_age_is_the_librarys() -> None:
    from fleetscan._audit._evaluate import DEFAULT_MAX_SCAN_AGE
    from fleetscan._commands.audit import MAX_SCAN_AGE, AuditRequest

    assert MAX_SCAN_AGE == DEFAULT_MAX_SCAN_AGE == 48 * 3600
    assert AuditRequest.__dataclass_fields__["max_scan_age"].default == DEFAULT_MAX_SCAN_AGE


def _bad_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text('max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"\nacount = "1"\n')
    return path


BAD_INPUT: list[tuple[str, Callable[[Path, Path], list[Any]], str]] = [
    ("duration", lambda out, tmp: ["--input", out, "--max-age", "24x"], "--max-age"),
    ("policy key", lambda out, tmp: ["--input", out, "--policy", _bad_policy(tmp)], ".acount"),
    ("policy file", lambda out, tmp: ["--input", out, "--policy", tmp / "none"], "--policy"),
    ("input dir", lambda out, tmp: ["--input", tmp / "missing", "--max-age", "1d"], "not exist"),
    ("run id", lambda out, tmp: ["--input", out, "--run", "nope", "--max-age", "1d"], "'nope'"),
    ("no run", lambda out, tmp: ["--input", tmp, "--max-age", "1d"], "no fleetscan run"),
    (
        "hub role alone",
        lambda out, tmp: ["--input", out, "--max-age", "1d", "--security-hub-role-name", "R"],
        "--security-hub-role-name",
    ),
    (
        "require-complete on a fresh scan",
        lambda out, tmp: [
            "--org",
            "--role-name",
            "R",
            "--output",
            tmp,
            "--max-age",
            "1d",
            "--require-complete",
        ],
        "--require-complete",
    ),
    (
        "scan age",
        lambda out, tmp: ["--input", out, "--max-age", "1d", "--max-scan-age", "2"],
        "--max-scan-age",
    ),
    ("scan flags", lambda out, tmp: ["--input", out, "--org", "--max-age", "1d"], "--org"),
    ("no source", lambda out, tmp: ["--max-age", "1d"], "--input"),
    ("no objective", lambda out, tmp: ["--input", out], "--max-age"),
    (
        "two objectives",
        lambda out, tmp: ["--input", out, "--max-age", "1d", "--policy", tmp],
        "not allowed",
    ),
    (
        "fail-on",
        lambda out, tmp: ["--input", out, "--max-age", "1d", "--fail-on", "x"],
        "--fail-on",
    ),
    ("s3 url", lambda out, tmp: ["--input", "s3://", "--max-age", "1d"], "--input"),
    (
        "stdout",
        lambda out, tmp: ["--org", "--role-name", "R", "--output", "-", "--max-age", "1d"],
        "--output",
    ),
]


@pytest.mark.parametrize(
    ("args", "names"), [(b[1], b[2]) for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_exits_2_naming_it(
    cli_run: CliRun, tmp_path: Path, args: Callable[[Path, Path], list[Any]], names: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    reports = tmp_path / "reports"
    proc = _fleetscan("audit", *args(cli_run.output, empty), "--report-dir", reports, env={})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # One line names the problem (argparse prints its usage above it).
    last = proc.stderr.splitlines()[-1]
    assert re.match(r"fleetscan( audit)?: error: ", last), last
    assert names in last
    # Nothing half-written is left behind.
    assert not reports.exists() or not any(reports.iterdir())


def test_demo_ends_with_the_audit_summary(tmp_path: Path) -> None:
    fleet = Fleet(FleetSpec(seed=2026, accounts=4))
    truth = fleet.ground_truth()
    stale = sum(1 for rp in truth.recovery_points if rp.age_seconds > 24 * HOUR)
    assert stale  # the demo fleet has stale volumes, hours away from 24h like every volume
    assert all(abs(rp.age_seconds - 24 * HOUR) > HOUR for rp in truth.recovery_points)
    proc = _fleetscan("demo", "--output", tmp_path / "demo", "--accounts", "4", env={}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_id = latest_run(tmp_path / "demo")
    assert re.search(rf"fleetscan audit of run {run_id} \(complete\)", proc.stderr)
    compliant = len(truth.recovery_points) - stale
    unknown = len(truth.gateway_errors)
    assert f"{stale} stale, {unknown} unknown, {compliant:,} compliant" in proc.stderr
    # The audit is the demo's last word.
    assert proc.stderr.rstrip().splitlines()[-1].startswith("fleetscan: reports: fleetscan audit")
