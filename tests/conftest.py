"""Shared fixtures: a small seeded fleet, the whole emulated stack for it, and an environment that
points AWS SDKs at that stack and nowhere else."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fleetscan.emulator import FleetSpec, Stack, start_stack

#: Four regions: enough for per-region behaviour, few enough for fast scans.
TEST_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")


@pytest.fixture
def fleet_spec() -> FleetSpec:
    """12 member accounts (one suspended, one nested OU), seed 7, four regions."""
    return FleetSpec(seed=7, accounts=12, regions=TEST_REGIONS)


@pytest.fixture
def stack(fleet_spec: FleetSpec) -> Iterator[Stack]:
    """The emulator (Storage Gateway, STS, Organizations, EC2) and moto (S3) for ``fleet_spec``,
    started fresh for each test."""
    with start_stack(fleet_spec) as running:
        yield running


@pytest.fixture
def stack_env(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """This process's environment pointed at ``stack``, and only at it.

    Every ``AWS_*`` variable the developer had is removed and the config and credentials files
    point at files that do not exist, so a ``~/.aws`` profile can neither leak in nor send a test
    to real AWS.
    """
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    env = stack.env()
    home = tmp_path_factory.mktemp("aws-home")
    env["AWS_CONFIG_FILE"] = str(home / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws-credentials")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
