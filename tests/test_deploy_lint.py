"""``make lint-deploy``: cfn-lint over every template, hadolint over the Dockerfile, the Kubernetes
schemas over every manifest; the shipped files pass, and each check fails on a mistake planted in
a copy of one, naming it.

The checks run through ``make``, exactly as ``make lint`` runs them, with the file lists replaced
on the command line and ``VENV`` pointing at this interpreter's environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
#: Generous: cfn-lint loads its schemas in a few seconds on an idle machine, far more under load.
TIMEOUT = 600


def lint_deploy(**lists: str) -> subprocess.CompletedProcess[str]:
    """``make lint-deploy`` with the given file lists (``CFN_TEMPLATES=...``) replacing the
    shipped ones."""
    variables = [f"{name}={value}" for name, value in lists.items()]
    return subprocess.run(
        [
            "make",
            "-C",
            str(ROOT),
            "--no-print-directory",
            "lint-deploy",
            f"VENV={sys.prefix}",
            *variables,
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def plant(source: Path, directory: Path, line: str, mistake: str) -> tuple[Path, int]:
    """A copy of ``source`` in ``directory`` with its one ``line`` replaced by ``mistake``; returns
    the copy and the (1-based) number of the planted line."""
    lines = source.read_text().splitlines(keepends=True)
    found = [number for number, text in enumerate(lines) if text.rstrip("\n") == line]
    assert len(found) == 1, f"{source.name} must hold {line!r} exactly once"
    lines[found[0]] = mistake + "\n"
    copy = directory / source.name
    copy.write_text("".join(lines))
    return copy, found[0] + 1


def test_every_shipped_template_dockerfile_and_manifest_passes() -> None:
    proc = lint_deploy()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every check ran, on every shipped file.
    for path in (*DEPLOY.glob("cloudformation/*.yaml"), *DEPLOY.glob("kubernetes/*.yaml")):
        assert str(path.relative_to(ROOT)) in proc.stdout, path
    assert "hadolint --no-color deploy/Dockerfile" in proc.stdout


@pytest.mark.parametrize(
    ("kind", "source", "line", "mistake", "named"),
    [
        # IAM refuses a maximum session under an hour: cfn-lint catches it before CloudFormation.
        (
            "CFN_TEMPLATES",
            DEPLOY / "cloudformation" / "member-role.yaml",
            "      MaxSessionDuration: 3600",
            "      MaxSessionDuration: 600",
            "E3034",
        ),
        # The image must not end up running as root.
        ("DOCKERFILES", DEPLOY / "Dockerfile", "USER 10001:10001", "USER root", "DL3002"),
        # A misspelt field is dropped silently by a lenient apply; the strict schema refuses it.
        (
            "K8S_MANIFESTS",
            DEPLOY / "kubernetes" / "fleetscan.yaml",
            "      backoffLimitPerIndex: 2",
            "      backoffLimitPerIndx: 2",
            "'backoffLimitPerIndx' was unexpected",
        ),
    ],
)
def test_each_check_fails_on_a_planted_mistake_and_names_it(
    tmp_path: Path, kind: str, source: Path, line: str, mistake: str, named: str
) -> None:
    copy, number = plant(source, tmp_path, line, mistake)
    lists = {"CFN_TEMPLATES": "", "DOCKERFILES": "", "K8S_MANIFESTS": ""} | {kind: str(copy)}
    proc = lint_deploy(**lists)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert named in output, output
    if kind != "K8S_MANIFESTS":  # kubernetes-validate names the field, not the line
        assert f"{copy}:{number}" in output, output
