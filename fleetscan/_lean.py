"""Calls sent by the thousand, without botocore's per-request pipeline: what they share.

A scan is bound by the CPU it spends per call, and almost all of it, through an aiobotocore
client, is the same every time: events, endpoint rules evaluated per call, serialization and
parsing by walking the model, a general-purpose SigV4 signer. For the few calls a scan makes by
the thousand (ListGateways and ListVolumeRecoveryPoints in every unit, AssumeRole in every
account) a :class:`LeanClient` sends the request botocore would send (tests check it) and reads
a plain success itself.

What stays botocore's and aiobotocore's, so behaviour does not fork: the endpoint (resolved by
the region's real client: ``AWS_ENDPOINT_URL[_<SERVICE>]``, FIPS, dual-stack, partitions), the
HTTP session (the scan's shared pool, TLS and ``AWS_CA_BUNDLE``, proxies, timeouts, the deadline
and answer cap of :class:`~._aws.BoundedHTTPSession`, and the exceptions a failed connection
raises), the credentials, and every answer that is not a plain success: error answers go through
aiobotocore's own parser and raise the client's own exception classes, exactly as the client's
own method would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiobotocore.parsers import create_parser
from botocore.awsrequest import AWSPreparedRequest
from botocore.credentials import ReadOnlyCredentials

from ._retry import MalformedResponse
from ._sigv4 import PostSigner, amz_date


def _request_url(endpoint_url: str) -> str:
    """Where botocore sends a POST call: the endpoint, with ``/`` if it has no path."""
    parts = urlsplit(endpoint_url)
    return endpoint_url if parts.path else urlunsplit(parts._replace(path="/"))


class LeanClient(ABC):
    """POST calls of one service in one region, for the calling task's account.

    Built from the region's aiobotocore client, whose endpoint, HTTP session, model and exception
    classes it uses; ``credentials`` returns the keys of the account the calling task acts as.
    """

    def __init__(
        self,
        client: Any,
        credentials: Callable[[], Awaitable[ReadOnlyCredentials]],
        user_agent: str,
    ) -> None:
        meta = client.meta
        model = meta.service_model
        content_type = self._prepare(model)
        self._model = model
        self._exceptions = client.exceptions
        # The region client's own transport: the scan's shared pool, with its TLS and proxies.
        self._http = client._endpoint.http_session
        self._credentials = credentials
        self._url = _request_url(meta.endpoint_url)
        self._signer = PostSigner(
            url=self._url,
            service=model.signing_name,
            region=meta.region_name,
            content_type=content_type,
        )
        self._base_headers = {"Content-Type": content_type, "User-Agent": user_agent}

    @abstractmethod
    def _prepare(self, model: Any) -> str:
        """Take what every call needs from the service's ``model``, once; return the requests'
        content type (each service's client says how its calls are encoded)."""

    async def _send(
        self, body: bytes, *, target: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[Any, bytes]:
        """POST ``body`` signed with the calling task's keys: the answer and its bytes."""
        credentials = await self._credentials()
        sent = {**headers, **self._base_headers} if headers else dict(self._base_headers)
        sent.update(self._signer.headers(credentials, target, body, date=amz_date()))
        request = AWSPreparedRequest("POST", self._url, sent, body, False)
        response = await self._http.send(request)
        content: bytes = await response.content
        return response, content

    async def _parsed(self, operation: str, response: Any, content: bytes) -> dict[str, Any]:
        """An answer that is not a plain success, read as aiobotocore reads it.

        Errors (and odd successes, which the fast path refuses) are rare, so they take the
        general path: aiobotocore's parser, the client's exception classes, the modeled error
        fields (Storage Gateway's ``error.errorCode``). An answer even it cannot read raises
        from inside the parser, which :func:`~._retry.classify` reports as a malformed answer.
        """
        operation_model = self._model.operation_model(operation)
        parser = create_parser(self._model.resolved_protocol)
        raw = {
            "headers": response.headers,
            "status_code": response.status_code,
            "body": content,
            "context": {"operation_name": operation},
        }
        parsed = await parser.parse(raw, operation_model.output_shape)
        if not isinstance(parsed, dict):
            raise MalformedResponse(f"{operation} answer is not a JSON object")
        if response.status_code < 300:
            return parsed
        code = parsed.get("Error", {}).get("Code")
        error_shape = self._model.shape_for_error_code(code) if code is not None else None
        if error_shape is not None:
            parsed.update(await parser.parse(raw, error_shape))
        error_class: type[Exception] = self._exceptions.from_code(code)
        raise error_class(parsed, operation)
