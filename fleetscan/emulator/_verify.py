"""Check a run written by a scan against the fleet's ground truth.

What the demo prints and what the soak benchmark counts: a pipeline built on fleetscan can use it
the same way, to rehearse against the emulated fleet before it meets a real organization.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from .._sinks import iter_records
from ._fleet import Fleet


@dataclass(frozen=True)
class Verification:
    """How a run's recovery points and gateways compare with what the fleet holds."""

    expected: int
    written: int
    missing: int
    duplicated: int
    unexpected: int
    gateways_expected: int
    gateways_written: int
    gateways_missing: int
    gateways_duplicated: int

    @property
    def exact(self) -> bool:
        return not (
            self.missing
            or self.duplicated
            or self.unexpected
            or self.gateways_missing
            or self.gateways_duplicated
        )

    def describe(self) -> str:
        verdict = "matches" if self.exact else "DIFFERS FROM"
        return (
            f"{self.written} recovery points written; the result {verdict} the emulated fleet's "
            f"ground truth ({self.expected} expected, {self.missing} missing, "
            f"{self.duplicated} written twice, {self.unexpected} unexpected)"
        )


def verify_run(
    fleet: Fleet,
    destination: str,
    run_id: str,
    *,
    regions: tuple[str, ...] | None = None,
    organizations: Collection[str] | None = None,
) -> Verification:
    """Compare run ``run_id`` under a local ``destination`` with ``fleet.ground_truth()``, of
    every organization or of those named (``o-…`` ids: a run whose other organizations failed)."""
    truth = fleet.ground_truth(regions=regions, organizations=organizations)
    want = {rp.volume_arn for rp in truth.recovery_points}
    got = Counter(r["volume_arn"] for r in iter_records(destination, run_id, "recovery_points"))
    want_gw = {g.gateway_arn for g in truth.gateways}
    got_gw = Counter(g["gateway_arn"] for g in iter_records(destination, run_id, "gateways"))
    return Verification(
        expected=len(want),
        written=sum(got.values()),
        missing=len(want - set(got)),
        duplicated=sum(n - 1 for n in got.values() if n > 1),
        unexpected=len(set(got) - want),
        gateways_expected=len(want_gw),
        gateways_written=sum(got_gw.values()),
        gateways_missing=len(want_gw - set(got_gw)),
        gateways_duplicated=sum(n - 1 for n in got_gw.values() if n > 1),
    )
