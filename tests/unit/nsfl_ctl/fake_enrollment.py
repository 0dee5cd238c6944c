"""The fake API with the enrolment endpoints, signing with a real CA from a PKI directory.

``POST /api/v1/enrollment-tokens`` makes a token for a client id (admin
bearer token), ``POST /api/v1/enroll`` (no bearer token) redeems it once
with a CSR and answers the certificate for exactly that client id, and
``POST /api/v1/clients/{clientId}/revoke`` revokes what it signed for that
client.  ``tamper`` makes it misbehave the ways a client must catch: sign
another key (``"other-key"``), or name another client id in the reply than
in the certificate (``"other-id"``); ``"read-only"`` answers a revocation
as the API does when it cannot write its CRL.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from libs.pki.authority import cert_pem, load_certificates, new_key
from libs.pki.directory import PkiDirectory
from libs.pki.identity import Identity
from tests.unit.nsfl_ctl.fake_api import FakeApi, error


@dataclass
class FakeEnrollmentApi(FakeApi):
    pki: PkiDirectory | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # secret -> client id, removed when redeemed
    signed: dict[str, list[bytes]] = field(default_factory=dict)  # client id -> certificates (PEM)
    tamper: str = ""
    public_paths: tuple[str, ...] = ("/healthz", "/readyz", "/api/v1/enroll")

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/api/v1/enrollment-tokens", self._create_token)
        app.router.add_post("/api/v1/enroll", self._enroll)
        app.router.add_post("/api/v1/clients/{clientId}/revoke", self._revoke)
        return app

    def token_for(self, client_id: str) -> str:
        secret = "nsfl-enroll-" + secrets.token_urlsafe(16)
        self.tokens[secret] = client_id
        return secret

    async def _create_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        secret = self.token_for(body["clientId"])
        return web.json_response(
            {"token": secret, "clientId": body["clientId"], "expiresAt": "2030-01-01T00:00:00Z"}, status=201
        )

    async def _enroll(self, request: web.Request) -> web.Response:
        assert self.pki is not None
        body = await request.json()
        client_id = self.tokens.pop(body.get("token", ""), None)
        if client_id is None:
            return error(401, "Unauthenticated", "this enrolment token is not known")
        authority = self.pki.authority()
        identity = Identity.client(client_id, self.pki.trust_domain())
        if self.tamper == "other-key":
            cert = authority.issue(identity, new_key().public_key())
        else:
            cert = authority.sign_request(body["csr"].encode(), identity)
        self.signed.setdefault(client_id, []).append(cert_pem(cert))
        named = "someone-else" if self.tamper == "other-id" else client_id
        reply: dict[str, Any] = {
            "certificate": (cert_pem(cert) + authority.chain_pem).decode(), "ca": self.pki.ca.read_text(),
            "clientId": named, "identity": identity.uri,
        }  # fmt: skip
        return web.json_response(reply, status=201)

    async def _revoke(self, request: web.Request) -> web.Response:
        assert self.pki is not None
        client_id = request.match_info["clientId"]
        self.bodies.append(await request.json())
        signed = self.signed.get(client_id, [])
        if not signed:
            return error(404, "NotFound", f"no certificate was issued to client {client_id!r} by enrolment")
        if self.tamper == "read-only":  # as the API answers when its PKI is a read-only Secret
            serials = [str(load_certificates(p)[0].serial_number) for p in signed]
            return error(409, "InvalidState", "the PKI directory cannot be written here", serials=serials)
        for pem in signed:
            self.pki.revoke(load_certificates(pem)[0])
        listed = [{"serial": str(load_certificates(p)[0].serial_number)} for p in signed]
        return web.json_response({"clientId": client_id, "revokedCertificates": listed, "revokedTokens": 0})
