"""What the emulated services share on the wire: errors, the three protocols, one call.

Storage Gateway and Organizations speak AWS JSON 1.1 (``X-Amz-Target``, errors named by
``__type``); STS speaks the query protocol (a form body, XML answers, errors in an
``ErrorResponse``); EC2 its own variant of it (``Response/Errors/Error``, lower-case members).
Each :class:`Service` names its protocol and the errors it answers where the others answer theirs,
so the server's request path (auth, faults, counters) is one for all of them.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import orjson

from ._identity import OPERATOR_USER_NAME, Session

Payload = dict[str, Any]

CORAL = "com.amazon.coral.service#"


class ApiError(Exception):
    """An error answer, rendered by the service's protocol.

    ``type_`` is the error code as JSON services send it in ``__type`` (framework errors carry a
    ``prefix#``, which botocore strips; the XML protocols send the code without it).
    ``error_code`` adds Storage Gateway's ``error`` object, which botocore exposes as
    ``e.response["error"]``; ``fields`` adds members of the error's shape (Organizations'
    ``Reason``, ``Type``).
    """

    def __init__(
        self,
        status: int,
        type_: str,
        message: str | None,
        error_code: str | None = None,
        error_details: dict[str, str] | None = None,
        *,
        fields: Payload | None = None,
    ) -> None:
        super().__init__(message or type_)
        self.status = status
        self.type_ = type_
        self.message = message
        self.error_code = error_code
        self.error_details = error_details or {}
        self.fields = fields or {}

    @property
    def short_code(self) -> str:
        """The code as botocore reports it in ``Error.Code`` (prefix stripped)."""
        return self.type_.rsplit("#", 1)[-1]

    @property
    def code(self) -> str:
        """The counters' key: the code, with Storage Gateway's errorCode when there is one."""
        return f"{self.short_code}/{self.error_code}" if self.error_code else self.short_code


def dumps_kept(doc: Any) -> bytes:
    """JSON of an answer (or fragment) the emulator keeps for the rest of its life.

    ``orjson.dumps`` returns bytes that still own the buffer orjson wrote into (at least 4 KiB,
    however short the JSON); a copy owns only the JSON. Every fragment of every organization and
    pair kept that way made a 10,000-account emulator several hundred megabytes larger.
    """
    return bytes(memoryview(orjson.dumps(doc)))


def validation_message(problems: list[str]) -> str:
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(problems)


@dataclass(slots=True)
class Call:
    """One API call, once its caller is known: what a handler answers from."""

    account_id: str
    region: str
    operation: str
    params: Payload
    #: The caller's access key id, and its assumed-role session when the emulator issued it.
    access_key_id: str
    session: Session | None
    request_id: str
    #: Set by the ``empty_page`` fault: a List* call answers an empty page with a NextToken.
    empty_page: bool = False


Handler = Callable[[Call], bytes]


class Protocol(ABC):
    """How one protocol frames answers and errors."""

    content_type = "application/x-amz-json-1.1"

    @abstractmethod
    def error_body(self, error: ApiError, request_id: str) -> bytes:
        """Each protocol or service answers this its own way."""

    @abstractmethod
    def parse(self, raw: bytes) -> Payload:
        """Each protocol or service answers this its own way."""


class JsonProtocol(Protocol):
    """AWS JSON 1.1. ``message_key`` is how the service spells the message member
    (Storage Gateway: ``message``; Organizations: ``Message``); botocore reads either."""

    def __init__(self, message_key: str) -> None:
        self.message_key = message_key

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        doc: Payload = {"__type": error.type_}
        if error.message is not None:
            doc[self.message_key] = error.message
        doc.update(error.fields)
        if error.error_code is not None:
            doc["error"] = {"errorCode": error.error_code, "errorDetails": error.error_details}
        return orjson.dumps(doc)

    def parse(self, raw: bytes) -> Payload:
        try:
            params = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise ApiError(
                400, CORAL + "SerializationException", "Invalid JSON in request body"
            ) from None
        if not isinstance(params, dict):
            raise ApiError(
                400, CORAL + "SerializationException", "Start of structure or map expected"
            )
        return params


def parse_form(raw: bytes) -> Payload:
    """A query-protocol body as a flat dict (``RegionName.1`` stays one key); the last of a
    repeated key wins. Undecodable bytes are replaced, so the parameter is simply invalid."""
    text = raw.decode("utf-8", errors="replace")
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


class QueryProtocol(Protocol):
    """The query protocol as STS speaks it: ``<OpResponse><OpResult>…`` and ``ErrorResponse``."""

    content_type = "text/xml"

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def answer(self, operation: str, result: str, request_id: str) -> bytes:
        return (
            f'<{operation}Response xmlns="{self.namespace}">'
            f"<{operation}Result>{result}</{operation}Result>"
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            f"</{operation}Response>"
        ).encode()

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        kind = "Receiver" if error.status >= 500 else "Sender"
        message = "" if error.message is None else f"<Message>{escape(error.message)}</Message>"
        return (
            f'<ErrorResponse xmlns="{self.namespace}"><Error><Type>{kind}</Type>'
            f"<Code>{escape(error.short_code)}</Code>{message}</Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()

    def parse(self, raw: bytes) -> Payload:
        return parse_form(raw)


class Ec2Protocol(Protocol):
    """EC2's query variant: lower-case members, ``item`` lists, ``Response/Errors/Error``."""

    content_type = "text/xml;charset=UTF-8"
    _HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def answer(self, operation: str, result: str, request_id: str) -> bytes:
        return (
            f'{self._HEAD}<{operation}Response xmlns="{self.namespace}">'
            f"<requestId>{request_id}</requestId>{result}</{operation}Response>"
        ).encode()

    def error_body(self, error: ApiError, request_id: str) -> bytes:
        message = "" if error.message is None else f"<Message>{escape(error.message)}</Message>"
        return (
            f"{self._HEAD}<Response><Errors><Error><Code>{escape(error.short_code)}</Code>"
            f"{message}</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()

    def parse(self, raw: bytes) -> Payload:
        return parse_form(raw)


#: How a JSON service refuses credentials, by the way they failed before the request became a
#: call: (HTTP status, code). Every service answers the same five kinds, each in its own words.
_JSON_AUTH: dict[str, tuple[int, str]] = {
    "missing": (403, CORAL + "MissingAuthenticationTokenException"),
    "incomplete": (400, CORAL + "IncompleteSignatureException"),
    "invalid_signature": (400, CORAL + "InvalidSignatureException"),
    "unrecognized": (400, CORAL + "UnrecognizedClientException"),
    "expired": (400, CORAL + "ExpiredTokenException"),
}


class Service(ABC):
    """One emulated service: its credential-scope name, protocol, handlers, and the errors it
    answers for bad credentials and injected faults. The defaults are AWS JSON 1.1's."""

    name = ""
    protocol: Protocol = JsonProtocol("message")
    #: The form of each auth failure: kind -> (HTTP status, code).
    auth_errors: dict[str, tuple[int, str]] = _JSON_AUTH

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def auth_error(self, kind: str, message: str) -> ApiError:
        status, code = self.auth_errors[kind]
        return ApiError(status, code, message)

    def unknown_operation(self, operation: str) -> ApiError:
        return ApiError(400, CORAL + "UnknownOperationException", None)

    @abstractmethod
    def throttled(self) -> ApiError:
        """Each protocol or service answers this its own way."""

    @abstractmethod
    def internal_error(self, status: int) -> ApiError:
        """Each protocol or service answers this its own way."""

    @abstractmethod
    def access_denied(self, call: Call) -> ApiError:
        """Each protocol or service answers this its own way."""


def iso_time(moment: dt.datetime) -> str:
    """``2026-01-15T12:00:00Z``: how the query protocols send timestamps."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def caller_arn(call: Call) -> str:
    """The ARN AWS names in an AccessDenied message: the session's, else the operator user's."""
    if call.session is not None:
        return call.session.arn
    return f"arn:aws:iam::{call.account_id}:user/{OPERATOR_USER_NAME}"
