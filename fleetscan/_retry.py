"""Which failures are worth another attempt, how long to wait, and how many retries a run may spend.

fleetscan retries itself rather than through botocore because botocore does not retry the
InternalServerError that Storage Gateway documents with HTTP 400, and its adaptive mode limits one
client, not one (account, region) across a fleet. Backoff is exponential with full jitter (AWS
Architecture Blog, "Exponential Backoff And Jitter"); a run-wide budget stops a failing endpoint
from multiplying the load: once retries exceed a fraction of all calls, failures are final.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

#: Error codes that mean "slow down"; they also slow the (account, region) rate limiter.
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
    }
)

#: Server-side failures that a later attempt can succeed on, whatever the HTTP status says.
TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServiceUnavailableError",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
        "EC2ThrottledException",
    }
)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed call, reduced to what an error record and the retry decision need."""

    error_code: str
    message: str
    retryable: bool
    throttled: bool = False
    gateway_error_code: str | None = None
    http_status: int | None = None


def classify(exc: BaseException) -> Failure:
    """Map any exception from an AWS call to a :class:`Failure` (never raises).

    Messages come from the service or from botocore's exception text, which names the endpoint
    and operation but never credentials.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        response: dict[str, Any] = exc.response or {}
        error = response.get("Error") or {}
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or "")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        sgw = response.get("error")
        gateway_code = sgw.get("errorCode") if isinstance(sgw, dict) else None
        throttled = code in THROTTLE_CODES
        retryable = (
            throttled
            or code in TRANSIENT_CODES
            or (isinstance(status, int) and status >= 500)
            or code == "ExpiredToken"  # credentials are refreshed before the next attempt
        )
        return Failure(
            code,
            message,
            retryable,
            throttled,
            str(gateway_code) if gateway_code else None,
            status if isinstance(status, int) else None,
        )
    if isinstance(
        exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return Failure("Timeout", _botocore_message(exc), True)
    if isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | ConnectionError
        | TimeoutError,
    ):
        return Failure("ConnectionError", _botocore_message(exc), True)
    if isinstance(exc, MalformedResponse):
        return Failure("MalformedResponse", str(exc), True)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return Failure("NoCredentials", "no AWS credentials found", False)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return Failure(type(exc).__name__, _botocore_message(exc), True)
    return Failure(type(exc).__name__, str(exc)[:500], False)


class MalformedResponse(Exception):
    """A 200 answer that is not what the API model promises (truncated body, wrong types)."""


def _botocore_message(exc: BaseException) -> str:
    return str(exc)[:500]


class Backoff:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    def __init__(self, base: float = 0.05, cap: float = 5.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1 for the first retry)."""
        return self._rng.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))


class RetryBudget:
    """Retries allowed so far: ``floor + ratio * calls``. Spent retries never come back.

    A fleet-wide outage then costs about ``(1 + ratio)`` calls per call, not ``max_attempts``.
    """

    def __init__(self, ratio: float, floor: int = 100) -> None:
        self.ratio = ratio
        self.floor = floor
        self.calls = 0
        self.retries = 0
        self.denied = 0

    def record_call(self) -> None:
        self.calls += 1

    def try_spend(self) -> bool:
        if self.retries < self.floor + self.ratio * self.calls:
            self.retries += 1
            return True
        self.denied += 1
        return False
