"""The image and the engines' command lines, without a container daemon: ``deploy/Dockerfile``'s
entrypoint, environment and user run here on a read-only root (:mod:`deploy_launch`), and what the
Kubernetes and AWS Batch definitions hand each shard.

Scans through the roles the templates create are in ``test_deploy_aws``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import boto3
import pytest
from deploy_launch import (
    DEPLOY,
    ROOT,
    Launch,
    batch_launch,
    image,
    kubernetes_launch,
    run_as_image,
    scratch_dir,
    start_as_image,
)
from ground_truth import assert_matches_truth, run_records
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fleetscan import latest_run, read_manifest
from fleetscan.emulator import Stack

#: Generous: a scan of the test fleet takes seconds, far more on a loaded machine.
TIMEOUT = 300
EXTERNAL_ID = "5f3c9e0b7a1d4c2e8f6a0b3d9c7e1f25a4b6c8d0e2f4a6b8"
SECRETS = {("fleetscan", "external-id"): EXTERNAL_ID}
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:fleetscan/external-id-Ab12Cd"
BATCH_PARAMETERS = {
    "Image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/fleetscan:0.1.0",
    "JobQueueArn": "arn:aws:batch:us-east-1:111122223333:job-queue/fleetscan",
    "JobRoleArn": "arn:aws:iam::111122223333:role/FleetscanScanner",
    "ExternalIdSecretArn": SECRET_ARN,
    "Output": "s3://amzn-s3-demo-bucket/fleetscan/",
}


@pytest.fixture
def output() -> Iterator[Path]:
    """A volume mounted at the image's WORKDIR, writable by the image's user (as an emptyDir with
    the pod's fsGroup, or a host directory given to that user)."""
    with scratch_dir(owner=image().user) as path:
        yield path


def assert_one_shard(launch: Launch, run_id: str) -> None:
    """What every shard of a run gets alike: the image's entrypoint, ``--shard auto``, the run's
    id, the external id in its environment only, a read-only root with a writable /tmp."""
    assert launch.argv[:2] == ("fleetscan", "scan")
    assert launch.argv[launch.argv.index("--shard") + 1] == "auto"
    assert launch.argv[launch.argv.index("--run-id") + 1] == run_id
    assert launch.env["FLEETSCAN_EXTERNAL_ID"] == EXTERNAL_ID
    assert not any(EXTERNAL_ID in part for part in launch.argv)
    assert launch.read_only_root
    assert launch.writable == ("/tmp",)


def test_the_stand_in_for_the_container_is_read_only_but_for_its_volumes() -> None:
    """What the other tests' verdicts rest on: run_as_image's root filesystem refuses writes, its
    volumes take them, and the process is the image's user."""
    launch = Launch(argv=(), env={}, user=None, read_only_root=True, writable=("/tmp",))
    # On the root itself: a clone may sit below a writable volume (/tmp), where the refusal
    # would be a permission one.
    probe = Path("/") / ".fleetscan-read-only-probe"
    with scratch_dir(owner=image().user) as workdir:
        script = f"id -u; id -g; touch {workdir}/written; touch {probe} 2>&1 || true"
        proc = run_as_image(
            launch, argv=("sh", "-c", script), env={}, workdir=workdir, timeout=TIMEOUT
        )
        assert (workdir / "written").is_file()
    assert proc.returncode == 0, proc.stderr
    uid, gid, refused = proc.stdout.splitlines()
    assert (int(uid), int(gid)) == image().user
    assert refused.endswith("Read-only file system")
    assert not probe.exists()


def test_the_image_scans_as_its_own_user_on_a_read_only_root(
    stack: Stack, stack_env: dict[str, str], output: Path
) -> None:
    spec = image()
    assert spec.entrypoint == ("fleetscan",)
    assert spec.user[0] != 0
    assert spec.env["HOME"] == "/tmp"
    # docker run --read-only --tmpfs /tmp -v "$PWD/out:/data" IMAGE scan ... --output .
    regions = ",".join(stack.fleet.spec.regions)
    args = ("scan", "--org", "--role-name", stack.role_name, "--regions", regions)
    launch = Launch(
        argv=(*spec.entrypoint, *args, "--output", "."),
        env={},
        user=None,
        read_only_root=True,
        writable=("/tmp",),
    )
    proc = run_as_image(launch, env=stack_env, workdir=output, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr

    run_id = latest_run(str(output))
    assert run_id is not None
    manifest = read_manifest(str(output), run_id)
    assert manifest["status"] == "complete"
    assert_matches_truth(stack.fleet, run_records(str(output), run_id))
    # Every file was written by the image's user, and only under the output.
    written = [path for path in output.rglob("*") if path.is_file()]
    assert written
    assert {(p.stat().st_uid, p.stat().st_gid) for p in written} == {spec.user}


def test_every_package_the_image_installs_is_pinned_by_the_constraints() -> None:
    # The build stage installs fleetscan without extras, with constraints.txt.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*\\\n\s+--constraint constraints\.txt \.\s", dockerfile)
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version

    # fleetscan's runtime dependencies, and theirs, as installed here from the same constraints.
    seen: set[str] = set()
    pending = ["fleetscan"]
    while pending:
        name = pending.pop()
        for text in distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            key = canonicalize_name(requirement.name)
            if key not in seen:
                seen.add(key)
                pending.append(requirement.name)
    assert seen >= {"aiobotocore", "anyio", "orjson", "rich"}
    unpinned = {name for name in seen if name not in pins}
    assert not unpinned, f"not in constraints.txt: {sorted(unpinned)}"
    for name in seen:
        assert distribution(name).version == pins[name], name


def test_the_build_context_holds_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # Everything is left out (.venv, .git, outputs, caches) but what is let back in.
    assert patterns[0] == "*"
    let_in = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(part.rstrip("/") for part in line.split()[1:-1])
    assert copied == let_in


def test_each_cronjob_pod_is_one_shard_of_one_run_at_a_time() -> None:
    first = kubernetes_launch(job_name="fleetscan-29412345", index=0, secrets=SECRETS)
    last = kubernetes_launch(job_name="fleetscan-29412345", index=3, secrets=SECRETS)
    # Four pods: each knows its index and the count, and names the Job's run.
    assert first.facts["completions"] == 4
    assert (first.env["JOB_COMPLETION_INDEX"], last.env["JOB_COMPLETION_INDEX"]) == ("0", "3")
    assert first.env["FLEETSCAN_SHARD_COUNT"] == last.env["FLEETSCAN_SHARD_COUNT"] == "4"
    for launch in (first, last):
        assert_one_shard(launch, "fleetscan-29412345")
        assert launch.user == image().user
    # A later run is another Job, another name, another run id.
    other = kubernetes_launch(job_name="fleetscan-29413785", index=0, secrets=SECRETS)
    assert other.argv[other.argv.index("--run-id") + 1] == "fleetscan-29413785"
    # The same manifest, as three shards (what test_three_shards_as_each_engine_... runs).
    three = kubernetes_launch(job_name="j", index=2, secrets=SECRETS, shards=3)
    assert three.env["FLEETSCAN_SHARD_COUNT"] == "3"
    assert three.facts["completions"] == 3
    cronjob = first.facts["cronjob"]
    assert cronjob["concurrencyPolicy"] == "Forbid"


def test_each_batch_array_child_is_one_shard_of_the_submitted_run() -> None:
    children = [
        batch_launch(
            parameters=BATCH_PARAMETERS,
            index=index,
            parent_job_id="4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f",
            execution_id="d32c5kddcf5bb8c3",
            secrets={SECRET_ARN: EXTERNAL_ID},
        )
        for index in range(4)
    ]
    for index, child in enumerate(children):
        assert child.env["AWS_BATCH_JOB_ARRAY_INDEX"] == str(index)
        assert child.env["AWS_BATCH_JOB_ARRAY_SIZE"] == "4"
        assert child.env["AWS_BATCH_JOB_ID"] == f"4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f:{index}"
        # One run id for every child: the schedule's execution id, not the child's job id.
        assert_one_shard(child, "d32c5kddcf5bb8c3")
    # Exit 2 (bad input) and 3 (partial) are not retried; anything else is, child by child.
    exits = children[0].facts["definition"]["RetryStrategy"]["EvaluateOnExit"]
    assert [(e.get("OnExitCode"), e["Action"]) for e in exits[:2]] == [("2", "EXIT"), ("3", "EXIT")]


def test_a_batch_job_submitted_without_a_run_id_is_refused_before_any_call() -> None:
    launch = batch_launch(
        parameters=BATCH_PARAMETERS,
        index=0,
        parent_job_id="4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f",
        execution_id=None,
        secrets={SECRET_ARN: EXTERNAL_ID},
    )
    assert launch.argv[launch.argv.index("--run-id") + 1] == "Ref::run_id"
    with scratch_dir() as workdir:
        proc = run_as_image(
            launch,
            # No credentials and no endpoint: nothing may be called.
            env={"AWS_EC2_METADATA_DISABLED": "true"},
            workdir=workdir,
            timeout=TIMEOUT,
        )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("fleetscan: error: run_id: 'Ref::run_id' must be"), line


@pytest.mark.parametrize("engine", ["kubernetes", "batch"])
def test_three_shards_as_each_engine_starts_them_scan_exactly_the_fleet(
    engine: str, stack: Stack, stack_env: dict[str, str], output: Path
) -> None:
    """Issue 13: the image's entrypoint and the definitions' arguments, with the engine's index
    variables, as three shards running at once against the emulator, into the definitions' own
    bucket (moto): one run, exactly the ground truth."""
    bucket, dest = "amzn-s3-demo-bucket", BATCH_PARAMETERS["Output"]
    boto3.client("s3", endpoint_url=stack.moto_endpoint_url).create_bucket(Bucket=bucket)
    if engine == "kubernetes":
        run_id = "fleetscan-29412345"
        launches = [
            kubernetes_launch(job_name=run_id, index=k, secrets=SECRETS, shards=3) for k in range(3)
        ]
    else:
        run_id = "d32c5kddcf5bb8c3"
        launches = [
            batch_launch(
                parameters=BATCH_PARAMETERS,
                index=k,
                parent_job_id="4c5d2e1f-8a9b-4c3d-9e8f-7a6b5c4d3e2f",
                execution_id=run_id,
                secrets={SECRET_ARN: EXTERNAL_ID},
                size=3,
            )
            for k in range(3)
        ]
    for launch in launches:
        assert_one_shard(launch, run_id)
        assert launch.argv[launch.argv.index("--output") + 1] == dest
    shards = [start_as_image(launch, env=stack_env, workdir=output) for launch in launches]
    for index, shard in enumerate(shards):
        _, stderr = shard.communicate(timeout=TIMEOUT)
        assert shard.returncode == 0, f"shard {index}: {stderr}"
        assert "Traceback" not in stderr
        assert EXTERNAL_ID not in stderr

    manifest = read_manifest(dest, run_id)
    assert manifest["status"] == "complete"
    assert [s["shard"] for s in manifest["shards"]["shards"]] == ["1/3", "2/3", "3/3"]
    assert all(s["status"] == "complete" for s in manifest["shards"]["shards"])
    assert_matches_truth(stack.fleet, run_records(dest, run_id))
