"""Property-based tests of every input a user types: TOML files, flags, templates, regions, ARNs.

What a user must get for any input: either a valid ScanConfig, or a ConfigError naming the field
they wrote (the CLI prints it on one line and exits 2), never another exception, which would be a
traceback. test_config.py already covers account ids and accounts-file lines; these cover the
rest. Expected outcomes come from the rules AWS documents (IAM's role name and path patterns,
botocore's region list), not from fleetscan's own code.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import io
import json
import math
import re
import string
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import botocore.session
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleetscan import ConfigError, ScanConfig
from fleetscan._commands import build_parser
from fleetscan._commands._args import scan_overrides
from fleetscan._config import CONFIG_KEYS, PARTITIONS, build_config, load_config_file

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Distinctive, so finding it in a message can only mean the secret was echoed.
CANARY = "Zq9CanaryExtId"
OUTPUT = str(Path(tempfile.gettempdir()) / "fleetscan-hostile-config-out")
T = TypeVar("T")

#: IAM's documented patterns: a role name, and a path ("/" or "/x/.../"), which an ARN spells
#: without its leading "/".
IAM_ROLE_ARN = re.compile(
    r"arn:(?P<partition>aws|aws-cn|aws-us-gov):iam::(?P<account>[0-9]{12}):role/"
    r"(?P<path>(?:[\x21-\x7e]+/)?)(?P<name>[A-Za-z0-9_+=,.@-]{1,64})"
)


@functools.cache
def regions_of(partition: str) -> frozenset[str]:
    session = botocore.session.get_session()
    return frozenset(session.get_available_regions("storagegateway", partition))


ALL_REGIONS = sorted(regions_of("aws") | regions_of("aws-cn") | regions_of("aws-us-gov"))


def valid_role_arn(arn: str, partition: str) -> bool:
    match = IAM_ROLE_ARN.fullmatch(arn)
    return bool(match and match["partition"] == partition and len(match["path"]) + 1 <= 512)


def build(**values: Any) -> ScanConfig:
    base: dict[str, Any] = {"accounts": ("111122223333",), "role_name": "R", "output": OUTPUT}
    base.update(values)
    return ScanConfig(**base)


def attempt(make: Callable[[], T]) -> T | ConfigError:
    """What ``make`` returns, or the ConfigError it raises (any other exception fails the test)."""
    try:
        return make()
    except ConfigError as error:
        return error


def refused_field(error: ConfigError) -> str:
    """The field an error names, without a list index: ``regions[2]`` -> ``regions``."""
    assert error.problem, "an error must say what is wrong"
    assert "\n" not in error.field
    assert str(error) == f"{error.field}: {error.problem}"
    return error.field.split("[", 1)[0]


# -- role ARN templates -------------------------------------------------------------------------

TEMPLATE_PIECES = st.sampled_from(
    ["arn:", "aws", "aws-cn", "aws-us-gov", "aws-iso", "{partition}", ":iam::", ":iam:", ":",
     "{account_id}", "123456789012", ":role/", ":user/", "Reader", "ops/", "/", "//", "{", "}",
     "{}", "{0}", "{account_id!r}", "{account_id:>12}", "{account_id.real}", "{account_id[0]}",
     "{{account_id}}", "{region}", " ", "é", "*", "R" * 64, "R" * 65, "p/" * 300, "\x00", "\n"]
)  # fmt: skip
NAME_CHARS = string.ascii_letters + string.digits + "_+=,.@-"
PATH_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))


@st.composite
def templates(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return "".join(draw(st.lists(TEMPLATE_PIECES | st.text(max_size=3), max_size=10)))
    partition = draw(st.sampled_from(["{partition}", *PARTITIONS, "aws-iso"]))
    path = "".join(
        f"{segment}/"
        for segment in draw(st.lists(st.text(PATH_CHARS, min_size=1, max_size=12), max_size=3))
        if "{" not in segment and "}" not in segment
    )
    name = draw(st.text(NAME_CHARS, min_size=1, max_size=70) | st.text(min_size=0, max_size=5))
    account = draw(st.sampled_from(["{account_id}", "{account_id}", "111122223333"]))
    return f"arn:{partition}:iam::{account}:role/{path}{name}"


@SETTINGS
@given(
    template=templates(),
    partition=st.sampled_from(PARTITIONS),
    accounts=st.lists(
        st.from_regex(r"[0-9]{12}", fullmatch=True), min_size=2, max_size=2, unique=True
    ),
)
def test_role_arn_templates_render_a_valid_role_arn_for_every_account_or_are_refused(
    template: str, partition: str, accounts: list[str]
) -> None:  # fmt: skip
    config = attempt(lambda: build(role_name=None, role_arn_template=template, partition=partition))
    if isinstance(config, ConfigError):
        assert refused_field(config) == "role_arn_template"
        return
    # Accepted: every account gets its own role ARN, valid by IAM's rules, naming that account.
    rendered = [template.format(account_id=a, partition=partition) for a in accounts]
    for account, arn in zip(accounts, rendered, strict=True):
        assert valid_role_arn(arn, partition), arn
        match = IAM_ROLE_ARN.fullmatch(arn)
        assert match is not None
        assert match["account"] == account
    assert config.role_arn_template == template


@SETTINGS
@given(
    partition=st.sampled_from(PARTITIONS),
    path=st.lists(st.text(PATH_CHARS.replace("{", "").replace("}", ""), min_size=1), max_size=3),
    name=st.text(NAME_CHARS, min_size=1, max_size=64),
)
def test_every_template_iam_allows_is_accepted(partition: str, path: list[str], name: str) -> None:
    template = f"arn:{{partition}}:iam::{{account_id}}:role/{''.join(p + '/' for p in path)}{name}"
    assume(len("".join(p + "/" for p in path)) + 1 <= 512)
    assert build(role_name=None, role_arn_template=template, partition=partition)


# -- hub role ARNs, role names, session names ---------------------------------------------------

ARN_LIKE = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda p, a, k, n: f"arn:{p}:iam::{a}:{k}/{n}",
        st.sampled_from(["aws", "aws-cn", "aws-us-gov", "aws-iso", "", "AWS"]),
        st.sampled_from(["123456789012", "12345678901", "", "1234567890123", "abcdefghijkl"]),
        st.sampled_from(["role", "user", "role/ops", "Role"]),
        st.text(NAME_CHARS + "/ é*", max_size=70),
    ),
)


@SETTINGS
@given(arn=ARN_LIKE, partition=st.sampled_from(PARTITIONS))
def test_hub_role_arns_are_iam_role_arns_or_refused(arn: str, partition: str) -> None:
    config = attempt(lambda: build(hub_role_arn=arn, partition=partition))
    if isinstance(config, ConfigError):
        assert refused_field(config) == "hub_role_arn"
        assert not valid_role_arn(arn, partition)
    else:
        assert valid_role_arn(arn, partition)
        assert config.hub_role_arn == arn


@SETTINGS
@given(name=st.text(max_size=70) | st.text(NAME_CHARS, min_size=1, max_size=70))
def test_role_names_follow_iam_or_are_refused(name: str) -> None:
    ok = re.fullmatch(r"[A-Za-z0-9_+=,.@-]{1,64}", name) is not None
    config = attempt(lambda: build(role_name=name))
    if isinstance(config, ConfigError):
        assert refused_field(config) == "role_name"
        assert not ok
    else:
        assert ok
        assert config.role_name == name


@SETTINGS
@given(name=st.text(max_size=70) | st.text(NAME_CHARS, min_size=1, max_size=70))
def test_session_names_follow_sts_or_are_refused(name: str) -> None:
    ok = re.fullmatch(r"[A-Za-z0-9_+=,.@-]{2,64}", name) is not None
    config = attempt(lambda: build(role_session_name=name))
    if isinstance(config, ConfigError):
        assert refused_field(config) == "role_session_name"
        assert not ok
    else:
        assert ok
        assert config.role_session_name == name


@SETTINGS
@given(value=st.text(max_size=30) | st.text(NAME_CHARS + ":/", max_size=1300))
def test_external_ids_follow_sts_or_are_refused_without_being_quoted(value: str) -> None:
    secret = CANARY + value
    ok = len(secret) <= 1224 and re.fullmatch(r"[A-Za-z0-9_+=,.@:/-]+", secret) is not None
    config = attempt(lambda: build(external_id=secret))
    if isinstance(config, ConfigError):
        assert refused_field(config) == "external_id"
        assert not ok
        assert CANARY not in str(config)
        assert CANARY not in repr(config)
    else:
        assert ok
        assert CANARY not in repr(config)


# -- regions ------------------------------------------------------------------------------------


@st.composite
def region_names(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from(ALL_REGIONS))
    mutation = draw(
        st.sampled_from(["none", "upper", "space", "swap", "drop", "digit", "text", "keyword"])
    )
    if mutation == "upper":
        return region.upper()
    if mutation == "space":
        return region + " "
    if mutation == "swap" and len(region) > 3:
        i = draw(st.integers(0, len(region) - 2))
        return region[:i] + region[i + 1] + region[i] + region[i + 2 :]
    if mutation == "drop":
        return region[:-1]
    if mutation == "digit":
        return region[:-1] + "9"
    if mutation == "text":
        return draw(st.text(max_size=20))
    if mutation == "keyword":
        return draw(st.sampled_from(["all", "enabled", "ALL", "global", "aws-global"]))
    return region


@SETTINGS
@given(
    names=st.lists(region_names(), min_size=1, max_size=4), partition=st.sampled_from(PARTITIONS)
)
def test_region_names_are_botocores_or_refused_naming_the_entry(
    names: list[str], partition: str
) -> None:
    known = regions_of(partition)
    config = attempt(lambda: build(regions=names, partition=partition))
    lone_keyword = names in (["all"], ["enabled"])
    if isinstance(config, ConfigError):
        assert refused_field(config) == "regions"
        assert not lone_keyword
        bad = [i for i, n in enumerate(names) if n not in known]
        assert bad, "every region was valid, yet refused"
        assert config.field == f"regions[{bad[0]}]"
        hint = re.search(r"did you mean '([^']+)'", config.problem)
        if hint:
            assert hint[1] in known
    elif lone_keyword:
        assert config.regions == names[0]
    else:
        assert set(names) <= known
        assert config.regions == tuple(dict.fromkeys(names))


# -- TOML config files --------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except DEL, which TOML also wants escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    TEXT,
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=5,
)
#: Plausible values for each key, so that documents get past the type checks often enough.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "org": st.booleans(),
    "accounts": st.lists(st.from_regex(r"[0-9]{11,13}", fullmatch=True), max_size=3),
    "exclude_accounts": st.lists(st.from_regex(r"[0-9]{12}", fullmatch=True), max_size=2),
    "ous": st.lists(st.from_regex(r"ou-[0-9a-z]{4}-[0-9a-z]{8}|r-[0-9a-z]{4}", fullmatch=True)),
    "role_name": st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True),
    "role_arn_template": templates(),
    "external_id": st.just(CANARY) | st.text(NAME_CHARS, max_size=5).map(lambda t: CANARY + t),
    "hub_role_arn": ARN_LIKE,
    "regions": st.lists(region_names(), max_size=3) | st.sampled_from(["all", "enabled"]),
    "concurrency": st.integers(-5, 20_000),
    "rate": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 100),
    "max_attempts": st.integers(-1, 30),
    "role_duration_seconds": st.integers(0, 50_000),
    "file_mode": st.integers(-1, 0o1000) | st.sampled_from([0o600, 0o640, 640, 0o400]),
    "output": st.just(OUTPUT) | TEXT,
    "run_id": TEXT | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    "accounts_file": TEXT | st.just("a\x00b"),
    # [[organizations]] tables: plausible keys with plausible, odd and secret values, and some
    # keys no entry has; as inline tables, which TOML reads exactly as [[organizations]].
    "organizations": st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "name": st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True) | TEXT,
                "profile": TEXT,
                "management_role_arn": ARN_LIKE,
                "management_external_id": st.just(CANARY) | TOML_VALUES,
                "external_id": st.text(NAME_CHARS + "# é", max_size=5).map(lambda t: CANARY + t),
                "role_name": st.from_regex(r"[A-Za-z0-9_]{1,10}", fullmatch=True) | TOML_VALUES,
                "role_arn_template": templates(),
                "ous": st.lists(st.from_regex(r"ou-[0-9a-z]{4}-[0-9a-z]{8}", fullmatch=True)),
                "exclude_accounts": st.lists(
                    st.from_regex(r"[0-9]{11,13}", fullmatch=True), max_size=2
                ),
                "nmae": TOML_VALUES,
            },
        ),
        max_size=3,
    )
    | TOML_VALUES,
}


@st.composite
def toml_documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    known = sorted(CONFIG_KEYS)
    document: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["plausible", "plausible", "any", "unknown"]))
        if kind == "unknown":
            key = draw(
                st.sampled_from(["regoins", "role-name", "Org", "scan", "accountId", "quiet"])
                | TEXT.filter(lambda k: k not in CONFIG_KEYS)
            )
            document[key] = draw(TOML_VALUES)
        elif kind == "any":
            document[draw(st.sampled_from(known))] = draw(TOML_VALUES)
        else:
            key = draw(st.sampled_from(sorted(PLAUSIBLE)))
            document[key] = draw(PLAUSIBLE[key])
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in document.items()]
    return "\n".join(lines) + "\n", document


@SETTINGS
@given(document=toml_documents())
def test_any_toml_document_becomes_a_config_or_an_error_naming_its_key(
    document: tuple[str, dict[str, Any]],
) -> None:
    text, values = document
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.toml"
        path.write_text(text, encoding="utf-8")
        outcome = attempt(lambda: build_config(load_config_file(path), {}))
    unknown = [k for k in values if k not in CONFIG_KEYS]
    if isinstance(outcome, ScanConfig):
        assert not unknown, f"unknown keys {unknown} were accepted"
        return
    field = refused_field(outcome)
    # The field is one the document set, or one it should have set (say, nothing to scan).
    assert outcome.field in values or field in CONFIG_KEYS or unknown, outcome
    assert CANARY not in str(outcome)
    if outcome.field not in CONFIG_KEYS and field not in CONFIG_KEYS:
        # Named as written, or quoted when it would not read on one line (say, "" or "a\nb").
        assert outcome.field == unknown[0] or outcome.field[:1] in ("'", '"'), outcome
        assert outcome.field.strip()
        assert outcome.field.isprintable()


@SETTINGS
@given(raw=st.binary(max_size=60) | TEXT.map(str.encode))
def test_any_bytes_as_a_config_file_are_read_or_refused_as_the_config(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.toml"
        path.write_bytes(raw)
        try:
            document: dict[str, Any] | None = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            document = None
        values = attempt(lambda: load_config_file(path))
    if isinstance(values, ConfigError):
        if document is None:
            assert values.field == "config"
            assert str(path) in values.problem
        else:
            assert values.field in document or refused_field(values) in document
    else:
        assert document is not None
        assert set(values) == set(document) <= CONFIG_KEYS


def test_a_config_path_no_file_can_have_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file("scan\x00.toml")
    assert caught.value.field == "config"
    with pytest.raises(ConfigError) as caught:
        build(accounts_file="ids\x00.txt")
    assert caught.value.field == "accounts_file"


# -- flags --------------------------------------------------------------------------------------


def _scan_flags() -> list[argparse.Action]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    scan = subparsers.choices["scan"]
    return [a for a in scan._actions if a.option_strings and a.dest not in ("help", "config")]


FLAGS = _scan_flags()
FLAG_VALUES = st.one_of(
    TEXT,
    st.integers(-5, 100_000).map(str),
    st.sampled_from(["0640", "0o600", "999", "1h", "60m", "128MiB", "all", "enabled", "-", "gzip",
                     "us-east-1,eu-west-1", "111122223333", "111122223333,44445555666", "--org",
                     "arn:aws:iam::123456789012:role/Hub", "nan", "inf", "1e9", ""]),
)  # fmt: skip


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    argv = ["scan"]
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(FLAGS))
        option = draw(st.sampled_from(action.option_strings))
        argv.append(option)
        if action.nargs != 0 and draw(st.integers(0, 9)) > 0:
            if option == "--external-id":
                argv.append(CANARY + draw(st.text(NAME_CHARS + "# é", max_size=4)))
            else:
                argv.append(draw(FLAG_VALUES))
    return argv


@SETTINGS
@given(argv=argvs())
def test_any_flags_become_a_config_or_exit_2_naming_the_flag(argv: list[str]) -> None:
    """What `fleetscan scan` does before it imports the engine, in-process (a valid config would
    start a scan, so it is not run: these flags are checked exactly as main() checks them)."""
    stderr = io.StringIO()
    exit_code: object = None
    with contextlib.redirect_stderr(stderr):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:
            exit_code = exit_.code
    if exit_code is not None:
        assert exit_code == 2
        message = stderr.getvalue()
        assert "error: " in message
        assert "Traceback" not in message
        assert CANARY not in message
        return
    config = attempt(lambda: build_config({}, scan_overrides(args)))
    if isinstance(config, ConfigError):
        assert refused_field(config) in CONFIG_KEYS
    assert CANARY not in str(config)
    assert CANARY not in repr(config)
