"""`fleetscan audit --asff` and `--security-hub`, as real subprocesses against the emulated fleet.

The ASFF file is checked the way Security Hub's client checks a BatchImportFindings request:
botocore's own service model and ParamValidator. Objectives sit hours away from every recovery
point of the fleet (fresh ones are under 6 h old, stale ones over 26 h), so the scan's timing
cannot change an answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import orjson
import pytest
from botocore.validate import ParamValidator

from fleetscan.emulator import Fleet, FleetSpec, Stack, start_stack

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def _fleetscan(
    *args: str | Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Hub:
    stack: Stack
    env: dict[str, str]
    output: Path

    @property
    def fleet(self) -> Fleet:
        return self.stack.fleet


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The emulated stack (moto serving Security Hub beside S3) and one complete scan of it."""
    home = tmp_path_factory.mktemp("aws-home")
    output = tmp_path_factory.mktemp("hub") / "inventory"
    with start_stack(FleetSpec(seed=7, accounts=12, regions=REGIONS)) as stack:
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(home / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        }
        scan = _fleetscan(
            "scan", "--org", "--role-name", stack.role_name, "--regions", ",".join(REGIONS),
            "--output", output, "--quiet",
            env=env,
        )  # fmt: skip
        assert scan.returncode == 0, scan.stderr
        yield Hub(stack, env, output)


def _findings(reports: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (reports / "findings.ndjson").read_bytes().splitlines()]


def _validate_import(findings: list[dict[str, Any]]) -> None:
    """What botocore would refuse to send: each batch of 100 against BatchImportFindings."""
    model = botocore.session.get_session().get_service_model("securityhub")
    shape = model.operation_model("BatchImportFindings").input_shape
    validator = ParamValidator()
    for start in range(0, len(findings), 100):
        report = validator.validate({"Findings": findings[start : start + 100]}, shape)
        assert not report.has_errors(), report.generate_report()


def test_asff_file_is_valid_deterministic_and_matches_the_findings(
    hub: Hub, tmp_path: Path
) -> None:
    asff, reports = tmp_path / "findings.asff.json", tmp_path / "reports"
    proc = _fleetscan(
        "audit", "--input", hub.output, "--max-age", "12h", "--report-dir", reports,
        "--asff", asff,
        env={},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    items = orjson.loads(asff.read_bytes())
    _validate_import(items)
    findings = _findings(reports)
    # One ASFF finding per volume and per unknown gateway (this run has no failed unit).
    assert len(items) == len(findings)
    by_id = {item["Id"]: item for item in items}
    assert len(by_id) == len(items)
    want = {
        "compliant": "PASSED",
        "stale": "FAILED",
        "unknown": "NOT_AVAILABLE",
    }
    for finding in findings:
        resource = finding["volume_arn"] or finding["gateway_arn"]
        item = by_id[f"fleetscan/rpo/{resource}"]
        assert item["Compliance"]["Status"] == want[finding["status"]]
        assert item["AwsAccountId"] == finding["account_id"]
        assert item["Region"] == finding["region"]
        assert item["ProductArn"] == (
            f"arn:aws:securityhub:{finding['region']}:{finding['account_id']}:product/"
            f"{finding['account_id']}/default"
        )
        assert item["GeneratorId"] == f"fleetscan/recovery-point-objective/{finding['rule']}"
        assert item["Resources"][0]["Id"] == resource
        assert item["FindingProviderFields"]["Severity"] == item["Severity"]
        label = item["Severity"]["Label"]
        if finding["status"] == "compliant":
            assert label == "INFORMATIONAL"
        elif finding["status"] == "stale":
            ratio = (finding["age_seconds"] or float("inf")) / finding["objective_seconds"]
            expected = "LOW" if ratio <= 2 else "MEDIUM" if ratio <= 4 else "HIGH"
            assert label == (expected if ratio <= 10 else "CRITICAL")
    labels = Counter(item["Severity"]["Label"] for item in items)
    assert set(labels) <= set(SEVERITIES)
    assert labels["INFORMATIONAL"] > 0
    assert labels["LOW"] + labels["MEDIUM"] + labels["HIGH"] + labels["CRITICAL"] > 0

    # Auditing again gives the same ids and the same findings, but for the audit's own time.
    again_path = tmp_path / "again.json"
    again = _fleetscan(
        "audit", "--input", hub.output, "--max-age", "12h", "--asff", again_path, env={}
    )
    assert again.returncode == 4, again.stderr

    def timeless(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k not in ("CreatedAt", "UpdatedAt")}

    assert [timeless(i) for i in orjson.loads(again_path.read_bytes())] == [
        timeless(i) for i in items
    ]


def test_asff_to_a_directory_that_is_not_there_is_bad_input(hub: Hub, tmp_path: Path) -> None:
    proc = _fleetscan(
        "audit", "--input", hub.output, "--max-age", "12h", "--asff", tmp_path / "no" / "f.json",
        env={},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("fleetscan: error: --asff")
    assert "Traceback" not in proc.stderr
