"""Several organizations in one run, against an emulated estate of several organizations.

The stack's ambient keys are the first organization's management account; the second is reached
by assuming its management role (``management_role_arn``), as a scanner outside it would. Every
test compares the run with the fleet's ground truth and checks each record's ``organization_id``
against the organization the fleet puts the account in.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from fleetscan_cli import run_cli
from ground_truth import assert_matches_truth, run_records
from jsonschema import Draft202012Validator

import fleetscan
from fleetscan import OrganizationConfig
from fleetscan._audit import Finding, audit, audit_to_dir, load_policy
from fleetscan._audit._reports import prepare_report_dir
from fleetscan._config import resumed_config, run_config, stored_config
from fleetscan._records import DATASETS, load_schema
from fleetscan._sinks import read_manifest
from fleetscan.emulator import (
    FleetSpec,
    OrganizationAccess,
    Stack,
    access_key_for_account,
    start_stack,
    verify_run,
)
from fleetscan.emulator._faults import FaultRule, Faults

REGIONS = ("us-east-1", "eu-west-1")
SPEC = FleetSpec(seed=5, accounts=10, regions=REGIONS, organizations=2)
#: The second organization's own member role and management-role external id, so that a run
#: that used the defaults for it would fail.
SECOND = OrganizationAccess(role_name="SecondReader", management_external_id="second-mgmt-id")


def _stack(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *access: OrganizationAccess,
    spec: FleetSpec = SPEC,
) -> Iterator[Stack]:
    with start_stack(spec, organizations=access) as stack:
        for key in list(os.environ):
            if key.startswith("AWS_"):
                monkeypatch.delenv(key)
        env = stack.env() | {
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield stack


@pytest.fixture
def two(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(monkeypatch, tmp_path, OrganizationAccess(), SECOND)


@pytest.fixture
def second_denied(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(monkeypatch, tmp_path, OrganizationAccess(), OrganizationAccess(denied=True))


def _entries(stack: Stack) -> tuple[OrganizationConfig, ...]:
    second = stack.organizations[1]
    return (
        OrganizationConfig(name="first"),
        OrganizationConfig(
            name="second",
            management_role_arn=second.management_role_arn,
            management_external_id=second.management_external_id,
            role_name=second.member_role_name,
        ),
    )


def _config(stack: Stack, output: Path, **overrides: Any) -> fleetscan.ScanConfig:
    values: dict[str, Any] = {
        "organizations": _entries(stack),
        "role_name": stack.role_name,
        "regions": REGIONS,
        "output": str(output),
        "concurrency": 32,
    } | overrides
    return fleetscan.ScanConfig(**values)


def _config_file(stack: Stack, tmp_path: Path, settings: str = "") -> Path:
    """A config file of the two organizations, as a user writes one (the second reached through
    its management role), with ``settings`` (TOML lines) at the top level."""
    second = stack.organizations[1]
    config = tmp_path / "scan.toml"
    config.write_text(
        f"""
role_name = "{stack.role_name}"
regions = {list(REGIONS)!r}
{settings}
[[organizations]]
name = "first"

[[organizations]]
name = "second"
management_role_arn = "{second.management_role_arn}"
management_external_id = "{second.management_external_id}"
role_name = "{second.member_role_name}"
""",
        encoding="utf-8",
    )
    return config


def _manifest(output: Path, run_id: str) -> dict[str, Any]:
    (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
    return read_manifest(path)


def _assert_organization_ids(stack: Stack, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Every record of an account names the organization the fleet puts the account in."""
    fleet = stack.fleet
    for dataset, records in rows.items():
        for record in records:
            if record["account_id"] is None:
                continue
            organization = fleet.organization_of(record["account_id"])
            assert organization is not None
            assert record["organization_id"] == organization.id, (dataset, record)
            assert record["schema_version"] == 2


async def test_two_organizations_in_one_run_equal_the_ground_truth_of_both(
    two: Stack, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output))

    assert result.status == "complete"
    fleet = two.fleet
    assert verify_run(fleet, str(output), result.run_id, regions=REGIONS).exact
    rows = run_records(str(output), result.run_id)
    assert_matches_truth(fleet, rows)
    _assert_organization_ids(two, rows)
    assert {r["organization_id"] for r in rows["recovery_points"]} == {
        o.id for o in fleet.organizations
    }

    manifest = _manifest(output, result.run_id)
    assert manifest["manifest_version"] == 2
    truth = fleet.ground_truth(regions=REGIONS)
    section = {entry["name"]: entry for entry in manifest["organizations"]}
    assert set(section) == {"first", "second"}
    for entry, organization in zip(
        (section["first"], section["second"]), fleet.organizations, strict=True
    ):
        assert entry["id"] == organization.id
        assert entry["status"] == "listed"
        assert entry["accounts"] == len(truth.organizations[organization.id])
        assert entry["units_failed"] == 0
        assert entry["units_done"] == entry["units_planned"] == entry["accounts"] * len(REGIONS)
        expected = Counter(r["organization_id"] for r in rows["recovery_points"])
        assert entry["records"]["recovery_points"] == expected[organization.id]
    assert (
        sum(e["records"]["gateways"] for e in section.values()) == manifest["records"]["gateways"]
    )
    placed = {a["id"]: a for a in manifest["summary"]["accounts_scanned"]}
    for account_id, account in placed.items():
        home = fleet.organization_of(account_id)
        assert home is not None
        assert account["organization_id"] == home.id
        assert account["organization_name"] == ("first" if home.index == 0 else "second")
        assert account["ou_ids"][0] == home.root_id


async def test_one_denied_organization_leaves_the_other_complete_and_the_run_partial(
    second_denied: Stack, tmp_path: Path
) -> None:
    stack = second_denied
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(stack, output))

    assert (result.status, result.exit_code) == ("partial", 3)
    fleet = stack.fleet
    first, second = fleet.organizations
    assert verify_run(
        fleet, str(output), result.run_id, regions=REGIONS, organizations={first.id}
    ).exact
    rows = run_records(str(output), result.run_id)
    assert_matches_truth(fleet, rows, accounts=fleet.scanned_accounts({first.id}))
    _assert_organization_ids(stack, rows)
    (error,) = [e for e in rows["errors"] if e["account_id"] is None]
    assert (error["operation"], error["error_code"]) == ("AssumeRole", "AccessDenied")
    assert error["message"].startswith("organization 'second': ")
    assert error["organization_id"] is None
    manifest = _manifest(output, result.run_id)
    section = {entry["name"]: entry for entry in manifest["organizations"]}
    assert section["second"]["status"] == "failed"
    assert section["second"]["accounts"] == 0
    assert section["first"]["status"] == "listed"
    assert section["first"]["id"] == first.id
    assert manifest["summary"]["organizations_failed"] == 1
    assert second.id not in {a["organization_id"] for a in manifest["summary"]["accounts_scanned"]}


async def test_an_organization_whose_listing_is_throttled_for_good_fails_alone(
    two: Stack, tmp_path: Path
) -> None:
    fleet = two.fleet
    first, second = fleet.organizations
    two.emulator.faults = Faults(
        [FaultRule(organization_id=second.id, operation="ListAccounts", throttle_rate=0)]
    )
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output, max_attempts=2))

    assert result.status == "partial"
    assert verify_run(
        fleet, str(output), result.run_id, regions=REGIONS, organizations={first.id}
    ).exact
    rows = run_records(str(output), result.run_id)
    (error,) = [e for e in rows["errors"] if e["account_id"] is None]
    assert error["operation"] == "ListAccounts"
    assert error["error_code"] == "TooManyRequestsException"
    assert "organization 'second'" in error["message"]


async def test_every_organization_failing_is_a_discovery_error(
    second_denied: Stack, tmp_path: Path
) -> None:
    stack = second_denied
    second = stack.organizations[1]
    only_second = (
        OrganizationConfig(name="second", management_role_arn=second.management_role_arn),
        OrganizationConfig(name="again", management_role_arn=second.management_role_arn),
    )
    config = _config(stack, tmp_path / "out", organizations=only_second)
    with pytest.raises(fleetscan.DiscoveryError, match="no organization could be listed") as e:
        await fleetscan.run_scan(config)
    assert "'second'" in str(e.value)
    assert "'again'" in str(e.value)


async def test_one_organization_by_org_names_it_on_every_record(two: Stack, tmp_path: Path) -> None:
    """``--org`` alone scans the ambient organization exactly as before, now with its id."""
    output = tmp_path / "out"
    config = fleetscan.ScanConfig(
        org=True, role_name=two.role_name, regions=REGIONS, output=str(output)
    )
    result = await fleetscan.run_scan(config)

    assert result.status == "complete"
    first = two.fleet.organizations[0]
    rows = run_records(str(output), result.run_id)
    assert_matches_truth(two.fleet, rows, accounts=two.fleet.scanned_accounts({first.id}))
    _assert_organization_ids(two, rows)
    (entry,) = _manifest(output, result.run_id)["organizations"]
    assert (entry["name"], entry["id"], entry["status"]) == (None, first.id, "listed")


async def test_a_static_account_list_has_no_organization(two: Stack, tmp_path: Path) -> None:
    output = tmp_path / "out"
    account = two.fleet.scanned_accounts()[1]
    config = fleetscan.ScanConfig(
        accounts=(account,), role_name=two.role_name, regions=REGIONS, output=str(output)
    )
    result = await fleetscan.run_scan(config)

    assert result.status == "complete"
    rows = run_records(str(output), result.run_id)
    assert rows["gateways"]
    assert {r["organization_id"] for dataset in rows.values() for r in dataset} == {None}
    assert _manifest(output, result.run_id)["organizations"] == []


def test_the_cli_scans_two_organizations_from_a_config_file(two: Stack, tmp_path: Path) -> None:
    config = _config_file(two, tmp_path)
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | two.env()
    done = subprocess.run(
        [sys.executable, "-m", "fleetscan", "scan", "--config", str(config),
         "--output", str(output), "--quiet"],
        env=env, capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    (manifest_path,) = output.glob("manifests/dt=*/*.json")
    manifest = read_manifest(manifest_path)
    assert verify_run(two.fleet, str(output), manifest["run_id"], regions=REGIONS).exact
    _assert_organization_ids(two, run_records(str(output), manifest["run_id"]))
    assert [e["name"] for e in manifest["organizations"]] == ["first", "second"]
    assert manifest["summary"]["config"]["organizations"] == ["first", "second"]
    # The management role's external id is a secret: nowhere in what the run wrote.
    assert b"second-mgmt-id" not in done.stdout + done.stderr
    for path in output.rglob("*"):
        if path.is_file():
            assert b"second-mgmt-id" not in path.read_bytes(), path


# -- the audit policy's organization selector ---------------------------------------------------

HOUR = 3600


def _policy(tmp_path: Path, text: str) -> fleetscan.Policy:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return load_policy(path)


async def test_audit_rules_select_an_organization_by_name_or_by_id(
    two: Stack, tmp_path: Path
) -> None:
    """The emulated fleet's volumes are fresh (< 6 h) or stale (> 26 h): with a lenient default,
    a 12 h objective for one organization makes exactly its stale volumes stale."""
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output))
    assert result.status == "complete"
    fleet = two.fleet
    first, second = fleet.organizations
    truth = fleet.ground_truth(regions=REGIONS)
    stale_in = Counter(
        rp.organization_id for rp in truth.recovery_points if rp.age_seconds > 26 * HOUR
    )
    assert stale_in[first.id]
    assert stale_in[second.id]

    home = {a: o.id for o in fleet.organizations for a in fleet.scanned_accounts({o.id})}
    for selector in ('"second"', f'"{second.id}"', f'["nothing-here", "{second.id}"]'):
        policy = _policy(
            tmp_path,
            f'max_age = "2000h"\n[[rules]]\nname = "strict"\nmax_age = "12h"\n'
            f"organization = {selector}\n",
        )
        findings: list[Finding] = []
        audited = await audit(str(output), policy, on_finding=findings.append)
        stale = [f for f in findings if f.status == "stale"]
        assert {home[f.account_id or ""] for f in stale} == {second.id}
        assert len(stale) == stale_in[second.id]
        assert audited.rules["strict"].counts["stale"] == stale_in[second.id]
        assert audited.warnings == []


async def test_a_diff_of_two_organizations_names_each_changes_organization(
    two: Stack, tmp_path: Path
) -> None:
    """Between two runs of both organizations, each one gains a volume and gets a volume stuck;
    the first loses a gateway (its volumes gone), the second has one go offline. Every change
    names the organization the fleet puts its account in, what is gone included (known only
    from the earlier run's records)."""
    output = tmp_path / "out"
    fleet = two.fleet
    first, second = fleet.organizations
    before = await fleetscan.run_scan(_config(two, output))
    assert before.status == "complete"
    truth = fleet.ground_truth(regions=REGIONS)
    points = {rp.volume_arn: rp.recovery_point_time for rp in truth.recovery_points}
    for organization in (first, second):
        lost, grown = [
            g
            for g in fleet.iter_gateways(REGIONS)
            if g.is_cached and g.connected and len(g.volumes) >= 2
            and organization.id == getattr(fleet.organization_of(g.account_id), "id", None)
        ][:2]  # fmt: skip
        fleet.add_volume(grown.arn)
        stuck = grown.volumes[0].arn
        fleet.pin_recovery_point(stuck, points[stuck])
        if organization is first:
            fleet.remove_gateway(lost.arn)
        else:
            fleet.disconnect_gateway(lost.arn)
    fleet.advance(HOUR)
    after = await fleetscan.run_scan(_config(two, output))
    assert after.status == "complete"  # a gateway offline is an error record, not a failed unit

    proc = run_cli(
        "diff", "--input", output, "--from", before.run_id, "--to", after.run_id,
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    changes = [orjson.loads(line) for line in proc.stdout.splitlines()]
    home = {a: o.id for o in fleet.organizations for a in fleet.scanned_accounts({o.id})}
    assert changes
    for change in changes:
        assert change["organization_id"] == home[change["account_id"]], change
    found = {(c["change"], c["organization_id"]) for c in changes}
    assert {
        ("appeared", first.id), ("appeared", second.id),
        ("stuck", first.id), ("stuck", second.id),
        ("gateway-gone", first.id), ("gone", first.id),
        ("gateway-unreachable", second.id),
    } <= found  # fmt: skip
    # The table names them too, as the changes span two organizations.
    assert "organization" in proc.stderr
    assert first.id in proc.stderr
    assert second.id in proc.stderr
    # So do the audit's reports, in what changed since the previous run.
    reports = prepare_report_dir(tmp_path / "reports")
    policy = fleetscan.Policy.single("2000h")
    await audit_to_dir(str(output), policy, report_dir=reports, max_scan_age=None)
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    changed = markdown[markdown.index("What changed") :]
    assert "| change | organization | account |" in changed
    assert first.id in changed
    assert second.id in changed


def test_an_ou_rule_beats_an_organization_rule_which_beats_a_region_rule(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        'max_age = "24h"\n'
        '[[rules]]\nname = "region"\nmax_age = "1h"\nregion = "eu-west-1"\n'
        '[[rules]]\nname = "org"\nmax_age = "8h"\norganization = "o-exampleorg1"\n'
        '[[rules]]\nname = "ou"\nmax_age = "16h"\nou = "ou-abcd-11111111"\n',
    )

    def rule(ou_ids: tuple[str, ...], organization: tuple[str, ...]) -> str:
        return policy.objective_for(
            account_id="111122223333",
            ou_ids=ou_ids,
            region="eu-west-1",
            gateway_name="gw",
            organization=organization,
        ).rule

    named = ("o-exampleorg1", "prod")
    assert rule(("r-abcd", "ou-abcd-11111111"), named) == "ou"
    assert rule(("r-abcd",), named) == "org"
    assert rule(("r-abcd",), ("o-otherorg22", "acquired")) == "region"
    # A run without organizations (a static list, an older fleetscan) matches no such rule.
    assert rule((), ()) == "region"
    assert (
        "organization o-exampleorg1" in next(r for r in policy.rules if r.name == "org").describe()
    )


@pytest.mark.parametrize("value", ['"x/y"', '"-lead"', "3", "[]", '"a b"'])
def test_a_bad_organization_selector_names_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(fleetscan.ConfigError) as caught:
        _policy(
            tmp_path,
            f'max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"\norganization = {value}\n',
        )
    assert "rules[0].organization" in str(caught.value)


# -- runs written before organizations: schema 1 records, manifest version 1 --------------------


def _as_schema_1(output: Path, run_id: str) -> None:
    """Rewrite a run as fleetscan wrote it before organizations: records of schema 1 (no
    organization_id), a manifest of version 1 (no organizations section, no organization per
    account), its sizes and checksums recomputed as that fleetscan computed them."""
    (path,) = output.glob(f"manifests/dt=*/{run_id}.json")
    manifest = orjson.loads(path.read_bytes())
    for entry in manifest["files"]:
        data = output / entry["path"]
        lines = []
        for line in data.read_bytes().splitlines():
            record = orjson.loads(line)
            del record["organization_id"]
            record["schema_version"] = 1
            lines.append(orjson.dumps(record) + b"\n")
        body = b"".join(lines)
        data.write_bytes(body)
        entry["bytes"] = len(body)
        entry["sha256"] = hashlib.sha256(body).hexdigest()
    manifest["manifest_version"] = 1
    manifest["schema_version"] = 1
    del manifest["organizations"]
    for account in manifest["summary"]["accounts_scanned"]:
        del account["organization_id"], account["organization_name"]
    path.write_bytes(orjson.dumps(manifest))


async def test_runs_of_schema_1_are_still_read_and_audited(two: Stack, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output))
    _as_schema_1(output, result.run_id)

    assert await fleetscan.alatest_run(str(output), complete_only=True) == result.run_id
    rows = run_records(str(output), result.run_id)
    assert_matches_truth(two.fleet, rows)
    assert {r["schema_version"] for r in rows["recovery_points"]} == {1}
    for dataset, records in rows.items():
        for record in records:
            assert problems(dataset, record) == []
    (path,) = output.glob(f"manifests/dt=*/{result.run_id}.json")
    assert problems("manifest", read_manifest(path)) == []
    # An organization rule matches nothing in such a run, and the audit says so.
    policy = _policy(
        tmp_path,
        'max_age = "2000h"\n[[rules]]\nname = "strict"\nmax_age = "12h"\norganization = "second"\n',
    )
    audited = await audit(str(output), policy)
    assert audited.counts["stale"] == 0
    assert any("records no organization" in warning for warning in audited.warnings)


def problems(name: str, instance: Any) -> list[str]:
    check = Draft202012Validator(
        load_schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [error.message for error in check.iter_errors(instance)]


# -- dry runs and resumes -----------------------------------------------------------------------


async def test_a_dry_run_plans_the_organizations_it_can_list_and_names_the_others(
    second_denied: Stack, tmp_path: Path
) -> None:
    stack = second_denied
    first = stack.fleet.organizations[0]
    plan = await fleetscan.plan_scan(_config(stack, tmp_path / "out", dry_run=True))
    assert sorted(a["id"] for a in plan["accounts"]) == sorted(
        stack.fleet.scanned_accounts({first.id})
    )
    assert {a["organization_id"] for a in plan["accounts"]} == {first.id}
    assert list(plan["organizations_failed"]) == ["second"]
    assert "AccessDenied" in plan["organizations_failed"]["second"]
    assert stack.emulator.counters.calls("ListGateways") == 0
    assert stack.emulator.counters.calls("ListAccounts") >= 1


def test_a_resume_keeps_the_runs_organizations_and_asks_for_their_secrets_again(
    tmp_path: Path,
) -> None:
    entries = (
        OrganizationConfig(name="first"),
        OrganizationConfig(
            name="second",
            management_role_arn="arn:aws:iam::222233334444:role/FleetscanOrgReader",
            management_external_id="second-mgmt-id",
        ),
    )
    output = str(tmp_path / "out")
    config = fleetscan.ScanConfig(organizations=entries, role_name="R", output=output)
    stored = stored_config(config)
    assert "second-mgmt-id" not in orjson.dumps(stored).decode()
    assert stored["organizations"][1]["management_external_id"] == "<set>"
    # Given nothing but where the run is: the secret it needs is missing, and said so.
    with pytest.raises(fleetscan.ConfigError) as caught:
        resumed_config(stored, {"output": output, "resume": "r1"}, "r1")
    assert caught.value.field == "organizations"
    assert "'second'" in caught.value.problem
    assert "management_external_id" in caught.value.problem
    # Given the run's [[organizations]] again: resumed as it was.
    resumed = resumed_config(
        stored, {"output": output, "resume": "r1", "organizations": entries}, "r1"
    )
    assert resumed.organizations == entries
    # Given other organizations: refused, as a resume scans what its run started to scan.
    with pytest.raises(fleetscan.ConfigError) as caught:
        resumed_config(
            stored,
            {
                "output": output,
                "resume": "r1",
                "organizations": (*entries[:1], OrganizationConfig(name="third")),
            },
            "r1",
        )
    assert "organizations" in caught.value.problem


async def test_an_organization_by_profile_and_one_split_in_two_entries_by_ou(
    two: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile holding the second management account's keys reaches the second organization
    (its members' roles assumed with them); the first is split across two entries, one for its
    Production OU and one for the rest, and every account is scanned once."""
    fleet = two.fleet
    first, second = fleet.organizations
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[second-management]\n"
        f"aws_access_key_id = {access_key_for_account(second.management.id)}\n"
        "aws_secret_access_key = emulated-secret\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    production = first.ous[0]
    entries = (
        OrganizationConfig(name="production", ous=(production.id,)),
        OrganizationConfig(name="first-rest"),
        OrganizationConfig(name="second", profile="second-management", role_name=SECOND.role_name),
    )
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output, organizations=entries))

    assert result.status == "complete"
    verification = verify_run(fleet, str(output), result.run_id, regions=REGIONS)
    assert verification.exact
    rows = run_records(str(output), result.run_id)
    assert_matches_truth(fleet, rows)
    _assert_organization_ids(two, rows)
    section = {e["name"]: e for e in _manifest(output, result.run_id)["organizations"]}
    assert (section["production"]["id"], section["first-rest"]["id"]) == (first.id, first.id)
    in_production = {
        a["id"]
        for a in _manifest(output, result.run_id)["summary"]["accounts_scanned"]
        if production.id in a["ou_ids"]
    }
    assert section["production"]["accounts"] == len(in_production) > 0
    truth = fleet.ground_truth(regions=REGIONS)
    assert section["production"]["accounts"] + section["first-rest"]["accounts"] == len(
        truth.organizations[first.id]
    )
    assert section["second"]["accounts"] == len(truth.organizations[second.id])
    assert sum(e["records"]["recovery_points"] for e in section.values()) == len(
        rows["recovery_points"]
    )


async def test_an_organization_whose_profile_does_not_exist_fails_alone(
    two: Stack, tmp_path: Path
) -> None:
    first = two.fleet.organizations[0]
    entries = (
        OrganizationConfig(name="first"),
        OrganizationConfig(name="elsewhere", profile="no-such-profile"),
    )
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output, organizations=entries))

    assert result.status == "partial"
    assert verify_run(
        two.fleet, str(output), result.run_id, regions=REGIONS, organizations={first.id}
    ).exact
    (error,) = [e for e in run_records(str(output), result.run_id)["errors"] if not e["account_id"]]
    assert error["message"].startswith("organization 'elsewhere': ")
    assert "no-such-profile" in error["message"]
    assert error["retryable"] is False


#: Big enough to be interrupted mid-scan with some latency (as tests/scan_runs.py's fleet).
KILLABLE = FleetSpec(seed=11, accounts=30, regions=REGIONS, organizations=2)


@pytest.fixture
def killable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(monkeypatch, tmp_path, OrganizationAccess(), SECOND, spec=KILLABLE)


def test_an_interrupted_run_of_two_organizations_resumes_to_exactly_both(
    killable: Stack, tmp_path: Path
) -> None:
    stack = killable
    config = _config_file(stack, tmp_path, "concurrency = 4\ncheckpoint_interval = 0.05\n")
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | stack.env()
    base = [sys.executable, "-m", "fleetscan", "scan", "--output", str(output), "--quiet"]
    stack.emulator.faults = Faults([FaultRule(latency_ms=40, jitter_ms=20)])
    scan = subprocess.Popen([*base, "--config", str(config)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(
        p.read_bytes().count(b"\n") >= 2 for p in output.glob("checkpoints/dt=*/*.ndjson")
    ):
        assert scan.poll() is None, "the scan ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    scan.send_signal(signal.SIGTERM)
    _, stderr = scan.communicate(timeout=60)
    assert scan.returncode == 143, stderr.decode()
    stack.emulator.faults = Faults([])

    # Without the config, the management role's external id is missing: refused, named.
    refused = subprocess.run(
        [*base, "--resume", "latest"], env=env, capture_output=True, timeout=60, check=False
    )
    assert refused.returncode == 2
    assert b"organization 'second'" in refused.stderr
    assert b"second-mgmt-id" not in refused.stderr

    resumed = subprocess.run(
        [*base, "--resume", "latest", "--config", str(config)],
        env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()
    (manifest_path,) = output.glob("manifests/dt=*/*.json")
    manifest = read_manifest(manifest_path)
    assert manifest["status"] == "complete"
    assert verify_run(stack.fleet, str(output), manifest["run_id"], regions=REGIONS).exact
    _assert_organization_ids(stack, run_records(str(output), manifest["run_id"]))
    # Every session's records are counted per organization: the earlier sessions' from the
    # checkpoint, whose entries count what they made durable.
    rows = run_records(str(output), manifest["run_id"])
    for entry in manifest["organizations"]:
        assert entry["records"] == {
            dataset: sum(1 for r in rows[dataset] if r["organization_id"] == entry["id"])
            for dataset in DATASETS
        }
    assert {e["id"] for e in manifest["organizations"]} == {o.id for o in stack.fleet.organizations}


async def test_every_organizations_members_are_reached_through_the_hub_role(
    two: Stack, tmp_path: Path
) -> None:
    fleet = two.fleet
    first = fleet.organizations[0]
    hub = f"arn:aws:iam::{first.member_ids[0]}:role/{two.role_name}"
    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(two, output, hub_role_arn=hub))

    assert result.status == "complete"
    assert verify_run(fleet, str(output), result.run_id, regions=REGIONS).exact
    _assert_organization_ids(two, run_records(str(output), result.run_id))
    # One hub session per organization, then one session per account; the second
    # organization's management role is assumed directly, not through the hub.
    assumed = two.emulator.counters.calls("AssumeRole")
    assert assumed == result.stats.accounts + 2 + 1


@pytest.mark.parametrize(
    ("organizations", "field"),
    [
        ("first", "config.organizations"),
        ([["first"]], "config.organizations[0]"),
        (
            [{"name": "first", "external_id": "a-real-secret"}],
            "config.organizations[0].external_id",
        ),
        ([{"name": "first", "nmae": "x"}], "config.organizations[0].nmae"),
        ([{"name": "first"}, {"name": "first"}], "config.organizations[1].name"),
        ([{"name": "x", "ous": "ou-ab12-cd34ef56"}], "config.organizations[0] (x).ous"),
    ],
)
def test_a_tampered_stored_organizations_setting_is_refused_naming_it(
    organizations: object, field: str
) -> None:
    """A checkpoint's stored configuration is read back like any file: it may be torn or
    tampered, and a bad ``organizations`` in it is refused, naming it, never quoting a secret."""
    stored = stored_config(fleetscan.ScanConfig(org=True, role_name="R"))
    stored["org"] = False
    stored["organizations"] = organizations
    with pytest.raises(fleetscan.ConfigError) as caught:
        run_config(stored)
    assert caught.value.field == field
    assert "a-real-secret" not in str(caught.value)


async def _sharded(stack: Stack, output: Path, count: int) -> list[fleetscan.ScanResult]:
    """Every shard of one run of ``stack``'s organizations, all at once in this process."""
    results: list[fleetscan.ScanResult] = []

    async def shard(index: int) -> None:
        config = _config(stack, output, shard=f"{index}/{count}", run_id="orgs-sharded")
        results.append(await fleetscan.run_scan(config))

    async with anyio.create_task_group() as tg:
        for index in range(1, count + 1):
            tg.start_soon(shard, index)
    return results


async def test_shards_of_two_organizations_make_one_run_equal_to_both(
    two: Stack, tmp_path: Path
) -> None:
    # The plan keeps each account's organization: every shard reaches its share of the second
    # organization through that organization's own member role, with no listing of its own.
    output = tmp_path / "out"
    results = await _sharded(two, output, 3)
    assert sorted(r.status for r in results) == ["complete"] * 3
    fleet = two.fleet
    assert verify_run(fleet, str(output), "orgs-sharded", regions=REGIONS).exact
    rows = run_records(str(output), "orgs-sharded")
    assert_matches_truth(fleet, rows)
    _assert_organization_ids(two, rows)
    manifest = _manifest(output, "orgs-sharded")
    assert manifest["status"] == "complete"
    # One entry per organization, its counts added up over the shards that scanned it.
    truth = fleet.ground_truth(regions=REGIONS)
    section = {entry["name"]: entry for entry in manifest["organizations"]}
    assert set(section) == {"first", "second"}
    expected = Counter(r["organization_id"] for r in rows["recovery_points"])
    for entry, organization in zip(
        (section["first"], section["second"]), fleet.organizations, strict=True
    ):
        assert (entry["id"], entry["status"]) == (organization.id, "listed")
        assert entry["accounts"] == len(truth.organizations[organization.id])
        assert entry["units_done"] == entry["accounts"] * len(REGIONS)
        assert entry["records"]["recovery_points"] == expected[organization.id]


async def test_shards_with_one_organization_denied_make_one_partial_run_naming_it(
    second_denied: Stack, tmp_path: Path
) -> None:
    stack = second_denied
    output = tmp_path / "out"
    results = await _sharded(stack, output, 2)
    assert {r.status for r in results} <= {"complete", "partial"}
    fleet = stack.fleet
    first, _ = fleet.organizations
    assert verify_run(
        fleet, str(output), "orgs-sharded", regions=REGIONS, organizations={first.id}
    ).exact
    rows = run_records(str(output), "orgs-sharded")
    # One error record for the organization, written once (by shard 1), not once per shard.
    (error,) = [e for e in rows["errors"] if e["account_id"] is None]
    assert error["message"].startswith("organization 'second': ")
    manifest = _manifest(output, "orgs-sharded")
    assert manifest["status"] == "partial"
    section = {entry["name"]: entry for entry in manifest["organizations"]}
    assert section["second"]["status"] == "failed"
    assert section["first"]["status"] == "listed"


async def test_the_scan_metrics_count_each_organization_as_its_manifest_does(
    second_denied: Stack, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from fleetscan._metrics import scan_metrics, write_metrics

    output = tmp_path / "out"
    result = await fleetscan.run_scan(_config(second_denied, output))
    manifest = _manifest(output, result.run_id)
    path = tmp_path / "fleetscan.prom"
    write_metrics(path, scan_metrics(manifest))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    section = {entry["name"]: entry for entry in manifest["organizations"]}
    listed = "fleetscan_scan_organization_listed"
    assert samples[(listed, (("organization", "first"),))] == 1
    assert samples[(listed, (("organization", "second"),))] == 0
    units = "fleetscan_scan_organization_units"
    for state in ("planned", "done", "failed"):
        key = (units, (("organization", "first"), ("state", state)))
        assert samples[key] == section["first"][f"units_{state}"]
    records = "fleetscan_scan_organization_records_total"
    for dataset in ("recovery_points", "gateways", "errors"):
        key = (records, (("dataset", dataset), ("organization", "first")))
        assert samples[key] == section["first"]["records"][dataset]
