"""`fleetscan audit --asff` and `--security-hub`, as real subprocesses against the emulated fleet.

The ASFF file is checked the way Security Hub's client checks a BatchImportFindings request:
botocore's own service model and ParamValidator. Objectives sit hours away from every recovery
point of the fleet (fresh ones are under 6 h old, stale ones over 26 h), so the scan's timing
cannot change an answer.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import orjson
import pytest
from botocore.validate import ParamValidator
from fleetscan_cli import run_cli as _fleetscan

from fleetscan._credentials import SECURITY_HUB_ACTIONS
from fleetscan.emulator import Fleet, FleetSpec, Stack, start_stack

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")


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


# -- import ------------------------------------------------------------------------------------


def _member_hub(hub: Hub, account_id: str, region: str) -> Any:
    """A Security Hub client acting as ``account_id`` (through its member role), in ``region``."""
    env = hub.env
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    sts = session.client("sts", endpoint_url=env["AWS_ENDPOINT_URL_STS"])
    keys = sts.assume_role(RoleArn=hub.stack.role_arn(account_id), RoleSessionName="test")[
        "Credentials"
    ]
    return boto3.client(
        "securityhub",
        region_name=region,
        endpoint_url=env["AWS_ENDPOINT_URL_SECURITYHUB"],
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
    )


def _stored(hub: Hub, account_id: str, region: str) -> dict[str, dict[str, Any]]:
    client = _member_hub(hub, account_id, region)
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("get_findings").paginate():
        for item in page["Findings"]:
            assert item["Id"] not in found, "a finding stored twice"
            found[item["Id"]] = item
    return found


def _places(items: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    places: dict[tuple[str, str], set[str]] = {}
    for item in items:
        places.setdefault((item["AwsAccountId"], item["Region"]), set()).add(item["Id"])
    return places


def _import(hub: Hub, max_age: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = _fleetscan(
        "audit", "--input", hub.output, "--max-age", max_age, "--security-hub",
        "--log-format", "json", *extra,
        env=hub.env,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    (event,) = [orjson.loads(line) for line in proc.stderr.splitlines()]
    return proc.returncode, event


@pytest.fixture(scope="module")
def asff_items(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("asff") / "findings.json"
    proc = _fleetscan("audit", "--input", hub.output, "--max-age", "12h", "--asff", path, env={})
    assert proc.returncode == 4, proc.stderr
    items: list[dict[str, Any]] = orjson.loads(path.read_bytes())
    return items


def _enable_everywhere(hub: Hub, places: dict[tuple[str, str], set[str]]) -> None:
    for account_id, region in places:
        client = _member_hub(hub, account_id, region)
        try:
            client.describe_hub()
        except client.exceptions.InvalidAccessException:
            client.enable_security_hub()


def test_import_goes_to_each_member_account_and_reruns_update_in_place(
    hub: Hub, asff_items: list[dict[str, Any]]
) -> None:
    places = _places(asff_items)
    assert len({account for account, _ in places}) > 3  # several member accounts
    _enable_everywhere(hub, places)
    code, event = _import(hub, "12h")
    assert code == 4  # the verdict's code: everything was imported
    assert event["security_hub"]["imported"] == len(asff_items)
    assert event["security_hub"]["not_imported"] == 0
    assert event["security_hub"]["problems"] == []
    # What configs/iam/security-hub-import.json allows, and nothing else (besides AssumeRole).
    calls = set(event["security_hub"]["api_calls"])
    assert {f"securityhub:{op}" for op in calls - {"AssumeRole"}} == set(SECURITY_HUB_ACTIONS)
    first: dict[str, dict[str, Any]] = {}
    for (account_id, region), ids in places.items():
        stored = _stored(hub, account_id, region)
        # Each account holds its own findings, and only those (the guard refuses others).
        assert set(stored) == ids
        assert {item["AwsAccountId"] for item in stored.values()} == {account_id}
        first |= stored
    stale = [i for i in asff_items if i["Compliance"]["Status"] == "FAILED"]
    assert stale

    # Again: the same findings, updated in place (ids are deterministic), first CreatedAt kept.
    code, event = _import(hub, "12h")
    assert code == 4
    assert event["security_hub"]["imported"] == len(asff_items)
    for (account_id, region), ids in places.items():
        stored = _stored(hub, account_id, region)
        assert set(stored) == ids
        for found_id, item in stored.items():
            assert item["CreatedAt"] == first[found_id]["CreatedAt"]

    # Recovered: at 2000 h every volume is within its objective; the stale ones become PASSED.
    code, event = _import(hub, "2000h")
    assert code == 5  # the offline gateways remain unknown
    for item in stale:
        now = _stored(hub, item["AwsAccountId"], item["Region"])[item["Id"]]
        assert now["Compliance"]["Status"] == "PASSED"
        assert now["RecordState"] == "ACTIVE"


def _planted(template: dict[str, Any], resource: str, gateway: str) -> dict[str, Any]:
    """A finding an earlier audit made for a volume this audit does not see."""
    return template | {
        "Id": f"fleetscan/rpo/{resource}",
        "Resources": [{"Type": "Other", "Id": resource}],
        "ProductFields": {"fleetscan/gateway_arn": gateway, "fleetscan/status": "stale"},
        "Compliance": {"Status": "FAILED"},
        "RecordState": "ACTIVE",
    }


def test_findings_of_vanished_volumes_are_archived_but_not_where_the_audit_was_blind(
    hub: Hub, asff_items: list[dict[str, Any]]
) -> None:
    places = _places(asff_items)
    _enable_everywhere(hub, places)
    volume = next(i for i in asff_items if i["Compliance"]["Status"] != "NOT_AVAILABLE")
    offline = next(i for i in asff_items if i["Compliance"]["Status"] == "NOT_AVAILABLE")
    account_id, region = volume["AwsAccountId"], volume["Region"]
    gone_arn = volume["Resources"][0]["Id"].rsplit("/", 1)[0] + "/vol-0GONE000"
    gone = _planted(volume, gone_arn, volume["Resources"][1]["Id"])
    # A whole gateway gone too: more findings to archive than one call takes (or one page holds).
    gone_gateway = gone_arn.split("/volume/")[0].rsplit("/", 1)[0] + "/sgw-0GONE000"
    also_gone = [
        _planted(volume, f"{gone_gateway}/volume/vol-{n:08X}", gone_gateway) for n in range(150)
    ]
    offline_gateway = offline["Resources"][0]["Id"]
    hidden = _planted(offline, offline_gateway + "/volume/vol-0HIDDEN0", offline_gateway)
    planting = _member_hub(hub, account_id, region)
    for start in range(0, 151, 100):
        planting.batch_import_findings(Findings=[gone, *also_gone][start : start + 100])
    _member_hub(hub, offline["AwsAccountId"], offline["Region"]).batch_import_findings(
        Findings=[hidden]
    )

    code, event = _import(hub, "12h")
    assert code == 4, event
    assert event["security_hub"]["archived"] == 151
    stored = _stored(hub, account_id, region)
    for item in (gone, *also_gone):
        assert stored[item["Id"]]["RecordState"] == "ARCHIVED"
    assert {stored[i]["RecordState"] for i in _places(asff_items)[(account_id, region)]} == {
        "ACTIVE"
    }
    # Its gateway could not be read: absence proves nothing, the finding stays.
    kept = _stored(hub, offline["AwsAccountId"], offline["Region"])[hidden["Id"]]
    assert kept["RecordState"] == "ACTIVE"
    # Archived once: a later import does not archive it again.
    _, again = _import(hub, "12h")
    assert again["security_hub"]["archived"] == 0


def test_throttles_and_failed_findings_are_retried(
    hub: Hub, asff_items: list[dict[str, Any]]
) -> None:
    _enable_everywhere(hub, _places(asff_items))
    guard = hub.stack.security_hub
    guard.throttle_imports, guard.fail_findings = 3, 7
    calls = guard.import_calls
    code, event = _import(hub, "12h")
    assert code == 4, event
    assert event["security_hub"]["imported"] == len(asff_items)
    assert event["security_hub"]["not_imported"] == 0
    assert (guard.throttle_imports, guard.fail_findings) == (0, 0)  # the faults did happen
    assert guard.import_calls > calls


def test_security_hub_not_enabled_is_one_problem_and_exit_6(
    hub: Hub, asff_items: list[dict[str, Any]]
) -> None:
    places = _places(asff_items)
    _enable_everywhere(hub, places)
    (account_id, region), ids = sorted(places.items())[0]
    _member_hub(hub, account_id, region).disable_security_hub()
    try:
        code, event = _import(hub, "12h")
        text = _fleetscan(
            "audit", "--input", hub.output, "--max-age", "12h", "--security-hub", env=hub.env
        )
    finally:
        _member_hub(hub, account_id, region).enable_security_hub()
    assert code == 6
    assert event["exit_code"] == 6
    assert event["stale"] > 0  # the verdict is still reported
    (problem,) = event["security_hub"]["problems"]
    assert (problem["account_id"], problem["region"]) == (account_id, region)
    assert (problem["operation"], problem["error_code"]) == (
        "DescribeHub",
        "InvalidAccessException",
    )
    assert problem["findings_not_imported"] == len(ids)
    assert event["security_hub"]["imported"] == len(asff_items) - len(ids)
    assert text.returncode == 6
    assert "Traceback" not in text.stderr
    (line,) = [
        line
        for line in text.stderr.splitlines()
        if line.startswith(f"Security Hub problem: {account_id} {region}: DescribeHub")
    ]
    assert "not enabled" in line
    assert line.endswith(f"({len(ids)} findings not imported)")


def test_an_emptied_region_is_archived_only_when_the_run_reached_everything(
    hub: Hub, asff_items: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A place the run read and found no volume in: fleetscan's old findings there are archived
    (its last volume is gone); but not after an interrupted run, which may never have got there."""
    places = _places(asff_items)
    _enable_everywhere(hub, places)
    suspended = {a.id for a in hub.fleet.accounts if not a.active}
    members = sorted({a for a, _ in places} - suspended)
    account_id, region = next((a, r) for a in members for r in REGIONS if (a, r) not in places)
    client = _member_hub(hub, account_id, region)
    client.enable_security_hub()
    template = next(i for i in asff_items if i["AwsAccountId"] == account_id)
    arn = f"arn:aws:storagegateway:{region}:{account_id}:gateway/sgw-0EMPTY00"
    old = _planted(template, f"{arn}/volume/vol-0EMPTY00", arn) | {
        "Region": region,
        "ProductArn": f"arn:aws:securityhub:{region}:{account_id}:product/{account_id}/default",
    }
    client.batch_import_findings(Findings=[old])

    interrupted = tmp_path / "interrupted"
    shutil.copytree(hub.output, interrupted)
    (manifest,) = interrupted.glob("manifests/dt=*/*.json")
    manifest.write_bytes(
        orjson.dumps(orjson.loads(manifest.read_bytes()) | {"status": "interrupted"})
    )
    proc = _fleetscan(
        "audit", "--input", interrupted, "--max-age", "12h", "--security-hub",
        "--log-format", "json",
        env=hub.env,
    )  # fmt: skip
    (event,) = [orjson.loads(line) for line in proc.stderr.splitlines()]
    assert event["run_status"] == "interrupted"
    assert event["security_hub"]["archived"] == 0
    assert _stored(hub, account_id, region)[old["Id"]]["RecordState"] == "ACTIVE"

    code, event = _import(hub, "12h")
    assert code == 4, event
    assert event["security_hub"]["archived"] == 1
    assert _stored(hub, account_id, region)[old["Id"]]["RecordState"] == "ARCHIVED"
