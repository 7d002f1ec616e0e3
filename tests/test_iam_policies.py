"""configs/iam/ allows exactly what fleetscan does, and the session policies fleetscan attaches too.

Which calls fleetscan makes is not read from its code: scans run against the emulated organization
and report their calls by operation (the manifest's ``summary.api_calls``); botocore's service
models say which service each operation belongs to, and so which IAM action it needs. The session
policies are read from moto's STS backend, as AssumeRole received them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import botocore.session
import pytest
from moto.backends import get_backend

import fleetscan
from fleetscan._credentials import (
    HUB_SESSION_POLICY,
    MANAGEMENT_ACTIONS,
    MANAGEMENT_SESSION_POLICY,
    MEMBER_ACTIONS,
    MEMBER_SESSION_POLICY,
    SECURITY_HUB_ACTIONS,
    SECURITY_HUB_SESSION_POLICY,
)
from fleetscan._sinks import find_manifest, read_manifest
from fleetscan.emulator import FleetSpec, Stack, start_stack

IAM = Path(__file__).resolve().parent.parent / "configs" / "iam"
#: The services fleetscan talks to; every operation it reports must belong to exactly one.
SERVICES = ("organizations", "sts", "storagegateway", "ec2")


@pytest.fixture
def stack(fleet_spec: FleetSpec) -> Iterator[Stack]:
    """moto's STS and IAM: the session policies are read from the sessions moto's STS recorded,
    and trust policies are changed in moto's IAM."""
    with start_stack(fleet_spec, identity="moto") as running:
        yield running


def policy(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((IAM / name).read_text())
    assert document["Version"] == "2012-10-17"
    return document


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document["Statement"]
    return found if isinstance(found, list) else [found]


def allowed_actions(document: dict[str, Any]) -> set[str]:
    """The actions a policy allows; least privilege means no Deny tricks, no NotAction, no *."""
    actions: set[str] = set()
    for statement in statements(document):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    assert not any("*" in action for action in actions), actions
    return actions


def iam_actions(operations: set[str]) -> dict[str, set[str]]:
    """IAM actions by service for API operation names, as botocore's models place them."""
    session = botocore.session.get_session()
    models = {name: session.get_service_model(name) for name in SERVICES}
    by_service: dict[str, set[str]] = {}
    for operation in operations:
        owners = [name for name, model in models.items() if operation in model.operation_names]
        assert len(owners) == 1, f"{operation} belongs to {owners}"
        prefix = models[owners[0]].signing_name
        by_service.setdefault(owners[0], set()).add(f"{prefix}:{operation}")
    return by_service


def api_calls(output: Path, result: fleetscan.ScanResult) -> set[str]:
    manifest = read_manifest(find_manifest(output, result.run_id))
    calls: dict[str, int] = manifest["summary"]["api_calls"]
    return {operation for operation, count in calls.items() if count > 0}


def sessions() -> list[Any]:
    """Every AssumeRole moto answered in this process, with the policy it was sent."""
    return [
        role
        for account in get_backend("sts").values()
        for backend in account.values()
        for role in backend.assumed_roles
    ]


def matches(pattern: str, arn: str) -> bool:
    """IAM's ARN wildcards: ``*`` any run of characters, ``?`` one."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, arn) is not None


def scan(stack: Stack, output: Path, **overrides: Any) -> tuple[fleetscan.ScanResult, set[str]]:
    values: dict[str, Any] = {"org": True, "role_name": stack.role_name, "output": str(output)}
    values.update(overrides)
    result = anyio.run(fleetscan.run_scan, fleetscan.ScanConfig(**values), backend="asyncio")
    assert result.status == "complete"
    return result, api_calls(output, result)


def test_the_security_hub_policy_allows_the_import_session_actions_and_no_more() -> None:
    """configs/iam/security-hub-import.json is optional and separate from the reader's policy;
    tests/test_security_hub.py checks that an import calls exactly these operations."""
    document = policy("security-hub-import.json")
    assert allowed_actions(document) == set(SECURITY_HUB_ACTIONS)
    assert not allowed_actions(document) & allowed_actions(policy("member-role.json"))
    statement = json.loads(SECURITY_HUB_SESSION_POLICY)["Statement"][0]
    assert statement["Action"] == list(SECURITY_HUB_ACTIONS)
    model = botocore.session.get_session().get_service_model("securityhub")
    assert {
        f"securityhub:{op}" for op in ("DescribeHub", "GetFindings", "BatchImportFindings")
    } == (set(SECURITY_HUB_ACTIONS))
    assert all(a.split(":")[1] in model.operation_names for a in SECURITY_HUB_ACTIONS)
    # Importing is allowed only as the account's own product; the reads only on its own hub.
    for found in statements(document):
        listed = found["Action"]
        actions = {listed} if isinstance(listed, str) else set(listed)
        imports = actions == {"securityhub:BatchImportFindings"}
        own = "product/111122223333/default" if imports else "hub/default"
        assert found["Resource"] == f"arn:aws:securityhub:*:111122223333:{own}", actions


def test_the_member_role_policy_allows_the_member_session_actions() -> None:
    assert allowed_actions(policy("member-role.json")) == set(MEMBER_ACTIONS)
    assert json.loads(MEMBER_SESSION_POLICY)["Statement"][0]["Action"] == list(MEMBER_ACTIONS)


def test_the_org_reader_policy_allows_the_management_session_actions() -> None:
    """A management role (``management_role_arn``) is given org-reader.json, and its session
    policy allows exactly that: listing the organization, nothing else."""
    assert allowed_actions(policy("org-reader.json")) == set(MANAGEMENT_ACTIONS)
    statement = json.loads(MANAGEMENT_SESSION_POLICY)["Statement"][0]
    assert statement["Action"] == list(MANAGEMENT_ACTIONS)


def test_org_scans_call_exactly_what_the_policies_and_the_session_policy_allow(
    stack: Stack, stack_env: None, tmp_path: Path
) -> None:
    # The whole organization, regions as enabled per account (EC2 DescribeRegions) ...
    _, whole = scan(stack, tmp_path / "org")
    # ... and a subtree of OUs, which discovery walks with other calls.
    production = next(ou for ou in stack.fleet.ous if ou.name == "Production")
    _, subtree = scan(
        stack, tmp_path / "ou", ous=(production.id,), regions=stack.fleet.spec.regions
    )
    by_service = iam_actions(whole | subtree)

    assert by_service["organizations"] == allowed_actions(policy("org-reader.json"))
    member_calls = by_service["storagegateway"] | by_service["ec2"]
    assert member_calls == allowed_actions(policy("member-role.json"))
    assert by_service["sts"] == {"sts:AssumeRole"}
    assert set(by_service) == set(SERVICES)

    # Every member session carried the session policy, which allows exactly the member calls.
    members = sessions()
    assert members
    assert {s.policy for s in members} == {MEMBER_SESSION_POLICY}
    (statement,) = json.loads(MEMBER_SESSION_POLICY)["Statement"]
    assert (statement["Effect"], statement["Resource"]) == ("Allow", "*")
    assert set(statement["Action"]) == member_calls


def test_hub_sessions_may_only_assume_the_member_roles(
    stack: Stack, stack_env: None, tmp_path: Path
) -> None:
    hub_arn = stack.role_arn(stack.fleet.accounts[0].id)
    result, calls = scan(stack, tmp_path, hub_role_arn=hub_arn, regions=stack.fleet.spec.regions)
    by_service = iam_actions(calls)
    assert by_service["sts"] == {"sts:AssumeRole"}

    assumed = sessions()
    (hub,) = [s for s in assumed if s.policy == HUB_SESSION_POLICY]
    assert hub.role_arn == hub_arn
    members = [s for s in assumed if s is not hub]
    assert len(members) == result.stats.accounts
    assert {s.policy for s in members} == {MEMBER_SESSION_POLICY}
    assert json.loads(HUB_SESSION_POLICY)["Statement"][0]["Action"] == ["sts:AssumeRole"]

    # The shipped hub policy: AssumeRole only, on exactly the member roles the scan assumed.
    document = policy("hub-role.json")
    assert allowed_actions(document) == {"sts:AssumeRole"}
    patterns = [s["Resource"] for s in statements(document)]
    for session in members:
        assert any(matches(p, session.role_arn) for p in patterns), session.role_arn
    assert not any(matches(p, f"arn:aws:iam::{hub.account_id}:role/Admin") for p in patterns)


def test_the_shipped_trust_policy_admits_only_callers_with_the_external_id(
    stack: Stack, stack_env: None, tmp_path: Path
) -> None:
    external_id = "fleetscan-test-external-id"
    document = policy("member-trust.json")
    (statement,) = statements(document)
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"]["sts:ExternalId"]
    text = json.dumps(document).replace("111122223333", stack.management_account_id)
    text = text.replace(statement["Condition"]["StringEquals"]["sts:ExternalId"], external_id)
    iam = get_backend("iam")
    for account in stack.fleet.accounts:
        iam[account.id]["global"].update_assume_role_policy(stack.role_name, text)
    regions = stack.fleet.spec.regions

    refused = anyio.run(
        fleetscan.run_scan,
        fleetscan.ScanConfig(
            org=True, role_name=stack.role_name, regions=regions, output=str(tmp_path / "no")
        ),
        backend="asyncio",
    )
    # Every member refuses; only the management account (whose role trusts itself) is scanned.
    assert refused.status == "partial"
    assert refused.stats.accounts_failed == len([a for a in stack.fleet.accounts if a.active])

    admitted, _ = scan(stack, tmp_path / "yes", external_id=external_id, regions=regions)
    assert admitted.stats.accounts_failed == 0


def test_security_hub_import_sessions_carry_only_the_import_actions(
    stack: Stack, stack_env: None, tmp_path: Path
) -> None:
    """The import assumes the role in each member account with the import's session policy (read
    from moto's STS), never the reader's; Security Hub is not enabled in moto's accounts here, so
    each account and region is one DescribeHub problem."""
    from fleetscan._audit import Policy, audit
    from fleetscan._audit._asff import asff_findings
    from fleetscan._audit._securityhub import import_findings

    result, _ = scan(stack, tmp_path, regions=stack.fleet.spec.regions)
    before = {id(session) for session in sessions()}
    found: list[Any] = []
    audited = anyio.run(
        lambda: audit(str(tmp_path), Policy.single("1d"), on_finding=found.append),
        backend="asyncio",
    )
    items = asff_findings(audited, found)
    config = fleetscan.ScanConfig(org=True, role_name=stack.role_name)
    imported = anyio.run(
        lambda: import_findings(items, config, role_name=stack.role_name), backend="asyncio"
    )
    accounts = {item["AwsAccountId"] for item in items}
    import_sessions = [session for session in sessions() if id(session) not in before]
    assert {s.policy for s in import_sessions} == {SECURITY_HUB_SESSION_POLICY}
    assert {s.role_arn.split(":")[4] for s in import_sessions} == accounts
    assert set(imported.api_calls) == {"AssumeRole", "DescribeHub"}
    assert {(p.operation, p.error_code) for p in imported.problems} == {
        ("DescribeHub", "InvalidAccessException")
    }
    assert imported.not_imported == len(items)
    assert result.stats.accounts >= len(accounts)
