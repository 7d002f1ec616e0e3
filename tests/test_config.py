"""ScanConfig validation, the accounts-file and TOML loaders, and how flags merge with a file.

All in-process: these are the checks `fleetscan scan` runs before any AWS call, so a user's bad
input must come back as a ConfigError naming the field they wrote, and nothing else.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetscan import ConfigError, OrganizationConfig, ScanConfig, run_scan
from fleetscan._config import (
    CONFIG_KEYS,
    build_config,
    load_accounts_file,
    load_config_file,
    storage_gateway_regions,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SECRET = "Do-Not-Leak/Ext.Id@42"


def make(tmp_path: Path | None = None, **values: Any) -> ScanConfig:
    """A valid config (one static account, a role, an output) with ``values`` on top."""
    base: dict[str, Any] = {
        "accounts": ("111122223333",),
        "role_name": "FleetscanReader",
        "output": str((tmp_path or Path(tempfile.gettempdir())) / "fleetscan-test-out"),
    }
    base.update(values)
    return ScanConfig(**base)


def refused(**values: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make(**values)
    return caught.value


# -- ScanConfig -------------------------------------------------------------------------------


def test_a_valid_config_is_normalised() -> None:
    config = make(
        accounts=["111122223333", "444455556666", "111122223333"],
        exclude_accounts=["444455556666"],
        regions=["eu-west-1", "us-east-1", "eu-west-1"],
        rate=5,
    )
    assert config.accounts == ("111122223333", "444455556666")
    assert config.static_account_ids() == ("111122223333",)
    assert config.regions == ("eu-west-1", "us-east-1")
    assert config.rate == 5.0
    assert isinstance(config.rate, float)


def test_eleven_digits_is_refused_and_says_so() -> None:
    error = refused(accounts=("111122223333", "444455556666", "11112222333"))
    assert error.field == "accounts[2]"
    assert "11 digits" in error.problem
    assert "'11112222333'" in error.problem


def test_an_account_id_given_as_a_number_gets_a_hint() -> None:
    error = refused(accounts=(111122223333,))
    assert error.field == "accounts[0]"
    assert "quotes" in error.problem


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"accounts": ("1111-2222-3333",)}, "accounts[0]", "not an AWS account id"),
        ({"accounts": ("١١١١٢٢٢٢٣٣٣٣",)}, "accounts[0]", "not an AWS account id"),
        ({"accounts": ("",)}, "accounts[0]", "empty"),
        ({"accounts": "111122223333"}, "accounts", "list"),
        ({"exclude_accounts": ("12",)}, "exclude_accounts[0]", "2 digits"),
        ({"exclude_accounts": ("111122223333",)}, "exclude_accounts", "none left"),
        ({"accounts": ()}, "accounts", "nothing to scan"),
        ({"accounts": (), "ous": ("ou-ab12-cd34ef56",)}, "ous", "org = true"),
        ({"org": True, "ous": ("ou-1",)}, "ous[0]", "not an OU id"),
        ({"org": "yes"}, "org", "true or false"),
        ({"accounts_file": 42}, "accounts_file", "path"),
        ({"role_name": None}, "role_name", "role_arn_template"),
        (
            {"role_arn_template": "arn:aws:iam::{account_id}:role/R"},
            "role_arn_template",
            "not both",
        ),
        ({"role_name": "a/b"}, "role_name", "IAM"),
        ({"role_name": "r" * 65}, "role_name", "IAM"),
        ({"role_name": ""}, "role_name", "empty"),
        ({"role_session_name": "x"}, "role_session_name", "2-64"),
        ({"role_session_name": "has space"}, "role_session_name", "2-64"),
        ({"role_session_name": "s" * 65}, "role_session_name", "2-64"),
        ({"role_duration_seconds": 899}, "role_duration_seconds", "900 to 43200"),
        ({"role_duration_seconds": 43201}, "role_duration_seconds", "900 to 43200"),
        ({"role_duration_seconds": 3600.0}, "role_duration_seconds", "integer"),
        ({"role_duration_seconds": True}, "role_duration_seconds", "integer"),
        (
            {"hub_role_arn": "arn:aws:iam::123456789012:role/Hub", "role_duration_seconds": 3601},
            "role_duration_seconds",
            "3600",
        ),
        ({"hub_role_arn": "arn:aws:iam::123456789012:user/Hub"}, "hub_role_arn", "role ARN"),
        ({"hub_role_arn": "arn:aws:iam::12345:role/Hub"}, "hub_role_arn", "12 digits"),
        ({"hub_role_arn": "arn:aws-cn:iam::123456789012:role/Hub"}, "hub_role_arn", "partition"),
        ({"partition": "aws-iso"}, "partition", "aws, aws-cn, aws-us-gov"),
        ({"regions": ()}, "regions", "empty"),
        ({"regions": "us-east-1"}, "regions", "list"),
        ({"regions": ("us-east-1", "us-wset-2")}, "regions[1]", "did you mean 'us-west-2'"),
        ({"regions": ("us-east-1", "all")}, "regions[1]", "stands alone"),
        ({"regions": ("cn-north-1",)}, "regions[0]", "'aws-cn'"),
        ({"regions": (1,)}, "regions[0]", "region name"),
        ({"concurrency": 0}, "concurrency", "1 to 10000"),
        ({"concurrency": 10001}, "concurrency", "1 to 10000"),
        ({"rate": 0}, "rate", "greater than 0"),
        ({"rate": float("nan")}, "rate", "finite"),
        ({"rate": float("inf")}, "rate", "finite"),
        ({"rate": "fast"}, "rate", "number"),
        ({"burst": 0}, "burst", "at least 1"),
        ({"max_attempts": 0}, "max_attempts", "1 to 20"),
        ({"max_attempts": 21}, "max_attempts", "1 to 20"),
        ({"retry_budget_ratio": -0.1}, "retry_budget_ratio", "zero or more"),
        ({"connect_timeout": 0}, "connect_timeout", "greater than 0"),
        ({"read_timeout": -1.0}, "read_timeout", "greater than 0"),
        ({"call_timeout": float("nan")}, "call_timeout", "greater than 0"),
        ({"call_timeout": 0.0}, "call_timeout", "greater than 0"),
        ({"compress": "zstd"}, "compress", "'none' or 'gzip'"),
        ({"max_object_bytes": 5 * 1024 * 1024 - 1}, "max_object_bytes", "5 MiB"),
        ({"output": ""}, "output", "empty"),
        ({"output": "s3://Bad_Bucket/x"}, "output", "s3://BUCKET"),
        ({"run_id": "../escape"}, "run_id", "file names"),
        ({"run_id": ".hidden"}, "run_id", "file names"),
        ({"profile": ""}, "profile", "empty"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    values: dict[str, Any], field: str, fragment: str
) -> None:
    error = refused(**values)
    assert error.field == field
    assert fragment in error.problem


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("arn:aws:iam::123456789012:role/Reader", "no {account_id}"),
        ("arn:aws:iam::{account}:role/Reader", "unknown placeholder {account}"),
        ("arn:aws:iam::{account_id}:role/{region}", "unknown placeholder {region}"),
        ("arn:aws:iam::{account_id}:role/{}", "unknown placeholder {}"),
        ("arn:aws:iam::{account_id!r}:role/R", "no format or conversion"),
        ("arn:aws:iam::{account_id:>12}:role/R", "no format or conversion"),
        ("arn:aws:iam::{account_id:role/R", "malformed"),
        ("arn:aws:s3:::{account_id}", "not an IAM role ARN"),
        ("arn:aws:iam::{account_id}:user/Reader", "not an IAM role ARN"),
        ("arn:aws:iam::{account_id}:role/", "IAM's rules"),
        ("arn:aws:iam::{account_id}:role/bad name", "IAM's rules"),
        ("arn:aws:iam::123456789012:role/{account_id}", "account field"),
        ("arn:aws-cn:iam::{account_id}:role/R", "partition"),
    ],
)
def test_malformed_role_templates_are_refused(template: str, fragment: str) -> None:
    error = refused(role_name=None, role_arn_template=template)
    assert error.field == "role_arn_template"
    assert fragment in error.problem


@pytest.mark.parametrize(
    ("partition", "template"),
    [
        ("aws", "arn:{partition}:iam::{account_id}:role/FleetscanReader"),
        ("aws", "arn:aws:iam::{account_id}:role/ops/audit/Reader"),
        ("aws-cn", "arn:{partition}:iam::{account_id}:role/Reader"),
        ("aws-us-gov", "arn:aws-us-gov:iam::{account_id}:role/{account_id}-reader"),
    ],
)
def test_good_role_templates_are_accepted(partition: str, template: str) -> None:
    config = make(role_name=None, role_arn_template=template, partition=partition)
    assert config.role_arn_template == template


def test_chained_sessions_may_last_exactly_one_hour_and_unchained_twelve() -> None:
    hub = "arn:aws:iam::123456789012:role/FleetscanHub"
    assert make(hub_role_arn=hub, role_duration_seconds=3600).role_duration_seconds == 3600
    assert make(role_duration_seconds=43200).role_duration_seconds == 43200


@pytest.mark.parametrize(
    "value",
    [
        "Z",  # too short
        "Zq" * 613,  # too long
        SECRET + " with a space",
        SECRET + "#",
        SECRET + "é",
    ],
)
def test_bad_external_ids_are_refused_without_quoting_them(value: str) -> None:
    error = refused(external_id=value)
    assert error.field == "external_id"
    for text in (str(error), error.problem, repr(error)):
        assert value not in text
        assert SECRET not in text
        assert "ZqZq" not in text


def test_external_id_is_accepted_at_its_limits_and_never_in_repr() -> None:
    for value in ("Zq", "Zq" * 612, SECRET, "Zq+=,.@:/_-Zq"):
        config = make(external_id=value)
        assert config.external_id == value
        assert value not in repr(config)


def test_no_assume_role_refuses_settings_it_would_ignore(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("111122223333\n")
    ambient = ScanConfig(assume_role=False, output="-")
    assert ambient.static_account_ids() == ()
    cases: list[tuple[str, Any]] = [
        ("org", True),
        ("accounts", ("111122223333",)),
        ("accounts_file", ids),
        ("role_name", "Reader"),
        ("external_id", SECRET),
        ("hub_role_arn", "arn:aws:iam::123456789012:role/Hub"),
    ]
    for key, value in cases:
        with pytest.raises(ConfigError) as caught:
            ScanConfig(assume_role=False, output="-", **{key: value})
        assert caught.value.field == key
        assert SECRET not in str(caught.value)


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_every_region_botocore_lists_for_the_partition_is_accepted(partition: str) -> None:
    listed = botocore.session.get_session().get_available_regions("storagegateway", partition)
    assert listed, f"botocore lists no storagegateway region in {partition}"
    assert storage_gateway_regions(partition) == tuple(listed)
    config = make(partition=partition, regions=listed)
    assert config.regions == tuple(listed)


@pytest.mark.parametrize("keyword", ["all", "enabled"])
def test_region_keywords(keyword: str) -> None:
    assert make(regions=keyword).regions == keyword
    assert make(regions=[keyword]).regions == keyword


def test_dry_run_needs_no_output_and_stdout_is_an_output() -> None:
    assert make(output=None, dry_run=True).output is None
    assert make(output="-").output == "-"
    assert make(output="s3://my-bucket/fleetscan/").output == "s3://my-bucket/fleetscan/"


def test_an_existing_file_is_not_an_output_directory(tmp_path: Path) -> None:
    taken = tmp_path / "report.ndjson"
    taken.write_text("")
    error = refused(output=str(taken))
    assert error.field == "output"
    assert make(output=tmp_path).output == str(tmp_path)


def test_replace_revalidates() -> None:
    config = make()
    with pytest.raises(ConfigError, match="concurrency"):
        dataclasses.replace(config, concurrency=0)


# -- accounts files ---------------------------------------------------------------------------


def test_plain_accounts_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text(
        "# production\n111122223333\n\n  444455556666   # payments\n111122223333\n"
        "# 999999999999 commented out\n"
    )
    assert load_accounts_file(path) == ("111122223333", "444455556666")


def test_csv_accounts_file_with_extra_columns_bom_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(
        '\ufeffname,Account_ID,owner\n"payments, prod",111122223333,a\nsandbox," 444455556666 ",b\n'
        "# a comment row\n\n",
        encoding="utf-8",
    )
    assert load_accounts_file(path) == ("111122223333", "444455556666")


def test_single_column_csv(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("account_id\n111122223333\n")
    assert load_accounts_file(path) == ("111122223333",)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("111122223333\n\n11112222333\n", 3, "11 digits"),
        ("# ids\n111122223333\nprod\n", 3, "not an AWS account id"),
        ("account_id,name\n111122223333,a\n1.11122E+11,b\n", 3, "not an AWS account id"),
        ("account_id,name\n111122223333,a\n,b\n", 3, "empty"),
        ("name,id\nprod,111122223333\n", 1, "no account_id column"),
    ],
)
def test_accounts_file_errors_name_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_accounts_file(path)
    assert caught.value.field == "accounts_file"
    assert f"{path}:{line}:" in caught.value.problem
    assert fragment in caught.value.problem


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "no account ids"), ("# only a comment\n\n", "no account ids"), ("account_id\n", "no")],
)
def test_empty_accounts_files_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_accounts_file(path)
    assert str(path) in caught.value.problem


def test_unreadable_accounts_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_accounts_file(tmp_path / "missing.txt")
    assert "missing.txt" in caught.value.problem
    binary = tmp_path / "accounts.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_accounts_file(binary)


def test_scan_config_reads_the_accounts_file_when_built(tmp_path: Path) -> None:
    path = tmp_path / "accounts.txt"
    path.write_text("444455556666\n555566667777\n111122223333\n")
    config = make(
        accounts=("111122223333",),
        accounts_file=str(path),
        exclude_accounts=("555566667777",),
    )
    assert config.accounts_file == path
    assert config.accounts == ("111122223333", "444455556666", "555566667777")
    assert config.static_account_ids() == ("111122223333", "444455556666")
    assert dataclasses.replace(config, concurrency=8).accounts == config.accounts
    path.write_text("12345\n")
    with pytest.raises(ConfigError) as caught:
        make(accounts_file=path)
    assert caught.value.field == "accounts_file"
    assert f"{path}:1:" in caught.value.problem


# -- TOML config files ------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "scan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_file_values_become_scan_config_values(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "ids.txt").write_text("444455556666\n")
    path = write(
        tmp_path,
        'accounts = ["111122223333"]\naccounts_file = "lists/ids.txt"\nrole_name = "R"\n'
        'regions = "us-east-1, eu-west-1"\nrate = 3\nconcurrency = 16\noutput = "out"\n'
        "dry_run = true\n",
    )
    values = load_config_file(path)
    assert values == {
        "accounts": ("111122223333",),
        "accounts_file": tmp_path / "lists" / "ids.txt",
        "role_name": "R",
        "regions": ("us-east-1", "eu-west-1"),
        "rate": 3.0,
        "concurrency": 16,
        "output": "out",
        "dry_run": True,
    }
    config = build_config(values, {})
    assert config.static_account_ids() == ("111122223333", "444455556666")


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ('regoins = ["us-east-1"]\n', "regoins", "did you mean 'regions'"),
        ("[scan]\norg = true\n", "scan", "unknown key"),
        ('concurrency = "64"\n', "concurrency", "an integer, not a string"),
        ("rate = true\n", "rate", "a number, not a boolean"),
        ("org = 1\n", "org", "true or false, not an integer"),
        ("role_name = 7\n", "role_name", "a string, not an integer"),
        ('accounts = "111122223333"\n', "accounts", "a list"),
        ("accounts = [111122223333]\n", "accounts[0]", "quotes"),
        ('accounts = ["111122223333", "1111222233334"]\n', "accounts[1]", "13 digits"),
        ('ous = ["ou-ab12-cd34ef56", 3]\n', "ous[1]", "a string"),
        ("regions = 3\n", "regions", "a list"),
        ('accounts_file = ["a"]\n', "accounts_file", "a path"),
        ("run_id = 2025-01-01\n", "run_id", "a string, not date"),
    ],
)
def test_config_file_refuses_unknown_keys_and_wrong_types(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert caught.value.field == field
    assert fragment in caught.value.problem


def test_config_file_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'org = true\nrole_name = "R"\nregions = [us-east-1]\n')
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert caught.value.field == "config"
    assert str(path) in caught.value.problem
    assert "line 3" in caught.value.problem


def test_config_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "nope.toml")
    assert caught.value.field == "config"
    assert "nope.toml" in caught.value.problem


def test_external_id_of_wrong_type_in_a_file_is_not_quoted(tmp_path: Path) -> None:
    path = write(tmp_path, f'external_id = ["{SECRET}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert caught.value.field == "external_id"
    assert SECRET not in str(caught.value)


def test_every_scan_config_field_can_be_set_from_a_file() -> None:
    assert {f.name for f in dataclasses.fields(ScanConfig)} == CONFIG_KEYS


# -- flags over the file ----------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    file_values = {
        "org": True,
        "role_name": "FileRole",
        "regions": ("us-east-1",),
        "concurrency": 8,
        "output": str(tmp_path / "a"),
    }
    config = build_config(file_values, {"concurrency": 99, "regions": "all"})
    assert (config.concurrency, config.regions, config.role_name) == (99, "all", "FileRole")
    assert config.org is True


def test_an_account_source_flag_replaces_the_files_sources(tmp_path: Path) -> None:
    file_values = {
        "org": True,
        "ous": ("ou-ab12-cd34ef56",),
        "role_name": "R",
        "output": str(tmp_path),
    }
    config = build_config(file_values, {"accounts": ("111122223333",)})
    assert (config.org, config.ous, config.accounts) == (False, (), ("111122223333",))
    narrowed = build_config(file_values, {"ous": ("ou-ab12-aaaabbbb",)})
    assert (narrowed.org, narrowed.ous) == (True, ("ou-ab12-aaaabbbb",))


def test_a_role_flag_replaces_the_files_role(tmp_path: Path) -> None:
    template = "arn:{partition}:iam::{account_id}:role/Other"
    file_values = {"accounts": ("111122223333",), "role_name": "R", "output": str(tmp_path)}
    config = build_config(file_values, {"role_arn_template": template})
    assert (config.role_name, config.role_arn_template) == (None, template)


def test_no_assume_role_flag_drops_the_files_accounts_and_roles(tmp_path: Path) -> None:
    file_values = {
        "org": True,
        "role_name": "R",
        "external_id": SECRET,
        "output": str(tmp_path),
        "concurrency": 4,
    }
    config = build_config(file_values, {"assume_role": False})
    assert (config.assume_role, config.org, config.role_name, config.external_id) == (
        False,
        False,
        None,
        None,
    )
    assert config.concurrency == 4


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({}, {"quiet": True})
    assert caught.value.field == "quiet"


# -- the shipped examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["organization.toml", "organizations.toml", "static-list.toml", "demo.toml"]
)
def test_shipped_example_configs_validate(name: str) -> None:
    config = build_config(load_config_file(CONFIGS / name), {})
    assert config.assume_role


def test_organization_example() -> None:
    config = build_config(load_config_file(CONFIGS / "organization.toml"), {})
    assert (config.org, config.role_name, config.regions, config.compress) == (
        True,
        "FleetscanReader",
        "enabled",
        "gzip",
    )
    assert config.external_id is not None


def test_organizations_example() -> None:
    config = build_config(load_config_file(CONFIGS / "organizations.toml"), {})
    main, acquired = config.organization_settings()
    assert (main.name, main.role_name, main.management_role_arn) == (
        "main",
        "FleetscanReader",
        None,
    )
    assert acquired.role_name == "AcquiredStorageReader"
    assert acquired.management_role_arn == "arn:aws:iam::222233334444:role/FleetscanOrgReader"
    assert acquired.external_id != config.external_id


def test_static_list_example_reads_its_csv_and_honours_exclusions() -> None:
    values = load_config_file(CONFIGS / "static-list.toml")
    config = build_config(values, {})
    csv_ids = load_accounts_file(CONFIGS / "accounts.example.csv")
    assert "777788889999" in csv_ids
    assert config.hub_role_arn is not None
    assert config.role_arn_template is not None
    assert config.static_account_ids() == tuple(
        dict.fromkeys(a for a in (*values["accounts"], *csv_ids) if a != "777788889999")
    )


def test_demo_example_matches_the_emulated_fleet() -> None:
    from fleetscan.emulator import DEFAULT_REGIONS

    config = build_config(load_config_file(CONFIGS / "demo.toml"), {})
    assert config.org
    assert config.regions == DEFAULT_REGIONS
    assert config.output == "fleetscan-demo"


# -- properties -------------------------------------------------------------------------------

_ID_LIKE = st.one_of(
    st.text(alphabet="0123456789", max_size=16),
    st.from_regex(r"[0-9]{10,14}", fullmatch=True),
    st.from_regex(r"[0-9 \-_.a-f]{10,14}", fullmatch=True),
    st.text(max_size=20),
    st.integers(),
    st.none(),
)


@given(value=_ID_LIKE)
def test_account_ids_are_exactly_twelve_digits_or_a_config_error(value: Any) -> None:
    def build() -> ScanConfig:
        return ScanConfig(accounts=("111122223333", value), role_name="R", dry_run=True)

    if isinstance(value, str) and re.fullmatch(r"[0-9]{12}", value):
        assert value in build().accounts
    else:
        # Any exception but ConfigError escapes pytest.raises and fails the test.
        with pytest.raises(ConfigError) as caught:
            build()
        assert caught.value.field == "accounts[1]"


@given(tokens=st.lists(st.text(alphabet="0123456789a.-", min_size=1, max_size=14), min_size=1))
def test_accounts_file_lines_load_or_fail_at_the_first_bad_line(tokens: list[str]) -> None:
    bad = [n for n, t in enumerate(tokens, 1) if not re.fullmatch(r"[0-9]{12}", t)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ids.txt"
        path.write_text("".join(token + "\n" for token in tokens))
        if not bad:
            assert load_accounts_file(path) == tuple(dict.fromkeys(tokens))
            return
        with pytest.raises(ConfigError) as caught:
            load_accounts_file(path)
        assert caught.value.field == "accounts_file"
        assert caught.value.problem.startswith(f"{path}:{bad[0]}: ")


async def test_output_is_needed_to_write_a_run_not_to_stream_one() -> None:
    """scan() only streams records, so a config without output is valid; run_scan() writes a
    run and refuses one without a destination, before any AWS call."""
    config = ScanConfig(accounts=("111122223333",), role_name="Reader")
    assert config.output is None
    with pytest.raises(ConfigError, match="output") as refused:
        await run_scan(config)
    assert refused.value.field == "output"


# -- several organizations ---------------------------------------------------------------------

ORGANIZATIONS_TOML = """
role_name = "FleetscanReader"
external_id = "top-level-id"
ous = ["ou-ab12-cd34ef56"]
exclude_accounts = ["999988887777"]

[[organizations]]
name = "prod"

[[organizations]]
name = "acquired"
profile = "acquired-admin"
management_role_arn = "arn:aws:iam::222233334444:role/FleetscanOrgReader"
management_external_id = "mgmt-secret"
role_arn_template = "arn:{partition}:iam::{account_id}:role/ops/Reader"
external_id = "their-id"
ous = []
exclude_accounts = ["555566667777"]
"""


def test_organizations_tables_become_entries_that_inherit_the_top_level(tmp_path: Path) -> None:
    config = build_config(load_config_file(write(tmp_path, ORGANIZATIONS_TOML)), {})
    prod, acquired = config.organizations
    assert (prod.name, prod.profile, prod.management_role_arn, prod.ous) == (
        "prod",
        None,
        None,
        None,
    )
    assert acquired.profile == "acquired-admin"
    assert acquired.exclude_accounts == ("555566667777",)
    assert "mgmt-secret" not in repr(config)
    assert "their-id" not in repr(config)
    first, second = config.organization_settings()
    # prod takes every member setting from the top level ...
    assert (first.role_name, first.role_arn_template) == ("FleetscanReader", None)
    assert first.external_id == "top-level-id"
    assert first.ous == ("ou-ab12-cd34ef56",)
    assert first.exclude_accounts == ("999988887777",)
    # ... acquired overrides them, its template replacing the top-level role name.
    assert (second.role_name, second.role_arn_template) == (None, acquired.role_arn_template)
    assert second.external_id == "their-id"
    assert second.ous == ()
    assert second.exclude_accounts == ("555566667777",)


def test_every_organization_may_bring_its_own_role_instead_of_a_top_level_one() -> None:
    config = ScanConfig(
        organizations=(
            OrganizationConfig(name="a", role_name="ReaderA"),
            OrganizationConfig(name="b", role_arn_template="arn:aws:iam::{account_id}:role/B"),
        )
    )
    assert [e.role_name for e in config.organization_settings()] == ["ReaderA", None]
    with pytest.raises(ConfigError) as caught:
        ScanConfig(
            organizations=(
                OrganizationConfig(name="a", role_name="ReaderA"),
                OrganizationConfig(name="b"),
            )
        )
    assert caught.value.field == "role_name"


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"nmae": "x"}, "organizations[1].nmae", "unknown key"),
        ({"profile": "p"}, "organizations[1].name", "is missing"),
        ({"name": ""}, "organizations[1].name", "must be 1-64"),
        ({"name": "a b"}, "organizations[1].name", "must be 1-64"),
        ({"name": "first"}, "organizations[1].name", "also the name of organizations[0]"),
        ({"name": "x", "profile": ""}, "organizations[1] (x).profile", "is empty"),
        (
            {"name": "x", "management_role_arn": "arn:aws:iam::12:role/R"},
            "organizations[1] (x).management_role_arn",
            "not 12 digits",
        ),
        (
            {"name": "x", "management_role_arn": "arn:aws-cn:iam::222233334444:role/R"},
            "organizations[1] (x).management_role_arn",
            "partition",
        ),
        (
            {"name": "x", "management_external_id": "abc"},
            "organizations[1] (x).management_external_id",
            "management_role_arn",
        ),
        (
            {"name": "x", "external_id": SECRET + "#"},
            "organizations[1] (x).external_id",
            "not shown",
        ),
        (
            {
                "name": "x",
                "role_name": "R",
                "role_arn_template": "arn:aws:iam::{account_id}:role/R",
            },
            "organizations[1] (x).role_arn_template",
            "not both",
        ),
        ({"name": "x", "role_name": "a/b"}, "organizations[1] (x).role_name", "IAM's rules"),
        (
            {"name": "x", "role_arn_template": "arn:aws:iam::123456789012:role/R"},
            "organizations[1] (x).role_arn_template",
            "no {account_id}",
        ),
        ({"name": "x", "ous": ["ou-1"]}, "organizations[1] (x).ous[0]", "not an OU id"),
        (
            {"name": "x", "exclude_accounts": ["12"]},
            "organizations[1] (x).exclude_accounts[0]",
            "2 digits",
        ),
    ],
)
def test_every_bad_organization_entry_is_refused_naming_the_entry_and_key(
    entry: dict[str, Any], field: str, fragment: str
) -> None:
    # As a TOML table (a dict), which ScanConfig takes as it takes an OrganizationConfig.
    entries: Any = ({"name": "first"}, entry)
    with pytest.raises(ConfigError) as caught:
        ScanConfig(role_name="R", organizations=entries)
    assert caught.value.field == field
    assert fragment in caught.value.problem
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("organizations = 3\n", "organizations", "an array of tables"),
        ("organizations = [3]\n", "organizations[0]", "a table"),
        ("[[organizations]]\nname = 7\n", "organizations[0].name", "a string, not an integer"),
        (
            '[[organizations]]\nname = "a"\nous = "ou-ab12-cd34ef56"\n',
            "organizations[0].ous",
            "a list",
        ),
        (
            '[[organizations]]\nname = "a"\nexclude_accounts = [111122223333]\n',
            "organizations[0].exclude_accounts[0]",
            "quotes",
        ),
        ('[[organizations]]\nname = "a"\nrole = "R"\n', "organizations[0].role", "did you mean"),
        (
            f'[[organizations]]\nname = "a"\nexternal_id = ["{SECRET}"]\n',
            "organizations[0].external_id",
            "a string, not a list",
        ),
    ],
)
def test_organizations_tables_of_the_wrong_type_are_refused(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_file(write(tmp_path, text))
    assert caught.value.field == field
    assert fragment in caught.value.problem
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"org": True}, "org"),
        ({"accounts": ("111122223333",)}, "accounts"),
        ({"assume_role": False, "role_name": None}, "organizations"),
    ],
)
def test_organizations_exclude_other_account_sources(values: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"role_name": "R", "organizations": ({"name": "a"},)}
    with pytest.raises(ConfigError) as caught:
        ScanConfig(**(base | values))
    assert caught.value.field == field


def test_an_account_source_flag_replaces_the_files_organizations(tmp_path: Path) -> None:
    values = load_config_file(write(tmp_path, ORGANIZATIONS_TOML))
    config = build_config(values, {"org": True})
    assert config.org
    assert config.organizations == ()
