"""Every default a flag's help states is the default the command really uses.

The help texts are published twice more: in ``--help`` and in the docs' command-line reference,
which is rendered from the parser. A stated default that drifts from the code (``--burst`` once
said 20 while ScanConfig used 10) misleads every reader, so each one is checked: against
:class:`~fleetscan.ScanConfig`'s field default for the scan options (their argparse default is
"not given", so that a TOML file can set them), against argparse's own default otherwise.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest

from fleetscan._commands import build_parser
from fleetscan._config import ScanConfig
from fleetscan.emulator._cli import add_emulator_parser

#: "(default 10)", "(default: CRC32)", "default: text", and "aws (default), ...".
STATED = re.compile(
    r"(?:^|\()default:?\s+(?P<value>[^;)]+)|(?P<before>[\w.:/-]+) \(default\)", re.IGNORECASE
)
#: Defaults stated in words, and the value each stands for.
DESCRIBED: dict[str, Any] = {
    "a fresh, sortable id": None,
    "the bucket's own": None,
    "the aws/s3 key": None,
    "those enabled in each account": "enabled",
    "the newest run whatever its status": None,
    "the scan's --role-name, or the one the run's manifest records": None,
    "all three": None,
    # The emulator's --regions: None means its DEFAULT_REGIONS.
    "the 16 regions enabled by default": None,
    # --rate: no ceiling, the bucket probes for the service's rate.
    "no ceiling": None,
}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command and nested command: ("scan", its parser), ("emulator serve", ...)."""
    yield " ".join(("fleetscan", *path)), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def stated_defaults(action: argparse.Action) -> Iterator[str]:
    for match in STATED.finditer(action.help or ""):
        yield (match["value"] or match["before"]).strip()


def stated_value(action: argparse.Action, text: str) -> Any:
    """What the words of the help mean, read the way the flag's own value would be read."""
    if text in DESCRIBED:
        return DESCRIBED[text]
    token = text.split(",")[0].strip().strip("'\"")
    convert = action.type if callable(action.type) else str
    return convert(token)


def real_default(action: argparse.Action) -> Any:
    if action.default is not argparse.SUPPRESS:
        return action.default
    for field in dataclasses.fields(ScanConfig):
        if field.name == action.dest:
            assert field.default is not dataclasses.MISSING, field.name
            return field.default
    raise AssertionError(f"{action.dest} has no default to compare with")


def drifts(parser: argparse.ArgumentParser) -> tuple[list[str], int]:
    """(each flag whose stated default is not the real one, how many stated defaults were read)."""
    problems: list[str] = []
    checked = 0
    for name, command in commands(parser):
        for action in command._actions:
            for text in stated_defaults(action):
                checked += 1
                flag = f"{name} {'/'.join(action.option_strings)}"
                try:
                    stated = stated_value(action, text)
                except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                    problems.append(f"{flag}: help says default {text!r}, not a value ({exc})")
                    continue
                real = real_default(action)
                if stated != real:
                    problems.append(f"{flag}: help says default {text!r}, the code uses {real!r}")
    return problems, checked


def full_parser() -> argparse.ArgumentParser:
    return build_parser(add_emulator_parser)


def test_every_stated_default_is_the_real_one() -> None:
    problems, checked = drifts(full_parser())
    assert not problems, "\n".join(problems)
    # The pattern must keep finding the defaults it is there for (scan, audit, demo, emulator).
    assert checked >= 40


def _action(parser: argparse.ArgumentParser, command: str, option: str) -> argparse.Action:
    for name, sub in commands(parser):
        if name == command:
            for action in sub._actions:
                if option in action.option_strings:
                    return action
    raise AssertionError(f"no {command} {option}")


@pytest.mark.parametrize(
    ("command", "option", "help_text"),
    [
        ("fleetscan scan", "--burst", "token bucket burst (default 20)"),
        ("fleetscan audit", "--max-object-bytes", "roll files over (default 64MiB)"),
        ("fleetscan scan", "--file-mode", "permissions (default 0644)"),
        ("fleetscan scan", "--partition", "aws-cn (default), aws or aws-us-gov"),
        ("fleetscan demo", "--accounts", "member accounts (default 12)"),
        ("fleetscan emulator serve", "--throttle-burst", "token bucket size (default: 20)"),
        ("fleetscan scan", "--rate", "requests/s (default: twenty)"),
    ],
)
def test_a_planted_drift_is_caught(command: str, option: str, help_text: str) -> None:
    """The check above can fail: a help text changed to a wrong default is reported by name."""
    parser = copy.deepcopy(full_parser())
    _action(parser, command, option).help = help_text
    problems, _ = drifts(parser)
    assert len(problems) == 1
    assert problems[0].startswith(f"{command} {option}")
