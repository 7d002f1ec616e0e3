"""The fleet model: organizations, their accounts and regions, and the ground truth over them.

These are properties of the generated fleet that the emulator's answers and every scan test rely
on: one organization is exactly the fleet earlier versions generated (the tests' fleets did not
change), more organizations split the same members among independent organizations, and the
ground truth says which organization each record belongs to.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from fleetscan.emulator import (
    DEFAULT_REGIONS,
    MANAGEMENT_ACCOUNT_ID,
    NON_OPT_IN_REGIONS,
    OPT_IN_REGIONS,
    STORAGE_GATEWAY_REGIONS,
    Fleet,
    FleetSpec,
)

EPOCH = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-east-1")


def test_one_organization_is_the_fleet_earlier_versions_generated() -> None:
    # Pinned from the single-organization fleet before organizations existed (seed 7): every
    # test fleet keeps its ids, statuses and OUs.
    fleet = Fleet(FleetSpec(seed=7, accounts=12))
    assert (fleet.organization_id, fleet.root_id) == ("o-4ca9c6aaa5", "r-487a")
    assert fleet.management_account_id == MANAGEMENT_ACCOUNT_ID
    assert [ou.id for ou in fleet.ous] == [
        "ou-487a-11403997",
        "ou-487a-0eebc063",
        "ou-487a-d4b2a17b",
        "ou-487a-d0023268",
    ]
    assert [(a.id, a.status, a.ou_id) for a in fleet.accounts[:3]] == [
        ("801023281026", "ACTIVE", "ou-487a-11403997"),
        ("149980213135", "SUSPENDED", "ou-487a-0eebc063"),
        ("850728548772", "ACTIVE", "ou-487a-d4b2a17b"),
    ]
    assert len(fleet.organizations) == 1


def test_every_gateway_and_volume_is_the_one_earlier_versions_generated() -> None:
    # Pinned from the fleet before ids were drawn without random.choice (seed 7, 200 accounts):
    # a faster draw must draw the very same digits, or every test fleet would change.
    fleet = Fleet(FleetSpec(seed=7, accounts=200, epoch=EPOCH))
    digest = hashlib.sha256()
    gateways = 0
    for g in fleet.iter_gateways():
        fields: list[object] = [g.arn, g.name, g.type, g.operational_state, g.host_environment]
        fields += [g.ec2_instance_id, g.software_version, g.connected]
        for v in g.volumes:
            fields.append((v.arn, v.recovery_point_time.isoformat(), v.size_bytes))
            fields.append((v.usage_bytes, v.size_as_string))
        digest.update(repr(fields).encode())
        gateways += 1
    assert gateways == 1451
    assert digest.hexdigest() == (
        "164591f3544babad2cbc5397d3a13cae484fc742d325232207c97b959dde2762"
    )


def test_more_organizations_split_the_same_members_and_what_they_hold() -> None:
    one = Fleet(FleetSpec(seed=7, accounts=10, regions=REGIONS, epoch=EPOCH))
    three = Fleet(FleetSpec(seed=7, accounts=10, organizations=3, regions=REGIONS, epoch=EPOCH))
    assert [a.id for a in three.accounts] == [a.id for a in one.accounts]
    assert three.pairs == one.pairs  # an account holds the same gateways in either fleet
    first = three.organizations[0]
    assert (first.id, first.root_id, first.ous) == (one.organization_id, one.root_id, one.ous)

    organizations = three.organizations
    assert len({o.id for o in organizations}) == 3
    assert len({o.root_id for o in organizations}) == 3
    managements = [o.management.id for o in organizations]
    assert managements[0] == MANAGEMENT_ACCOUNT_ID
    assert len(set(managements)) == 3
    assert not set(managements) & {a.id for a in three.accounts}
    sizes = [len(o.member_ids) for o in organizations]
    assert sum(sizes) == 10
    assert max(sizes) - min(sizes) <= 1
    seen: list[str] = []
    for organization in organizations:
        members = [three.account(i) for i in organization.member_ids]
        assert all(m is not None and m.organization_id == organization.id for m in members)
        assert [m.status for m in members if m is not None].count("SUSPENDED") == 1
        assert {m.ou_id for m in members if m is not None} <= {ou.id for ou in organization.ous}
        assert all(ou.id.startswith(f"ou-{organization.root_id[2:]}-") for ou in organization.ous)
        nested = [ou for ou in organization.ous if ou.parent_id != organization.root_id]
        assert len(nested) == 1
        assert three.organization_of(organization.management.id) == organization
        assert organization.management.ou_id == organization.root_id
        seen += organization.member_ids
    assert seen == [a.id for a in three.accounts]  # contiguous blocks, in order


def test_ground_truth_names_each_records_organization_and_narrows_to_some() -> None:
    fleet = Fleet(FleetSpec(seed=9, accounts=12, organizations=2, regions=REGIONS, epoch=EPOCH))
    truth = fleet.ground_truth()
    assert truth.recovery_points
    for point in truth.recovery_points:
        account = fleet.account(point.account_id)
        assert account is not None
        assert point.organization_id == account.organization_id
    for gateway in truth.gateways:
        account = fleet.account(gateway.account_id)
        assert account is not None
        assert gateway.organization_id == account.organization_id
    assert {p.organization_id for p in truth.recovery_points} == {o.id for o in fleet.organizations}
    for organization in fleet.organizations:
        scanned = (organization.management.id, *organization.member_ids)
        assert truth.organizations[organization.id] == tuple(
            i
            for i in scanned
            if fleet.account(i).active  # type: ignore[union-attr]
        )

    first, second = fleet.organizations
    only_second = fleet.ground_truth(organizations={second.id})
    assert set(only_second.organizations) == {second.id}
    assert {p.organization_id for p in only_second.recovery_points} == {second.id}
    only_first = fleet.ground_truth(organizations=[first.id])
    assert sorted(
        p.volume_arn for p in (*only_first.recovery_points, *only_second.recovery_points)
    ) == sorted(p.volume_arn for p in truth.recovery_points)
    assert len(truth.skipped_accounts) == 2  # one suspended member in each organization


def test_minimum_calls_default_to_every_organization_and_each_accounts_regions() -> None:
    fleet = Fleet(FleetSpec(seed=9, accounts=12, organizations=2, regions=REGIONS, epoch=EPOCH))
    scanned = fleet.scanned_accounts()
    assert {o.management.id for o in fleet.organizations} <= set(scanned)
    assert len(scanned) == 2 + sum(1 for a in fleet.accounts if a.active)
    minimum = fleet.minimum_calls()
    assert minimum == fleet.minimum_calls(scanned)
    pairs = sum(len(fleet.enabled_regions(a)) for a in scanned)
    assert minimum["ListGateways"] >= pairs  # at least one page per (account, enabled region)
    cached = [g for g in fleet.ground_truth().gateways if g.gateway_type == "CACHED"]
    assert minimum["ListVolumeRecoveryPoints"] == len(cached)


def test_each_account_has_the_regions_it_opted_in_to_and_those_it_uses() -> None:
    none = Fleet(FleetSpec(seed=3, accounts=30, regions=REGIONS, opt_in_fraction=0.0))
    for account in none.accounts:
        used = {r for (a, r) in none.pairs if a == account.id}
        assert set(none.enabled_regions(account.id)) == set(NON_OPT_IN_REGIONS) | used
    assert any(r in OPT_IN_REGIONS for _, r in none.pairs)  # ap-east-1 holds gateways
    every = Fleet(FleetSpec(seed=3, accounts=5, regions=REGIONS, opt_in_fraction=1.0))
    assert all(every.enabled_regions(a.id) == STORAGE_GATEWAY_REGIONS for a in every.accounts)
    default = Fleet(FleetSpec(seed=3, accounts=30, regions=DEFAULT_REGIONS))
    assert len({default.enabled_regions(a.id) for a in default.accounts}) > 1  # per account


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"organizations": 0}, "at least one organization"),
        ({"accounts": 2, "organizations": 3}, "3 organizations need at least as many"),
        ({"opt_in_fraction": 1.5}, "opt_in_fraction"),
    ],
)
def test_impossible_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetSpec(**changes)  # type: ignore[arg-type]
