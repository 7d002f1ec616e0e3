"""moto's Security Hub, made to answer a custom integration's import the way AWS does.

moto stores findings per (account, region) and upserts them by ``Id``; it does not check who
imports them. AWS does: with the account's own default product
(``arn:aws:securityhub:REGION:ACCOUNT:product/ACCOUNT/default``) only that account may import,
only findings whose ``AwsAccountId`` is that account, and only where Security Hub is enabled.
:class:`SecurityHubGuard` adds those checks, makes the keys the emulator's STS hands out (which
moto's IAM has never seen) count for the account they encode, and can inject the failures an
importer must survive: throttled calls and findings answered in ``FailedFindings``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from moto.securityhub.exceptions import SecurityHubClientError
from moto.securityhub.models import SecurityHubBackend
from moto.securityhub.responses import SecurityHubResponse

from ._fleet import account_id_from_access_key

#: Findings per BatchImportFindings call, at most (AWS refuses more; moto does not check).
MAX_BATCH = 100


class SecurityHubGuard:
    """The checks and faults in front of moto's Security Hub, for one running stack."""

    active: ClassVar[SecurityHubGuard | None] = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: BatchImportFindings calls still to answer ThrottlingException.
        self.throttle_imports = 0
        #: Findings still to answer in FailedFindings (InternalFailure), one call at a time.
        self.fail_findings = 0
        #: BatchImportFindings calls that reached the backend, and the findings they carried.
        self.import_calls = 0
        self.imported = 0

    def take_throttle(self) -> bool:
        with self._lock:
            if self.throttle_imports > 0:
                self.throttle_imports -= 1
                return True
            return False

    def take_failures(self, wanted: int) -> int:
        with self._lock:
            taken = min(wanted, self.fail_findings)
            self.fail_findings -= taken
            return taken


_original_account: Callable[[Any], str] | None = None
_original_import: Callable[..., tuple[int, int, list[dict[str, Any]]]] | None = None


def _current_account(self: Any) -> str:
    """The account of the caller's key: the emulator's keys encode it, as AWS keys do."""
    decoded = account_id_from_access_key(self.get_access_key() or "")
    if decoded is not None and SecurityHubGuard.active is not None:
        return decoded
    assert _original_account is not None
    return _original_account(self)


def _batch_import(
    self: SecurityHubBackend, findings: list[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    assert _original_import is not None
    guard = SecurityHubGuard.active
    if guard is None:
        return _original_import(self, findings)
    if not self.enabled:
        raise SecurityHubClientError(
            "InvalidAccessException", "Account is not subscribed to AWS Security Hub"
        )
    if not 1 <= len(findings) <= MAX_BATCH:
        raise SecurityHubClientError(
            "InvalidInputException", f"Findings must hold 1 to {MAX_BATCH} findings"
        )
    if guard.take_throttle():
        raise SecurityHubClientError("ThrottlingException", "Rate exceeded")
    own = f":securityhub:{self.region_name}:{self.account_id}:product/{self.account_id}/default"
    refused: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    for finding in findings:
        if finding.get("AwsAccountId") != self.account_id or not str(
            finding.get("ProductArn", "")
        ).endswith(own):
            refused.append(
                {
                    "Id": finding.get("Id", ""),
                    "ErrorCode": "AccessDeniedException",
                    "ErrorMessage": "the finding's AwsAccountId and product must be the caller's",
                }
            )
        else:
            accepted.append(finding)
    failing = guard.take_failures(len(accepted))
    for finding in accepted[:failing]:
        refused.append(
            {"Id": finding["Id"], "ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
        )
    accepted = accepted[failing:]
    failed, succeeded, failures = _original_import(self, accepted)
    with guard._lock:
        guard.import_calls += 1
        guard.imported += succeeded
    return failed + len(refused), succeeded, failures + refused


def guard_securityhub() -> SecurityHubGuard:
    """Put a fresh guard in front of moto's Security Hub (until :func:`unguard_securityhub`)."""
    global _original_account, _original_import
    if _original_account is None:
        _original_account = SecurityHubResponse.get_current_account
        _original_import = SecurityHubBackend.batch_import_findings
        SecurityHubResponse.get_current_account = _current_account  # type: ignore[method-assign]
        SecurityHubBackend.batch_import_findings = _batch_import  # type: ignore[method-assign]
    guard = SecurityHubGuard()
    SecurityHubGuard.active = guard
    return guard


def unguard_securityhub() -> None:
    """moto's own Security Hub again (the stack stopped)."""
    global _original_account, _original_import
    SecurityHubGuard.active = None
    if _original_account is not None and _original_import is not None:
        SecurityHubResponse.get_current_account = _original_account  # type: ignore[method-assign,assignment]
        SecurityHubBackend.batch_import_findings = _original_import  # type: ignore[method-assign]
        _original_account = _original_import = None
