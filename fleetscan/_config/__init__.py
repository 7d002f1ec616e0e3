"""What to scan and how: :class:`ScanConfig`, its checks, and the files it can come from.

``_model`` holds the value, ``_checks`` every check of its fields (by concern), ``_files`` the
TOML reader and the merge of a file with flags, ``_accounts_file`` account lists, ``_values``
what they all share (how a value is named in a message, account ids).
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
    parse_s3_url,
    storage_gateway_regions,
)
from ._files import build_config, load_config_file
from ._model import CONFIG_KEYS, Compression, ScanConfig
from ._values import check_account_id

__all__ = [
    "CHAINED_SESSION_MAX_SECONDS",
    "CHECKSUM_ALGORITHMS",
    "CONFIG_KEYS",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "MIN_OBJECT_BYTES",
    "PARTITIONS",
    "SSE_MODES",
    "Compression",
    "ScanConfig",
    "build_config",
    "check_account_id",
    "load_accounts_file",
    "load_config_file",
    "parse_s3_url",
    "storage_gateway_regions",
]
