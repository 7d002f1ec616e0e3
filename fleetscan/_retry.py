"""Which failures are worth another attempt, how long to wait, and how many retries a run may spend.

fleetscan retries itself rather than through botocore because botocore does not retry the
InternalServerError that Storage Gateway documents with HTTP 400, and its adaptive mode limits one
client, not one (account, region) across a fleet. Backoff is exponential with full jitter (AWS
Architecture Blog, "Exponential Backoff And Jitter"); a run-wide budget per operation stops a
failing endpoint from multiplying the load: once its retries exceed a fraction of its calls,
failures are final (and an endpoint failing does not spend the retries of another).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
import botocore.exceptions
import botocore.parsers

T = TypeVar("T")

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


#: The caller's keys have expired: not the call's fault. Engine.call refreshes them and tries
#: again without counting the attempt (a few times per call at most). STS and S3 say
#: ``ExpiredToken``, Storage Gateway ``ExpiredTokenException``, EC2 ``RequestExpired``.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed call, reduced to what an error record and the retry decision need."""

    error_code: str
    message: str
    retryable: bool
    throttled: bool = False
    gateway_error_code: str | None = None
    http_status: int | None = None


#: Longest error code and message an error record keeps: an answer is not a place to store data.
MAX_CODE_CHARS = 200
MAX_MESSAGE_CHARS = 500
#: Modules whose frames in a traceback mean "botocore could not read the answer".
_PARSER_MODULES = frozenset({"botocore.parsers", "aiobotocore.parsers"})
#: Where the endpoint uses the parsed answer: a JSON ``null`` body parses to None and fails here.
_ANSWER_HANDLERS = frozenset(
    {("botocore.endpoint", "_do_get_response"), ("aiobotocore.endpoint", "_do_get_response")}
)


def classify(exc: BaseException) -> Failure:
    """Map any exception from an AWS call to a :class:`Failure` (never raises).

    Messages come from the service or from botocore's exception text, which names the endpoint
    and operation but never credentials. An answer botocore cannot even parse (invalid UTF-8,
    JSON nested too deep, a list where an object belongs, ``__type`` that is not a string) is a
    ``MalformedResponse``, retried like a truncated body, whatever exception the parser hit.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        response: dict[str, Any] = exc.response or {}
        error = response.get("Error") or {}
        raw_code = error.get("Code")
        raw_message = error.get("Message")
        message = _clip(raw_message if isinstance(raw_message, str) else "", MAX_MESSAGE_CHARS)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if not isinstance(status, int):
            status = None
        if raw_code is not None and not isinstance(raw_code, str):
            # botocore copies a non-string __type through; such an answer says nothing usable.
            return Failure("MalformedResponse", "error answer with an unreadable code", True)
        code = _clip(raw_code or "Unknown", MAX_CODE_CHARS)
        sgw = response.get("error")
        gateway_code = sgw.get("errorCode") if isinstance(sgw, dict) else None
        throttled = code in THROTTLE_CODES
        retryable = (
            throttled
            or code in TRANSIENT_CODES
            or (status is not None and status >= 500)
            or code in EXPIRED_CODES  # credentials are refreshed before the next attempt
        )
        return Failure(
            code,
            message,
            retryable,
            throttled,
            _clip(gateway_code, MAX_CODE_CHARS)
            if isinstance(gateway_code, str) and gateway_code
            else None,
            status,
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
        return Failure("MalformedResponse", _clip(str(exc), MAX_MESSAGE_CHARS), True)
    if isinstance(exc, ResponseTooLarge):
        return Failure("ResponseTooLarge", _clip(str(exc), MAX_MESSAGE_CHARS), False)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return Failure("NoCredentials", "no AWS credentials found", False)
    if _raised_while_parsing(exc):
        kind = type(exc).__name__
        return Failure(
            "MalformedResponse",
            _clip(f"the answer could not be read ({kind}: {exc})", MAX_MESSAGE_CHARS),
            True,
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return Failure(type(exc).__name__, _botocore_message(exc), True)
    return Failure(type(exc).__name__, _clip(str(exc), MAX_MESSAGE_CHARS), False)


def _raised_while_parsing(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside botocore's response parsers (or is their own error)."""
    if isinstance(exc, botocore.parsers.ResponseParserError):
        return True
    tb = exc.__traceback__
    innermost = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__")
        if module in _PARSER_MODULES:
            return True
        innermost = (module, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return isinstance(exc, AttributeError | TypeError) and innermost in _ANSWER_HANDLERS


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MalformedResponse(Exception):
    """A 200 answer that is not what the API model promises (truncated body, wrong types)."""


class ResponseTooLarge(Exception):
    """An answer longer than any the API can legitimately send (see ``_aws.MAX_ANSWER_BYTES``).

    Not retried: an endpoint that sends megabytes where AWS sends kilobytes would send them
    again, and each attempt would cost the cap in memory and bandwidth.
    """


class CallTimeout(botocore.exceptions.ReadTimeoutError):  # type: ignore[misc]  # untyped
    """One attempt of a call took longer than its total deadline (``call_timeout``).

    A read timeout restarts with every byte, so an endpoint trickling its answer is only ever
    stopped by a deadline on the whole attempt. A botocore read timeout for every reader of
    the exception: :func:`classify` calls it ``Timeout`` (retryable), and a body reader
    treats it as a connection that broke off.
    """

    fmt = 'No complete answer from "{endpoint_url}" within {seconds:.4g} s (call_timeout)'


def _botocore_message(exc: BaseException) -> str:
    return _clip(str(exc), MAX_MESSAGE_CHARS)


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


class RetryFailed(Exception):
    """A call that failed for good (not retryable, out of attempts or out of budget).

    The last exception is the ``__cause__``; ``failure`` is what :func:`classify` made of it.
    """

    def __init__(self, operation: str, failure: Failure, attempts: int) -> None:
        super().__init__(f"{operation} failed after {attempts} attempt(s): {failure.error_code}")
        self.operation = operation
        self.failure = failure
        self.attempts = attempts


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    *,
    operation: str,
    max_attempts: int,
    backoff: Backoff,
    budget: RetryBudget | None = None,
    retryable_codes: Collection[str] = (),
    on_failure: Callable[[Failure], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, with fleetscan's policy: :func:`classify` decides what is
    worth another attempt, :class:`Backoff` how long to wait, ``budget`` (if any) whether the run
    may still spend a retry.

    ``retryable_codes`` adds error codes a caller knows to be transient for its service (S3's
    ``BadDigest``: the bytes were damaged on the way). ``on_failure`` sees every failed attempt
    (to count throttles, say) before the decision. Raises :class:`RetryFailed` from the last
    exception; cancellation is never caught.
    """
    attempt = 0
    while True:
        attempt += 1
        if budget is not None:
            budget.record_call()
        try:
            return await fn()
        except Exception as exc:  # classified below; cancellation is a BaseException
            failure = classify(exc)
            if not failure.retryable and failure.error_code in retryable_codes:
                failure = replace(failure, retryable=True)
            if on_failure is not None:
                on_failure(failure)
            if (
                not failure.retryable
                or attempt >= max_attempts
                or (budget is not None and not budget.try_spend())
            ):
                raise RetryFailed(operation, failure, attempt) from exc
        await anyio.sleep(backoff.delay(attempt))


class CallFailed(Exception):
    """A call that failed for good: not retryable, out of attempts, or out of retry budget."""

    def __init__(self, operation: str, failure: Failure, attempts: int) -> None:
        super().__init__(f"{operation}: {failure.error_code}: {failure.message}")
        self.operation = operation
        self.failure = failure
        self.attempts = attempts


class Stopped(Exception):
    """The scan was asked to stop (a signal): no new call starts, the unit is abandoned."""
