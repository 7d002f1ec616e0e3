"""STS (query protocol, XML) from the fleet model: AssumeRole and GetCallerIdentity.

AssumeRole refuses what AWS refuses: a role that does not exist, an account that is suspended or
not in the fleet, a trust policy whose external id the caller does not give, a denied
organization's management role (all ``AccessDenied``, HTTP 403, without saying which), and a
chained session longer than one hour (``ValidationError``). The credentials it returns carry the
role's account in their key id and their expiry in their session token, so every emulated service
knows whom a call acts as and when the session ends, in constant time and memory.

Error messages never quote an external id or a session policy: the one is a secret and the other
may be large, and a scanner may write messages into its records.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from xml.sax.saxutils import escape

import orjson

from ._fleet import Fleet
from ._identity import (
    CHAINED_SESSION_MAX_SECONDS,
    DEFAULT_SESSION_SECONDS,
    MAX_SESSION_SECONDS,
    OPERATOR_USER_NAME,
    Roles,
    SessionIssuer,
    user_id,
)
from ._wire import (
    ApiError,
    Call,
    Payload,
    QueryProtocol,
    Service,
    caller_arn,
    iso_time,
    validation_message,
)

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
VERSION = "2011-06-15"

_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/(?:[\x21-\x7e]*/)?([\w+=,.@-]{1,64})")
_SESSION_NAME = re.compile(r"[\w+=,.@-]*")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]*")
_POLICY_CHARS = re.compile(r"[\t\n\r\x20-\xff]+")
#: AWS refuses session policies whose plain text exceeds this many characters.
_POLICY_MAX = 2048


def _validation(problem: str) -> ApiError:
    return ApiError(400, "ValidationError", problem)


def _text(
    params: Payload,
    name: str,
    field: str,
    low: int,
    high: int,
    pattern: re.Pattern[str] | None,
    problems: list[str],
    *,
    required: bool = False,
    quote: bool = True,
) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            problems.append(
                f"Value null at '{field}' failed to satisfy constraint: Member must not be null"
            )
        return None
    shown = f"Value '{value}' at '{field}'" if quote else f"Value at '{field}'"
    if len(value) < low:
        problems.append(
            f"{shown} failed to satisfy constraint: "
            f"Member must have length greater than or equal to {low}"
        )
    elif len(value) > high:
        problems.append(
            f"{shown} failed to satisfy constraint: "
            f"Member must have length less than or equal to {high}"
        )
    elif pattern is not None and pattern.fullmatch(value) is None:
        problems.append(
            f"{shown} failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return str(value)


def _duration(params: Payload, problems: list[str]) -> int | None:
    value = params.get("DurationSeconds")
    if value is None:
        return None
    if not value.isdigit():
        problems.append(
            f"Value '{value}' at 'durationSeconds' failed to satisfy constraint: "
            "Member must be an integer"
        )
        return None
    seconds = int(value)
    if not 900 <= seconds <= MAX_SESSION_SECONDS:
        bound = "greater than or equal to 900" if seconds < 900 else "less than or equal to 43200"
        problems.append(
            f"Value '{value}' at 'durationSeconds' failed to satisfy constraint: "
            f"Member must have value {bound}"
        )
    return seconds


class Sts(Service):
    """AssumeRole and GetCallerIdentity, for every account of the fleet."""

    name = "sts"
    protocol: QueryProtocol = QueryProtocol(NAMESPACE)
    auth_errors = {
        "missing": (403, "MissingAuthenticationToken"),
        "incomplete": (400, "IncompleteSignature"),
        "invalid_signature": (403, "SignatureDoesNotMatch"),
        "unrecognized": (403, "InvalidClientTokenId"),
        "expired": (400, "ExpiredToken"),
    }

    def __init__(
        self, fleet: Fleet, roles: Roles, issuer: SessionIssuer, clock: Callable[[], float]
    ) -> None:
        super().__init__()
        self.fleet = fleet
        self.roles = roles
        self.issuer = issuer
        self.clock = clock
        self.handlers = {
            "AssumeRole": self._assume_role,
            "GetCallerIdentity": self._get_caller_identity,
        }

    # -- errors -------------------------------------------------------------------------------

    def unknown_operation(self, operation: str) -> ApiError:
        return ApiError(
            400, "InvalidAction", f"Could not find operation {operation} for version {VERSION}"
        )

    def throttled(self) -> ApiError:
        return ApiError(400, "Throttling", "Rate exceeded")

    def internal_error(self, status: int) -> ApiError:
        return ApiError(
            500,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )

    def access_denied(self, call: Call) -> ApiError:
        return ApiError(
            403,
            "AccessDenied",
            f"User: {caller_arn(call)} is not authorized to perform: sts:{call.operation}",
        )

    # -- operations ---------------------------------------------------------------------------

    def _assume_role(self, call: Call) -> bytes:
        params = call.params
        problems: list[str] = []
        role_arn = _text(params, "RoleArn", "roleArn", 20, 2048, None, problems, required=True)
        session_name = _text(
            params, "RoleSessionName", "roleSessionName", 2, 64, _SESSION_NAME, problems,
            required=True,
        )  # fmt: skip
        external_id = _text(
            params, "ExternalId", "externalId", 2, 1224, _EXTERNAL_ID, problems, quote=False
        )
        policy = _text(
            params, "Policy", "policy", 1, _POLICY_MAX, _POLICY_CHARS, problems, quote=False
        )
        duration = _duration(params, problems)
        if problems or role_arn is None or session_name is None:
            raise _validation(validation_message(problems))
        packed_size = None
        if policy is not None:
            try:
                document = orjson.loads(policy)
            except orjson.JSONDecodeError:
                document = None
            if not isinstance(document, dict):
                raise ApiError(
                    400, "MalformedPolicyDocument", "The policy is not in the valid JSON format."
                )
            # What share of the packed-size limit the policy uses, as AWS reports it.
            packed_size = max(1, len(orjson.dumps(document)) * 100 // _POLICY_MAX)
        chained = call.session is not None or call.access_key_id.startswith("ASIA")
        if duration is None:
            duration = DEFAULT_SESSION_SECONDS
        if chained and duration > CHAINED_SESSION_MAX_SECONDS:
            raise _validation(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles "
                "assumed by role chaining."
            )
        match = _ROLE_ARN.fullmatch(role_arn)
        if match is None:
            raise _validation(f"{role_arn} is invalid")
        account_id, role_name = match.groups()
        account = self.fleet.account(account_id)
        role = self.roles.role(account_id, role_name)
        if (
            account is None
            or not account.active
            or role is None
            or not role.assumable
            or (role.external_id is not None and external_id != role.external_id)
        ):
            # AWS says no more than this, whatever the reason: it does not confirm that the
            # account or the role exists.
            raise ApiError(
                403,
                "AccessDenied",
                f"User: {caller_arn(call)} is not authorized to perform: sts:AssumeRole on "
                f"resource: {role_arn}",
            )
        now = self.clock()
        expires = int(now) + duration
        session, secret, token = self.issuer.issue(
            account_id, role_name, session_name, expires, chained
        )
        result = (
            f"<Credentials><AccessKeyId>{session.access_key_id}</AccessKeyId>"
            f"<SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken>"
            f"<Expiration>{iso_time(_utc(expires))}</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>{escape(session.user_id)}</AssumedRoleId>"
            f"<Arn>{escape(session.arn)}</Arn></AssumedRoleUser>"
        )
        if packed_size is not None:
            result += f"<PackedPolicySize>{packed_size}</PackedPolicySize>"
        return self.protocol.answer("AssumeRole", result, call.request_id)

    def _get_caller_identity(self, call: Call) -> bytes:
        session = call.session
        if session is not None:
            user, arn = session.user_id, session.arn
        else:
            user = user_id(call.account_id)
            arn = f"arn:aws:iam::{call.account_id}:user/{OPERATOR_USER_NAME}"
        result = (
            f"<UserId>{escape(user)}</UserId><Account>{call.account_id}</Account>"
            f"<Arn>{escape(arn)}</Arn>"
        )
        return self.protocol.answer("GetCallerIdentity", result, call.request_id)


def _utc(epoch_seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC)
