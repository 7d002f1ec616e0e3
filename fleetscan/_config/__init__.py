"""What to scan and how: :class:`ScanConfig`, its checks, and the files it can come from.

``_model`` holds the value, ``_checks`` every check of its fields (by concern), ``_files`` the
TOML reader and the merge of a file with flags, ``_resume`` the configuration a run keeps for its
resumes, ``_accounts_file`` account lists, ``_values`` what they all share (how a value is named
in a message, account ids).
"""

from ._accounts_file import load_accounts_file
from ._checks import (
    CHAINED_SESSION_MAX_SECONDS,
    CHECKSUM_ALGORITHMS,
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    MIN_OBJECT_BYTES,
    PARTITIONS,
    SSE_MODES,
    check_bucket_owner,
    check_s3_writes,
    parse_s3_url,
    parse_shard,
    storage_gateway_regions,
)
from ._files import build_config, given_values, load_config_file, merge_values
from ._model import CONFIG_KEYS, Compression, ScanConfig
from ._organization import ORGANIZATION_KEYS, OrganizationConfig
from ._resume import (
    PACE_KEYS,
    RUN_KEYS,
    check_resume,
    resumed_config,
    run_config,
    run_differences,
    stored_config,
)
from ._values import check_account_id

__all__ = [
    "CHAINED_SESSION_MAX_SECONDS",
    "CHECKSUM_ALGORITHMS",
    "CONFIG_KEYS",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "MIN_OBJECT_BYTES",
    "ORGANIZATION_KEYS",
    "PACE_KEYS",
    "PARTITIONS",
    "RUN_KEYS",
    "SSE_MODES",
    "Compression",
    "OrganizationConfig",
    "ScanConfig",
    "build_config",
    "check_account_id",
    "check_bucket_owner",
    "check_resume",
    "check_s3_writes",
    "given_values",
    "load_accounts_file",
    "load_config_file",
    "merge_values",
    "parse_s3_url",
    "parse_shard",
    "resumed_config",
    "run_config",
    "run_differences",
    "storage_gateway_regions",
    "stored_config",
]
