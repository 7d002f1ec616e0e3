"""The whole emulated AWS estate in one process: the emulator, with moto beside it for S3.

The emulator serves Storage Gateway, STS, Organizations and EC2 ``DescribeRegions`` from one
:class:`~fleetscan.emulator.Fleet`, so the organizations a scanner discovers are exactly those whose
gateways it holds, at a cost per call that does not grow with the fleet or the run. moto serves S3
(and IAM), and Security Hub behind the checks AWS makes on an import (see :mod:`._securityhub`).
``identity="moto"`` instead seeds moto with the fleet's organizations and points STS and
Organizations at it, for tests that need moto's own STS and IAM (see :mod:`._moto`).

moto keeps its state in process-global backends, so a process runs one stack at a time; the state
is wiped through moto's reset API when a stack starts and again when it stops.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from moto.server import ThreadedMotoServer

from .._exceptions import ConfigError
from ._faults import Faults
from ._fleet import Fleet, FleetSpec, access_key_for_account
from ._identity import DEFAULT_ROLE_NAME, MANAGEMENT_ROLE_NAME, OrganizationAccess, Roles
from ._moto import STACK_REGION, seed_moto, stop_moto, unguard_moto
from ._securityhub import SecurityHubGuard, guard_securityhub, unguard_securityhub
from ._server import EmulatorThread
from ._tls import TLSMaterial

__all__ = [
    "DEFAULT_ROLE_NAME",
    "IDENTITY_MODES",
    "Stack",
    "StackOrganization",
    "check_loopback_host",
    "start_stack",
]

#: Not a secret: moto and the emulator accept any secret, and this one only looks like a key.
MANAGEMENT_SECRET_ACCESS_KEY = "fleetscan/emulated/not-a-secret/0000000000000"
Identity = Literal["fleet", "moto"]
#: Who answers STS and Organizations: the fleet model (fast at any size) or moto (its fidelity).
IDENTITY_MODES: tuple[Identity, ...] = ("fleet", "moto")

_active_lock = threading.Lock()
_active: Stack | None = None


def check_loopback_host(host: str) -> str:
    """Return the address to bind for ``host``, refusing anything off this machine.

    The stack answers to anyone who can reach it and hands out credentials, so it is bound to the
    loopback range only. ``localhost`` becomes ``127.0.0.1``: S3 clients address buckets as
    sub-domains of a named endpoint, which only a numeric endpoint avoids.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ConfigError(
            "host", f"{host!r} is not an IP address; use 127.0.0.1 (or 127.x.y.z), ::1 or localhost"
        ) from None
    if not address.is_loopback:
        raise ConfigError(
            "host",
            f"{host} is not a loopback address; the emulator serves only 127.0.0.0/8 and ::1",
        )
    return str(address)


def _check_port_free(host: str, port: int, field: str) -> None:
    """Fail fast on a taken port or an address this machine lacks (say ::1 without IPv6): moto
    binds in its own thread, and its start() would wait for that thread forever."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                field, f"cannot listen on {host} port {port}: {exc.strerror}"
            ) from None


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class StackOrganization:
    """One emulated organization as a scanner's configuration reaches it.

    The first organization (``index`` 0) is managed by the stack's ambient keys
    (:meth:`Stack.env`); every organization, the first included, can also be reached by assuming
    ``management_role_arn`` from those keys (with ``management_external_id`` when set), unless it
    is ``denied``. Member accounts (and the management account) are scanned through
    ``member_role_name``, which demands ``member_external_id`` when set.
    """

    index: int
    id: str
    name: str
    root_id: str
    management_account_id: str
    management_role_arn: str
    management_external_id: str | None
    member_role_name: str
    member_external_id: str | None
    #: Its management role trusts nobody: AssumeRole answers AccessDenied.
    denied: bool
    #: Member account ids (the management account not included), in the order they joined.
    member_account_ids: tuple[str, ...]

    def member_role_arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{self.member_role_name}"


class Stack:
    """The emulator and moto, on loopback, answering for one fleet.

    Use :func:`start_stack`, as a context manager. :meth:`env` is the whole client configuration:
    any AWS SDK or the AWS CLI given those variables talks to this stack and nothing else.
    ``role_name`` and ``external_id`` are the member role's in every organization, unless
    ``organizations`` (one :class:`OrganizationAccess` per organization, by position) says
    otherwise; :attr:`organizations` has each organization's ids, roles and ARNs.
    """

    def __init__(
        self,
        spec: FleetSpec,
        *,
        faults: Faults | None = None,
        tls: bool = False,
        role_name: str = DEFAULT_ROLE_NAME,
        external_id: str | None = None,
        management_role_name: str = MANAGEMENT_ROLE_NAME,
        organizations: Sequence[OrganizationAccess] = (),
        identity: Identity = "fleet",
        host: str = "127.0.0.1",
        port: int = 0,
        moto_port: int = 0,
        prepare: bool = False,
    ) -> None:
        if identity not in IDENTITY_MODES:
            raise ConfigError("identity", f"must be one of {', '.join(IDENTITY_MODES)}")
        self.host = check_loopback_host(host)
        self.fleet = Fleet(spec)
        try:
            self.roles = Roles(
                self.fleet,
                role_name=role_name,
                external_id=external_id,
                management_role_name=management_role_name,
                organizations=organizations,
            )
        except ValueError as exc:
            raise ConfigError("organizations", str(exc)) from None
        self.identity: Identity = identity
        #: The first organization's member role (every organization's, unless overridden).
        self.role_name = role_name
        self.external_id = external_id
        self.management_account_id = self.fleet.management_account_id
        self.access_key_id = access_key_for_account(self.management_account_id, tag="stack")
        self.secret_access_key = MANAGEMENT_SECRET_ACCESS_KEY
        self.region = STACK_REGION
        self.organizations: tuple[StackOrganization, ...] = tuple(
            self._describe(index) for index in range(len(self.fleet.organizations))
        )
        self._faults = faults
        self._tls = tls
        self._port = port
        self._moto_port = moto_port
        self._prepare = prepare
        self._tls_dir: Path | None = None
        self._tls_material: TLSMaterial | None = None
        self._moto: ThreadedMotoServer | None = None
        #: moto's Security Hub's checks and injectable faults (set while the stack runs).
        self.security_hub = SecurityHubGuard()
        self._emulator: EmulatorThread | None = None
        self.moto_endpoint_url = ""

    def _describe(self, index: int) -> StackOrganization:
        organization = self.fleet.organizations[index]
        roles = self.roles.of(organization.id)
        management = organization.management.id
        return StackOrganization(
            index=index,
            id=organization.id,
            name=organization.name,
            root_id=organization.root_id,
            management_account_id=management,
            management_role_arn=f"arn:aws:iam::{management}:role/{roles.management_role_name}",
            management_external_id=roles.management_external_id,
            member_role_name=roles.member_role_name,
            member_external_id=roles.member_external_id,
            denied=roles.denied,
            member_account_ids=organization.member_ids,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Stack:
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError(
                    "a stack is already running in this process; moto's state is process-global"
                )
            _active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # moto logs every request through werkzeug; a scan makes thousands.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        if self._port and self._port == self._moto_port:
            raise ConfigError("port", f"the emulator and moto cannot share port {self._port}")
        _check_port_free(self.host, self._moto_port, "moto_port")
        _check_port_free(self.host, self._port, "port")
        self._moto = ThreadedMotoServer(ip_address=self.host, port=self._moto_port, verbose=False)
        self._moto.start()
        _, moto_port = self._moto.get_host_and_port()
        self.moto_endpoint_url = _url("http", self.host, moto_port)
        self._moto_api("reset")
        self.security_hub = guard_securityhub()
        # Deterministic ids for what moto generates (assumed-role keys, request ids).
        self._moto_api(f"seed?a={self.fleet.spec.seed}")
        if self.identity == "moto":
            seed_moto(
                self.fleet,
                self.roles,
                access_key_id=self.access_key_id,
                secret_access_key=self.secret_access_key,
            )

        if self._tls:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fleetscan-tls-"))
            self._tls_material = TLSMaterial.create(self._tls_dir)
        self._emulator = EmulatorThread(
            self.fleet,
            self._faults,
            host=self.host,
            port=self._port,
            tls=self._tls_material,
            roles=self.roles,
        )
        if self._prepare:
            self._emulator.server.prepare()
        self._emulator.start()

    def stop(self) -> None:
        """Stop both servers and wipe moto's state; safe to call twice."""
        global _active
        try:
            if self._emulator is not None:
                self._emulator.stop()
                self._emulator = None
            if self._moto is not None:
                with contextlib.suppress(OSError):
                    self._moto_api("reset")
                stop_moto(self._moto)
                self._moto = None
                unguard_securityhub()
                if self.identity == "moto":
                    unguard_moto()
            if self._tls_dir is not None:
                shutil.rmtree(self._tls_dir, ignore_errors=True)
                self._tls_dir = None
        finally:
            with _active_lock:
                if _active is self:
                    _active = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _moto_api(self, path: str) -> None:
        # No proxy: a developer's HTTP(S)_PROXY must not carry loopback traffic off the machine.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(f"{self.moto_endpoint_url}/moto-api/{path}", method="POST")
        with opener.open(request, timeout=10) as response:
            response.read()

    # -- what clients need -------------------------------------------------------------------

    @property
    def emulator(self) -> EmulatorThread:
        if self._emulator is None:
            raise RuntimeError("the stack is not running")
        return self._emulator

    @property
    def endpoint_url(self) -> str:
        """The emulator's URL (``https`` in TLS mode)."""
        return self.emulator.endpoint_url

    @property
    def identity_endpoint_url(self) -> str:
        """Where STS and Organizations are served: the emulator, or moto in moto mode."""
        return self.endpoint_url if self.identity == "fleet" else self.moto_endpoint_url

    @property
    def ca_bundle(self) -> Path | None:
        """The CA certificate clients must trust in TLS mode, else None."""
        return None if self._tls_material is None else self._tls_material.ca_bundle

    def organization_of(self, account_id: str) -> StackOrganization | None:
        organization = self.fleet.organization_of(account_id)
        return None if organization is None else self.organizations[organization.index]

    def role_arn(self, account_id: str) -> str:
        """The member role ARN to scan ``account_id`` with (its organization's member role)."""
        organization = self.organization_of(account_id)
        if organization is None:
            return f"arn:aws:iam::{account_id}:role/{self.role_name}"
        return organization.member_role_arn(account_id)

    def env(self) -> dict[str, str]:
        """Environment variables that point any AWS SDK or the AWS CLI at this stack.

        Service-specific endpoints only (no global ``AWS_ENDPOINT_URL``), so a service the stack
        does not serve fails loudly instead of reaching some other endpoint. Instance metadata
        is disabled and loopback is exempt from proxies: nothing may leave this machine.
        """
        moto = self.moto_endpoint_url
        identity = self.identity_endpoint_url
        no_proxy = ",".join(dict.fromkeys((self.host, "127.0.0.1", "localhost", "::1")))
        env = {
            "AWS_ENDPOINT_URL_STORAGE_GATEWAY": self.endpoint_url,
            "AWS_ENDPOINT_URL_STS": identity,
            "AWS_ENDPOINT_URL_ORGANIZATIONS": identity,
            "AWS_ENDPOINT_URL_EC2": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": moto,
            "AWS_ENDPOINT_URL_IAM": moto,
            "AWS_ENDPOINT_URL_SECURITYHUB": moto,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
        if self.ca_bundle is not None:
            env["AWS_CA_BUNDLE"] = str(self.ca_bundle)
        return env


def start_stack(
    spec: FleetSpec,
    *,
    faults: Faults | None = None,
    tls: bool = False,
    role_name: str = DEFAULT_ROLE_NAME,
    external_id: str | None = None,
    management_role_name: str = MANAGEMENT_ROLE_NAME,
    organizations: Sequence[OrganizationAccess] = (),
    identity: Identity = "fleet",
    host: str = "127.0.0.1",
    port: int = 0,
    moto_port: int = 0,
    prepare: bool = False,
) -> Stack:
    """Start the emulator and moto for ``spec``'s fleet; port 0 picks free ports.

    ``identity="fleet"`` (the default) serves STS and Organizations from the fleet model;
    ``"moto"`` seeds moto with the fleet's organizations and serves them from moto. Raises
    :class:`~fleetscan.ConfigError` for a host off loopback or access configured for more
    organizations than the fleet has, and RuntimeError when another stack is running in this
    process. ``prepare`` renders the emulator's answers before it starts
    (:meth:`EmulatorServer.prepare`): a longer start-up, for a server whose CPU per call is
    measured.
    """
    return Stack(
        spec,
        faults=faults,
        tls=tls,
        role_name=role_name,
        external_id=external_id,
        management_role_name=management_role_name,
        organizations=organizations,
        identity=identity,
        host=host,
        port=port,
        moto_port=moto_port,
        prepare=prepare,
    ).start()
