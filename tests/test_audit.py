"""The audit as a library: real scans of the emulated fleet, judged and compared with ground truth.

The fleet's ground truth knows each recovery point's age at the fleet's epoch; a scan sees it
older by the time between the epoch and the scan, which the run's manifest bounds (start, end).
Every objective used here lies hours away from any volume's age (the fleet's fresh volumes are
under 6 h old, its stale ones over 26 h), and :func:`_expect` checks both bounds agree, so no
timing can flip a status.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import fleetscan
from fleetscan import ConfigError
from fleetscan._audit import (
    FINDING_FIELDS,
    AuditResult,
    Finding,
    Policy,
    audit,
    audit_to_dir,
    load_policy,
    parse_duration,
)
from fleetscan._records import parse_time
from fleetscan._sinks import find_manifest, read_manifest
from fleetscan.emulator import Fleet, FleetSpec, start_stack
from fleetscan.emulator._faults import FaultRule, Faults

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2")
HOUR = 3600
#: Between the fleet's fresh (< 6 h) and stale (> 26 h) recovery points.
TWELVE_HOURS = 12 * HOUR
#: Older than any recovery point of the fleet (at most 45 days).
LENIENT = 2000 * HOUR
#: Among the stale ages of seed 7 with hours to spare (checked by _assert_clear).
MIDDLE = 100 * HOUR
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Scanned:
    fleet: Fleet
    output: Path
    complete: fleetscan.ScanResult
    partial: fleetscan.ScanResult
    #: The (account, region) that answered AccessDenied in the partial run.
    denied: tuple[str, str]


def _scan(config: fleetscan.ScanConfig) -> fleetscan.ScanResult:
    return anyio.run(fleetscan.run_scan, config, backend="asyncio")


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scanned]:
    """Two runs of one fleet in one directory: a complete one, then a newer partial one.

    The partial run had one (account, region) denied and tried the suspended account too, so it
    holds every kind of unknown: offline gateways, a failed region, an account never entered.
    Module-scoped: the audits below only read these runs.
    """
    spec = FleetSpec(seed=7, accounts=12, regions=REGIONS)
    output = tmp_path_factory.mktemp("runs")
    home = tmp_path_factory.mktemp("aws-home")
    with start_stack(spec) as stack, pytest.MonkeyPatch.context() as env:
        for key in list(os.environ):
            if key.startswith("AWS_"):
                env.delenv(key)
        for key, value in stack.env().items():
            env.setenv(key, value)
        env.setenv("AWS_CONFIG_FILE", str(home / "no-config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-credentials"))
        config = fleetscan.ScanConfig(
            org=True, role_name=stack.role_name, regions=REGIONS, output=str(output)
        )
        complete = _scan(config)
        denied = sorted(stack.fleet.pairs)[1]
        stack.emulator.faults = Faults(
            [FaultRule(account_id=denied[0], region=denied[1], access_denied=True)]
        )
        partial = _scan(
            fleetscan.ScanConfig(
                org=True,
                include_inactive=True,
                role_name=stack.role_name,
                regions=REGIONS,
                output=str(output),
            )
        )
        assert (complete.status, partial.status) == ("complete", "partial")
        yield Scanned(stack.fleet, output, complete, partial, denied)


# -- expectations from ground truth ------------------------------------------------------------


def _offsets(fleet: Fleet, manifest: dict[str, Any]) -> tuple[float, float]:
    """Bounds on (scan time - fleet epoch) for every record of the run."""
    started, ended = parse_time(manifest["started_at"]), parse_time(manifest["ended_at"])
    assert started is not None
    assert ended is not None
    epoch = fleet.spec.epoch
    return (started - epoch).total_seconds(), (ended - epoch).total_seconds() + 0.002


def _expect(age_at_epoch: float, objective: int, offsets: tuple[float, float]) -> str:
    early, late = (age_at_epoch + offset > objective for offset in offsets)
    assert early == late, f"objective {objective}s is too close to a volume aged {age_at_epoch}s"
    return "stale" if early else "compliant"


def _assert_clear(fleet: Fleet, objectives: set[int]) -> None:
    """No recovery point within an hour of an objective: the test cannot depend on timing."""
    for rp in fleet.ground_truth(regions=REGIONS).recovery_points:
        for objective in objectives:
            assert abs(rp.age_seconds - objective) > HOUR, (rp.volume_arn, objective)


def _accounts_listed(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's list of the accounts scanned (id, name, status, OU placement)."""
    summary = manifest["summary"]
    listed = summary.get("accounts")
    listed = listed if isinstance(listed, list) else summary.get("accounts_scanned")
    assert isinstance(listed, list)
    return listed


def _manifest(scanned: Scanned, result: fleetscan.ScanResult) -> dict[str, Any]:
    return read_manifest(find_manifest(scanned.output, result.run_id))


async def _audit(
    source: Path | str, policy: Policy, run_id: str | None = None
) -> tuple[AuditResult, list[Finding]]:
    found: list[Finding] = []
    result = await audit(str(source), policy, run_id=run_id, on_finding=found.append)
    return result, found


def _by_kind(findings: list[Finding]) -> dict[str, dict[Any, Finding]]:
    out: dict[str, dict[Any, Finding]] = {"volume": {}, "gateway": {}, "unit": {}, "run": {}}
    for f in findings:
        key: Any = {
            "volume": f.volume_arn,
            "gateway": f.gateway_arn,
            "unit": (f.account_id, f.region),
            "run": None,
        }[f.kind]
        assert key not in out[f.kind], f"two findings for {key}"
        out[f.kind][key] = f
    return out


# -- the sets ----------------------------------------------------------------------------------


async def test_max_age_finds_exactly_the_stale_compliant_and_unknown_volumes(
    scanned: Scanned,
) -> None:
    fleet = scanned.fleet
    _assert_clear(fleet, {TWELVE_HOURS})
    offsets = _offsets(fleet, _manifest(scanned, scanned.partial))
    result, findings = await _audit(
        scanned.output, Policy.single("12h"), run_id=scanned.partial.run_id
    )
    truth = fleet.ground_truth(regions=REGIONS)
    denied = scanned.denied
    kinds = _by_kind(findings)

    want = {
        rp.volume_arn: _expect(rp.age_seconds, TWELVE_HOURS, offsets)
        for rp in truth.recovery_points
        if (rp.account_id, rp.region) != denied
    }
    got = {arn: f.status for arn, f in kinds["volume"].items()}
    assert got == want
    assert set(Counter(want.values())) == {"stale", "compliant"}
    # The denied region's volumes are not guessed at: its unit is one unknown finding.
    assert any((rp.account_id, rp.region) == denied for rp in truth.recovery_points)

    offline = {
        arn for (account, region, arn, _) in truth.gateway_errors if (account, region) != denied
    }
    assert set(kinds["gateway"]) == offline
    assert {f.error_code for f in kinds["gateway"].values()} == {"GatewayNotConnected"}
    (suspended,) = [a.id for a in fleet.accounts if not a.active]
    assert set(kinds["unit"]) == {denied, (suspended, None)}
    assert kinds["unit"][denied].error_code == "AccessDeniedException"
    assert kinds["unit"][(suspended, None)].operation == "AssumeRole"
    assert not kinds["run"]
    assert all(f.status == "unknown" for k in ("gateway", "unit") for f in kinds[k].values())

    # Each age is the record's own (taken when scanned), within the run's window.
    by_arn = {rp.volume_arn: rp for rp in truth.recovery_points}
    for arn, finding in kinds["volume"].items():
        assert finding.age_seconds is not None
        drift = finding.age_seconds - by_arn[arn].age_seconds
        assert offsets[0] - 0.002 <= drift <= offsets[1] + 0.002
        assert (finding.objective_seconds, finding.rule) == (TWELVE_HOURS, "default")
        assert list(finding.as_json()) == list(FINDING_FIELDS)
    names = {a.id: a.name for a in fleet.accounts}
    assert all(f.account_name == names[f.account_id] for f in findings if f.account_id)

    counts = Counter(f.status for f in findings)
    assert result.counts == counts
    assert result.exit_code() == 4
    assert result.exit_code("stale") == 4
    assert result.exit_code("none") == 0
    assert [f.volume_arn for f in result.stale] == sorted(
        (f.volume_arn for f in findings if f.status == "stale"),
        key=lambda arn: -(kinds["volume"][arn].overdue_seconds),
    )

    # Re-auditing the same data later gives the same answer, to the byte.
    _, again = await _audit(scanned.output, Policy.single("12h"), run_id=scanned.partial.run_id)
    assert [f.as_json() for f in again] == [f.as_json() for f in findings]


async def test_the_newest_run_is_judged_even_partial_with_its_gaps_unknown(
    scanned: Scanned,
) -> None:
    # A complete run, then a newer partial one: the verdict is about the newest evidence.
    for run_id in (None, "latest"):
        result, findings = await _audit(scanned.output, Policy.single("2000h"), run_id=run_id)
        assert (result.run_id, result.run_status) == (scanned.partial.run_id, "partial")
        assert result.newer_runs == []
        kinds = _by_kind(findings)
        assert kinds["unit"][scanned.denied].status == "unknown"
        truth = scanned.fleet.ground_truth(regions=REGIONS)
        judged = {
            rp.volume_arn
            for rp in truth.recovery_points
            if (rp.account_id, rp.region) != scanned.denied
        }
        assert set(kinds["volume"]) == judged
        assert result.scan_age_seconds is not None
        assert 0 < result.scan_age_seconds < 3600
        assert not result.too_old


async def test_an_older_run_judged_names_the_newer_one_and_why(scanned: Scanned) -> None:
    partial = scanned.partial.run_id
    named, _ = await _audit(scanned.output, Policy.single("2000h"), run_id=scanned.complete.run_id)
    complete_only = await audit(str(scanned.output), Policy.single("2000h"), require_complete=True)
    for result, why in ((named, "--run named an older run"), (complete_only, "--require-complete")):
        assert result.run_id == scanned.complete.run_id
        ((newer),) = result.newer_runs
        assert (newer.run_id, newer.status) == (partial, "partial")
        assert why in newer.reason
        assert any(partial in warning for warning in result.warnings)
    with pytest.raises(ConfigError) as caught:
        await audit(str(scanned.output), Policy.single("1d"), run_id=partial, require_complete=True)
    assert caught.value.field == "--require-complete"


async def test_the_complete_run_with_only_unknowns_exits_5(scanned: Scanned) -> None:
    result, findings = await _audit(scanned.output, Policy.single("2000h"), scanned.complete.run_id)
    assert result.run_status == "complete"
    truth = scanned.fleet.ground_truth(regions=REGIONS)
    kinds = _by_kind(findings)
    assert set(kinds["volume"]) == {rp.volume_arn for rp in truth.recovery_points}
    assert {f.status for f in kinds["volume"].values()} == {"compliant"}
    assert set(kinds["gateway"]) == {arn for (_, _, arn, _) in truth.gateway_errors}
    assert not kinds["unit"]
    assert result.exit_code() == 5
    assert result.exit_code("unknown") == 5
    assert result.exit_code("stale") == 0


async def test_evidence_older_than_max_scan_age_judges_nothing(
    scanned: Scanned, tmp_path: Path
) -> None:
    # The complete run, as if it had been scanned three weeks ago.
    weeks_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=21)
    old = _copy_run(
        scanned,
        tmp_path / "old",
        started_at=weeks_ago.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        ended_at=(weeks_ago + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    result = await audit_to_dir(str(old), Policy.single("12h"), report_dir=reports)
    findings = [orjson.loads(line) for line in (reports / "findings.ndjson").read_bytes().split()]
    assert result.too_old
    assert result.scan_age_seconds is not None
    assert result.scan_age_seconds > 20 * 86400
    assert {f["status"] for f in findings} == {"unknown"}
    assert result.counts["unknown"] == len(findings) > len(scanned.fleet.accounts)
    assert {f.error_code for f in result.unknown if f.kind == "volume"} == {"EvidenceTooOld"}
    assert result.exit_code() == 5  # stale volumes too, but their evidence proves nothing now
    assert any("evidence too old" in warning for warning in result.warnings)
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert "evidence too old" in markdown
    assert "too old, every finding unknown" in markdown
    # With no limit (re-auditing the record of an old run), the run's own answer.
    again = await audit(str(old), Policy.single("12h"), max_scan_age=None)
    assert not again.too_old
    assert again.counts["stale"] > 0
    assert again.exit_code() == 4
    fresh_enough = await audit(str(old), Policy.single("12h"), max_scan_age=30 * 86400)
    assert fresh_enough.counts == again.counts


#: An account of seed 7 with no fresh recovery point aged 2h37m-3h05m: STRICT splits them.
CRITICAL = "850728548772"
STRICT = 170 * 60

# -- policies -------------------------------------------------------------------------------


def _ou_chain(fleet: Fleet, account_id: str) -> list[str]:
    account = fleet.account(account_id)
    if account is None:  # the management account sits at the root
        return [fleet.root_id]
    parents = {ou.id: ou.parent_id for ou in fleet.ous}
    chain = [account.ou_id]
    while chain[-1] in parents:
        chain.append(parents[chain[-1]])
    return chain[::-1]


def _write_policy(path: Path, fleet: Fleet, account: str) -> Path:
    production, _staging, _sandbox_ou, production_eu = fleet.ous
    assert production_eu.parent_id == production.id
    path.write_text(
        f"""
max_age = "12h"

[[rules]]
name = "production"
ou = "{production.id}"
max_age = "2000h"

[[rules]]
name = "production-eu"
ou = ["{production_eu.id}"]
region = "ap-southeast-2"
max_age = "1000h"

[[rules]]
name = "critical-account"
account = "{account}"
max_age = "170m"

[[rules]]
name = "us-east-1"
region = "us-east-1"
max_age = "2000h"

[[rules]]
name = "lab-gateways-lenient"
gateway_name = ["us-west-2-gw-000[2-9]", "us-west-2-gw-001*"]
max_age = "2000h"

[[rules]]
name = "lab-gateways"
gateway_name = "us-west-2-gw-000[2-9]"
max_age = "100h"
""",
        encoding="utf-8",
    )
    return path


async def test_policy_overrides_by_ou_account_region_and_name_most_specific_wins(
    scanned: Scanned, tmp_path: Path
) -> None:
    fleet = scanned.fleet
    production, _staging, _sandbox_ou, production_eu = fleet.ous
    critical = CRITICAL
    assert fleet.account(critical) is not None
    policy = load_policy(_write_policy(tmp_path / "policy.toml", fleet, critical))
    objectives = {
        "lab-gateways": MIDDLE,
        "lab-gateways-lenient": LENIENT,
        "critical-account": STRICT,
        "production-eu": 1000 * HOUR,
        "production": LENIENT,
        "us-east-1": LENIENT,
        "default": TWELVE_HOURS,
    }

    def expected_rule(account_id: str | None, region: str | None, gateway: str | None) -> str:
        """The documented precedence, restated: name, account, deepest OU, region, default."""
        chain = _ou_chain(fleet, account_id) if account_id else []
        if gateway and fnmatch.fnmatchcase(gateway, "us-west-2-gw-000[2-9]"):
            return "lab-gateways"  # ties with lab-gateways-lenient: the stricter wins
        if gateway and fnmatch.fnmatchcase(gateway, "us-west-2-gw-001*"):
            return "lab-gateways-lenient"
        if account_id == critical:
            return "critical-account"
        if production_eu.id in chain and region == "ap-southeast-2":
            return "production-eu"
        if production.id in chain:
            return "production"
        if region == "us-east-1":
            return "us-east-1"
        return "default"

    offsets = _offsets(fleet, _manifest(scanned, scanned.complete))
    result, findings = await _audit(scanned.output, policy, run_id=scanned.complete.run_id)
    truth = fleet.ground_truth(regions=REGIONS)
    names = {g.arn: g.name for g in fleet.iter_gateways(REGIONS)}
    want = {}
    for rp in truth.recovery_points:
        rule = expected_rule(rp.account_id, rp.region, names[rp.gateway_arn])
        want[rp.volume_arn] = (
            rule,
            objectives[rule],
            _expect(rp.age_seconds, objectives[rule], offsets),
        )
        # Each volume's age is minutes away from its own objective: timing cannot flip it.
        assert abs(rp.age_seconds - objectives[rule]) > 10 * 60, rp
    kinds = _by_kind(findings)
    got = {arn: (f.rule, f.objective_seconds, f.status) for arn, f in kinds["volume"].items()}
    assert got == want
    for arn, finding in kinds["gateway"].items():
        account_id, region = finding.account_id, finding.region
        assert finding.rule == expected_rule(account_id, region, names[arn])
    # Every override changed something: each rule judged volumes, and moved some away from
    # what 12h alone would say (the critical account's stricter rule towards stale).
    assert {rule for rule, _, _ in want.values()} == set(objectives)
    plain = {
        rp.volume_arn: _expect(rp.age_seconds, TWELVE_HOURS, offsets)
        for rp in truth.recovery_points
    }
    for rule in objectives.keys() - {"default"}:
        moved = [arn for arn, (r, _, status) in want.items() if r == rule and status != plain[arn]]
        assert moved, f"rule {rule} judged nothing differently from the default"
    assert {r.name: r.counts["stale"] for r in result.rules.values()} == {
        rule: sum(1 for r, _, s in want.values() if r == rule and s == "stale")
        for rule in objectives
    }


def test_example_policy_loads_and_explains_itself() -> None:
    policy = load_policy(REPO / "configs" / "audit-policy.example.toml")
    assert policy.default_seconds == 24 * HOUR
    by_name = {rule.name: rule for rule in policy.rules}
    assert by_name["production"].objective_seconds == 4 * HOUR
    assert by_name["sandbox"].accounts == ("111122223333", "444455556666")
    assert by_name["lab-gateways"].gateway_names == ("lab-*",)
    # The nested OU's rule beats its parent's for an account placed under both.
    chain = ("r-abcd", "ou-abcd-11111111", "ou-abcd-22222222")
    objective = policy.objective_for(
        account_id="999988887777", ou_ids=chain, region="eu-west-1", gateway_name="gw-1"
    )
    assert (objective.rule, objective.seconds) == ("production-eu-replicated", 12 * HOUR)
    objective = policy.objective_for(
        account_id="111122223333", ou_ids=chain, region="eu-west-1", gateway_name="lab-7"
    )
    assert objective.rule == "lab-gateways"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("4h", 14400), ("7d", 604800), (" 24H ", 86400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["24", "1.5h", "0h", "-1h", "4 hours", "", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('maxage = "24h"', "maxage"),
        ('max_age = "24x"', "max_age"),
        ("max_age = 24", "max_age"),
        ('[[rules]]\nname = "x"\nmax_age = "1h"\naccount = "1"', "max_age"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\nacount = "111122223333"', "rules[0].acount"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\naccount = "111122223333"', "rules[0].max_age"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"\naccount = "1234"', "account"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"\nou = "prod"', "rules[0].ou"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"\nregion = "mars"', "region"),
        ('max_age = "1d"\n[[rules]]\nname = "x"\nmax_age = "1h"', "rules[0]"),
        ('max_age = "1d"\n[[rules]]\nmax_age = "1h"\nregion = "eu-west-1"', "rules[0].name"),
        (
            'max_age = "1d"\n'
            + '[[rules]]\nname = "x"\nmax_age = "1h"\nregion = "eu-west-1"\n' * 2,
            "rules[1].name",
        ),
        ('max_age = "1d"\nrules = 3', "rules"),
        ("max_age = ", "invalid TOML"),
    ],
)
def test_bad_policy_names_the_key(tmp_path: Path, body: str, key: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(body + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert key in str(caught.value)
    assert str(path) in str(caught.value)


# -- runs that cannot be trusted whole -----------------------------------------------------------


def _copy_run(scanned: Scanned, target: Path, **manifest_changes: Any) -> Path:
    """A copy of the complete run whose manifest says something else (a later fleetscan's
    interruption, or an older fleetscan that recorded no OU placement)."""
    shutil.copytree(scanned.output, target)
    path = find_manifest(target, scanned.complete.run_id)
    manifest = orjson.loads(path.read_bytes())
    for key, value in manifest_changes.items():
        if value is None:
            manifest["summary"].pop(key, None)
        else:
            manifest[key] = value
    path.write_bytes(orjson.dumps(manifest))
    for other in target.glob("manifests/dt=*/*.json"):
        if other != path:
            other.unlink()
    return target


async def test_an_interrupted_run_is_never_compliant(scanned: Scanned, tmp_path: Path) -> None:
    copy = _copy_run(scanned, tmp_path / "copy", status="interrupted")
    with pytest.raises(ConfigError) as caught:
        await audit(str(copy), Policy.single("2000h"), require_complete=True)
    assert caught.value.field == "--require-complete"
    assert "1 interrupted" in str(caught.value)
    for run_id in (None, scanned.complete.run_id):
        result, findings = await _audit(copy, Policy.single("2000h"), run_id=run_id)
        assert result.run_id == scanned.complete.run_id
        (run_finding,) = _by_kind(findings)["run"].values()
        assert run_finding.status == "unknown"
        assert run_finding.error_code == "RunInterrupted"
        assert run_finding.account_id is None
        assert result.counts["stale"] == 0
        assert result.exit_code() == 5
        assert any("is interrupted" in warning for warning in result.warnings)


async def test_a_failed_newest_run_is_judged_not_skipped_for_an_older_one(
    scanned: Scanned, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(scanned.output, copy)
    path = find_manifest(copy, scanned.partial.run_id)
    manifest = orjson.loads(path.read_bytes())
    path.write_bytes(orjson.dumps(manifest | {"status": "failed"}))
    result, findings = await _audit(copy, Policy.single("2000h"))
    assert (result.run_id, result.run_status) == (scanned.partial.run_id, "failed")
    assert _by_kind(findings)["run"][None].error_code == "RunFailed"
    assert result.exit_code() == 5
    assert any(f"run {scanned.partial.run_id} is failed" in w for w in result.warnings)
    older = await audit(str(copy), Policy.single("2000h"), require_complete=True)
    assert older.run_id == scanned.complete.run_id
    assert [(n.run_id, n.status) for n in older.newer_runs] == [(scanned.partial.run_id, "failed")]


async def test_ou_rules_on_a_run_without_placement_warn(scanned: Scanned, tmp_path: Path) -> None:
    copy = _copy_run(scanned, tmp_path / "copy", accounts_scanned=None, accounts=None)
    fleet = scanned.fleet
    policy = load_policy(_write_policy(tmp_path / "policy.toml", fleet, CRITICAL))
    result, findings = await _audit(copy, policy)
    assert any("OU" in warning for warning in result.warnings)
    assert not {"production", "production-eu"} & {f.rule for f in findings}


async def test_unknown_run_id_is_bad_input(scanned: Scanned) -> None:
    with pytest.raises(ConfigError) as caught:
        await audit(str(scanned.output), Policy.single("1d"), run_id="20000101T000000Z-000000")
    assert caught.value.field == "--run"


# -- reports -------------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _Html(HTMLParser):
    """Checks nesting (every element closed, in order) and collects tables and SVG shapes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.tags: Counter[str] = Counter()
        self.tables: dict[str, list[list[str]]] = {}
        self.doctype = ""
        self.fills: Counter[str] = Counter()
        self.attributes: list[tuple[str, str | None]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs)
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attributes += attrs
        values = dict(attrs)
        if tag == "table":
            self._table = values.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "circle" and "svg" in self.open:
            self.fills[values.get("fill") or ""] += 1

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _markdown_table(text: str, title: str) -> list[list[str]]:
    lines = text.split(f"## {title}\n", 1)[1].splitlines()
    table_end = next((i for i, line in enumerate(lines[1:]) if line.startswith("## ")), len(lines))
    rows = [line for line in lines[1 : table_end + 1] if line.startswith("|")]
    parsed = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    return [row for row in parsed if not set("".join(row)) <= {"-", "|"}]


async def test_reports_hold_the_same_numbers_and_parse(scanned: Scanned, tmp_path: Path) -> None:
    fleet = scanned.fleet
    policy = load_policy(_write_policy(tmp_path / "policy.toml", fleet, CRITICAL))
    reports = tmp_path / "reports"
    reports.mkdir()
    result = await audit_to_dir(
        str(scanned.output), policy, run_id=scanned.partial.run_id, report_dir=reports
    )
    assert sorted(p.name for p in reports.iterdir()) == [
        "findings.ndjson",
        "junit.xml",
        "report.html",
        "report.md",
    ]

    lines = (reports / "findings.ndjson").read_bytes().splitlines()
    findings = [orjson.loads(line) for line in lines]
    assert all(list(f) == list(FINDING_FIELDS) for f in findings)
    status = Counter(f["status"] for f in findings)
    assert set(status) == {"compliant", "stale", "unknown"}
    volumes = Counter(f["status"] for f in findings if f["volume_arn"])
    unknown_gateways = sum(1 for f in findings if f["status"] == "unknown" and f["gateway_arn"])
    unknown_units = status["unknown"] - unknown_gateways
    assert unknown_units == 2  # the denied region and the suspended account
    per_account: dict[str, Counter[str]] = {}
    for f in findings:
        per_account.setdefault(f["account_id"], Counter())[f["status"]] += 1
    manifest = _manifest(scanned, scanned.partial)
    expected_status_rows = [
        ["compliant", f"{volumes['compliant']:,}", "0", "0", f"{status['compliant']:,}"],
        ["stale", f"{volumes['stale']:,}", "0", "0", f"{status['stale']:,}"],
        ["unknown", "0", str(unknown_gateways), str(unknown_units), str(status["unknown"])],
        [
            "total",
            f"{sum(volumes.values()):,}",
            str(unknown_gateways),
            str(unknown_units),
            f"{len(findings):,}",
        ],
    ]

    # HTML: well formed, self-contained, with the chart and every table.
    page = _Html()
    page.feed((reports / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert page.problems == []
    assert page.open == []
    assert page.doctype.lower() == "doctype html"
    assert (page.tags["svg"], page.tags["style"]) == (1, 1)
    assert page.tags["script"] + page.tags["link"] + page.tags["img"] == 0
    assert not [v for k, v in page.attributes if k in ("src", "href")]
    assert page.fills["#c62828"] >= 1  # stale dots
    assert page.fills["#2e7d32"] >= 1  # compliant dots
    tables = page.tables
    # The complete run before this one: what changed since then is in the reports too.
    assert set(tables) == {"evidence", "status", "accounts", "regions", "rules", "stale"} | {
        "unknown",
        "files",
        "changes",
        "changed",
    }
    assert tables["status"][1:] == expected_status_rows
    assert len(tables["stale"]) - 1 == status["stale"]
    assert len(tables["unknown"]) - 1 == status["unknown"]
    account_rows = {row[0]: row for row in tables["accounts"][1:]}
    assert set(account_rows) == {a["id"] for a in _accounts_listed(manifest)}
    for account_id, counts in per_account.items():
        row = account_rows[account_id]
        assert row[3:6] == [f"{counts[s]:,}" for s in ("compliant", "stale", "unknown")]
    listed = {(row[1], row[4]) for row in tables["files"][1:]}
    assert listed == {(f["path"], f["sha256"]) for f in manifest["files"]}
    evidence = dict((row[0], row[1]) for row in tables["evidence"])
    assert evidence["run id"] == scanned.partial.run_id
    assert evidence["run status"] == "partial"
    assert evidence["scan window"] == f"{manifest['started_at']} to {manifest['ended_at']}"

    # Markdown: the same numbers, in the same tables.
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert f"{status['stale']} stale, {status['unknown']} unknown" in markdown
    assert _markdown_table(markdown, "Findings by status")[1:] == expected_status_rows
    md_accounts = _markdown_table(markdown, "By account")[1:]
    assert [row[3:6] for row in md_accounts] == [row[3:6] for row in tables["accounts"][1:]]
    assert len(_markdown_table(markdown, "Stale volumes, worst first")) - 1 == status["stale"]

    # JUnit: one test case per account, failing exactly where something is stale or unknown.
    root = ET.parse(reports / "junit.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(account_rows) == int(suite.get("tests", "-1"))
    failing = {a for a, counts in per_account.items() if counts["stale"] or counts["unknown"]}
    failed_cases = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures", "-1")) == int(root.get("failures", "-1")) == len(failing)
    assert {str(c.get("name")).split(" ")[0] for c in failed_cases} == failing
    for case in failed_cases:
        account_id = str(case.get("name")).split(" ")[0]
        failure = case.find("failure")
        assert failure is not None
        counts = per_account[account_id]
        assert failure.get("message") == (
            f"{counts['stale']} stale, {counts['unknown']} unknown, {counts['compliant']} compliant"
        )
        assert len((failure.text or "").splitlines()) == counts["stale"] + counts["unknown"]
    assert result.findings == len(findings)


def test_report_dir_that_cannot_be_created_is_bad_input(tmp_path: Path) -> None:
    from fleetscan._audit._reports import prepare_report_dir

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        prepare_report_dir(blocker / "reports")
    assert caught.value.field == "--report-dir"


def test_age_is_measured_at_scan_time_not_audit_time() -> None:
    """A record's age comes from its own fields: the audit never looks at the clock for it."""
    from fleetscan._audit._evaluate import _volume_finding

    row = {
        "account_id": "111122223333",
        "region": "eu-west-1",
        "scanned_at": "2020-01-02T00:00:00.000Z",
        "recovery_point_time": "2020-01-01T00:00:00.000Z",
        "recovery_point_age_seconds": None,  # not recorded: measured from scanned_at
        "volume_arn": "arn:aws:storagegateway:eu-west-1:111122223333:gateway/sgw-1/volume/vol-1",
    }
    finding = _volume_finding("run", row)
    assert finding.age_seconds == dt.timedelta(days=1).total_seconds()
