"""A PKI on disk: the files ``nsfl-ctl pki`` writes and the components read.

Layout of a PKI directory (``<state>/pki`` in standalone mode)::

    ca.pem              the trust bundle every process verifies peers with (the root)
    issuer.pem          the issuing CA's certificate, then the chain above it but the root
    issuer-key.pem      its key (0600): only the scheduler and the API server need it
    crl.pem             the revocation list every server checks (rewritten by revoke)
    revoked.json        what was revoked, by serial, identity, time and reason
    issued/<stem>/      one identity's cert.pem (leaf then chain) and key.pem (0600)

``init`` makes a root CA, or an intermediate under a CA the user brings (its
certificate and key), in which case ``ca.pem`` is the user's root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from libs.errors import AlreadyExists, NotFound, ValidationFailed
from libs.files import write_atomic, write_json_atomic
from libs.pki.authority import (
    DEFAULT_LEAF_DAYS,
    SigningAuthority,
    cert_pem,
    create_intermediate,
    create_root,
    identity_of,
    key_pem,
    load_certificates,
    load_key,
    new_key,
    utcnow,
)
from libs.pki.identity import Identity
from libs.pki.revocation import build_crl

PRIVATE = 0o600


@dataclass(frozen=True)
class IssuedFiles:
    """The three files of one identity, as the components' ``tls_*`` settings take them."""

    ca: Path
    cert: Path
    key: Path


class RevokedEntry(TypedDict):
    """One revoked certificate in ``revoked.json``."""

    serial: str  # decimal, as a string: serials are up to 160 bits
    identity: str  # its SPIFFE URI
    at: str  # ISO 8601, when it was revoked
    reason: str


class Revocations(TypedDict):
    """``revoked.json``: the directory's trust domain and what it revoked (written by this module only)."""

    trustDomain: str
    revoked: list[RevokedEntry]


@dataclass(frozen=True)
class PkiDirectory:
    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def issuer(self) -> Path:
        return self.root / "issuer.pem"

    @property
    def issuer_key(self) -> Path:
        return self.root / "issuer-key.pem"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked.json"

    def issued(self, identity: Identity) -> IssuedFiles:
        folder = self.root / "issued" / identity.file_stem
        return IssuedFiles(self.ca, folder / "cert.pem", folder / "key.pem")

    def exists(self) -> bool:
        return self.ca.exists() and self.issuer.exists() and self.issuer_key.exists()

    # --- init ---------------------------------------------------------------------------------

    def init(
        self, trust_domain: str, *, parent_cert: Path | None = None, parent_key: Path | None = None
    ) -> SigningAuthority:
        """A new CA here: a root, or an intermediate under ``parent_cert``/``parent_key``."""
        if self.exists():
            raise AlreadyExists(f"a PKI already exists in {self.root}; use it, or choose another directory")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if (parent_cert is None) != (parent_key is None):
            raise ValidationFailed("give both the parent CA's certificate and its key, or neither")
        if parent_cert is not None and parent_key is not None:
            chain = load_certificates(parent_cert.read_bytes())
            parent = SigningAuthority(chain[0], load_key(parent_key.read_bytes()), tuple(chain[1:]))
            authority = create_intermediate(parent, trust_domain)
            roots = [c for c in chain if c.subject == c.issuer] or chain[-1:]
            write_atomic(self.ca, b"".join(cert_pem(c) for c in roots))
        else:
            authority = create_root(trust_domain)
            write_atomic(self.ca, cert_pem(authority.cert))
        write_atomic(self.issuer, cert_pem(authority.cert) + b"".join(cert_pem(c) for c in authority.chain))
        write_atomic(self.issuer_key, key_pem(authority.key), mode=PRIVATE)
        write_json_atomic(self.revoked, {"trustDomain": trust_domain, "revoked": []})
        write_atomic(self.crl, _crl_pem(authority, []))
        return authority

    def trust_domain(self) -> str:
        return str(self._revocations()["trustDomain"])

    def authority(self) -> SigningAuthority:
        if not self.exists():
            raise NotFound(f"no PKI in {self.root}; create one with `nsfl-ctl pki init --dir {self.root}`")
        certs = load_certificates(self.issuer.read_bytes())
        return SigningAuthority(certs[0], load_key(self.issuer_key.read_bytes()), tuple(certs[1:]))

    # --- issue, revoke -----------------------------------------------------------------------------

    def issue(
        self, identity: Identity, *, hosts: Sequence[str] = (), days: float = DEFAULT_LEAF_DAYS
    ) -> IssuedFiles:
        """A new key and certificate for ``identity`` under ``issued/`` (replacing any earlier one)."""
        authority = self.authority()
        files = self.issued(identity)
        files.cert.parent.mkdir(parents=True, exist_ok=True)
        write_issued(authority, identity, files.cert, files.key, hosts=hosts, days=days)
        return files

    def revoke(self, cert: x509.Certificate, reason: str = "") -> Identity:
        """Add ``cert`` to the CRL; servers refuse it from their next call on."""
        authority = self.authority()
        if cert.issuer != authority.cert.subject:
            raise ValidationFailed("this certificate was not issued by this PKI's issuing CA")
        identity = identity_of(cert)
        self.revoke_serial(cert.serial_number, identity, reason)
        return identity

    def revoke_serial(self, serial: int, identity: Identity, reason: str = "") -> None:
        """Add a certificate this PKI issued, known by its serial only (an enrolment record), to the CRL."""
        authority = self.authority()
        state = self._revocations()
        entries = state["revoked"]
        if all(int(e["serial"]) != serial for e in entries):
            entries.append({
                "serial": str(serial), "identity": identity.uri, "at": utcnow().isoformat(), "reason": reason,
            })  # fmt: skip
        write_json_atomic(self.revoked, state)
        write_atomic(self.crl, _crl_pem(authority, entries))

    def revoked_entries(self) -> list[RevokedEntry]:
        return list(self._revocations()["revoked"])

    def _revocations(self) -> Revocations:
        try:
            data = cast(Revocations, json.loads(self.revoked.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise NotFound(
                f"no PKI in {self.root}; create one with `nsfl-ctl pki init --dir {self.root}`"
            ) from None
        return data


def write_issued(
    authority: SigningAuthority,
    identity: Identity,
    cert_path: Path,
    key_path: Path,
    *,
    hosts: Sequence[str] = (),
    days: float = DEFAULT_LEAF_DAYS,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Make a key, issue its certificate, and write both (key 0600) where the caller says."""
    key = new_key()
    cert = authority.issue(identity, key.public_key(), hosts=hosts, days=days, not_after=not_after)
    write_atomic(key_path, key_pem(key), mode=PRIVATE)
    write_atomic(cert_path, cert_pem(cert) + authority.chain_pem)
    return cert


def _crl_pem(authority: SigningAuthority, entries: list[RevokedEntry]) -> bytes:
    serials = [(int(e["serial"]), dt.datetime.fromisoformat(e["at"])) for e in entries]
    return build_crl(authority, serials).public_bytes(Encoding.PEM)
