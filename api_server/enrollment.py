"""Enrolment and client revocation: the API server's side of the PKI (issue 12, DESIGN §9).

An admin creates a one-time token naming the client id it may claim
(:meth:`Enrollment.create_token`); the secret is returned once and only its
SHA-256 is stored, in the ``enrollment_tokens`` collection keyed by that
digest::

    {clientId, createdAt, expiresAt, createdBy, usedAt: null | t, serial: null | "<decimal>",
     revokedAt: null | t}                                      (times: seconds since the epoch)

A task manager redeems it with a CSR (:meth:`Enrollment.redeem`) and gets a
certificate for ``client/<that id>``, whatever the CSR asks for.  Every
certificate issued so is recorded in ``client_certificates`` keyed by its
serial (``{serial, clientId, identity, notAfter, issuedAt, tokenId,
certificate, revokedAt}``), so :meth:`Enrollment.revoke_client` can put all
of a client's certificates into the CRL that every server reloads.

Why this order when redeeming (sign, record, then mark the token used by
compare-and-set): the token is spent only once a certificate exists, so a
bad CSR or a signing failure leaves it usable; two redeems at once both
sign, but only one wins the compare-and-set and the loser's certificate is
dropped (its record deleted) before anyone sees it.  The record is written
*before* the token is marked, so a revocation running at the same time
either finds the record (and revokes the certificate) or has already marked
the token revoked (and the compare-and-set fails): no certificate escapes
a revocation.

Certificates made by ``nsfl-ctl pki issue`` are not recorded here; they are
revoked with ``nsfl-ctl pki revoke``.  Where the PKI directory is mounted
read-only (the Kubernetes enrolment component mounts it from a Secret, so
replicas and restarts cannot disagree about the CRL), a revocation still
cancels the client's unused tokens, then answers 409 naming the serials to
revoke with ``nsfl-ctl pki revoke`` where the PKI is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from libs.errors import (
    InvalidSetting,
    InvalidState,
    NotFound,
    NsflError,
    PermissionDenied,
    Unauthenticated,
    VersionConflict,
)
from libs.pki.authority import DEFAULT_LEAF_DAYS, cert_pem, load_certificates, utcnow
from libs.pki.directory import PkiDirectory
from libs.pki.enrollment import EnrollmentToken, new_token, token_digest
from libs.pki.identity import Identity
from libs.store import Document, DocumentStore

log = logging.getLogger(__name__)

TOKENS = "enrollment_tokens"
CERTIFICATES = "client_certificates"
LIST_LIMIT = 1000
# The public handle of a token in listings: a prefix of its digest (the digest itself redeems nothing).
TOKEN_ID_LENGTH = 16


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _epoch(when: dt.datetime) -> float:
    return when.timestamp()


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(float(value), dt.UTC) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class Issued:
    """What a redeemed token gives its holder."""

    certificate_pem: str  # the leaf, then the chain up to (not including) the root
    ca_pem: str  # the trust bundle every nsfl process verifies peers with
    identity: Identity
    serial: int
    expires_at: dt.datetime

    @property
    def client_id(self) -> str:
        return str(self.identity.client_id)


def token_of(document: Document) -> EnrollmentToken:
    data = document.data
    created, expires = _time(data.get("createdAt")), _time(data.get("expiresAt"))
    if created is None or expires is None:
        raise NsflError(f"enrolment token record {document.key[:TOKEN_ID_LENGTH]} is damaged")
    return EnrollmentToken(
        digest=document.key, client_id=str(data.get("clientId")), created_at=created, expires_at=expires,
        created_by=str(data.get("createdBy", "")), used_at=_time(data.get("usedAt")),
    )  # fmt: skip


def token_view(document: Document, now: dt.datetime) -> dict[str, Any]:
    """A token as an admin sees it: never the secret, never the whole digest."""
    token = token_of(document)
    revoked = _time(document.data.get("revokedAt"))
    if revoked is not None and token.used_at is None:
        state = "revoked"
    elif token.used_at is not None:
        state = "used"
    elif now >= token.expires_at:
        state = "expired"
    else:
        state = "pending"
    return {
        "id": document.key[:TOKEN_ID_LENGTH],
        "clientId": token.client_id,
        "state": state,
        "createdAt": rfc3339(token.created_at),
        "expiresAt": rfc3339(token.expires_at),
        "createdBy": token.created_by,
        "usedAt": rfc3339(token.used_at) if token.used_at else None,
        "serial": document.data.get("serial"),
    }


class Enrollment:
    """Tokens, redeeming and revocation over a document store and a PKI directory."""

    def __init__(
        self,
        store: DocumentStore,
        pki: PkiDirectory,
        trust_domain: str,
        *,
        certificate_days: float = DEFAULT_LEAF_DAYS,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._pki = pki
        self._trust_domain = trust_domain
        self._days = certificate_days
        self._clock = clock
        # PkiDirectory.revoke reads and rewrites revoked.json: one revocation at a time in this process.
        self._revoking = asyncio.Lock()

    @classmethod
    def open(cls, store: DocumentStore, pki: PkiDirectory, trust_domain: str) -> Enrollment:
        """Check ``pki`` holds a PKI of ``trust_domain`` (``InvalidSetting`` saying what is wrong)."""
        if not pki.exists():
            raise InvalidSetting(
                f"setting 'pki_dir' ({pki.root}) holds no PKI; create one with `nsfl-ctl pki init --dir {pki.root}`"
            )
        if pki.trust_domain() != trust_domain:
            raise InvalidSetting(
                f"setting 'pki_dir' ({pki.root}) is a PKI for trust domain {pki.trust_domain()!r}, "
                f"but 'trust_domain' is {trust_domain!r}"
            )
        return cls(store, pki, trust_domain)

    # --- tokens ---------------------------------------------------------------------------------

    async def create_token(self, client_id: str, ttl_seconds: float, created_by: str) -> tuple[str, Document]:
        """A new secret (returned once, never stored) and the stored record of its digest."""
        now = self._clock()
        secret, token = new_token(client_id, dt.timedelta(seconds=ttl_seconds), now, created_by=created_by)
        data = {
            "clientId": token.client_id, "createdAt": _epoch(token.created_at),
            "expiresAt": _epoch(token.expires_at), "createdBy": token.created_by,
            "usedAt": None, "serial": None, "revokedAt": None,
        }  # fmt: skip
        document = await self._store.insert(TOKENS, token.digest, data)
        log.info("enrolment token %s created for client %s by %s", token.digest[:TOKEN_ID_LENGTH],
                 client_id, created_by)  # fmt: skip
        return secret, document

    async def list_tokens(self) -> list[dict[str, Any]]:
        documents = await self._store.find(TOKENS, order_by=[("createdAt", -1)], limit=LIST_LIMIT)
        now = self._clock()
        return [token_view(document, now) for document in documents]

    # --- redeeming ------------------------------------------------------------------------------

    async def redeem(self, secret: str, csr_pem: str) -> Issued:
        """A certificate for the token's client, if the token is known, unused, unexpired and not revoked."""
        document = await self._store.try_get(TOKENS, token_digest(secret))
        if document is None:
            raise Unauthenticated("the enrolment token is not valid")
        self._check_redeemable(document)
        identity = Identity.client(token_of(document).client_id, self._trust_domain)
        authority = await asyncio.to_thread(self._pki.authority)
        cert = authority.sign_request(csr_pem.encode("utf-8"), identity, days=self._days, now=self._clock())
        serial = str(cert.serial_number)
        await self._store.insert(CERTIFICATES, serial, self._record(cert, identity, document.key))
        try:
            await self._store.patch(
                TOKENS, document.key, {"usedAt": _epoch(self._clock()), "serial": serial},
                expected_version=document.version,
            )  # fmt: skip
        except VersionConflict:
            await self._store.delete(CERTIFICATES, serial)
            self._check_redeemable(await self._store.get(TOKENS, document.key))
            raise PermissionDenied(
                "this enrolment token was already used; ask an admin for a new one"
            ) from None
        ca = await asyncio.to_thread(self._pki.ca.read_text, encoding="utf-8")
        log.info("enrolment token %s redeemed: certificate %s for %s", document.key[:TOKEN_ID_LENGTH],
                 serial, identity.uri)  # fmt: skip
        return Issued(
            certificate_pem=(cert_pem(cert) + authority.chain_pem).decode("ascii"), ca_pem=ca,
            identity=identity, serial=cert.serial_number, expires_at=cert.not_valid_after_utc,
        )  # fmt: skip

    def _check_redeemable(self, document: Document) -> None:
        if document.data.get("revokedAt") is not None:
            raise PermissionDenied(
                "this enrolment token was revoked with its client's certificates; ask an admin for a new one"
            )
        token_of(document).check_redeemable(self._clock())

    def _record(self, cert: x509.Certificate, identity: Identity, token_digest_hex: str) -> dict[str, Any]:
        return {
            "serial": str(cert.serial_number), "clientId": identity.client_id, "identity": identity.uri,
            "notAfter": _epoch(cert.not_valid_after_utc), "issuedAt": _epoch(self._clock()),
            "tokenId": token_digest_hex[:TOKEN_ID_LENGTH], "certificate": cert_pem(cert).decode("ascii"),
            "revokedAt": None,
        }  # fmt: skip

    # --- revocation -----------------------------------------------------------------------------

    async def revoke_client(self, client_id: str, *, reason: str, by: str) -> dict[str, Any]:
        """Revoke every certificate enrolment issued to ``client_id``, and its unused tokens."""
        Identity.client(client_id, self._trust_domain)  # a clear 400 for an id no certificate can carry
        async with self._revoking:
            now = _epoch(self._clock())
            pending = await self._store.find(TOKENS, {"clientId": client_id, "usedAt": None})
            for token in pending:
                # No compare-and-set: a redeem racing this one then loses its own compare-and-set.
                await self._store.patch(TOKENS, token.key, {"revokedAt": now})
            records = await self._store.find(
                CERTIFICATES, {"clientId": client_id}, order_by=[("issuedAt", 1)]
            )
            if not records and not pending:
                raise NotFound(
                    f"no certificate or enrolment token was issued to client {client_id!r} by enrolment; "
                    "a certificate made with `nsfl-ctl pki issue` is revoked with `nsfl-ctl pki revoke`",
                    details={"clientId": client_id},
                )
            revoked = []
            for record in records:
                cert = load_certificates(str(record.data["certificate"]).encode("ascii"))[0]
                try:
                    await asyncio.to_thread(self._pki.revoke, cert, reason or f"client revoked by {by}")
                except OSError as exc:
                    raise self._unwritable(client_id, records, len(pending), exc) from None
                if record.data.get("revokedAt") is None:
                    # NotFound: a losing redeem dropped its undelivered certificate meanwhile.
                    with contextlib.suppress(NotFound):
                        await self._store.patch(CERTIFICATES, record.key, {"revokedAt": now})
                revoked.append({"serial": record.key, "expiresAt": rfc3339(cert.not_valid_after_utc)})
        log.warning("client %s revoked by %s: %d certificate(s), %d unused token(s)",
                    client_id, by, len(revoked), len(pending))  # fmt: skip
        return {"clientId": client_id, "revokedCertificates": revoked, "revokedTokens": len(pending)}

    def _unwritable(self, client_id: str, records: list[Document], tokens: int, exc: OSError) -> InvalidState:
        """The PKI is mounted read-only (a Kubernetes Secret): say where to revoke instead."""
        log.error("cannot rewrite the CRL in %s: %s", self._pki.root, exc)
        return InvalidState(
            f"the PKI directory {self._pki.root} cannot be written here ({exc.strerror}), so the CRL was not "
            f"changed: revoke client {client_id!r} with `nsfl-ctl pki revoke` where the PKI is kept and "
            f"publish its crl.pem; its {tokens} unused enrolment token(s) were cancelled",
            details={"clientId": client_id, "serials": [r.key for r in records], "revokedTokens": tokens},
        )
