"""EC2 ``DescribeRegions`` (EC2's query protocol, XML) from the fleet model.

Each account has the regions that need no opt-in, plus the opt-in regions it enabled (drawn per
account, and every region where it holds gateways); without ``AllRegions`` only those are listed,
with it every region of the partition, the others as ``not-opted-in``. An account outside the
fleet has only the regions that need no opt-in.

This replaces moto's EC2 for the call: moto built a whole EC2 backend (default VPC, subnets and
some 600 AMIs, each with an EBS snapshot) for every account on its first DescribeRegions, which was
where the first scan against a fresh emulator spent its time.
"""

from __future__ import annotations

from ._fleet import OPT_IN_REGIONS, STORAGE_GATEWAY_REGIONS, Fleet
from ._wire import ApiError, Call, Ec2Protocol, Payload, Service

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
_FILTERS = ("region-name", "endpoint", "opt-in-status")
_KNOWN = frozenset(STORAGE_GATEWAY_REGIONS)
_OPT_IN = frozenset(OPT_IN_REGIONS)
_RESULTS_LIMIT = 4096


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameterValue", message)


def _boolean(params: Payload, name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    lowered = str(value).lower()
    if lowered not in ("true", "false"):
        raise _invalid(f"Value ({value}) for parameter {name} is invalid. Expected a boolean.")
    return lowered == "true"


def _numbered(params: Payload, prefix: str) -> list[str]:
    """``Prefix.1``, ``Prefix.2``… in index order (the query protocol's lists)."""
    found = []
    for key, value in params.items():
        if key.startswith(prefix):
            index = key[len(prefix) :]
            if index.isdigit():
                found.append((int(index), value))
    return [value for _, value in sorted(found)]


def _filters(params: Payload) -> list[tuple[str, set[str]]]:
    """``Filter.N.Name`` / ``Filter.N.Value.M``: (name, accepted values) per filter."""
    filters = []
    numbers = {key.split(".")[1] for key in params if key.startswith("Filter.")}
    for key in sorted(numbers, key=_as_int):
        name = params.get(f"Filter.{key}.Name")
        if name is None:
            raise _invalid("The filter name is missing")
        if name not in _FILTERS:
            raise _invalid(f"The filter '{name}' is invalid")
        values = set(_numbered(params, f"Filter.{key}.Value."))
        filters.append((name, values))
    return filters


def _as_int(text: str) -> int:
    return int(text) if text.isdigit() else -1


class Ec2(Service):
    """DescribeRegions, per account of the fleet."""

    name = "ec2"
    protocol: Ec2Protocol = Ec2Protocol(NAMESPACE)
    auth_errors = {
        "missing": (401, "AuthFailure"),
        "incomplete": (400, "IncompleteSignature"),
        "invalid_signature": (401, "AuthFailure"),
        "unrecognized": (401, "AuthFailure"),
        "expired": (400, "RequestExpired"),
    }

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self.handlers = {"DescribeRegions": self._describe_regions}
        #: Rendered region lists by what decides them (the account's opted-in regions, and the
        #: call's AllRegions, RegionName.N and filters): a scan asks every account the same
        #: question, and the accounts share a handful of opted-in sets.
        self._results: dict[
            tuple[frozenset[str], bool, tuple[str, ...], tuple[tuple[str, frozenset[str]], ...]],
            str,
        ] = {}

    # -- errors -------------------------------------------------------------------------------

    def auth_error(self, kind: str, message: str) -> ApiError:
        status, code = self.auth_errors[kind]
        if code == "AuthFailure":
            message = "AWS was not able to validate the provided access credentials"
        elif code == "RequestExpired":
            message = "Request has expired."
        return ApiError(status, code, message)

    def unknown_operation(self, operation: str) -> ApiError:
        return ApiError(
            400, "InvalidAction", f"The action {operation} is not valid for this web service."
        )

    def throttled(self) -> ApiError:
        return ApiError(503, "RequestLimitExceeded", "Request limit exceeded.")

    def internal_error(self, status: int) -> ApiError:
        return ApiError(500, "InternalError", "An internal error has occurred")

    def access_denied(self, call: Call) -> ApiError:
        return ApiError(
            403, "UnauthorizedOperation", "You are not authorized to perform this operation."
        )

    # -- operations ---------------------------------------------------------------------------

    def _opted_in(self, account_id: str) -> frozenset[str]:
        if self.fleet.account(account_id) is None:
            return frozenset()
        return self.fleet.opted_in_regions(account_id)

    def _describe_regions(self, call: Call) -> bytes:
        params = call.params
        all_regions = _boolean(params, "AllRegions")
        if _boolean(params, "DryRun"):
            raise ApiError(
                412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."
            )
        names = _numbered(params, "RegionName.")
        unknown = [n for n in names if n not in _KNOWN]
        if unknown:
            raise _invalid(f"Invalid region names: {', '.join(unknown)}")
        filters = _filters(params)
        opted_in = self._opted_in(call.account_id)
        key = (
            opted_in,
            all_regions,
            tuple(names),
            tuple((name, frozenset(values)) for name, values in filters),
        )
        result = self._results.get(key)
        if result is None:
            result = self._region_info(opted_in, all_regions, names, filters)
            if len(self._results) >= _RESULTS_LIMIT:
                self._results.clear()
            self._results[key] = result
        return self.protocol.answer("DescribeRegions", result, call.request_id)

    @staticmethod
    def _region_info(
        opted_in: frozenset[str],
        all_regions: bool,
        names: list[str],
        filters: list[tuple[str, set[str]]],
    ) -> str:
        items = []
        for region in STORAGE_GATEWAY_REGIONS:
            if region not in _OPT_IN:
                status = "opt-in-not-required"
            elif region in opted_in:
                status = "opted-in"
            elif all_regions:
                status = "not-opted-in"
            else:
                continue
            if names and region not in names:
                continue
            endpoint = f"ec2.{region}.amazonaws.com"
            values = {"region-name": region, "endpoint": endpoint, "opt-in-status": status}
            if any(values[name] not in wanted for name, wanted in filters):
                continue
            items.append(
                f"<item><regionName>{region}</regionName><regionEndpoint>{endpoint}"
                f"</regionEndpoint><optInStatus>{status}</optInStatus></item>"
            )
        return "<regionInfo>" + "".join(items) + "</regionInfo>"
