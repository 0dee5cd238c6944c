"""Reading certificates: what ``nsfl-ctl pki show`` tells, and the checks the PKI commands share.

The facts of one certificate (identity, issuer, serial, validity, and
whether the PKI that issued it revoked it) and of a PKI directory (its CA,
the current certificate of each identity it issued, what it revoked).
"Issued by this PKI" is checked by signature, never by name: two nsfl CAs
made apart carry the same subject.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from libs.errors import NotFound, ValidationFailed
from libs.pki.authority import identity_of, load_certificates
from libs.pki.directory import PkiDirectory, RevokedEntry
from libs.pki.identity import Identity

# Every certificate issued to an identity, public part only: issued/<identity>/history/<serial>.pem.
HISTORY = "history"


class CertificateView(TypedDict):
    """A certificate as ``pki show`` prints it (JSON or YAML)."""

    path: str
    identity: str
    subject: str
    issuer: str
    serial: str
    notBefore: str
    notAfter: str
    isCa: bool
    revoked: bool | None


class DirectoryView(TypedDict):
    """A PKI directory as ``pki show --dir`` prints it."""

    directory: str
    trustDomain: str
    root: CertificateView
    issuer: CertificateView
    issued: list[CertificateView]
    revoked: list[RevokedEntry]


@dataclass(frozen=True)
class CertificateFacts:
    """What ``show`` tells about one certificate."""

    path: Path
    identity: str
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    is_ca: bool
    revoked: bool | None  # None: not known (no PKI directory to ask)

    def as_dict(self) -> CertificateView:
        return {
            "path": str(self.path), "identity": self.identity, "subject": self.subject, "issuer": self.issuer,
            "serial": self.serial, "notBefore": self.not_before.isoformat(),
            "notAfter": self.not_after.isoformat(), "isCa": self.is_ca, "revoked": self.revoked,
        }  # fmt: skip


def open_directory(root: Path) -> PkiDirectory:
    """An existing PKI directory; NotFound saying how to make one otherwise."""
    directory = PkiDirectory(root)
    if not directory.exists():
        raise NotFound(f"no PKI in {root}; create one with `nsfl-ctl pki init --dir {root}`")
    return directory


def certificate_facts(cert_file: Path, directory: PkiDirectory | None = None) -> CertificateFacts:
    cert = leaf(cert_file)
    revoked = None
    if directory is not None and directory.exists():
        serials = {int(e["serial"]) for e in directory.revoked_entries()}
        revoked = cert.serial_number in serials and issued_by(directory, cert)
    constraints = extension(cert, x509.BasicConstraints)
    identity = identity_or_none(cert)
    return CertificateFacts(
        cert_file, identity.uri if identity else "", cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(), format(cert.serial_number, "x"), cert.not_valid_before_utc,
        cert.not_valid_after_utc, bool(constraints and constraints.ca), revoked,
    )  # fmt: skip


def directory_facts(root: Path) -> DirectoryView:
    """The CA of a PKI directory and the current certificate of each identity it issued."""
    directory = open_directory(root)
    issued = [
        certificate_facts(path, directory)
        for path, _ in issued_certificates(directory)
        if path.parent.name != HISTORY
    ]
    return {
        "directory": str(directory.root), "trustDomain": directory.trust_domain(),
        "root": certificate_facts(directory.ca).as_dict(), "issuer": certificate_facts(directory.issuer).as_dict(),
        "issued": [f.as_dict() for f in issued], "revoked": directory.revoked_entries(),
    }  # fmt: skip


# --- checks -------------------------------------------------------------------------------------


def issued_by(directory: PkiDirectory, cert: x509.Certificate) -> bool:
    """Whether this directory's issuing CA signed ``cert`` (two nsfl CAs may carry the same name)."""
    try:
        cert.verify_directly_issued_by(directory.authority().cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def issued_certificates(directory: PkiDirectory) -> list[tuple[Path, x509.Certificate]]:
    """Every certificate file under ``issued/`` (keys and unreadable files skipped)."""
    found = []
    for path in sorted((directory.root / "issued").rglob("*.pem")):
        if path.name.startswith(".") or path.name in ("key.pem", "ca.pem"):
            continue
        with contextlib.suppress(OSError, ValidationFailed, IndexError):
            found.append((path, load_certificates(path.read_bytes())[0]))
    return found


def leaf(cert_file: Path) -> x509.Certificate:
    try:
        data = cert_file.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"no certificate file {cert_file}") from None
    try:
        return load_certificates(data)[0]
    except (ValidationFailed, IndexError):
        raise ValidationFailed(f"{cert_file} holds no PEM certificate") from None


def identity_or_none(cert: x509.Certificate) -> Identity | None:
    try:
        return identity_of(cert)
    except ValidationFailed:
        return None


def extension(cert: x509.Certificate, kind: type[x509.BasicConstraints]) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
