"""The wire fields every component's settings share (one copy, inherited).

A component's settings dataclass inherits :class:`WireSettings`, so the
``tls_*`` fields, ``trust_domain`` and ``insecure`` read the same from files
and ``NSFL_<COMPONENT>_*`` variables everywhere, and :meth:`validate_wire`
applies one rule: TLS files (all three) unless ``insecure: true``, and
``insecure`` only on loopback addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from libs.errors import InvalidSetting
from libs.pki.identity import DEFAULT_TRUST_DOMAIN
from libs.wire.tls import TlsFiles

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class WireSettings:
    """Mutual TLS files, the trust domain, and the explicit plaintext switch for loopback tests."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The revocation list servers check (reloaded when it changes); none: nothing is revoked.
    tls_crl: Path | None = None
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    # Plaintext and no authorisation: only on loopback, only when asked for by name.
    insecure: bool = False

    @property
    def tls(self) -> TlsFiles | None:
        if self.insecure or self.tls_ca is None or self.tls_cert is None or self.tls_key is None:
            return None
        return TlsFiles(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key, crl=self.tls_crl)

    def validate_wire(self, addresses: Iterable[str] = ()) -> None:
        """TLS, or ``insecure`` on loopback ``addresses`` (``host:port`` this component listens on or dials)."""
        given = [f for f in (self.tls_ca, self.tls_cert, self.tls_key) if f is not None]
        if given and len(given) != 3:
            raise InvalidSetting(
                "settings 'tls_ca', 'tls_cert' and 'tls_key' go together: give all three or none"
            )
        if self.insecure:
            for address in addresses:
                if address and not is_loopback(address):
                    raise InvalidSetting(
                        f"setting 'insecure' allows plaintext only on loopback, but {address!r} is not; "
                        "give 'tls_ca', 'tls_cert' and 'tls_key' (`nsfl-ctl pki issue`) and drop 'insecure'"
                    )
            return
        if not given:
            raise InvalidSetting(
                "mutual TLS is required: give 'tls_ca', 'tls_cert' and 'tls_key' "
                "(made by `nsfl-ctl pki init` and `nsfl-ctl pki issue`, or `nsfl-ctl pki enroll` on a client); "
                "for a test on loopback only, set 'insecure: true'"
            )


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) names this machine only."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host.startswith("unix:"):
        return True
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
