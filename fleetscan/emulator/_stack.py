"""The whole emulated AWS estate in one process: moto beside the Storage Gateway emulator.

moto serves STS, Organizations, IAM, EC2 and S3; the emulator serves Storage Gateway. Both answer
from the same :class:`~fleetscan.emulator.Fleet`, so the organization a scanner discovers through
moto is exactly the one whose gateways the emulator holds, with the same account and OU ids.

moto keeps its state in process-global backends, so a process runs one stack at a time; the state
is wiped through moto's reset API when a stack starts and again when it stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import re
import shutil
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from moto.backends import get_backend
from moto.core.exceptions import AccessDeniedError
from moto.organizations import utils as moto_org_utils
from moto.server import ThreadedMotoServer
from moto.sts import urls as moto_sts_urls
from moto.sts.models import STSBackend

from .._exceptions import ConfigError
from ._faults import Faults
from ._fleet import Fleet, FleetSpec, access_key_for_account
from ._server import EmulatorThread
from ._tls import TLSMaterial

__all__ = ["DEFAULT_ROLE_NAME", "Stack", "check_loopback_host", "start_stack"]

DEFAULT_ROLE_NAME = "FleetscanReader"
#: Not a secret: moto and the emulator accept any secret, and this one only looks like a key.
MANAGEMENT_SECRET_ACCESS_KEY = "fleetscan/emulated/not-a-secret/0000000000000"
#: The region the stack's SDK configuration names; every emulated service answers in any region.
STACK_REGION = "us-east-1"
#: The IAM user in the management account whose access key the stack hands out.
OPERATOR_USER_NAME = "fleetscan-operator"

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/(?:.*/)?([^/]+)$")
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


class _AssumeRoleGuard:
    """Refuses AssumeRole where AWS would: the fleet's suspended accounts, roles that do not exist
    and trust policies whose ``sts:ExternalId`` condition the caller does not meet.

    moto itself lets any role ARN be assumed, which would let a scanner "succeed" against accounts
    that a real organization cannot reach, and the fleet's ground truth says it must not.
    """

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def check(self, caller_account_id: str, role_arn: str, external_id: str | None) -> None:
        match = _ROLE_ARN.match(role_arn or "")
        if match is None:
            return
        account_id, role_name = match.groups()
        account = self._fleet.account(account_id)
        if account is None:
            return  # Not a fleet account: moto's own behaviour.
        denied = AccessDeniedError(
            user_arn=f"arn:aws:iam::{caller_account_id}:root",
            action=f"sts:AssumeRole on resource: {role_arn}",
        )
        if not account.active:
            raise denied
        iam = get_backend("iam")[account_id]["global"]
        role = next((r for r in iam.roles.values() if r.name == role_name), None)
        if role is None:
            raise denied
        required = _required_external_ids(role.assume_role_policy_document)
        if required and external_id not in required:
            raise denied


def _required_external_ids(policy_document: str) -> set[str]:
    """The ``sts:ExternalId`` values a role's trust policy demands (empty: none demanded)."""
    try:
        policy = json.loads(policy_document)
    except (TypeError, ValueError):
        return set()
    required: set[str] = set()
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        condition = statement.get("Condition", {}).get("StringEquals", {})
        value = condition.get("sts:ExternalId")
        if isinstance(value, str):
            required.add(value)
        elif isinstance(value, list):
            required.update(v for v in value if isinstance(v, str))
    return required


class _GuardedSTSBackend(STSBackend):
    """moto's STS, with :class:`_AssumeRoleGuard` in front of AssumeRole."""

    guard: _AssumeRoleGuard | None = None

    @property
    def _url_module(self) -> Any:
        # moto finds a backend's URL table next to the backend's module; ours is moto's STS.
        return moto_sts_urls

    def assume_role(
        self,
        region_name: str,
        role_session_name: str,
        role_arn: str,
        policy: str,
        duration: int,
        external_id: str,
    ) -> Any:
        if self.guard is not None:
            self.guard.check(self.account_id, role_arn, external_id)
        return super().assume_role(
            region_name=region_name,
            role_session_name=role_session_name,
            role_arn=role_arn,
            policy=policy,
            duration=duration,
            external_id=external_id,
        )


@contextlib.contextmanager
def _moto_ids(name: str, ids: list[str]) -> Iterator[None]:
    """Make moto's Organizations hand out ``ids`` (in order) instead of random ones.

    moto's API has no way to choose an account, OU or root id, and the organization must carry
    the fleet's: those are the ids the emulator's gateways belong to.
    """
    original: Callable[..., str] = getattr(moto_org_utils, name)
    queue = iter(ids)

    def take(*_args: object) -> str:
        return next(queue)

    setattr(moto_org_utils, name, take)
    try:
        yield
    finally:
        setattr(moto_org_utils, name, original)


def trust_policy(management_account_id: str, external_id: str | None) -> dict[str, Any]:
    """The reader role's trust policy: the management account, with the external id if any."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{management_account_id}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _add_operator(management_account_id: str, access_key_id: str, secret: str) -> None:
    """Make the management credentials an IAM user's access key in moto.

    moto maps every request's access key to an account by searching each account's IAM keys in
    creation order, falling back to the management account after searching them all. With
    10,000 member accounts that search made each management-account call (ListAccounts,
    AssumeRole) cost tens of milliseconds; a key owned by the first account ends it at once.
    It also gives GetCallerIdentity a real user ARN, as AWS would.
    """
    iam = get_backend("iam")[management_account_id]["global"]
    iam.create_user(region_name=STACK_REGION, user_name=OPERATOR_USER_NAME, path="/")
    key = iam.create_access_key(user_name=OPERATOR_USER_NAME)
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id = access_key_id
    key.secret_access_key = secret
    iam.access_keys[key.physical_resource_id] = key


def seed_moto(
    fleet: Fleet,
    role_name: str,
    external_id: str | None = None,
    *,
    access_key_id: str | None = None,
    secret_access_key: str = MANAGEMENT_SECRET_ACCESS_KEY,
) -> None:
    """Create the fleet's organization in this process's (freshly reset) moto backends.

    Accounts get distinct join times in fleet order, because moto pages ListAccounts by join time
    and equal times would make pages skip or repeat accounts. ``access_key_id`` becomes the
    management account's operator key.
    """
    management = fleet.management_account_id
    if access_key_id is not None:
        _add_operator(management, access_key_id, secret_access_key)
    orgs = get_backend("organizations")[management]["aws"]
    with (
        _moto_ids("make_random_org_id", [fleet.organization_id]),
        _moto_ids("make_random_root_id", [fleet.root_id]),
        _moto_ids("make_random_account_id", [management]),
    ):
        orgs.create_organization(region=STACK_REGION, FeatureSet="ALL")
    joined = fleet.spec.epoch.astimezone(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=400)
    orgs.get_account_by_id(management).create_time = joined

    with _moto_ids("make_random_ou_id", [ou.id for ou in fleet.ous]):
        for ou in fleet.ous:  # Parents come before their children in fleet.ous.
            orgs.create_organizational_unit(Name=ou.name, ParentId=ou.parent_id)

    iam = get_backend("iam")
    policy = json.dumps(trust_policy(management, external_id))
    with _moto_ids("make_random_account_id", [a.id for a in fleet.accounts]):
        for index, account in enumerate(fleet.accounts, start=1):
            orgs.create_account(AccountName=account.name, Email=account.email, RoleName=role_name)
            created = orgs.accounts[-1]
            # Direct attribute writes: moto's move_account is a linear search per call, which
            # makes seeding quadratic in the number of accounts.
            created.parent_id = account.ou_id
            created.create_time = joined + dt.timedelta(minutes=index)
            if external_id is not None:
                iam[account.id]["global"].update_assume_role_policy(role_name, policy)
    for account in fleet.accounts:
        if not account.active:
            orgs.close_account(AccountId=account.id)

    sts = _GuardedSTSBackend("aws", management)
    sts.guard = _AssumeRoleGuard(fleet)
    get_backend("sts")[management]["aws"] = sts


def _stop_moto(server: ThreadedMotoServer) -> None:
    """Stop moto without waiting out its accept loop's half-second poll.

    The loop notices a shutdown request only when its select() returns, so connections are made
    until it has: each wakes it up at once. Stopping in 0.5 s per test adds up across a suite.
    """
    host, port = server.get_host_and_port()
    stopper = threading.Thread(target=server.stop, name="moto-stop", daemon=True)
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=0.2).close()
        stopper.join(0.01)


class Stack:
    """moto and the Storage Gateway emulator, on loopback, answering for one fleet.

    Use :func:`start_stack`, as a context manager. :meth:`env` is the whole client configuration:
    any AWS SDK or the AWS CLI given those variables talks to this stack and nothing else.
    """

    def __init__(
        self,
        spec: FleetSpec,
        *,
        faults: Faults | None = None,
        tls: bool = False,
        role_name: str = DEFAULT_ROLE_NAME,
        external_id: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        moto_port: int = 0,
    ) -> None:
        self.host = check_loopback_host(host)
        self.fleet = Fleet(spec)
        self.role_name = role_name
        self.external_id = external_id
        self.management_account_id = self.fleet.management_account_id
        self.access_key_id = access_key_for_account(self.management_account_id, tag="stack")
        self.secret_access_key = MANAGEMENT_SECRET_ACCESS_KEY
        self.region = STACK_REGION
        self._faults = faults
        self._tls = tls
        self._port = port
        self._moto_port = moto_port
        self._tls_dir: Path | None = None
        self._tls_material: TLSMaterial | None = None
        self._moto: ThreadedMotoServer | None = None
        self._emulator: EmulatorThread | None = None
        self.moto_endpoint_url = ""

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
        # Deterministic ids for what moto generates (assumed-role keys, request ids).
        self._moto_api(f"seed?a={self.fleet.spec.seed}")
        seed_moto(
            self.fleet,
            self.role_name,
            self.external_id,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

        if self._tls:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fleetscan-tls-"))
            self._tls_material = TLSMaterial.create(self._tls_dir)
        self._emulator = EmulatorThread(
            self.fleet, self._faults, host=self.host, port=self._port, tls=self._tls_material
        )
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
                _stop_moto(self._moto)
                self._moto = None
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
        """The Storage Gateway emulator's URL (``https`` in TLS mode)."""
        return self.emulator.endpoint_url

    @property
    def ca_bundle(self) -> Path | None:
        """The CA certificate clients must trust in TLS mode, else None."""
        return None if self._tls_material is None else self._tls_material.ca_bundle

    def role_arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{self.role_name}"

    def env(self) -> dict[str, str]:
        """Environment variables that point any AWS SDK or the AWS CLI at this stack.

        Service-specific endpoints only (no global ``AWS_ENDPOINT_URL``), so a service the stack
        does not serve fails loudly instead of reaching some other endpoint. Instance metadata
        is disabled and loopback is exempt from proxies: nothing may leave this machine.
        """
        moto = self.moto_endpoint_url
        no_proxy = ",".join(dict.fromkeys((self.host, "127.0.0.1", "localhost", "::1")))
        env = {
            "AWS_ENDPOINT_URL_STORAGE_GATEWAY": self.endpoint_url,
            "AWS_ENDPOINT_URL_STS": moto,
            "AWS_ENDPOINT_URL_ORGANIZATIONS": moto,
            "AWS_ENDPOINT_URL_EC2": moto,
            "AWS_ENDPOINT_URL_S3": moto,
            "AWS_ENDPOINT_URL_IAM": moto,
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
    host: str = "127.0.0.1",
    port: int = 0,
    moto_port: int = 0,
) -> Stack:
    """Start moto and the emulator for ``spec``'s fleet; port 0 picks free ports.

    Raises :class:`~fleetscan.ConfigError` for a host off loopback, and RuntimeError when another
    stack is running in this process.
    """
    return Stack(
        spec,
        faults=faults,
        tls=tls,
        role_name=role_name,
        external_id=external_id,
        host=host,
        port=port,
        moto_port=moto_port,
    ).start()
