"""One-time enrolment tokens: how a data owner's task manager gets its first certificate.

An admin asks the API server for a token naming the client id it may claim
and how long it lives; the secret is shown once and only its SHA-256 is
stored.  The task manager makes its own key and a CSR and redeems the token
with it (``nsfl-ctl pki enroll``): the API server checks the token (known,
unused, unexpired) and signs the CSR for ``client/<that id>``, whatever the
CSR asks for.  The checks are pure functions here; the API server stores the
records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from libs.errors import PermissionDenied, ValidationFailed
from libs.pki.identity import Identity

TOKEN_PREFIX = "nsfl-enroll-"
MAX_TTL = dt.timedelta(days=30)


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EnrollmentToken:
    """The stored form of a token: its digest, never the secret."""

    digest: str
    client_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    created_by: str = ""
    used_at: dt.datetime | None = None

    def check_redeemable(self, now: dt.datetime) -> None:
        if self.used_at is not None:
            raise PermissionDenied("this enrolment token was already used; ask an admin for a new one")
        if now >= self.expires_at:
            raise PermissionDenied("this enrolment token has expired; ask an admin for a new one")


def new_token(
    client_id: str, ttl: dt.timedelta, now: dt.datetime, *, created_by: str = ""
) -> tuple[str, EnrollmentToken]:
    """A fresh secret and its record; the secret goes to the admin once and is not kept."""
    Identity.client(client_id)  # the id must be one a certificate can carry
    if ttl <= dt.timedelta(0) or ttl > MAX_TTL:
        raise ValidationFailed(f"an enrolment token lives more than 0 s and at most {MAX_TTL.days} days")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, EnrollmentToken(token_digest(secret), client_id, now, now + ttl, created_by)
