"""Servers and channels for every component, with mutual TLS and the authorisation guard.

:class:`Wire` is built once per process from its settings
(:meth:`Wire.from_settings`) and used for every server and channel it opens,
so there is one copy of credentials, reload, keepalive and message limits.
A channel names the identity it expects at the other end; TLS verifies the
server's certificate carries that identity's server name, whatever address
it was dialled at (an offer's coordinator endpoint is trusted only this way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from libs.errors import InvalidSetting
from libs.pki.identity import DEFAULT_TRUST_DOMAIN, Identity, IdentityKind
from libs.pki.revocation import RevocationCheck
from libs.rpc import CHANNEL_OPTIONS, SERVER_OPTIONS
from libs.wire.authorization import POLICY, Rule
from libs.wire.guard import Guard
from libs.wire.settings import WireSettings, is_loopback
from libs.wire.tls import ServerCertificates, TlsFiles, channel_credentials

log = logging.getLogger(__name__)


@dataclass
class Wire:
    """How this process speaks gRPC: its TLS files and identity, or explicit loopback plaintext."""

    tls: TlsFiles | None
    trust_domain: str
    identity: Identity | None = None
    _revocations: RevocationCheck | None = field(default=None, repr=False)
    _certificates: list[ServerCertificates] = field(default_factory=list, repr=False)

    @classmethod
    def from_settings(cls, settings: WireSettings, *, role: str | None = None) -> Wire:
        """The wire of a component; ``role`` ("client", "coordinator", "scheduler", ...) is checked on its certificate."""
        tls = settings.tls
        if tls is None:
            if not settings.insecure:
                settings.validate_wire()  # raises the error that says how to fix it
            log.warning("INSECURE: plaintext gRPC with no authentication or authorisation (loopback only)")
            return cls(None, settings.trust_domain)
        identity = tls.identity()
        if identity.trust_domain != settings.trust_domain:
            raise InvalidSetting(
                f"setting 'tls_cert' ({tls.cert}) is for trust domain {identity.trust_domain!r}, "
                f"but 'trust_domain' is {settings.trust_domain!r}"
            )
        if role is not None and _role(identity) != role:
            raise InvalidSetting(
                f"setting 'tls_cert' ({tls.cert}) identifies {identity.uri}, but this component runs as a {role}; "
                f"issue it a {role} certificate (`nsfl-ctl pki issue`)"
            )
        return cls(tls, settings.trust_domain, identity, RevocationCheck(tls.crl, tls.trusted()))

    @classmethod
    def insecure(cls, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Wire:
        return cls(None, trust_domain)

    @property
    def secure(self) -> bool:
        return self.tls is not None

    # --- peers -----------------------------------------------------------------------------------

    def control(self, name: str) -> Identity:
        return Identity.control(name, self.trust_domain)

    def coordinator_of(self, job_id: str) -> Identity:
        return Identity.coordinator_of(job_id, self.trust_domain)

    # --- servers ---------------------------------------------------------------------------------

    def server(
        self, policy: dict[str, Rule] = POLICY, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Server:
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self.tls is not None:
            assert self._revocations is not None
            interceptors.append(Guard(self.identity, self._revocations, policy))
        return grpc.aio.server(options=[*SERVER_OPTIONS, *options], interceptors=interceptors)

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Bind ``address`` (``host:port``, port 0 for a free one); plaintext only on loopback."""
        if self.tls is None:
            if not is_loopback(address):
                raise InvalidSetting(
                    f"refusing to listen on {address!r} without TLS: only loopback may be plaintext; "
                    "give 'tls_ca', 'tls_cert' and 'tls_key'"
                )
            return server.add_insecure_port(address)
        certificates = ServerCertificates(self.tls)
        self._certificates.append(certificates)
        return server.add_secure_port(address, certificates.credentials())

    @property
    def reloads(self) -> int:
        """How many times a server of this wire took new certificates from disk."""
        return sum(c.reloads for c in self._certificates)

    # --- channels ----------------------------------------------------------------------------------

    def _options(self, peer: Identity, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out = [*CHANNEL_OPTIONS, *options]
        if self.tls is not None and peer.server_name is not None:
            out.append(("grpc.ssl_target_name_override", peer.server_name))
        return out

    def channel(
        self, target: str, peer: Identity, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.aio.Channel:
        """An asyncio channel to ``target`` that only ``peer`` (verified by TLS) can answer."""
        if self.tls is None:
            return grpc.aio.insecure_channel(target, options=self._options(peer, options))
        return grpc.aio.secure_channel(
            target, channel_credentials(self.tls), options=self._options(peer, options)
        )

    def sync_channel(
        self, target: str, peer: Identity, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.Channel:
        """The same for synchronous code (the task executor)."""
        if self.tls is None:
            return grpc.insecure_channel(target, options=self._options(peer, options))
        return grpc.secure_channel(
            target, channel_credentials(self.tls), options=self._options(peer, options)
        )


def _role(identity: Identity) -> str:
    if identity.kind is IdentityKind.CONTROL:
        return str(identity.control_name)
    return identity.kind.value
