"""``fleetscan emulator serve``: the whole emulated stack on loopback, until interrupted.

It prints the environment an AWS SDK or the AWS CLI needs, as shell ``export`` lines, so a user
can point existing tools at the emulated fleet without changing them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import select
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Self, TextIO

from .._exceptions import ConfigError
from ._faults import FaultRule, Faults
from ._fleet import DEFAULT_REGIONS, STORAGE_GATEWAY_REGIONS, FleetSpec
from ._identity import MANAGEMENT_ROLE_NAME
from ._stack import DEFAULT_ROLE_NAME, IDENTITY_MODES, Stack, check_loopback_host, start_stack

__all__ = ["add_emulator_parser", "build_parser", "run_emulator_command"]


def _bounded(
    kind: Callable[[str], Any], name: str, low: float | None = None, high: float | None = None
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {text}")
            raise argparse.ArgumentTypeError(f"{name} must be between {low} and {high}, got {text}")
        return value

    return parse


def _host(text: str) -> str:
    try:
        check_loopback_host(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None
    return text


def _regions(text: str) -> list[str]:
    regions = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in regions if r not in STORAGE_GATEWAY_REGIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"not Storage Gateway regions: {', '.join(unknown)} "
            "(see botocore's get_available_regions('storagegateway'))"
        )
    if not regions:
        raise argparse.ArgumentTypeError("expected at least one region")
    return regions


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    """The ``serve`` flags, shared by ``fleetscan emulator serve`` and ``python -m``."""
    fleet = serve.add_argument_group("fleet")
    fleet.add_argument(
        "--accounts",
        type=_bounded(int, "--accounts", 1),
        default=12,
        metavar="N",
        help="member accounts, in all organizations together (default: 12)",
    )
    fleet.add_argument(
        "--organizations",
        type=_bounded(int, "--organizations", 1),
        default=1,
        metavar="N",
        help="organizations the members are split into, each with its own management account; "
        "the first is managed by the exported keys, the others are reached through their "
        f"management role ({MANAGEMENT_ROLE_NAME}) (default: 1)",
    )
    fleet.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="S",
        help="the fleet's seed: equal seeds give equal fleets (default: 1)",
    )
    fleet.add_argument(
        "--regions",
        type=_regions,
        action="extend",
        metavar="REGION[,REGION...]",
        help="regions that may hold gateways (default: the 16 regions enabled by default)",
    )
    fleet.add_argument(
        "--populated-fraction",
        type=_bounded(float, "--populated-fraction", 0, 1),
        default=FleetSpec.populated_fraction,
        metavar="F",
        help="fraction of member accounts that hold any gateway "
        f"(default: {FleetSpec.populated_fraction:g})",
    )
    fleet.add_argument(
        "--max-gateways-per-pair",
        type=_bounded(int, "--max-gateways-per-pair", 1),
        default=FleetSpec.max_gateways_per_pair,
        metavar="N",
        help="cap on the heavy tail of gateways per (account, region) "
        f"(default: {FleetSpec.max_gateways_per_pair})",
    )
    fleet.add_argument(
        "--max-volumes-per-gateway",
        type=_bounded(int, "--max-volumes-per-gateway", 0),
        default=FleetSpec.max_volumes_per_gateway,
        metavar="N",
        help="volumes per cached or stored gateway are drawn from 0..N "
        f"(default: {FleetSpec.max_volumes_per_gateway})",
    )
    fleet.add_argument(
        "--role-name",
        default=DEFAULT_ROLE_NAME,
        metavar="NAME",
        help=f"the reader role in every member account (default: {DEFAULT_ROLE_NAME})",
    )
    fleet.add_argument(
        "--identity",
        choices=IDENTITY_MODES,
        default="fleet",
        help="who answers STS and Organizations: the fleet model (fast at any size), or moto "
        "seeded with the fleet (default: fleet)",
    )
    faults = serve.add_argument_group("faults (Storage Gateway)")
    faults.add_argument(
        "--latency-ms",
        type=_bounded(float, "--latency-ms", 0),
        default=0.0,
        metavar="X",
        help="added to every response",
    )
    faults.add_argument(
        "--jitter-ms",
        type=_bounded(float, "--jitter-ms", 0),
        default=0.0,
        metavar="Y",
        help="plus a uniform random delay up to this",
    )
    faults.add_argument(
        "--error-rate",
        type=_bounded(float, "--error-rate", 0, 1),
        default=0.0,
        metavar="P",
        help="probability of InternalServerError",
    )
    faults.add_argument(
        "--error-status",
        type=int,
        choices=(400, 500),
        default=500,
        help="HTTP status of InternalServerError: AWS's pages say 400, its older guide 500 "
        "(default: 500)",
    )
    faults.add_argument(
        "--throttle-rate",
        type=_bounded(float, "--throttle-rate", 0.001),
        metavar="R",
        help="ThrottlingException beyond R calls/s per account and region (token bucket)",
    )
    faults.add_argument(
        "--throttle-burst",
        type=_bounded(int, "--throttle-burst", 1),
        default=10,
        metavar="B",
        help="token bucket size (default: 10)",
    )
    network = serve.add_argument_group("network (loopback only)")
    network.add_argument(
        "--tls",
        action="store_true",
        help="serve Storage Gateway over HTTPS with a throwaway CA (exported as AWS_CA_BUNDLE)",
    )
    network.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to bind: 127.0.0.0/8, ::1 or localhost (default: 127.0.0.1)",
    )
    network.add_argument(
        "--port",
        type=_bounded(int, "--port", 0, 65535),
        default=0,
        metavar="P",
        help="the emulator's port: Storage Gateway, STS, Organizations, EC2 (default: 0, any "
        "free port)",
    )
    network.add_argument(
        "--moto-port",
        type=_bounded(int, "--moto-port", 0, 65535),
        default=0,
        metavar="P",
        help="moto's port, for S3 and IAM (default: 0, any free port)",
    )


def add_emulator_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="emulator_command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the emulated AWS organizations on loopback until interrupted",
        description="Start the emulator (Storage Gateway, STS, Organizations, EC2) and moto "
        "(S3, IAM) for a seeded fleet of one or more organizations, print the environment to "
        "export, and serve until Ctrl-C or SIGTERM.",
    )
    add_serve_arguments(serve)


def add_emulator_parser(subparsers: Any) -> None:
    """Add ``emulator`` (with ``serve``) to the main CLI's subcommands."""
    emulator = subparsers.add_parser(
        "emulator",
        help="emulated AWS organizations with Storage Gateway, on loopback",
        description="Emulated AWS organizations with Storage Gateway, on loopback.",
    )
    add_emulator_commands(emulator)


def build_parser(prog: str = "python -m fleetscan.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Emulated AWS organizations with Storage Gateway, on loopback."
    )
    add_emulator_commands(parser)
    return parser


def faults_from_args(args: argparse.Namespace) -> Faults:
    rule = FaultRule(
        internal_error_rate=args.error_rate,
        internal_error_status=args.error_status,
        throttle_rate=args.throttle_rate,
        throttle_burst=args.throttle_burst,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
    )
    return Faults([rule])


def export_lines(stack: Stack) -> list[str]:
    """What ``serve`` prints: sourceable by a POSIX shell, comments included. The comments name
    each organization and how to reach it: what a ``[[organizations]]`` entry needs."""
    spec = stack.fleet.spec
    organizations = len(stack.organizations)
    where = "1 organization" if organizations == 1 else f"{organizations} organizations"
    lines = [
        f"# fleetscan emulator: {spec.accounts} member accounts in {where} (seed {spec.seed}), "
        f"{len(spec.regions)} regions; Storage Gateway, EC2 at {stack.endpoint_url}, "
        f"STS, Organizations at {stack.identity_endpoint_url}, S3 at {stack.moto_endpoint_url}",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in stack.env().items()]
    lines.append("unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE AWS_ENDPOINT_URL")
    for organization in stack.organizations:
        reach = " (the exported keys)" if organization.index == 0 else ""
        lines.append(
            f"# organization {organization.name} {organization.id}: management account "
            f"{organization.management_account_id}{reach}; management_role_arn "
            f"{organization.management_role_arn}"
        )
    lines.append(
        f"# role {stack.role_name} in every member account; "
        f"management account {stack.management_account_id}"
    )
    return lines


class StopSignals:
    """SIGINT and SIGTERM as a flag and a wake-up, with a handler that takes no lock.

    A Python signal handler runs on the main thread between two bytecodes, possibly while that
    thread holds a lock: ``threading.Event.set`` in a handler deadlocked when the signal landed
    inside ``Event.wait`` (which holds the Event's non-reentrant lock), and every later signal
    only nested one more handler on top. So the handler stores the signal number and nothing
    else; :func:`signal.set_wakeup_fd` has the interpreter write a byte to a socket in C, which
    is what :meth:`wait` blocks on. A second signal while stopping ends the process at once:
    whoever sends it wants out now, and an emulator holds nothing worth a clean stop.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> Self:
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            os._exit(128 + signum)
        self.received = signum

    def wait(self) -> int:
        """Block until a signal came (at once if one already has); its number."""
        while self.received is None:
            select.select([self._reader], [], [])
            with contextlib.suppress(BlockingIOError):
                while self._reader.recv(512):
                    pass
        return self.received


def serve(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        spec = FleetSpec(
            seed=args.seed,
            accounts=args.accounts,
            organizations=args.organizations,
            regions=tuple(dict.fromkeys(args.regions)) if args.regions else DEFAULT_REGIONS,
            populated_fraction=args.populated_fraction,
            max_gateways_per_pair=args.max_gateways_per_pair,
            max_volumes_per_gateway=args.max_volumes_per_gateway,
        )
        faults = faults_from_args(args)
    except ValueError as exc:
        raise ConfigError("serve", str(exc)) from None
    with StopSignals() as stop:
        with start_stack(
            spec,
            faults=faults,
            tls=args.tls,
            role_name=args.role_name,
            identity=args.identity,
            host=args.host,
            port=args.port,
            moto_port=args.moto_port,
            prepare=True,
        ) as stack:
            # Everything built so far (the fleet, its rendered answers, moto) lives as long as
            # the process: left out of every cycle collection from here on, which would
            # otherwise walk it again and again while a scan's requests churn young objects.
            gc.freeze()
            if stop.received is None:
                for line in export_lines(stack):
                    print(line, file=out)
                out.flush()
                print("Serving; Ctrl-C (or SIGTERM) stops.", file=err, flush=True)
            stop.wait()
        print("Stopped.", file=err, flush=True)
    # The process ends next: its final cycle collection would walk every object of the fleet
    # model and moto's state only to free memory the OS takes back anyway (about a second of
    # the time to stop). Frozen objects are left out of it.
    gc.freeze()
    return 0


def run_emulator_command(args: argparse.Namespace) -> int:
    """Run the ``emulator`` subcommand chosen in ``args``; returns the exit code."""
    try:
        if args.emulator_command == "serve":
            return serve(args)
    except ConfigError as exc:
        print(f"fleetscan emulator {args.emulator_command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"fleetscan emulator: unknown command {args.emulator_command!r}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_emulator_command(args)
