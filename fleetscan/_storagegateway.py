"""The scan's two Storage Gateway calls, sent without botocore's per-request pipeline.

Nine calls in ten of a scan are ListGateways and ListVolumeRecoveryPoints, and a scan is bound by
the CPU it spends per call. Through an aiobotocore client, such a call costs 0.59 ms of CPU here
(3,000 ListGateways over TLS to the emulator): events, endpoint rules evaluated per call,
serialization by walking the model, a general-purpose SigV4 signer, parsing by walking the model.
For these two read-only JSON calls almost all of it is the same every time. This client sends
the same request (same URL, headers, body and signature as botocore's, which tests check) for
0.19 ms.

What stays botocore's and aiobotocore's, so behaviour does not fork: the endpoint (resolved by the
region's real client: ``AWS_ENDPOINT_URL[_STORAGE_GATEWAY]``, FIPS, dual-stack, partitions), the
HTTP session (the scan's shared pool, TLS and ``AWS_CA_BUNDLE``, proxies, timeouts, the deadline
and answer cap of :class:`~._aws.BoundedHTTPSession`, and the exceptions a failed connection
raises), the credentials, and every answer that is not a plain
success: error answers go through aiobotocore's own parser and raise the client's own exception
classes, exactly as ``client.list_gateways()`` would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiobotocore.parsers import create_parser
from botocore.awsrequest import AWSPreparedRequest
from botocore.credentials import ReadOnlyCredentials

from ._retry import MalformedResponse
from ._sigv4 import JsonPostSigner, amz_date


def _request_url(endpoint_url: str) -> str:
    """Where botocore sends a JSON-protocol call: the endpoint, with ``/`` if it has no path."""
    parts = urlsplit(endpoint_url)
    return endpoint_url if parts.path else urlunsplit(parts._replace(path="/"))


class StorageGatewayClient:
    """ListGateways and ListVolumeRecoveryPoints in one region, for the calling task's account.

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
        self._model = model
        self._exceptions = client.exceptions
        # The region client's own transport: the scan's shared pool, with its TLS and proxies.
        self._http = client._endpoint.http_session
        self._credentials = credentials
        self._url = _request_url(meta.endpoint_url)
        self._target_prefix = model.metadata["targetPrefix"] + "."
        content_type = f"application/x-amz-json-{model.metadata['jsonVersion']}"
        self._signer = JsonPostSigner(
            url=self._url,
            service=model.signing_name,
            region=meta.region_name,
            content_type=content_type,
        )
        self._base_headers = {"Content-Type": content_type, "User-Agent": user_agent}

    async def list_gateways(self, **params: Any) -> dict[str, Any]:
        return await self._call("ListGateways", params)

    async def list_volume_recovery_points(self, **params: Any) -> dict[str, Any]:
        return await self._call("ListVolumeRecoveryPoints", params)

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(params)
        target = self._target_prefix + operation
        credentials = await self._credentials()
        headers = {"X-Amz-Target": target, **self._base_headers}
        headers.update(self._signer.headers(credentials, target, body, date=amz_date()))
        request = AWSPreparedRequest("POST", self._url, headers, body, False)
        response = await self._http.send(request)
        content: bytes = await response.content
        if response.status_code < 300:
            try:
                answer = orjson.loads(content)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(answer, dict):
                    return answer
        return await self._parsed(operation, response, content)

    async def _parsed(self, operation: str, response: Any, content: bytes) -> dict[str, Any]:
        """An answer that is not a plain JSON object, read as aiobotocore reads it.

        Errors (and odd successes: an empty body, ``Infinity``, a number beyond 64 bits, which
        orjson refuses and Python's json accepts) are rare, so they take the general path:
        aiobotocore's parser, the client's exception classes, the modeled error fields
        (Storage Gateway's ``error.errorCode``). An answer even it cannot read raises from
        inside the parser, which :func:`~._retry.classify` reports as a malformed answer.
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
