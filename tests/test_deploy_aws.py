"""The deploy kit against the emulated organization: the roles its templates create, and scans run
the way its Kubernetes and AWS Batch definitions run them, through those roles.

- The member role goes out as a service-managed StackSet (moto's CreateStackSet and
  CreateStackInstances create each instance's role in the member account), the scanner role as a
  plain stack in the management account. Scans then go through them: the scanner role's
  credentials come the way the engine gives them (a web identity token for IRSA, the ECS
  container credentials endpoint for a Batch job role), fleetscan assumes each member's reader
  role with the external id, and writes to S3.
- What enforces what, here: moto itself lets any role be assumed by anyone. The emulator's
  AssumeRole guard (``fleetscan.emulator._moto``, the stack's ``identity="moto"``) refuses a
  role that does not exist in the account (the management account's included: the reader role
  goes there as a plain stack, as the Deploy page says) and a trust policy's ``sts:ExternalId``
  (StringEquals) that the caller does not meet: those are asserted through real AssumeRole
  calls. Nothing here evaluates a trust policy's principal, its ``aws:PrincipalArn`` condition,
  IRSA's ``sub``/``aud`` conditions or any permission policy: those documents are read back
  through the IAM API and asserted, and each permission policy is compared with the calls the
  scan made (as ``test_iam_policies`` does for ``configs/iam/``).
- The containers run with this checkout's ``fleetscan`` as the image would run them
  (:mod:`deploy_launch`), without ``--shard``: what is asserted here is which roles and calls a
  scan of the whole organization goes through, and one process scans all of it.
  ``test_deploy_image`` runs the same definitions as three shards.
"""

from __future__ import annotations

import ast
import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from deploy_launch import (
    ROOT,
    Launch,
    batch_launch,
    kubernetes_documents,
    kubernetes_launch,
    run_as_image,
    scratch_dir,
    without_option,
)
from ground_truth import assert_matches_truth, run_records
from test_iam_policies import allowed_actions, iam_actions, policy, statements

from fleetscan import read_manifest
from fleetscan.emulator import FleetSpec, Stack, start_stack

#: The role the emulator's organization gives every account (moto's CreateAccount creates it):
#: not the reader role's name, so that a FleetscanReader exists only where a template made one.
SEEDED_ROLE = "EmulatorAdministrator"
MEMBER_ROLE = "FleetscanReader"
SCANNER_ROLE = "FleetscanScanner"
#: Hex, as the Deploy page (docs/deploy.md) generates it.
EXTERNAL_ID = "5f3c9e0b7a1d4c2e8f6a0b3d9c7e1f25a4b6c8d0e2f4a6b8"
BUCKET = "amzn-s3-demo-bucket"
PREFIX = "fleetscan"
DEST = f"s3://{BUCKET}/{PREFIX}/"
ISSUER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
#: The Kubernetes Secret the CronJob reads the external id from.
K8S_SECRETS = {("fleetscan", "external-id"): EXTERNAL_ID}
#: Generous: a scan of the test fleet takes seconds, far more on a loaded machine.
SCAN_TIMEOUT = 300
#: The Deploy page's commands: a dozen AWS CLI processes and `make lint-deploy`.
PAGE_TIMEOUT = 900


@pytest.fixture
def stack(fleet_spec: FleetSpec) -> Iterator[Stack]:
    """The emulated organization, with moto answering IAM, STS and CloudFormation (this overrides
    conftest's ``stack``; ``stack_env`` and the rest follow it).

    The one place these tests depend on moto's identity services: the roles are created by moto's
    CloudFormation in moto's IAM, and the scans assume them through moto's STS.
    """
    with start_stack(fleet_spec, role_name=SEEDED_ROLE, identity="moto") as running:
        yield running


@pytest.fixture
def operator(stack: Stack, stack_env: dict[str, str]) -> boto3.Session:
    """The deployer: the management account's credentials, every client pointed at the stack."""
    session = boto3.Session()
    session.client("s3", endpoint_url=stack.moto_endpoint_url).create_bucket(Bucket=BUCKET)
    return session


@pytest.fixture
def image_tmp() -> Iterator[Path]:
    """The container's working directory and a place for the files the engine mounts in (the
    web identity token)."""
    with scratch_dir() as path:
        yield path


def client(session: boto3.Session, stack: Stack, service: str) -> Any:
    return session.client(service, endpoint_url=stack.moto_endpoint_url)


def parameters(**values: str) -> list[dict[str, str]]:
    return [{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()]


def deploy_scanner_role(session: boto3.Session, stack: Stack, engine: str, **more: str) -> str:
    """scanner-role.yaml as a plain stack in the management account; returns the role's ARN."""
    values = {"Engine": engine, "OutputBucket": BUCKET, "OutputPrefix": PREFIX, **more}
    if engine == "kubernetes":
        values["EksOidcIssuer"] = ISSUER
    cfn = client(session, stack, "cloudformation")
    cfn.create_stack(
        StackName="fleetscan-scanner",
        TemplateBody=(ROOT / "deploy/cloudformation/scanner-role.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=parameters(**values),
    )
    (described,) = cfn.describe_stacks(StackName="fleetscan-scanner")["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    arn: str = outputs["RoleArn"]
    return arn


def create_reader_stack_set(session: boto3.Session, stack: Stack) -> None:
    client(session, stack, "cloudformation").create_stack_set(
        StackSetName="fleetscan-reader",
        TemplateBody=(ROOT / "deploy/cloudformation/member-role.yaml").read_text(),
        PermissionModel="SERVICE_MANAGED",
        AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False},
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=parameters(ScannerAccountId=stack.management_account_id, ExternalId=EXTERNAL_ID),
    )


def deploy_reader_role_to(session: boto3.Session, stack: Stack, ou_names: list[str]) -> None:
    """Stack instances of the reader StackSet for these OUs of the emulated organization.

    moto deploys to the accounts of each OU and of its children, one level down (AWS goes all the
    way); the emulated organization nests one level, so top-level OUs cover it.
    """
    ous = [ou.id for ou in stack.fleet.ous if ou.name in ou_names]
    assert len(ous) == len(ou_names)
    client(session, stack, "cloudformation").create_stack_instances(
        StackSetName="fleetscan-reader",
        DeploymentTargets={"OrganizationalUnitIds": ous},
        Regions=[stack.region],
    )


def deploy_reader_role_to_management(session: boto3.Session, stack: Stack) -> None:
    """The reader role as a plain stack in the management account, as the Deploy page does: a
    service-managed StackSet does not deploy there, and the scan includes that account."""
    client(session, stack, "cloudformation").create_stack(
        StackName="fleetscan-reader",
        TemplateBody=(ROOT / "deploy/cloudformation/member-role.yaml").read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=parameters(ScannerAccountId=stack.management_account_id, ExternalId=EXTERNAL_ID),
    )


def top_level_ous(stack: Stack) -> list[str]:
    return [ou.name for ou in stack.fleet.ous if ou.parent_id == stack.fleet.root_id]


def in_account(session: boto3.Session, stack: Stack, account_id: str, service: str) -> Any:
    """A client acting in ``account_id`` as its administrator (the role the organization gave
    it), to read what the StackSet created there through the IAM API."""
    sts = client(session, stack, "sts")
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/{SEEDED_ROLE}", RoleSessionName="inspector"
    )["Credentials"]
    return boto3.client(
        service,
        endpoint_url=stack.moto_endpoint_url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def role_policies(iam: Any, role: str) -> dict[str, dict[str, Any]]:
    """Every inline policy of ``role``, by name, as IAM returns it."""
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {
        name: _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
        for name in names
    }


def _document(answer: dict[str, Any] | str) -> dict[str, Any]:
    """A policy document from GetRolePolicy: boto3 decodes IAM's JSON into a mapping, but moto
    keeps a document that its CloudFormation received as a mapping, and answers with that
    mapping's Python repr (a moto quirk: AWS stores and returns JSON)."""
    if isinstance(answer, dict):
        return answer
    document: dict[str, Any] = ast.literal_eval(answer)
    return document


def emulator_env(stack: Stack) -> dict[str, str]:
    """Where the emulated services answer, and no credentials: the engine provides those."""
    env = stack.env()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del env[key]
    env["AWS_CONFIG_FILE"] = "/nonexistent/aws-config"
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/aws-credentials"
    return env


def irsa_env(role_arn: str, directory: Path) -> dict[str, str]:
    """What EKS's pod identity webhook adds to a pod of an annotated ServiceAccount. moto does not
    check the token, so any JWT-shaped text does."""
    token = directory / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln")
    token.chmod(0o644)
    return {"AWS_ROLE_ARN": role_arn, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token)}


@contextlib.contextmanager
def container_credentials(credentials: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """The ECS container credentials endpoint a Batch job's container gets for its job role, on
    loopback (the AWS SDK accepts a full URI there; on AWS it is 169.254.170.2)."""
    answer = json.dumps(
        {
            "AccessKeyId": credentials["AccessKeyId"],
            "SecretAccessKey": credentials["SecretAccessKey"],
            "Token": credentials["SessionToken"],
            "Expiration": credentials["Expiration"].isoformat(),
        }
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{port}/v2/credentials"}
    finally:
        server.shutdown()
        server.server_close()


def run_shardless(
    launch: Launch, env: Mapping[str, str], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """The container's command line without ``--shard auto`` (see the module's docstring)."""
    proc = run_as_image(
        launch,
        argv=without_option(launch.argv, "--shard"),
        env=env,
        workdir=workdir,
        timeout=SCAN_TIMEOUT,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert EXTERNAL_ID not in proc.stdout + proc.stderr
    return proc


def failed_assume_roles(rows: Mapping[str, list[dict[str, Any]]]) -> set[str]:
    return {e["account_id"] for e in rows["errors"] if e["operation"] == "AssumeRole"}


# -- the roles, and scans through them ------------------------------------------------------------


def test_a_scan_goes_through_exactly_the_reader_roles_the_stackset_rolled_out(
    stack: Stack, operator: boto3.Session, image_tmp: Path
) -> None:
    fleet = stack.fleet
    # The KMS key of configs/iam/s3-writer.json's example, so that its policies compare whole.
    (kms,) = [s for s in statements(policy("s3-writer.json")) if s["Action"][0].startswith("kms:")]
    scanner_arn = deploy_scanner_role(
        operator, stack, "kubernetes", OutputKmsKeyArn=kms["Resource"]
    )
    create_reader_stack_set(operator, stack)
    deploy_reader_role_to_management(operator, stack)
    env = emulator_env(stack) | irsa_env(scanner_arn, image_tmp)

    # First wave: the Production OU (and the OU nested in it). Tonight's Job scans everything.
    deploy_reader_role_to(operator, stack, ["Production"])
    production = {
        a.id for a in fleet.ou_accounts(next(o.id for o in fleet.ous if o.name == "Production"))
    }
    launch = kubernetes_launch(job_name="fleetscan-29412345", index=0, secrets=K8S_SECRETS)
    proc = run_shardless(launch, env, image_tmp)
    assert proc.returncode == 3, proc.stderr  # partial: some accounts have no reader role yet
    rows = run_records(DEST, "fleetscan-29412345")
    active = {a.id for a in fleet.accounts if a.active}
    assert failed_assume_roles(rows) == active - production
    assert_matches_truth(fleet, rows, accounts=production)

    # Second wave: the rest of the organization. The next night's Job finds every role.
    deploy_reader_role_to(operator, stack, [n for n in top_level_ous(stack) if n != "Production"])
    launch = kubernetes_launch(job_name="fleetscan-29413785", index=0, secrets=K8S_SECRETS)
    proc = run_shardless(launch, env, image_tmp)
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(DEST, "fleetscan-29413785")
    assert manifest["status"] == "complete"
    rows = run_records(DEST, "fleetscan-29413785")
    assert failed_assume_roles(rows) == set()
    assert_matches_truth(fleet, rows)

    # Each role allows exactly what the scan called through it.
    calls = {op for op, count in manifest["summary"]["api_calls"].items() if count > 0}
    by_service = iam_actions(calls)
    member_calls = by_service["storagegateway"] | by_service["ec2"]
    for account in sorted(active):
        iam = in_account(operator, stack, account, "iam")
        documents = role_policies(iam, MEMBER_ROLE)
        assert documents == {"fleetscan-reader": policy("member-role.json")}
        assert allowed_actions(documents["fleetscan-reader"]) == member_calls
    scanner = role_policies(client(operator, stack, "iam"), SCANNER_ROLE)
    assert scanner["fleetscan-org-reader"] == policy("org-reader.json")
    assert allowed_actions(scanner["fleetscan-org-reader"]) == by_service["organizations"]
    assert scanner["fleetscan-hub"] == policy("hub-role.json")
    assert allowed_actions(scanner["fleetscan-hub"]) == by_service["sts"]
    # The S3 policies are configs/iam's (the writer's KMS statement is a policy of its own, there
    # only with OutputKmsKeyArn), which test_s3_sink and test_s3_resume hold to the S3 requests a
    # run and a resumed run make: S3 calls are not in the manifest's api_calls.
    writer = statements(scanner.pop("fleetscan-s3-writer"))
    writer += statements(scanner.pop("fleetscan-s3-kms"))
    assert writer == statements(policy("s3-writer.json"))
    assert scanner.pop("fleetscan-s3-resume") == policy("s3-resume.json")
    assert set(scanner) == {"fleetscan-org-reader", "fleetscan-hub"}


def test_the_reader_role_admits_the_scanner_role_only_with_the_external_id(
    stack: Stack, operator: boto3.Session
) -> None:
    scanner_arn = deploy_scanner_role(operator, stack, "kubernetes")
    create_reader_stack_set(operator, stack)
    deploy_reader_role_to(operator, stack, top_level_ous(stack))

    # The scanner role's credentials, as IRSA gets them for a pod of the ServiceAccount.
    identity = client(operator, stack, "sts").assume_role_with_web_identity(
        RoleArn=scanner_arn, RoleSessionName="fleetscan-pod", WebIdentityToken="eyJ.eyJ.c2ln"
    )["Credentials"]
    sts = boto3.client(
        "sts",
        endpoint_url=stack.moto_endpoint_url,
        aws_access_key_id=identity["AccessKeyId"],
        aws_secret_access_key=identity["SecretAccessKey"],
        aws_session_token=identity["SessionToken"],
    )
    for account in [a for a in stack.fleet.accounts if a.active]:
        reader = f"arn:aws:iam::{account.id}:role/{MEMBER_ROLE}"
        for refused in ({}, {"ExternalId": "not-the-external-id"}):
            with pytest.raises(ClientError) as excinfo:
                sts.assume_role(RoleArn=reader, RoleSessionName="fleetscan", **refused)
            assert excinfo.value.response["Error"]["Code"] == "AccessDenied"
        session = sts.assume_role(
            RoleArn=reader,
            RoleSessionName="fleetscan",
            ExternalId=EXTERNAL_ID,
            DurationSeconds=3600,
        )
        assert session["AssumedRoleUser"]["Arn"].startswith(
            f"arn:aws:sts::{account.id}:assumed-role/{MEMBER_ROLE}/"
        )

        # What the emulator does not evaluate, read back through IAM: the principal, the
        # aws:PrincipalArn condition that narrows it to the scanner role, one-hour sessions.
        role = in_account(operator, stack, account.id, "iam").get_role(RoleName=MEMBER_ROLE)
        (statement,) = statements(role["Role"]["AssumeRolePolicyDocument"])
        assert statement["Principal"] == {"AWS": f"arn:aws:iam::{stack.management_account_id}:root"}
        assert statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"] == {
            "StringEquals": {"sts:ExternalId": EXTERNAL_ID},
            "ArnEquals": {"aws:PrincipalArn": scanner_arn},
        }
        assert role["Role"]["MaxSessionDuration"] == 3600

    # The scanner role: only the fleetscan ServiceAccount's tokens from the cluster's issuer.
    scanner = client(operator, stack, "iam").get_role(RoleName=SCANNER_ROLE)["Role"]
    (statement,) = statements(scanner["AssumeRolePolicyDocument"])
    provider = f"arn:aws:iam::{stack.management_account_id}:oidc-provider/{ISSUER}"
    assert statement["Principal"] == {"Federated": provider}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            f"{ISSUER}:sub": "system:serviceaccount:fleetscan:fleetscan",
            f"{ISSUER}:aud": "sts.amazonaws.com",
        }
    }
    # ... which is the ServiceAccount the CronJob's pods run as, annotated with this role.
    launch = kubernetes_launch(job_name="fleetscan-29412345", index=0, secrets=K8S_SECRETS)
    namespace, name = launch.facts["namespace"], launch.facts["service_account"]
    assert (
        f"system:serviceaccount:{namespace}:{name}"
        == statement["Condition"]["StringEquals"][f"{ISSUER}:sub"]
    )
    (service_account,) = [
        d
        for d in kubernetes_documents()
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == name
    ]
    assert service_account["metadata"]["namespace"] == namespace
    annotated = service_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert annotated.rsplit("/", 1)[1] == SCANNER_ROLE


def test_the_security_hub_import_policy_is_separate_and_off_by_default(
    stack: Stack, operator: boto3.Session
) -> None:
    cfn = client(operator, stack, "cloudformation")
    iam = client(operator, stack, "iam")
    body = (ROOT / "deploy/cloudformation/member-role.yaml").read_text()
    account = stack.management_account_id
    given = {"ScannerAccountId": account, "ExternalId": EXTERNAL_ID}
    cfn.create_stack(
        StackName="fleetscan-reader",
        TemplateBody=body,
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=parameters(**given),
    )
    assert role_policies(iam, MEMBER_ROLE) == {"fleetscan-reader": policy("member-role.json")}

    cfn.create_stack(
        StackName="fleetscan-reader-importing",
        TemplateBody=body,
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=parameters(
            **given, RoleName="FleetscanReaderImporting", EnableSecurityHubImport="true"
        ),
    )
    documents = role_policies(iam, "FleetscanReaderImporting")
    # The reader's own policy is untouched; the import is a policy of its own, for this account's
    # own product and hub only.
    assert documents.pop("fleetscan-reader") == policy("member-role.json")
    # configs/iam/security-hub-import.json, for the account it is deployed in.
    shipped = json.loads(
        (ROOT / "configs/iam/security-hub-import.json").read_text().replace("111122223333", account)
    )
    assert documents == {"fleetscan-security-hub-import": shipped}
    assert shipped["Statement"][0]["Resource"] == (
        f"arn:aws:securityhub:*:{account}:product/{account}/default"
    )


def test_an_array_child_of_the_batch_job_scans_through_the_job_role(
    stack: Stack, operator: boto3.Session, image_tmp: Path
) -> None:
    account = stack.management_account_id
    scanner_arn = deploy_scanner_role(operator, stack, "batch")
    create_reader_stack_set(operator, stack)
    deploy_reader_role_to(operator, stack, top_level_ous(stack))
    deploy_reader_role_to_management(operator, stack)
    secrets = client(operator, stack, "secretsmanager")
    secret = secrets.create_secret(Name="fleetscan/external-id", SecretString=EXTERNAL_ID)["ARN"]

    # Child 0 of the array job the schedule submits; Batch's execution role reads the secret.
    launch = batch_launch(
        parameters={
            "Image": f"{account}.dkr.ecr.us-east-1.amazonaws.com/fleetscan:0.1.0",
            "JobQueueArn": f"arn:aws:batch:us-east-1:{account}:job-queue/fleetscan",
            "JobRoleArn": scanner_arn,
            "ExternalIdSecretArn": secret,
            "Output": DEST,
        },
        index=0,
        parent_job_id="4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f",
        execution_id="d32c5kddcf5bb8c3",
        secrets={secret: secrets.get_secret_value(SecretId=secret)["SecretString"]},
        account=account,
    )
    assert launch.env["AWS_BATCH_JOB_ARRAY_SIZE"] == "4"
    assert launch.facts["submitted"]["JobQueue"].endswith(":job-queue/fleetscan")

    # The job role's credentials, as the ECS agent serves them to the container.
    job_role = client(operator, stack, "sts").assume_role(
        RoleArn=scanner_arn, RoleSessionName="4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f"
    )["Credentials"]
    with container_credentials(job_role) as credentials:
        proc = run_shardless(launch, emulator_env(stack) | credentials, image_tmp)
    assert proc.returncode == 0, proc.stderr
    # Every child of the submission names the same run: the schedule's execution id.
    manifest = read_manifest(DEST, "d32c5kddcf5bb8c3")
    assert manifest["status"] == "complete"
    assert_matches_truth(stack.fleet, run_records(DEST, "d32c5kddcf5bb8c3"))

    # Only Batch jobs (ECS tasks) of this account may become the job role.
    role = client(operator, stack, "iam").get_role(RoleName=SCANNER_ROLE)["Role"]
    (statement,) = statements(role["AssumeRolePolicyDocument"])
    assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": account},
        "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:*:{account}:*"},
    }


# -- the Deploy page ------------------------------------------------------------------------------

PAGE = ROOT / "docs" / "deploy.md"
_NOT_RUN = re.compile(r"<!-- not run by tests/test_deploy_aws\.py: (?P<reason>.+\S) -->")


def page_blocks() -> list[tuple[str, str | None]]:
    """Every ``sh`` block of the Deploy page, in order, with the reason it is not run here (the
    comment on the line just before it) or None."""
    blocks: list[tuple[str, str | None]] = []
    lines = PAGE.read_text().splitlines()
    number = 0
    while number < len(lines):
        if lines[number] == "```sh":
            before = lines[number - 1] if number else ""
            marker = _NOT_RUN.fullmatch(before)
            end = lines.index("```", number + 1)
            blocks.append(("\n".join(lines[number + 1 : end]), marker and marker["reason"]))
            number = end
        number += 1
    return blocks


def test_the_deploy_page_commands_deploy_what_a_scheduled_run_needs(
    stack: Stack, operator: boto3.Session, image_tmp: Path, tmp_path: Path
) -> None:
    blocks = page_blocks()
    runnable = [code for code, reason in blocks if reason is None]
    assert len(runnable) >= 7, "the page's commands were marked away"
    fleet = stack.fleet
    account = stack.management_account_id
    # Not the manifest's placeholder bucket: the page's sed must put this one in.
    bucket = "fleetscan-results-0123"
    client(operator, stack, "s3").create_bucket(Bucket=bucket)
    variables = {
        "AWS_REGION": stack.region,
        "SCANNER_ACCOUNT": account,
        "EXTERNAL_ID": EXTERNAL_ID,
        "BUCKET": bucket,
        # The root would do on AWS; moto deploys one level below a target OU only.
        "TARGET_OUS": ",".join(ou.id for ou in fleet.ous if ou.parent_id == fleet.root_id),
        "ENGINE": "kubernetes",
        "EKS_OIDC_ISSUER": ISSUER,
        "IMAGE": f"{account}.dkr.ecr.{stack.region}.amazonaws.com/fleetscan:0.1.0",
        "DEPLOY_DIR": str(tmp_path / "fleetscan-deploy"),
    }
    env = dict(os.environ) | variables
    env["AWS_ENDPOINT_URL_CLOUDFORMATION"] = stack.moto_endpoint_url
    env["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = stack.moto_endpoint_url
    # The page's `aws`, `kubernetes-validate` and `make lint-deploy` are this environment's.
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{env['PATH']}"
    env["MAKEFLAGS"] = f"VENV={sys.prefix}"
    script = "set -euo pipefail\n" + "\n".join(runnable)
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert EXTERNAL_ID not in proc.stdout + proc.stderr

    # The reader role in every account of the target OUs, and in the management account.
    cfn = client(operator, stack, "cloudformation")
    summaries = cfn.list_stack_instances(StackSetName="fleetscan-reader")["Summaries"]
    assert {s["Account"] for s in summaries} == {a.id for a in fleet.accounts}
    assert client(operator, stack, "iam").get_role(RoleName=MEMBER_ROLE)["Role"]["Arn"] == (
        f"arn:aws:iam::{account}:role/{MEMBER_ROLE}"
    )
    # moto does not implement auto-deployment (it accepts and drops it): the page must ask for it.
    (create_stack_set,) = [c for c in runnable if "create-stack-set" in c]
    assert "--auto-deployment Enabled=true" in create_stack_set

    # The page's copy of the manifest, run as the CronJob's first pod would run it.
    manifest = Path(variables["DEPLOY_DIR"]) / "fleetscan.yaml"
    (service_account,) = [
        d for d in kubernetes_documents(manifest) if d["kind"] == "ServiceAccount"
    ]
    scanner_arn = service_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert scanner_arn == f"arn:aws:iam::{account}:role/{SCANNER_ROLE}"
    launch = kubernetes_launch(
        manifest, job_name="fleetscan-29412345", index=0, secrets=K8S_SECRETS
    )
    proc = run_shardless(launch, emulator_env(stack) | irsa_env(scanner_arn, image_tmp), image_tmp)
    assert proc.returncode == 0, proc.stderr
    dest = f"s3://{bucket}/fleetscan/"
    assert read_manifest(dest, "fleetscan-29412345")["status"] == "complete"
    assert_matches_truth(fleet, run_records(dest, "fleetscan-29412345"))
