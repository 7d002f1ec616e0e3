"""Storage Gateway answers nobody should send: property-based scans against a hostile endpoint.

Storage Gateway is served here by :mod:`hostile_gateway`, which answers with whatever hypothesis
generates (wrong types, strings for numbers, negative and huge numbers, missing, extra and
duplicate fields, unknown gateway types, invalid UTF-8, JSON nested 10,000 deep, non-JSON, empty
bodies, wrong content types, bad timestamps, error answers with hostile fields); STS is the
emulated stack's. Every example is a real scan (``fleetscan.run_scan``, one member account,
one region) whose output is then read back byte by byte.

The properties, for every answer: the scan ends; it returns a ScanResult (never raises); the
manifest is valid and lists every file with its true sha256; every line validates against the
shipped schema; and each answer shows up either as sane records (each value as sent, or null
when what was sent is unreadable: a size sent as "abc" is null, never "abc"; a text longer than
AWS documents is null, and an error record names the field) or as an error record naming the
call, never as a garbled record, and never silently. Answers larger than any the API sends, or
that trickle in, are cut: by size and by the call's deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from botocore.credentials import ReadOnlyCredentials
from hostile_gateway import JSON_CONTENT_TYPE, Answer, HostileGateway, Request, json_answer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from output_checks import check_run_output

import fleetscan
from fleetscan._aws import MAX_ANSWER_BYTES
from fleetscan._records import GATEWAY_TEXT_LIMITS, MAX_LONG, is_gateway_arn, is_volume_arn
from fleetscan._retry import ResponseTooLarge
from fleetscan.emulator import FleetSpec, Stack, start_stack

REGION = "us-east-1"
SPEC = FleetSpec(seed=31, accounts=2, regions=(REGION,))
#: A scan of one account and region takes well under a second here; this only catches hangs.
HANG_GUARD_SECONDS = 60
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
GATEWAY_TYPES = ("STORED", "VTL", "FILE_S3", "FILE_FSX_SMB", "TAPE_NEXTGEN", "cached", "CACHED ")
INVALID_MARKER = json_answer(
    {
        "__type": "InvalidGatewayRequestException",
        "message": "The specified marker is not valid.",
        "error": {"errorCode": "InvalidParameters"},
    },
    400,
)


# -- the harness: one stack and one hostile endpoint for the module, a real scan per example ----


@dataclass
class Outcome:
    result: fleetscan.ScanResult
    manifest: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]
    requests: list[Request]

    def errors(self, operation: str, gateway_arn: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.records["errors"]
            if e["operation"] == operation
            and (gateway_arn is None or e["gateway_arn"] == gateway_arn)
        ]


@dataclass
class Harness:
    stack: Stack
    gateway: HostileGateway
    env: dict[str, str]
    account: str = field(init=False)

    def __post_init__(self) -> None:
        self.account = next(a.id for a in self.stack.fleet.accounts if a.active)

    def gateway_arn(self, index: int) -> str:
        return f"arn:aws:storagegateway:{REGION}:{self.account}:gateway/sgw-{index:08X}"

    def scan(
        self,
        responder: Any,
        *,
        hang_guard: float = HANG_GUARD_SECONDS,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Outcome:
        """A scan of the account's region with ``responder`` answering Storage Gateway (and
        whatever else ``env`` sends to the hostile endpoint)."""
        self.gateway.reset(responder)
        with tempfile.TemporaryDirectory() as folder, _environment({**self.env, **(env or {})}):
            values: dict[str, Any] = {
                "accounts": (self.account,),
                "role_name": self.stack.role_name,
                "regions": (REGION,),
                "output": folder,
                "max_attempts": 2,
                "rate": 5000.0,
                "burst": 5000,
                "concurrency": 32,
                "read_timeout": 20.0,
            }
            values.update(overrides)
            config = fleetscan.ScanConfig(**values)
            result = anyio.run(_guarded_scan, config, hang_guard, backend="asyncio")
            assert isinstance(result, fleetscan.ScanResult)
            manifest, records = check_run_output(Path(folder), result.run_id)
        assert result.status in ("complete", "partial")
        assert manifest["status"] == result.status
        return Outcome(result, manifest, records, list(self.gateway.requests))


async def _guarded_scan(config: fleetscan.ScanConfig, hang_guard: float) -> fleetscan.ScanResult:
    with anyio.fail_after(hang_guard):
        return await fleetscan.run_scan(config)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` as ``env`` (and no other AWS_* setting) for one example, then as it was."""
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith("AWS_"):
                del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The emulated stack for STS (one for the whole module: per example it would be far too
    slow) and the hostile Storage Gateway endpoint in its place."""
    home = tmp_path_factory.mktemp("aws-home")
    with start_stack(SPEC) as stack, HostileGateway() as gateway:
        env = stack.env()
        env["AWS_ENDPOINT_URL_STORAGE_GATEWAY"] = gateway.url
        env["AWS_CONFIG_FILE"] = str(home / "no-aws-config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws-credentials")
        yield Harness(stack, gateway, env)


# -- JSON the way a hostile server writes it: duplicate keys, NaN, integers beyond 64 bits -------


@dataclass(frozen=True)
class Obj:
    """A JSON object as key/value pairs, so that a key can appear twice (the last one wins)."""

    pairs: tuple[tuple[str, Any], ...]

    def effective(self) -> dict[str, Any]:
        return {key: _effective(value) for key, value in self.pairs}


def _effective(value: Any) -> Any:
    """What a JSON parser makes of ``value`` (Python's, as botocore uses: the last key wins)."""
    if isinstance(value, Obj):
        return value.effective()
    if isinstance(value, list):
        return [_effective(v) for v in value]
    return value


def encode(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, dict):
        return encode(Obj(tuple(value.items())))
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)  # NaN and Infinity as Python's json writes (and reads) them


def answer(value: Any, status: int = 200, content_type: str | None = JSON_CONTENT_TYPE) -> Answer:
    return Answer(encode(value).encode(), status, content_type)


ABSENT = object()
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
NOT_A_STRING = JUNK.filter(lambda v: not isinstance(v, str))
TEXT = st.text(max_size=40) | st.just("x" * 1000) | st.just("line\nbreak\x00\u2028")
CONTENT_TYPES = st.sampled_from(
    [
        "application/x-amz-json-1.1",
        "application/json",
        "text/html",
        "text/plain; charset=latin-1",
        None,
    ]
)
DEEP_DEPTHS = st.sampled_from([10_000, 100_000])


def _deep(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def _fields(
    draw: st.DrawFn, spec: dict[str, st.SearchStrategy[Any]], reserved: str
) -> list[tuple[str, Any]]:
    """Known fields, each present or not, with extra unknown fields and duplicate keys."""
    pairs: list[tuple[str, Any]] = []
    for key, values in spec.items():
        if draw(st.booleans()):  # an earlier duplicate of the key, which the later one overrides
            pairs.append((key, draw(JUNK)))
        value = draw(st.one_of(st.just(ABSENT), values))
        if value is not ABSENT:
            pairs.append((key, value))
    extras = draw(st.dictionaries(st.text(min_size=1, max_size=10), JUNK, max_size=2))
    pairs.extend((k, v) for k, v in extras.items() if k not in spec and k != reserved)
    return pairs


# -- what a correct scan must make of a value ---------------------------------------------------


def expected_text(value: Any, limit: int | None = None) -> str | None:
    if not isinstance(value, str):
        return None
    return value if limit is None or len(value) <= limit else None


def overlong_fields(item: dict[str, Any]) -> set[str]:
    """The fields of a gateway item a correct scanner must refuse as longer than documented."""
    return {
        name
        for name, limit in GATEWAY_TEXT_LIMITS.items()
        if isinstance(item.get(name), str) and len(item[name]) > limit
    }


def around(limit: int) -> st.SearchStrategy[str]:
    """Strings just within and just beyond a documented maximum."""
    return st.integers(limit - 2, limit + 2).map(lambda n: "n" * n)


def expected_bytes(value: Any) -> int | None:
    """A byte count: a whole number from 0 to 2**63-1 as a JSON number or ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            return None
        number = int(value)
    elif isinstance(value, str):
        digits = value.strip()
        if not digits or any(c not in "0123456789" for c in digits):
            return None
        digits = digits.lstrip("0") or "0"
        if len(digits) > 19:
            return None
        number = int(digits)
    else:
        return None
    return number if 0 <= number <= MAX_LONG else None


def expected_time(value: Any) -> str | None:
    """ISO 8601 read liberally, normalised to UTC milliseconds; an unreadable time is null."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        utc = parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


SIZES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, MAX_LONG, MAX_LONG + 1, -1, 2**64]),
    st.floats(),
    st.from_regex(r"\s?[0-9]{1,22}\s?", fullmatch=True),
    st.sampled_from(["abc", "", "²", "١٢٣", "1e3", "-5", "+5", "1.0", " 42 ", "0x10", "9" * 5000]),
    JUNK,
)


@st.composite
def times(draw: st.DrawFn) -> Any:
    """Recovery point times in every spelling, and not: offsets, naive, garbage, extremes."""
    kind = draw(st.sampled_from(["instant", "instant", "garbage", "extreme", "junk"]))
    if kind == "instant":
        offset = dt.timezone(dt.timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
        moment = draw(
            st.datetimes(
                dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(offset)
            )
        )
        spelling = draw(st.sampled_from(["iso", "ms", "z", "naive", "seconds"]))
        if spelling == "z":
            return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
        if spelling == "naive":
            return moment.replace(tzinfo=None).isoformat()
        timespec = {"iso": "auto", "ms": "milliseconds", "seconds": "seconds"}[spelling]
        return moment.isoformat(timespec=timespec)
    if kind == "garbage":
        return draw(
            st.sampled_from(
                ["", "yesterday", "2024-13-01T00:00:00Z", "2024-02-30T00:00:00Z", "1700000000",
                 "2024-01-01T25:00:00Z", "2024-01-01T00:00:00+99:00"]
            )
            | st.text(max_size=30)
        )  # fmt: skip
    if kind == "extreme":
        return draw(
            st.sampled_from(
                ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0005-01-01T00:00:00Z",
                 "9999-12-31T23:59:59.999999Z", "2024-01-01"]
            )
        )  # fmt: skip
    return draw(JUNK)


# -- ListGateways: pages of hostile gateways ----------------------------------------------------


@dataclass
class Page:
    """One ListGateways answer; ``items`` is what a parser sees if the page is readable."""

    answer: Answer
    items: list[Any] | None  # None: not a usable page at all
    #: "end", "next" (the following page), "bad" (a marker the server refuses) or "bad_here"
    #: (a marker that is not even a string)
    follows: str
    #: A 2xx answer that is not what the model promises: it must be retried as MalformedResponse.
    malformed: bool = False


@st.composite
def gateway_item(draw: st.DrawFn, harness: Harness, index: int) -> Any:
    kind = draw(st.sampled_from(["good"] * 8 + ["bad_arn", "junk"]))
    if kind == "junk":
        return draw(st.none() | st.integers() | st.text(max_size=5) | st.lists(SCALARS, max_size=2))
    arn: Any = harness.gateway_arn(index)
    if kind == "bad_arn":
        arn = draw(
            st.sampled_from(
                [
                    "",
                    "x",
                    arn + "\n",
                    arn.replace("sgw-", "sgw-" + "A" * 30),
                    arn + "/volume/vol-0123456789AB",
                    arn.replace(harness.account, "12345"),
                    arn.replace("storagegateway", "ec2"),
                ]
            )
            | NOT_A_STRING
            | st.just(ABSENT)
        )
    spec = {
        "GatewayType": st.just("CACHED")
        | st.sampled_from(GATEWAY_TYPES)
        | around(GATEWAY_TEXT_LIMITS["GatewayType"])
        | NOT_A_STRING,
        "GatewayName": TEXT | around(GATEWAY_TEXT_LIMITS["GatewayName"]) | NOT_A_STRING,
        "GatewayId": st.just(f"sgw-{index:08X}") | TEXT | NOT_A_STRING,
        "GatewayOperationalState": st.sampled_from(["ACTIVE", "DISABLED"])
        | TEXT
        | around(GATEWAY_TEXT_LIMITS["GatewayOperationalState"])
        | NOT_A_STRING,
        "HostEnvironment": st.sampled_from(["VMWARE", "EC2", "KVM"])
        | TEXT
        | around(GATEWAY_TEXT_LIMITS["HostEnvironment"])
        | NOT_A_STRING,
    }
    pairs = _fields(draw, spec, "GatewayARN")
    if arn is not ABSENT:
        pairs.insert(draw(st.integers(0, len(pairs))), ("GatewayARN", arn))
    return Obj(tuple(pairs))


#: The bad bodies that come with a 2xx status.
MALFORMED_KINDS = frozenset(
    {"not_json", "invalid_utf8", "deep", "deep_field", "empty", "not_object", "no_list",
     "list_not_a_list"}
)  # fmt: skip


def bad_body(draw: st.DrawFn, list_key: str) -> tuple[Answer, bool]:
    """An answer that is not a usable page of anything, in one of many ways, and whether it is a
    2xx answer (which must then be retried and recorded as a MalformedResponse)."""
    kinds = [*sorted(MALFORMED_KINDS), "error", "error_junk", "html_5xx", "too_large"]
    kind = draw(st.sampled_from(kinds))
    return _bad_answer(draw, list_key, kind), kind in MALFORMED_KINDS


def _bad_answer(draw: st.DrawFn, list_key: str, kind: str) -> Answer:
    if kind == "not_json":
        return Answer(("<" + draw(st.text(max_size=50))).encode(), 200, draw(CONTENT_TYPES))
    if kind == "invalid_utf8":
        prefix = draw(st.binary(max_size=20))
        return Answer(b'{"' + list_key.encode() + b'": [{"x": "' + prefix + b'\xff\xfe"}]}')
    if kind == "deep":
        return Answer(_deep(draw(DEEP_DEPTHS), draw(st.sampled_from(["list", "object"]))).encode())
    if kind == "deep_field":
        nested = _deep(draw(DEEP_DEPTHS), "list")
        return Answer(f'{{"{list_key}": [{{"GatewayName": {nested}}}]}}'.encode())
    if kind == "empty":
        return Answer(b"", draw(st.sampled_from([200, 204])), draw(CONTENT_TYPES))
    if kind == "not_object":
        return answer(draw(JUNK.filter(lambda v: not isinstance(v, dict))))
    if kind == "no_list":
        junk = draw(st.dictionaries(st.text(max_size=8), JUNK, max_size=3))
        return answer({k: v for k, v in junk.items() if k not in (list_key, "GatewayARN")})
    if kind == "list_not_a_list":
        # "" and {} are left out: botocore reads both as an empty list, as any SDK user gets.
        value = draw(
            st.text(min_size=1, max_size=8)
            | st.integers()
            | st.booleans()
            | st.dictionaries(st.text(max_size=4), SCALARS, min_size=1, max_size=2)
        )
        return answer({list_key: value, "GatewayARN": "arn:aws:storagegateway:x"})
    if kind == "error":
        code = draw(
            st.sampled_from(
                ["InternalServerError", "ThrottlingException", "AccessDeniedException",
                 "InvalidGatewayRequestException", "com.amazon.coral#ServiceUnavailable", "x" * 500]
            )
        )  # fmt: skip
        body = {"__type": code, "message": draw(TEXT), "error": {"errorCode": draw(TEXT)}}
        return answer(body, draw(st.sampled_from([400, 403, 429, 500, 503])))
    if kind == "too_large":  # a valid answer, one byte longer than any the API sends
        empty = orjson.dumps({list_key: []})
        piece = draw(st.sampled_from([None, 64 * 1024]))  # with a Content-Length, or chunked
        return Answer(empty + b" " * (MAX_ANSWER_BYTES + 1 - len(empty)), piece_bytes=piece)
    if kind == "error_junk":
        junk_error = {"__type": draw(JUNK), "message": draw(JUNK), "error": draw(JUNK)}
        return answer(junk_error, draw(st.sampled_from([400, 500])))
    return Answer(b"<html><body>502 Bad Gateway</body></html>", 502, "text/html")


@st.composite
def listings(draw: st.DrawFn, harness: Harness) -> list[Page]:
    """One to three ListGateways pages; gateway indexes are unique across them."""
    count = draw(st.integers(1, 3))
    pages: list[Page] = []
    index = 0
    for number in range(count):
        last = number == count - 1
        if draw(st.integers(0, 4)) == 0:
            bad, malformed = bad_body(draw, "Gateways")
            pages.append(Page(bad, None, "end", malformed))
            continue
        items = []
        for _ in range(draw(st.integers(0, 5))):
            items.append(draw(gateway_item(harness, index)))
            index += 1
        top: list[tuple[str, Any]] = []
        if draw(st.booleans()):  # an earlier duplicate "Gateways" key, which the real one overrides
            top.append(("Gateways", draw(JUNK)))
        top.append(("Gateways", items))
        follows = "next"
        if last:
            marker = draw(
                st.sampled_from(
                    [ABSENT, ABSENT, "", None, "zz-unknown", 5, [1], {"a": 1}, "m" * 3000]
                )
            )
            if marker is ABSENT or marker in ("", None):
                follows = "end"
            elif isinstance(marker, str):
                follows = "bad"
            else:  # not even a string: failing this page or the next are both sane
                follows = "bad_here"
            if marker is not ABSENT:
                top.append(("Marker", marker))
        else:
            top.append(("Marker", f"page-{number + 1}"))
        extras = draw(st.dictionaries(st.text(min_size=1, max_size=8), JUNK, max_size=2))
        top.extend((k, v) for k, v in extras.items() if k not in ("Gateways", "Marker"))
        pages.append(
            Page(
                answer(Obj(tuple(top)), content_type=draw(CONTENT_TYPES)),
                [_effective(item) for item in items],
                follows,
            )
        )
    return pages


def usable_gateway(item: Any) -> bool:
    return isinstance(item, dict) and is_gateway_arn(item.get("GatewayARN"))


def volume_of(gateway_arn: str) -> str:
    return f"{gateway_arn}/volume/vol-{gateway_arn[-8:]}0000"


GOOD_POINT = "2026-01-02T03:04:05.678Z"


def _listing_responder(pages: list[Page]) -> Any:
    def respond(request: Request) -> Answer:
        params = request.params if isinstance(request.params, dict) else {}
        if request.operation == "ListGateways":
            marker = params.get("Marker")
            if marker is None:
                return pages[0].answer
            if isinstance(marker, str) and marker.startswith("page-") and marker[5:].isdigit():
                return pages[int(marker[5:])].answer
            return INVALID_MARKER
        arn = str(params.get("GatewayARN"))
        infos = [{"VolumeARN": volume_of(arn), "VolumeRecoveryPointTime": GOOD_POINT,
                  "VolumeSizeInBytes": 1024, "VolumeUsageInBytes": "512"}]  # fmt: skip
        return json_answer({"GatewayARN": arn, "VolumeRecoveryPointInfos": infos})

    return respond


@SETTINGS
@given(data=st.data())
def test_hostile_gateway_listings_become_sane_records_or_error_records(
    hostile: Harness, data: st.DataObject
) -> None:
    pages = data.draw(listings(hostile))
    outcome = hostile.scan(_listing_responder(pages))

    # What a correct scanner must write (required) and may write (allowed), walking the pages.
    required: dict[str, dict[str, Any]] = {}
    allowed: dict[str, dict[str, Any]] = {}
    listing_error = False
    malformed = False
    for page in pages:
        if page.items is None:
            listing_error = True
            malformed = page.malformed
            break
        usable = {item["GatewayARN"]: item for item in page.items if usable_gateway(item)}
        allowed.update(usable)
        if (
            len(usable) < len(page.items)
            or page.follows == "bad_here"
            or any(overlong_fields(item) for item in usable.values())
        ):
            # A gateway that cannot be recorded, or a field of one that cannot, must not
            # vanish silently.
            listing_error = True
        elif not listing_error:
            required.update(usable)
        if page.follows != "next":
            listing_error = listing_error or page.follows != "end"
            break

    gateways = {g["gateway_arn"]: g for g in outcome.records["gateways"]}
    assert len(gateways) == len(outcome.records["gateways"]), "a gateway was recorded twice"
    assert set(required) <= set(gateways) <= set(allowed)
    assert bool(outcome.errors("ListGateways")) == listing_error
    if malformed:  # retried (max_attempts is 2), then recorded as what it is
        final = {
            (e["error_code"], e["retryable"], e["attempts"]) for e in outcome.errors("ListGateways")
        }
        assert ("MalformedResponse", True, 2) in final
    assert all(e["operation"] == "ListGateways" for e in outcome.records["errors"])
    assert outcome.result.status == ("partial" if listing_error else "complete")

    scanned = set()
    for arn, record in gateways.items():
        sent = allowed[arn]
        assert record["account_id"] == hostile.account
        assert record["region"] == REGION
        assert record["gateway_id"] == arn.rsplit("/", 1)[1]
        for column, name in (
            ("gateway_name", "GatewayName"),
            ("gateway_type", "GatewayType"),
            ("gateway_operational_state", "GatewayOperationalState"),
            ("host_environment", "HostEnvironment"),
        ):
            assert record[column] == expected_text(sent.get(name), GATEWAY_TEXT_LIMITS[name])
        named = {
            name
            for error in outcome.errors("ListGateways", arn)
            for name in GATEWAY_TEXT_LIMITS
            if error["message"].startswith(f"{name} is ")
        }
        assert named == overlong_fields(sent), "each over-long field named, none other"
        if sent.get("GatewayType") == "CACHED":
            assert (record["status"], record["recovery_point_count"]) == ("scanned", 1)
            scanned.add(arn)
        else:
            assert (record["status"], record["recovery_point_count"]) == ("not_cached", None)
    # A call for every cached gateway and for no other; its one volume recorded as sent.
    asked = [r.params["GatewayARN"] for r in outcome.requests if r.operation != "ListGateways"]
    assert sorted(asked) == sorted(scanned)
    points = {(p["gateway_arn"], p["volume_arn"]): p for p in outcome.records["recovery_points"]}
    assert set(points) == {(arn, volume_of(arn)) for arn in scanned}
    for point in points.values():
        assert point["recovery_point_time"] == GOOD_POINT
        assert (point["volume_size_bytes"], point["volume_usage_bytes"]) == (1024, 512)


# -- ListVolumeRecoveryPoints: hostile volumes --------------------------------------------------


@st.composite
def volume_item(draw: st.DrawFn, gateway_arn: str, index: int) -> Any:
    kind = draw(st.sampled_from(["good"] * 8 + ["bad_arn", "null"]))
    if kind == "null":
        return None  # botocore keeps a null list item; nothing to record from it
    arn: Any = f"{gateway_arn}/volume/vol-{index:012X}"
    if kind == "bad_arn":
        arn = draw(
            st.sampled_from(
                ["", "vol-1", gateway_arn, arn + " ", arn.replace("vol-", "vol-" + "F" * 30)]
            )
            | NOT_A_STRING
            | st.just(ABSENT)
        )
    spec = {
        "VolumeRecoveryPointTime": times(),
        "VolumeSizeInBytes": SIZES,
        "VolumeUsageInBytes": SIZES,
    }
    pairs = _fields(draw, spec, "VolumeARN")
    if arn is not ABSENT:
        pairs.insert(draw(st.integers(0, len(pairs))), ("VolumeARN", arn))
    return Obj(tuple(pairs))


@dataclass
class PointsAnswer:
    answer: Answer
    items: list[Any] | None  # what a parser sees; None: not a usable answer
    malformed: bool = False  # as Page.malformed


@st.composite
def points_answer(draw: st.DrawFn, gateway_arn: str, first: int) -> PointsAnswer:
    if draw(st.integers(0, 3)) == 0:
        bad, malformed = bad_body(draw, "VolumeRecoveryPointInfos")
        return PointsAnswer(bad, None, malformed)
    items = [draw(volume_item(gateway_arn, first + i)) for i in range(draw(st.integers(0, 5)))]
    top: list[tuple[str, Any]] = [("GatewayARN", gateway_arn), ("VolumeRecoveryPointInfos", items)]
    extras = draw(st.dictionaries(st.text(min_size=1, max_size=8), JUNK, max_size=2))
    top.extend(
        (k, v) for k, v in extras.items() if k not in ("GatewayARN", "VolumeRecoveryPointInfos")
    )
    return PointsAnswer(
        answer(Obj(tuple(top)), content_type=draw(CONTENT_TYPES)), [_effective(i) for i in items]
    )


def usable_volume(item: Any) -> bool:
    return isinstance(item, dict) and is_volume_arn(item.get("VolumeARN"))


@SETTINGS
@given(data=st.data())
def test_hostile_recovery_points_become_sane_records_or_error_records(
    hostile: Harness, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 3))
    arns = [hostile.gateway_arn(0x100 + i) for i in range(count)]
    answers = {arn: data.draw(points_answer(arn, i * 100)) for i, arn in enumerate(arns)}
    listing = {
        "Gateways": [
            {
                "GatewayARN": arn,
                "GatewayId": arn[-12:],
                "GatewayType": "CACHED",
                "GatewayName": f"gw{i}",
            }
            for i, arn in enumerate(arns)
        ]
    }

    def respond(request: Request) -> Answer:
        if request.operation == "ListGateways":
            return json_answer(listing)
        return answers[request.params["GatewayARN"]].answer

    outcome = hostile.scan(respond)

    gateways = {g["gateway_arn"]: g for g in outcome.records["gateways"]}
    assert sorted(gateways) == sorted(arns), "every listed gateway is recorded exactly once"
    points: dict[str, dict[str, Any]] = {}
    for point in outcome.records["recovery_points"]:
        assert point["volume_arn"] not in points, "a recovery point was recorded twice"
        points[point["volume_arn"]] = point
    for arn, sent in answers.items():
        record = gateways[arn]
        errors = outcome.errors("ListVolumeRecoveryPoints", arn)
        mine = {v: p for v, p in points.items() if p["gateway_arn"] == arn}
        usable = {i["VolumeARN"]: i for i in sent.items or [] if usable_volume(i)}
        assert set(mine) <= set(usable)
        if sent.items is None:
            assert errors, f"an unusable answer for {arn} left no error record"
            if sent.malformed:
                final = {(e["error_code"], e["retryable"], e["attempts"]) for e in errors}
                assert ("MalformedResponse", True, 2) in final
            assert (record["status"], mine) == ("error", {})
        elif len(usable) == len(sent.items):
            assert not errors
            assert (record["status"], record["recovery_point_count"]) == ("scanned", len(usable))
            assert set(mine) == set(usable)
        else:
            assert errors, f"a volume of {arn} that cannot be recorded vanished silently"
        if record["status"] == "error":
            assert errors
            assert record["recovery_point_count"] is None
            last = errors[-1]
            assert record["error_code"] == (last["gateway_error_code"] or last["error_code"])
        else:
            assert record["status"] == "scanned"
            assert record["recovery_point_count"] == len(mine)
        for volume_arn, point in mine.items():
            item = usable[volume_arn]
            assert point["gateway_id"] == arn.rsplit("/", 1)[1]
            assert point["volume_id"] == volume_arn.rsplit("/", 1)[1]
            assert point["volume_size_bytes"] == expected_bytes(item.get("VolumeSizeInBytes"))
            assert point["volume_usage_bytes"] == expected_bytes(item.get("VolumeUsageInBytes"))
            when = expected_time(item.get("VolumeRecoveryPointTime"))
            assert point["recovery_point_time"] == when
            if when is None:
                assert point["recovery_point_age_seconds"] is None
            else:
                scanned = dt.datetime.fromisoformat(point["scanned_at"].replace("Z", "+00:00"))
                point_time = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
                age = (scanned - point_time).total_seconds()
                assert abs(point["recovery_point_age_seconds"] - age) < 0.01
    for error in outcome.records["errors"]:
        assert error["operation"] == "ListVolumeRecoveryPoints"
        assert len(error["error_code"]) <= 200
        assert len(error["message"]) <= 500
    state_only = all(
        e["error_code"] == "InvalidGatewayRequestException" for e in outcome.records["errors"]
    )
    assert outcome.result.status == ("complete" if state_only else "partial")


# -- shapes no generator draws often enough: huge pages, endless markers, duplicates ------------


def test_huge_pages_of_thousands_of_gateways(hostile: Harness) -> None:
    rng = random.Random(5)
    per_page, pages = 2500, 3
    kinds = ["CACHED"] + ["STORED", "VTL", "FILE_S3", "FILE_FSX_SMB"] * 20
    listing = []
    for number in range(pages):
        gateways = []
        for i in range(per_page):
            index = number * per_page + i
            gateways.append(
                {
                    "GatewayARN": hostile.gateway_arn(index),
                    "GatewayType": kinds[index % len(kinds)],
                    "GatewayName": "".join(rng.choices("abcdefgh é\u2028", k=12)),
                    "Ec2InstanceId": f"i-{index:017x}",
                    "SoftwareVersion": "2.9." + str(index),
                }
            )
        page: dict[str, Any] = {"Gateways": gateways}
        if number + 1 < pages:
            page["Marker"] = f"page-{number + 1}"
        listing.append(Page(json_answer(page), gateways, "next"))

    outcome = hostile.scan(_listing_responder(listing))

    assert outcome.result.status == "complete"
    assert len(outcome.records["gateways"]) == per_page * pages
    assert len({g["gateway_arn"] for g in outcome.records["gateways"]}) == per_page * pages
    cached = [g for g in outcome.records["gateways"] if g["gateway_type"] == "CACHED"]
    assert (
        len(cached) == len(outcome.records["recovery_points"]) == per_page * pages // len(kinds) + 1
    )
    assert outcome.manifest["summary"]["api_calls"]["ListGateways"] == pages


@pytest.mark.parametrize("cycle", [1, 3])
def test_a_marker_that_never_ends_the_listing_ends_the_scan(hostile: Harness, cycle: int) -> None:
    """A page whose Marker leads back to an earlier page: the listing would never end."""
    arns = [hostile.gateway_arn(0x500 + i) for i in range(cycle)]

    def respond(request: Request) -> Answer:
        if request.operation != "ListGateways":
            return INVALID_MARKER
        marker = request.params.get("Marker") or "loop-0"
        number = int(marker.removeprefix("loop-"))
        gateway = {"GatewayARN": arns[number], "GatewayType": "STORED"}
        return json_answer({"Gateways": [gateway], "Marker": f"loop-{(number + 1) % cycle}"})

    outcome = hostile.scan(respond, hang_guard=20)

    assert outcome.result.status == "partial"
    assert outcome.errors("ListGateways"), "the endless listing must be reported"
    assert sorted(g["gateway_arn"] for g in outcome.records["gateways"]) == sorted(arns)


def test_a_gateway_or_volume_listed_twice_is_recorded_once(hostile: Harness) -> None:
    """Paging is not atomic (a gateway added mid-listing shifts the next page): repeats happen."""
    arn, other = hostile.gateway_arn(0x600), hostile.gateway_arn(0x601)
    volume = volume_of(arn)
    pages = [
        {"Gateways": [{"GatewayARN": arn, "GatewayType": "CACHED"}], "Marker": "page-1"},
        {"Gateways": [{"GatewayARN": other, "GatewayType": "VTL"},
                      {"GatewayARN": arn, "GatewayType": "CACHED"}]},
    ]  # fmt: skip

    def respond(request: Request) -> Answer:
        if request.operation == "ListGateways":
            return json_answer(pages[1] if request.params.get("Marker") else pages[0])
        info = {"VolumeARN": volume, "VolumeRecoveryPointTime": GOOD_POINT, "VolumeSizeInBytes": 1}
        return json_answer({"GatewayARN": arn, "VolumeRecoveryPointInfos": [info, dict(info)]})

    outcome = hostile.scan(respond)

    assert sorted(g["gateway_arn"] for g in outcome.records["gateways"]) == sorted([arn, other])
    assert [p["volume_arn"] for p in outcome.records["recovery_points"]] == [volume]
    (cached,) = [g for g in outcome.records["gateways"] if g["gateway_arn"] == arn]
    assert cached["recovery_point_count"] == 1


# -- the readers of API values, on their own (fast, so many more examples) ----------------------


@settings(max_examples=500, deadline=None)
@given(value=SIZES)
def test_sizes_are_read_as_byte_counts_or_null(value: Any) -> None:
    from fleetscan._records import parse_bytes

    assert parse_bytes(value) == expected_bytes(value)


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)),
    offset_minutes=st.integers(-14 * 60 + 1, 14 * 60 - 1),
    timespec=st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"]),
)
def test_every_iso_spelling_of_an_instant_reads_as_that_instant(
    moment: dt.datetime, offset_minutes: int, timespec: str
) -> None:
    from fleetscan._records import format_time, parse_time

    local = moment.astimezone(dt.timezone(dt.timedelta(minutes=offset_minutes)))
    spelled = local.isoformat(timespec=timespec)
    truncated = {"seconds": moment.replace(microsecond=0)}.get(timespec, moment)
    if timespec == "milliseconds":
        truncated = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_time(spelled) == truncated
    assert format_time(truncated) == expected_time(spelled)
    assert format_time(truncated)[:4] == f"{truncated.year:04d}"


@settings(max_examples=300, deadline=None)
@given(value=times())
def test_any_recovery_point_time_reads_as_an_instant_or_null(value: Any) -> None:
    from fleetscan._records import format_time, parse_time

    parsed = parse_time(value)
    assert (format_time(parsed) if parsed else None) == expected_time(value)


# -- expired credentials: not the call's fault ---------------------------------------------------

EXPIRED = json_answer(
    {
        "__type": "com.amazon.coral.service#ExpiredTokenException",
        "message": "The security token included in the request is expired",
    },
    400,
)


def _access_key(request: Request) -> str:
    authorization = request.headers.get("Authorization", "")
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


def _cached_listing(arns: list[str]) -> Answer:
    return json_answer({"Gateways": [{"GatewayARN": a, "GatewayType": "CACHED"} for a in arns]})


def _points(request: Request) -> Answer:
    arn = request.params["GatewayARN"]
    info = {"VolumeARN": volume_of(arn), "VolumeRecoveryPointTime": GOOD_POINT}
    return json_answer({"GatewayARN": arn, "VolumeRecoveryPointInfos": [info]})


def test_an_expired_token_is_refreshed_without_spending_an_attempt(hostile: Harness) -> None:
    """The first ListVolumeRecoveryPoints says the keys expired. With one attempt per call the
    call must still succeed: new keys (a second AssumeRole), the same call again. With one call
    slot, the other gateway's call holds the slot the refresh needs: it must not wait for the
    refresh while holding it (that was a deadlock, seen as a soak that never ended)."""
    arns = [hostile.gateway_arn(0x700), hostile.gateway_arn(0x701)]
    expired_once: list[Request] = []

    def respond(request: Request) -> Answer:
        if request.operation == "ListGateways":
            return _cached_listing(arns)
        if not expired_once:
            expired_once.append(request)
            return EXPIRED
        return _points(request)

    outcome = hostile.scan(respond, concurrency=1, max_attempts=1)

    assert outcome.result.status == "complete"
    assert outcome.records["errors"] == []
    assert sorted(p["gateway_arn"] for p in outcome.records["recovery_points"]) == sorted(arns)
    calls = [r for r in outcome.requests if r.operation == "ListVolumeRecoveryPoints"]
    assert len(calls) == 3
    (refused,) = expired_once
    again = [r for r in calls[1:] if r.params == refused.params]
    assert len(again) == 1
    assert _access_key(again[0]) != _access_key(refused), "sent again with the same keys"
    assert outcome.result.stats.expired_tokens == 1
    assert outcome.result.stats.calls["AssumeRole"] == 2
    assert outcome.manifest["summary"]["expired_tokens"] == 1


THROTTLED = json_answer({"__type": "ThrottlingException", "message": "Rate exceeded"}, 400)
INTERNAL = json_answer({"__type": "InternalServerError", "message": "oops"}, 500)


def test_throttles_do_not_spend_a_calls_attempts(hostile: Harness) -> None:
    """A bucket probing for the service's rate gets throttled now and then: an unlucky call
    throttled twice, then failing once, still has an attempt left of its two."""
    arn = hostile.gateway_arn(0x720)
    script = [THROTTLED, THROTTLED, INTERNAL]

    def respond(request: Request) -> Answer:
        if request.operation == "ListGateways":
            return _cached_listing([arn])
        return script.pop(0) if script else _points(request)

    outcome = hostile.scan(respond, max_attempts=2)

    assert outcome.result.status == "complete"
    assert outcome.records["errors"] == []
    assert [p["gateway_arn"] for p in outcome.records["recovery_points"]] == [arn]
    assert outcome.result.stats.throttles == 2
    calls = [r for r in outcome.requests if r.operation == "ListVolumeRecoveryPoints"]
    assert len(calls) == 4


@pytest.mark.parametrize("refusal", ["ExpiredTokenException", "ThrottlingException"])
def test_a_call_always_refused_for_no_fault_of_its_own_ends_in_an_error_record(
    hostile: Harness, refusal: str
) -> None:
    """An STS handing out keys the service always calls expired, a service that throttles
    every call: a few free resends per call (refreshes; as many throttles as attempts), then
    the attempts count again; the call ends, recorded with every send, and the scan with it."""
    from fleetscan._scan import MAX_REFRESHES_PER_CALL

    arn = hostile.gateway_arn(0x710)
    refused = EXPIRED if refusal == "ExpiredTokenException" else THROTTLED
    free = MAX_REFRESHES_PER_CALL if refusal == "ExpiredTokenException" else 2

    def respond(request: Request) -> Answer:
        return _cached_listing([arn]) if request.operation == "ListGateways" else refused

    outcome = hostile.scan(respond, max_attempts=2)

    assert outcome.result.status == "partial"
    calls = [r for r in outcome.requests if r.operation == "ListVolumeRecoveryPoints"]
    assert len(calls) == free + 2
    (error,) = outcome.errors("ListVolumeRecoveryPoints", arn)
    assert (error["error_code"], error["attempts"], error["retryable"]) == (
        refusal,
        len(calls),
        True,
    )
    if refusal == "ExpiredTokenException":
        assert len({_access_key(r) for r in calls}) == len(calls), "each try with new keys"


# -- answers that trickle: every call has a total deadline per attempt (call_timeout) ------------

#: A realistic ListGateways answer (160 bytes): trickled at a byte a second it would take 160 s,
#: and the read timeout, which restarts with every byte, would never end it.
SMALL_LISTING = orjson.dumps(
    {"Gateways": [{"GatewayARN": "arn:aws:storagegateway:us-east-1:111122223333:gateway/"
                   "sgw-12A3456B", "GatewayType": "CACHED", "GatewayName": "gw"}]}
)  # fmt: skip
TRICKLE = Answer(SMALL_LISTING, piece_bytes=1, pause=1.0)
CALL_TIMEOUT = 2.0
ATTEMPTS = 2


@dataclass(frozen=True)
class Trickled:
    """Which call trickles, where its endpoint is, and what else the scan needs for it."""

    operation: str
    env_key: str | None = None  # the AWS_ENDPOINT_URL_* pointed at the trickling endpoint
    overrides: tuple[tuple[str, Any], ...] = ()


TRICKLED = [
    Trickled("ListGateways"),
    Trickled("ListVolumeRecoveryPoints"),
    Trickled("AssumeRole", "AWS_ENDPOINT_URL_STS"),
    Trickled("DescribeRegions", "AWS_ENDPOINT_URL_EC2", (("regions", "enabled"),)),
]


def _trickling(harness: Harness, operation: str, slow: bool) -> Any:
    arn = harness.gateway_arn(0x800)

    def respond(request: Request) -> Answer:
        if request.operation not in ("ListGateways", "ListVolumeRecoveryPoints"):
            return TRICKLE if slow else Answer(b"not used", 500)  # STS or EC2 sent here
        if request.operation == operation and slow:
            return TRICKLE
        if request.operation == "ListGateways":
            return _cached_listing([arn])
        return _points(request)

    return respond


@pytest.mark.parametrize("trickled", TRICKLED, ids=[t.operation for t in TRICKLED])
def test_a_trickling_answer_is_cut_at_the_call_deadline(
    hostile: Harness, trickled: Trickled
) -> None:
    """Each attempt is cut at ``call_timeout``, retried, then recorded as a Timeout; the scan
    ends in about attempts x call_timeout more than it takes with a prompt answer."""
    env = {trickled.env_key: hostile.gateway.url} if trickled.env_key else {}
    overrides = {"call_timeout": CALL_TIMEOUT, "max_attempts": ATTEMPTS, **dict(trickled.overrides)}
    started = time.monotonic()
    if trickled.env_key is None:  # the same scan, answered at once: what the rest costs here
        prompt = hostile.scan(_trickling(hostile, trickled.operation, False), **overrides)
        assert prompt.result.status == "complete"
    baseline = time.monotonic() - started

    started = time.monotonic()
    outcome = hostile.scan(_trickling(hostile, trickled.operation, True), env=env, **overrides)
    elapsed = time.monotonic() - started

    assert outcome.result.status == "partial"
    (error,) = outcome.errors(trickled.operation)
    assert (error["error_code"], error["attempts"], error["retryable"]) == ("Timeout", 2, True)
    # call_timeout, plus a second per 64 KiB of the request's body.
    assert re.search(r"within 2(\.0\d*)? s \(call_timeout\)", error["message"]), error["message"]
    sent = [r for r in outcome.requests if r.operation in (trickled.operation, "")]
    assert len(sent) == ATTEMPTS
    # A hang guard, not a timing claim: without the deadline this takes 160 s per attempt.
    theoretical = baseline + ATTEMPTS * CALL_TIMEOUT
    assert elapsed < 3 * max(theoretical, 5.0)


def test_a_trickling_organization_listing_stops_discovery(hostile: Harness) -> None:
    env = {"AWS_ENDPOINT_URL_ORGANIZATIONS": hostile.gateway.url}
    with pytest.raises(fleetscan.DiscoveryError, match=r"ListAccounts.*Timeout"):
        hostile.scan(
            lambda request: TRICKLE,
            env=env,
            org=True,
            accounts=(),
            call_timeout=CALL_TIMEOUT,
            max_attempts=ATTEMPTS,
        )
    assert len(hostile.gateway.requests) == ATTEMPTS


# -- answers larger than the API sends: cut while read, an error record ---------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_answer_one_byte_over_the_cap_is_refused_and_one_at_it_is_read(
    hostile: Harness, chunked: bool
) -> None:
    arn = hostile.gateway_arn(0x900)
    listing = _cached_listing([arn]).body
    piece = 64 * 1024 if chunked else None

    def padded(size: int) -> Answer:  # JSON may end in white space: the same page, any size
        return Answer(listing + b" " * (size - len(listing)), piece_bytes=piece)

    def respond(size: int) -> Any:
        return lambda r: padded(size) if r.operation == "ListGateways" else _points(r)

    at_cap = hostile.scan(respond(MAX_ANSWER_BYTES))
    assert at_cap.result.status == "complete"
    assert [g["gateway_arn"] for g in at_cap.records["gateways"]] == [arn]

    over = hostile.scan(respond(MAX_ANSWER_BYTES + 1))
    assert over.result.status == "partial"
    assert over.records["gateways"] == []
    (error,) = over.errors("ListGateways")
    assert (error["error_code"], error["attempts"], error["retryable"]) == (
        "ResponseTooLarge",
        1,
        False,
    )
    assert f"larger than {MAX_ANSWER_BYTES:,} bytes" in error["message"]


def _peak_rss_of_a_scan(harness: Harness, responder: Any, output: Path) -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of ``fleetscan scan`` in a process of its own."""
    harness.gateway.reset(responder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | harness.env
    command = [
        sys.executable, "-m", "fleetscan", "scan", "--accounts", harness.account,
        "--role-name", harness.stack.role_name, "--regions", REGION, "--output", str(output),
        "--quiet", "--max-attempts", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def test_a_100_mb_gateway_name_does_not_reach_memory_or_disk(
    hostile: Harness, tmp_path: Path
) -> None:
    """The name streams in without a length; the answer is cut at the cap while it is read, so
    the scanner's peak memory is that of a scan of a small answer (it was 374 MB), and nothing
    of the name is written."""
    arn = hostile.gateway_arn(0xA00)
    head = (
        b'{"Gateways":[{"GatewayARN":"' + arn.encode() + b'","GatewayType":"CACHED","GatewayName":"'
    )
    huge = Answer(head + b'"}]}', piece_bytes=1 << 20, filler=b"n", filler_times=100_000_000,
                  filler_at=len(head))  # fmt: skip

    def respond(big: bool) -> Any:
        def answer(request: Request) -> Answer:
            if request.operation == "ListGateways":
                return huge if big else _cached_listing([arn])
            return _points(request)

        return answer

    code, small_rss = _peak_rss_of_a_scan(hostile, respond(False), tmp_path / "small")
    assert code == 0
    code, big_rss = _peak_rss_of_a_scan(hostile, respond(True), tmp_path / "big")
    assert code == 3  # partial: the listing failed
    assert big_rss - small_rss < 40 * 1024, (small_rss, big_rss)
    written = sum(f.stat().st_size for f in (tmp_path / "big").rglob("*") if f.is_file())
    assert written < 64 * 1024
    run_id = fleetscan.latest_run(str(tmp_path / "big"), complete_only=False)
    assert run_id is not None
    (error,) = fleetscan.read_records(str(tmp_path / "big"), "errors", run=run_id)
    assert error["error_code"] == "ResponseTooLarge"


# -- text longer than AWS documents: null, and an error record naming the field -------------------


def test_text_longer_than_documented_is_null_and_named(hostile: Harness) -> None:
    at_limit, name_over, type_over, state_over = (hostile.gateway_arn(0xB00 + i) for i in range(4))
    listing = json_answer(
        {
            "Gateways": [
                {"GatewayARN": at_limit, "GatewayType": "CACHED", "GatewayName": "n" * 255,
                 "GatewayOperationalState": "A" * 25, "HostEnvironment": "H" * 64},
                {"GatewayARN": name_over, "GatewayType": "CACHED", "GatewayName": "n" * 256},
                {"GatewayARN": type_over, "GatewayType": "T" * 21, "GatewayName": "t"},
                {"GatewayARN": state_over, "GatewayType": "VTL",
                 "GatewayOperationalState": "A" * 26, "HostEnvironment": "H" * 65},
            ]
        }
    )  # fmt: skip

    outcome = hostile.scan(lambda r: listing if r.operation == "ListGateways" else _points(r))

    assert outcome.result.status == "partial"
    gateways = {g["gateway_arn"]: g for g in outcome.records["gateways"]}
    assert gateways[at_limit]["gateway_name"] == "n" * 255
    assert gateways[at_limit]["gateway_operational_state"] == "A" * 25
    assert gateways[at_limit]["host_environment"] == "H" * 64
    assert gateways[name_over]["gateway_name"] is None
    assert gateways[name_over]["status"] == "scanned"
    assert (gateways[type_over]["gateway_type"], gateways[type_over]["status"]) == (
        None,
        "not_cached",
    )
    assert gateways[state_over]["gateway_operational_state"] is None
    assert gateways[state_over]["host_environment"] is None
    points = {p["gateway_arn"]: p for p in outcome.records["recovery_points"]}
    assert points[at_limit]["gateway_name"] == "n" * 255
    assert points[name_over]["gateway_name"] is None  # its recovery points are still data
    named = sorted(
        (e["gateway_arn"], e["message"].split(" ", 1)[0], e["error_code"])
        for e in outcome.errors("ListGateways")
    )
    assert named == sorted(
        [
            (name_over, "GatewayName", "MalformedResponse"),
            (type_over, "GatewayType", "MalformedResponse"),
            (state_over, "GatewayOperationalState", "MalformedResponse"),
            (state_over, "HostEnvironment", "MalformedResponse"),
        ]
    )
    assert "256 characters long, more than the 255 AWS documents" in next(
        e["message"] for e in outcome.errors("ListGateways", name_over)
    )


# -- Organizations answers: ids checked, names bounded -------------------------------------------


def _organization(accounts: list[dict[str, Any]]) -> Any:
    """Organizations, one root with every account directly under it, and Storage Gateway."""

    def respond(request: Request) -> Answer:
        operation = request.operation.rsplit(".", 1)[-1]
        if operation in ("ListAccounts", "ListAccountsForParent"):
            return json_answer({"Accounts": accounts})
        if operation == "ListRoots":
            return json_answer({"Roots": [{"Id": "r-ab12", "Name": "Root"}]})
        if operation == "ListOrganizationalUnitsForParent":
            return json_answer({"OrganizationalUnits": []})
        if operation == "ListGateways":
            return _cached_listing([])
        return INTERNAL

    return respond


def test_an_account_name_longer_than_documented_is_null_and_named(hostile: Harness) -> None:
    env = {"AWS_ENDPOINT_URL_ORGANIZATIONS": hostile.gateway.url}
    accounts = [{"Id": hostile.account, "Name": "a" * 129, "Status": "ACTIVE"}]

    outcome = hostile.scan(_organization(accounts), env=env, org=True, accounts=())

    assert outcome.result.status == "partial"
    (error,) = outcome.records["errors"]
    assert (error["operation"], error["account_id"], error["error_code"]) == (
        "ListAccounts",
        hostile.account,
        "MalformedResponse",
    )
    assert "Name is 129 characters long, more than the 128" in error["message"]
    (scanned,) = outcome.manifest["summary"]["accounts_scanned"]
    assert (scanned["id"], scanned["name"]) == (hostile.account, None)

    accounts[0]["Name"] = "a" * 128
    outcome = hostile.scan(_organization(accounts), env=env, org=True, accounts=())
    assert outcome.result.status == "complete"
    assert outcome.manifest["summary"]["accounts_scanned"][0]["name"] == "a" * 128


@pytest.mark.parametrize(
    "account_id", ["12345", "../../../etc", "1" * 13, "1" * 1_000_000, 111122223333, None]
)
def test_an_account_id_that_is_not_one_stops_discovery(hostile: Harness, account_id: Any) -> None:
    env = {"AWS_ENDPOINT_URL_ORGANIZATIONS": hostile.gateway.url}
    accounts = [{"Id": account_id, "Name": "x", "Status": "ACTIVE"}]
    with pytest.raises(
        fleetscan.DiscoveryError, match="account Id that is not 12 digits"
    ) as caught:
        hostile.scan(_organization(accounts), env=env, org=True, accounts=())
    assert len(str(caught.value)) < 200


# -- the retry budget is per operation ------------------------------------------------------------


FIXED_KEYS = ReadOnlyCredentials("AKIAFIXEDKEYS0000000", "secret", None)


class FixedKeys:
    """Keys for calls made outside a scan (the hostile endpoint checks no signature)."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return FIXED_KEYS

    def expire(self, stale: ReadOnlyCredentials | None) -> None:
        """Fixed: nothing to refresh."""


async def test_an_operation_out_of_retry_budget_leaves_the_others_theirs(hostile: Harness) -> None:
    """STS timing out at the start of a loaded soak spent the one run-wide budget, and then 352
    units failed for want of a retry. Each operation (each endpoint) has its own now."""
    from fleetscan._aws import AwsClients, acting_as
    from fleetscan._retry import CallFailed
    from fleetscan._scan import Engine

    arn = hostile.gateway_arn(0xC00)
    failed_once: list[str] = []

    def respond(request: Request) -> Answer:
        if request.operation == "ListGateways":
            return INTERNAL  # always: its budget runs out
        if not failed_once:
            failed_once.append(arn)
            return INTERNAL  # once: the retry needs budget
        return _points(request)

    config = fleetscan.ScanConfig(
        accounts=(hostile.account,), role_name="R", regions=(REGION,), max_attempts=2,
        retry_budget_ratio=0.0,
    )  # fmt: skip
    engine = Engine(config, run_id="budget")
    hostile.gateway.reset(respond)
    with _environment(hostile.env), acting_as(FixedKeys()):
        async with AwsClients(
            profile=None, max_pool_connections=4, connect_timeout=5, read_timeout=5
        ) as clients:
            sgw = await clients.storage_gateway(REGION)
            for _ in range(101):  # a retry each: one more than the budget's floor of 100
                with pytest.raises(CallFailed):
                    await engine.call(sgw.list_gateways, "ListGateways")
            assert engine.stats.retries_denied == 1
            answer = await engine.call(
                functools.partial(sgw.list_volume_recovery_points, GatewayARN=arn),
                "ListVolumeRecoveryPoints",
            )
    assert answer["GatewayARN"] == arn
    assert failed_once == [arn]
    assert engine.stats.retries_denied == 1


async def test_the_cap_reads_bodies_not_what_a_head_answer_says_of_an_object(
    hostile: Harness,
) -> None:
    """HeadObject of a 20 MB object says Content-Length 20 MB and sends no body: not too large."""
    from fleetscan._aws import MAX_S3_ANSWER_BYTES
    from fleetscan._sinks._s3io import create_s3_client

    size = MAX_S3_ANSWER_BYTES + 4 * 1024 * 1024
    hostile.gateway.reset(lambda request: Answer(b"o" * size, content_type="text/plain"))
    with _environment({**hostile.env, "AWS_ENDPOINT_URL_S3": hostile.gateway.url}):
        async with create_s3_client(call_timeout=10) as s3:
            head = await s3.head_object(Bucket="bucket", Key="big.ndjson")
            with pytest.raises(ResponseTooLarge):  # a listing that long is not an answer
                await s3.list_objects_v2(Bucket="bucket")
    assert head["ContentLength"] == size
    assert [r.method for r in hostile.gateway.requests] == ["HEAD", "GET"]
