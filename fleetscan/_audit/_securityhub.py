"""Importing an audit's ASFF findings into AWS Security Hub, in each member account and region.

With the account's own default product, Security Hub accepts a finding only from the account it
is about, so the import assumes a role in each member account (the scan's, unless told
otherwise, with a session policy allowing nothing but the three calls below) and works in the
region of each volume:

1. ``DescribeHub``: Security Hub not enabled there is one clear problem, not a stack trace;
2. ``GetFindings``: fleetscan's active findings there (by product and GeneratorId; filtered again
   here, as not every endpoint applies filters). Each keeps its first ``CreatedAt``; those this
   audit no longer makes (the volume is gone) are archived (``RecordState: ARCHIVED``), as Prowler
   does, except where this audit could not look (an unknown unit or gateway: absence proves
   nothing there);
3. ``BatchImportFindings``, 100 findings a call: throttles and transient failures are retried
   with the scan's retry policy, and so are findings answered in ``FailedFindings`` with a
   transient code. What still fails is a problem, counted, that the command turns into exit 6.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from .._config import ScanConfig
from .._records import format_time
from .._retry import THROTTLE_CODES, TRANSIENT_CODES, Backoff
from ._asff import GENERATOR_PREFIX, is_fleetscan_finding, product_arn

if TYPE_CHECKING:
    from .._scan import Engine

#: BatchImportFindings takes at most 100 findings a call; GetFindings answers at most 100.
BATCH = 100
#: Accounts imported into at once (each works through its regions one at a time).
ACCOUNTS_AT_ONCE = 8
#: The fields an archived finding is sent with: what BatchImportFindings requires, and ours.
_ARCHIVE_FIELDS = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "Severity",
    "Title",
    "Description",
    "Resources",
    "Compliance",
    "Region",
    "FindingProviderFields",
)
_RETRY_FAILED = THROTTLE_CODES | TRANSIENT_CODES


@dataclass(frozen=True)
class ImportProblem:
    """What could not be done in one account and region, and how many findings it left out."""

    account_id: str
    region: str | None
    operation: str
    error_code: str
    message: str
    findings: int

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "region": self.region,
            "operation": self.operation,
            "error_code": self.error_code,
            "message": self.message,
            "findings_not_imported": self.findings,
        }


@dataclass
class ImportResult:
    imported: int = 0
    archived: int = 0
    #: (account, region) pairs imported into.
    places: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    #: Calls made, by operation (what configs/iam/security-hub-import.json must allow).
    api_calls: dict[str, int] = field(default_factory=dict)

    @property
    def not_imported(self) -> int:
        return sum(p.findings for p in self.problems)

    def as_json(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "archived": self.archived,
            "places": self.places,
            "not_imported": self.not_imported,
            "problems": [p.as_json() for p in self.problems],
            "api_calls": self.api_calls,
        }


@dataclass
class _Place:
    """One account and region: the findings to import there, and what must not be archived."""

    account_id: str
    region: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    #: This audit could not read the unit: nothing there may be archived.
    blind: bool = False


def plan_places(
    findings: list[dict[str, Any]],
    blind_units: frozenset[tuple[str, str]],
    scanned: frozenset[tuple[str, str]] = frozenset(),
) -> dict[tuple[str, str], _Place]:
    """Where to go: every account and region with a finding, and every one ``scanned`` (its
    volumes may all be gone: their findings are archived there)."""
    places = {key: _Place(*key) for key in sorted(scanned)}
    for item in findings:
        key = (str(item["AwsAccountId"]), str(item["Region"]))
        place = places.setdefault(key, _Place(*key))
        place.findings.append(item)
    for key in blind_units:
        if key in places:
            places[key].blind = True
    return places


async def import_findings(
    findings: list[dict[str, Any]],
    config: ScanConfig,
    *,
    role_name: str,
    blind_units: frozenset[tuple[str, str]] = frozenset(),
    blind_gateways: frozenset[str] = frozenset(),
    scanned: frozenset[tuple[str, str]] = frozenset(),
    now: dt.datetime | None = None,
) -> ImportResult:
    """Import ``findings`` (ASFF, from :func:`~._asff.asff_findings`) into each finding's own
    account and region through ``role_name``, and archive fleetscan's findings there that this
    audit no longer makes, except in ``blind_units`` and of ``blind_gateways`` (this audit could
    not see them). ``scanned`` adds the places the run read that hold no finding now (where
    Security Hub is off, there is nothing to archive: no problem). ``config`` gives the
    credentials, the partition and the retry policy."""
    from .._aws import AmbientCredentials, AwsClients, acting_as
    from .._credentials import SECURITY_HUB_SESSION_POLICY, RoleAssumer
    from .._discovery import HOME_REGIONS
    from .._retry import CallFailed
    from .._scan import Engine

    importer = _Importer(
        config,
        format_time(now or dt.datetime.now(dt.UTC)),
        blind_gateways,
        Engine(config, run_id="security-hub"),
    )
    by_account: dict[str, list[_Place]] = {}
    for place in plan_places(findings, blind_units, scanned).values():
        by_account.setdefault(place.account_id, []).append(place)
    result = importer.result
    async with AwsClients(
        profile=config.profile,
        max_pool_connections=ACCOUNTS_AT_ONCE * 2,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        call_timeout=config.call_timeout,
    ) as clients:
        ambient = AmbientCredentials(config.profile)
        assumer = RoleAssumer(
            clients,
            ambient=ambient,
            sts_region=HOME_REGIONS.get(config.partition, "us-east-1"),
            session_name=config.role_session_name,
            duration_seconds=config.role_duration_seconds,
            external_id=config.external_id,
            hub_role_arn=config.hub_role_arn,
            call=importer.engine.call,
        )
        slots = anyio.Semaphore(ACCOUNTS_AT_ONCE)

        async def account(account_id: str, places: list[_Place]) -> None:
            arn = f"arn:{config.partition}:iam::{account_id}:role/{role_name}"
            credentials = (
                assumer.credentials_for(arn, SECURITY_HUB_SESSION_POLICY)
                if config.assume_role
                else ambient
            )
            async with slots:
                with acting_as(credentials):
                    for place in sorted(places, key=lambda p: p.region):
                        client = await clients.client("securityhub", place.region)
                        try:
                            await importer.place(place, client)
                        except CallFailed as exc:
                            failure = exc.failure
                            message = failure.message
                            if failure.error_code == "InvalidAccessException":
                                if not place.findings:
                                    continue  # nothing to import, and nothing to archive
                                message = f"Security Hub is not enabled here ({message})"
                            result.problems.append(
                                ImportProblem(
                                    place.account_id, place.region, exc.operation,
                                    failure.error_code, message, len(place.findings),
                                )
                            )  # fmt: skip

        async with anyio.create_task_group() as tg:
            for account_id, places in sorted(by_account.items()):
                tg.start_soon(account, account_id, places)
    result.api_calls = dict(sorted(importer.engine.stats.calls.items()))
    return result


class _Importer:
    """The three steps in one account and region (see the module's docstring)."""

    def __init__(
        self, config: ScanConfig, stamp: str, blind_gateways: frozenset[str], engine: Engine
    ) -> None:
        self.config = config
        self.stamp = stamp
        self.blind_gateways = blind_gateways
        self.engine = engine
        self.backoff = Backoff()
        self.result = ImportResult()

    async def place(self, place: _Place, client: Any) -> None:
        call = self.engine.call
        await call(lambda: client.describe_hub(), "DescribeHub")
        arn = product_arn(self.config.partition, place.region, place.account_id)
        existing = await self._existing(client, arn, place.account_id)
        current = {item["Id"] for item in place.findings}
        batch = [
            item | {"CreatedAt": existing[item["Id"]].get("CreatedAt", item["CreatedAt"])}
            if item["Id"] in existing
            else item
            for item in place.findings
        ]
        archive = [] if place.blind else [
            self._archived(old)
            for found_id, old in sorted(existing.items())
            if found_id not in current and not self._blind(old)
        ]  # fmt: skip
        archived_ids = {item["Id"] for item in archive}
        everything = batch + archive
        for start in range(0, len(everything), BATCH):
            chunk = everything[start : start + BATCH]
            done = await self._import(client, chunk, place)
            self.result.imported += len(done - archived_ids)
            self.result.archived += len(done & archived_ids)
        self.result.places += 1

    async def _existing(self, client: Any, arn: str, account_id: str) -> dict[str, dict[str, Any]]:
        """fleetscan's active findings in this account and region, by Id."""
        filters = {
            "ProductArn": [{"Value": arn, "Comparison": "EQUALS"}],
            "GeneratorId": [{"Value": GENERATOR_PREFIX, "Comparison": "PREFIX"}],
            "RecordState": [{"Value": "ACTIVE", "Comparison": "EQUALS"}],
        }
        found: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": filters, "MaxResults": BATCH}
            if token:
                params["NextToken"] = token
            answer = await self.engine.call(partial(client.get_findings, **params), "GetFindings")
            for item in answer.get("Findings") or []:
                if (
                    isinstance(item, dict)
                    and is_fleetscan_finding(item)
                    and item.get("ProductArn") == arn
                    and item.get("AwsAccountId") == account_id
                    and item.get("RecordState", "ACTIVE") == "ACTIVE"
                ):
                    found[str(item["Id"])] = item
            token = answer.get("NextToken")
            if not token:
                return found

    def _blind(self, old: Mapping[str, Any]) -> bool:
        fields = old.get("ProductFields")
        gateway = fields.get("fleetscan/gateway_arn") if isinstance(fields, dict) else None
        return gateway in self.blind_gateways

    def _archived(self, old: Mapping[str, Any]) -> dict[str, Any]:
        kept = {name: old[name] for name in _ARCHIVE_FIELDS if name in old}
        fields = old.get("ProductFields")
        if isinstance(fields, dict):  # Security Hub adds its own aws/ keys; send back ours only
            kept["ProductFields"] = {
                k: v for k, v in fields.items() if not str(k).startswith("aws/")
            }
        return kept | {"UpdatedAt": self.stamp, "RecordState": "ARCHIVED"}

    async def _import(self, client: Any, chunk: list[dict[str, Any]], place: _Place) -> set[str]:
        """One batch; the findings refused for a transient reason are sent again, up to the
        scan's ``max_attempts``. The ids imported; what could not be is a problem."""
        from .._retry import CallFailed

        def problem(operation: str, code: str, message: str, findings: int) -> None:
            self.result.problems.append(
                ImportProblem(
                    place.account_id, place.region, operation, code, message[:500], findings
                )
            )

        done: set[str] = set()
        pending = chunk
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                answer = await self.engine.call(
                    partial(client.batch_import_findings, Findings=pending), "BatchImportFindings"
                )
            except CallFailed as exc:
                problem(exc.operation, exc.failure.error_code, exc.failure.message, len(pending))
                return done
            failed = {
                str(item.get("Id")): item
                for item in answer.get("FailedFindings") or []
                if isinstance(item, dict)
            }
            done |= {item["Id"] for item in pending if item["Id"] not in failed}
            transient = [
                item
                for item in pending
                if item["Id"] in failed and failed[item["Id"]].get("ErrorCode") in _RETRY_FAILED
            ]
            final = [f for f in failed.values() if f.get("ErrorCode") not in _RETRY_FAILED]
            if final:
                code, message = str(final[0].get("ErrorCode")), str(final[0].get("ErrorMessage"))
                problem("BatchImportFindings", code, message, len(final))
            if not transient:
                return done
            if attempt == self.config.max_attempts:
                first = failed[transient[0]["Id"]]
                code, message = str(first.get("ErrorCode")), str(first.get("ErrorMessage"))
                problem("BatchImportFindings", code, message, len(transient))
                return done
            pending = transient
            await anyio.sleep(self.backoff.delay(attempt))
        return done
