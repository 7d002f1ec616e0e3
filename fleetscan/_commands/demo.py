"""``fleetscan demo``: scan an emulated organization end to end, then check the result.

The stack (the emulator for Storage Gateway, STS, Organizations and EC2; moto for S3) runs in this
process on loopback; the scan reaches it only through the standard ``AWS_ENDPOINT_URL_<SERVICE>``
variables, exactly as it would reach AWS. The scanner itself never imports the emulator: only
this command does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

from ._args import positive_int
from ._loop import run_async


def add_parser(subparsers: Any) -> None:
    demo: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="scan an emulated organization, started for the run (no AWS account needed)",
        description="Start the emulated AWS fleet on loopback and scan it, with progress and "
        "a summary. Needs the 'emulator' extra.",
        allow_abbrev=False,
    )
    demo.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        default=Path("fleetscan-demo"),
        help="where the datasets go (default: ./fleetscan-demo)",
    )
    demo.add_argument(
        "--accounts",
        metavar="N",
        type=positive_int,
        default=24,
        help="member accounts in the emulated organization (default 24)",
    )
    demo.add_argument(
        "--organizations",
        metavar="N",
        type=positive_int,
        default=1,
        help="organizations the member accounts are split into; the first is scanned with its "
        "management account's credentials, the others through their management role, all in "
        "one run (default 1)",
    )
    demo.add_argument(
        "--seed", metavar="N", type=int, default=2026, help="fleet seed (default 2026)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display or summary")


def run(args: argparse.Namespace) -> int:
    return run_demo(
        output=str(args.output),
        accounts=args.accounts,
        seed=args.seed,
        quiet=args.quiet,
        organizations=args.organizations,
    )


def run_demo(*, output: str, accounts: int, seed: int, quiet: bool, organizations: int = 1) -> int:
    from .._config import OrganizationConfig, ScanConfig
    from .._exceptions import ConfigError
    from ._progress import say, scan_with_progress

    try:
        from ..emulator import FleetSpec, start_stack
        from ..emulator._faults import FaultRule, Faults
    except ImportError as exc:  # the emulator extra brings moto and trustme
        say(f"the demo needs the emulator extra: pip install 'fleetscan[emulator]' ({exc})", "text")
        return 2
    if organizations > accounts:
        raise ConfigError(
            "--organizations", f"{organizations} organizations need at least as many accounts"
        )
    # The fleet's "now" an hour back, so that the hour the demo lets pass stays in the past.
    epoch = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=LATER)
    spec = FleetSpec(seed=seed, accounts=accounts, organizations=organizations, epoch=epoch)
    # A realistic day: some latency, a few InternalServerErrors (both status codes AWS uses),
    # and a per-(account, region) throttle that fleetscan's rate limiter has to respect.
    faults = Faults(
        [
            FaultRule(
                latency_ms=15,
                jitter_ms=10,
                internal_error_rate=0.02,
                internal_error_status=400,
                throttle_rate=25,
                throttle_burst=10,
            ),
            FaultRule(
                operation="ListVolumeRecoveryPoints",
                latency_ms=15,
                jitter_ms=10,
                internal_error_rate=0.03,
                internal_error_status=500,
                throttle_rate=25,
                throttle_burst=10,
            ),
        ]
    )
    with tempfile.TemporaryDirectory() as empty, start_stack(spec, faults=faults) as stack:
        saved = dict(os.environ)
        os.environ.update(stack.env())
        # Keep the developer's own ~/.aws out of the demo.
        os.environ["AWS_CONFIG_FILE"] = str(Path(empty) / "config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(Path(empty) / "credentials")
        try:
            if not quiet:
                say(
                    f"demo organization: {accounts} member accounts (one suspended), seed {seed}; "
                    f"scanning into {output}/"
                    if organizations == 1
                    else f"demo: {organizations} organizations of {accounts} member accounts in "
                    f"all (one suspended in each), seed {seed}; scanning into {output}/",
                    "text",
                )
            # One organization: --org, as a user scans their own. Several: the first with the
            # ambient (management) credentials, each other one through its management role.
            entries = tuple(
                OrganizationConfig(
                    name=organization.name,
                    management_role_arn=None if index == 0 else organization.management_role_arn,
                )
                for index, organization in enumerate(stack.organizations)
            )
            config = ScanConfig(
                org=organizations == 1,
                organizations=entries if organizations > 1 else (),
                role_name=stack.role_name,
                regions=spec.regions,
                output=output,
            )
            code = scan_with_progress(config, quiet=quiet)
            if code == 0 and not quiet:
                first = _later(stack.fleet, output)
                code = scan_with_progress(config, quiet=True)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if not quiet:
            _check(stack.fleet, output)
            if code == 0:
                _diff_summary(output, first)
            _audit_summary(output)
    return code


#: How much time the demo lets pass on the fleet between its two scans.
LATER = 3600


def _later(fleet: Any, output: str) -> str:
    """An hour passes: every volume takes a new recovery point, except those of one gateway
    (a stuck snapshot schedule). Returns the first run's id, to compare the second one with."""
    from .._sinks import latest_run
    from ..emulator import Fleet
    from ._progress import say

    assert isinstance(fleet, Fleet)
    stuck = next(g for g in fleet.iter_gateways() if g.is_cached and g.connected and g.volumes)
    for volume in stuck.volumes:
        fleet.pin_recovery_point(volume.arn, volume.recovery_point_time)
    fleet.advance(LATER)
    say(
        f"an hour later: every volume has a new recovery point, except the {len(stuck.volumes)} "
        f"of gateway {stuck.name} in {stuck.account_id} (its snapshots stopped); scanning again",
        "text",
    )
    return str(latest_run(output))


def _diff_summary(output: str, first: str) -> None:
    """What ``fleetscan diff`` says of the two runs: the stuck volumes, caught a day early."""

    from .._audit import Policy, diff_runs
    from .diff import print_summary

    policy = Policy.single(DEMO_MAX_AGE)
    result = run_async(lambda: diff_runs(output, policy, from_run=first))
    print_summary(result, 0)


def _check(fleet: object, output: str) -> None:
    """Compare the newest run under ``output`` with the fleet's ground truth, and say so."""
    from .._sinks import latest_run
    from ..emulator import Fleet, verify_run
    from ._progress import say

    assert isinstance(fleet, Fleet)
    run_id = latest_run(output)
    if run_id is not None:
        say(verify_run(fleet, output, run_id).describe(), "text")


#: The demo fleet's recovery points are either hours old or more than a day old.
DEMO_MAX_AGE = "24h"


def _audit_summary(output: str) -> None:
    """End the demo with what compliance teams want: ``fleetscan audit`` of the run just made."""

    from .._audit import Policy, audit
    from .._sinks import latest_run
    from ._progress import say
    from .audit import print_summary

    run_id = latest_run(output)
    if run_id is None:
        return
    result = run_async(lambda: audit(output, Policy.single(DEMO_MAX_AGE), run_id=run_id))
    print_summary(result, None, None)
    say(
        f"reports: fleetscan audit --input {output} --max-age {DEMO_MAX_AGE} "
        "--report-dir fleetscan-audit (add --asff findings.json for AWS Security Hub; "
        "--security-hub would import each finding into its own account's hub, in its volume's "
        "region)",
        "text",
    )
