"""AssumeRole, once per account, sent as a :class:`~._lean.LeanClient`.

A scan assumes a role in every account it scans (and again before the keys expire). Through
aiobotocore's client, an AssumeRole cost ~1.5 ms of CPU here: at 10,000 accounts, 15 s of a
scan's CPU, a tenth of it. This client sends the request botocore sends (the same form-encoded
body, in the same order, signed the same way: tests check it) and reads a success's credentials
from the XML itself; anything else (an error, an answer without the four credential fields, an
expiry it cannot read) goes to aiobotocore's parser, as :class:`~._lean.LeanClient` says.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

from ._lean import LeanClient

#: The fields of a success's ``Credentials`` that a scan reads.
_FIELDS = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")


class AssumeRoleClient(LeanClient):
    """STS AssumeRole in one region, signed with the calling task's keys."""

    def _prepare(self, model: Any) -> str:
        self._version = model.api_version
        return "application/x-www-form-urlencoded; charset=utf-8"

    async def assume_role(self, **params: Any) -> dict[str, Any]:
        """AssumeRole with botocore's parameter names; the answer has ``Credentials`` (with
        ``Expiration`` a timezone-aware datetime, as botocore gives it)."""
        # As botocore's query serializer and request preparer: Action and Version first, then
        # the parameters in the order given, integers as decimal strings, form-encoded.
        fields = {"Action": "AssumeRole", "Version": self._version}
        fields.update((name, str(value)) for name, value in params.items())
        response, content = await self._send(urlencode(fields).encode())
        if response.status_code < 300:
            credentials = _credentials(content)
            if credentials is not None:
                return {"Credentials": credentials}
        return await self._parsed("AssumeRole", response, content)


def _credentials(content: bytes) -> dict[str, Any] | None:
    """The credentials of a plain AssumeRole success, or None for anything else."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return None
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    found = root.find(f"{namespace}AssumeRoleResult/{namespace}Credentials")
    if found is None:
        return None
    values = {name: found.findtext(namespace + name) for name in _FIELDS}
    if not all(values.values()):
        return None
    try:
        expiration = dt.datetime.fromisoformat(str(values["Expiration"]))
    except ValueError:
        return None
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=dt.UTC)
    return {**values, "Expiration": expiration}
