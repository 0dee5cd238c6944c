"""Enrolment tokens, enrolment, and client revocation: the REST face of the PKI (issue 12).

``POST /enrollment-tokens`` (admin over every namespace) makes a one-time
token for one client id and shows its secret once; ``GET`` lists them
without secrets.  ``POST /enroll`` needs no bearer token: the enrolment
token in the body is the credential, and a task manager that has no
certificate yet has nothing else (``nsfl-ctl pki enroll``).  ``POST
/clients/{clientId}/revoke`` (admin) puts every certificate enrolment issued
to that client into the CRL, which every server reloads within a second.

All of them need the PKI (setting ``pki_dir``); without it they answer 503
saying so, and the rest of the API works as before.  Responses that carry a
secret or a certificate are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from api_server.bodies import check_body, read_document
from api_server.enrollment import Enrollment, rfc3339, token_view
from api_server.parameters import path_name
from api_server.pki_schemas import (
    CREATE_ENROLLMENT_TOKEN_BODY,
    DEFAULT_TOKEN_TTL_SECONDS,
    ENROLL_BODY,
    REVOKE_CLIENT_BODY,
)
from api_server.route_table import Access, Body, Reply, Route
from api_server.schemas import ref
from api_server.state import CALLER, ENROLLMENT, SETTINGS
from libs.errors import Unavailable
from libs.pki.authority import utcnow

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}


def enrollment_of(request: web.Request) -> Enrollment:
    enrollment = request.app.get(ENROLLMENT)
    if enrollment is None:
        raise Unavailable(
            "enrolment and client revocation need the PKI: set the API server's setting 'pki_dir' "
            "(NSFL_API_PKI_DIR) to the directory `nsfl-ctl pki init` made",
            details={"dependency": "pki"},
        )
    return enrollment


async def create_enrollment_token(request: web.Request) -> web.StreamResponse:
    enrollment = enrollment_of(request)
    raw = await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=False)
    body = check_body(raw, CREATE_ENROLLMENT_TOKEN_BODY)
    ttl = float(body.get("ttlSeconds", DEFAULT_TOKEN_TTL_SECONDS))
    secret, document = await enrollment.create_token(str(body["clientId"]), ttl, request[CALLER].name)
    view = token_view(document, utcnow())
    reply = {"token": secret, "clientId": view["clientId"], "expiresAt": view["expiresAt"], "id": view["id"]}
    return web.json_response(reply, status=201, headers=NO_STORE)


async def list_enrollment_tokens(request: web.Request) -> web.StreamResponse:
    return web.json_response({"tokens": await enrollment_of(request).list_tokens()})


async def enroll(request: web.Request) -> web.StreamResponse:
    enrollment = enrollment_of(request)
    raw = await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=False)
    body = check_body(raw, ENROLL_BODY)
    issued = await enrollment.redeem(str(body["token"]), str(body["csr"]))
    reply = {
        "certificate": issued.certificate_pem, "ca": issued.ca_pem, "clientId": issued.client_id,
        "identity": issued.identity.uri, "serial": str(issued.serial), "expiresAt": rfc3339(issued.expires_at),
    }  # fmt: skip
    return web.json_response(reply, status=201, headers=NO_STORE)


async def revoke_client(request: web.Request) -> web.StreamResponse:
    enrollment = enrollment_of(request)
    client_id = path_name(request, "clientId")
    raw = await read_document(request, request.app[SETTINGS].max_body_bytes, allow_yaml=False)
    body = check_body(raw, REVOKE_CLIENT_BODY)
    caller = request[CALLER]
    revoked = await enrollment.revoke_client(client_id, reason=str(body.get("reason", "")), by=caller.name)
    return web.json_response(revoked)


_NEEDS_PKI = "Without the setting pki_dir this answers 503."

ROUTES = [
    Route(
        "POST", "/api/v1/enrollment-tokens", create_enrollment_token, Access.ADMIN, "createEnrollmentToken",
        "Make a one-time enrolment token for a client id", "clients",
        Reply(201, "The token's secret, shown once.", ref("EnrollmentTokenCreated")),
        body=Body({"application/json": ref("CreateEnrollmentTokenRequest")}, "The client id and lifetime."),
        errors=(503,),
        description="Needs an admin token over every namespace. Only the token's SHA-256 is stored. "
        + _NEEDS_PKI,
    ),
    Route(
        "GET", "/api/v1/enrollment-tokens", list_enrollment_tokens, Access.ADMIN, "listEnrollmentTokens",
        "Enrolment tokens and their state, without secrets", "clients",
        Reply(200, "The tokens, newest first.", ref("EnrollmentTokenList")), errors=(503,),
        description="Needs an admin token over every namespace. " + _NEEDS_PKI,
    ),
    Route(
        "POST", "/api/v1/enroll", enroll, Access.PUBLIC, "enroll",
        "Redeem an enrolment token with a CSR for a client certificate", "clients",
        Reply(201, "The certificate and the trust bundle.", ref("EnrollReply")),
        body=Body({"application/json": ref("EnrollRequest")}, "The token and the certificate request."),
        errors=(401, 403, 503),
        description="No bearer token: the enrolment token authenticates. It must be known (else 401), unused, "
        "unexpired and not revoked (else 403), and is spent by this call; a second redeem is refused. "
        + _NEEDS_PKI,
    ),
    Route(
        "POST", "/api/v1/clients/{clientId}/revoke", revoke_client, Access.ADMIN, "revokeClient",
        "Revoke every certificate enrolment issued to a client, and its unused tokens", "clients",
        Reply(200, "What was revoked.", ref("ClientRevoked")),
        body=Body({"application/json": ref("RevokeClientRequest")}, "Why.", required=False),
        errors=(404, 409, 503),
        description="Needs an admin token over every namespace. Servers refuse the certificates from their "
        "next call (they reload the CRL within a second). 404 if enrolment issued nothing to this client; "
        "409 if the PKI directory is read-only here (its unused tokens are still cancelled; the error names "
        "the serials to revoke with `nsfl-ctl pki revoke`). " + _NEEDS_PKI,
    ),
]  # fmt: skip
