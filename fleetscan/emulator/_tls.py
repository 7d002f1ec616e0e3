"""A throwaway certificate authority, so the emulator can speak HTTPS like AWS does.

Benchmarks against plain HTTP would flatter a scanner: against AWS every connection pays a TLS
handshake and every byte is encrypted. trustme makes a CA and a server certificate for the
loopback names; clients trust the CA through ``AWS_CA_BUNDLE`` (or ``verify=``), exactly as a
corporate proxy's CA is trusted, so no client code changes.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

#: The names the server certificate is valid for: every way a client may reach loopback.
SERVER_IDENTITIES: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")

_CA_FILE = "ca.pem"
_SERVER_FILE = "server.pem"


@dataclass(frozen=True)
class TLSMaterial:
    """Files of a throwaway CA: ``ca.pem`` (the ``AWS_CA_BUNDLE``) and ``server.pem`` (the
    server's key and certificate chain). Files rather than objects, so another process (the
    ``emulator serve`` CLI, a benchmark's server process) can load the same material."""

    directory: Path
    ca_bundle: Path
    server_pem: Path

    @classmethod
    def create(cls, directory: Path) -> TLSMaterial:
        """Make a new CA and server certificate under ``directory`` (created if missing)."""
        import trustme  # the emulator extra; imported here so plain-HTTP use does not need it

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="fleetscan emulator")
        cert = ca.issue_cert(*SERVER_IDENTITIES, common_name="localhost")
        ca_bundle = directory / _CA_FILE
        server_pem = directory / _SERVER_FILE
        ca.cert_pem.write_to_path(str(ca_bundle))
        server_pem.touch(mode=0o600)  # holds the private key: readable by its owner only
        cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        return cls(directory=directory, ca_bundle=ca_bundle, server_pem=server_pem)

    @classmethod
    def load(cls, directory: Path) -> TLSMaterial:
        """Material that :meth:`create` wrote earlier, possibly in another process."""
        directory = Path(directory)
        material = cls(directory, directory / _CA_FILE, directory / _SERVER_FILE)
        for path in (material.ca_bundle, material.server_pem):
            if not path.is_file():
                raise FileNotFoundError(f"TLS material incomplete: {path} is missing")
        return material

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.server_pem))
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (for bare aiohttp clients and tests)."""
        return ssl.create_default_context(cafile=str(self.ca_bundle))
