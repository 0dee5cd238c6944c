"""JSON Schemas of the enrolment and revocation endpoints (published in ``/openapi.json``, checked on input).

Kept apart from :mod:`api_server.schemas` (jobs, models, clients) because
they describe the PKI's side of the API: tokens, certificate requests and
revocations.  Times here are RFC 3339 strings, as in the token file's
``expires``.
"""

from __future__ import annotations

from api_server.parameters import CLIENT_ID
from libs.json_values import JsonSchema
from libs.pki.enrollment import MAX_TTL

DEFAULT_TOKEN_TTL_SECONDS = 24 * 3600
MAX_TOKEN_TTL_SECONDS = int(MAX_TTL.total_seconds())
RFC3339: JsonSchema = {"type": "string", "format": "date-time"}
PEM: JsonSchema = {"type": "string", "minLength": 1, "maxLength": 16384}

CREATE_ENROLLMENT_TOKEN_BODY: JsonSchema = {
    "type": "object",
    "description": "The client id the token may claim, and how long it may wait to be redeemed.",
    "properties": {
        "clientId": CLIENT_ID,
        "ttlSeconds": {
            "type": "number",
            "minimum": 1,
            "maximum": MAX_TOKEN_TTL_SECONDS,
            "default": DEFAULT_TOKEN_TTL_SECONDS,
        },
    },  # fmt: skip
    "required": ["clientId"],
    "additionalProperties": False,
}

ENROLL_BODY: JsonSchema = {
    "type": "object",
    "description": "A one-time enrolment token and a PEM certificate request (EC P-256 key). The names in "
    "the request are ignored: the certificate is for the client id the token names.",
    "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 256}, "csr": PEM},
    "required": ["token", "csr"],
    "additionalProperties": False,
}

REVOKE_CLIENT_BODY: JsonSchema = {
    "type": "object",
    "description": "Why the client is revoked (kept in the PKI's revoked.json).",
    "properties": {"reason": {"type": "string", "maxLength": 512}},
    "additionalProperties": False,
}


def _object(properties: JsonSchema, required: list[str]) -> JsonSchema:
    return {"type": "object", "properties": properties, "required": required}


def pki_schemas() -> JsonSchema:
    token_view = _object(
        {
            "id": {"type": "string", "description": "A public handle: a prefix of the token's SHA-256."},
            "clientId": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "used", "expired", "revoked"]},
            "createdAt": RFC3339,
            "expiresAt": RFC3339,
            "createdBy": {"type": "string"},
            "usedAt": {"type": ["string", "null"], "format": "date-time"},
            "serial": {"type": ["string", "null"], "description": "The certificate it was redeemed for."},
        },
        ["id", "clientId", "state", "createdAt", "expiresAt"],
    )
    return {
        "CreateEnrollmentTokenRequest": CREATE_ENROLLMENT_TOKEN_BODY,
        "EnrollmentTokenCreated": _object(
            {
                "token": {
                    "type": "string",
                    "description": "The secret, shown this once; only its hash is kept.",
                },
                "clientId": {"type": "string"},
                "expiresAt": RFC3339,
                "id": {"type": "string"},
            },
            ["token", "clientId", "expiresAt"],
        ),
        "EnrollmentToken": token_view,
        "EnrollmentTokenList": _object(
            {"tokens": {"type": "array", "items": {"$ref": "#/components/schemas/EnrollmentToken"}}},
            ["tokens"],
        ),
        "EnrollRequest": ENROLL_BODY,
        "EnrollReply": _object(
            {
                "certificate": {
                    "type": "string",
                    "description": "PEM: the client's certificate, then the chain.",
                },
                "ca": {"type": "string", "description": "PEM: the trust bundle (tls_ca)."},
                "clientId": {"type": "string"},
                "identity": {"type": "string", "description": "spiffe://<domain>/client/<clientId>"},
                "serial": {"type": "string"},
                "expiresAt": RFC3339,
            },
            ["certificate", "ca", "clientId", "identity"],
        ),
        "RevokeClientRequest": REVOKE_CLIENT_BODY,
        "ClientRevoked": _object(
            {
                "clientId": {"type": "string"},
                "revokedCertificates": {
                    "type": "array",
                    "items": _object({"serial": {"type": "string"}, "expiresAt": RFC3339}, ["serial"]),
                },
                "revokedTokens": {"type": "integer", "description": "Unused enrolment tokens cancelled."},
            },
            ["clientId", "revokedCertificates", "revokedTokens"],
        ),
    }
