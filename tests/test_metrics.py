"""``--metrics-file`` on ``fleetscan scan`` and ``fleetscan audit``, run as real subprocesses
against the emulated organization (with throttling and server errors, so retries and throttles
are counted), and read back with prometheus_client's own parser, as Prometheus would."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from fleetscan_cli import run_cli as _fleetscan
from prometheus_client.parser import text_string_to_metric_families

from fleetscan._records import parse_time
from fleetscan._sinks import find_manifest, latest_run, read_manifest
from fleetscan.emulator import FaultRule, Faults, FleetSpec, Stack, start_stack

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")


def _samples(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of the file: {sample name: {sorted labels: value}}."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _by(samples: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.items()}


@dataclass
class Scanned:
    stack: Stack
    env: dict[str, str]
    output: Path
    metrics: Path
    proc: subprocess.CompletedProcess[str]

    def scan_args(self, *extra: str | Path) -> list[str | Path]:
        return [
            "--org", "--role-name", self.stack.role_name, "--regions", ",".join(REGIONS),
            "--max-attempts", "10", *extra,
        ]  # fmt: skip


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    home = tmp_path_factory.mktemp("aws-home")
    root = tmp_path_factory.mktemp("metrics")
    # Storage Gateway only: a token bucket per (account, region) that throttles bursts, and
    # server errors, both retried.
    faults = Faults([FaultRule(throttle_rate=20.0, throttle_burst=2, internal_error_rate=0.03)])
    with start_stack(FleetSpec(seed=7, accounts=12, regions=REGIONS), faults=faults) as stack:
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
        output, metrics = root / "inventory", root / "scan.prom"
        scanned = Scanned(stack, env, output, metrics, subprocess.CompletedProcess([], 0))
        scanned.proc = _fleetscan(
            "scan", *scanned.scan_args("--output", output, "--metrics-file", metrics, "--quiet"),
            env=env,
        )  # fmt: skip
        yield scanned


def test_scan_metrics_equal_the_manifest(scanned: Scanned) -> None:
    assert scanned.proc.returncode == 0, scanned.proc.stderr
    run_id = latest_run(scanned.output)
    assert run_id is not None
    manifest = read_manifest(find_manifest(scanned.output, run_id))
    summary = manifest["summary"]
    samples = _samples(scanned.metrics)
    assert _by(samples["fleetscan_scan_status"], "status") == {
        "complete": 1.0,
        "partial": 0.0,
        "failed": 0.0,
        "interrupted": 0.0,
    }
    started, ended = parse_time(manifest["started_at"]), parse_time(manifest["ended_at"])
    assert started is not None
    assert ended is not None
    (duration,) = samples["fleetscan_scan_duration_seconds"].values()
    assert duration == pytest.approx((ended - started).total_seconds())
    (end,) = samples["fleetscan_scan_end_timestamp_seconds"].values()
    assert end == pytest.approx(ended.timestamp())
    assert _by(samples["fleetscan_scan_units"], "state") == {
        "planned": summary["units_planned"],
        "done": summary["units_done"],
        "failed": summary["units_failed"],
    }
    assert _by(samples["fleetscan_scan_api_calls_total"], "operation") == summary["api_calls"]
    # The faults made the scan retry and be throttled, per operation, as the manifest counts.
    retries = _by(samples["fleetscan_scan_retries_total"], "operation")
    throttles = _by(samples["fleetscan_scan_throttles_total"], "operation")
    assert retries == summary["retries_by_operation"]
    assert throttles == summary["throttles_by_operation"]
    assert sum(retries.values()) == summary["retries"] > 0
    assert sum(throttles.values()) == summary["throttles"] > 0
    assert _by(samples["fleetscan_scan_records_total"], "dataset") == manifest["records"]
    assert _by(samples["fleetscan_scan_gateways"], "type") == summary["gateways_by_type"]
    # The run's one organization (--org) is counted as the manifest's organizations section does.
    (organization,) = manifest["organizations"]
    listed = samples["fleetscan_scan_organization_listed"]
    assert listed == {(("organization", organization["id"]),): 1.0}
    # No volume, gateway or account is ever a label.
    labels = {name for series in samples.values() for key in series for name, _ in key}
    assert labels <= {"status", "state", "operation", "dataset", "type", "organization"}
    assert oct(scanned.metrics.stat().st_mode & 0o777) == "0o644"  # node_exporter reads it
    assert [p.name for p in scanned.metrics.parent.iterdir() if p.name.startswith(".")] == []


def test_audit_metrics_equal_the_findings(scanned: Scanned, tmp_path: Path) -> None:
    reports, metrics = tmp_path / "reports", tmp_path / "audit.prom"
    proc = _fleetscan(
        "audit", "--input", scanned.output, "--max-age", "12h", "--report-dir", reports,
        "--metrics-file", metrics, "--quiet",
        env={},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    findings = [orjson.loads(line) for line in (reports / "findings.ndjson").read_bytes().split()]
    samples = _samples(metrics)
    ou_of = {
        a["id"]: a.get("ou_path") or ""
        for a in read_manifest(find_manifest(scanned.output, findings[0]["run_id"]))["summary"][
            "accounts_scanned"
        ]
    }
    want: Counter[tuple[str, str]] = Counter(
        (ou_of.get(f["account_id"], ""), f["status"]) for f in findings
    )
    got = {
        (dict(labels)["ou"], dict(labels)["status"]): value
        for labels, value in samples["fleetscan_audit_findings"].items()
        if value
    }
    assert got == dict(want)
    # Every account is in the one organization, which the manifest records for each.
    assert {
        dict(labels)["organization"]
        for labels, value in samples["fleetscan_audit_findings"].items()
        if value
    } == {scanned.stack.fleet.organization_id}
    oldest: dict[str, float] = {}
    for f in findings:
        if f["age_seconds"] is not None:
            ou = ou_of.get(f["account_id"], "")
            oldest[ou] = max(oldest.get(ou, 0.0), f["age_seconds"])
    assert _by(samples["fleetscan_audit_oldest_recovery_point_age_seconds"], "ou") == oldest
    assert len(oldest) > 1  # several OUs: a label each


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "fleetscan.prom"
    link.symlink_to(victim)
    return link, victim


def test_scan_refuses_a_link_planted_at_the_metrics_file(scanned: Scanned, tmp_path: Path) -> None:
    link, victim = _planted(tmp_path)
    output = tmp_path / "out"
    proc = _fleetscan(
        "scan", *scanned.scan_args("--output", output, "--metrics-file", link), env=scanned.env
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last == (
        f"fleetscan: error: --metrics-file: {link} is a symbolic link: fleetscan writes no file "
        "there"
    )
    assert victim.read_text() == "precious\n"
    assert not output.exists()  # refused before anything was scanned


def test_audit_refuses_a_link_planted_at_the_metrics_file(scanned: Scanned, tmp_path: Path) -> None:
    link, victim = _planted(tmp_path)
    proc = _fleetscan(
        "audit", "--input", scanned.output, "--max-age", "1d", "--metrics-file", link, env={}
    )
    assert proc.returncode == 2, proc.stderr
    assert "--metrics-file" in proc.stderr.splitlines()[-1]
    assert "symbolic link" in proc.stderr.splitlines()[-1]
    assert victim.read_text() == "precious\n"


def test_a_missing_metrics_directory_is_bad_input(scanned: Scanned, tmp_path: Path) -> None:
    proc = _fleetscan(
        "audit", "--input", scanned.output, "--max-age", "1d",
        "--metrics-file", tmp_path / "nowhere" / "x.prom",
        env={},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "is not an existing directory" in proc.stderr.splitlines()[-1]
