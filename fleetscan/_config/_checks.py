"""Every check of a ScanConfig field, by concern: accounts, roles, regions, pace, output, S3.

Each check raises :class:`~fleetscan.ConfigError` naming the field as the user wrote it (the TOML
key), and never quotes a value that can be secret.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import string
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .._exceptions import ConfigError
from .._localfs import first_non_directory
from ._accounts_file import load_accounts_file
from ._organization import ORGANIZATION_KEYS, OrganizationConfig
from ._values import ACCOUNT_ID, check_account_id, show, type_name

if TYPE_CHECKING:
    from ._model import ScanConfig

#: Partitions fleetscan knows how to build ARNs and endpoints for.
PARTITIONS: Final[tuple[str, ...]] = ("aws", "aws-cn", "aws-us-gov")
#: S3's smallest multipart part: an output object never rolls over below it.
MIN_OBJECT_BYTES: Final = 5 * 1024 * 1024
#: STS refuses longer sessions when one role assumes another ("role chaining").
CHAINED_SESSION_MAX_SECONDS: Final = 3600
MAX_CONCURRENCY: Final = 10_000
MAX_ATTEMPTS: Final = 20

# IAM's own patterns (CreateRole, AssumeRole); re.ASCII keeps \w to [A-Za-z0-9_] as IAM means it.
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]+", re.ASCII)
_SESSION_NAME = re.compile(r"[\w+=,.@-]+", re.ASCII)
_ROLE_ARN = re.compile(
    r"arn:(?P<partition>[^:]*):iam::(?P<account>[^:]*):role/"
    r"(?P<path>(?:[\x21-\x7e]+/)?)(?P<name>[^/]*)",
    re.ASCII,
)
_OU_OR_ROOT_ID = re.compile(r"ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32}")
# A run id becomes part of every output file name: no separators, no leading dot.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_S3_URL = re.compile(
    r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?", re.ASCII | re.DOTALL
)
#: S3 server-side encryption fleetscan can ask for (``None``: the bucket's default encryption).
SSE_MODES: Final[tuple[str, ...]] = ("AES256", "aws:kms")
#: Integrity checksums S3 verifies on every part (and stores, composite, for the object).
CHECKSUM_ALGORITHMS: Final[tuple[str, ...]] = ("CRC32", "SHA256")
_TEMPLATE_FIELDS: Final = frozenset({"account_id", "partition"})
REGION_KEYWORDS: Final = ("all", "enabled")


@functools.cache
def storage_gateway_regions(partition: str = "aws") -> tuple[str, ...]:
    """Regions where botocore's endpoint data offers Storage Gateway in ``partition``.

    botocore is the source, not a list of our own, so a botocore upgrade brings new regions.
    """
    # Imported here: 0.3 s to load, paid only when region names must be checked.
    from .._aws import botocore_session

    return tuple(botocore_session().get_available_regions("storagegateway", partition))


# -- the checks -------------------------------------------------------------------------------


def _set(config: ScanConfig, name: str, value: object) -> None:
    """Store a normalised value on the frozen config (e.g. a list given for a tuple field)."""
    object.__setattr__(config, name, value)


def _sequence(value: object, name: str, what: str) -> tuple[object, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(name, f"must be a list of {what}, not {type_name(value)}")
    return tuple(value)


def _check_bool(config: ScanConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ConfigError(name, f"must be true or false, not {type_name(value)}")


def _check_optional_str(config: ScanConfig, name: str, *, secret: bool = False) -> str | None:
    value = getattr(config, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, not {type_name(value)}")
    if not value and not secret:
        raise ConfigError(name, "is empty")
    return value


def _check_int(config: ScanConfig, name: str, low: int, high: int | None = None) -> int:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, not {type_name(value)}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(name, f"must be {bound}, got {value}")
    return value


def _check_positive(config: ScanConfig, name: str, *, allow_zero: bool = False) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number, not {type_name(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "greater than 0"
        raise ConfigError(name, f"must be a finite number {bound}, got {value}")
    _set(config, name, number)
    return number


def validate(config: ScanConfig) -> None:
    """Check every field, in the order a user reads a config: where, who, which regions, how."""
    if not isinstance(config.partition, str) or config.partition not in PARTITIONS:
        raise ConfigError(
            "partition", f"{show(config.partition)} is not one of {', '.join(PARTITIONS)}"
        )
    for name in ("org", "include_inactive", "assume_role", "dry_run"):
        _check_bool(config, name)
    _check_organizations(config)
    _check_accounts(config)
    _check_roles(config)
    _check_regions(config)
    _check_tuning(config)
    _check_output(config)
    _check_s3_output(config)


def parse_s3_url(url: str, field: str = "output") -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b/")``; the prefix is "" or ends with ``/``.

    Refuses what would make the layout ambiguous for S3 consoles and Athena (empty, ``.`` or
    ``..`` path segments, control characters), naming ``field``.
    """
    match = _S3_URL.fullmatch(url)
    if match is None or ".." in match["bucket"]:
        raise ConfigError(field, f"{show(url)} is not s3://BUCKET/PREFIX/ with a valid bucket name")
    prefix = match["prefix"] or ""
    segments = prefix.rstrip("/").split("/") if prefix.rstrip("/") else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise ConfigError(field, f"{show(url)}: the prefix has an empty, '.' or '..' segment")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in prefix):
        raise ConfigError(field, f"{show(url)}: the prefix has a control character")
    if len(prefix) > 512:
        raise ConfigError(field, "the S3 prefix is longer than 512 characters")
    return match["bucket"], "/".join(segments) + "/" if segments else ""


def check_bucket_owner(owner: object, source: str, field: str) -> str | None:
    """The expected bucket owner for reading ``source`` (None: none given), or ConfigError
    naming ``field``: a 12-digit account id, and only for an ``s3://`` source, as a scan
    refuses it for a local output (a directory has no owner S3 could check, and silently
    ignoring the option would let a user believe the check was made)."""
    if owner is None:
        return None
    checked = check_account_id(owner, field)
    if not source.startswith("s3://"):
        raise ConfigError(field, f"applies only to S3 (s3://BUCKET/PREFIX/), not {show(source)}")
    return checked


def check_s3_writes(
    *, sse: str | None, sse_kms_key_id: str | None, bucket_key: bool, checksum_algorithm: object
) -> None:
    """How a run writes its S3 objects, checked together: by a scan's configuration, and by
    ``finalize`` once a run's plan has given it the run's own settings (None: the default
    checksum)."""
    if checksum_algorithm is not None and checksum_algorithm not in CHECKSUM_ALGORITHMS:
        raise ConfigError(
            "checksum_algorithm",
            f"{show(checksum_algorithm)} is not one of {', '.join(CHECKSUM_ALGORITHMS)}",
        )
    if sse is not None and sse not in SSE_MODES:
        raise ConfigError("sse", f"{show(sse)} is not one of {', '.join(SSE_MODES)}")
    if sse_kms_key_id is not None:
        if sse != "aws:kms":
            raise ConfigError("sse_kms_key_id", "needs sse = 'aws:kms' (--sse aws:kms)")
        if len(sse_kms_key_id) > 2048 or any(char.isspace() for char in sse_kms_key_id):
            raise ConfigError(
                "sse_kms_key_id", "must be a KMS key id, key ARN or alias, without spaces"
            )
    if bucket_key and sse != "aws:kms":
        raise ConfigError(
            "bucket_key", "S3 Bucket Keys are for SSE-KMS: also set sse = 'aws:kms' (--sse aws:kms)"
        )


def _check_s3_output(config: ScanConfig) -> None:
    _check_bool(config, "bucket_key")
    sse = _check_optional_str(config, "sse")
    key_id = _check_optional_str(config, "sse_kms_key_id")
    owner = config.expected_bucket_owner
    if owner is not None:
        check_account_id(owner, "expected_bucket_owner")
    checksum: object = config.checksum_algorithm
    check_s3_writes(
        sse=sse, sse_kms_key_id=key_id, bucket_key=config.bucket_key, checksum_algorithm=checksum
    )
    destination = config.output
    if destination is None or destination.startswith("s3://"):
        return
    given = {
        "sse": sse is not None,
        "sse_kms_key_id": key_id is not None,
        "bucket_key": config.bucket_key,
        "expected_bucket_owner": owner is not None,
        "checksum_algorithm": checksum != "CRC32",
    }
    for name, set_ in given.items():
        if set_:
            raise ConfigError(name, "applies only to S3 output (--output s3://BUCKET/PREFIX/)")


def _account_tuple(value: object, name: str) -> tuple[str, ...]:
    items = _sequence(value, name, "12-digit account ids")
    ids = [check_account_id(item, f"{name}[{i}]") for i, item in enumerate(items)]
    # Listing an account twice must not scan it twice (duplicate records).
    return tuple(dict.fromkeys(ids))


def _ou_tuple(value: object, name: str) -> tuple[str, ...]:
    ous = _sequence(value, name, "OU ids")
    for i, ou in enumerate(ous):
        if not isinstance(ou, str) or not _OU_OR_ROOT_ID.fullmatch(ou):
            raise ConfigError(
                f"{name}[{i}]",
                f"{show(ou)} is not an OU id (ou-xxxx-xxxxxxxx) or root id (r-xxxx)",
            )
    return tuple(dict.fromkeys(str(ou) for ou in ous))


def _check_accounts(config: ScanConfig) -> None:
    accounts = _account_tuple(config.accounts, "accounts")
    _set(config, "accounts", accounts)
    _set(config, "exclude_accounts", _account_tuple(config.exclude_accounts, "exclude_accounts"))

    _set(config, "ous", _ou_tuple(config.ous, "ous"))

    file_ids: tuple[str, ...] = ()
    if config.accounts_file is not None:
        if not isinstance(config.accounts_file, str | os.PathLike):
            raise ConfigError(
                "accounts_file", f"must be a path, not {type_name(config.accounts_file)}"
            )
        path = Path(config.accounts_file)
        _set(config, "accounts_file", path)
        file_ids = load_accounts_file(path)

    if not config.assume_role:
        given = {
            "org": config.org,
            "ous": config.ous,
            "accounts": config.accounts,
            "accounts_file": config.accounts_file,
            "role_name": config.role_name,
            "role_arn_template": config.role_arn_template,
            "external_id": config.external_id is not None,
            "hub_role_arn": config.hub_role_arn,
            "organizations": config.organizations,
        }
        for name, value in given.items():
            if value:
                raise ConfigError(
                    name,
                    "cannot be used with assume_role = false (--no-assume-role), which scans "
                    "only the ambient account with the ambient credentials",
                )
        return
    # The file's ids join the list once (a file being re-read by replace() adds nothing new).
    _set(config, "accounts", tuple(dict.fromkeys((*accounts, *file_ids))))
    if config.organizations:
        # Several organizations are each discovered in full: a static list has no place there.
        for name, value in (
            ("org", config.org),
            ("accounts", config.accounts),
            ("accounts_file", config.accounts_file),
        ):
            if value:
                raise ConfigError(
                    name,
                    "cannot be combined with [[organizations]], which lists each organization's "
                    "accounts (the ambient organization is an entry with no profile or "
                    "management_role_arn)",
                )
        return
    if config.ous and not config.org:
        raise ConfigError("ous", "restricts organization discovery: also set org = true (--org)")
    if not (config.org or accounts or config.accounts_file is not None):
        raise ConfigError(
            "accounts",
            "nothing to scan: set org = true (--org), accounts (--accounts), accounts_file "
            "(--accounts-file) or [[organizations]], or assume_role = false (--no-assume-role) "
            "for the ambient account",
        )
    if not config.org and not config.static_account_ids():
        raise ConfigError(
            "exclude_accounts", "excludes every account of accounts and accounts_file: none left"
        )


#: A name of an ``[[organizations]]`` entry: it appears in messages, records and file-free keys.
_ORGANIZATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def _entry_str(entry: Any, key: str, where: str, *, secret: bool = False) -> str | None:
    value = getattr(entry, key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}", f"must be a string, not {type_name(value)}")
    if not value and not secret:
        raise ConfigError(f"{where}.{key}", "is empty")
    return value


def _organization_entry(item: object, where: str) -> OrganizationConfig:
    """An entry as given: an OrganizationConfig, or a table (TOML, a stored run config)."""
    if isinstance(item, OrganizationConfig):
        return item
    if not isinstance(item, dict):
        raise ConfigError(
            where, f"must be a table (an [[organizations]] entry), not {type_name(item)}"
        )
    for key in item:
        if key not in ORGANIZATION_KEYS:
            close = difflib.get_close_matches(str(key), sorted(ORGANIZATION_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            shown = (
                key
                if isinstance(key, str) and re.fullmatch(r"[\x21-\x7e]{1,64}", key)
                else show(key)
            )
            raise ConfigError(f"{where}.{shown}", f"unknown key of an organization{hint}")
    if "name" not in item:
        raise ConfigError(f"{where}.name", "is missing: every organization needs a name")
    values = dict(item)
    for key in ("ous", "exclude_accounts"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return OrganizationConfig(**values)


def _check_organizations(config: ScanConfig) -> None:
    entries = _sequence(config.organizations, "organizations", "organization tables")
    checked: list[OrganizationConfig] = []
    names: dict[str, int] = {}
    for i, item in enumerate(entries):
        where = f"organizations[{i}]"
        entry = _organization_entry(item, where)
        name = entry.name
        if not isinstance(name, str) or not _ORGANIZATION_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}.name",
                f"{show(name)} must be 1-64 of A-Za-z0-9._- starting with a letter or digit",
            )
        if name in names:
            raise ConfigError(
                f"{where}.name", f"{name!r} is also the name of organizations[{names[name]}]"
            )
        names[name] = i
        # From here on, the entry is named as the user wrote it.
        where = f"organizations[{i}] ({name})"
        _entry_str(entry, "profile", where)
        arn = _entry_str(entry, "management_role_arn", where)
        if arn is not None:
            _check_role_arn(arn, f"{where}.management_role_arn", config.partition)
        for key in ("management_external_id", "external_id"):
            secret = _entry_str(entry, key, where, secret=True)
            if secret is not None:
                _check_external_id(secret, f"{where}.{key}")
        if entry.management_external_id is not None and arn is None:
            raise ConfigError(
                f"{where}.management_external_id", "is for management_role_arn, which is not set"
            )
        role_name = _entry_str(entry, "role_name", where)
        template = _entry_str(entry, "role_arn_template", where)
        if role_name is not None and template is not None:
            raise ConfigError(
                f"{where}.role_arn_template",
                "set role_name or role_arn_template, not both (one role per organization)",
            )
        if role_name is not None:
            _check_role_name(role_name, f"{where}.role_name")
        if template is not None:
            _check_template(template, config.partition, f"{where}.role_arn_template")
        ous = None if entry.ous is None else _ou_tuple(entry.ous, f"{where}.ous")
        excluded = (
            None
            if entry.exclude_accounts is None
            else _account_tuple(entry.exclude_accounts, f"{where}.exclude_accounts")
        )
        checked.append(replace(entry, ous=ous, exclude_accounts=excluded))
    _set(config, "organizations", tuple(checked))


def _check_role_arn(value: str, name: str, partition: str) -> re.Match[str]:
    """Check an IAM role ARN's shape; the caller checks which account it names."""
    match = _ROLE_ARN.fullmatch(value)
    if match is None:
        raise ConfigError(
            name, f"{show(value)} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)"
        )
    if match["partition"] != partition:
        raise ConfigError(
            name,
            f"names partition {show(match['partition'])} but partition is {partition!r} "
            "(set partition to match)",
        )
    if not ACCOUNT_ID.fullmatch(match["account"]):
        raise ConfigError(name, f"account {show(match['account'])} is not 12 digits")
    if not _ROLE_NAME.fullmatch(match["name"]):
        raise ConfigError(
            name, f"role name {show(match['name'])} breaks IAM's rules (1-64 of A-Za-z0-9+=,.@_-)"
        )
    if len(match["path"]) + 1 > 512:
        raise ConfigError(name, "role path is longer than IAM's 512 characters")
    return match


def _check_template(template: str, partition: str, name: str = "role_arn_template") -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(name, f"malformed placeholder: {exc}") from None
    names = set()
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in _TEMPLATE_FIELDS:
            raise ConfigError(
                name,
                f"unknown placeholder {{{field_name}}}; use {{account_id}} and {{partition}}",
            )
        if spec or conversion:
            raise ConfigError(name, f"placeholder {{{field_name}}} takes no format or conversion")
        names.add(field_name)
    if "account_id" not in names:
        raise ConfigError(
            name,
            "has no {account_id} placeholder, so every account would assume the same role",
        )
    # Render with a sentinel account: the ARN must be valid *and* put the id in the account field.
    sentinel = "000011112222"
    arn = template.format(account_id=sentinel, partition=partition)
    match = _check_role_arn(arn, name, partition)
    if match["account"] != sentinel:
        raise ConfigError(name, "{account_id} must be the ARN's account field (iam::{account_id}:)")


def _check_external_id(external_id: str, name: str) -> None:
    """Length and alphabet only: the value itself is never quoted."""
    if not 2 <= len(external_id) <= 1224:
        raise ConfigError(name, f"must be 2 to 1224 characters long, not {len(external_id)}")
    if not _EXTERNAL_ID.fullmatch(external_id):
        raise ConfigError(
            name,
            "contains a character STS refuses (allowed: A-Za-z0-9 and +=,.@:/_-); "
            "the value is not shown",
        )


def _check_role_name(role_name: str, name: str) -> None:
    if not _ROLE_NAME.fullmatch(role_name):
        raise ConfigError(
            name,
            f"{show(role_name)} breaks IAM's rules (1-64 of A-Za-z0-9+=,.@_-); "
            "for a role with a path, use role_arn_template",
        )


def _check_roles(config: ScanConfig) -> None:
    role_name = _check_optional_str(config, "role_name")
    template = _check_optional_str(config, "role_arn_template")
    external_id = _check_optional_str(config, "external_id", secret=True)
    hub = _check_optional_str(config, "hub_role_arn")
    _check_optional_str(config, "profile")

    session_name = config.role_session_name
    if not isinstance(session_name, str):
        raise ConfigError("role_session_name", f"must be a string, not {type_name(session_name)}")
    if not 2 <= len(session_name) <= 64 or not _SESSION_NAME.fullmatch(session_name):
        raise ConfigError(
            "role_session_name",
            f"{show(session_name)} must be 2-64 characters of A-Za-z0-9+=,.@_-",
        )
    duration = _check_int(config, "role_duration_seconds", 900, 43200)
    if hub is not None:
        _check_role_arn(hub, "hub_role_arn", config.partition)
        if duration > CHAINED_SESSION_MAX_SECONDS:
            raise ConfigError(
                "role_duration_seconds",
                f"is {duration}, but sessions chained through hub_role_arn are capped at "
                f"{CHAINED_SESSION_MAX_SECONDS} (1 hour) by STS",
            )
    if external_id is not None:
        _check_external_id(external_id, "external_id")

    if not config.assume_role:
        return
    if role_name is not None and template is not None:
        raise ConfigError(
            "role_arn_template", "set role_name or role_arn_template, not both (one role per scan)"
        )
    every_entry_has_a_role = bool(config.organizations) and all(
        entry.role_name is not None or entry.role_arn_template is not None
        for entry in config.organizations
    )
    if role_name is None and template is None and not every_entry_has_a_role:
        raise ConfigError(
            "role_name",
            "which role to assume in each account? Set role_name (--role-name) or "
            "role_arn_template (--role-arn-template), or assume_role = false (--no-assume-role)",
        )
    if role_name is not None:
        _check_role_name(role_name, "role_name")
    if template is not None:
        _check_template(template, config.partition)


def _partition_of(region: str) -> str | None:
    for partition in PARTITIONS:
        if region in storage_gateway_regions(partition):
            return partition
    return None


def _check_regions(config: ScanConfig) -> None:
    regions: object = config.regions
    if isinstance(regions, str):
        if regions not in REGION_KEYWORDS:
            raise ConfigError(
                "regions",
                f"{show(regions)}: give a list of region names, 'all' or 'enabled'",
            )
        return
    names = _sequence(regions, "regions", "region names")
    if not names:
        raise ConfigError("regions", "is empty: give region names, 'all' or 'enabled'")
    if len(names) == 1 and names[0] in REGION_KEYWORDS:
        _set(config, "regions", names[0])
        return
    known = storage_gateway_regions(config.partition)
    for i, name in enumerate(names):
        where = f"regions[{i}]"
        if not isinstance(name, str):
            raise ConfigError(where, f"must be a region name, not {type_name(name)}")
        if name in REGION_KEYWORDS:
            raise ConfigError(where, f"{name!r} stands alone, not in a list of regions")
        if name in known:
            continue
        other = _partition_of(name)
        if other is not None:
            raise ConfigError(
                where, f"{name!r} is in partition {other!r}, not {config.partition!r}"
            )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        raise ConfigError(
            where,
            f"{show(name)} is not a region where Storage Gateway is offered in partition "
            f"{config.partition!r}; {hint}",
        )
    _set(config, "regions", tuple(dict.fromkeys(names)))


def _check_tuning(config: ScanConfig) -> None:
    _check_int(config, "concurrency", 1, MAX_CONCURRENCY)
    if config.rate is not None:
        _check_positive(config, "rate")
    _check_int(config, "burst", 1)
    _check_int(config, "max_attempts", 1, MAX_ATTEMPTS)
    _check_positive(config, "retry_budget_ratio", allow_zero=True)
    _check_positive(config, "connect_timeout")
    _check_positive(config, "read_timeout")
    _check_positive(config, "call_timeout")
    _check_positive(config, "checkpoint_interval")
    _check_positive(config, "stop_grace_seconds", allow_zero=True)


def _check_output(config: ScanConfig) -> None:
    if config.compress not in ("none", "gzip"):
        raise ConfigError("compress", f"{show(config.compress)} is not 'none' or 'gzip'")
    size = _check_int(config, "max_object_bytes", 1)
    if size < MIN_OBJECT_BYTES:
        raise ConfigError(
            "max_object_bytes", f"is {size}; the minimum is {MIN_OBJECT_BYTES} (5 MiB)"
        )
    output: object = config.output
    # No output is fine for scan(), which only streams; run_scan() and the command need one.
    if isinstance(output, os.PathLike):
        _set(config, "output", os.fspath(output))
    elif output is not None and not isinstance(output, str):
        raise ConfigError("output", f"must be a path, not {type_name(output)}")
    destination = config.output
    if destination is not None and destination != "-":
        if not destination:
            raise ConfigError("output", "is empty: give a directory, or - for stdout")
        if destination.startswith("s3://"):
            parse_s3_url(destination)
        elif "\x00" in destination:
            raise ConfigError("output", "contains a NUL character, which no path can hold")
        elif (blocker := first_non_directory(Path(destination))) is not None:
            if blocker == Path(destination):
                raise ConfigError("output", f"{show(destination)} exists and is not a directory")
            raise ConfigError(
                "output",
                f"{show(str(blocker))} is not a directory, so {show(destination)} cannot be "
                "created in it",
            )
    mode = config.file_mode
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise ConfigError(
            "file_mode", f"must be a permission mode like 0o600, not {type_name(mode)}"
        )
    if not 0 <= mode <= 0o777:
        # Shown in octal too: `file_mode = 640` in TOML is decimal 640, i.e. 0o1200.
        raise ConfigError(
            "file_mode",
            f"must be a permission mode from 0o000 to 0o777, got {mode} ({oct(mode)}); "
            "in TOML write it in octal, e.g. 0o640",
        )
    if not mode & 0o600 == 0o600:
        raise ConfigError("file_mode", f"{mode:o} would not let fleetscan read its own files")
    resume = _check_optional_str(config, "resume")
    if resume is not None:
        if destination is None or destination == "-":
            raise ConfigError("resume", "needs the output directory the run was written to")
        if resume != "latest" and not _RUN_ID.fullmatch(resume):
            raise ConfigError("resume", f"{show(resume)} is neither a run id nor 'latest'")
    run_id = _check_optional_str(config, "run_id")
    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            "run_id",
            f"{show(run_id)} must be 1-128 of A-Za-z0-9._- starting with a letter or digit "
            "(it becomes part of file names)",
        )
    _check_shard(config)


#: "K/N": the K-th of N shares of a run's accounts (CloudQuery's spelling, 1-based).
SHARD_PATTERN: Final = re.compile(r"(?P<index>[0-9]{1,6})/(?P<count>[0-9]{1,6})")
#: The most shards a run may have (AWS Batch array jobs: 10,000 children).
MAX_SHARDS: Final = 10_000
#: A shard's files carry ``.shardKofN`` after the run id: the run id must leave room for it.
MAX_SHARDED_RUN_ID: Final = 128 - len(".shard10000of10000")


def parse_shard(text: str, field: str = "shard") -> tuple[int, int]:
    """``"K/N"`` as (K, N), checked: 1 <= K <= N <= MAX_SHARDS."""
    match = SHARD_PATTERN.fullmatch(text)
    if match is None:
        raise ConfigError(field, f"{show(text)} is not K/N (e.g. 2/4) or 'auto'")
    index, count = int(match["index"]), int(match["count"])
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(field, f"{text}: the number of shards must be 1 to {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise ConfigError(field, f"{text}: the shard must be 1 to {count}")
    return index, count


def _check_shard(config: ScanConfig) -> None:
    shard = _check_optional_str(config, "shard")
    if shard is None:
        return
    if shard != "auto":
        parse_shard(shard)
    if config.run_id is None:
        raise ConfigError(
            "shard",
            "needs run_id (--run-id): every shard of a run is started with the same run id, "
            "so that they write one run",
        )
    if len(config.run_id) > MAX_SHARDED_RUN_ID:
        raise ConfigError(
            "run_id", f"a sharded run's id is at most {MAX_SHARDED_RUN_ID} characters"
        )
    if config.resume is not None:
        raise ConfigError(
            "shard",
            "resumes by itself (a shard started again continues its own checkpoint): drop --resume",
        )
    if config.output is None or config.output == "-":
        raise ConfigError("shard", "needs an output directory or s3:// prefix, not stdout")
