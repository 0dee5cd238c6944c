"""Revocation: a CRL written by ``nsfl-ctl pki revoke``, checked by every server, reloaded without restart.

:func:`build_crl` makes a CRL signed by the issuing CA.  :class:`RevocationCheck`
is what a server holds: it answers :meth:`~RevocationCheck.is_revoked` for a
peer certificate from the CRL file, and notices a new file by its modification
time and size (looked at no more than every :data:`RECHECK_SECONDS`), so a
revocation applies to the next call without a restart.  A CRL that does not
verify against the trusted CAs is refused with a log line and the previous list
is kept: a broken file must not turn revocation off.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from libs.errors import ValidationFailed
from libs.pki.authority import SigningAuthority, utcnow

log = logging.getLogger(__name__)

RECHECK_SECONDS = 0.5
CRL_DAYS = 30


def build_crl(
    authority: SigningAuthority, serials: Iterable[tuple[int, dt.datetime]], *, now: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    now = now or utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CRL_DAYS))
    )
    for serial, when in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(authority.key, hashes.SHA256())


def load_crl(pem: bytes, issuers: Sequence[x509.Certificate]) -> frozenset[tuple[bytes, int]]:
    """The (issuer name, serial) pairs of a PEM CRL (several may be concatenated), each verified."""
    revoked: set[tuple[bytes, int]] = set()
    blocks = [b for b in pem.split(b"-----END X509 CRL-----") if b"-----BEGIN X509 CRL-----" in b]
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
        except ValueError as exc:
            raise ValidationFailed(f"not a PEM CRL: {exc}") from None
        issuer = next((c for c in issuers if c.subject == crl.issuer), None)
        if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise ValidationFailed("the CRL is not signed by a trusted CA")
        name = crl.issuer.public_bytes()
        revoked.update((name, entry.serial_number) for entry in crl)
    return frozenset(revoked)


class RevocationCheck:
    """Whether a peer certificate is revoked, from a CRL file that may change at any time."""

    def __init__(self, crl: Path | None, issuers: Sequence[x509.Certificate]) -> None:
        self._path = crl
        self._issuers = list(issuers)
        self._revoked: frozenset[tuple[bytes, int]] = frozenset()
        self._seen: tuple[int, int] | None = None
        self._next_look = 0.0
        self._lock = threading.Lock()
        self._refresh(force=True)

    @property
    def path(self) -> Path | None:
        return self._path

    def is_revoked(self, cert: x509.Certificate) -> bool:
        if self._path is None:
            return False
        self._refresh()
        return (cert.issuer.public_bytes(), cert.serial_number) in self._revoked

    def _refresh(self, *, force: bool = False) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now < self._next_look:
            return
        with self._lock:
            self._next_look = now + RECHECK_SECONDS
            try:
                stat = os.stat(self._path)
            except FileNotFoundError:
                return  # no CRL yet: nothing revoked (a CRL that existed and vanished keeps its list)
            mark = (stat.st_mtime_ns, stat.st_size)
            if mark == self._seen:
                return
            try:
                self._revoked = load_crl(self._path.read_bytes(), self._issuers)
            except (OSError, ValidationFailed) as exc:
                log.error("revocation list %s not loaded, keeping the previous one: %s", self._path, exc)
                return
            self._seen = mark
            log.info("revocation list %s loaded: %d revoked certificate(s)", self._path, len(self._revoked))
