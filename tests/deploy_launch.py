"""How the deploy kit starts fleetscan, read from the files it ships, and run as the image would.

There is no container daemon on this machine, so nothing here builds or starts the image. Instead:

- :func:`image` reads ``deploy/Dockerfile``'s final stage: its entrypoint, environment, user and
  working directory;
- :func:`kubernetes_launch` and :func:`batch_launch` compute the command line and environment a
  container gets from ``deploy/kubernetes/fleetscan.yaml`` (a pod of the CronJob's Indexed Job) and
  ``deploy/cloudformation/batch.yaml`` (a child of the array job the schedule submits), resolving
  what the engine resolves: downward-API fields, secrets, ``$(VAR)`` references, Batch's
  ``Ref::`` parameters and its array variables;
- :func:`run_as_image` (and :func:`start_as_image`, for several at once) runs such a command line
  with this checkout's ``fleetscan`` the way the container runtime would: the image's environment
  and user, a read-only root filesystem, and only the mounts the definition declares writable. It
  uses a private mount namespace (``unshare``, ``mount``, ``setpriv`` from util-linux), so it
  needs root, as CI has.

A test that runs three shards (once ``--shard`` exists) takes a launch per index
(``kubernetes_launch(..., index=k, shards=3)`` or ``batch_launch(..., index=k, size=3)``) and starts
each with :func:`start_as_image`; nothing else is needed. With conftest's ``stack`` (whose
accounts already have the FleetscanReader role), ``env=stack_env`` gives the shards its static
keys in place of the engine's identity; create the manifests' bucket (``amzn-s3-demo-bucket``)
first. ``tests/test_deploy_aws.py`` shows the engines' own identities (IRSA, a Batch job role).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes" / "fleetscan.yaml"
BATCH = DEPLOY / "cloudformation" / "batch.yaml"
#: The container's name in the CronJob; the podFailurePolicy names it too.
CONTAINER = "fleetscan"


@dataclass(frozen=True)
class Image:
    """What ``docker run`` takes from the image: entrypoint, environment, user, workdir."""

    entrypoint: tuple[str, ...]
    env: dict[str, str]
    user: tuple[int, int]
    workdir: str


@dataclass(frozen=True)
class Launch:
    """A container as an engine starts it: its full command line and its environment.

    ``argv[0]`` is a program looked up in the image's PATH (the image's entrypoint unless the
    definition replaces it). ``env`` is what the definition and the engine add to the image's
    environment; credentials, which the engine's identity plumbing adds, are not in it.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    #: The user the definition runs the container as (None: the image's USER).
    user: tuple[int, int] | None
    read_only_root: bool
    #: Paths mounted writable into the container (volumes).
    writable: tuple[str, ...]
    #: The engine's own view of the job, for checks (completions, array size, run parameters).
    facts: dict[str, Any] = field(default_factory=dict)


# -- the image ----------------------------------------------------------------------------------


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def image(dockerfile: Path = DOCKERFILE) -> Image:
    """The final stage of ``dockerfile``, as the runtime sees it."""
    final: list[tuple[str, str]] = []
    for keyword, rest in _instructions(dockerfile.read_text()):
        if keyword == "FROM":
            final = []
        final.append((keyword, rest))
    entrypoint: tuple[str, ...] = ()
    env: dict[str, str] = {}
    user = (0, 0)
    workdir = "/"
    for keyword, rest in final:
        if keyword == "ENTRYPOINT":
            entrypoint = tuple(json.loads(rest))
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
        elif keyword == "USER":
            uid, _, gid = rest.partition(":")
            user = (int(uid), int(gid or uid))
        elif keyword == "WORKDIR":
            workdir = rest
    return Image(entrypoint, env, user, workdir)


# -- Kubernetes -----------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in command, args and env values: a defined variable is
    replaced, ``$$`` is a literal ``$``, an undefined reference is left as it is."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def kubernetes_documents(manifest: Path = KUBERNETES) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc]


def kubernetes_launch(
    manifest: Path = KUBERNETES,
    *,
    job_name: str,
    index: int,
    secrets: Mapping[tuple[str, str], str],
    shards: int | None = None,
) -> Launch:
    """The container of pod ``index`` of the Job named ``job_name`` that the CronJob creates.

    ``secrets`` maps (secret name, key) to the value a ``secretKeyRef`` reads. ``shards``
    replaces the shard count everywhere the manifest states it (completions, parallelism and
    ``FLEETSCAN_SHARD_COUNT``), which must agree.
    """
    (cronjob,) = [d for d in kubernetes_documents(manifest) if d["kind"] == "CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == CONTAINER]
    assert job["completionMode"] == "Indexed", "each pod must get its own JOB_COMPLETION_INDEX"
    count = job["completions"]
    assert job["parallelism"] == count, "every shard of a run must run at once"
    assert 0 <= index < count
    labels = {
        **job["template"].get("metadata", {}).get("labels", {}),
        # What the Job controller puts on each of its pods (Kubernetes 1.27+/1.28+).
        "batch.kubernetes.io/job-name": job_name,
        "job-name": job_name,
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    pod_fields = {
        "metadata.name": f"{job_name}-{index}-x7k2p",
        "metadata.namespace": cronjob["metadata"]["namespace"],
        "spec.serviceAccountName": pod.get("serviceAccountName", "default"),
    }

    # The Job controller adds the index to every container of an Indexed Job.
    env: dict[str, str] = {"JOB_COMPLETION_INDEX": str(index)}
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = expand(variable["value"], env)
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            match = _LABEL.fullmatch(path)
            if match is not None:
                env[name] = (labels if match.group(1) == "labels" else annotations)[match.group(2)]
            else:
                env[name] = pod_fields[path]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[name] = secrets[(ref["name"], ref["key"])]
        else:
            raise AssertionError(f"{name}: a source this helper does not resolve: {source}")
    if "FLEETSCAN_SHARD_COUNT" in env:
        assert env["FLEETSCAN_SHARD_COUNT"] == str(count), "FLEETSCAN_SHARD_COUNT != completions"
    if shards is not None:
        assert 0 <= index < shards
        env["FLEETSCAN_SHARD_COUNT"] = str(shards)
        count = shards

    entrypoint = container.get("command") or image().entrypoint
    argv = tuple(expand(part, env) for part in (*entrypoint, *container.get("args", [])))
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    user = None
    if "runAsUser" in security:
        user = (security["runAsUser"], security.get("runAsGroup", security["runAsUser"]))
    return Launch(
        argv=argv,
        env=env,
        user=user,
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        writable=tuple(m["mountPath"] for m in container.get("volumeMounts", [])),
        facts={
            "completions": count,
            "cronjob": cronjob["spec"],
            "namespace": cronjob["metadata"]["namespace"],
            "service_account": pod.get("serviceAccountName", "default"),
        },
    )


# -- AWS Batch ------------------------------------------------------------------------------------

_SUB = re.compile(r"\$\{([^}]+)\}")


@dataclass
class _Template:
    """Just enough of CloudFormation to read a deployed template's values: Ref, Fn::Sub and
    Fn::GetAtt over parameters, pseudo parameters and the physical ids given for resources."""

    body: dict[str, Any]
    values: dict[str, str]

    @classmethod
    def load(
        cls,
        path: Path,
        parameters: Mapping[str, str],
        resources: Mapping[str, str],
        *,
        account: str,
        region: str,
    ) -> _Template:
        body, problems = decode(str(path))
        assert not problems, problems
        values = {
            name: str(spec["Default"])
            for name, spec in body.get("Parameters", {}).items()
            if "Default" in spec
        }
        values.update(parameters)
        missing = set(body.get("Parameters", {})) - set(values)
        assert not missing, f"parameters without a value: {sorted(missing)}"
        values.update(resources)
        values.update({"AWS::Partition": "aws", "AWS::AccountId": account, "AWS::Region": region})
        return cls(body, values)

    def resource(self, name: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.body["Resources"][name]["Properties"]
        return properties

    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                return self.values[node["Ref"]]
            if set(node) == {"Fn::Sub"}:
                return _SUB.sub(lambda m: self.values[m.group(1)], node["Fn::Sub"])
            if set(node) == {"Fn::GetAtt"}:
                return self.values[".".join(node["Fn::GetAtt"])]
            return {key: self.resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        return node


def batch_launch(
    template: Path = BATCH,
    *,
    parameters: Mapping[str, str],
    index: int,
    parent_job_id: str,
    execution_id: str | None,
    secrets: Mapping[str, str],
    account: str = "111122223333",
    region: str = "us-east-1",
    size: int | None = None,
) -> Launch:
    """Child ``index`` of the array job the schedule submits with ``batch.yaml`` deployed.

    ``parameters`` are the stack's parameters; ``execution_id`` is what the schedule puts for
    ``<aws.scheduler.execution-id>`` (None: the job was submitted by hand without parameters).
    ``secrets`` maps a secret's ARN to its value. ``size`` replaces the array size.
    """
    job_definition_arn = f"arn:aws:batch:{region}:{account}:job-definition/fleetscan:1"
    stack = _Template.load(
        template,
        parameters,
        {
            "JobDefinition": job_definition_arn,
            "ExecutionRole.Arn": f"arn:aws:iam::{account}:role/fleetscan-batch-ExecutionRole",
            "ScheduleRole.Arn": f"arn:aws:iam::{account}:role/fleetscan-batch-ScheduleRole",
        },
        account=account,
        region=region,
    )
    definition = stack.resolve(stack.resource("JobDefinition"))
    target = stack.resolve(stack.resource("Schedule")["Target"])
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:batch:submitJob"
    submitted: dict[str, Any] = json.loads(target["Input"])
    assert submitted["JobDefinition"] == job_definition_arn
    job_parameters = dict(definition.get("Parameters", {}))
    if execution_id is not None:
        for name, value in submitted.get("Parameters", {}).items():
            job_parameters[name] = value.replace("<aws.scheduler.execution-id>", execution_id)
    array_size = size if size is not None else int(submitted["ArrayProperties"]["Size"])
    assert 0 <= index < array_size

    container = definition["ContainerProperties"]
    command = [
        job_parameters.get(part[len("Ref::") :], part) if part.startswith("Ref::") else part
        for part in container["Command"]
    ]
    env = {item["Name"]: item["Value"] for item in container.get("Environment", [])}
    for secret in container.get("Secrets", []):
        env[secret["Name"]] = secrets[secret["ValueFrom"]]
    # What AWS Batch sets in every child of an array job.
    env |= {
        "AWS_BATCH_JOB_ID": f"{parent_job_id}:{index}",
        "AWS_BATCH_JOB_ARRAY_INDEX": str(index),
        "AWS_BATCH_JOB_ARRAY_SIZE": str(array_size),
        "AWS_BATCH_JOB_ATTEMPT": "1",
    }
    user = None
    if "User" in container:
        uid, _, gid = str(container["User"]).partition(":")
        user = (int(uid), int(gid or uid))
    mounts = {m["SourceVolume"]: m for m in container.get("MountPoints", [])}
    writable = tuple(
        mounts[v["Name"]]["ContainerPath"]
        for v in container.get("Volumes", [])
        if v["Name"] in mounts and not mounts[v["Name"]].get("ReadOnly", False)
    )
    return Launch(
        argv=(*image().entrypoint, *command),
        env=env,
        user=user,
        read_only_root=bool(container.get("ReadonlyRootFilesystem")),
        writable=writable,
        facts={
            "submitted": submitted,
            "parameters": job_parameters,
            "size": array_size,
            "definition": definition,
        },
    )


def without_option(argv: Sequence[str], option: str) -> tuple[str, ...]:
    """``argv`` without ``option`` and the value after it (which must be there)."""
    at = list(argv).index(option)
    return (*argv[:at], *argv[at + 2 :])


# -- running like the image -----------------------------------------------------------------------

#: Runs as root in a private mount namespace, then becomes the image's user. Positional
#: arguments: the interpreter's prefix, the highest directory above it the image's user cannot
#: enter ("" if none), "ro" or "rw" (the root filesystem), the working directory, uid, gid, then
#: the writable paths, "--" and argv.
_SANDBOX = r"""
set -eu
prefix=$1 hidden=$2 root=$3 workdir=$4 uid=$5 gid=$6
shift 6
while [ "$1" != "--" ]; do
    mount --bind "$1" "$1"
    shift
done
shift
if [ -n "$hidden" ]; then
    # In the image the interpreter sits in /usr/local, open to every user. Here it may sit below
    # a directory only root can enter (pyenv under /root): show the image's user the interpreter
    # and nothing else of that directory.
    stage=$(mktemp -d /tmp/fleetscan-sandbox.XXXXXX)
    mount --bind "$prefix" "$stage"
    mount -t tmpfs -o mode=0755,size=1m tmpfs "$hidden"
    mkdir -p "$prefix"
    mount --move "$stage" "$prefix"
    rmdir "$stage"
fi
if [ "$root" = ro ]; then
    mount -o remount,bind,ro /
fi
cd "$workdir"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --no-new-privs -- "$@"
"""


def _hidden_ancestor(path: Path) -> Path | None:
    """The highest directory above ``path`` that other users may not enter, if any."""
    current = Path("/")
    for part in path.parts[1:]:
        current /= part
        if current == path:
            return None
        if not current.stat().st_mode & stat.S_IXOTH:
            return current
    return None


@contextlib.contextmanager
def scratch_dir(owner: tuple[int, int] | None = None) -> Iterator[Path]:
    """A fresh directory under /tmp that the image's user can enter (pytest's temporary
    directories are closed to other users), owned by ``owner`` if given; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fleetscan-deploy-", dir="/tmp"))
    path.chmod(0o755)
    if owner is not None:
        os.chown(path, *owner)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_as_image(
    launch: Launch,
    *,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str],
    workdir: Path,
) -> subprocess.Popen[str]:
    """Start ``launch`` (or ``argv`` in its place) as the image would run it; several can run
    side by side, as an engine runs the shards of a run.

    The environment is the image's, then the launch's, then ``env`` (the engine's credentials and,
    for the emulator, its endpoints); the image's PATH points at this interpreter's ``bin``
    instead of ``/opt/fleetscan/bin``. The root filesystem is read-only unless the definition
    leaves it writable; the definition's writable mounts must exist here (``/tmp`` does) and stay
    writable. ``workdir`` stands in for the image's WORKDIR, which does not exist on this machine.
    """
    if os.geteuid() != 0:
        raise RuntimeError("start_as_image needs root (a mount namespace), as CI has")
    spec = image()
    bin_dir = str(Path(sys.prefix) / "bin")
    image_env = dict(spec.env)
    image_env["PATH"] = (
        image_env["PATH"]
        .replace("/opt/fleetscan/bin", bin_dir)
        .replace("$PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    )
    full_env = image_env | launch.env | dict(env)
    user = launch.user or spec.user
    prefix = Path(os.path.realpath(sys.base_prefix))
    hidden = _hidden_ancestor(prefix)
    writable = launch.writable
    for path in writable:
        assert Path(path).is_dir(), f"{path} must exist here to stand in for the volume"
    unshare = shutil.which("unshare")
    assert unshare is not None
    command = [
        unshare, "--mount", "--propagation", "private", "--", "sh", "-c", _SANDBOX, "sandbox",
        str(prefix), str(hidden or ""), "ro" if launch.read_only_root else "rw", str(workdir),
        str(user[0]), str(user[1]),
        *writable, "--", *(argv if argv is not None else launch.argv),
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_as_image(
    launch: Launch,
    *,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str],
    workdir: Path,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """:func:`start_as_image`, waited for: killed (and the test failed) after ``timeout``."""
    process = start_as_image(launch, argv=argv, env=env, workdir=workdir)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
