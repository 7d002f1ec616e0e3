"""``fleetscan demo``: scan an emulated organization end to end, then check the result.

The stack (moto for STS/Organizations/EC2/S3, the Storage Gateway emulator) runs in this process
on loopback; the scan reaches it only through the standard ``AWS_ENDPOINT_URL_<SERVICE>``
variables, exactly as it would reach AWS. The scanner itself never imports the emulator.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._config import ScanConfig
from ._progress import say
from ._run import run_scan_command


def run_demo(*, output: str, accounts: int, seed: int, quiet: bool) -> int:
    try:
        from .emulator import FleetSpec, start_stack
        from .emulator._faults import FaultRule, Faults
    except ImportError as exc:  # the emulator extra brings moto and trustme
        say(f"the demo needs the emulator extra: pip install 'fleetscan[emulator]' ({exc})", "text")
        return 2
    spec = FleetSpec(seed=seed, accounts=accounts)
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
                    f"scanning into {output}/",
                    "text",
                )
            config = ScanConfig(
                org=True,
                role_name=stack.role_name,
                regions=spec.regions,
                output=output,
            )
            code = run_scan_command(config, quiet=quiet)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        if not quiet:
            _check(stack.fleet, output)
            _audit_summary(output)
    return code


def _check(fleet: object, output: str) -> None:
    """Compare the newest run under ``output`` with the fleet's ground truth, and say so."""
    from ._sinks import latest_run
    from .emulator import Fleet, verify_run

    assert isinstance(fleet, Fleet)
    run_id = latest_run(output)
    if run_id is not None:
        say(verify_run(fleet, output, run_id).describe(), "text")


#: The demo fleet's recovery points are either hours old or more than a day old.
DEMO_MAX_AGE = "24h"


def _audit_summary(output: str) -> None:
    """End the demo with what compliance teams want: ``fleetscan audit`` of the run just made."""
    import anyio

    from ._audit import Policy, audit, print_summary
    from ._sinks import latest_run

    run_id = latest_run(output)
    if run_id is None:
        return
    result = anyio.run(
        lambda: audit(output, Policy.single(DEMO_MAX_AGE), run_id=run_id), backend="asyncio"
    )
    print_summary(result, None, None)
    say(
        f"reports: fleetscan audit --input {output} --max-age {DEMO_MAX_AGE} "
        "--report-dir fleetscan-audit",
        "text",
    )
